//! Each validation rule, one case at a time: the error names the field and the limit.

use std::time::Duration;

use agentnet_protocol::limits::*;
use agentnet_protocol::*;

use crate::fixtures::*;

fn static_err<M: Message>(m: &M) -> ValidationError {
    m.check().expect_err("should be invalid")
}

#[test]
fn card_limits_name_the_field() {
    let mut c = card();
    c.name = "x".repeat(MAX_NAME_LEN + 1);
    assert!(
        matches!(static_err(&c), ValidationError::TooLong { ref field, max: MAX_NAME_LEN, .. } if field == "name")
    );

    let mut c = card();
    c.name = String::new();
    assert!(matches!(static_err(&c), ValidationError::Missing { ref field } if field == "name"));

    let mut c = card();
    c.name = "bell\u{7}".into();
    let err = static_err(&c);
    assert!(err.to_string().contains("U+0007"), "{err}");

    let mut c = card();
    c.capabilities = (0..=MAX_CAPABILITIES)
        .map(|i| Capability {
            name: format!("cap{i}"),
            description: String::new(),
            tags: vec![],
            version: String::new(),
            price: None,
        })
        .collect();
    assert!(
        matches!(static_err(&c), ValidationError::TooMany { ref field, count, max: MAX_CAPABILITIES } if field == "capabilities" && count == MAX_CAPABILITIES + 1)
    );

    let mut c = card();
    c.capabilities[1].tags = (0..=MAX_TAGS).map(|i| format!("t{i}")).collect();
    assert!(
        matches!(static_err(&c), ValidationError::TooMany { ref field, .. } if field == "capabilities[1].tags")
    );

    let mut c = card();
    c.capabilities[0].tags[1] = "t".repeat(MAX_TAG_LEN + 1);
    assert!(
        matches!(static_err(&c), ValidationError::TooLong { ref field, .. } if field == "capabilities[0].tags[1]")
    );

    let mut c = card();
    c.capabilities[0].tags[1] = "has space".into();
    assert!(
        matches!(static_err(&c), ValidationError::Invalid { ref field, .. } if field == "capabilities[0].tags[1]")
    );

    let mut c = card();
    c.capabilities[0].tags[1] = c.capabilities[0].tags[0].clone();
    assert!(
        matches!(static_err(&c), ValidationError::Duplicate { ref field, .. } if field == "capabilities[0].tags")
    );

    let mut c = card();
    c.capabilities[1].name = c.capabilities[0].name.clone();
    assert!(
        matches!(static_err(&c), ValidationError::Duplicate { ref field, .. } if field == "capabilities.name")
    );

    let mut c = card();
    c.capabilities[0].description = "d".repeat(MAX_CAPABILITY_DESCRIPTION_LEN + 1);
    assert!(
        matches!(static_err(&c), ValidationError::TooLong { ref field, .. } if field == "capabilities[0].description")
    );

    let mut c = card();
    c.description = "d".repeat(MAX_DESCRIPTION_LEN + 1);
    assert!(
        matches!(static_err(&c), ValidationError::TooLong { ref field, .. } if field == "description")
    );

    let mut c = card();
    c.endpoints = vec!["e".into(); MAX_ENDPOINTS + 1];
    assert!(
        matches!(static_err(&c), ValidationError::TooMany { ref field, .. } if field == "endpoints")
    );

    let mut c = card();
    c.capabilities[0].price = Some(Price {
        amount_micros: MAX_AMOUNT_MICROS + 1,
        currency: "USD".into(),
    });
    assert!(
        matches!(static_err(&c), ValidationError::Invalid { ref field, .. } if field == "capabilities[0].price.amount_micros")
    );

    let mut c = card();
    c.seq = 0;
    assert!(matches!(static_err(&c), ValidationError::Invalid { ref field, .. } if field == "seq"));

    let mut c = card();
    c.expires_at = c
        .issued_at
        .saturating_add(MAX_CARD_LIFETIME + Duration::from_millis(1));
    assert!(matches!(
        static_err(&c),
        ValidationError::LifetimeTooLong {
            kind: Kind::AgentCard,
            ..
        }
    ));

    let mut c = card();
    c.expires_at = c.issued_at;
    assert!(
        matches!(static_err(&c), ValidationError::Invalid { ref field, .. } if field == "expires_at")
    );
}

#[test]
fn the_encoded_card_limit_applies_on_decode() {
    // Many capabilities with long descriptions: each field within its limit, the whole over.
    let mut c = card();
    c.capabilities = (0..MAX_CAPABILITIES)
        .map(|i| Capability {
            name: format!("cap{i}"),
            description: "d".repeat(MAX_CAPABILITY_DESCRIPTION_LEN),
            tags: vec![],
            version: String::new(),
            price: None,
        })
        .collect();
    assert!(c.check().is_ok(), "every field is within its own limit");
    let payload = Message::encode(&c);
    assert!(payload.len() > MAX_CARD_LEN);
    assert!(matches!(
        AgentCard::decode(&payload),
        Err(ValidationError::TooLong { ref field, max: MAX_CARD_LEN, .. }) if field == "payload"
    ));
}

