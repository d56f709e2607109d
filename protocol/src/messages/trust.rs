//! Receipts and trust attestations: the evidence trust is computed from.

use serde::{Deserialize, Serialize};

use super::{Wire, known_enum, message};
use crate::did::Did;
use crate::envelope::{ContentId, Kind};
use crate::limits::*;
use crate::messages::{IntentId, Price};
use crate::proto;
use crate::time::Timestamp;
use crate::validate::{self as v, Result, ValidationContext, ValidationError};

/// How an intent ended, as a receipt or attestation records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Outcome {
    /// Completed as asked.
    Success,
    /// Attempted and failed.
    Failure,
    /// No answer before the deadline.
    Timeout,
    /// Refused by the callee or its host.
    Declined,
}

impl Outcome {
    fn from_proto(field: &str, value: i32) -> Result<Self> {
        Ok(match known_enum::<proto::Outcome>(field, value)? {
            proto::Outcome::Success => Outcome::Success,
            proto::Outcome::Failure => Outcome::Failure,
            proto::Outcome::Timeout => Outcome::Timeout,
            proto::Outcome::Declined => Outcome::Declined,
            proto::Outcome::Unspecified => {
                return Err(ValidationError::Missing {
                    field: field.into(),
                });
            }
        })
    }

    fn to_proto(self) -> proto::Outcome {
        match self {
            Outcome::Success => proto::Outcome::Success,
            Outcome::Failure => proto::Outcome::Failure,
            Outcome::Timeout => proto::Outcome::Timeout,
            Outcome::Declined => proto::Outcome::Declined,
        }
    }
}

/// One party's signed record of how an intent went.
///
/// Caller and callee each sign one; the `issuer` says which side this is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The intent.
    pub intent_id: IntentId,
    /// The agent that sent the intent.
    pub caller: Did,
    /// The agent that was asked to act; not the caller.
    pub callee: Did,
    /// The capability invoked.
    pub capability: String,
    /// The side that signs this receipt: `caller` or `callee`.
    pub issuer: Did,
    /// How it ended.
    pub outcome: Outcome,
    /// Milliseconds from sending the intent to receiving the result; at most [`MAX_RECEIPT_LATENCY`].
    pub latency_ms: u64,
    /// The time the caller allowed (deadline minus issued_at).
    pub time_allowed_ms: u64,
    /// The cost cap the caller set, if any.
    pub max_cost: Option<Price>,
    /// The cost the callee reported, if any.
    pub cost: Option<Price>,
    /// When the issuer signed it.
    pub issued_at: Timestamp,
}

impl Receipt {
    fn check_static(&self) -> Result {
        if self.caller == self.callee {
            return Err(ValidationError::invalid(
                "callee",
                "must differ from the caller",
            ));
        }
        if self.issuer != self.caller && self.issuer != self.callee {
            return Err(ValidationError::invalid(
                "issuer",
                "must be the caller or the callee",
            ));
        }
        v::token("capability", &self.capability, MAX_CAPABILITY_NAME_LEN)?;
        let max_latency = u64::try_from(MAX_RECEIPT_LATENCY.as_millis()).unwrap_or(u64::MAX);
        if self.latency_ms > max_latency {
            return Err(ValidationError::invalid(
                "latency_ms",
                format!("{} exceeds the limit of {max_latency}", self.latency_ms),
            ));
        }
        let max_allowed = u64::try_from(MAX_INTENT_TTL.as_millis()).unwrap_or(u64::MAX);
        if self.time_allowed_ms == 0 || self.time_allowed_ms > max_allowed {
            return Err(ValidationError::invalid(
                "time_allowed_ms",
                format!("{} is not in 1..={max_allowed}", self.time_allowed_ms),
            ));
        }
        if let Some(price) = &self.max_cost {
            price.check("max_cost")?;
        }
        if let Some(price) = &self.cost {
            price.check("cost")?;
        }
        v::set("issued_at", self.issued_at)
    }

