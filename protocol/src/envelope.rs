//! Signed envelopes: the one container for every signed message (`specs/protocol.md#envelopes`).

use std::fmt;

use prost::Message as _;
use sha2::{Digest, Sha256};

use crate::did::{Did, DidError};
use crate::keys::{Keypair, SIGNATURE_LEN};
use crate::limits;
use crate::proto;
use crate::validate::{ValidationContext, ValidationError};

/// The kinds of signed message. The number is the envelope's `kind` field on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// An [`AgentCard`](crate::AgentCard).
    AgentCard = 1,
    /// A [`Tombstone`](crate::Tombstone).
    Tombstone = 2,
    /// An [`Intent`](crate::Intent).
    Intent = 3,
    /// An [`IntentResult`](crate::IntentResult).
    IntentResult = 4,
    /// A [`Receipt`](crate::Receipt).
    Receipt = 5,
    /// A [`TrustAttestation`](crate::TrustAttestation).
    TrustAttestation = 6,
    /// A [`PauseNotice`](crate::PauseNotice).
    PauseNotice = 7,
}

impl Kind {
    /// Every kind, in wire order.
    pub const ALL: [Kind; 7] = [
        Kind::AgentCard,
        Kind::Tombstone,
        Kind::Intent,
        Kind::IntentResult,
        Kind::Receipt,
        Kind::TrustAttestation,
        Kind::PauseNotice,
    ];

    /// The kind with this wire number.
    pub fn from_wire(n: u32) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| *k as u32 == n)
    }

    /// The domain-separation tag that prefixes the payload in the signed bytes, so a
    /// signature over one kind can never be taken for another (`specs/protocol.md#signing`).
    pub const fn domain_tag(self) -> &'static [u8] {
        match self {
            Kind::AgentCard => b"agentnet/v1/agent-card\0",
            Kind::Tombstone => b"agentnet/v1/tombstone\0",
            Kind::Intent => b"agentnet/v1/intent\0",
            Kind::IntentResult => b"agentnet/v1/intent-result\0",
            Kind::Receipt => b"agentnet/v1/receipt\0",
            Kind::TrustAttestation => b"agentnet/v1/trust-attestation\0",
            Kind::PauseNotice => b"agentnet/v1/pause-notice\0",
        }
    }

    /// The largest encoded payload of this kind ([`limits`]).
    pub const fn max_payload_len(self) -> usize {
        match self {
            Kind::AgentCard => limits::MAX_CARD_LEN,
            Kind::Tombstone => limits::MAX_TOMBSTONE_LEN,
            Kind::Intent => limits::MAX_INTENT_LEN,
            Kind::IntentResult => limits::MAX_INTENT_RESULT_LEN,
            Kind::Receipt => limits::MAX_RECEIPT_LEN,
            Kind::TrustAttestation => limits::MAX_ATTESTATION_LEN,
            Kind::PauseNotice => limits::MAX_PAUSE_NOTICE_LEN,
        }
    }

    /// The largest encoded envelope that carries this kind.
    pub const fn max_envelope_len(self) -> usize {
        self.max_payload_len() + limits::MAX_ENVELOPE_OVERHEAD
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Kind::AgentCard => "AgentCard",
            Kind::Tombstone => "Tombstone",
            Kind::Intent => "Intent",
            Kind::IntentResult => "IntentResult",
            Kind::Receipt => "Receipt",
            Kind::TrustAttestation => "TrustAttestation",
            Kind::PauseNotice => "PauseNotice",
        };
        f.write_str(name)
    }
}

mod sealed {
    pub trait Sealed {}
}
pub(crate) use sealed::Sealed;

/// A message kind that travels in a [`SignedEnvelope`]. Implemented by the crate's message types.
pub trait Message: Sized + Sealed {
    /// The envelope kind of this message.
    const KIND: Kind;

    /// Decodes a payload and checks its static rules: sizes, counts, character sets,
    /// DIDs and enums. Time is not checked here; see [`Message::check_time`].
    fn decode(payload: &[u8]) -> Result<Self, ValidationError>;

    /// Encodes the message as a payload.
    fn encode(&self) -> Vec<u8>;

    /// The static rules that [`Message::decode`] checks, for a message built in memory.
    fn check(&self) -> Result<(), ValidationError>;

    /// Checks timestamps against the verifier's clock: not from the future beyond the
    /// allowed skew, not expired, lifetime within its limit.
    fn check_time(&self, ctx: &ValidationContext) -> Result<(), ValidationError>;

    /// Checks that `signer` may sign this message (for example, a card's own DID).
    fn check_signer(&self, signer: &Did) -> Result<(), ValidationError>;
}

