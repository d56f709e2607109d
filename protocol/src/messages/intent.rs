//! Intents, their results, and the response of `/agentnet/intent/1`.

use std::fmt;

use prost::Message as _;
use serde::{Deserialize, Serialize};

use super::{Wire, known_enum, message};
use crate::did::Did;
use crate::envelope::{EnvelopeError, Kind, SignedEnvelope};
use crate::limits::*;
use crate::messages::Price;
use crate::proto;
use crate::time::Timestamp;
use crate::validate::{self as v, Result, ValidationContext, ValidationError};

/// An intent's id: 16 random bytes chosen by the sender.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IntentId(pub [u8; 16]);

impl IntentId {
    /// A fresh random id.
    pub fn random() -> std::result::Result<Self, getrandom::Error> {
        let mut id = [0u8; 16];
        getrandom::fill(&mut id)?;
        Ok(IntentId(id))
    }
}

/// Parses a 16-byte intent id field.
pub(super) fn intent_id_field(field: &str, bytes: &[u8]) -> Result<IntentId> {
    bytes.try_into().map(IntentId).map_err(|_| {
        ValidationError::invalid(
            field,
            format!("is {} bytes; an intent id is 16", bytes.len()),
        )
    })
}

impl fmt::Display for IntentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for IntentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IntentId({self})")
    }
}

impl std::str::FromStr for IntentId {
    type Err = hex::FromHexError;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let mut id = [0u8; 16];
        hex::decode_to_slice(s, &mut id)?;
        Ok(IntentId(id))
    }
}

impl Serialize for IntentId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for IntentId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A signed request from one agent to another to perform a capability.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Intent {
    /// Chosen by the sender; with `nonce`, the replay-cache key.
    pub id: IntentId,
    /// The calling agent. Only this DID may sign the intent.
    pub from: Did,
    /// The agent asked to act; not `from`.
    pub to: Did,
    /// The capability's name on `to`'s card.
    pub capability: String,
    /// A JSON document of at most [`MAX_INTENT_INPUT_LEN`] bytes.
    pub input: Vec<u8>,
    /// The most the caller will pay, if it caps the cost.
    pub max_cost: Option<Price>,
    /// When the caller signed it.
    pub issued_at: Timestamp,
    /// When the caller stops waiting; at most [`MAX_INTENT_TTL`] after `issued_at`.
    pub deadline: Timestamp,
    /// Random, so that two intents with the same id cannot both be valid.
    pub nonce: u64,
}

impl Intent {
    fn check_static(&self) -> Result {
        if self.from == self.to {
            return Err(ValidationError::invalid(
                "to",
                "an agent cannot send an intent to itself",
            ));
        }
        v::token("capability", &self.capability, MAX_CAPABILITY_NAME_LEN)?;
        v::json("input", &self.input, MAX_INTENT_INPUT_LEN)?;
        if let Some(price) = &self.max_cost {
            price.check("max_cost")?;
        }
        v::set("issued_at", self.issued_at)?;
        v::lifetime(
            Kind::Intent,
            "deadline",
            self.issued_at,
            self.deadline,
            MAX_INTENT_TTL,
        )
    }

    fn check_times(&self, ctx: &ValidationContext) -> Result {
        v::not_future(ctx, "issued_at", self.issued_at)?;
        v::not_expired(ctx, "deadline", self.deadline)
    }

    fn check_signed_by(&self, signer: &Did) -> Result {
        v::signer_is(Kind::Intent, "from", &self.from, signer)
    }
}

message!(Intent, Kind::Intent);

impl Wire for Intent {
    type Proto = proto::Intent;

    fn from_proto(p: proto::Intent) -> Result<Self> {
        Ok(Intent {
            id: intent_id_field("id", &p.id)?,
            from: v::did("from", &p.from)?,
            to: v::did("to", &p.to)?,
            capability: p.capability,
            input: p.input,
            max_cost: p.max_cost.map(Price::from_proto),
            issued_at: Timestamp::from_millis(p.issued_at_ms),
            deadline: Timestamp::from_millis(p.deadline_ms),
            nonce: p.nonce,
        })
    }

    fn to_proto(&self) -> proto::Intent {
        proto::Intent {
            id: self.id.0.to_vec(),
            from: self.from.to_string(),
            to: self.to.to_string(),
            capability: self.capability.clone(),
            input: self.input.clone(),
            max_cost: self.max_cost.as_ref().map(Price::to_proto),
            issued_at_ms: self.issued_at.as_millis(),
            deadline_ms: self.deadline.as_millis(),
            nonce: self.nonce,
        }
    }
}

