//! Anti-entropy messages of `/agentnet/sync/1` (`specs/protocol.md#sync-messages`).
//!
//! Two peers reconcile a registry table by range-based set reconciliation: one sends
//! fingerprints of key ranges, the other answers each range whose fingerprint differs
//! with a finer split or with the items themselves, and each side then fetches the
//! records it lacks or holds an older version of. The planning logic lives in the node;
//! these are only the messages and their limits.

use prost::Message as _;

use crate::limits::*;
use crate::proto;
use crate::validate::{self as v, ValidationError};

/// Length of an item hash and of a range fingerprint.
pub const SYNC_HASH_LEN: usize = 16;

/// The registry tables that peers reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum SyncTable {
    /// Cards and tombstones, keyed by the agent's DID (its UTF-8 string).
    Registry = 1,
    /// Trust attestations, keyed by issuer, subject and capability.
    Attestations = 2,
    /// Pause notices, keyed by issuer and `seq` (`specs/intents.md#pause-notices`).
    Pauses = 3,
}

impl SyncTable {
    fn from_wire(n: u32) -> Result<Self, ValidationError> {
        match n {
            1 => Ok(SyncTable::Registry),
            2 => Ok(SyncTable::Attestations),
            3 => Ok(SyncTable::Pauses),
            0 => Err(ValidationError::Missing {
                field: "table".into(),
            }),
            n => Err(ValidationError::invalid(
                "table",
                format!("unknown table {n}"),
            )),
        }
    }
}

/// One record's summary.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SyncItem {
    /// The record's key.
    pub key: Vec<u8>,
    /// Its version (`seq`).
    pub version: u64,
    /// The first 16 bytes of its envelope's content id.
    pub hash: [u8; SYNC_HASH_LEN],
}

/// What the sender knows about a key range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RangeSummary {
    /// A fingerprint of the range's records and how many there are.
    Fingerprint {
        /// The fingerprint.
        hash: [u8; SYNC_HASH_LEN],
        /// The number of records.
        count: u64,
    },
    /// Every record in the range, sorted by key.
    Items(Vec<SyncItem>),
}

/// A key range `[lower, upper)` and its summary. An empty `upper` means the end of the key space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncRange {
    /// Inclusive lower bound.
    pub lower: Vec<u8>,
    /// Exclusive upper bound; empty for the end of the key space.
    pub upper: Vec<u8>,
    /// What the sender knows about it.
    pub summary: RangeSummary,
}

/// A request on `/agentnet/sync/1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncRequest {
    /// Compare these ranges of `table`.
    Reconcile {
        /// The table.
        table: SyncTable,
        /// Sorted, non-overlapping ranges.
        ranges: Vec<SyncRange>,
    },
    /// Send the records with these keys.
    Fetch {
        /// The table.
        table: SyncTable,
        /// Distinct keys.
        keys: Vec<Vec<u8>>,
    },
}

/// A response on `/agentnet/sync/1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncResponse {
    /// The responder's view of the ranges that differed.
    Reconcile {
        /// The table.
        table: SyncTable,
        /// Sorted, non-overlapping ranges.
        ranges: Vec<SyncRange>,
    },
    /// Encoded envelopes; the receiver verifies each one as if it had arrived by gossip.
    Records(Vec<Vec<u8>>),
}

/// Why a sync message was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// Larger than [`MAX_SYNC_MESSAGE_LEN`].
    #[error("sync message is {len} bytes; the limit is {MAX_SYNC_MESSAGE_LEN}")]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// Not valid protobuf.
    #[error("sync message is not a valid protobuf message: {0}")]
    Malformed(String),
    /// Valid protobuf that breaks a rule.
    #[error("invalid sync message: {0}")]
    Invalid(#[from] ValidationError),
}

impl SyncRequest {
    /// Encodes the request.
    pub fn to_bytes(&self) -> Vec<u8> {
        let body = match self {
            SyncRequest::Reconcile { table, ranges } => {
                proto::sync_request::Body::Reconcile(reconcile_to_proto(*table, ranges))
            }
            SyncRequest::Fetch { table, keys } => {
                proto::sync_request::Body::Fetch(proto::SyncFetch {
                    table: *table as u32,
                    keys: keys.clone(),
                })
            }
        };
        proto::SyncRequest { body: Some(body) }.encode_to_vec()
    }

    /// Decodes and checks a request.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SyncError> {
        check_len(bytes)?;
        let p =
            proto::SyncRequest::decode(bytes).map_err(|e| SyncError::Malformed(e.to_string()))?;
        match p.body {
            Some(proto::sync_request::Body::Reconcile(r)) => {
                let (table, ranges) = reconcile_from_proto(r)?;
                Ok(SyncRequest::Reconcile { table, ranges })
            }
            Some(proto::sync_request::Body::Fetch(f)) => {
                let table = SyncTable::from_wire(f.table)?;
                if f.keys.is_empty() {
                    return Err(ValidationError::Missing {
                        field: "keys".into(),
                    }
                    .into());
                }
                v::count("keys", f.keys.len(), MAX_SYNC_FETCH_KEYS)?;
                for (i, key) in f.keys.iter().enumerate() {
                    check_key(&format!("keys[{i}]"), key)?;
                }
                v::unique("keys", &f.keys)?;
                Ok(SyncRequest::Fetch {
                    table,
                    keys: f.keys,
                })
            }
            None => Err(ValidationError::Missing {
                field: "body".into(),
            }
            .into()),
        }
    }
}