#[test]
fn time_rules() {
    let ctx = ctx();
    let skew = ctx.max_clock_skew;

    let mut c = card();
    c.issued_at = NOW.saturating_add(skew + Duration::from_millis(1));
    c.expires_at = c.issued_at.saturating_add(Duration::from_secs(60));
    assert!(matches!(
        c.check_time(&ctx),
        Err(ValidationError::FromFuture {
            field: "issued_at",
            ..
        })
    ));
    c.issued_at = NOW.saturating_add(skew);
    assert!(
        c.check_time(&ctx).is_ok(),
        "exactly at the skew bound is allowed"
    );

    let mut c = card();
    c.issued_at = NOW.saturating_sub(Duration::from_secs(120));
    c.expires_at = NOW;
    assert!(matches!(
        c.check_time(&ctx),
        Err(ValidationError::Expired {
            field: "expires_at",
            ..
        })
    ));

    let mut i = intent();
    i.issued_at = NOW.saturating_sub(Duration::from_secs(60));
    i.deadline = NOW.saturating_sub(Duration::from_secs(1));
    assert!(matches!(
        i.check_time(&ctx),
        Err(ValidationError::Expired {
            field: "deadline",
            ..
        })
    ));

    let mut i = intent();
    i.deadline = i
        .issued_at
        .saturating_add(MAX_INTENT_TTL + Duration::from_millis(1));
    assert!(matches!(
        static_err(&i),
        ValidationError::LifetimeTooLong {
            field: "deadline",
            ..
        }
    ));

    let mut r = intent_result();
    r.completed_at = NOW.saturating_add(Duration::from_secs(3600));
    assert!(matches!(
        r.check_time(&ctx),
        Err(ValidationError::FromFuture {
            field: "completed_at",
            ..
        })
    ));

    let err = i.check().expect_err("lifetime").to_string();
    assert!(err.contains("Intent allows at most"), "{err}");
}

#[test]
fn signer_must_be_the_subject() {
    let other = key(9);
    assert!(matches!(
        card().check_signer(&other.did()),
        Err(ValidationError::SignerMismatch { field: "did", .. })
    ));
    assert!(matches!(
        tombstone().check_signer(&other.did()),
        Err(ValidationError::SignerMismatch { field: "did", .. })
    ));
    assert!(matches!(
        intent().check_signer(&other.did()),
        Err(ValidationError::SignerMismatch { field: "from", .. })
    ));
    assert!(matches!(
        intent_result().check_signer(&key(2).did()),
        Err(ValidationError::SignerMismatch { field: "from", .. })
    ));
    assert!(matches!(
        receipt().check_signer(&key(1).did()),
        Err(ValidationError::SignerMismatch {
            field: "issuer",
            ..
        })
    ));
    assert!(matches!(
        attestation().check_signer(&key(1).did()),
        Err(ValidationError::SignerMismatch {
            field: "issuer",
            ..
        })
    ));
    assert!(matches!(
        pause().check_signer(&key(1).did()),
        Err(ValidationError::SignerMismatch {
            field: "issuer",
            ..
        })
    ));
    let msg = card()
        .check_signer(&other.did())
        .expect_err("mismatch")
        .to_string();
    assert!(
        msg.contains(other.did().as_str()) && msg.contains("only did"),
        "{msg}"
    );
}

#[test]
fn intent_and_result_rules() {
    let mut i = intent();
    i.to = i.from.clone();
    assert!(matches!(static_err(&i), ValidationError::Invalid { ref field, .. } if field == "to"));

    let mut i = intent();
    i.input = b"{not json".to_vec();
    assert!(
        matches!(static_err(&i), ValidationError::Invalid { ref field, .. } if field == "input")
    );

    let mut i = intent();
    i.input = vec![b' '; MAX_INTENT_INPUT_LEN + 1];
    assert!(
        matches!(static_err(&i), ValidationError::TooLong { ref field, .. } if field == "input")
    );

    let mut r = intent_result();
    r.status = IntentStatus::Failed;
    assert!(
        matches!(static_err(&r), ValidationError::Invalid { ref field, .. } if field == "output")
    );
    r.output.clear();
    assert!(matches!(static_err(&r), ValidationError::Missing { ref field } if field == "error"));
    r.error = "model unavailable".into();
    assert!(r.check().is_ok());
}

