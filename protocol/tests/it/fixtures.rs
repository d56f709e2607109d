//! Valid example messages of every kind, and a deterministic random source.

use std::time::Duration;

use agentnet_protocol::*;

/// The time at which every fixture is valid.
pub const NOW: Timestamp = Timestamp::from_millis(1_763_700_000_000);

pub fn ctx() -> ValidationContext {
    ValidationContext::at(NOW)
}

pub fn key(n: u8) -> Keypair {
    Keypair::from_seed(&[n; 32])
}

pub fn later(d: u64) -> Timestamp {
    NOW.saturating_add(Duration::from_secs(d))
}

pub fn card() -> AgentCard {
    AgentCard {
        did: key(1).did(),
        name: "Translator".into(),
        description: "Translates documents between European languages.\nKeeps formatting.".into(),
        capabilities: vec![
            Capability {
                name: "translate.text".into(),
                description: "Translate plain text.".into(),
                tags: vec!["nlp".into(), "translation".into()],
                version: "2.1".into(),
                price: Some(Price {
                    amount_micros: 1500,
                    currency: "USD".into(),
                }),
            },
            Capability {
                name: "detect-language".into(),
                description: String::new(),
                tags: vec![],
                version: String::new(),
                price: None,
            },
        ],
        endpoints: vec!["https://translator.example/agent".into()],
        host: key(100).peer_id(),
        seq: 3,
        issued_at: NOW,
        expires_at: later(86_400),
        credentials: vec![Credential {
            format: "application/vc+jwt".into(),
            data: b"eyJhbGciOiJFZERTQSJ9.e30.c2ln".to_vec(),
        }],
    }
}

pub fn tombstone() -> Tombstone {
    Tombstone {
        did: key(1).did(),
        seq: 4,
        issued_at: NOW,
        expires_at: later(86_400),
    }
}

pub fn intent() -> Intent {
    Intent {
        id: IntentId([7; 16]),
        from: key(2).did(),
        to: key(1).did(),
        capability: "translate.text".into(),
        input: br#"{"text":"Guten Tag","to":"en"}"#.to_vec(),
        max_cost: Some(Price {
            amount_micros: 5000,
            currency: "USD".into(),
        }),
        issued_at: NOW,
        deadline: later(30),
        nonce: 42,
    }
}

pub fn intent_result() -> IntentResult {
    IntentResult {
        intent_id: IntentId([7; 16]),
        from: key(1).did(),
        to: key(2).did(),
        status: IntentStatus::Completed,
        output: br#"{"text":"Good day"}"#.to_vec(),
        error: String::new(),
        cost: Some(Price {
            amount_micros: 1500,
            currency: "USD".into(),
        }),
        usage: Usage {
            input_tokens: 12,
            output_tokens: 5,
            compute_ms: 230,
        },
        completed_at: NOW,
    }
}

pub fn receipt() -> Receipt {
    Receipt {
        intent_id: IntentId([7; 16]),
        caller: key(2).did(),
        callee: key(1).did(),
        capability: "translate.text".into(),
        issuer: key(2).did(),
        outcome: Outcome::Success,
        latency_ms: 250,
        time_allowed_ms: 30_000,
        max_cost: Some(Price {
            amount_micros: 5000,
            currency: "USD".into(),
        }),
        cost: Some(Price {
            amount_micros: 1500,
            currency: "USD".into(),
        }),
        issued_at: NOW,
    }
}

pub fn attestation() -> TrustAttestation {
    TrustAttestation {
        issuer: key(2).did(),
        subject: key(1).did(),
        capability: Some("translate.text".into()),
        claim: Claim::Scores(TrustScores {
            reliability: 0.9,
            honesty: 1.0,
            competence: 0.75,
            timeliness: 0.5,
        }),
        receipts: vec![ContentId([3; 32]), ContentId([4; 32])],
        seq: 1,
        issued_at: NOW,
        expires_at: later(86_400),
    }
}

pub fn pause() -> PauseNotice {
    PauseNotice {
        issuer: key(50).did(),
        subjects: vec![key(1).did(), key(2).did()],
        action: PauseAction::Pause,
        reason: "budget exhausted".into(),
        seq: 1,
        issued_at: NOW,
        expires_at: later(86_400),
    }
}

/// Signs `message` with `signer`; panics if the fixture is invalid (a bug in the test).
pub fn seal<M: Message>(signer: &Keypair, message: &M) -> SignedEnvelope {
    SignedEnvelope::seal(signer, message).unwrap_or_else(|e| panic!("fixture invalid: {e}"))
}

/// One valid encoded envelope of every kind.
pub fn envelopes() -> Vec<Vec<u8>> {
    vec![
        seal(&key(1), &card()).to_bytes(),
        seal(&key(1), &tombstone()).to_bytes(),
        seal(&key(2), &intent()).to_bytes(),
        seal(&key(1), &intent_result()).to_bytes(),
        seal(&key(2), &receipt()).to_bytes(),
        seal(&key(2), &attestation()).to_bytes(),
        seal(&key(50), &pause()).to_bytes(),
    ]
}

/// SplitMix64: a small, fast, deterministic generator for the robustness test.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}
