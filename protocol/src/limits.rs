//! Size, count and time limits. Every one is normative: `specs/protocol.md#limits`.
//!
//! Lengths are in bytes of UTF-8 (or raw bytes for binary fields). A payload limit caps a
//! kind's encoded payload as a whole, before it is decoded; field limits then cap each
//! field. The field limits of a card add up to more than its payload limit on purpose: a
//! card may have a long description or many capabilities, not both.

use std::time::Duration;

const KIB: usize = 1024;
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// Encoded `AgentCard` payload.
pub const MAX_CARD_LEN: usize = 32 * KIB;
/// Encoded `Tombstone` payload.
pub const MAX_TOMBSTONE_LEN: usize = KIB;
/// Encoded `Intent` payload.
pub const MAX_INTENT_LEN: usize = 64 * KIB;
/// Encoded `IntentResult` payload.
pub const MAX_INTENT_RESULT_LEN: usize = 256 * KIB;
/// Encoded `Receipt` payload.
pub const MAX_RECEIPT_LEN: usize = 2 * KIB;
/// Encoded `TrustAttestation` payload.
pub const MAX_ATTESTATION_LEN: usize = 4 * KIB;
/// Encoded `PauseNotice` payload.
pub const MAX_PAUSE_NOTICE_LEN: usize = 16 * KIB;
/// What an envelope adds around its payload: kind, signer DID, signature and framing.
pub const MAX_ENVELOPE_OVERHEAD: usize = 256;
/// The largest encoded envelope of any kind.
pub const MAX_ENVELOPE_LEN: usize = MAX_INTENT_RESULT_LEN + MAX_ENVELOPE_OVERHEAD;

/// An agent's display name.
pub const MAX_NAME_LEN: usize = 64;
/// An agent card's description.
pub const MAX_DESCRIPTION_LEN: usize = 2 * KIB;
/// Capabilities per card.
pub const MAX_CAPABILITIES: usize = 32;
/// A capability name (also an intent's and a receipt's capability).
pub const MAX_CAPABILITY_NAME_LEN: usize = 64;
/// A capability's description.
pub const MAX_CAPABILITY_DESCRIPTION_LEN: usize = KIB;
/// Tags per capability.
pub const MAX_TAGS: usize = 16;
/// One tag.
pub const MAX_TAG_LEN: usize = 32;
/// A capability's version string.
pub const MAX_VERSION_LEN: usize = 32;
/// Endpoints per card.
pub const MAX_ENDPOINTS: usize = 8;
/// One endpoint (a URL or multiaddr).
pub const MAX_ENDPOINT_LEN: usize = 256;
/// Credentials per card.
pub const MAX_CREDENTIALS: usize = 4;
/// A credential's format (media type).
pub const MAX_CREDENTIAL_FORMAT_LEN: usize = 64;
/// A credential's data.
pub const MAX_CREDENTIAL_LEN: usize = 8 * KIB;
/// A currency code.
pub const MAX_CURRENCY_LEN: usize = 8;
/// The largest amount of money, in micros: 10^9 whole units. Sums of many such amounts
/// still fit an `i64`.
pub const MAX_AMOUNT_MICROS: u64 = 1_000_000_000_000_000;
/// An intent's input document.
pub const MAX_INTENT_INPUT_LEN: usize = 60 * KIB;
/// An intent result's output document.
pub const MAX_INTENT_OUTPUT_LEN: usize = 248 * KIB;
/// An intent result's or a rejection's error message.
pub const MAX_ERROR_LEN: usize = KIB;
/// Receipts cited by one attestation.
pub const MAX_ATTESTATION_RECEIPTS: usize = 64;
/// Subjects of one pause notice.
pub const MAX_PAUSE_SUBJECTS: usize = 128;
/// A pause notice's reason.
pub const MAX_REASON_LEN: usize = 512;

/// How far in the future a timestamp may lie, to allow for clock skew between nodes.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);
/// The longest a card may stay valid; agents re-sign their cards before this.
pub const MAX_CARD_LIFETIME: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// The longest a tombstone is kept.
pub const MAX_TOMBSTONE_LIFETIME: Duration = Duration::from_secs(90 * 24 * 60 * 60);
/// The longest an attestation stays valid.
pub const MAX_ATTESTATION_LIFETIME: Duration = Duration::from_secs(90 * 24 * 60 * 60);
/// The longest a pause notice stays valid.
pub const MAX_PAUSE_LIFETIME: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// The longest time between an intent's `issued_at` and its deadline. It also bounds how
/// long a replay cache must remember an intent.
pub const MAX_INTENT_TTL: Duration = Duration::from_secs(60 * 60);
/// The largest latency a receipt may report.
pub const MAX_RECEIPT_LATENCY: Duration = DAY;

/// Ranges in one sync message.
pub const MAX_SYNC_RANGES: usize = 128;
/// Item summaries in one sync message, over all its ranges.
pub const MAX_SYNC_ITEMS: usize = 4096;
/// Keys in one fetch request.
pub const MAX_SYNC_FETCH_KEYS: usize = 1024;
/// Records in one fetch response.
pub const MAX_SYNC_RECORDS: usize = 512;
/// A record key or range bound.
pub const MAX_SYNC_KEY_LEN: usize = 128;
/// An encoded sync request or response.
pub const MAX_SYNC_MESSAGE_LEN: usize = 4 * KIB * KIB;
/// An encoded intent response (the result envelope plus framing).
pub const MAX_INTENT_RESPONSE_LEN: usize = MAX_ENVELOPE_LEN + 64;