#[test]
fn receipt_attestation_and_pause_rules() {
    let mut r = receipt();
    r.issuer = key(9).did();
    assert!(
        matches!(static_err(&r), ValidationError::Invalid { ref field, .. } if field == "issuer")
    );

    let mut r = receipt();
    r.callee = r.caller.clone();
    r.issuer = r.caller.clone();
    assert!(
        matches!(static_err(&r), ValidationError::Invalid { ref field, .. } if field == "callee")
    );

    let mut a = attestation();
    a.receipts.clear();
    assert!(
        matches!(static_err(&a), ValidationError::Missing { ref field } if field == "receipts")
    );

    let mut a = attestation();
    a.receipts = vec![ContentId([1; 32]); 2];
    assert!(
        matches!(static_err(&a), ValidationError::Duplicate { ref field, .. } if field == "receipts")
    );

    let mut a = attestation();
    a.claim = Claim::Scores(TrustScores {
        reliability: f32::NAN,
        honesty: 1.0,
        competence: 1.0,
        timeliness: 1.0,
    });
    assert!(
        matches!(static_err(&a), ValidationError::Invalid { ref field, .. } if field == "scores.reliability")
    );

    let mut a = attestation();
    a.subject = a.issuer.clone();
    assert!(
        matches!(static_err(&a), ValidationError::Invalid { ref field, .. } if field == "subject")
    );

    let mut p = pause();
    p.subjects.clear();
    assert!(
        matches!(static_err(&p), ValidationError::Missing { ref field } if field == "subjects")
    );
    let mut p = pause();
    p.subjects = (0..=MAX_PAUSE_SUBJECTS as u8)
        .map(key)
        .map(|k| k.did())
        .collect();
    assert!(
        matches!(static_err(&p), ValidationError::TooMany { ref field, .. } if field == "subjects")
    );
}

#[test]
fn sync_messages_are_checked() {
    let item = |k: &[u8]| SyncItem {
        key: k.to_vec(),
        version: 1,
        hash: [0; SYNC_HASH_LEN],
    };
    let good = SyncRequest::Reconcile {
        table: SyncTable::Registry,
        ranges: vec![
            SyncRange {
                lower: vec![],
                upper: b"m".to_vec(),
                summary: RangeSummary::Fingerprint {
                    hash: [1; SYNC_HASH_LEN],
                    count: 10,
                },
            },
            SyncRange {
                lower: b"m".to_vec(),
                upper: vec![],
                summary: RangeSummary::Items(vec![item(b"m1"), item(b"z")]),
            },
        ],
    };
    assert_eq!(SyncRequest::from_bytes(&good.to_bytes()), Ok(good));

    let overlapping = SyncRequest::Reconcile {
        table: SyncTable::Registry,
        ranges: vec![
            SyncRange {
                lower: b"a".to_vec(),
                upper: b"m".to_vec(),
                summary: RangeSummary::Items(vec![]),
            },
            SyncRange {
                lower: b"c".to_vec(),
                upper: b"z".to_vec(),
                summary: RangeSummary::Items(vec![]),
            },
        ],
    };
    assert!(matches!(
        SyncRequest::from_bytes(&overlapping.to_bytes()),
        Err(SyncError::Invalid(_))
    ));

    let outside = SyncRequest::Reconcile {
        table: SyncTable::Registry,
        ranges: vec![SyncRange {
            lower: b"a".to_vec(),
            upper: b"m".to_vec(),
            summary: RangeSummary::Items(vec![item(b"x")]),
        }],
    };
    let err = SyncRequest::from_bytes(&outside.to_bytes()).expect_err("outside");
    assert!(err.to_string().contains("outside its range"), "{err}");

    let unsorted = SyncRequest::Reconcile {
        table: SyncTable::Registry,
        ranges: vec![SyncRange {
            lower: vec![],
            upper: vec![],
            summary: RangeSummary::Items(vec![item(b"b"), item(b"a")]),
        }],
    };
    assert!(SyncRequest::from_bytes(&unsorted.to_bytes()).is_err());

    let fetch = SyncRequest::Fetch {
        table: SyncTable::Pauses,
        keys: vec![vec![1]; MAX_SYNC_FETCH_KEYS + 1],
    };
    assert!(matches!(
        SyncRequest::from_bytes(&fetch.to_bytes()),
        Err(SyncError::Invalid(ValidationError::TooMany { .. }))
    ));

    let records = SyncResponse::Records(envelopes());
    assert_eq!(SyncResponse::from_bytes(&records.to_bytes()), Ok(records));
    assert!(matches!(
        SyncResponse::from_bytes(&vec![0u8; MAX_SYNC_MESSAGE_LEN + 1]),
        Err(SyncError::TooLarge { .. })
    ));
}

#[test]
fn floods_of_tiny_sync_entries_are_refused_before_decoding() {
    // 2 MiB of empty keys: 1M entries of 2 bytes each on the wire.
    let mut fetch = vec![0x08, 0x01];
    for _ in 0..(MAX_SYNC_FETCH_KEYS + 1) {
        fetch.extend_from_slice(&[0x12, 0x00]);
    }
    let mut wire = vec![0x12];
    let mut len = fetch.len();
    while len >= 0x80 {
        wire.push((len as u8) | 0x80);
        len >>= 7;
    }
    wire.push(len as u8);
    wire.extend_from_slice(&fetch);
    let err = SyncRequest::from_bytes(&wire).expect_err("too many keys");
    assert!(
        matches!(err, SyncError::Invalid(ValidationError::TooMany { .. })),
        "{err}"
    );
    // Truncated input is malformed, not a panic.
    assert!(matches!(
        SyncRequest::from_bytes(&[0x12, 0x05, 0x01]),
        Err(SyncError::Malformed(_))
    ));
}
