//! Trust for agentnet: personalised, sybil-resistant reputation from signed receipts.
//!
//! This crate will hold trust vectors, receipts, signed attestations, personalised
//! aggregation, and the penalties for peer misbehaviour. It is pure logic with an injected
//! clock and no networking; it depends only on `agentnet-protocol`. See `ARCHITECTURE.md`.
#![deny(missing_docs)]