    fn check_times(&self, ctx: &ValidationContext) -> Result {
        v::not_future(ctx, "issued_at", self.issued_at)
    }

    fn check_signed_by(&self, signer: &Did) -> Result {
        v::signer_is(Kind::Receipt, "issuer", &self.issuer, signer)
    }

    /// The other party: the callee if the caller issued this receipt, and vice versa.
    pub fn counterparty(&self) -> &Did {
        if self.issuer == self.caller {
            &self.callee
        } else {
            &self.caller
        }
    }
}

message!(Receipt, Kind::Receipt);

impl Wire for Receipt {
    type Proto = proto::Receipt;

    fn from_proto(p: proto::Receipt) -> Result<Self> {
        Ok(Receipt {
            intent_id: super::intent::intent_id_field("intent_id", &p.intent_id)?,
            caller: v::did("caller", &p.caller)?,
            callee: v::did("callee", &p.callee)?,
            capability: p.capability,
            issuer: v::did("issuer", &p.issuer)?,
            outcome: Outcome::from_proto("outcome", p.outcome)?,
            latency_ms: p.latency_ms,
            time_allowed_ms: p.time_allowed_ms,
            max_cost: p.max_cost.map(Price::from_proto),
            cost: p.cost.map(Price::from_proto),
            issued_at: Timestamp::from_millis(p.issued_at_ms),
        })
    }

    fn to_proto(&self) -> proto::Receipt {
        proto::Receipt {
            intent_id: self.intent_id.0.to_vec(),
            caller: self.caller.to_string(),
            callee: self.callee.to_string(),
            capability: self.capability.clone(),
            issuer: self.issuer.to_string(),
            outcome: self.outcome.to_proto() as i32,
            latency_ms: self.latency_ms,
            time_allowed_ms: self.time_allowed_ms,
            max_cost: self.max_cost.as_ref().map(Price::to_proto),
            cost: self.cost.as_ref().map(Price::to_proto),
            issued_at_ms: self.issued_at.as_millis(),
        }
    }
}

/// Scores on the four trust dimensions, each in [0, 1].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrustScores {
    /// Does it complete what it accepts?
    pub reliability: f32,
    /// Are its reported cost and usage within what was agreed?
    pub honesty: f32,
    /// Is its output good?
    pub competence: f32,
    /// Does it answer before the deadline?
    pub timeliness: f32,
}

/// What an attestation claims about its subject.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Claim {
    /// The issuer's scores for the subject.
    Scores(TrustScores),
    /// The outcome of the interactions the receipts record.
    Outcome(Outcome),
}

/// A signed statement by one agent about another, backed by receipts of intents the
/// issuer took part in. An attestation without receipts is invalid.
#[derive(Clone, Debug, PartialEq)]
pub struct TrustAttestation {
    /// Who makes the claim. Only this DID may sign it.
    pub issuer: Did,
    /// Whom it is about; not the issuer.
    pub subject: Did,
    /// The capability it is about; `None` for the agent as a whole.
    pub capability: Option<String>,
    /// The claim.
    pub claim: Claim,
    /// Content ids of the receipts behind the claim: 1 to [`MAX_ATTESTATION_RECEIPTS`], distinct.
    pub receipts: Vec<ContentId>,
    /// Version; a later attestation by the same issuer about the same subject and
    /// capability replaces an earlier one only with a higher `seq`.
    pub seq: u64,
    /// When it was signed.
    pub issued_at: Timestamp,
    /// When it lapses; at most [`MAX_ATTESTATION_LIFETIME`] after `issued_at`.
    pub expires_at: Timestamp,
}