/// How the callee finished an intent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum IntentStatus {
    /// Done; `output` holds the result.
    Completed,
    /// Tried and failed; `error` says why.
    Failed,
    /// Refused by the agent; `error` says why.
    Declined,
}

/// What an agent used to perform an intent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Usage {
    /// Model input tokens.
    pub input_tokens: u64,
    /// Model output tokens.
    pub output_tokens: u64,
    /// Compute time in milliseconds.
    pub compute_ms: u64,
}

/// The callee's signed answer to an intent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntentResult {
    /// The intent answered.
    pub intent_id: IntentId,
    /// The agent that ran the intent (the intent's `to`). Only this DID may sign the result.
    pub from: Did,
    /// The agent that sent the intent.
    pub to: Did,
    /// How it finished.
    pub status: IntentStatus,
    /// A JSON document if completed; empty otherwise.
    pub output: Vec<u8>,
    /// Why it failed or was declined; empty if completed.
    pub error: String,
    /// What the callee charges, if anything.
    pub cost: Option<Price>,
    /// What it used.
    pub usage: Usage,
    /// When it finished.
    pub completed_at: Timestamp,
}

impl IntentResult {
    fn check_static(&self) -> Result {
        if self.from == self.to {
            return Err(ValidationError::invalid("to", "must differ from `from`"));
        }
        match self.status {
            IntentStatus::Completed => {
                v::json("output", &self.output, MAX_INTENT_OUTPUT_LEN)?;
                v::text("error", &self.error, MAX_ERROR_LEN, true)?;
            }
            IntentStatus::Failed | IntentStatus::Declined => {
                if !self.output.is_empty() {
                    return Err(ValidationError::invalid(
                        "output",
                        "must be empty unless the status is completed",
                    ));
                }
                if self.error.is_empty() {
                    return Err(ValidationError::Missing {
                        field: "error".into(),
                    });
                }
                v::text("error", &self.error, MAX_ERROR_LEN, true)?;
            }
        }
        if let Some(cost) = &self.cost {
            cost.check("cost")?;
        }
        v::set("completed_at", self.completed_at)
    }

    fn check_times(&self, ctx: &ValidationContext) -> Result {
        v::not_future(ctx, "completed_at", self.completed_at)
    }

    fn check_signed_by(&self, signer: &Did) -> Result {
        v::signer_is(Kind::IntentResult, "from", &self.from, signer)
    }
}

message!(IntentResult, Kind::IntentResult);

impl Wire for IntentResult {
    type Proto = proto::IntentResult;

    fn from_proto(p: proto::IntentResult) -> Result<Self> {
        let status = match known_enum::<proto::IntentStatus>("status", p.status)? {
            proto::IntentStatus::Completed => IntentStatus::Completed,
            proto::IntentStatus::Failed => IntentStatus::Failed,
            proto::IntentStatus::Declined => IntentStatus::Declined,
            proto::IntentStatus::Unspecified => {
                return Err(ValidationError::Missing {
                    field: "status".into(),
                });
            }
        };
        let usage = p.usage.unwrap_or_default();
        Ok(IntentResult {
            intent_id: intent_id_field("intent_id", &p.intent_id)?,
            from: v::did("from", &p.from)?,
            to: v::did("to", &p.to)?,
            status,
            output: p.output,
            error: p.error,
            cost: p.cost.map(Price::from_proto),
            usage: Usage {
                input_tokens: usage.input_tokens,
                output_tokens: usage.output_tokens,
                compute_ms: usage.compute_ms,
            },
            completed_at: Timestamp::from_millis(p.completed_at_ms),
        })
    }

    fn to_proto(&self) -> proto::IntentResult {
        let status = match self.status {
            IntentStatus::Completed => proto::IntentStatus::Completed,
            IntentStatus::Failed => proto::IntentStatus::Failed,
            IntentStatus::Declined => proto::IntentStatus::Declined,
        };
        proto::IntentResult {
            intent_id: self.intent_id.0.to_vec(),
            from: self.from.to_string(),
            to: self.to.to_string(),
            status: status as i32,
            output: self.output.clone(),
            error: self.error.clone(),
            cost: self.cost.as_ref().map(Price::to_proto),
            usage: Some(proto::Usage {
                input_tokens: self.usage.input_tokens,
                output_tokens: self.usage.output_tokens,
                compute_ms: self.usage.compute_ms,
            }),
            completed_at_ms: self.completed_at.as_millis(),
        }
    }
}