/// Why bytes are not a valid signed envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The encoded envelope exceeds the limit for the context it arrived in.
    #[error("envelope is {len} bytes; the limit is {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a protobuf `Envelope`.
    #[error("envelope is not a valid protobuf message: {reason}")]
    Malformed {
        /// The decoder's explanation.
        reason: String,
    },
    /// The kind number is not one this version knows.
    #[error("envelope kind {0} is unknown to this protocol version")]
    UnknownKind(u32),
    /// The envelope carries another kind than the one expected here.
    #[error("expected a {expected} envelope, got a {found} envelope")]
    WrongKind {
        /// What the caller expected.
        expected: Kind,
        /// What arrived.
        found: Kind,
    },
    /// The payload exceeds its kind's limit.
    #[error("{kind} payload is {len} bytes; the limit is {max}")]
    PayloadTooLarge {
        /// The kind.
        kind: Kind,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The signer field is not a DID.
    #[error("envelope signer is not a valid DID: {0}")]
    BadSigner(#[source] DidError),
    /// The signature is not 64 bytes.
    #[error("signature is {0} bytes; an Ed25519 signature is 64")]
    BadSignatureLength(usize),
    /// The signature does not verify against the signer's key.
    #[error("signature does not verify for signer {signer} over this {kind} payload")]
    BadSignature {
        /// The kind.
        kind: Kind,
        /// The claimed signer.
        signer: Box<Did>,
    },
}

/// Why a signed message was refused: a bad envelope or invalid content.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The envelope itself is bad.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// The envelope is sound but its message is not valid.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}

/// SHA-256 over a signed message's domain tag and payload: the message's identity.
///
/// Two envelopes with the same content id carry the same signed bytes. Receipts are
/// cited by their content id.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct ContentId(#[serde(with = "hex_bytes")] pub [u8; 32]);

impl fmt::Debug for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentId({})", hex::encode(self.0))
    }
}

impl fmt::Display for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(&text, &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

/// A signed message whose signature has been verified.
///
/// The payload bytes are kept exactly as signed, so the envelope can be stored and
/// forwarded without re-encoding. A value of this type always carries a valid signature:
/// [`SignedEnvelope::from_bytes`] verifies it and [`SignedEnvelope::seal`] creates it.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedEnvelope {
    kind: Kind,
    payload: Vec<u8>,
    signer: Did,
    signature: [u8; SIGNATURE_LEN],
}

impl SignedEnvelope {
    /// Checks `message`'s static rules and signer, then signs it with `keypair`.
    pub fn seal<M: Message>(keypair: &Keypair, message: &M) -> Result<Self, ValidationError> {
        message.check()?;
        let signer = keypair.did();
        message.check_signer(&signer)?;
        let payload = message.encode();
        let signature = keypair.sign(&signed_bytes(M::KIND, &payload));
        Ok(SignedEnvelope {
            kind: M::KIND,
            payload,
            signer,
            signature,
        })
    }

