//! Integration tests of agentnet-protocol, built as one binary.
#![allow(unreachable_pub)]

mod did_vectors;
mod envelope;
mod fixtures;
mod keyfile;
mod robustness;
mod roundtrip;
mod spec;
mod ssi_agreement;
mod validation;
