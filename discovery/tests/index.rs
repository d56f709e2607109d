//! The capability index: dynamic updates, filters, pagination under change, bad queries.

use std::collections::HashSet;
use std::time::Duration;

use agentnet_discovery::{CapabilityIndex, SearchError, SearchQuery};
use agentnet_protocol::{AgentCard, Capability, Did, Keypair, Price, Timestamp};

const NOW: Timestamp = Timestamp::from_millis(1_763_700_000_000);

fn did(n: u32) -> Did {
    let mut seed = [7u8; 32];
    seed[..4].copy_from_slice(&n.to_le_bytes());
    Keypair::from_seed(&seed).did()
}

fn card(n: u32, caps: &[(&str, &str, &[&str])]) -> AgentCard {
    AgentCard {
        did: did(n),
        name: format!("agent {n}"),
        description: String::new(),
        capabilities: caps
            .iter()
            .map(|(name, description, tags)| Capability {
                name: (*name).into(),
                description: (*description).into(),
                tags: tags.iter().map(|t| (*t).into()).collect(),
                version: String::new(),
                price: Some(Price {
                    amount_micros: 1_000,
                    currency: "USD".into(),
                }),
            })
            .collect(),
        endpoints: vec![],
        host: Keypair::from_seed(&[1; 32]).peer_id(),
        seq: 1,
        issued_at: NOW,
        expires_at: NOW.saturating_add(Duration::from_secs(86_400)),
        credentials: vec![],
    }
}

fn neutral(_: &Did, _: &str) -> f64 {
    0.5
}

fn index_of(n: u32) -> CapabilityIndex {
    let mut index = CapabilityIndex::default();
    for i in 0..n {
        let topic = [
            "translate text",
            "summarise documents",
            "classify images",
            "transcribe speech",
        ][i as usize % 4];
        let tag = ["nlp", "vision", "audio"][i as usize % 3];
        index
            .upsert(&card(
                i,
                &[(
                    &format!("skill-{i}"),
                    &format!("{topic} quickly and well, variant {i}"),
                    &[tag],
                )],
            ))
            .expect("indexed");
    }
    index
}

#[test]
fn changes_are_visible_to_the_next_search() {
    let mut index = index_of(20);
    let q = SearchQuery::new("legal contract review", 5);
    assert!(
        !index
            .search(&q, &neutral, NOW)
            .expect("search")
            .hits
            .iter()
            .any(|h| h.did == did(999))
    );
    index
        .upsert(&card(
            999,
            &[(
                "contract-review",
                "Review legal contracts for risky clauses",
                &["legal"],
            )],
        ))
        .expect("indexed");
    let top = index.search(&q, &neutral, NOW).expect("search");
    assert_eq!(top.hits[0].did, did(999));
    assert_eq!(top.hits[0].capability, "contract-review");
    let b = top.hits[0].breakdown;
    assert!(b.similarity > 0.0 && b.dense > 0.0 && b.lexical_rank == Some(1));
    assert_eq!(b.trust, 0.5);
    // Replacing the card replaces its capabilities; removing it removes them.
    index
        .upsert(&card(
            999,
            &[("poetry", "Write poems about the sea", &["creative"])],
        ))
        .expect("indexed");
    let top = index.search(&q, &neutral, NOW).expect("search");
    assert!(!top.hits.iter().any(|h| h.capability == "contract-review"));
    assert_eq!(index.remove(&did(999)), 1);
    assert_eq!(index.remove(&did(999)), 0);
    assert_eq!(index.len(), 20);
}

#[test]
fn filters_never_leave_a_page_short() {
    let index = index_of(60);
    let mut q = SearchQuery::new("translate text", 10);
    q.tags = vec!["audio".into()];
    let page = index.search(&q, &neutral, NOW).expect("search");
    assert_eq!(
        page.hits.len(),
        10,
        "20 audio capabilities exist, so the page is full"
    );
    assert!(page.hits.iter().all(|h| h.did != did(0)));
    // min_trust and exclusions.
    let trusted: HashSet<Did> = (0..60).filter(|i| i % 2 == 0).map(did).collect();
    let trust = |d: &Did, _: &str| if trusted.contains(d) { 0.9 } else { 0.1 };
    let mut q = SearchQuery::new("summarise documents", 10);
    q.min_trust = Some(0.5);
    q.exclude = [did(2), did(4)].into_iter().collect();
    let page = index.search(&q, &trust, NOW).expect("search");
    assert_eq!(page.hits.len(), 10);
    assert!(
        page.hits
            .iter()
            .all(|h| trusted.contains(&h.did) && h.did != did(2) && h.did != did(4))
    );
    assert!(page.hits.iter().all(|h| h.breakdown.trust == 0.9));
}

