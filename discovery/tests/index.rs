//! The capability index: dynamic updates, filters, pagination under change, bad queries.

use std::collections::HashSet;
use std::time::Duration;

use agentnet_discovery::{
    CapabilityIndex, Hit, IndexConfig, LexicalConfig, LexicalEmbedder, MAX_QUERY_ORGS, SearchError,
    SearchQuery, Signals,
};
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
    fill(&mut index, n);
    // The graph is built in the background; these tests exercise the settled HNSW index.
    index.wait_for_build();
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

/// An index that moves to HNSW above 64 capabilities and takes 8 candidates per list for a
/// first page, so that paging must deepen the ranking.
fn small_config_index(n: u32) -> CapabilityIndex {
    let mut config = IndexConfig::default();
    config.hnsw_threshold = Some(64);
    config.depth = 8;
    // Filters passing more than 16 capabilities take the filtered graph search.
    config.exact_filter_max = 16;
    let mut lexical = LexicalConfig::default();
    lexical.dim = 256;
    let mut index = CapabilityIndex::with_embedder(Box::new(LexicalEmbedder::new(lexical)), config);
    fill(&mut index, n);
    // The graph is built in the background; these tests exercise the settled HNSW index.
    index.wait_for_build();
    index
}

fn fill(index: &mut CapabilityIndex, n: u32) {
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
}

fn page_through(index: &CapabilityIndex, mut q: SearchQuery, signals: &dyn Signals) -> Vec<Hit> {
    let mut all = Vec::new();
    let mut seen = HashSet::new();
    for _ in 0..1000 {
        let page = index.search(&q, signals, NOW).expect("search");
        assert!(page.hits.len() <= q.k);
        for hit in &page.hits {
            assert!(seen.insert(hit.did.clone()), "{hit:?} repeated");
        }
        all.extend(page.hits);
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => return all,
        }
    }
    panic!("paging did not terminate");
}

#[test]
fn hnsw_backend_pages_through_every_match_beyond_the_first_depth() {
    let index = small_config_index(300);
    assert_eq!(index.backend(), "hnsw-usearch");
    let mut q = SearchQuery::new("translate text", 10);
    q.tags = vec!["audio".into()];
    let all = page_through(&index, q, &neutral);
    assert_eq!(all.len(), 100, "every audio capability, each once");
    // The best results come first: the first page holds translators.
    assert!(all[..5].iter().all(|h| {
        let n: u32 = h.capability["skill-".len()..].parse().expect("n");
        n.is_multiple_of(4)
    }));
    // The same query on an exact index agrees on the top 5.
    let mut exact_config = IndexConfig::default();
    exact_config.depth = 8;
    let mut lexical = LexicalConfig::default();
    lexical.dim = 256;
    let mut exact =
        CapabilityIndex::with_embedder(Box::new(LexicalEmbedder::new(lexical)), exact_config);
    fill(&mut exact, 300);
    assert_eq!(exact.backend(), "exact-sparse");
    let mut q = SearchQuery::new("translate text", 5);
    q.tags = vec!["audio".into()];
    let a: HashSet<Did> = exact
        .search(&q, &neutral, NOW)
        .expect("search")
        .hits
        .into_iter()
        .map(|h| h.did)
        .collect();
    let b: HashSet<Did> = index
        .search(&q, &neutral, NOW)
        .expect("search")
        .hits
        .into_iter()
        .map(|h| h.did)
        .collect();
    assert!(a.intersection(&b).count() >= 4, "{a:?} vs {b:?}");
}

#[test]
fn a_selective_filter_on_hnsw_still_finds_every_match() {
    let index = small_config_index(4000);
    assert_eq!(index.backend(), "hnsw-usearch");
    // Only three agents, none about translation, are trusted, and the query is about
    // translation: the filtered graph search must walk far from the query to fill the page
    // (usearch keeps expanding while its result list is short; the index falls back to an
    // exact scan of the matches if it still comes back short).
    let trusted: HashSet<Did> = [did(3), did(7), did(3999)].into_iter().collect();
    let trust = |d: &Did, _: &str| if trusted.contains(d) { 0.9 } else { 0.1 };
    let mut q = SearchQuery::new("translate text", 10);
    q.min_trust = Some(0.5);
    let page = index.search(&q, &trust, NOW).expect("search");
    let got: HashSet<Did> = page.hits.into_iter().map(|h| h.did).collect();
    assert_eq!(got, trusted);
    assert!(page.next_cursor.is_none());
}

struct Members(Vec<(Did, Did)>);

impl Signals for Members {
    fn trust(&self, _: &Did, _: &str) -> f64 {
        0.5
    }
    fn is_member(&self, agent: &Did, org: &Did) -> bool {
        self.0.iter().any(|(a, o)| a == agent && o == org)
    }
}

#[test]
fn org_filter_keeps_only_verified_members() {
    let index = index_of(40);
    let org_a = did(9001);
    let org_b = did(9002);
    let members = Members(vec![
        (did(0), org_a.clone()),
        (did(4), org_a.clone()),
        (did(8), org_b.clone()),
    ]);
    let mut q = SearchQuery::new("translate text", 10);
    q.orgs = vec![org_a.clone()];
    let got: HashSet<Did> = index
        .search(&q, &members, NOW)
        .expect("search")
        .hits
        .into_iter()
        .map(|h| h.did)
        .collect();
    assert_eq!(got, [did(0), did(4)].into_iter().collect());
    q.orgs = vec![org_a, org_b];
    assert_eq!(
        index.search(&q, &members, NOW).expect("search").hits.len(),
        3
    );
    q.orgs = (0..=MAX_QUERY_ORGS as u32).map(did).collect();
    assert_eq!(
        index.search(&q, &members, NOW).unwrap_err(),
        SearchError::TooManyOrgs(MAX_QUERY_ORGS + 1)
    );
}

