//! The did:key specification's published Ed25519 test vectors.
//!
//! Source: W3C CCG did:key Method, section "Test Vectors" → "Ed25519 / X25519"
//! (<https://w3c-ccg.github.io/did-method-key/#test-vectors>), and the repository file
//! `test-vectors/ed25519-x25519.json` of w3c-ccg/did-method-key (commit 31821ca). Seeds are
//! the vectors' private keys; the last row is the spec's "simple example" in section
//! "The did:key Format", which gives no private key.

use agentnet_protocol::{Did, DidError, Keypair, PublicKey};

const VECTORS: [(&str, &str, Option<&str>); 6] = [
    (
        "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp",
        "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29",
        Some("0000000000000000000000000000000000000000000000000000000000000000"),
    ),
    (
        "did:key:z6MkjchhfUsD6mmvni8mCdXHw216Xrm9bQe2mBH1P5RDjVJG",
        "4cb5abf6ad79fbf5abbccafcc269d85cd2651ed4b885b5869f241aedf0a5ba29",
        Some("0000000000000000000000000000000000000000000000000000000000000001"),
    ),
    (
        "did:key:z6MknGc3ocHs3zdPiJbnaaqDi58NGb4pk1Sp9WxWufuXSdxf",
        "7422b9887598068e32c4448a949adb290d0f4e35b9e01b0ee5f1a1e600fe2674",
        Some("0000000000000000000000000000000000000000000000000000000000000002"),
    ),
    (
        "did:key:z6MkvqoYXQfDDJRv8L4wKzxYeuKyVZBfi9Qo6Ro8MiLH3kDQ",
        "f381626e41e7027ea431bfe3009e94bdd25a746beec468948d6c3c7c5dc9a54b",
        Some("0000000000000000000000000000000000000000000000000000000000000003"),
    ),
    (
        "did:key:z6MkwYMhwTvsq376YBAcJHy3vyRWzBgn5vKfVqqDCgm7XVKU",
        "fde4fba030ad002f7c2f7d4c331f49d13fb0ec747eceebec634f1ff4cbca9def",
        Some("0000000000000000000000000000000000000000000000000000000000000005"),
    ),
    (
        "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK",
        "2e6fcce36701dc791488e0d0b1745cc1e33a4c1c9fcc41c63bd343dbbe0970e6",
        None,
    ),
];

fn bytes32(hex_str: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_str, &mut out).expect("vector hex");
    out
}

#[test]
fn spec_vectors_encode_and_parse() {
    for (did_str, pub_hex, seed_hex) in VECTORS {
        let key = PublicKey::from_bytes(&bytes32(pub_hex)).expect("vector key is a curve point");
        assert_eq!(key.to_did().as_str(), did_str, "encoding {pub_hex}");
        let parsed: Did = did_str.parse().expect("vector DID parses");
        assert_eq!(parsed.public_key().as_bytes(), &bytes32(pub_hex));
        assert_eq!(parsed.to_string(), did_str);
        if let Some(seed) = seed_hex {
            let keypair = Keypair::from_seed(&bytes32(seed));
            assert_eq!(keypair.did().as_str(), did_str, "seed {seed}");
        }
    }
}

#[test]
fn every_bad_case_has_its_own_error() {
    let good = VECTORS[0].0;
    let body = good.strip_prefix("did:key:z").expect("prefix");
    let check = |input: &str, expected: fn(&DidError) -> bool| {
        let err = input.parse::<Did>().expect_err(input);
        assert!(expected(&err), "{input:?} gave {err:?}");
        assert!(!err.to_string().is_empty());
    };
    check(&format!("did:web:z{body}"), |e| {
        matches!(e, DidError::WrongPrefix { .. })
    });
    check("", |e| matches!(e, DidError::WrongPrefix { .. }));
    check(&format!("did:key:m{body}"), |e| {
        matches!(e, DidError::WrongMultibase { found: Some('m') })
    });
    check("did:key:", |e| {
        matches!(e, DidError::WrongMultibase { found: None })
    });
    check(&format!("did:key:z{}0", &body[..20]), |e| {
        matches!(e, DidError::BadBase58 { .. })
    });
    check(&format!("did:key:z{}l", &body[..20]), |e| {
        matches!(e, DidError::BadBase58 { .. })
    });
    // secp256k1-pub (0xe7) is a real did:key codec, but not ours.
    let secp = format!(
        "did:key:z{}",
        bs58::encode([&[0xe7u8, 0x01][..], &[2u8; 33][..]].concat()).into_string()
    );
    check(&secp, |e| matches!(e, DidError::WrongCodec { found: 0xe7 }));
    let short = format!(
        "did:key:z{}",
        bs58::encode([&[0xedu8, 0x01][..], &[9u8; 31][..]].concat()).into_string()
    );
    check(&short, |e| matches!(e, DidError::WrongLength { found: 31 }));
    let long = format!(
        "did:key:z{}",
        bs58::encode([&[0xedu8, 0x01][..], &[9u8; 33][..]].concat()).into_string()
    );
    check(&long, |e| matches!(e, DidError::WrongLength { found: 33 }));
    check(&format!("did:key:z{}", "1".repeat(200)), |e| {
        matches!(e, DidError::TooLong { .. })
    });
    // A varint whose continuation bit promises a byte that never comes.
    let truncated = format!("did:key:z{}", bs58::encode([0xedu8]).into_string());
    check(&truncated, |e| matches!(e, DidError::BadMulticodec));
}

#[test]
fn non_curve_points_are_refused() {
    // y = 2 does not give a point on edwards25519.
    let mut not_a_point = [0u8; 32];
    not_a_point[0] = 2;
    assert!(PublicKey::from_bytes(&not_a_point).is_err());
    let did = format!(
        "did:key:z{}",
        bs58::encode([&[0xedu8, 0x01][..], &not_a_point[..]].concat()).into_string()
    );
    assert_eq!(
        did.parse::<Did>().expect_err("not a point"),
        DidError::InvalidKey
    );
}
