//! Penalties for peer misbehaviour (`specs/trust.md#peer-penalties`).
//!
//! A peer that sends an invalid signature, a replay, an oversized or expired message, or
//! spam loses score. Errors say how serious they are through [`PeerFault`]; [`PeerScores`]
//! accumulates the penalties per peer and lets them decay, and the node feeds the result
//! into gossipsub's application-specific peer score.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use agentnet_protocol::{
    EnvelopeError, IntentResponseError, OpenError, SyncError, Timestamp, ValidationError,
};

/// A named, documented penalty.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Penalty {
    /// A stable name for logs and metrics.
    pub name: &'static str,
    /// Score change, negative. At or below [`FATAL_SCORE`] the peer is disconnected at once.
    pub score: f64,
}

/// A penalty this large (or a total this low) means the peer is disconnected and banned
/// until its score decays back above it.
pub const FATAL_SCORE: f64 = -100.0;

/// A signature that does not verify, or a message signed by someone it may not be signed
/// by. Never an accident: forged or corrupted on purpose.
pub const INVALID_SIGNATURE: Penalty = Penalty {
    name: "invalid_signature",
    score: -100.0,
};
/// Bytes that do not decode, or a message that breaks a static rule.
pub const MALFORMED: Penalty = Penalty {
    name: "malformed",
    score: -20.0,
};
/// A message over its size limit.
pub const OVERSIZED: Penalty = Penalty {
    name: "oversized",
    score: -50.0,
};
/// A message whose validity has ended. Small: a slow path or a stale forward can cause it.
pub const EXPIRED: Penalty = Penalty {
    name: "expired",
    score: -2.0,
};
/// A timestamp beyond the allowed clock skew. Small: the peer's clock may be wrong.
pub const FROM_FUTURE: Penalty = Penalty {
    name: "from_future",
    score: -5.0,
};
/// An intent seen before (same id and nonce).
pub const REPLAY: Penalty = Penalty {
    name: "replay",
    score: -20.0,
};
/// More requests or messages than the rate limit allows.
pub const SPAM: Penalty = Penalty {
    name: "spam",
    score: -10.0,
};
/// A message of a kind its topic or protocol does not admit.
pub const WRONG_KIND: Penalty = Penalty {
    name: "wrong_kind",
    score: -20.0,
};

/// How serious an error caused by a peer is.
pub trait PeerFault {
    /// The penalty the sending peer earns.
    fn penalty(&self) -> Penalty;

    /// Whether the peer should be disconnected at once.
    fn is_fatal(&self) -> bool {
        self.penalty().score <= FATAL_SCORE
    }
}

impl PeerFault for EnvelopeError {
    fn penalty(&self) -> Penalty {
        match self {
            EnvelopeError::TooLarge { .. } | EnvelopeError::PayloadTooLarge { .. } => OVERSIZED,
            EnvelopeError::BadSignature { .. } => INVALID_SIGNATURE,
            EnvelopeError::WrongKind { .. } => WRONG_KIND,
            _ => MALFORMED,
        }
    }
}

impl PeerFault for ValidationError {
    fn penalty(&self) -> Penalty {
        match self {
            ValidationError::SignerMismatch { .. } => INVALID_SIGNATURE,
            ValidationError::Expired { .. } => EXPIRED,
            ValidationError::FromFuture { .. } => FROM_FUTURE,
            ValidationError::TooLong { field, .. } if field == "payload" => OVERSIZED,
            _ => MALFORMED,
        }
    }
}

impl PeerFault for OpenError {
    fn penalty(&self) -> Penalty {
        match self {
            OpenError::Envelope(e) => e.penalty(),
            OpenError::Invalid(e) => e.penalty(),
            _ => MALFORMED,
        }
    }
}

impl PeerFault for SyncError {
    fn penalty(&self) -> Penalty {
        match self {
            SyncError::TooLarge { .. } => OVERSIZED,
            SyncError::Invalid(e) => e.penalty(),
            _ => MALFORMED,
        }
    }
}

impl PeerFault for IntentResponseError {
    fn penalty(&self) -> Penalty {
        match self {
            IntentResponseError::TooLarge { .. } => OVERSIZED,
            IntentResponseError::Envelope(e) => e.penalty(),
            IntentResponseError::Rejection(e) => e.penalty(),
            _ => MALFORMED,
        }
    }
}

