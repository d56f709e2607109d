//! Membership credentials (`specs/gateway-api.md#agents`).
//!
//! The gateway issues each of its organisation's agents a W3C verifiable credential (data
//! model 1.1) whose subject is the agent's DID and whose issuer is the gateway's DID. It is
//! signed with [ssi] as a VC-JWT (JOSE, `EdDSA`, `kid` = the gateway's `did:key` verification
//! method) and handed out enveloped: the credential's JSON with a `JwtProof2020` proof that
//! carries the JWT. An agent attaches that JSON to its card as a credential of format
//! [`FORMAT`]; nodes read its `issuer` to learn which gateway's pause notices the agent obeys
//! (`specs/intents.md#pause-notices`), and anyone can check the JWT against the issuer's
//! `did:key`.

use agentnet_protocol::{Did, Keypair};
use ssi::claims::jwt::{self, ExpirationTime, NumericDate};
use ssi::claims::vc::v1::encode_jwt_vc_claims;
use ssi::dids::DIDKey;
use ssi::jwk::{Algorithm, Base64urlUInt, JWK, OctetParams, Params};
use uuid::Uuid;

/// The media type agents give the credential in their cards.
pub const FORMAT: &str = "application/vc+ld+json";

/// How long a membership credential is valid.
pub const LIFETIME_DAYS: i64 = 365;

/// Why a credential could not be issued.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The key could not be used.
    #[error("key: {0}")]
    Key(String),
    /// Signing failed.
    #[error("signing: {0}")]
    Sign(String),
}

/// The gateway's key as a JWK with its `did:key` verification method as `kid`.
fn jwk(key: &Keypair) -> Result<JWK, CredentialError> {
    let seed = key.seed();
    let mut jwk = JWK::from(Params::OKP(OctetParams {
        curve: "Ed25519".to_string(),
        public_key: Base64urlUInt(key.public().to_bytes().to_vec()),
        private_key: Some(Base64urlUInt(seed.to_vec())),
    }));
    let did = DIDKey::generate(&jwk).map_err(|e| CredentialError::Key(e.to_string()))?;
    if did.as_str() != key.did().as_str() {
        return Err(CredentialError::Key(format!(
            "ssi derives {did} from the gateway's key, not {}",
            key.did()
        )));
    }
    jwk.key_id = Some(
        DIDKey::generate_url(&jwk)
            .map_err(|e| CredentialError::Key(e.to_string()))?
            .to_string(),
    );
    Ok(jwk)
}

fn rfc3339(secs: i64) -> String {
    ssi::claims::chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(ssi::claims::chrono::SecondsFormat::Secs, true)
}

/// Issues `subject` a membership credential of organisation `org` (`org_name`), signed by
/// `key`. Returns the enveloped credential's JSON.
pub fn membership(
    key: &Keypair,
    subject: &Did,
    org: Uuid,
    org_name: &str,
) -> Result<serde_json::Value, CredentialError> {
    let jwk = jwk(key)?;
    let now = crate::audit::now_ms() / 1000;
    let expires = now + LIFETIME_DAYS * 24 * 3600;
    let id = format!("urn:uuid:{}", Uuid::new_v4());
    let mut vc = serde_json::json!({
        "@context": ["https://www.w3.org/2018/credentials/v1"],
        "id": id,
        "type": ["VerifiableCredential", "AgentnetMembershipCredential"],
        "issuer": key.did().as_str(),
        "issuanceDate": rfc3339(now),
        "expirationDate": rfc3339(expires),
        "credentialSubject": {
            "id": subject.as_str(),
            "memberOf": { "id": format!("urn:uuid:{org}"), "name": org_name },
        },
    });
    let mut claims = encode_jwt_vc_claims(&vc).map_err(|e| CredentialError::Sign(e.to_string()))?;
    claims.set(ExpirationTime(
        NumericDate::try_from(expires).map_err(|e| CredentialError::Sign(e.to_string()))?,
    ));
    let token = jwt::encode_sign(Algorithm::EdDSA, &claims, &jwk)
        .map_err(|e| CredentialError::Sign(e.to_string()))?;
    vc["proof"] = serde_json::json!({ "type": "JwtProof2020", "jwt": token });
    Ok(vc)
}
