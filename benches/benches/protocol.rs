//! Micro-benchmarks of the signed envelope: seal, decode-and-verify, and open.

use std::hint::black_box;
use std::time::Duration;

use agentnet_protocol::{
    AgentCard, Capability, Keypair, Signed, SignedEnvelope, Timestamp, ValidationContext,
};
use criterion::{Criterion, criterion_group, criterion_main};

fn card(agent: &Keypair, host: &Keypair, now: Timestamp) -> AgentCard {
    AgentCard {
        did: agent.did(),
        name: "summariser".into(),
        description: "Summarises long documents into a few paragraphs.".into(),
        capabilities: (0..4)
            .map(|i| Capability {
                name: format!("summarise.v{i}"),
                description: "Summarise a document, keeping names and figures.".into(),
                tags: vec!["text".into(), "summary".into()],
                version: "1.0".into(),
                price: None,
            })
            .collect(),
        endpoints: vec![],
        host: host.peer_id(),
        seq: 1,
        issued_at: now,
        expires_at: now.saturating_add(Duration::from_secs(86_400)),
        credentials: vec![],
    }
}

fn envelope(c: &mut Criterion) {
    let agent = Keypair::from_seed(&[1; 32]);
    let host = Keypair::from_seed(&[2; 32]);
    let now = Timestamp::from_millis(1_700_000_000_000);
    let ctx = ValidationContext::at(now);
    let card = card(&agent, &host, now);
    let wire = match Signed::seal(&agent, card.clone()) {
        Ok(signed) => signed.envelope().to_bytes(),
        Err(e) => panic!("benchmark card is invalid: {e}"),
    };

    c.bench_function("card/seal", |b| {
        b.iter(|| Signed::seal(&agent, black_box(card.clone())))
    });
    c.bench_function("card/verify", |b| {
        b.iter(|| SignedEnvelope::from_bytes(black_box(&wire)))
    });
    c.bench_function("card/verify_and_open", |b| {
        b.iter(|| Signed::<AgentCard>::from_bytes(black_box(&wire), &ctx))
    });
}

criterion_group!(benches, envelope);
criterion_main!(benches);