/// Accumulated penalties per peer, decaying exponentially towards zero.
///
/// Bounded: beyond `capacity` peers, the peer whose score is closest to zero is forgotten.
#[derive(Debug, Clone)]
pub struct PeerScores<K> {
    half_life: Duration,
    capacity: usize,
    scores: HashMap<K, (f64, Timestamp)>,
}

impl<K: Hash + Eq + Clone> PeerScores<K> {
    /// Scores that halve every `half_life`, for at most `capacity` peers.
    pub fn new(half_life: Duration, capacity: usize) -> Self {
        PeerScores {
            half_life,
            capacity: capacity.max(1),
            scores: HashMap::new(),
        }
    }

    fn decayed(&self, score: f64, since: Timestamp, now: Timestamp) -> f64 {
        let half_life_ms = self.half_life.as_millis().max(1) as f64;
        let elapsed = now.as_millis().saturating_sub(since.as_millis()) as f64;
        score * 0.5f64.powf(elapsed / half_life_ms)
    }

    /// Applies `penalty` to `peer` and returns its new score.
    pub fn penalise(&mut self, peer: &K, penalty: Penalty, now: Timestamp) -> f64 {
        if !self.scores.contains_key(peer) && self.scores.len() >= self.capacity {
            let mildest = self
                .scores
                .iter()
                .map(|(k, (s, t))| (k.clone(), self.decayed(*s, *t, now)))
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(k, _)| k);
            if let Some(k) = mildest {
                self.scores.remove(&k);
            }
        }
        let current = self.score(peer, now);
        let score = current + penalty.score;
        self.scores.insert(peer.clone(), (score, now));
        score
    }

    /// The peer's score as of `now` (0 if it has none).
    pub fn score(&self, peer: &K, now: Timestamp) -> f64 {
        self.scores
            .get(peer)
            .map(|(s, t)| self.decayed(*s, *t, now))
            .unwrap_or(0.0)
    }

    /// Whether the peer's score is at or below [`FATAL_SCORE`].
    pub fn is_banned(&self, peer: &K, now: Timestamp) -> bool {
        self.score(peer, now) <= FATAL_SCORE
    }

    /// Number of peers with a score.
    pub fn len(&self) -> usize {
        self.scores.len()
    }

    /// Whether no peer has a score.
    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn penalties_accumulate_and_decay() {
        let mut scores = PeerScores::new(Duration::from_secs(3600), 10);
        let t0 = Timestamp::from_millis(1_000_000);
        assert_eq!(scores.penalise(&"a", MALFORMED, t0), -20.0);
        assert_eq!(scores.penalise(&"a", MALFORMED, t0), -40.0);
        let later = t0.saturating_add(Duration::from_secs(3600));
        assert!(
            (scores.score(&"a", later) + 20.0).abs() < 1e-9,
            "halved after one half-life"
        );
        assert!(!scores.is_banned(&"a", t0));
        scores.penalise(&"b", INVALID_SIGNATURE, t0);
        assert!(scores.is_banned(&"b", t0));
    }

    #[test]
    fn capacity_is_bounded() {
        let mut scores = PeerScores::new(Duration::from_secs(60), 3);
        let t = Timestamp::from_millis(1);
        for (peer, p) in [
            (1, SPAM),
            (2, INVALID_SIGNATURE),
            (3, OVERSIZED),
            (4, MALFORMED),
        ] {
            scores.penalise(&peer, p, t);
        }
        assert_eq!(scores.len(), 3);
        assert_eq!(scores.score(&1, t), 0.0, "the mildest peer was forgotten");
        assert!(scores.is_banned(&2, t));
    }

    #[test]
    fn protocol_errors_map_to_named_penalties() {
        let forged = EnvelopeError::BadSignature {
            kind: agentnet_protocol::Kind::AgentCard,
            signer: Box::new(agentnet_protocol::Keypair::from_seed(&[1; 32]).did()),
        };
        assert_eq!(forged.penalty(), INVALID_SIGNATURE);
        assert!(forged.is_fatal());
        assert_eq!(
            EnvelopeError::TooLarge { len: 10, max: 1 }.penalty(),
            OVERSIZED
        );
        let expired = ValidationError::Expired {
            field: "expires_at",
            at: Timestamp::from_millis(1),
            now: Timestamp::from_millis(2),
        };
        assert_eq!(OpenError::Invalid(expired).penalty(), EXPIRED);
        assert!(!EXPIRED.score.is_nan() && EXPIRED.score > FATAL_SCORE);
    }
}
