//! Property tests: every message kind survives seal → bytes → verify → open unchanged.

use agentnet_protocol::*;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

fn keypair() -> impl Strategy<Value = Keypair> {
    any::<[u8; 32]>().prop_map(|seed| Keypair::from_seed(&seed))
}

fn two_keys() -> impl Strategy<Value = (Keypair, Keypair)> {
    (keypair(), keypair()).prop_filter("distinct keys", |(a, b)| a.did() != b.did())
}

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9._:/-]{0,30}"
}

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9]([ -~]{0,40}[A-Za-z0-9])?"
}

fn text() -> impl Strategy<Value = String> {
    "[\\PC\n\t]{0,200}"
}

fn price() -> impl Strategy<Value = Price> {
    (0..=limits::MAX_AMOUNT_MICROS, "[A-Za-z0-9]{1,8}").prop_map(|(amount_micros, currency)| {
        Price {
            amount_micros,
            currency,
        }
    })
}

fn time() -> impl Strategy<Value = (Timestamp, Timestamp)> {
    (
        1u64..4_000_000_000_000,
        1u64..=limits::MAX_INTENT_TTL.as_millis() as u64,
    )
        .prop_map(|(t, life)| (Timestamp::from_millis(t), Timestamp::from_millis(t + life)))
}

fn json() -> impl Strategy<Value = Vec<u8>> {
    (any::<i64>(), "[a-z ]{0,20}", any::<bool>()).prop_map(|(n, s, b)| {
        serde_json::to_vec(&serde_json::json!({"n": n, "s": s, "b": b})).expect("json")
    })
}

fn capability() -> impl Strategy<Value = Capability> {
    (
        token(),
        text(),
        proptest::collection::btree_set(token(), 0..6),
        "[ -~]{0,32}",
        option::of(price()),
    )
        .prop_map(|(name, description, tags, version, price)| Capability {
            name,
            description,
            tags: tags.into_iter().collect(),
            version,
            price,
        })
}

fn card() -> impl Strategy<Value = (Keypair, AgentCard)> {
    (
        keypair(),
        keypair(),
        name(),
        text(),
        proptest::collection::btree_map(token(), capability(), 0..6),
        vec(name(), 0..3),
        1u64..u64::MAX,
        time(),
        vec((token(), vec(any::<u8>(), 1..64)), 0..3),
    )
        .prop_map(
            |(
                agent,
                host,
                name,
                description,
                caps,
                endpoints,
                seq,
                (issued_at, expires_at),
                creds,
            )| {
                let card = AgentCard {
                    did: agent.did(),
                    name,
                    description,
                    capabilities: caps
                        .into_iter()
                        .map(|(name, cap)| Capability { name, ..cap })
                        .collect(),
                    endpoints,
                    host: host.peer_id(),
                    seq,
                    issued_at,
                    expires_at,
                    credentials: creds
                        .into_iter()
                        .map(|(format, data)| Credential { format, data })
                        .collect(),
                };
                (agent, card)
            },
        )
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        Just(Outcome::Success),
        Just(Outcome::Failure),
        Just(Outcome::Timeout),
        Just(Outcome::Declined)
    ]
}

