//! Micro-benchmarks of discovery: embedding, index upsert and search (exact scan).

use std::hint::black_box;
use std::time::Duration;

use agentnet_discovery::{CapabilityIndex, Embedder, LexicalConfig, LexicalEmbedder, SearchQuery};
use agentnet_protocol::{AgentCard, Capability, Did, Keypair, Timestamp};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

const NOW: Timestamp = Timestamp::from_millis(1_763_700_000_000);
const TOPICS: [&str; 8] = [
    "translate legal documents between German and English",
    "summarise scientific papers into short abstracts",
    "classify product images into catalogue categories",
    "transcribe meeting audio with speaker labels",
    "detect fraud in card transactions",
    "generate SQL queries from questions",
    "extract tables from scanned invoices",
    "answer questions about internal wiki pages",
];

fn card(n: u32, host: &Keypair) -> AgentCard {
    let mut seed = [3u8; 32];
    seed[..4].copy_from_slice(&n.to_le_bytes());
    let agent = Keypair::from_seed(&seed);
    AgentCard {
        did: agent.did(),
        name: format!("agent {n}"),
        description: String::new(),
        capabilities: vec![Capability {
            name: format!("skill-{n}"),
            description: format!("{} (variant {n})", TOPICS[n as usize % TOPICS.len()]),
            tags: vec![format!("tag{}", n % 5)],
            version: "1".into(),
            price: None,
        }],
        endpoints: vec![],
        host: host.peer_id(),
        seq: 1,
        issued_at: NOW,
        expires_at: NOW.saturating_add(Duration::from_secs(86_400)),
        credentials: vec![],
    }
}

fn discovery(c: &mut Criterion) {
    let host = Keypair::from_seed(&[9; 32]);
    let mut embedder = LexicalEmbedder::new(LexicalConfig::default());
    for t in TOPICS {
        embedder.add_document(t);
    }
    c.bench_function("lexical/embed_query", |b| {
        b.iter(|| {
            embedder.embed(black_box(
                "find an agent that can translate contracts into English",
            ))
        })
    });

    let mut group = c.benchmark_group("index");
    for n in [1_000u32, 10_000] {
        let mut index = CapabilityIndex::default();
        let cards: Vec<AgentCard> = (0..n).map(|i| card(i, &host)).collect();
        for card in &cards {
            index.upsert(card).unwrap_or_else(|e| panic!("{e}"));
        }
        group.bench_with_input(BenchmarkId::new("upsert", n), &n, |b, _| {
            let mut i = 0usize;
            b.iter(|| {
                i = (i + 1) % cards.len();
                index.upsert(&cards[i])
            })
        });
        let query = SearchQuery::new("translate a contract into English", 10);
        let trust = |_: &Did, _: &str| 0.5;
        group.bench_with_input(BenchmarkId::new("search", n), &n, |b, _| {
            b.iter(|| index.search(black_box(&query), &trust, NOW))
        });
    }
    group.finish();
}

criterion_group!(benches, discovery);
criterion_main!(benches);
