//! Agreement with an independent implementation: `ssi`'s did:key method (spruceid).
//!
//! For 1,000 random keys, our DID must equal the one ssi generates, and ssi's resolution
//! of our DID must yield the same public key. ssi's did:key resolution does no I/O, so
//! a minimal executor (pollster) drives it.

use agentnet_protocol::{Did, Keypair};
use ssi::dids::{DID, DIDKey, DIDResolver};
use ssi::jwk::{Base64urlUInt, JWK, OctetParams, Params};

use crate::fixtures::Rng;

const KEYS: usize = 1_000;

fn ssi_did(public_key: &[u8; 32]) -> String {
    let jwk = JWK::from(Params::OKP(OctetParams {
        curve: "Ed25519".to_string(),
        public_key: Base64urlUInt(public_key.to_vec()),
        private_key: None,
    }));
    DIDKey::generate(&jwk)
        .expect("ssi generates a did:key")
        .to_string()
}

fn ssi_resolve_key(did: &str) -> [u8; 32] {
    let did = DID::new(did).expect("ssi parses the DID");
    let output = pollster::block_on(DIDKey.resolve(did)).expect("ssi resolves the DID");
    let document = output.document.into_document();
    let method = document
        .verification_method
        .first()
        .expect("a verification method");
    let multibase = method
        .properties
        .get("publicKeyMultibase")
        .and_then(|v| v.as_str())
        .expect("publicKeyMultibase");
    let bytes = bs58::decode(multibase.strip_prefix('z').expect("base58btc"))
        .into_vec()
        .expect("base58");
    assert_eq!(&bytes[..2], &[0xed, 0x01], "ed25519-pub multicodec");
    bytes[2..].try_into().expect("32 key bytes")
}

#[test]
fn ssi_agrees_on_a_thousand_random_keys() {
    let mut rng = Rng::new(0xd1d_c0de);
    for _ in 0..KEYS {
        let mut seed = [0u8; 32];
        rng.fill(&mut seed);
        let keypair = Keypair::from_seed(&seed);
        let ours = keypair.did();
        assert_eq!(
            ours.as_str(),
            ssi_did(keypair.public().as_bytes()),
            "DID for seed {}",
            hex::encode(seed)
        );
        assert_eq!(
            &ssi_resolve_key(ours.as_str()),
            keypair.public().as_bytes(),
            "key of {ours}"
        );
        let reparsed: Did = ssi_did(keypair.public().as_bytes())
            .parse()
            .expect("we parse ssi's DID");
        assert_eq!(reparsed, ours);
    }
}