impl TrustAttestation {
    fn check_static(&self) -> Result {
        if self.issuer == self.subject {
            return Err(ValidationError::invalid(
                "subject",
                "an agent cannot attest to itself",
            ));
        }
        if let Some(cap) = &self.capability {
            v::token("capability", cap, MAX_CAPABILITY_NAME_LEN)?;
        }
        if let Claim::Scores(s) = &self.claim {
            for (field, value) in [
                ("scores.reliability", s.reliability),
                ("scores.honesty", s.honesty),
                ("scores.competence", s.competence),
                ("scores.timeliness", s.timeliness),
            ] {
                if !(0.0..=1.0).contains(&value) {
                    return Err(ValidationError::invalid(
                        field,
                        format!("{value} is not in [0, 1]"),
                    ));
                }
            }
        }
        if self.receipts.is_empty() {
            return Err(ValidationError::Missing {
                field: "receipts".into(),
            });
        }
        v::count("receipts", self.receipts.len(), MAX_ATTESTATION_RECEIPTS)?;
        v::unique("receipts", &self.receipts)?;
        if self.seq == 0 {
            return Err(ValidationError::invalid("seq", "must be at least 1"));
        }
        v::set("issued_at", self.issued_at)?;
        v::lifetime(
            Kind::TrustAttestation,
            "expires_at",
            self.issued_at,
            self.expires_at,
            MAX_ATTESTATION_LIFETIME,
        )
    }

    fn check_times(&self, ctx: &ValidationContext) -> Result {
        v::not_future(ctx, "issued_at", self.issued_at)?;
        v::not_expired(ctx, "expires_at", self.expires_at)
    }

    fn check_signed_by(&self, signer: &Did) -> Result {
        v::signer_is(Kind::TrustAttestation, "issuer", &self.issuer, signer)
    }
}

message!(TrustAttestation, Kind::TrustAttestation);

impl Wire for TrustAttestation {
    type Proto = proto::TrustAttestation;

    fn from_proto(p: proto::TrustAttestation) -> Result<Self> {
        let claim = match p.claim {
            Some(proto::trust_attestation::Claim::Scores(s)) => Claim::Scores(TrustScores {
                reliability: s.reliability,
                honesty: s.honesty,
                competence: s.competence,
                timeliness: s.timeliness,
            }),
            Some(proto::trust_attestation::Claim::Outcome(o)) => {
                Claim::Outcome(Outcome::from_proto("outcome", o)?)
            }
            None => {
                return Err(ValidationError::Missing {
                    field: "claim".into(),
                });
            }
        };
        let receipts = p
            .receipts
            .iter()
            .enumerate()
            .map(|(i, r)| {
                <[u8; 32]>::try_from(r.as_slice())
                    .map(ContentId)
                    .map_err(|_| {
                        ValidationError::invalid(
                            format!("receipts[{i}]"),
                            format!("is {} bytes; a content id is 32", r.len()),
                        )
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(TrustAttestation {
            issuer: v::did("issuer", &p.issuer)?,
            subject: v::did("subject", &p.subject)?,
            capability: (!p.capability.is_empty()).then_some(p.capability),
            claim,
            receipts,
            seq: p.seq,
            issued_at: Timestamp::from_millis(p.issued_at_ms),
            expires_at: Timestamp::from_millis(p.expires_at_ms),
        })
    }

    fn to_proto(&self) -> proto::TrustAttestation {
        let claim = match self.claim {
            Claim::Scores(s) => proto::trust_attestation::Claim::Scores(proto::TrustScores {
                reliability: s.reliability,
                honesty: s.honesty,
                competence: s.competence,
                timeliness: s.timeliness,
            }),
            Claim::Outcome(o) => proto::trust_attestation::Claim::Outcome(o.to_proto() as i32),
        };
        proto::TrustAttestation {
            issuer: self.issuer.to_string(),
            subject: self.subject.to_string(),
            capability: self.capability.clone().unwrap_or_default(),
            claim: Some(claim),
            receipts: self.receipts.iter().map(|r| r.0.to_vec()).collect(),
            seq: self.seq,
            issued_at_ms: self.issued_at.as_millis(),
            expires_at_ms: self.expires_at.as_millis(),
        }
    }
}
