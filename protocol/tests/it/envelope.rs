//! Signed envelopes: tampering, forgery, kind confusion and size limits.

use agentnet_protocol::*;

use crate::fixtures::*;

#[test]
fn every_kind_opens_with_its_own_type() {
    let ctx = ctx();
    let e = envelopes();
    assert_eq!(
        Signed::<AgentCard>::from_bytes(&e[0], &ctx)
            .expect("card")
            .message(),
        &card()
    );
    assert_eq!(
        Signed::<Tombstone>::from_bytes(&e[1], &ctx)
            .expect("tombstone")
            .message(),
        &tombstone()
    );
    assert_eq!(
        Signed::<Intent>::from_bytes(&e[2], &ctx)
            .expect("intent")
            .message(),
        &intent()
    );
    assert_eq!(
        Signed::<IntentResult>::from_bytes(&e[3], &ctx)
            .expect("result")
            .message(),
        &intent_result()
    );
    assert_eq!(
        Signed::<Receipt>::from_bytes(&e[4], &ctx)
            .expect("receipt")
            .message(),
        &receipt()
    );
    assert_eq!(
        Signed::<TrustAttestation>::from_bytes(&e[5], &ctx)
            .expect("attestation")
            .message(),
        &attestation()
    );
    assert_eq!(
        Signed::<PauseNotice>::from_bytes(&e[6], &ctx)
            .expect("pause")
            .message(),
        &pause()
    );
}

#[test]
fn any_flipped_payload_bit_breaks_the_signature() {
    let env = seal(&key(1), &card());
    let wire = env.to_bytes();
    let payload_start = wire
        .windows(env.payload().len())
        .position(|w| w == env.payload())
        .expect("payload is on the wire verbatim");
    for i in 0..env.payload().len() {
        for bit in [0x01u8, 0x80] {
            let mut bad = wire.clone();
            bad[payload_start + i] ^= bit;
            match SignedEnvelope::from_bytes(&bad) {
                Err(EnvelopeError::BadSignature { .. }) => {}
                other => panic!("flipping byte {i} gave {other:?}"),
            }
        }
    }
}

#[test]
fn a_signature_cannot_be_moved_to_another_kind() {
    // Sign a tombstone, then relabel the envelope as a card: the domain tag differs, so
    // the signature must fail even though the signer and payload are unchanged.
    let env = seal(&key(1), &tombstone());
    let forged = relabel(&env, Kind::AgentCard);
    assert!(matches!(
        SignedEnvelope::from_bytes(&forged),
        Err(EnvelopeError::BadSignature {
            kind: Kind::AgentCard,
            ..
        })
    ));
}

#[test]
fn a_card_signed_by_someone_else_is_refused() {
    // Key 2 signs a card that claims to be key 1's.
    let card = card();
    let payload = Message::encode(&card);
    let forged = raw_envelope(Kind::AgentCard as u32, &payload, &key(2));
    let env = SignedEnvelope::from_bytes(&forged).expect("the signature itself is valid");
    match env.open::<AgentCard>(&ctx()) {
        Err(OpenError::Invalid(ValidationError::SignerMismatch { field: "did", .. })) => {}
        other => panic!("expected a signer mismatch, got {other:?}"),
    }
    // Sealing refuses it up front.
    assert!(matches!(
        SignedEnvelope::seal(&key(2), &card),
        Err(ValidationError::SignerMismatch { .. })
    ));
}

#[test]
fn opening_as_the_wrong_type_is_refused() {
    let env = seal(&key(1), &tombstone());
    assert!(matches!(
        env.open::<AgentCard>(&ctx()),
        Err(OpenError::Envelope(EnvelopeError::WrongKind {
            expected: Kind::AgentCard,
            found: Kind::Tombstone
        }))
    ));
    assert!(matches!(
        SignedEnvelope::from_bytes_of_kind(&env.to_bytes(), Kind::Intent),
        Err(EnvelopeError::WrongKind { .. })
    ));
}

