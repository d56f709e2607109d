//! From receipts to signals: how one intent's outcome updates each dimension
//! (`specs/trust.md#from-receipts-to-signals`).

use agentnet_protocol::{Did, Outcome, Price, Receipt};

use crate::config::TrustConfig;
use crate::vector::Signals;

/// Why evidence was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// A receipt pair has neither receipt.
    #[error("a receipt pair needs the caller's or the callee's receipt")]
    EmptyPair,
    /// The caller's receipt is not issued by its caller (or the callee's by its callee).
    #[error("the {side} receipt is issued by {issuer}, not by the {side}")]
    WrongIssuer {
        /// "caller" or "callee".
        side: &'static str,
        /// Who issued it.
        issuer: Did,
    },
    /// The two receipts of a pair describe different intents or parties.
    #[error("the caller's and callee's receipts disagree on {field}")]
    Mismatch {
        /// The field that differs.
        field: &'static str,
    },
    /// An attestation cites no receipt that this node knows and that links its issuer to
    /// its subject, so it carries no weight.
    #[error("attestation by {issuer} about {subject} is backed by none of the receipts it cites")]
    Unbacked {
        /// Its issuer.
        issuer: Did,
        /// Its subject.
        subject: Did,
    },
    /// An attestation with a lower or equal `seq` than one already held.
    #[error("attestation seq {seq} is not newer than the held seq {held}")]
    Stale {
        /// Its seq.
        seq: u64,
        /// The held seq.
        held: u64,
    },
    /// Only intents sent by the node's own (pre-trusted) agents are observed first-hand.
    #[error("{caller} is not one of this node's agents; its intents are not first-hand evidence")]
    NotOwn {
        /// The caller.
        caller: Did,
    },
    /// The attestation has expired.
    #[error("attestation expired at {expires_at}")]
    Expired {
        /// When it expired.
        expires_at: agentnet_protocol::Timestamp,
    },
    /// The store holds as much as it may.
    #[error("the trust store is full ({what}: {limit}); evidence was not recorded")]
    Full {
        /// Which table is full.
        what: &'static str,
        /// Its limit.
        limit: usize,
    },
}

/// Who signed the receipts behind an observation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signers {
    /// Caller and callee, with matching receipts.
    Both,
    /// The caller only.
    CallerOnly,
    /// The callee only.
    CalleeOnly,
}

/// The receipts of one intent: the caller's, the callee's, or both.
///
/// Receipts must already be verified (signature, limits, time) by `agentnet-protocol`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiptPair {
    /// The caller's receipt if there is one, else the callee's.
    view: Receipt,
    /// The callee's receipt when `view` is the caller's.
    confirmation: Option<Receipt>,
    signers: Signers,
}

impl ReceiptPair {
    /// Pairs the receipts, checking that each is issued by its side and that both describe
    /// the same intent, parties and capability.
    pub fn new(caller: Option<Receipt>, callee: Option<Receipt>) -> Result<Self, TrustError> {
        if let Some(r) = &caller
            && r.issuer != r.caller
        {
            return Err(TrustError::WrongIssuer {
                side: "caller",
                issuer: r.issuer.clone(),
            });
        }
        if let Some(r) = &callee
            && r.issuer != r.callee
        {
            return Err(TrustError::WrongIssuer {
                side: "callee",
                issuer: r.issuer.clone(),
            });
        }
        if let (Some(a), Some(b)) = (&caller, &callee) {
            let mismatch = if a.intent_id != b.intent_id {
                Some("intent_id")
            } else if a.caller != b.caller {
                Some("caller")
            } else if a.callee != b.callee {
                Some("callee")
            } else if a.capability != b.capability {
                Some("capability")
            } else {
                None
            };
            if let Some(field) = mismatch {
                return Err(TrustError::Mismatch { field });
            }
        }
        let (view, confirmation, signers) = match (caller, callee) {
            (Some(a), Some(b)) => (a, Some(b), Signers::Both),
            (Some(a), None) => (a, None, Signers::CallerOnly),
            (None, Some(b)) => (b, None, Signers::CalleeOnly),
            (None, None) => return Err(TrustError::EmptyPair),
        };
        Ok(ReceiptPair {
            view,
            confirmation,
            signers,
        })
    }

