//! Capability search latency: a [`CapabilityIndex`] of N capabilities built from a JSONL
//! catalog, searched with real task queries. The HNSW-backed index and the exact-scan index
//! are built from the same cards and searched with the same queries in the same process.
//!
//! The catalog (such as `shared/data/gorilla_apibench/catalog.jsonl`) has about a thousand
//! entries; capability `i` takes entry `i mod len`, a variant suffix on its name, and a few
//! words drawn from the catalog's vocabulary appended to its description, so that every
//! capability's text differs.

use std::path::Path;
use std::time::{Duration, Instant};

use agentnet_discovery::eval::{CatalogEntry, Query};
use agentnet_discovery::{
    CapabilityIndex, Embedder, IndexConfig, Layout, LexicalConfig, LexicalEmbedder, SearchQuery,
};
use agentnet_protocol::{AgentCard, Capability, Did, Keypair, Timestamp};
use anyhow::{Result, bail};

use crate::retrieval::read_jsonl;

/// Latency percentiles of one configuration, in milliseconds.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

/// One point of the exact-versus-HNSW crossover sweep.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct CrossoverPoint {
    /// Capabilities indexed.
    pub n: usize,
    /// Search latency with the index's exact search (for lexical vectors, the inverted
    /// lists of `exact-sparse`).
    pub exact: Latency,
    /// Search latency with a scan of whole vectors (`exact`), the plain alternative.
    pub scan: Latency,
    /// Search latency with HNSW.
    pub hnsw: Latency,
}

/// What the benchmark measured.
#[derive(Debug, serde::Serialize)]
pub struct SearchReport {
    /// The embedder.
    pub embedder: String,
    /// Capabilities indexed.
    pub n: usize,
    /// Queries timed (each once, after a warm-up pass).
    pub queries: usize,
    /// Seed.
    pub seed: u64,
    /// The dense backend of the main index.
    pub backend: String,
    /// Search latency, one thread, excluding query embedding: page size 10, no filter.
    pub search: Latency,
    /// The same with a tag filter that about a third of the capabilities pass.
    pub filtered_search: Latency,
    /// Query embedding latency, reported apart from search.
    pub embed: Latency,
    /// The exact backend of the index below its threshold.
    pub exact_backend: String,
    /// Search latency of the exact index over the same cards (the baseline).
    pub exact_search: Latency,
    /// The filtered search on the exact index.
    pub exact_filtered_search: Latency,
    /// [`SearchReport::top10_agreement`] for the filtered search.
    pub filtered_top10_agreement: f64,
    /// Search latency of an index that scans whole vectors, over the same cards.
    pub scan_search: Latency,
    /// `exact_search.p50_ms / search.p50_ms`.
    pub speedup_p50: f64,
    /// Mean share of the exact index's first page (10) found on the HNSW index's first page.
    pub top10_agreement: f64,
    /// The same, counting a result as found if the HNSW page holds any capability derived
    /// from the same catalog entry (the corpus repeats each entry with a few extra words,
    /// so near-ties between such copies are common).
    pub top10_entry_agreement: f64,
    /// Seconds to upsert all N cards into the HNSW-backed index (one thread).
    pub build_s: f64,
    /// `n / build_s`.
    pub upserts_per_s: f64,
    /// Exact against HNSW at growing sizes, if asked for.
    pub crossover: Vec<CrossoverPoint>,
}

fn latency(mut samples: Vec<Duration>) -> Latency {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        ms(samples[i])
    };
    Latency {
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        mean_ms: samples.iter().copied().map(ms).sum::<f64>() / samples.len().max(1) as f64,
    }
}

/// A small deterministic generator (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const NOW: Timestamp = Timestamp::from_millis(1_763_700_000_000);

