//! The engine's evidence rules: receipt validation, backing, staleness, expiry, support,
//! whitewashing and incremental aggregation.

use std::time::Duration;

use agentnet_protocol::{
    Claim, ContentId, Did, IntentId, Keypair, Outcome, Price, Receipt, Timestamp, TrustAttestation,
    TrustScores,
};
use agentnet_trust::{ReceiptPair, Signers, TrustConfig, TrustEngine, TrustError};

const NOW: Timestamp = Timestamp::from_millis(1_763_700_000_000);

fn did(n: u8) -> Did {
    Keypair::from_seed(&[n; 32]).did()
}

fn receipt(intent: u8, caller: u8, callee: u8, issuer: u8, outcome: Outcome) -> Receipt {
    Receipt {
        intent_id: IntentId([intent; 16]),
        caller: did(caller),
        callee: did(callee),
        capability: "translate".into(),
        issuer: did(issuer),
        outcome,
        latency_ms: 1_000,
        time_allowed_ms: 10_000,
        max_cost: None,
        cost: None,
        issued_at: NOW,
    }
}

fn attestation(
    issuer: u8,
    subject: u8,
    value: f32,
    receipts: Vec<ContentId>,
    seq: u64,
) -> TrustAttestation {
    TrustAttestation {
        issuer: did(issuer),
        subject: did(subject),
        capability: None,
        claim: Claim::Scores(TrustScores {
            reliability: value,
            honesty: value,
            competence: value,
            timeliness: value,
        }),
        receipts,
        seq,
        issued_at: NOW,
        expires_at: NOW.saturating_add(Duration::from_secs(86_400)),
    }
}

fn id(n: u8) -> ContentId {
    ContentId([n; 32])
}

#[test]
fn receipt_pairs_are_validated() {
    let ok = ReceiptPair::new(
        Some(receipt(1, 1, 2, 1, Outcome::Success)),
        Some(receipt(1, 1, 2, 2, Outcome::Success)),
    )
    .expect("matching pair");
    assert_eq!(ok.signers(), Signers::Both);
    assert_eq!(ok.callee(), &did(2));

    // The caller's receipt must be issued by the caller.
    let err = ReceiptPair::new(Some(receipt(1, 1, 2, 2, Outcome::Success)), None)
        .expect_err("wrong issuer");
    assert!(
        matches!(err, TrustError::WrongIssuer { side: "caller", .. }),
        "{err}"
    );
    // Both must describe the same intent and parties.
    let err = ReceiptPair::new(
        Some(receipt(1, 1, 2, 1, Outcome::Success)),
        Some(receipt(2, 1, 2, 2, Outcome::Success)),
    )
    .expect_err("different intents");
    assert_eq!(err, TrustError::Mismatch { field: "intent_id" });
    let err = ReceiptPair::new(
        Some(receipt(1, 1, 2, 1, Outcome::Success)),
        Some(receipt(1, 1, 3, 3, Outcome::Success)),
    )
    .expect_err("different callees");
    assert_eq!(err, TrustError::Mismatch { field: "callee" });
    assert_eq!(
        ReceiptPair::new(None, None).expect_err("empty"),
        TrustError::EmptyPair
    );
}

#[test]
fn receipt_weights_follow_the_signers() {
    let cfg = TrustConfig::default();
    let both = ReceiptPair::new(
        Some(receipt(1, 1, 2, 1, Outcome::Success)),
        Some(receipt(1, 1, 2, 2, Outcome::Success)),
    )
    .expect("pair");
    let caller = ReceiptPair::new(Some(receipt(1, 1, 2, 1, Outcome::Success)), None).expect("pair");
    let callee = ReceiptPair::new(None, Some(receipt(1, 1, 2, 2, Outcome::Success))).expect("pair");
    assert_eq!(both.weight(&cfg), 1.0);
    assert_eq!(caller.weight(&cfg), 0.7);
    assert_eq!(callee.weight(&cfg), 0.3);
}

#[test]
fn a_callee_that_contradicts_the_caller_loses_honesty() {
    let pair = ReceiptPair::new(
        Some(receipt(1, 1, 2, 1, Outcome::Failure)),
        Some(receipt(1, 1, 2, 2, Outcome::Success)),
    )
    .expect("pair");
    let s = pair.signals();
    assert_eq!(
        s.reliability,
        Some(0.0),
        "the caller's view decides the outcome"
    );
    assert_eq!(s.honesty, Some(0.0));

    let mut overcharged = receipt(3, 1, 2, 1, Outcome::Success);
    overcharged.max_cost = Some(Price {
        amount_micros: 100,
        currency: "USD".into(),
    });
    overcharged.cost = Some(Price {
        amount_micros: 400,
        currency: "USD".into(),
    });
    let s = ReceiptPair::new(Some(overcharged), None)
        .expect("pair")
        .signals();
    assert_eq!(s.honesty, Some(0.25), "charging 4x the cap");

    let mut late = receipt(4, 1, 2, 1, Outcome::Success);
    late.latency_ms = 7_500;
    let s = ReceiptPair::new(Some(late), None).expect("pair").signals();
    assert_eq!(s.timeliness, Some(0.75), "75% of the time allowed");
    let s = ReceiptPair::new(Some(receipt(5, 1, 2, 1, Outcome::Timeout)), None)
        .expect("pair")
        .signals();
    assert_eq!(
        (s.reliability, s.timeliness, s.competence),
        (Some(0.0), Some(0.0), None)
    );
}

