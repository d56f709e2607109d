//! Ed25519 keys: the single key type of agents, nodes and gateways.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use libp2p_identity::PeerId;
use zeroize::Zeroizing;

use crate::did::Did;

/// Length of an Ed25519 signature in bytes.
pub const SIGNATURE_LEN: usize = 64;

/// Errors about key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The 32 bytes are not a canonical encoding of a point of large order on the Ed25519 curve.
    #[error("the 32 bytes are not a valid Ed25519 public key")]
    InvalidPublicKey,
    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed: {0}")]
    Rng(String),
}

/// An Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parses a raw 32-byte Ed25519 public key.
    ///
    /// Refuses bytes that are not a curve point, a non-canonical encoding of a point (so
    /// that one key has exactly one encoding, and one DID), and small-order points, for
    /// which no one holds a secret key.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| KeyError::InvalidPublicKey)?;
        if key.is_weak() || key.to_edwards().compress().to_bytes() != *bytes {
            return Err(KeyError::InvalidPublicKey);
        }
        Ok(PublicKey(key))
    }

    /// The raw 32-byte key.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The raw 32-byte key, borrowed.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    /// The `did:key` of this key.
    pub fn to_did(&self) -> Did {
        Did::from_public_key(self)
    }

    /// Verifies an Ed25519 signature over `message`.
    ///
    /// Uses strict verification (RFC 8032 with small-order and non-canonical
    /// points rejected), so a signature has one valid encoding only.
    pub fn verify(&self, message: &[u8], signature: &[u8; SIGNATURE_LEN]) -> bool {
        let signature = ed25519_dalek::Signature::from_bytes(signature);
        self.0.verify_strict(message, &signature).is_ok()
    }

    /// The libp2p PeerId of this key.
    pub fn to_peer_id(&self) -> PeerId {
        self.to_libp2p().to_peer_id()
    }

    /// The key as a libp2p public key.
    pub fn to_libp2p(&self) -> libp2p_identity::PublicKey {
        // The bytes came from a valid `VerifyingKey`, so this conversion cannot fail;
        // libp2p only re-checks the point.
        match libp2p_identity::ed25519::PublicKey::try_from_bytes(self.as_bytes()) {
            Ok(key) => key.into(),
            Err(_) => unreachable!("a valid ed25519-dalek key is a valid libp2p ed25519 key"),
        }
    }

    /// The Ed25519 key inlined in `peer_id`, if it holds one.
    pub fn from_peer_id(peer_id: &PeerId) -> Option<PublicKey> {
        let multihash = peer_id.as_ref();
        // PeerIds of keys up to 42 bytes use the identity multihash (code 0).
        if multihash.code() != 0 {
            return None;
        }
        let key = libp2p_identity::PublicKey::try_decode_protobuf(multihash.digest()).ok()?;
        let key = key.try_into_ed25519().ok()?;
        PublicKey::from_bytes(&key.to_bytes()).ok()
    }
}

impl PartialOrd for PublicKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PublicKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl Hash for PublicKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", hex::encode(self.as_bytes()))
    }
}

/// An Ed25519 key pair. The secret is wiped from memory when the value is dropped.
#[derive(Clone)]
pub struct Keypair(SigningKey);

impl Keypair {
    /// A fresh key pair from the operating system's random number generator.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|e| KeyError::Rng(e.to_string()))?;
        Ok(Keypair::from_seed(&seed))
    }

    /// The key pair with this 32-byte secret seed (RFC 8032's private key).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Keypair(SigningKey::from_bytes(seed))
    }

    /// The 32-byte secret seed. Handle with care: whoever has it can sign as this key.
    pub fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// The `did:key` of the public half.
    pub fn did(&self) -> Did {
        self.public().to_did()
    }

    /// Signs `message` with Ed25519.
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.0.sign(message).to_bytes()
    }

    /// The same key as a libp2p identity, for a node's swarm.
    pub fn to_libp2p(&self) -> libp2p_identity::Keypair {
        let mut seed = self.seed();
        match libp2p_identity::Keypair::ed25519_from_bytes(seed.as_mut()) {
            Ok(keypair) => keypair,
            Err(_) => unreachable!("any 32-byte seed is a valid libp2p ed25519 secret key"),
        }
    }

    /// The libp2p PeerId of this key.
    pub fn peer_id(&self) -> PeerId {
        self.public().to_peer_id()
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keypair")
            .field("public", &self.public())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_round_trips_through_did() {
        let keypair = Keypair::from_seed(&[7; 32]);
        let peer_id = keypair.peer_id();
        assert_eq!(peer_id, keypair.to_libp2p().public().to_peer_id());
        let did = Did::from_peer_id(&peer_id).expect("ed25519 peer ids inline their key");
        assert_eq!(did, keypair.did());
        assert_eq!(did.to_peer_id(), peer_id);
    }

    #[test]
    fn weak_and_non_canonical_keys_are_refused() {
        // The identity point, canonically encoded, has small order.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(PublicKey::from_bytes(&identity).is_err());
        // y = p + 1 encodes the same point as y = 1, non-canonically.
        let mut non_canonical = [0xffu8; 32];
        non_canonical[0] = 0xee;
        non_canonical[31] = 0x7f;
        assert!(PublicKey::from_bytes(&non_canonical).is_err());
        assert!(PublicKey::from_bytes(&Keypair::from_seed(&[3; 32]).public().to_bytes()).is_ok());
    }

    #[test]
    fn strict_verification_rejects_other_messages_and_keys() {
        let a = Keypair::from_seed(&[1; 32]);
        let b = Keypair::from_seed(&[2; 32]);
        let sig = a.sign(b"hello");
        assert!(a.public().verify(b"hello", &sig));
        assert!(!a.public().verify(b"hellp", &sig));
        assert!(!b.public().verify(b"hello", &sig));
    }
}
