//! The signed message types and their wire conversions.

mod card;
mod intent;
mod pause;
mod trust;

pub use card::{AgentCard, Capability, Credential, Price, Tombstone};
pub use intent::{
    Intent, IntentId, IntentResponse, IntentResponseError, IntentResult, IntentStatus, Rejection,
    RejectionCode, Usage,
};
pub use pause::{PauseAction, PauseNotice};
pub use trust::{Claim, Outcome, Receipt, TrustAttestation, TrustScores};

use crate::envelope::Message;
use crate::validate::{Result, ValidationError};

/// Conversion between a domain type and its prost type.
pub(crate) trait Wire: Sized {
    type Proto: prost::Message + Default;

    /// Converts from the wire type, parsing DIDs, enums and ids.
    fn from_proto(proto: Self::Proto) -> Result<Self>;

    /// Converts to the wire type.
    fn to_proto(&self) -> Self::Proto;
}

/// Decodes a payload of message `M`: length cap, protobuf, conversion, static checks.
pub(crate) fn decode_payload<M: Message + Wire>(payload: &[u8]) -> Result<M> {
    let max = M::KIND.max_payload_len();
    if payload.len() > max {
        return Err(ValidationError::TooLong {
            field: "payload".into(),
            len: payload.len(),
            max,
        });
    }
    let proto =
        <M::Proto as prost::Message>::decode(payload).map_err(|e| ValidationError::Malformed {
            kind: M::KIND,
            reason: e.to_string(),
        })?;
    let message = M::from_proto(proto)?;
    message.check()?;
    Ok(message)
}

/// Encodes `M` as a payload.
pub(crate) fn encode_payload<M: Wire>(message: &M) -> Vec<u8> {
    prost::Message::encode_to_vec(&message.to_proto())
}

/// Converts a prost enum value, naming the field if the value is unknown or unspecified.
pub(crate) fn known_enum<E: TryFrom<i32>>(field: &str, value: i32) -> Result<E> {
    if value == 0 {
        return Err(ValidationError::Missing {
            field: field.into(),
        });
    }
    E::try_from(value)
        .map_err(|_| ValidationError::invalid(field, format!("unknown value {value}")))
}

/// Implements the wiring of [`Message`] for a type that has inherent `check_static`,
/// `check_times` and `check_signed_by` methods.
macro_rules! message {
    ($ty:ty, $kind:expr) => {
        impl $crate::envelope::Sealed for $ty {}

        impl $crate::envelope::Message for $ty {
            const KIND: $crate::envelope::Kind = $kind;

            fn decode(payload: &[u8]) -> ::std::result::Result<Self, $crate::ValidationError> {
                $crate::messages::decode_payload(payload)
            }

            fn encode(&self) -> Vec<u8> {
                $crate::messages::encode_payload(self)
            }

            fn check(&self) -> ::std::result::Result<(), $crate::ValidationError> {
                self.check_static()
            }

            fn check_time(
                &self,
                ctx: &$crate::ValidationContext,
            ) -> ::std::result::Result<(), $crate::ValidationError> {
                self.check_times(ctx)
            }

            fn check_signer(
                &self,
                signer: &$crate::Did,
            ) -> ::std::result::Result<(), $crate::ValidationError> {
                self.check_signed_by(signer)
            }
        }
    };
}
pub(crate) use message;