impl SyncResponse {
    /// Encodes the response.
    pub fn to_bytes(&self) -> Vec<u8> {
        let body = match self {
            SyncResponse::Reconcile { table, ranges } => {
                proto::sync_response::Body::Reconcile(reconcile_to_proto(*table, ranges))
            }
            SyncResponse::Records(envelopes) => {
                proto::sync_response::Body::Records(proto::SyncRecords {
                    envelopes: envelopes.clone(),
                })
            }
        };
        proto::SyncResponse { body: Some(body) }.encode_to_vec()
    }

    /// Decodes and checks a response. Record envelopes are length-checked here and
    /// verified by the receiver.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SyncError> {
        check_len(bytes)?;
        let p =
            proto::SyncResponse::decode(bytes).map_err(|e| SyncError::Malformed(e.to_string()))?;
        match p.body {
            Some(proto::sync_response::Body::Reconcile(r)) => {
                let (table, ranges) = reconcile_from_proto(r)?;
                Ok(SyncResponse::Reconcile { table, ranges })
            }
            Some(proto::sync_response::Body::Records(r)) => {
                v::count("envelopes", r.envelopes.len(), MAX_SYNC_RECORDS)?;
                for (i, env) in r.envelopes.iter().enumerate() {
                    v::bytes_len(&format!("envelopes[{i}]"), env.len(), MAX_ENVELOPE_LEN)?;
                }
                Ok(SyncResponse::Records(r.envelopes))
            }
            None => Err(ValidationError::Missing {
                field: "body".into(),
            }
            .into()),
        }
    }
}

fn check_len(bytes: &[u8]) -> Result<(), SyncError> {
    if bytes.len() > MAX_SYNC_MESSAGE_LEN {
        return Err(SyncError::TooLarge { len: bytes.len() });
    }
    precount(bytes)
}

/// Counts the repeated entries of a sync message on the wire before decoding it, so that a
/// message of many tiny entries (each a few bytes on the wire but tens in memory) is
/// refused before it is expanded. Both `SyncRequest` and `SyncResponse` put their bodies
/// in fields 1 (reconcile) and 2 (fetch or records), whose repeated entries are field 2 of
/// a reconcile (ranges; their items in field 4 → field 1) and field 2 of a fetch (keys) or
/// field 1 of records (envelopes). prost merges repeated occurrences of a body field, so
/// counts add up across them.
fn precount(bytes: &[u8]) -> Result<(), SyncError> {
    let (mut ranges, mut items, mut list) = (0usize, 0usize, 0usize);
    for field in wire_fields(bytes) {
        let (number, body) = field?;
        match number {
            1 => {
                for f in wire_fields(body) {
                    let (n, range) = f?;
                    if n == 2 {
                        ranges += 1;
                        for g in wire_fields(range) {
                            let (m, summary) = g?;
                            if m == 4 {
                                for h in wire_fields(summary) {
                                    items += usize::from(h?.0 == 1);
                                }
                            }
                        }
                    }
                }
            }
            2 => {
                for f in wire_fields(body) {
                    let (n, _) = f?;
                    list += usize::from(n == 1 || n == 2);
                }
            }
            _ => {}
        }
        v::count("ranges", ranges, MAX_SYNC_RANGES)?;
        v::count("ranges[*].items", items, MAX_SYNC_ITEMS)?;
        v::count(
            "keys or envelopes",
            list,
            MAX_SYNC_FETCH_KEYS.max(MAX_SYNC_RECORDS),
        )?;
    }
    Ok(())
}

/// Iterates the length-delimited fields of a protobuf message as (field number, bytes);
/// other wire types are skipped. Malformed input ends the iteration with an error.
fn wire_fields(mut buf: &[u8]) -> impl Iterator<Item = Result<(u32, &[u8]), SyncError>> {
    let malformed = || SyncError::Malformed("truncated or invalid field".into());
    std::iter::from_fn(move || {
        loop {
            if buf.is_empty() {
                return None;
            }
            let Some((key, rest)) = read_varint(buf) else {
                buf = &[];
                return Some(Err(malformed()));
            };
            buf = rest;
            let number = u32::try_from(key >> 3).unwrap_or(0);
            let skip = match key & 7 {
                0 => match read_varint(buf) {
                    Some((_, rest)) => {
                        buf = rest;
                        continue;
                    }
                    None => None,
                },
                1 => Some(8),
                5 => Some(4),
                2 => match read_varint(buf) {
                    Some((len, rest)) if (len as usize) <= rest.len() => {
                        let (body, after) = rest.split_at(len as usize);
                        buf = after;
                        return Some(Ok((number, body)));
                    }
                    _ => None,
                },
                _ => None,
            };
            match skip {
                Some(n) if n <= buf.len() => buf = &buf[n..],
                _ => {
                    buf = &[];
                    return Some(Err(malformed()));
                }
            }
        }
    })
}