    /// Decodes an envelope and verifies its signature. The payload is not decoded yet.
    ///
    /// Cheap checks run first (length, kind, payload limit, signer, signature length), so
    /// malformed input costs no signature verification.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        Self::decode_checked(bytes, None)
    }

    /// Like [`SignedEnvelope::from_bytes`], but only accepts an envelope of `kind`: a larger
    /// envelope than that kind allows, or another kind, is refused before verifying.
    pub fn from_bytes_of_kind(bytes: &[u8], kind: Kind) -> Result<Self, EnvelopeError> {
        if bytes.len() > kind.max_envelope_len() {
            return Err(EnvelopeError::TooLarge {
                len: bytes.len(),
                max: kind.max_envelope_len(),
            });
        }
        Self::decode_checked(bytes, Some(kind))
    }

    fn decode_checked(bytes: &[u8], expected: Option<Kind>) -> Result<Self, EnvelopeError> {
        if bytes.len() > limits::MAX_ENVELOPE_LEN {
            return Err(EnvelopeError::TooLarge {
                len: bytes.len(),
                max: limits::MAX_ENVELOPE_LEN,
            });
        }
        let raw = proto::Envelope::decode(bytes).map_err(|e| EnvelopeError::Malformed {
            reason: e.to_string(),
        })?;
        let kind = Kind::from_wire(raw.kind).ok_or(EnvelopeError::UnknownKind(raw.kind))?;
        if let Some(expected) = expected
            && kind != expected
        {
            return Err(EnvelopeError::WrongKind {
                expected,
                found: kind,
            });
        }
        if raw.payload.len() > kind.max_payload_len() {
            return Err(EnvelopeError::PayloadTooLarge {
                kind,
                len: raw.payload.len(),
                max: kind.max_payload_len(),
            });
        }
        let signer: Did = raw.signer.parse().map_err(EnvelopeError::BadSigner)?;
        let signature: [u8; SIGNATURE_LEN] = raw
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| EnvelopeError::BadSignatureLength(raw.signature.len()))?;
        if !signer
            .public_key()
            .verify(&signed_bytes(kind, &raw.payload), &signature)
        {
            return Err(EnvelopeError::BadSignature {
                kind,
                signer: Box::new(signer),
            });
        }
        Ok(SignedEnvelope {
            kind,
            payload: raw.payload,
            signer,
            signature,
        })
    }

    /// The encoded envelope, as sent on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        proto::Envelope {
            kind: self.kind as u32,
            payload: self.payload.clone(),
            signer: self.signer.as_str().to_owned(),
            signature: self.signature.to_vec(),
        }
        .encode_to_vec()
    }

    /// The payload's kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Who signed it (verified).
    pub fn signer(&self) -> &Did {
        &self.signer
    }

    /// The payload bytes exactly as signed.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The signature bytes.
    pub fn signature(&self) -> &[u8; SIGNATURE_LEN] {
        &self.signature
    }

    /// SHA-256 over the domain tag and payload.
    pub fn content_id(&self) -> ContentId {
        let mut hasher = Sha256::new();
        hasher.update(self.kind.domain_tag());
        hasher.update(&self.payload);
        ContentId(hasher.finalize().into())
    }

    /// Decodes and validates the payload as an `M`: the kind must match, the content must
    /// follow every static and time rule, and the signer must be allowed to sign it.
    pub fn open<M: Message>(&self, ctx: &ValidationContext) -> Result<M, OpenError> {
        let message = self.open_untimed::<M>()?;
        message.check_time(ctx)?;
        Ok(message)
    }

    /// Like [`SignedEnvelope::open`] without the time checks, for messages whose time has
    /// passed but that are still needed, such as receipts read back from storage.
    pub fn open_untimed<M: Message>(&self) -> Result<M, OpenError> {
        if self.kind != M::KIND {
            return Err(EnvelopeError::WrongKind {
                expected: M::KIND,
                found: self.kind,
            }
            .into());
        }
        let message = M::decode(&self.payload)?;
        message.check_signer(&self.signer)?;
        Ok(message)
    }
}

impl fmt::Debug for SignedEnvelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedEnvelope")
            .field("kind", &self.kind)
            .field("signer", &self.signer)
            .field("payload_len", &self.payload.len())
            .field("content_id", &self.content_id())
            .finish()
    }
}

/// A verified envelope together with its decoded, validated message.
#[derive(Clone, Debug, PartialEq)]
pub struct Signed<M> {
    envelope: SignedEnvelope,
    message: M,
}

impl<M: Message> Signed<M> {
    /// Signs `message` with `keypair`; see [`SignedEnvelope::seal`].
    pub fn seal(keypair: &Keypair, message: M) -> Result<Self, ValidationError> {
        let envelope = SignedEnvelope::seal(keypair, &message)?;
        Ok(Signed { envelope, message })
    }

    /// Decodes, verifies and validates an encoded envelope of kind `M`.
    pub fn from_bytes(bytes: &[u8], ctx: &ValidationContext) -> Result<Self, OpenError> {
        let envelope = SignedEnvelope::from_bytes_of_kind(bytes, M::KIND)?;
        let message = envelope.open(ctx)?;
        Ok(Signed { envelope, message })
    }

    /// Validates an already verified envelope as an `M`.
    pub fn from_envelope(
        envelope: SignedEnvelope,
        ctx: &ValidationContext,
    ) -> Result<Self, OpenError> {
        let message = envelope.open(ctx)?;
        Ok(Signed { envelope, message })
    }

    /// The message.
    pub fn message(&self) -> &M {
        &self.message
    }

    /// The envelope it came in.
    pub fn envelope(&self) -> &SignedEnvelope {
        &self.envelope
    }

    /// Splits into envelope and message.
    pub fn into_parts(self) -> (SignedEnvelope, M) {
        (self.envelope, self.message)
    }
}

/// The bytes an envelope's signature covers: the kind's domain tag, then the payload.
pub fn signed_bytes(kind: Kind, payload: &[u8]) -> Vec<u8> {
    let tag = kind.domain_tag();
    let mut bytes = Vec::with_capacity(tag.len() + payload.len());
    bytes.extend_from_slice(tag);
    bytes.extend_from_slice(payload);
    bytes
}
