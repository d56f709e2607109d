//! Validation of message contents: limits, character sets, time and signer rules.

use std::time::Duration;

use crate::did::{Did, DidError};
use crate::envelope::Kind;
use crate::limits::{MAX_AMOUNT_MICROS, MAX_CLOCK_SKEW, MAX_CURRENCY_LEN};
use crate::time::Timestamp;

/// What validation needs to know about the world: the time, and how much clock skew to allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ValidationContext {
    /// The verifier's current time.
    pub now: Timestamp,
    /// How far in the future a timestamp may lie.
    pub max_clock_skew: Duration,
}

impl ValidationContext {
    /// A context at time `now` with the default [`MAX_CLOCK_SKEW`].
    pub fn at(now: Timestamp) -> Self {
        ValidationContext {
            now,
            max_clock_skew: MAX_CLOCK_SKEW,
        }
    }

    /// A context at the system clock's current time.
    pub fn now() -> Self {
        Self::at(Timestamp::now())
    }

    /// Sets the allowed clock skew.
    pub fn with_max_clock_skew(mut self, skew: Duration) -> Self {
        self.max_clock_skew = skew;
        self
    }
}

/// Why a message's content is invalid. Each variant names the offending field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// The payload is not valid protobuf for its kind.
    #[error("{kind} payload is not a valid protobuf message: {reason}")]
    Malformed {
        /// The message kind.
        kind: Kind,
        /// The decoder's explanation.
        reason: String,
    },
    /// A field is longer than its limit.
    #[error("{field} is {len} bytes long; the limit is {max}")]
    TooLong {
        /// The field, e.g. `capabilities[2].description`.
        field: String,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A repeated field has too many entries.
    #[error("{field} has {count} entries; the limit is {max}")]
    TooMany {
        /// The field.
        field: String,
        /// How many entries it has.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A required field is empty or missing.
    #[error("{field} is missing or empty")]
    Missing {
        /// The field.
        field: String,
    },
    /// A field holds a value it may not hold.
    #[error("{field} is invalid: {reason}")]
    Invalid {
        /// The field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A field that must be a DID is not one.
    #[error("{field} is not a valid DID: {source}")]
    BadDid {
        /// The field.
        field: String,
        /// Why the DID was rejected.
        #[source]
        source: DidError,
    },
    /// A repeated field holds the same value twice.
    #[error("{field} contains {value:?} more than once")]
    Duplicate {
        /// The field.
        field: String,
        /// The repeated value (shortened).
        value: String,
    },
    /// A timestamp lies further in the future than the allowed clock skew.
    #[error(
        "{field} is {at}, {ahead_ms} ms after now ({now}); at most {max_skew_ms} ms of clock skew is allowed"
    )]
    FromFuture {
        /// The field.
        field: &'static str,
        /// Its value.
        at: Timestamp,
        /// The verifier's time.
        now: Timestamp,
        /// How far ahead it is.
        ahead_ms: u64,
        /// The allowed skew.
        max_skew_ms: u64,
    },
    /// The message's validity ended at or before now.
    #[error("{field} is {at}, which is not after now ({now}): the message has expired")]
    Expired {
        /// The field that holds the end of validity (`expires_at` or `deadline`).
        field: &'static str,
        /// Its value.
        at: Timestamp,
        /// The verifier's time.
        now: Timestamp,
    },
    /// The message claims to stay valid for longer than its kind allows.
    #[error("{field} is {lifetime_ms} ms after issued_at; {kind} allows at most {max_ms} ms")]
    LifetimeTooLong {
        /// The message kind.
        kind: Kind,
        /// The field.
        field: &'static str,
        /// The claimed lifetime.
        lifetime_ms: u64,
        /// The limit.
        max_ms: u64,
    },
    /// The envelope's signer may not sign this message.
    #[error("{kind} is signed by {signer}, but only {field} ({expected}) may sign it")]
    SignerMismatch {
        /// The message kind.
        kind: Kind,
        /// The field naming who must sign.
        field: &'static str,
        /// Who must sign.
        expected: Box<Did>,
        /// Who signed.
        signer: Box<Did>,
    },
}

impl ValidationError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ValidationError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

pub(crate) type Result<T = ()> = std::result::Result<T, ValidationError>;

/// Parses a DID field.
pub(crate) fn did(field: &str, value: &str) -> Result<Did> {
    value.parse().map_err(|source| ValidationError::BadDid {
        field: field.to_owned(),
        source,
    })
}

/// Free text: at most `max` bytes, no control characters except (if `multiline`) `\n` and `\t`.
pub(crate) fn text(field: &str, value: &str, max: usize, multiline: bool) -> Result {
    if value.len() > max {
        return Err(ValidationError::TooLong {
            field: field.to_owned(),
            len: value.len(),
            max,
        });
    }
    if let Some(c) = value
        .chars()
        .find(|&c| c.is_control() && !(multiline && (c == '\n' || c == '\t')))
    {
        return Err(ValidationError::invalid(
            field,
            format!("contains the control character U+{:04X}", u32::from(c)),
        ));
    }
    Ok(())
}

/// Non-empty free text on one line, without leading or trailing whitespace.
pub(crate) fn name(field: &str, value: &str, max: usize) -> Result {
    if value.is_empty() {
        return Err(ValidationError::Missing {
            field: field.to_owned(),
        });
    }
    text(field, value, max, false)?;
    if value.trim() != value {
        return Err(ValidationError::invalid(
            field,
            "has leading or trailing whitespace",
        ));
    }
    Ok(())
}

