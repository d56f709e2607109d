//! Generated prost types. Private: the crate converts them to domain types at the boundary.
#![allow(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    clippy::all
)]

include!(concat!(env!("OUT_DIR"), "/agentnet.v1.rs"));
