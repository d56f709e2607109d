//! The trust model's constants, all configurable (`specs/trust.md#parameters`).

/// Weight of each trust dimension in the aggregate score. The defaults sum to 1.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct Weights {
    /// Does the agent complete what it accepts? Default 0.35.
    pub reliability: f64,
    /// Are its reported cost and outcome what was agreed and what the caller saw? Default 0.35.
    pub honesty: f64,
    /// Is its work good? Default 0.20.
    pub competence: f64,
    /// Does it answer well before the deadline? Default 0.10.
    pub timeliness: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            reliability: 0.35,
            honesty: 0.35,
            competence: 0.20,
            timeliness: 0.10,
        }
    }
}

/// How much a receipt counts, by who signed it (`specs/trust.md#receipts`).
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct ReceiptWeights {
    /// Caller and callee both signed matching receipts. Default 1.0.
    pub both: f64,
    /// Only the caller signed: the callee did not confirm. Default 0.7.
    pub caller_only: f64,
    /// Only the callee signed: a claim about its own work. Default 0.3.
    pub callee_only: f64,
}

impl Default for ReceiptWeights {
    fn default() -> Self {
        ReceiptWeights {
            both: 1.0,
            caller_only: 0.7,
            callee_only: 0.3,
        }
    }
}

/// Every parameter of the trust model.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct TrustConfig {
    /// EMA step: how far one observation moves a dimension. Default 0.2.
    pub alpha: f64,
    /// Per-day factor by which an observation's distance from the prior shrinks. Default
    /// 0.977, a half-life of 30 days.
    pub daily_decay: f64,
    /// The neutral value of every dimension and of the score of an unknown agent. Default 0.5.
    pub prior: f64,
    /// Dimension weights of the aggregate score.
    pub weights: Weights,
    /// Receipt weights by signer.
    pub receipt_weights: ReceiptWeights,
    /// Restart probability of the personalised random walk (EigenTrust's `a`). Default 0.15.
    pub restart: f64,
    /// Incremental updates push residuals until each is below this times the node's
    /// out-degree. Default 1e-9.
    pub push_tolerance: f64,
    /// Pseudo-evidence behind the prior: how much evidence it takes to move a score
    /// halfway from the prior. Default 2.
    pub prior_strength: f64,
    /// How much one unit of the node's own evidence counts against one unit of
    /// network evidence. Default 2.
    pub direct_strength: f64,
    /// Receipts counted per attestation edge; more add nothing. Default 16.
    pub max_receipts_per_edge: u32,
}

impl Default for TrustConfig {
    fn default() -> Self {
        TrustConfig {
            alpha: 0.2,
            daily_decay: 0.977,
            prior: 0.5,
            weights: Weights::default(),
            receipt_weights: ReceiptWeights::default(),
            restart: 0.15,
            push_tolerance: 1e-9,
            prior_strength: 2.0,
            direct_strength: 2.0,
            max_receipts_per_edge: 16,
        }
    }
}