#[test]
fn oversized_input_is_refused_before_decoding() {
    let huge = vec![0u8; limits::MAX_ENVELOPE_LEN + 1];
    assert!(matches!(
        SignedEnvelope::from_bytes(&huge),
        Err(EnvelopeError::TooLarge { .. })
    ));
    // A card-sized limit applies when a card is expected.
    let big = vec![0u8; Kind::AgentCard.max_envelope_len() + 1];
    assert!(matches!(
        SignedEnvelope::from_bytes_of_kind(&big, Kind::AgentCard),
        Err(EnvelopeError::TooLarge { .. })
    ));
    // An oversized payload inside a well-formed envelope is refused by kind.
    let payload = vec![0u8; limits::MAX_TOMBSTONE_LEN + 1];
    let env = raw_envelope(Kind::Tombstone as u32, &payload, &key(1));
    assert!(matches!(
        SignedEnvelope::from_bytes(&env),
        Err(EnvelopeError::PayloadTooLarge {
            kind: Kind::Tombstone,
            ..
        })
    ));
}

#[test]
fn unknown_kinds_bad_signers_and_short_signatures_are_named() {
    let env = raw_envelope(99, b"", &key(1));
    assert_eq!(
        SignedEnvelope::from_bytes(&env),
        Err(EnvelopeError::UnknownKind(99))
    );

    let good = seal(&key(1), &tombstone()).to_bytes();
    let mut short_sig = good.clone();
    short_sig.truncate(good.len() - 1);
    // Truncating the last field byte leaves a malformed length-delimited field.
    assert!(SignedEnvelope::from_bytes(&short_sig).is_err());

    let wrong_signer = replace_signer(&good, "did:key:zNotADid");
    assert!(matches!(
        SignedEnvelope::from_bytes(&wrong_signer),
        Err(EnvelopeError::BadSigner(_))
    ));
}

#[test]
fn content_id_covers_kind_and_payload() {
    let a = seal(&key(1), &tombstone());
    let b = seal(&key(1), &tombstone());
    assert_eq!(a.content_id(), b.content_id(), "Ed25519 is deterministic");
    let mut other = tombstone();
    other.seq += 1;
    assert_ne!(a.content_id(), seal(&key(1), &other).content_id());
}

#[test]
fn intent_responses_round_trip_and_verify() {
    let result = seal(&key(1), &intent_result());
    let resp = IntentResponse::Result(result.clone());
    assert_eq!(IntentResponse::from_bytes(&resp.to_bytes()), Ok(resp));
    let rejected = IntentResponse::Rejected(Rejection {
        code: RejectionCode::RateLimited,
        message: "100 intents per minute".into(),
    });
    assert_eq!(
        IntentResponse::from_bytes(&rejected.to_bytes()),
        Ok(rejected)
    );
    // A response carrying a non-result envelope is refused.
    let wrong = IntentResponse::Result(seal(&key(1), &tombstone()));
    assert!(matches!(
        IntentResponse::from_bytes(&wrong.to_bytes()),
        Err(IntentResponseError::Envelope(
            EnvelopeError::WrongKind { .. }
        ))
    ));
}

/// Builds an envelope by hand with any kind number, signing the payload under that kind's
/// tag when the kind is known.
pub fn raw_envelope(kind: u32, payload: &[u8], signer: &Keypair) -> Vec<u8> {
    let signature = match Kind::ALL.into_iter().find(|k| *k as u32 == kind) {
        Some(k) => signer.sign(&signed_bytes(k, payload)).to_vec(),
        None => vec![0; 64],
    };
    encode_envelope(kind, payload, signer.did().as_str(), &signature)
}

fn relabel(env: &SignedEnvelope, kind: Kind) -> Vec<u8> {
    encode_envelope(
        kind as u32,
        env.payload(),
        env.signer().as_str(),
        env.signature(),
    )
}

fn replace_signer(wire: &[u8], signer: &str) -> Vec<u8> {
    let env = SignedEnvelope::from_bytes(wire).expect("valid");
    encode_envelope(env.kind() as u32, env.payload(), signer, env.signature())
}

/// Protobuf encoding of `Envelope` by hand (fields 1..4), independent of the crate's encoder.
pub fn encode_envelope(kind: u32, payload: &[u8], signer: &str, signature: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.push(0x08);
    varint(&mut out, u64::from(kind));
    for (tag, bytes) in [
        (0x12u8, payload),
        (0x1a, signer.as_bytes()),
        (0x22, signature),
    ] {
        out.push(tag);
        varint(&mut out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }
    out
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}
