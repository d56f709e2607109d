//! Trust vectors, their exponential moving average and their decay.

use agentnet_protocol::Timestamp;

use crate::config::{TrustConfig, Weights};

const MS_PER_DAY: f64 = 86_400_000.0;

/// Values of the four trust dimensions, each in [0, 1].
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct TrustVector {
    /// Completes what it accepts.
    pub reliability: f64,
    /// Reports cost and outcome truthfully and within what was agreed.
    pub honesty: f64,
    /// Does good work.
    pub competence: f64,
    /// Answers well before the deadline.
    pub timeliness: f64,
}

impl TrustVector {
    /// Every dimension at `value`.
    pub const fn uniform(value: f64) -> Self {
        TrustVector {
            reliability: value,
            honesty: value,
            competence: value,
            timeliness: value,
        }
    }

    /// The weighted aggregate: `0.35·reliability + 0.35·honesty + 0.20·competence +
    /// 0.10·timeliness` with the default weights, divided by the weights' sum.
    pub fn aggregate(&self, w: &Weights) -> f64 {
        let total = w.reliability + w.honesty + w.competence + w.timeliness;
        if total <= 0.0 {
            return 0.0;
        }
        (w.reliability * self.reliability
            + w.honesty * self.honesty
            + w.competence * self.competence
            + w.timeliness * self.timeliness)
            / total
    }

    fn dims_mut(&mut self) -> [&mut f64; 4] {
        [
            &mut self.reliability,
            &mut self.honesty,
            &mut self.competence,
            &mut self.timeliness,
        ]
    }
}

/// What one interaction says about each dimension; `None` where it says nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Signals {
    /// Reliability signal in [0, 1].
    pub reliability: Option<f64>,
    /// Honesty signal in [0, 1].
    pub honesty: Option<f64>,
    /// Competence signal in [0, 1].
    pub competence: Option<f64>,
    /// Timeliness signal in [0, 1].
    pub timeliness: Option<f64>,
}

impl Signals {
    fn dims(&self) -> [Option<f64>; 4] {
        [
            self.reliability,
            self.honesty,
            self.competence,
            self.timeliness,
        ]
    }
}

/// One observer's accumulated view of one subject: a trust vector, how much evidence is
/// behind it, and when it was last updated.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Observation {
    /// The current vector (as of `updated_at`).
    pub vector: TrustVector,
    /// Weighted, decayed count of the observations behind it.
    pub evidence: f64,
    /// When it was last updated.
    pub updated_at: Timestamp,
}

impl Observation {
    /// An observation with no evidence: every dimension at the prior.
    pub fn new(config: &TrustConfig, now: Timestamp) -> Self {
        Observation {
            vector: TrustVector::uniform(config.prior),
            evidence: 0.0,
            updated_at: now,
        }
    }

    /// The factor `daily_decay ^ days` for the time from `updated_at` to `now`.
    fn decay_factor(&self, config: &TrustConfig, now: Timestamp) -> f64 {
        let days = now.as_millis().saturating_sub(self.updated_at.as_millis()) as f64 / MS_PER_DAY;
        config.daily_decay.powf(days)
    }

    /// The observation as of `now`: every dimension moved towards the prior, and the
    /// evidence shrunk, by `daily_decay` per day since the last update.
    pub fn decayed(&self, config: &TrustConfig, now: Timestamp) -> Observation {
        if now <= self.updated_at {
            return *self;
        }
        let factor = self.decay_factor(config, now);
        let mut vector = self.vector;
        for v in vector.dims_mut() {
            *v = config.prior + (*v - config.prior) * factor;
        }
        Observation {
            vector,
            evidence: self.evidence * factor,
            updated_at: now,
        }
    }

    /// Decays to `now`, then moves each dimension with a signal towards it by
    /// `alpha · weight` (an exponential moving average), and adds `weight` to the evidence.
    pub fn update(&mut self, signals: &Signals, weight: f64, config: &TrustConfig, now: Timestamp) {
        *self = self.decayed(config, now);
        let step = (config.alpha * weight).clamp(0.0, 1.0);
        for (v, signal) in self.vector.dims_mut().into_iter().zip(signals.dims()) {
            if let Some(x) = signal {
                *v += step * (x.clamp(0.0, 1.0) - *v);
            }
        }
        self.evidence += weight.max(0.0);
        self.updated_at = self.updated_at.max(now);
    }

    /// The aggregate score as of `now`.
    pub fn score(&self, config: &TrustConfig, now: Timestamp) -> f64 {
        self.decayed(config, now).vector.aggregate(&config.weights)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_days(d: f64) -> Timestamp {
        Timestamp::from_millis((d * MS_PER_DAY) as u64)
    }

    #[test]
    fn ema_moves_by_alpha() {
        let cfg = TrustConfig::default();
        let mut o = Observation::new(&cfg, at_days(0.0));
        let s = Signals {
            reliability: Some(1.0),
            ..Signals::default()
        };
        o.update(&s, 1.0, &cfg, at_days(0.0));
        assert!(
            (o.vector.reliability - 0.6).abs() < 1e-12,
            "0.5 + 0.2·(1 − 0.5)"
        );
        o.update(&s, 1.0, &cfg, at_days(0.0));
        assert!(
            (o.vector.reliability - 0.68).abs() < 1e-12,
            "0.6 + 0.2·(1 − 0.6)"
        );
        assert_eq!(
            o.vector.honesty, 0.5,
            "dimensions without a signal stay put"
        );
        // A half-weight receipt moves half as far.
        let mut h = Observation::new(&cfg, at_days(0.0));
        h.update(&s, 0.5, &cfg, at_days(0.0));
        assert!((h.vector.reliability - 0.55).abs() < 1e-12);
        assert!((h.evidence - 0.5).abs() < 1e-12);
    }

    #[test]
    fn decay_halves_the_distance_from_the_prior_in_thirty_days() {
        let cfg = TrustConfig::default();
        let mut o = Observation::new(&cfg, at_days(0.0));
        o.vector = TrustVector::uniform(1.0);
        o.evidence = 10.0;
        let later = o.decayed(&cfg, at_days(30.0));
        // 0.977^30 = 0.4977…: the half-life is 30 days.
        assert!((later.vector.reliability - (0.5 + 0.5 * 0.977f64.powi(30))).abs() < 1e-9);
        assert!((later.vector.reliability - 0.749).abs() < 0.001);
        assert!((later.evidence - 10.0 * 0.977f64.powi(30)).abs() < 1e-9);
        // Bad records decay upwards towards the prior.
        o.vector = TrustVector::uniform(0.0);
        assert!((o.decayed(&cfg, at_days(30.0)).vector.honesty - 0.2512).abs() < 0.001);
        // Time going backwards changes nothing.
        assert_eq!(o.decayed(&cfg, at_days(0.0)), o);
    }

    #[test]
    fn aggregate_uses_the_documented_weights() {
        let w = Weights::default();
        let v = TrustVector {
            reliability: 1.0,
            honesty: 0.0,
            competence: 0.0,
            timeliness: 0.0,
        };
        assert!((v.aggregate(&w) - 0.35).abs() < 1e-12);
        let v = TrustVector {
            reliability: 0.0,
            honesty: 0.0,
            competence: 1.0,
            timeliness: 1.0,
        };
        assert!((v.aggregate(&w) - 0.30).abs() < 1e-12);
        assert!((TrustVector::uniform(0.8).aggregate(&w) - 0.8).abs() < 1e-12);
    }
}