#[test]
fn a_query_vector_of_the_wrong_dimension_is_refused() {
    let index = index_of(5);
    let q = SearchQuery::new("translate text", 5);
    assert!(matches!(
        index.search_embedded(&q, vec![0.5; 3], &neutral, NOW),
        Err(SearchError::Vector(_))
    ));
    let v = index.embed_query("translate text").expect("embed");
    assert_eq!(
        index
            .search_embedded(&q, v, &neutral, NOW)
            .expect("search")
            .hits
            .len(),
        5
    );
}

/// Lexical vectors carry the IDF of the moment they were indexed; two nodes that learnt the
/// same cards in different orders (one also saw cards come and go) must still rank alike.
#[test]
fn ranking_depends_on_the_cards_held_not_on_the_order_they_arrived() {
    let topics = [
        "translate text between languages",
        "summarise long documents",
        "classify images into categories",
        "transcribe speech to text",
        "detect objects in photographs",
        "answer questions about tables",
    ];
    let cards: Vec<AgentCard> = (0..300u32)
        .map(|i| {
            let topic = topics[i as usize % topics.len()];
            let extra = topics[(i as usize / 7) % topics.len()];
            card(
                i,
                &[(
                    &format!("skill-{i}"),
                    &format!(
                        "{topic}, also {extra}; model {} of family {}",
                        i % 13,
                        i % 5
                    ),
                    &[["nlp", "vision", "audio"][i as usize % 3]],
                )],
            )
        })
        .collect();
    let mut forward = CapabilityIndex::default();
    for c in &cards {
        forward.upsert(c).expect("indexed");
    }
    let mut shuffled = CapabilityIndex::default();
    for (i, c) in cards.iter().enumerate().rev() {
        shuffled.upsert(c).expect("indexed");
        if i % 50 == 0 {
            // Cards that come and go shift the statistics the stored vectors were built with.
            let passing = card(
                10_000 + i as u32,
                &[("tmp", "translate speech images", &[])],
            );
            shuffled.upsert(&passing).expect("indexed");
            shuffled.remove(&passing.did);
        }
    }
    let ranked = |index: &CapabilityIndex, text: &str| -> Vec<(Did, String, f64)> {
        let q = SearchQuery::new(text, 10);
        index
            .search(&q, &neutral, NOW)
            .expect("search")
            .hits
            .into_iter()
            .map(|h| (h.did, h.capability, h.score))
            .collect()
    };
    let texts = [
        "translate languages",
        "image categories",
        "speech transcription model",
        "family 3 documents",
        "objects",
        "questions tables model 7",
    ];
    // Stored vectors lag the statistics by at most 10% of the corpus: the top 10 agree
    // closely before a refresh...
    let (mut shared, mut total) = (0, 0);
    for text in texts {
        let a: HashSet<(Did, String)> = ranked(&forward, text)
            .into_iter()
            .map(|(d, c, _)| (d, c))
            .collect();
        let b = ranked(&shuffled, text);
        total += b.len();
        shared += b
            .iter()
            .filter(|(d, c, _)| a.contains(&(d.clone(), c.clone())))
            .count();
    }
    assert!(
        shared * 10 >= total * 8,
        "{shared} of {total} shared before a refresh"
    );
    // ...and exactly, scores and order, once both have refreshed.
    assert!(forward.refresh() && shuffled.refresh());
    assert!(!forward.refresh(), "nothing changed since");
    for text in texts {
        assert_eq!(ranked(&forward, text), ranked(&shuffled, text), "{text}");
    }
}

#[test]
fn a_refresh_run_away_from_the_index_matches_one_run_in_place() {
    let cards: Vec<AgentCard> = (0..200u32)
        .map(|i| {
            card(
                i,
                &[(
                    &format!("skill-{i}"),
                    &format!("translate text {} summarise documents {}", i % 7, i % 11),
                    &[],
                )],
            )
        })
        .collect();
    let mut config = IndexConfig::default();
    config.refresh_inline = false;
    let lexical = || Box::new(LexicalEmbedder::new(LexicalConfig::default()));
    let mut away = CapabilityIndex::with_embedder(lexical(), config);
    let mut inline = CapabilityIndex::with_embedder(lexical(), IndexConfig::default());
    for c in &cards {
        away.upsert(c).expect("indexed");
        inline.upsert(c).expect("indexed");
    }
    // No refresh on drift with refresh_inline off: the drift is there to see.
    assert!(away.drifted());
    assert_eq!(away.stale_capabilities(), 200);
    let job = away.refresh_job().expect("a job");
    // A card that arrives while the job runs is embedded under newer statistics, and
    // counts towards the next refresh.
    let late = card(500, &[("late", "translate speech", &[])]);
    away.upsert(&late).expect("indexed");
    inline.upsert(&late).expect("indexed");
    assert!(away.apply_refresh(job.run()));
    assert_eq!(away.stale_capabilities(), 1);
    assert!(!away.drifted());
    // Once both re-embed with nothing changing meanwhile, they rank exactly alike.
    let job = away.refresh_job().expect("a job");
    assert!(away.apply_refresh(job.run()));
    assert_eq!(away.stale_capabilities(), 0);
    assert!(away.refresh_job().is_none(), "nothing changed since");
    inline.refresh();
    for text in ["translate text 3", "summarise documents", "speech"] {
        let q = SearchQuery::new(text, 10);
        let hits = |index: &CapabilityIndex| -> Vec<(Did, f64)> {
            index
                .search(&q, &neutral, NOW)
                .expect("search")
                .hits
                .into_iter()
                .map(|h| (h.did, h.score))
                .collect()
        };
        assert_eq!(hits(&away), hits(&inline), "{text}");
    }
}