/// Why a hosting node refused an intent before its agent saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RejectionCode {
    /// The intent failed verification or validation.
    Invalid,
    /// The intent id and nonce were seen before.
    Replay,
    /// The deadline has passed.
    Expired,
    /// The caller or callee is paused.
    Paused,
    /// A rate limit was hit.
    RateLimited,
    /// The node does not host the target agent.
    UnknownAgent,
    /// The agent could not be reached.
    Unavailable,
}

/// A hosting node's refusal of an intent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// Why.
    pub code: RejectionCode,
    /// Details for the caller, one line, at most [`MAX_ERROR_LEN`] bytes.
    pub message: String,
}

/// The response on `/agentnet/intent/1`: the callee's signed result, or the host's refusal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IntentResponse {
    /// The callee's signed [`IntentResult`], verified.
    Result(SignedEnvelope),
    /// The hosting node refused the intent.
    Rejected(Rejection),
}

/// Why an intent response could not be decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum IntentResponseError {
    /// Larger than [`MAX_INTENT_RESPONSE_LEN`].
    #[error("intent response is {len} bytes; the limit is {MAX_INTENT_RESPONSE_LEN}")]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// Not valid protobuf.
    #[error("intent response is not a valid protobuf message: {0}")]
    Malformed(String),
    /// The result envelope is bad.
    #[error("intent response carries a bad result envelope: {0}")]
    Envelope(#[from] EnvelopeError),
    /// The rejection is malformed.
    #[error("intent response carries a bad rejection: {0}")]
    Rejection(#[from] ValidationError),
}

impl IntentResponse {
    /// Encodes the response.
    pub fn to_bytes(&self) -> Vec<u8> {
        let body = match self {
            IntentResponse::Result(env) => proto::intent_response::Body::Result(env.to_bytes()),
            IntentResponse::Rejected(r) => {
                proto::intent_response::Body::Rejection(proto::Rejection {
                    code: rejection_code_to_proto(r.code) as i32,
                    message: r.message.clone(),
                })
            }
        };
        proto::IntentResponse { body: Some(body) }.encode_to_vec()
    }

    /// Decodes a response. A result envelope is verified and must be an `IntentResult`;
    /// its content is opened by the caller, who knows which intent it answers.
    pub fn from_bytes(bytes: &[u8]) -> std::result::Result<Self, IntentResponseError> {
        if bytes.len() > MAX_INTENT_RESPONSE_LEN {
            return Err(IntentResponseError::TooLarge { len: bytes.len() });
        }
        let p = proto::IntentResponse::decode(bytes)
            .map_err(|e| IntentResponseError::Malformed(e.to_string()))?;
        match p.body {
            Some(proto::intent_response::Body::Result(env)) => Ok(IntentResponse::Result(
                SignedEnvelope::from_bytes_of_kind(&env, Kind::IntentResult)?,
            )),
            Some(proto::intent_response::Body::Rejection(r)) => {
                let code = match known_enum::<proto::RejectionCode>("rejection.code", r.code)? {
                    proto::RejectionCode::Invalid => RejectionCode::Invalid,
                    proto::RejectionCode::Replay => RejectionCode::Replay,
                    proto::RejectionCode::Expired => RejectionCode::Expired,
                    proto::RejectionCode::Paused => RejectionCode::Paused,
                    proto::RejectionCode::RateLimited => RejectionCode::RateLimited,
                    proto::RejectionCode::UnknownAgent => RejectionCode::UnknownAgent,
                    proto::RejectionCode::Unavailable => RejectionCode::Unavailable,
                    proto::RejectionCode::Unspecified => {
                        return Err(ValidationError::Missing {
                            field: "rejection.code".into(),
                        }
                        .into());
                    }
                };
                v::text("rejection.message", &r.message, MAX_ERROR_LEN, false)?;
                Ok(IntentResponse::Rejected(Rejection {
                    code,
                    message: r.message,
                }))
            }
            None => Err(ValidationError::Missing {
                field: "body".into(),
            }
            .into()),
        }
    }
}

fn rejection_code_to_proto(code: RejectionCode) -> proto::RejectionCode {
    match code {
        RejectionCode::Invalid => proto::RejectionCode::Invalid,
        RejectionCode::Replay => proto::RejectionCode::Replay,
        RejectionCode::Expired => proto::RejectionCode::Expired,
        RejectionCode::Paused => proto::RejectionCode::Paused,
        RejectionCode::RateLimited => proto::RejectionCode::RateLimited,
        RejectionCode::UnknownAgent => proto::RejectionCode::UnknownAgent,
        RejectionCode::Unavailable => proto::RejectionCode::Unavailable,
    }
}
