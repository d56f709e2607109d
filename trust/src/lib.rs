//! Trust for agentnet: personalised, sybil-resistant reputation from signed receipts.
//!
//! Pure logic with an injected clock: no networking, no storage. The node feeds it
//! verified receipts and attestations and asks it for scores.
//!
//! - [`TrustVector`], [`Observation`]: four dimensions updated by an exponential moving
//!   average (α = 0.2) and decaying towards the neutral prior by 0.977 per day.
//! - [`ReceiptPair`]: the caller's and callee's receipts of one intent, turned into
//!   per-dimension [`Signals`] and weighted by who signed.
//! - [`TrustEngine`]: one node's view. Direct observations, attestations backed by receipts,
//!   and personalised EigenTrust restarting at the node's pre-trusted set, kept current
//!   incrementally. [`TrustEngine::score`] gives the ranking score with its breakdown.
//! - [`PeerFault`], [`PeerScores`]: named penalties for misbehaving peers.
//! - [`sim`]: a seeded simulator of sybil, camouflage, collusion and whitewashing attacks
//!   that runs the real engine.
//!
//! The maths is in `specs/trust.md`.
//!
//! # Example
//!
//! ```
//! use agentnet_protocol::{IntentId, Keypair, Outcome, Receipt, Timestamp};
//! use agentnet_trust::{ReceiptPair, TrustConfig, TrustEngine};
//!
//! let me = Keypair::from_seed(&[1; 32]).did();
//! let worker = Keypair::from_seed(&[2; 32]).did();
//! let now = Timestamp::from_millis(1_700_000_000_000);
//! let mut engine = TrustEngine::new(TrustConfig::default(), &[me.clone()]);
//! assert_eq!(engine.score(&worker, None, now).score, 0.5, "unknown agents start neutral");
//!
//! let receipt = Receipt {
//!     intent_id: IntentId([9; 16]),
//!     caller: me.clone(),
//!     callee: worker.clone(),
//!     capability: "summarise".into(),
//!     issuer: me.clone(),
//!     outcome: Outcome::Success,
//!     latency_ms: 300,
//!     time_allowed_ms: 10_000,
//!     max_cost: None,
//!     cost: None,
//!     issued_at: now,
//! };
//! engine.observe(&ReceiptPair::new(Some(receipt), None)?, now)?;
//! assert!(engine.score(&worker, Some("summarise"), now).score > 0.5);
//! # Ok::<(), agentnet_trust::TrustError>(())
//! ```
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod config;
mod engine;
mod evidence;
mod graph;
mod penalty;
pub mod sim;
mod vector;

pub use config::{ReceiptWeights, TrustConfig, Weights};
pub use engine::{Limits, TrustEngine, TrustScore};
pub use evidence::{ReceiptPair, Signers, TrustError, cost_honesty, outcome_signals, timeliness};
pub use penalty::{
    EXPIRED, FATAL_SCORE, FROM_FUTURE, INVALID_SIGNATURE, MALFORMED, OVERSIZED, PeerFault,
    PeerScores, Penalty, REPLAY, SPAM, WRONG_KIND,
};
pub use vector::{Observation, Signals, TrustVector};