fn read_varint(buf: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, &b) in buf.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, &buf[i + 1..]));
        }
    }
    None
}

fn check_key(field: &str, key: &[u8]) -> Result<(), ValidationError> {
    if key.is_empty() {
        return Err(ValidationError::Missing {
            field: field.into(),
        });
    }
    v::bytes_len(field, key.len(), MAX_SYNC_KEY_LEN)
}

fn hash_field(field: &str, bytes: &[u8]) -> Result<[u8; SYNC_HASH_LEN], ValidationError> {
    bytes.try_into().map_err(|_| {
        ValidationError::invalid(
            field,
            format!("is {} bytes; expected {SYNC_HASH_LEN}", bytes.len()),
        )
    })
}

fn reconcile_to_proto(table: SyncTable, ranges: &[SyncRange]) -> proto::SyncReconcile {
    proto::SyncReconcile {
        table: table as u32,
        ranges: ranges
            .iter()
            .map(|r| proto::SyncRange {
                lower: r.lower.clone(),
                upper: r.upper.clone(),
                summary: Some(match &r.summary {
                    RangeSummary::Fingerprint { hash, count } => {
                        proto::sync_range::Summary::Fingerprint(proto::SyncFingerprint {
                            hash: hash.to_vec(),
                            count: *count,
                        })
                    }
                    RangeSummary::Items(items) => {
                        proto::sync_range::Summary::Items(proto::SyncItems {
                            items: items
                                .iter()
                                .map(|i| proto::SyncItem {
                                    key: i.key.clone(),
                                    version: i.version,
                                    hash: i.hash.to_vec(),
                                })
                                .collect(),
                        })
                    }
                }),
            })
            .collect(),
    }
}

/// Converts and checks ranges: bounds within limits, `lower < upper`, ranges sorted and
/// disjoint, items inside their range in strictly increasing key order, item totals bounded.
fn reconcile_from_proto(
    r: proto::SyncReconcile,
) -> Result<(SyncTable, Vec<SyncRange>), ValidationError> {
    let table = SyncTable::from_wire(r.table)?;
    v::count("ranges", r.ranges.len(), MAX_SYNC_RANGES)?;
    let total_items: usize = r
        .ranges
        .iter()
        .map(|range| match &range.summary {
            Some(proto::sync_range::Summary::Items(items)) => items.items.len(),
            _ => 0,
        })
        .sum();
    v::count("ranges[*].items", total_items, MAX_SYNC_ITEMS)?;
    let mut ranges = Vec::with_capacity(r.ranges.len());
    let mut previous_upper: Option<Vec<u8>> = None;
    for (i, range) in r.ranges.into_iter().enumerate() {
        let field = |f: &str| format!("ranges[{i}].{f}");
        v::bytes_len(&field("lower"), range.lower.len(), MAX_SYNC_KEY_LEN)?;
        v::bytes_len(&field("upper"), range.upper.len(), MAX_SYNC_KEY_LEN)?;
        if !range.upper.is_empty() && range.lower >= range.upper {
            return Err(ValidationError::invalid(
                field("upper"),
                "is not above lower",
            ));
        }
        match &previous_upper {
            Some(prev) if prev.is_empty() => {
                return Err(ValidationError::invalid(
                    field("lower"),
                    "follows a range that already reaches the end of the key space",
                ));
            }
            Some(prev) if range.lower < *prev => {
                return Err(ValidationError::invalid(
                    field("lower"),
                    "overlaps the previous range",
                ));
            }
            _ => {}
        }
        previous_upper = Some(range.upper.clone());
        let summary = match range.summary {
            Some(proto::sync_range::Summary::Fingerprint(f)) => RangeSummary::Fingerprint {
                hash: hash_field(&field("fingerprint.hash"), &f.hash)?,
                count: f.count,
            },
            Some(proto::sync_range::Summary::Items(items)) => {
                let mut out: Vec<SyncItem> = Vec::with_capacity(items.items.len());
                for (j, item) in items.items.into_iter().enumerate() {
                    let ifield = format!("ranges[{i}].items[{j}]");
                    check_key(&format!("{ifield}.key"), &item.key)?;
                    let inside = item.key >= range.lower
                        && (range.upper.is_empty() || item.key < range.upper);
                    if !inside {
                        return Err(ValidationError::invalid(
                            ifield,
                            "key lies outside its range",
                        ));
                    }
                    if out.last().is_some_and(|prev| prev.key >= item.key) {
                        return Err(ValidationError::invalid(
                            ifield,
                            "keys are not strictly increasing",
                        ));
                    }
                    out.push(SyncItem {
                        hash: hash_field(&format!("{ifield}.hash"), &item.hash)?,
                        key: item.key,
                        version: item.version,
                    });
                }
                RangeSummary::Items(out)
            }
            None => {
                return Err(ValidationError::Missing {
                    field: field("summary"),
                });
            }
        };
        ranges.push(SyncRange {
            lower: range.lower,
            upper: range.upper,
            summary,
        });
    }
    Ok((table, ranges))
}