/// Seals with `signer`, encodes, then verifies and opens as of `at`; the result must equal the input.
fn round_trip<M: Message + PartialEq + std::fmt::Debug + Clone>(
    signer: &Keypair,
    message: M,
    at: Timestamp,
) {
    let sealed = Signed::seal(signer, message.clone())
        .unwrap_or_else(|e| panic!("valid message refused: {e}"));
    let wire = sealed.envelope().to_bytes();
    assert!(wire.len() <= M::KIND.max_envelope_len());
    let opened = Signed::<M>::from_bytes(&wire, &ValidationContext::at(at))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(opened.message(), &message);
    assert_eq!(opened.envelope(), sealed.envelope());
    assert_eq!(M::decode(&Message::encode(&message)).as_ref(), Ok(&message));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn cards_round_trip((agent, card) in card()) {
        let payload_len = Message::encode(&card).len();
        prop_assume!(payload_len <= limits::MAX_CARD_LEN);
        let at = card.issued_at;
        round_trip(&agent, card, at);
    }

    #[test]
    fn tombstones_round_trip(agent in keypair(), seq in 1u64.., (issued_at, expires_at) in time()) {
        round_trip(&agent, Tombstone { did: agent.did(), seq, issued_at, expires_at }, issued_at);
    }

    #[test]
    fn intents_round_trip(
        (from, to) in two_keys(),
        id in any::<[u8; 16]>(),
        capability in token(),
        input in json(),
        max_cost in option::of(price()),
        (issued_at, deadline) in time(),
        nonce in any::<u64>(),
    ) {
        let intent = Intent { id: IntentId(id), from: from.did(), to: to.did(), capability, input, max_cost, issued_at, deadline, nonce };
        round_trip(&from, intent, issued_at);
    }

    #[test]
    fn results_round_trip(
        (callee, caller) in two_keys(),
        id in any::<[u8; 16]>(),
        completed in any::<bool>(),
        output in json(),
        error in "[a-z][ -~]{0,60}",
        cost in option::of(price()),
        usage in any::<(u64, u64, u64)>(),
        at in 1u64..4_000_000_000_000,
    ) {
        let (status, output, error) = if completed {
            (IntentStatus::Completed, output, String::new())
        } else {
            (IntentStatus::Failed, Vec::new(), error)
        };
        let result = IntentResult {
            intent_id: IntentId(id), from: callee.did(), to: caller.did(), status, output, error, cost,
            usage: Usage { input_tokens: usage.0, output_tokens: usage.1, compute_ms: usage.2 },
            completed_at: Timestamp::from_millis(at),
        };
        round_trip(&callee, result, Timestamp::from_millis(at));
    }

    #[test]
    fn receipts_round_trip(
        (caller, callee) in two_keys(),
        by_caller in any::<bool>(),
        id in any::<[u8; 16]>(),
        capability in token(),
        outcome in outcome(),
        latency_ms in 0..=limits::MAX_RECEIPT_LATENCY.as_millis() as u64,
        time_allowed_ms in 1..=limits::MAX_INTENT_TTL.as_millis() as u64,
        max_cost in option::of(price()),
        cost in option::of(price()),
        at in 1u64..4_000_000_000_000,
    ) {
        let issuer = if by_caller { &caller } else { &callee };
        let receipt = Receipt {
            intent_id: IntentId(id), caller: caller.did(), callee: callee.did(), capability,
            issuer: issuer.did(), outcome, latency_ms, time_allowed_ms, max_cost, cost,
            issued_at: Timestamp::from_millis(at),
        };
        round_trip(issuer, receipt, Timestamp::from_millis(at));
    }

    #[test]
    fn attestations_round_trip(
        (issuer, subject) in two_keys(),
        capability in option::of(token()),
        scores in option::of([0.0f32..=1.0, 0.0f32..=1.0, 0.0f32..=1.0, 0.0f32..=1.0]),
        outcome in outcome(),
        receipts in proptest::collection::btree_set(any::<[u8; 32]>(), 1..=limits::MAX_ATTESTATION_RECEIPTS),
        seq in 1u64..,
        (issued_at, expires_at) in time(),
    ) {
        let claim = match scores {
            Some([reliability, honesty, competence, timeliness]) => Claim::Scores(TrustScores { reliability, honesty, competence, timeliness }),
            None => Claim::Outcome(outcome),
        };
        let attestation = TrustAttestation {
            issuer: issuer.did(), subject: subject.did(), capability, claim,
            receipts: receipts.into_iter().map(ContentId).collect(), seq, issued_at, expires_at,
        };
        round_trip(&issuer, attestation, issued_at);
    }

    #[test]
    fn pauses_round_trip(
        issuer in keypair(),
        subjects in proptest::collection::btree_set(any::<[u8; 32]>(), 1..40),
        action in prop_oneof![Just(PauseAction::Pause), Just(PauseAction::Resume), Just(PauseAction::Revoke)],
        reason in text(),
        seq in 1u64..,
        (issued_at, expires_at) in time(),
    ) {
        let notice = PauseNotice {
            issuer: issuer.did(),
            subjects: subjects.iter().map(|s| Keypair::from_seed(s).did()).collect(),
            action, reason, seq, issued_at, expires_at,
        };
        round_trip(&issuer, notice, issued_at);
    }
}
