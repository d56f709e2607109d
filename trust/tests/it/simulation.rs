//! Scaled-down attack simulations with the bars of the trust issue. The full-size runs are
//! `agentnet-bench trust-sim` (release mode); these keep the bars honest in CI.

use agentnet_trust::sim::{self, SimConfig};

const SCALE: usize = 5;

#[test]
fn sybil_ring_stays_out_of_the_top_ten() {
    let report = sim::run(&SimConfig::sybil_ring(7).scaled(SCALE));
    assert!(report.sybil_queries > 1000, "{report:?}");
    assert!(
        report.share_at_most_one_sybil_in_top10 >= 0.99,
        "{:.4}",
        report.share_at_most_one_sybil_in_top10
    );
    assert_eq!(report.target_in_top10, 0);
}

#[test]
fn camouflage_and_collusion_get_at_most_a_tenth_of_intents() {
    for f in [0.3, 0.7] {
        for config in [SimConfig::camouflage(7, f), SimConfig::collusion(7, f)] {
            let report = sim::run(&config.scaled(SCALE));
            assert!(
                report.malicious_share <= 0.10,
                "collusion={} f={f}: {:.4}",
                report.config.collusion,
                report.malicious_share
            );
            let ww = report.whitewash.expect("malicious agents exist");
            assert_eq!(ww.fresh_score, ww.prior, "a fresh DID starts at the prior");
            assert!(
                ww.old_score < ww.prior,
                "the bad record is below the prior: {ww:?}"
            );
            assert!(
                ww.known_good == 0 || ww.fresh_score <= ww.min_known_good_score,
                "{ww:?}"
            );
        }
    }
}

#[test]
fn runs_reproduce_from_their_seed() {
    let a = sim::run(&SimConfig::collusion(3, 0.5).scaled(10));
    let b = sim::run(&SimConfig::collusion(3, 0.5).scaled(10));
    assert_eq!(a.to_malicious, b.to_malicious);
    assert_eq!(a.malicious_share_by_round, b.malicious_share_by_round);
}