#[test]
fn paging_under_change_never_repeats_a_result() {
    let mut index = index_of(50);
    let mut q = SearchQuery::new("classify images", 7);
    let mut seen = HashSet::new();
    let mut pages = 0;
    loop {
        let page = index.search(&q, &neutral, NOW).expect("search");
        for hit in &page.hits {
            assert!(
                seen.insert((hit.did.clone(), hit.capability.clone())),
                "{hit:?} repeated"
            );
        }
        pages += 1;
        // Change the index between pages: new cards, a removal and a re-upsert.
        index
            .upsert(&card(
                1000 + pages,
                &[("image-classifier", "classify images very well", &["vision"])],
            ))
            .expect("indexed");
        index.remove(&did(pages * 3));
        index
            .upsert(&card(
                pages * 5,
                &[("image-tagger", "classify images and tag them", &["vision"])],
            ))
            .expect("indexed");
        match page.next_cursor {
            Some(cursor) => q.cursor = Some(cursor),
            None => break,
        }
        assert!(pages < 50, "paging terminates");
    }
    assert!(
        seen.len() >= 30,
        "{} results over {pages} pages",
        seen.len()
    );
}

#[test]
fn bad_queries_get_typed_errors() {
    let index = index_of(5);
    let search = |q: SearchQuery| index.search(&q, &neutral, NOW);
    assert_eq!(
        search(SearchQuery::new("   ", 5)),
        Err(SearchError::EmptyQuery)
    );
    assert!(matches!(
        search(SearchQuery::new("x".repeat(5000), 5)),
        Err(SearchError::QueryTooLong { .. })
    ));
    assert_eq!(
        search(SearchQuery::new("images", 0)),
        Err(SearchError::BadPageSize(0))
    );
    assert_eq!(
        search(SearchQuery::new("images", 1000)),
        Err(SearchError::BadPageSize(1000))
    );
    let mut q = SearchQuery::new("images", 5);
    q.min_trust = Some(f64::NAN);
    assert!(matches!(search(q), Err(SearchError::BadMinTrust(_))));
    let mut q = SearchQuery::new("images", 5);
    q.tags = vec![String::new()];
    assert!(matches!(search(q), Err(SearchError::BadTags(_))));
    let mut q = SearchQuery::new("images", 5);
    q.cursor = Some("not a cursor".into());
    assert_eq!(search(q), Err(SearchError::BadCursor));
    let mut q = SearchQuery::new("images", 5);
    q.cursor = Some(format!("{:016x}{:08x}", 12345u64, 5));
    assert_eq!(search(q), Err(SearchError::CursorExpired));
    assert_eq!(
        search(SearchQuery::new("the of and", 5))
            .map(|p| p.hits.len())
            .map_err(|e| e.to_string()),
        Err("cannot embed the query: nothing to embed: the text has no words".into())
    );
}

#[test]
fn a_card_that_cannot_be_indexed_leaves_the_old_one_in_place() {
    let mut index = index_of(4);
    let before = index.len();
    let mut bad = card(1, &[("translate", "translate text", &["nlp"])]);
    bad.name = "the".into();
    bad.capabilities.push(Capability {
        name: "a".into(),
        description: "of the and".into(),
        tags: vec![],
        version: String::new(),
        price: None,
    });
    assert!(matches!(index.upsert(&bad), Err(SearchError::Embed(_))));
    assert_eq!(index.len(), before, "nothing was half-indexed");
    let page = index
        .search(&SearchQuery::new("summarise documents", 10), &neutral, NOW)
        .expect("search");
    assert!(
        page.hits.iter().any(|h| h.did == did(1)),
        "the old card of agent 1 is still there"
    );
}

#[test]
fn bad_weights_are_refused_and_odd_trust_is_contained() {
    let index = index_of(8);
    let mut q = SearchQuery::new("classify images", 5);
    let mut w = agentnet_discovery::RankWeights::default();
    w.trust = f64::NAN;
    q.weights = Some(w);
    assert_eq!(
        index.search(&q, &neutral, NOW),
        Err(SearchError::BadWeights)
    );
    let nan_trust = |_: &Did, _: &str| f64::NAN;
    let page = index
        .search(&SearchQuery::new("classify images", 5), &nan_trust, NOW)
        .expect("search");
    assert!(
        page.hits
            .iter()
            .all(|h| h.breakdown.trust == 0.0 && h.score.is_finite())
    );
}
