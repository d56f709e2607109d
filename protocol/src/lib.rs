//! The agentnet wire protocol: identities, signed messages and their validation.
//!
//! This crate has no sockets, no async runtime and no storage. Everything that crosses the
//! network or a trust boundary is defined here, and everything defined here is normative in
//! `specs/protocol.md` and `specs/identity.md`.
//!
//! - [`Keypair`], [`PublicKey`]: Ed25519 keys, the only key type.
//! - [`Did`]: `did:key` identities, convertible to and from libp2p `PeerId`s.
//! - [`write_key_file`], [`read_key_file`]: the secret key file format.
//! - [`SignedEnvelope`], [`Signed`]: the signed container; the signature covers a per-kind
//!   domain tag and the payload bytes exactly as sent.
//! - Messages: [`AgentCard`], [`Tombstone`], [`Intent`], [`IntentResult`], [`Receipt`],
//!   [`TrustAttestation`], [`PauseNotice`]; and the unsigned [`IntentResponse`],
//!   [`SyncRequest`] and [`SyncResponse`].
//! - [`limits`]: every size, count and time limit; [`ValidationError`] says which was broken.
//! - [`ids`]: protocol ids and gossip topics.
//!
//! # Example
//!
//! ```
//! use agentnet_protocol::{Keypair, Signed, Tombstone, Timestamp, ValidationContext};
//! use std::time::Duration;
//!
//! let agent = Keypair::from_seed(&[1; 32]);
//! let now = Timestamp::from_millis(1_700_000_000_000);
//! let tombstone = Tombstone {
//!     did: agent.did(),
//!     seq: 2,
//!     issued_at: now,
//!     expires_at: now.saturating_add(Duration::from_secs(3600)),
//! };
//! let wire = Signed::seal(&agent, tombstone.clone())?.envelope().to_bytes();
//!
//! // A receiver verifies the signature, the kind, the limits and the clock in one step.
//! let received = Signed::<Tombstone>::from_bytes(&wire, &ValidationContext::at(now))?;
//! assert_eq!(received.message(), &tombstone);
//! assert_eq!(received.envelope().signer(), &agent.did());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod did;
mod envelope;
pub mod ids;
mod keyfile;
mod keys;
pub mod limits;
mod messages;
mod proto;
mod sync;
mod time;
mod validate;

pub use did::{DID_KEY_PREFIX, Did, DidError, ED25519_MULTICODEC, MAX_DID_LEN};
pub use envelope::{
    ContentId, EnvelopeError, Kind, Message, OpenError, Signed, SignedEnvelope, signed_bytes,
};
pub use keyfile::{KEY_FILE_HEADER, KeyFileError, MAX_KEY_FILE_LEN, read_key_file, write_key_file};
pub use keys::{KeyError, Keypair, PublicKey, SIGNATURE_LEN};
pub use libp2p_identity::PeerId;
pub use messages::IntentResponseError;
pub use messages::{
    AgentCard, Capability, Claim, Credential, Intent, IntentId, IntentResponse, IntentResult,
    IntentStatus, Outcome, PauseAction, PauseNotice, Price, Receipt, Rejection, RejectionCode,
    Tombstone, TrustAttestation, TrustScores, Usage,
};
pub use sync::{
    RangeSummary, SYNC_HASH_LEN, SyncError, SyncItem, SyncRange, SyncRequest, SyncResponse,
    SyncTable,
};
pub use time::Timestamp;
pub use validate::{ValidationContext, ValidationError};