/// `n` single-capability cards derived from `catalog`.
fn cards(catalog: &[CatalogEntry], n: usize, seed: u64) -> Vec<AgentCard> {
    let vocabulary: Vec<&str> = catalog
        .iter()
        .flat_map(|e| e.description.split_whitespace())
        .filter(|w| w.len() > 3 && w.chars().all(char::is_alphabetic))
        .collect();
    let host = Keypair::from_seed(&[1; 32]).peer_id();
    let mut rng = Rng(seed);
    (0..n)
        .map(|i| {
            let entry = &catalog[i % catalog.len()];
            let extra: Vec<&str> = (0..3 + rng.below(4))
                .map(|_| vocabulary[rng.below(vocabulary.len())])
                .collect();
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&(i as u64).to_le_bytes());
            key[8..16].copy_from_slice(&seed.to_le_bytes());
            AgentCard {
                did: Keypair::from_seed(&key).did(),
                name: format!("{} v{}", entry.name, i / catalog.len()),
                description: String::new(),
                capabilities: vec![Capability {
                    name: format!("{}-{i}", entry.id),
                    description: format!("{} {}", entry.description, extra.join(" ")),
                    tags: entry.tags.clone(),
                    version: String::new(),
                    price: None,
                }],
                endpoints: vec![],
                host,
                seq: 1,
                issued_at: NOW,
                expires_at: NOW.saturating_add(Duration::from_secs(86_400)),
                credentials: vec![],
            }
        })
        .collect()
}

fn build(
    embedder: Box<dyn Embedder>,
    threshold: usize,
    cards: &[AgentCard],
) -> Result<(CapabilityIndex, f64)> {
    build_with(embedder, threshold, None, cards)
}

fn build_with(
    embedder: Box<dyn Embedder>,
    threshold: usize,
    layout: Option<Layout>,
    cards: &[AgentCard],
) -> Result<(CapabilityIndex, f64)> {
    let mut config = IndexConfig::default();
    config.hnsw_threshold = Some(threshold);
    config.layout = layout;
    let mut index = CapabilityIndex::with_embedder(embedder, config);
    let started = Instant::now();
    for card in cards {
        index.upsert(card)?;
    }
    // The graph is built in the background; the build time includes it.
    index.wait_for_build();
    Ok((index, started.elapsed().as_secs_f64()))
}

fn neutral(_: &Did, _: &str) -> f64 {
    0.5
}

/// Times one first-page search per query vector; returns the latencies and the pages'
/// capability names.
fn time_searches(
    index: &CapabilityIndex,
    queries: &[(String, Vec<f32>)],
    tag: Option<&str>,
) -> Result<(Latency, Vec<Vec<String>>)> {
    let mut samples = Vec::with_capacity(queries.len());
    let mut pages = Vec::with_capacity(queries.len());
    for (text, vector) in queries {
        let mut q = SearchQuery::new(text.clone(), 10);
        q.tags = tag.map(|t| vec![t.to_owned()]).unwrap_or_default();
        let started = Instant::now();
        let page = index.search_embedded(&q, vector.clone(), &neutral, NOW)?;
        samples.push(started.elapsed());
        pages.push(page.hits.into_iter().map(|h| h.capability).collect());
    }
    Ok((latency(samples), pages))
}

/// Which embedder to build the indexes with.
pub fn make_embedder(name: &str, model_dir: &Path) -> Result<Box<dyn Embedder>> {
    match name {
        "lexical" => Ok(Box::new(LexicalEmbedder::new(LexicalConfig::default()))),
        #[cfg(feature = "minilm")]
        "minilm" | "hybrid" => Ok(Box::new(agentnet_discovery::MinilmEmbedder::load(
            model_dir,
        )?)),
        #[cfg(not(feature = "minilm"))]
        "minilm" | "hybrid" => {
            let _ = model_dir;
            bail!("this build has no minilm embedder; rebuild with `--features minilm`")
        }
        other => bail!("unknown embedder {other:?}; choose lexical, minilm or hybrid"),
    }
}