#[test]
fn attestations_without_backing_receipts_are_refused() {
    let mut engine = TrustEngine::new(TrustConfig::default(), &[did(1)]);
    // No receipts at all.
    let err = engine
        .add_attestation(&attestation(2, 3, 0.9, vec![id(9)], 1), NOW)
        .expect_err("unknown receipt");
    assert!(matches!(err, TrustError::Unbacked { .. }), "{err}");
    // A receipt that exists but links other agents.
    engine
        .add_receipt(id(9), &receipt(9, 4, 5, 4, Outcome::Success))
        .expect("receipt");
    let err = engine
        .add_attestation(&attestation(2, 3, 0.9, vec![id(9)], 1), NOW)
        .expect_err("unrelated receipt");
    assert!(matches!(err, TrustError::Unbacked { .. }), "{err}");
    assert_eq!(engine.edges(), 0);
    assert_eq!(engine.score(&did(3), None, NOW).score, 0.5);
    // A receipt between issuer and subject backs it.
    engine
        .add_receipt(id(10), &receipt(10, 2, 3, 3, Outcome::Success))
        .expect("receipt");
    engine
        .add_attestation(&attestation(2, 3, 0.9, vec![id(9), id(10)], 1), NOW)
        .expect("backed");
    // Older or equal seq is stale; an expired attestation is refused.
    let err = engine
        .add_attestation(&attestation(2, 3, 0.1, vec![id(10)], 1), NOW)
        .expect_err("stale");
    assert_eq!(err, TrustError::Stale { seq: 1, held: 1 });
    let mut old = attestation(2, 3, 0.1, vec![id(10)], 2);
    old.expires_at = NOW;
    assert!(matches!(
        engine.add_attestation(&old, NOW),
        Err(TrustError::Expired { .. })
    ));
}

#[test]
fn a_claim_is_cut_back_to_what_its_receipts_support() {
    // Pre-trusted issuer 1 claims perfection for agent 3 after one intent; an EMA from the
    // prior can only reach 0.6 after one observation, so that is all the claim is worth.
    let mut engine = TrustEngine::new(TrustConfig::default(), &[did(1)]);
    engine
        .add_receipt(id(1), &receipt(1, 1, 3, 3, Outcome::Success))
        .expect("receipt");
    engine
        .add_receipt(id(2), &receipt(1, 1, 3, 1, Outcome::Success))
        .expect("receipt");
    engine
        .add_attestation(&attestation(1, 3, 1.0, vec![id(1), id(2)], 1), NOW)
        .expect("backed");
    let s = engine.score(&did(3), None, NOW);
    assert!((s.opinion.expect("opinion") - 0.6).abs() < 1e-9, "{s:?}");
}

#[test]
fn direct_observations_raise_and_lower_scores_and_whitewashing_resets_to_the_prior() {
    let me = 1;
    let mut engine = TrustEngine::new(TrustConfig::default(), &[did(me)]);
    for i in 0..10 {
        let good = ReceiptPair::new(
            Some(receipt(i, me, 2, me, Outcome::Success)),
            Some(receipt(i, me, 2, 2, Outcome::Success)),
        )
        .expect("pair");
        engine.observe(&good, NOW).expect("observe");
        let bad = ReceiptPair::new(
            Some(receipt(100 + i, me, 3, me, Outcome::Failure)),
            Some(receipt(100 + i, me, 3, 3, Outcome::Success)),
        )
        .expect("pair");
        engine.observe(&bad, NOW).expect("observe");
    }
    let good = engine.score(&did(2), Some("translate"), NOW).score;
    let bad = engine.score(&did(3), Some("translate"), NOW).score;
    let fresh = engine.score(&did(77), Some("translate"), NOW).score;
    assert!(good > 0.8, "{good}");
    assert!(bad < 0.3, "{bad}");
    assert_eq!(fresh, 0.5, "a fresh DID starts at the neutral prior");
    assert!(fresh < good, "and below a known-good agent");
    // A month later both records have faded halfway back towards the prior.
    let later = NOW.saturating_add(Duration::from_secs(30 * 86_400));
    let good_later = engine.score(&did(2), Some("translate"), later).score;
    assert!(good_later < good && good_later > 0.5, "{good_later}");
    let candidates = [did(77), did(3), did(2)];
    let ranked = engine.rank(candidates.iter(), Some("translate"), NOW);
    let order: Vec<&Did> = ranked.iter().map(|(d, _)| *d).collect();
    assert_eq!(order, vec![&did(2), &did(77), &did(3)]);
}