    fn primary(&self) -> &Receipt {
        &self.view
    }

    /// Who signed.
    pub fn signers(&self) -> Signers {
        self.signers
    }

    /// The calling agent.
    pub fn caller(&self) -> &Did {
        &self.primary().caller
    }

    /// The agent that was asked to act: the subject of the evidence.
    pub fn callee(&self) -> &Did {
        &self.primary().callee
    }

    /// The capability invoked.
    pub fn capability(&self) -> &str {
        &self.primary().capability
    }

    /// The receipts' weight under `config`.
    pub fn weight(&self, config: &TrustConfig) -> f64 {
        let w = &config.receipt_weights;
        match self.signers() {
            Signers::Both => w.both,
            Signers::CallerOnly => w.caller_only,
            Signers::CalleeOnly => w.callee_only,
        }
    }

    /// What the intent says about the callee on each dimension.
    ///
    /// The caller's receipt decides the outcome. If the callee's receipt reports a
    /// different outcome or a different cost, the callee's honesty signal is 0.
    pub fn signals(&self) -> Signals {
        let r = self.primary();
        let mut signals = outcome_signals(r.outcome, r.latency_ms, r.time_allowed_ms);
        signals.honesty = Some(cost_honesty(r.max_cost.as_ref(), r.cost.as_ref()));
        if let Some(b) = &self.confirmation
            && (r.outcome != b.outcome || r.cost != b.cost)
        {
            signals.honesty = Some(0.0);
        }
        signals
    }
}

/// Reliability, competence and timeliness signals of one outcome.
///
/// | outcome | reliability | competence | timeliness |
/// |---|---|---|---|
/// | success | 1 | 1 | [`timeliness`] of latency / time allowed |
/// | failure | 0 | 0 | [`timeliness`] |
/// | timeout | 0 | none | 0 |
/// | declined | 0.5 | none | none |
pub fn outcome_signals(outcome: Outcome, latency_ms: u64, time_allowed_ms: u64) -> Signals {
    match outcome {
        Outcome::Success => Signals {
            reliability: Some(1.0),
            competence: Some(1.0),
            timeliness: Some(timeliness(latency_ms, time_allowed_ms)),
            honesty: None,
        },
        Outcome::Failure => Signals {
            reliability: Some(0.0),
            competence: Some(0.0),
            timeliness: Some(timeliness(latency_ms, time_allowed_ms)),
            honesty: None,
        },
        Outcome::Timeout => Signals {
            reliability: Some(0.0),
            timeliness: Some(0.0),
            ..Signals::default()
        },
        _ => Signals {
            reliability: Some(0.5),
            ..Signals::default()
        },
    }
}

/// Timeliness of an answer that took `latency_ms` of `time_allowed_ms`: 1 up to half the
/// time allowed, then falling linearly to 0.5 at the deadline, and 0 after it.
pub fn timeliness(latency_ms: u64, time_allowed_ms: u64) -> f64 {
    if time_allowed_ms == 0 {
        return 0.0;
    }
    let used = latency_ms as f64 / time_allowed_ms as f64;
    if used <= 0.5 {
        1.0
    } else if used <= 1.0 {
        1.0 - (used - 0.5)
    } else {
        0.0
    }
}

/// Honesty of a reported cost against the agreed cap: 1 within the cap (or with no cap
/// or no cost), `cap / cost` above it, and 0 for a cost in another currency than the cap.
pub fn cost_honesty(max_cost: Option<&Price>, cost: Option<&Price>) -> f64 {
    match (max_cost, cost) {
        (Some(cap), Some(cost)) => {
            if cap.currency != cost.currency {
                0.0
            } else if cost.amount_micros <= cap.amount_micros {
                1.0
            } else {
                cap.amount_micros as f64 / cost.amount_micros as f64
            }
        }
        _ => 1.0,
    }
}
