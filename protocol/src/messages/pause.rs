//! Pause notices: a gateway's kill switch, spread over the network.

use serde::{Deserialize, Serialize};

use super::{Wire, known_enum, message};
use crate::did::Did;
use crate::envelope::Kind;
use crate::limits::*;
use crate::proto;
use crate::time::Timestamp;
use crate::validate::{self as v, Result, ValidationContext, ValidationError};

/// What a pause notice does to its subjects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PauseAction {
    /// Refuse intents to and from the subjects, and hide them from search, until resumed.
    Pause,
    /// Lift an earlier pause.
    Resume,
    /// Like pause, but permanent: a later resume from the same issuer is ignored.
    Revoke,
}

/// A signed instruction from a gateway to pause, resume or revoke agents.
///
/// Which issuers a node obeys for which agents is the node's policy
/// (`specs/protocol.md#pause-notices`); the message itself only proves who issued it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PauseNotice {
    /// The gateway that issues it. Only this DID may sign it.
    pub issuer: Did,
    /// The agents it applies to: 1 to [`MAX_PAUSE_SUBJECTS`], distinct.
    pub subjects: Vec<Did>,
    /// What it does.
    pub action: PauseAction,
    /// Why, for people; at most [`MAX_REASON_LEN`] bytes.
    pub reason: String,
    /// Version; for each subject the notice with the highest `seq` from an issuer wins.
    pub seq: u64,
    /// When it was signed.
    pub issued_at: Timestamp,
    /// When it lapses; at most [`MAX_PAUSE_LIFETIME`] after `issued_at`.
    pub expires_at: Timestamp,
}

impl PauseNotice {
    fn check_static(&self) -> Result {
        if self.subjects.is_empty() {
            return Err(ValidationError::Missing {
                field: "subjects".into(),
            });
        }
        v::count("subjects", self.subjects.len(), MAX_PAUSE_SUBJECTS)?;
        v::unique("subjects", &self.subjects)?;
        v::text("reason", &self.reason, MAX_REASON_LEN, true)?;
        if self.seq == 0 {
            return Err(ValidationError::invalid("seq", "must be at least 1"));
        }
        v::set("issued_at", self.issued_at)?;
        v::lifetime(
            Kind::PauseNotice,
            "expires_at",
            self.issued_at,
            self.expires_at,
            MAX_PAUSE_LIFETIME,
        )
    }

    fn check_times(&self, ctx: &ValidationContext) -> Result {
        v::not_future(ctx, "issued_at", self.issued_at)?;
        v::not_expired(ctx, "expires_at", self.expires_at)
    }

    fn check_signed_by(&self, signer: &Did) -> Result {
        v::signer_is(Kind::PauseNotice, "issuer", &self.issuer, signer)
    }
}

message!(PauseNotice, Kind::PauseNotice);

impl Wire for PauseNotice {
    type Proto = proto::PauseNotice;

    fn from_proto(p: proto::PauseNotice) -> Result<Self> {
        let action = match known_enum::<proto::PauseAction>("action", p.action)? {
            proto::PauseAction::Pause => PauseAction::Pause,
            proto::PauseAction::Resume => PauseAction::Resume,
            proto::PauseAction::Revoke => PauseAction::Revoke,
            proto::PauseAction::Unspecified => {
                return Err(ValidationError::Missing {
                    field: "action".into(),
                });
            }
        };
        // Count before parsing, so a flood of subjects costs no DID decoding.
        v::count("subjects", p.subjects.len(), MAX_PAUSE_SUBJECTS)?;
        let subjects = p
            .subjects
            .iter()
            .enumerate()
            .map(|(i, s)| v::did(&format!("subjects[{i}]"), s))
            .collect::<Result<Vec<_>>>()?;
        Ok(PauseNotice {
            issuer: v::did("issuer", &p.issuer)?,
            subjects,
            action,
            reason: p.reason,
            seq: p.seq,
            issued_at: Timestamp::from_millis(p.issued_at_ms),
            expires_at: Timestamp::from_millis(p.expires_at_ms),
        })
    }

    fn to_proto(&self) -> proto::PauseNotice {
        let action = match self.action {
            PauseAction::Pause => proto::PauseAction::Pause,
            PauseAction::Resume => proto::PauseAction::Resume,
            PauseAction::Revoke => proto::PauseAction::Revoke,
        };
        proto::PauseNotice {
            issuer: self.issuer.to_string(),
            subjects: self.subjects.iter().map(Did::to_string).collect(),
            action: action as i32,
            reason: self.reason.clone(),
            seq: self.seq,
            issued_at_ms: self.issued_at.as_millis(),
            expires_at_ms: self.expires_at.as_millis(),
        }
    }
}
