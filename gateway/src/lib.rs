//! The agentnet gateway: an organisation's control plane over its agents.
//!
//! This crate will embed a node (through the node's handle), persist to Postgres and serve
//! the REST control plane under `/api/v1`: keys and roles, run and cost ingestion, budgets,
//! policies and approvals, the kill switch and the tamper-evident audit log. See
//! `ARCHITECTURE.md` and the gateway issue.
#![deny(missing_docs)]