/// Runs the benchmark.
#[allow(clippy::too_many_arguments)]
pub fn run(
    catalog: &Path,
    queries: &Path,
    embedder: &str,
    model_dir: &Path,
    n: usize,
    query_count: usize,
    seed: u64,
    sweep: &[usize],
) -> Result<SearchReport> {
    let catalog: Vec<CatalogEntry> = read_jsonl(catalog)?;
    let query_list: Vec<Query> = read_jsonl(queries)?;
    if catalog.is_empty() || query_list.is_empty() || n == 0 || query_count == 0 {
        bail!("need a non-empty catalog and query file, and n and queries of at least 1");
    }
    let all_cards = cards(&catalog, n, seed);
    let (index, build_s) = build(make_embedder(embedder, model_dir)?, 0, &all_cards)?;
    let (exact, _) = build(make_embedder(embedder, model_dir)?, usize::MAX, &all_cards)?;
    let (scan, _) = build_with(
        make_embedder(embedder, model_dir)?,
        usize::MAX,
        Some(Layout::Dense),
        &all_cards,
    )?;

    let texts: Vec<String> = (0..query_count)
        .map(|i| query_list[i % query_list.len()].query.clone())
        .collect();
    let mut embed_samples = Vec::with_capacity(texts.len());
    let mut embedded = Vec::with_capacity(texts.len());
    for text in texts {
        let started = Instant::now();
        let vector = index.embed_query(&text)?;
        embed_samples.push(started.elapsed());
        embedded.push((text, vector));
    }
    // The most common tag among the capabilities' middle tags (the task domain).
    let mut counts = std::collections::HashMap::<&str, usize>::new();
    for card in &all_cards {
        if let Some(tag) = card.capabilities[0].tags.get(1) {
            *counts.entry(tag.as_str()).or_default() += 1;
        }
    }
    let tag = counts
        .into_iter()
        .max_by_key(|(t, c)| (*c, *t))
        .map(|(t, _)| t.to_owned());

    // Warm up both indexes, then time them alternately query set by query set.
    time_searches(&index, &embedded[..embedded.len().min(50)], None)?;
    time_searches(&exact, &embedded[..embedded.len().min(50)], None)?;
    let (search, hnsw_pages) = time_searches(&index, &embedded, None)?;
    let (exact_search, exact_pages) = time_searches(&exact, &embedded, None)?;
    let (scan_search, _) = time_searches(&scan, &embedded, None)?;
    let (filtered_search, filtered_pages) = time_searches(&index, &embedded, tag.as_deref())?;
    let (exact_filtered_search, exact_filtered_pages) =
        time_searches(&exact, &embedded, tag.as_deref())?;
    // Capability names are "<catalog id>-<i>".
    let entry = |name: &String| {
        name.rsplit_once('-')
            .map_or(name.clone(), |(e, _)| e.to_owned())
    };
    let agreement = |hnsw_pages: &[Vec<String>],
                     exact_pages: &[Vec<String>],
                     key: &dyn Fn(&String) -> String| {
        hnsw_pages
            .iter()
            .zip(exact_pages)
            .map(|(h, e)| {
                let found: Vec<String> = h.iter().map(key).collect();
                if e.is_empty() {
                    1.0
                } else {
                    e.iter().filter(|x| found.contains(&key(x))).count() as f64 / e.len() as f64
                }
            })
            .sum::<f64>()
            / hnsw_pages.len().max(1) as f64
    };
    let top10_agreement = agreement(&hnsw_pages, &exact_pages, &|n: &String| n.clone());
    let top10_entry_agreement = agreement(&hnsw_pages, &exact_pages, &entry);
    let filtered_top10_agreement =
        agreement(&filtered_pages, &exact_filtered_pages, &|n: &String| {
            n.clone()
        });

    let mut crossover = Vec::new();
    for &size in sweep {
        let subset = &all_cards[..size.min(all_cards.len())];
        let (h, _) = build(make_embedder(embedder, model_dir)?, 0, subset)?;
        let (e, _) = build(make_embedder(embedder, model_dir)?, usize::MAX, subset)?;
        let (s, _) = build_with(
            make_embedder(embedder, model_dir)?,
            usize::MAX,
            Some(Layout::Dense),
            subset,
        )?;
        let some = &embedded[..embedded.len().min(300)];
        for warm in [&h, &e, &s] {
            time_searches(warm, &some[..some.len().min(30)], None)?;
        }
        crossover.push(CrossoverPoint {
            n: subset.len(),
            exact: time_searches(&e, some, None)?.0,
            scan: time_searches(&s, some, None)?.0,
            hnsw: time_searches(&h, some, None)?.0,
        });
    }

    Ok(SearchReport {
        embedder: index.embedder_id().to_owned(),
        n,
        queries: embedded.len(),
        seed,
        backend: index.backend().to_owned(),
        exact_backend: exact.backend().to_owned(),
        exact_filtered_search,
        filtered_top10_agreement,
        scan_search,
        speedup_p50: exact_search.p50_ms / search.p50_ms.max(1e-9),
        search,
        filtered_search,
        embed: latency(embed_samples),
        exact_search,
        top10_agreement,
        top10_entry_agreement,
        build_s,
        upserts_per_s: n as f64 / build_s.max(1e-9),
        crossover,
    })
}