#[test]
fn incremental_updates_track_a_full_recompute() {
    let n = 200u32;
    let dids: Vec<Did> = (0..n)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..4].copy_from_slice(&i.to_le_bytes());
            Keypair::from_seed(&seed).did()
        })
        .collect();
    let mut engine = TrustEngine::new(TrustConfig::default(), &dids[..5]);
    let mut state = 12345u64;
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
        (state >> 33) as u32
    };
    let mut count = 0u8;
    for k in 0..2000u32 {
        let i = next() % n;
        let j = (i + 1 + next() % (n - 1)) % n;
        let mut rid = [0u8; 32];
        rid[..4].copy_from_slice(&k.to_le_bytes());
        let mut r = receipt(0, 0, 0, 0, Outcome::Success);
        r.caller = dids[i as usize].clone();
        r.callee = dids[j as usize].clone();
        r.issuer = dids[j as usize].clone();
        r.intent_id = IntentId([count; 16]);
        count = count.wrapping_add(1);
        engine.add_receipt(ContentId(rid), &r).expect("receipt");
        let mut a = attestation(
            0,
            0,
            (next() % 100) as f32 / 100.0,
            vec![ContentId(rid)],
            u64::from(k) + 1,
        );
        a.issuer = dids[i as usize].clone();
        a.subject = dids[j as usize].clone();
        let _ = engine.add_attestation(&a, NOW);
    }
    assert!(engine.pushes() > 0, "updates ran incrementally");
    let err = engine.recompute_error();
    assert!(err < 1e-4, "L1 error {err}");
}

#[test]
fn refused_attestations_leave_no_trace() {
    let mut engine = TrustEngine::new(TrustConfig::default(), &[did(1)]);
    let agents = engine.agents();
    for n in 10..60 {
        let mut a = attestation(n, n + 100, 0.9, vec![id(n)], 1);
        a.capability = Some(format!("made-up-{n}"));
        assert!(matches!(
            engine.add_attestation(&a, NOW),
            Err(TrustError::Unbacked { .. })
        ));
    }
    assert_eq!(
        engine.agents(),
        agents,
        "unbacked attestations intern nothing"
    );
}

#[test]
fn pruned_claims_cannot_be_replaced_by_replays() {
    let mut engine = TrustEngine::new(TrustConfig::default(), &[did(1)]);
    engine
        .add_receipt(id(1), &receipt(1, 2, 3, 3, Outcome::Success))
        .expect("receipt");
    let mut old = attestation(2, 3, 0.2, vec![id(1)], 1);
    old.expires_at = NOW.saturating_add(Duration::from_secs(10 * 86_400));
    let mut newer = attestation(2, 3, 0.9, vec![id(1)], 2);
    newer.expires_at = NOW.saturating_add(Duration::from_secs(86_400));
    engine.add_attestation(&newer, NOW).expect("newer");
    let later = NOW.saturating_add(Duration::from_secs(2 * 86_400));
    engine.prune(later);
    assert_eq!(engine.edges(), 0);
    // The older attestation is still within its own lifetime, but it is stale.
    let err = engine.add_attestation(&old, later).expect_err("replay");
    assert_eq!(err, TrustError::Stale { seq: 1, held: 2 });
    // A genuinely newer one is accepted, and the subject is counted once.
    engine
        .add_attestation(&attestation(2, 3, 0.9, vec![id(1)], 3), NOW)
        .expect("newer still");
    assert_eq!(engine.edges(), 1);
}

#[test]
fn only_the_nodes_own_agents_are_observed_first_hand() {
    let mut engine = TrustEngine::new(TrustConfig::default(), &[did(1)]);
    let foreign =
        ReceiptPair::new(Some(receipt(1, 5, 2, 5, Outcome::Success)), None).expect("pair");
    assert!(matches!(
        engine.observe(&foreign, NOW),
        Err(TrustError::NotOwn { .. })
    ));
}

#[test]
fn one_issuers_claims_are_bounded() {
    let mut limits = agentnet_trust::Limits::default();
    limits.claims_per_issuer = 3;
    let mut engine = TrustEngine::with_limits(TrustConfig::default(), limits, &[did(1)]);
    for subject in 10..14u8 {
        engine
            .add_receipt(
                id(subject),
                &receipt(subject, 2, subject, subject, Outcome::Success),
            )
            .expect("receipt");
        let result =
            engine.add_attestation(&attestation(2, subject, 0.9, vec![id(subject)], 1), NOW);
        if subject < 13 {
            result.expect("within the bound");
        } else {
            assert!(matches!(
                result,
                Err(TrustError::Full {
                    what: "claims per issuer",
                    ..
                })
            ));
        }
    }
}
