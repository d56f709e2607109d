//! Integration tests of agentnet-trust, built as one binary.

mod engine;
mod simulation;
