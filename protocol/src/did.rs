//! `did:key` identities for Ed25519 keys.
//!
//! A `did:key` is `did:key:` followed by the multibase base58btc encoding (prefix `z`) of the
//! multicodec varint `0xed` (`ed25519-pub`, bytes `0xed 0x01`) and the 32-byte public key.
//! See `specs/identity.md#did-key`.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use libp2p_identity::PeerId;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::keys::PublicKey;

/// The prefix every DID of this method starts with.
pub const DID_KEY_PREFIX: &str = "did:key:";

/// The multicodec code of an Ed25519 public key (`ed25519-pub`).
pub const ED25519_MULTICODEC: u64 = 0xed;

/// The varint encoding of [`ED25519_MULTICODEC`], which prefixes the key bytes.
const ED25519_MULTICODEC_PREFIX: [u8; 2] = [0xed, 0x01];

/// The longest DID string accepted before decoding. An Ed25519 `did:key` is 56 bytes;
/// anything much longer is rejected without running the quadratic base58 decoder on it.
pub const MAX_DID_LEN: usize = 128;

/// A parsed Ed25519 `did:key` identity.
///
/// Equality, ordering and hashing follow the canonical string form. Cloning is cheap: the
/// string and the decompressed key are shared.
#[derive(Clone)]
pub struct Did(Arc<Inner>);

struct Inner {
    text: Box<str>,
    key: PublicKey,
}

impl PartialEq for Did {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.text == other.0.text
    }
}

impl Eq for Did {}

impl PartialOrd for Did {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Did {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.text.cmp(&other.0.text)
    }
}

impl std::hash::Hash for Did {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.text.hash(state);
    }
}

/// Why a string is not an Ed25519 `did:key`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DidError {
    /// The string does not start with `did:key:`.
    #[error("a DID must start with \"did:key:\", got {found:?}")]
    WrongPrefix {
        /// The first characters of the rejected input.
        found: String,
    },
    /// The input is longer than [`MAX_DID_LEN`].
    #[error(
        "DID is {len} bytes long; an Ed25519 did:key is 56 bytes and at most {MAX_DID_LEN} are accepted"
    )]
    TooLong {
        /// Length of the rejected input in bytes.
        len: usize,
    },
    /// The method-specific id does not use multibase base58btc.
    #[error("did:key must use multibase base58btc (prefix 'z'), found prefix {found:?}")]
    WrongMultibase {
        /// The multibase prefix that was found, if any.
        found: Option<char>,
    },
    /// The method-specific id is not valid base58.
    #[error("did:key identifier is not valid base58btc: {reason}")]
    BadBase58 {
        /// The decoder's explanation.
        reason: String,
    },
    /// The multicodec prefix names a key type other than Ed25519.
    #[error("did:key multicodec is 0x{found:x}, expected 0xed (Ed25519 public key)")]
    WrongCodec {
        /// The multicodec code that was found.
        found: u64,
    },
    /// The multicodec prefix is not a valid varint.
    #[error("did:key identifier does not start with a valid multicodec varint")]
    BadMulticodec,
    /// The key is not 32 bytes long.
    #[error("Ed25519 public key in did:key must be 32 bytes, found {found}")]
    WrongLength {
        /// Number of key bytes found after the multicodec prefix.
        found: usize,
    },
    /// The 32 bytes do not encode a point on the Ed25519 curve.
    #[error("did:key holds 32 bytes that are not a valid Ed25519 public key")]
    InvalidKey,
}

impl Did {
    /// The DID of an Ed25519 public key.
    pub fn from_public_key(key: &PublicKey) -> Did {
        let mut bytes = Vec::with_capacity(34);
        bytes.extend_from_slice(&ED25519_MULTICODEC_PREFIX);
        bytes.extend_from_slice(&key.to_bytes());
        let text = format!("{DID_KEY_PREFIX}z{}", bs58::encode(bytes).into_string());
        Did(Arc::new(Inner {
            text: text.into(),
            key: *key,
        }))
    }

    /// The Ed25519 public key this DID names.
    pub fn public_key(&self) -> &PublicKey {
        &self.0.key
    }

    /// The canonical string form, `did:key:z6Mk…`.
    pub fn as_str(&self) -> &str {
        &self.0.text
    }

    /// The libp2p [`PeerId`] of the same Ed25519 key.
    ///
    /// A node's DID and its PeerId are two encodings of one key (`specs/identity.md#peer-ids`).
    pub fn to_peer_id(&self) -> PeerId {
        self.0.key.to_peer_id()
    }

    /// The DID of the Ed25519 key inside `peer_id`, if the PeerId inlines an Ed25519 key.
    ///
    /// PeerIds of Ed25519 keys use the identity multihash, so the key can be recovered.
    pub fn from_peer_id(peer_id: &PeerId) -> Option<Did> {
        PublicKey::from_peer_id(peer_id).map(|key| Did::from_public_key(&key))
    }
}

impl FromStr for Did {
    type Err = DidError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > MAX_DID_LEN {
            return Err(DidError::TooLong { len: s.len() });
        }
        let Some(id) = s.strip_prefix(DID_KEY_PREFIX) else {
            return Err(DidError::WrongPrefix {
                found: s.chars().take(16).collect(),
            });
        };
        let mut chars = id.chars();
        match chars.next() {
            Some('z') => {}
            found => return Err(DidError::WrongMultibase { found }),
        }
        let bytes = bs58::decode(chars.as_str())
            .into_vec()
            .map_err(|e| DidError::BadBase58 {
                reason: e.to_string(),
            })?;
        let (codec, rest) = read_uvarint(&bytes).ok_or(DidError::BadMulticodec)?;
        if codec != ED25519_MULTICODEC {
            return Err(DidError::WrongCodec { found: codec });
        }
        let raw: [u8; 32] = rest
            .try_into()
            .map_err(|_| DidError::WrongLength { found: rest.len() })?;
        let key = PublicKey::from_bytes(&raw).map_err(|_| DidError::InvalidKey)?;
        // base58 has exactly one encoding per byte string, so `s` is already canonical.
        Ok(Did(Arc::new(Inner {
            text: s.into(),
            key,
        })))
    }
}

/// Reads an unsigned LEB128 varint of at most 9 bytes (the multiformats limit).
fn read_uvarint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value: u64 = 0;
    for (i, byte) in bytes.iter().enumerate().take(9) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            // Multiformats varints must be minimally encoded.
            if i > 0 && *byte == 0 {
                return None;
            }
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

impl fmt::Display for Did {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.text)
    }
}

impl fmt::Debug for Did {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Did({})", self.0.text)
    }
}

impl AsRef<str> for Did {
    fn as_ref(&self) -> &str {
        &self.0.text
    }
}

impl Serialize for Did {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0.text)
    }
}

impl<'de> Deserialize<'de> for Did {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_rejects_overlong_and_truncated() {
        assert_eq!(read_uvarint(&[0xed, 0x01, 7]), Some((0xed, &[7u8][..])));
        assert_eq!(read_uvarint(&[0x80]), None);
        assert_eq!(read_uvarint(&[0xed, 0x81, 0x00]), None);
        assert_eq!(read_uvarint(&[]), None);
    }
}