/// A token such as a capability name or tag: 1..=max bytes of `A-Z a-z 0-9 . _ : / + -`.
pub(crate) fn token(field: &str, value: &str, max: usize) -> Result {
    if value.is_empty() {
        return Err(ValidationError::Missing {
            field: field.to_owned(),
        });
    }
    if value.len() > max {
        return Err(ValidationError::TooLong {
            field: field.to_owned(),
            len: value.len(),
            max,
        });
    }
    if let Some(c) = value.chars().find(|c| !is_token_char(*c)) {
        return Err(ValidationError::invalid(
            field,
            format!("contains {c:?}; only letters, digits and . _ : / + - are allowed"),
        ));
    }
    Ok(())
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '/' | '+' | '-')
}

/// A repeated field's entry count.
pub(crate) fn count(field: &str, count: usize, max: usize) -> Result {
    if count > max {
        return Err(ValidationError::TooMany {
            field: field.to_owned(),
            count,
            max,
        });
    }
    Ok(())
}

/// A binary field's length.
pub(crate) fn bytes_len(field: &str, len: usize, max: usize) -> Result {
    if len > max {
        return Err(ValidationError::TooLong {
            field: field.to_owned(),
            len,
            max,
        });
    }
    Ok(())
}

/// Fails on the first value that appears twice.
pub(crate) fn unique<'a, T: Ord + std::fmt::Debug + 'a>(
    field: &str,
    values: impl IntoIterator<Item = &'a T>,
) -> Result {
    let mut seen = std::collections::BTreeSet::new();
    for value in values {
        if !seen.insert(value) {
            let shown: String = format!("{value:?}").chars().take(80).collect();
            return Err(ValidationError::Duplicate {
                field: field.to_owned(),
                value: shown,
            });
        }
    }
    Ok(())
}

/// A JSON document of at most `max` bytes.
pub(crate) fn json(field: &str, value: &[u8], max: usize) -> Result {
    bytes_len(field, value.len(), max)?;
    serde_json::from_slice::<serde::de::IgnoredAny>(value)
        .map(|_| ())
        .map_err(|e| ValidationError::invalid(field, format!("is not a JSON document: {e}")))
}

/// An amount of money in micros, and its currency code (1..=8 ASCII letters or digits).
pub(crate) fn price(field: &str, amount_micros: u64, currency: &str) -> Result {
    if amount_micros > MAX_AMOUNT_MICROS {
        return Err(ValidationError::invalid(
            format!("{field}.amount_micros"),
            format!("{amount_micros} exceeds the limit of {MAX_AMOUNT_MICROS}"),
        ));
    }
    let cfield = format!("{field}.currency");
    if currency.is_empty() {
        return Err(ValidationError::Missing { field: cfield });
    }
    if currency.len() > MAX_CURRENCY_LEN || !currency.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ValidationError::invalid(
            cfield,
            format!("{currency:?} is not 1 to {MAX_CURRENCY_LEN} ASCII letters or digits"),
        ));
    }
    Ok(())
}

/// A non-zero timestamp.
pub(crate) fn set(field: &'static str, at: Timestamp) -> Result {
    if at == Timestamp::EPOCH {
        return Err(ValidationError::Missing {
            field: field.to_owned(),
        });
    }
    Ok(())
}

/// A timestamp no further in the future than the allowed skew.
pub(crate) fn not_future(ctx: &ValidationContext, field: &'static str, at: Timestamp) -> Result {
    let limit = ctx.now.saturating_add(ctx.max_clock_skew);
    if at > limit {
        return Err(ValidationError::FromFuture {
            field,
            at,
            now: ctx.now,
            ahead_ms: at.as_millis() - ctx.now.as_millis(),
            max_skew_ms: u64::try_from(ctx.max_clock_skew.as_millis()).unwrap_or(u64::MAX),
        });
    }
    Ok(())
}

/// `end` lies after `issued_at`, by at most `max`.
pub(crate) fn lifetime(
    kind: Kind,
    field: &'static str,
    issued_at: Timestamp,
    end: Timestamp,
    max: Duration,
) -> Result {
    if end <= issued_at {
        return Err(ValidationError::invalid(
            field,
            format!("{end} is not after issued_at ({issued_at})"),
        ));
    }
    let lifetime_ms = end.as_millis() - issued_at.as_millis();
    let max_ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    if lifetime_ms > max_ms {
        return Err(ValidationError::LifetimeTooLong {
            kind,
            field,
            lifetime_ms,
            max_ms,
        });
    }
    Ok(())
}

/// `end` lies after now.
pub(crate) fn not_expired(ctx: &ValidationContext, field: &'static str, end: Timestamp) -> Result {
    if end <= ctx.now {
        return Err(ValidationError::Expired {
            field,
            at: end,
            now: ctx.now,
        });
    }
    Ok(())
}

/// `signer` is `expected`.
pub(crate) fn signer_is(kind: Kind, field: &'static str, expected: &Did, signer: &Did) -> Result {
    if expected != signer {
        return Err(ValidationError::SignerMismatch {
            kind,
            field,
            expected: Box::new(expected.clone()),
            signer: Box::new(signer.clone()),
        });
    }
    Ok(())
}
