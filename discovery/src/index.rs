//! The capability index: upsert and remove cards, search with fusion, filters, ranking and
//! cursors (`specs/discovery.md#capability-index`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use agentnet_protocol::{AgentCard, Did, Timestamp};

use crate::bm25::{Bm25, Bm25Config};
use crate::embed::{EmbedError, Embedder, LexicalConfig, LexicalEmbedder};
use crate::hnsw::{AdaptiveIndex, HnswConfig, Phase, Source};
use crate::vector::{Layout, VectorError, VectorIndex};

/// The longest query text.
pub const MAX_QUERY_LEN: usize = 4096;
/// The most results on one page.
pub const MAX_PAGE_SIZE: usize = 100;
/// The most results one query can page through.
pub const MAX_RESULTS: usize = 1000;
/// The most tag filters in one query.
pub const MAX_QUERY_TAGS: usize = 16;
/// The most organisations in one query's membership filter.
pub const MAX_QUERY_ORGS: usize = 16;
/// Result snapshots kept for cursors; the oldest is dropped first.
pub const MAX_SNAPSHOTS: usize = 256;
/// Reciprocal rank fusion constant.
pub const RRF_K: f64 = 60.0;

/// Weights of the ranking composite. They need not sum to 1; the total is divided by their sum.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct RankWeights {
    /// Fused similarity. Default 0.6.
    pub similarity: f64,
    /// Trust in the agent for the capability. Default 0.25.
    pub trust: f64,
    /// Freshness of the card. Default 0.1.
    pub freshness: f64,
    /// Cheapness. Default 0.05.
    pub price: f64,
}

impl Default for RankWeights {
    fn default() -> Self {
        RankWeights {
            similarity: 0.6,
            trust: 0.25,
            freshness: 0.1,
            price: 0.05,
        }
    }
}

/// A search.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct SearchQuery {
    /// What is wanted, in words.
    pub text: String,
    /// Page size, 1 to [`MAX_PAGE_SIZE`].
    pub k: usize,
    /// Every tag a result must carry.
    pub tags: Vec<String>,
    /// The least trust a result's agent must have, in [0, 1].
    pub min_trust: Option<f64>,
    /// Agents never to return (paused or revoked).
    pub exclude: HashSet<Did>,
    /// If not empty, only agents with a verified membership credential from one of these
    /// organisations ([`Signals::is_member`]).
    pub orgs: Vec<Did>,
    /// Ranking weights; the defaults if `None`.
    pub weights: Option<RankWeights>,
    /// The cursor of the previous page.
    pub cursor: Option<String>,
}

impl SearchQuery {
    /// A first-page query for `text` with page size `k`.
    pub fn new(text: impl Into<String>, k: usize) -> Self {
        SearchQuery {
            text: text.into(),
            k,
            ..SearchQuery::default()
        }
    }
}

/// What the node knows about agents besides their cards: trust and verified memberships.
///
/// Any `Fn(&Did, &str) -> f64` is a `Signals` that gives trust and knows no memberships.
pub trait Signals {
    /// The node's trust in `did` for `capability`, in [0, 1] (other values count as 0).
    fn trust(&self, did: &Did, capability: &str) -> f64;

    /// Whether `did` holds a verified membership credential issued by `org`.
    fn is_member(&self, _did: &Did, _org: &Did) -> bool {
        false
    }
}

impl<F: Fn(&Did, &str) -> f64> Signals for F {
    fn trust(&self, did: &Did, capability: &str) -> f64 {
        self(did, capability)
    }
}

/// Parameters of a [`CapabilityIndex`].
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct IndexConfig {
    /// Above this many capabilities the dense index moves from an exact search to HNSW.
    /// `None`, the default, takes the measured crossover for the embedder's vectors:
    /// [`DEFAULT_SPARSE_HNSW_THRESHOLD`] for sparse ones (the lexical embedder's),
    /// [`DEFAULT_HNSW_THRESHOLD`] for dense ones.
    pub hnsw_threshold: Option<usize>,
    /// How the exact search below the threshold treats vectors. `None`, the default, takes
    /// the embedder's [`Embedder::layout`].
    pub layout: Option<Layout>,
    /// HNSW parameters.
    pub hnsw: HnswConfig,
    /// Candidates taken from each list (dense, BM25) for the first page; later pages
    /// deepen the search as needed, up to [`MAX_RESULTS`]. Default 32.
    pub depth: usize,
    /// On HNSW, a filter that passes at most this many capabilities is served by scoring
    /// exactly those it passes; a broader one by a graph search that skips what the filter
    /// refuses. Default 16,384.
    pub exact_filter_max: usize,
    /// Whether an upsert or removal that brings the drift to [`REFRESH_DRIFT`] re-embeds the
    /// stored vectors there and then. Default true. An owner that re-embeds away from the
    /// index instead ([`CapabilityIndex::refresh_job`], as the node does, so that no
    /// upsert waits on a refresh) sets it false and watches [`CapabilityIndex::drifted`].
    pub refresh_inline: bool,
}

/// The share of changed capabilities (added or removed since the last refresh, over those
/// held) at which an exact-scan index re-embeds its stored lexical vectors.
pub const REFRESH_DRIFT: f64 = 0.1;

/// The most capabilities an index re-embeds on drift ([`REFRESH_DRIFT`]); beyond this (an
/// index kept an exact scan on purpose) statistics move slowly and a refresh costs too much.
pub const MAX_REFRESHED: usize = 4096;

/// The crossover between the exact scan of dense vectors and HNSW
/// (`specs/discovery.md#dense-index`).
pub const DEFAULT_HNSW_THRESHOLD: usize = 1024;

/// The crossover between the exact search of sparse vectors through inverted lists and HNSW
/// (`specs/discovery.md#dense-index`).
pub const DEFAULT_SPARSE_HNSW_THRESHOLD: usize = 16_384;

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            hnsw_threshold: None,
            layout: None,
            hnsw: HnswConfig::default(),
            depth: 32,
            exact_filter_max: 16_384,
            refresh_inline: true,
        }
    }
}

/// A re-embedding of an index's stored vectors, to run away from the index
/// ([`CapabilityIndex::refresh_job`]).
pub struct RefreshJob {
    embedder: Box<dyn Embedder>,
    texts: Vec<(u32, String)>,
    changes_at: u64,
}

impl std::fmt::Debug for RefreshJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshJob")
            .field("texts", &self.texts.len())
            .finish_non_exhaustive()
    }
}

impl RefreshJob {
    /// Embeds every text (a text that fails keeps its old vector, as in a refresh).
    pub fn run(self) -> Refreshed {
        let vectors = self
            .texts
            .into_iter()
            .filter_map(|(id, text)| {
                let vector = self.embedder.embed(&text).ok()?;
                Some((id, text, vector))
            })
            .collect();
        Refreshed {
            vectors,
            changes_at: self.changes_at,
        }
    }
}

/// The vectors a [`RefreshJob`] computed, for [`CapabilityIndex::apply_refresh`].
#[derive(Debug)]
pub struct Refreshed {
    vectors: Vec<(u32, String, Vec<f32>)>,
    changes_at: u64,
}

/// Why each result ranks where it does. Every component is in [0, 1].
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Breakdown {
    /// Fused similarity: reciprocal rank fusion of the dense and BM25 ranks, scaled to [0, 1].
    pub similarity: f64,
    /// Cosine similarity of the dense vectors.
    pub dense: f64,
    /// Rank in the dense list (1-based), if among the candidates taken from it.
    pub dense_rank: Option<usize>,
    /// Rank in the BM25 list (1-based), if among the candidates taken from it.
    pub lexical_rank: Option<usize>,
    /// Trust in the agent for this capability.
    pub trust: f64,
    /// `0.5^(age in days / 30)` of the card.
    pub freshness: f64,
    /// `1 / (1 + price in whole units)`; 1 for unpriced capabilities.
    pub price: f64,
}

/// One result.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Hit {
    /// The agent.
    pub did: Did,
    /// Its name.
    pub name: String,
    /// The capability.
    pub capability: String,
    /// The weighted composite score.
    pub score: f64,
    /// Its components.
    pub breakdown: Breakdown,
}

/// A page of results.
#[derive(Clone, Debug, PartialEq)]
pub struct Page {
    /// The results, best first.
    pub hits: Vec<Hit>,
    /// Pass this back for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Why a search was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SearchError {
    /// The query text is empty.
    #[error("the query text is empty")]
    EmptyQuery,
    /// The query text is too long.
    #[error("the query text is {len} bytes; the limit is {MAX_QUERY_LEN}")]
    QueryTooLong {
        /// Its length.
        len: usize,
    },
    /// The page size is out of range.
    #[error("k must be between 1 and {MAX_PAGE_SIZE}, got {0}")]
    BadPageSize(usize),
    /// Too many tags, or a malformed one.
    #[error("bad tag filter: {0}")]
    BadTags(String),
    /// Too many organisations in the membership filter.
    #[error("at most {MAX_QUERY_ORGS} organisations may be given, got {0}")]
    TooManyOrgs(usize),
    /// `min_trust` is not in [0, 1].
    #[error("min_trust must be a number in [0, 1], got {0}")]
    BadMinTrust(f64),
    /// Ranking weights must be finite, non-negative and not all zero.
    #[error("ranking weights must be finite, non-negative and not all zero")]
    BadWeights,
    /// The cursor was not issued by this index.
    #[error("the cursor is malformed")]
    BadCursor,
    /// The cursor's snapshot is gone; start again from the first page.
    #[error("the cursor has expired; repeat the search without a cursor")]
    CursorExpired,
    /// The query text could not be embedded.
    #[error("cannot embed the query: {0}")]
    Embed(#[from] EmbedError),
    /// A vector had the wrong dimension (a bug: the index embeds everything itself).
    #[error(transparent)]
    Vector(#[from] VectorError),
}

#[derive(Debug, Clone)]
struct Entry {
    did: Did,
    name: String,
    capability: String,
    tags: Vec<String>,
    text: String,
    issued_at: Timestamp,
    price_micros: Option<u64>,
}

#[derive(Debug)]
struct Snapshot {
    token: u64,
    /// The query as first asked (its cursor unset) and its vector, to deepen the ranking.
    query: SearchQuery,
    vector: Vec<f32>,
    /// Candidates taken from each list so far.
    depth: usize,
    /// Whether every matching capability is already ranked.
    complete: bool,
    hits: Vec<(u32, Hit)>,
    /// (agent, capability) of every hit, so that deepening never adds one twice.
    seen: HashSet<(Did, String)>,
}

/// The capability index of one node. Keyed by (DID, capability name): upserting a card
/// replaces every capability of that DID, and every change is visible to the next search.
pub struct CapabilityIndex {
    embedder: Box<dyn Embedder>,
    vectors: AdaptiveIndex,
    config: IndexConfig,
    /// BM25 over the same texts, under the same ids as `vectors` and `entries`.
    bm25: Bm25,
    /// Indexed capabilities by id; ids are dense (freed ids are reused first).
    entries: Vec<Option<Entry>>,
    live: usize,
    by_did: HashMap<Did, Vec<u32>>,
    /// The ids carrying each tag, ascending: a tag filter starts from its rarest tag's list
    /// instead of testing every capability.
    by_tag: HashMap<String, Vec<u32>>,
    /// Ids freed by removals, reused first so that per-id arrays stay as small as the index.
    free: Vec<u32>,
    /// Capabilities added or removed since the stored vectors were last re-embedded.
    changed_since_refresh: usize,
    /// Capabilities added or removed since the index was made (a [`RefreshJob`] records
    /// it, so that what changed while it ran still counts as changed).
    changes: u64,
    snapshots: Mutex<VecDeque<Snapshot>>,
}

impl std::fmt::Debug for CapabilityIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CapabilityIndex")
            .field("embedder", &self.embedder.id())
            .field("entries", &self.live)
            .finish_non_exhaustive()
    }
}

impl Default for CapabilityIndex {
    fn default() -> Self {
        Self::new(LexicalConfig::default())
    }
}

impl CapabilityIndex {
    /// An empty index with the lexical embedder and the default [`IndexConfig`].
    pub fn new(config: LexicalConfig) -> Self {
        Self::with_embedder(
            Box::new(LexicalEmbedder::new(config)),
            IndexConfig::default(),
        )
    }

    /// An empty index with any embedder.
    pub fn with_embedder(embedder: Box<dyn Embedder>, config: IndexConfig) -> Self {
        let layout = config.layout.unwrap_or_else(|| embedder.layout());
        let threshold = config.hnsw_threshold.unwrap_or(match layout {
            Layout::Sparse => DEFAULT_SPARSE_HNSW_THRESHOLD,
            Layout::Dense => DEFAULT_HNSW_THRESHOLD,
        });
        let vectors = AdaptiveIndex::with_layout(embedder.dim(), threshold, config.hnsw, layout);
        CapabilityIndex {
            embedder,
            vectors,
            config,
            bm25: Bm25::new(Bm25Config::default()),
            free: Vec::new(),
            entries: Vec::new(),
            live: 0,
            changed_since_refresh: 0,
            changes: 0,
            by_did: HashMap::new(),
            by_tag: HashMap::new(),
            snapshots: Mutex::new(VecDeque::new()),
        }
    }

    /// The id of the embedder that built every vector in this index.
    pub fn embedder_id(&self) -> &str {
        self.embedder.id()
    }

    /// The dense backend in use: `exact` or `hnsw-usearch`.
    pub fn backend(&self) -> &'static str {
        self.vectors.backend()
    }

    /// Where the dense index is in its move from the exact scan to HNSW, which a
    /// background thread builds ([`AdaptiveIndex`]).
    pub fn phase(&self) -> Phase {
        self.vectors.phase()
    }

    /// Whether a background HNSW build has finished and waits for
    /// [`CapabilityIndex::poll_build`] (or the next upsert or removal) to swap it in.
    pub fn build_ready(&self) -> bool {
        self.vectors.build_ready()
    }

    /// Swaps in a finished background HNSW build; returns whether it did. Cheap otherwise.
    pub fn poll_build(&mut self) -> bool {
        self.vectors.poll_build()
    }

    /// Waits for a running background HNSW build and swaps it in; returns whether the
    /// index moved to HNSW. Benchmarks call it so that they measure the settled index.
    pub fn wait_for_build(&mut self) -> bool {
        self.vectors.wait_for_build()
    }

    /// Why the last background HNSW build failed, if it did (the index then stays an exact
    /// scan and tries again at twice the size).
    pub fn last_build_error(&self) -> Option<&crate::VectorError> {
        self.vectors.last_build_error()
    }

    /// Indexed capabilities.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether `did`'s capabilities are indexed.
    pub fn contains(&self, did: &Did) -> bool {
        self.by_did.contains_key(did)
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    fn entry(&self, id: u32) -> Option<&Entry> {
        self.entries.get(id as usize).and_then(Option::as_ref)
    }

    /// Indexes every capability of a (verified) card, replacing what the DID had before.
    ///
    /// All or nothing: if any capability's text cannot be embedded (it has no words that are
    /// not stopwords), the card is refused and the index keeps what the DID had before.
    pub fn upsert(&mut self, card: &AgentCard) -> Result<(), SearchError> {
        let texts: Vec<String> = card
            .capabilities
            .iter()
            .map(|cap| {
                format!(
                    "{}. {}. {}. {}",
                    card.name,
                    cap.name.replace(['.', '_', '-', '/', ':'], " "),
                    cap.description,
                    cap.tags.join(", ")
                )
            })
            .collect();
        // Embedding first means nothing below can fail half-way on bad text; it also counts
        // the texts towards the embedder's corpus statistics.
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let vectors = self.embedder.learn_and_embed(&refs)?;
        if let Some(v) = vectors.iter().find(|v| v.len() != self.embedder.dim()) {
            let got = v.len();
            for text in &refs {
                self.embedder.remove_document(text);
            }
            return Err(EmbedError::Dimension {
                got,
                expected: self.embedder.dim(),
            }
            .into());
        }
        self.forget(&card.did);
        if self.vectors.would_start_build(texts.len()) {
            self.start_build();
        }
        let mut ids = Vec::with_capacity(card.capabilities.len());
        for (at, ((cap, text), vector)) in card
            .capabilities
            .iter()
            .zip(&texts)
            .zip(vectors)
            .enumerate()
        {
            let id = match self.place(&vector) {
                Ok(id) => id,
                Err(e) => {
                    // The index is full or the backend failed (out of memory): undo this
                    // card's capabilities, the ones indexed and the ones still only counted.
                    for text in &refs[at..] {
                        self.embedder.remove_document(text);
                    }
                    self.by_did.insert(card.did.clone(), ids);
                    self.forget(&card.did);
                    return Err(e);
                }
            };
            self.bm25.insert(id, text);
            for tag in &cap.tags {
                let ids = self.by_tag.entry(tag.clone()).or_default();
                if let Err(at) = ids.binary_search(&id) {
                    ids.insert(at, id);
                }
            }
            self.live += 1;
            self.entries[id as usize] = Some(Entry {
                did: card.did.clone(),
                name: card.name.clone(),
                capability: cap.name.clone(),
                tags: cap.tags.clone(),
                text: text.clone(),
                issued_at: card.issued_at,
                price_micros: cap.price.as_ref().map(|p| p.amount_micros),
            });
            ids.push(id);
        }
        self.by_did.insert(card.did.clone(), ids);
        self.changed_since_refresh += texts.len();
        self.changes += texts.len() as u64;
        self.refresh_if_drifted();
        Ok(())
    }

    /// Whether stored vectors may be re-embedded: the embedder learns from the corpus, and
    /// the dense index is an exact scan of at most [`MAX_REFRESHED`] capabilities (a refresh
    /// then costs at most that many embeddings and no graph build).
    fn refreshable(&self) -> bool {
        self.embedder.learns_from_corpus()
            && self.vectors.phase() == Phase::Exact
            && self.live <= MAX_REFRESHED
    }

    /// Re-embeds the stored vectors once the capabilities added or removed since the last
    /// refresh reach [`REFRESH_DRIFT`] of those held, so that none lags far behind the
    /// statistics (the first cards a node learns are otherwise embedded with almost none).
    fn refresh_if_drifted(&mut self) {
        if self.config.refresh_inline && self.drifted() {
            self.refresh_vectors();
        }
    }

    /// Whether the capabilities changed since the last refresh reach [`REFRESH_DRIFT`] of
    /// those held, on a refreshable index: what an upsert re-embeds for when
    /// [`IndexConfig::refresh_inline`] is set.
    pub fn drifted(&self) -> bool {
        self.refreshable()
            && self.changed_since_refresh as f64 >= REFRESH_DRIFT * self.live.max(16) as f64
    }

    /// What [`CapabilityIndex::refresh`] would do, to run away from the index: the texts,
    /// and a copy of the embedder with its statistics as they are now. `None` if nothing
    /// changed since the last refresh, the index is not refreshable, or the embedder cannot
    /// be copied. Run it ([`RefreshJob::run`]) without holding the index, then hand the
    /// result to [`CapabilityIndex::apply_refresh`].
    pub fn refresh_job(&self) -> Option<RefreshJob> {
        if self.changed_since_refresh == 0 || !self.refreshable() {
            return None;
        }
        Some(RefreshJob {
            embedder: self.embedder.snapshot()?,
            texts: self.texts(),
            changes_at: self.changes,
        })
    }

    /// Every indexed capability's text, by id.
    fn texts(&self) -> Vec<(u32, String)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(id, e)| Some((id as u32, e.as_ref()?.text.clone())))
            .collect()
    }

    /// Stores the vectors a [`RefreshJob`] computed, for the capabilities still indexed
    /// under the same id and text; returns whether it did (not if the index stopped being
    /// refreshable meanwhile, such as by moving to HNSW, whose build re-embeds anyway).
    /// Changes made while the job ran still count towards the next refresh.
    pub fn apply_refresh(&mut self, mut refreshed: Refreshed) -> bool {
        loop {
            if let Some(applied) = self.apply_refresh_part(&mut refreshed, usize::MAX) {
                return applied;
            }
        }
    }

    /// [`CapabilityIndex::apply_refresh`] a part at a time: stores at most `max` of the
    /// vectors, and returns `None` while some are left, then whether the refresh was
    /// applied. A node takes the index for one part at a time, so that a search or an
    /// upsert waits for a part, not for the whole refresh (60 ms for 1,100 capabilities
    /// here); in between, some capabilities hold vectors under the new statistics and the
    /// others under the old.
    pub fn apply_refresh_part(&mut self, refreshed: &mut Refreshed, max: usize) -> Option<bool> {
        if !self.refreshable() || refreshed.changes_at > self.changes {
            refreshed.vectors.clear();
            return Some(false);
        }
        let keep = refreshed.vectors.len().saturating_sub(max.max(1));
        for (id, text, vector) in refreshed.vectors.drain(keep..) {
            let same = self
                .entries
                .get(id as usize)
                .and_then(Option::as_ref)
                .is_some_and(|e| e.text == text);
            if same && vector.len() == self.embedder.dim() {
                let _kept_old_on_error = self.vectors.upsert(id, &vector);
            }
        }
        if !refreshed.vectors.is_empty() {
            return None;
        }
        self.changed_since_refresh = (self.changes - refreshed.changes_at) as usize;
        Some(true)
    }

    /// Capabilities added or removed since the stored vectors were last re-embedded, if
    /// [`CapabilityIndex::refresh`] would re-embed them; 0 otherwise.
    pub fn stale_capabilities(&self) -> usize {
        if self.refreshable() {
            self.changed_since_refresh
        } else {
            0
        }
    }

    /// Re-embeds every stored vector under the current corpus statistics if anything changed
    /// since the last refresh and the index is refreshable (an exact scan of at most
    /// [`MAX_REFRESHED`] capabilities, with an embedder that learns from the corpus).
    /// Returns whether it did.
    ///
    /// Two indexes holding the same cards then rank alike whatever order they learnt the
    /// cards in. A node calls this once its registry has been quiet for a moment.
    pub fn refresh(&mut self) -> bool {
        if self.changed_since_refresh == 0 || !self.refreshable() {
            return false;
        }
        self.refresh_vectors();
        true
    }

    /// Starts moving the vectors into HNSW. The background build re-embeds them first,
    /// under the corpus statistics as they are now, so that the graph holds fresh vectors
    /// (no refresh happens on HNSW) without holding up this upsert.
    fn start_build(&mut self) {
        let source = if self.embedder.learns_from_corpus() {
            let Some(embedder) = self.embedder.snapshot() else {
                // No copy to re-embed with elsewhere: re-embed here, then build.
                self.refresh_vectors();
                self.vectors.start_build(None);
                return;
            };
            let texts = self.texts();
            // Indexed texts embed (that was checked when they were indexed); one that fails
            // anyway keeps the vector it has, as in a refresh.
            let source: Source = Box::new(
                texts
                    .into_iter()
                    .map(move |(id, text)| (id, embedder.embed(&text).ok())),
            );
            Some(source)
        } else {
            None
        };
        self.vectors.start_build(source);
    }

    /// Re-embeds every stored vector under the current corpus statistics.
    fn refresh_vectors(&mut self) {
        if !self.embedder.learns_from_corpus() {
            return;
        }
        for (id, entry) in self.entries.iter().enumerate() {
            let Some(entry) = entry else { continue };
            // Indexed texts embed (that was checked when they were indexed), and the
            // vector has the index's dimension; a failure keeps the old vector.
            if let Ok(vector) = self.embedder.embed(&entry.text) {
                let _kept_old_on_error = self.vectors.upsert(id as u32, &vector);
            }
        }
        self.changed_since_refresh = 0;
    }

    /// Removes every capability of `did`; returns how many there were.
    pub fn remove(&mut self, did: &Did) -> usize {
        let removed = self.forget(did);
        self.refresh_if_drifted();
        removed
    }

    /// [`CapabilityIndex::remove`] without the refresh check.
    fn forget(&mut self, did: &Did) -> usize {
        let Some(ids) = self.by_did.remove(did) else {
            return 0;
        };
        for id in &ids {
            if let Some(entry) = self.entries.get_mut(*id as usize).and_then(Option::take) {
                self.embedder.remove_document(&entry.text);
                self.live -= 1;
                for tag in &entry.tags {
                    if let Some(ids) = self.by_tag.get_mut(tag) {
                        if let Ok(at) = ids.binary_search(id) {
                            ids.remove(at);
                        }
                        if ids.is_empty() {
                            self.by_tag.remove(tag);
                        }
                    }
                }
            }
            self.vectors.remove(*id);
            self.bm25.remove(*id);
            self.free.push(*id);
        }
        self.changed_since_refresh += ids.len();
        self.changes += ids.len() as u64;
        ids.len()
    }

    /// Stores a vector under a free id and returns the id.
    fn place(&mut self, vector: &[f32]) -> Result<u32, SearchError> {
        let id = self.allocate_id()?;
        if let Err(e) = self.vectors.upsert(id, vector) {
            self.free.push(id);
            return Err(e.into());
        }
        Ok(id)
    }

    /// A free id: a freed one if any, else a new one at the end.
    fn allocate_id(&mut self) -> Result<u32, SearchError> {
        while let Some(id) = self.free.pop() {
            if self.entry(id).is_none() {
                return Ok(id);
            }
        }
        let id = u32::try_from(self.entries.len())
            .map_err(|_| VectorError::Backend("the index is full".into()))?;
        self.entries.push(None);
        Ok(id)
    }

    /// Embeds a query's text. [`CapabilityIndex::search`] does this itself; call it to time
    /// embedding apart from searching, then use [`CapabilityIndex::search_embedded`].
    pub fn embed_query(&self, text: &str) -> Result<Vec<f32>, SearchError> {
        let vector = self.embedder.embed(text)?;
        crate::vector::check_dim(self.embedder.dim(), &vector)?;
        Ok(vector)
    }

    /// Searches. `signals` gives the node's trust in agents and their verified memberships;
    /// `now` dates freshness.
    ///
    /// The first page ranks the best candidates from the dense and BM25 lists (see
    /// [`IndexConfig::depth`]) among the capabilities that pass the filters, and keeps the
    /// ranking as a snapshot; later pages read the snapshot, deepening it when they run
    /// past its end (at most [`MAX_RESULTS`] in all), and skip capabilities removed or
    /// excluded since. Paging never repeats a result, even while the index changes.
    pub fn search(
        &self,
        query: &SearchQuery,
        signals: &dyn Signals,
        now: Timestamp,
    ) -> Result<Page, SearchError> {
        validate(query)?;
        if query.cursor.is_some() {
            return self.next_page(query, signals, now);
        }
        let vector = self.embed_query(&query.text)?;
        self.first_page(query, vector, signals, now)
    }

    /// [`CapabilityIndex::search`] with the query's vector already computed by
    /// [`CapabilityIndex::embed_query`].
    pub fn search_embedded(
        &self,
        query: &SearchQuery,
        vector: Vec<f32>,
        signals: &dyn Signals,
        now: Timestamp,
    ) -> Result<Page, SearchError> {
        validate(query)?;
        if query.cursor.is_some() {
            return self.next_page(query, signals, now);
        }
        crate::vector::check_dim(self.embedder.dim(), &vector)?;
        self.first_page(query, vector, signals, now)
    }

    fn first_page(
        &self,
        query: &SearchQuery,
        vector: Vec<f32>,
        signals: &dyn Signals,
        now: Timestamp,
    ) -> Result<Page, SearchError> {
        let depth = self.config.depth.clamp(query.k, MAX_RESULTS);
        let (hits, complete) = self.rank(query, &vector, signals, now, depth)?;
        // Random tokens: a client cannot guess another client's snapshot.
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(|_| SearchError::CursorExpired)?;
        let mut snapshot = Snapshot {
            token: u64::from_le_bytes(bytes),
            query: SearchQuery {
                cursor: None,
                ..query.clone()
            },
            vector,
            depth,
            complete,
            seen: hits
                .iter()
                .map(|(_, h)| (h.did.clone(), h.capability.clone()))
                .collect(),
            hits,
        };
        let page = self.page(&mut snapshot, 0, query, signals, now)?;
        if page.next_cursor.is_some() {
            self.keep_snapshot(snapshot)?;
        }
        Ok(page)
    }

    /// Keeps a snapshot for its cursor, dropping the oldest beyond [`MAX_SNAPSHOTS`].
    fn keep_snapshot(&self, snapshot: Snapshot) -> Result<(), SearchError> {
        let mut snapshots = self
            .snapshots
            .lock()
            .map_err(|_| SearchError::CursorExpired)?;
        if snapshots.len() >= MAX_SNAPSHOTS {
            snapshots.pop_front();
        }
        snapshots.push_back(snapshot);
        Ok(())
    }

    fn next_page(
        &self,
        query: &SearchQuery,
        signals: &dyn Signals,
        now: Timestamp,
    ) -> Result<Page, SearchError> {
        let cursor = query.cursor.as_deref().ok_or(SearchError::BadCursor)?;
        let (token, offset) = parse_cursor(cursor)?;
        // Take the snapshot out while its page is built (deepening it ranks again).
        let mut snapshot = {
            let mut snapshots = self
                .snapshots
                .lock()
                .map_err(|_| SearchError::CursorExpired)?;
            let at = snapshots
                .iter()
                .position(|s| s.token == token)
                .ok_or(SearchError::CursorExpired)?;
            snapshots.remove(at).ok_or(SearchError::CursorExpired)?
        };
        let page = self.page(&mut snapshot, offset, query, signals, now);
        if let Ok(Page {
            next_cursor: Some(_),
            ..
        }) = &page
        {
            self.keep_snapshot(snapshot)?;
        }
        page
    }

    /// Ranks deeper and appends what the snapshot has not seen; false if it cannot grow.
    fn deepen(
        &self,
        snapshot: &mut Snapshot,
        signals: &dyn Signals,
        now: Timestamp,
    ) -> Result<bool, SearchError> {
        if snapshot.complete || snapshot.depth >= MAX_RESULTS || snapshot.hits.len() >= MAX_RESULTS
        {
            return Ok(false);
        }
        let depth = (snapshot.depth * 2).min(MAX_RESULTS);
        let (hits, complete) = self.rank(&snapshot.query, &snapshot.vector, signals, now, depth)?;
        snapshot.depth = depth;
        snapshot.complete = complete;
        for (id, hit) in hits {
            if snapshot.hits.len() >= MAX_RESULTS {
                break;
            }
            if snapshot
                .seen
                .insert((hit.did.clone(), hit.capability.clone()))
            {
                snapshot.hits.push((id, hit));
            }
        }
        Ok(true)
    }

    fn page(
        &self,
        snapshot: &mut Snapshot,
        offset: usize,
        query: &SearchQuery,
        signals: &dyn Signals,
        now: Timestamp,
    ) -> Result<Page, SearchError> {
        let live = |id: &u32, hit: &Hit| {
            self.entry(*id)
                .is_some_and(|e| e.did == hit.did && e.capability == hit.capability)
                && !query.exclude.contains(&hit.did)
        };
        let mut hits = Vec::with_capacity(query.k);
        let mut position = offset;
        loop {
            while hits.len() < query.k && position < snapshot.hits.len() {
                let (id, hit) = &snapshot.hits[position];
                position += 1;
                if live(id, hit) {
                    hits.push(hit.clone());
                }
            }
            // Is there another live result, in the snapshot or deeper?
            let more = snapshot.hits[position.min(snapshot.hits.len())..]
                .iter()
                .any(|(id, hit)| live(id, hit));
            if more && hits.len() == query.k {
                break;
            }
            if !more && !self.deepen(snapshot, signals, now)? {
                break;
            }
        }
        let more = snapshot.hits[position.min(snapshot.hits.len())..]
            .iter()
            .any(|(id, hit)| live(id, hit));
        Ok(Page {
            hits,
            next_cursor: more.then(|| format!("{:016x}{:08x}", snapshot.token, position)),
        })
    }

    /// Whether the capability `id` passes the query's filters.
    fn passes(&self, id: u32, query: &SearchQuery, signals: &dyn Signals) -> bool {
        if unfiltered(query) {
            // Every indexed id passes (the vector index and BM25 hold only ids that are in
            // `entries`).
            return true;
        }
        let Some(entry) = self.entry(id) else {
            return false;
        };
        !query.exclude.contains(&entry.did)
            && query.tags.iter().all(|t| entry.tags.contains(t))
            && (query.orgs.is_empty()
                || query.orgs.iter().any(|o| signals.is_member(&entry.did, o)))
            && query
                .min_trust
                .is_none_or(|min| clamp_trust(signals.trust(&entry.did, &entry.capability)) >= min)
    }

    /// The capabilities that pass a filtered query. With tags, only those carrying the
    /// rarest of them are tested; without, every capability is.
    fn passing(&self, query: &SearchQuery, signals: &dyn Signals) -> Passing {
        let mut passing = Passing::with_len(self.entries.len());
        let rarest = query
            .tags
            .iter()
            .map(|t| self.by_tag.get(t).map_or(&[][..], Vec::as_slice))
            .min_by_key(|ids| ids.len());
        let mut test = |id: u32| {
            if self.passes(id, query, signals) {
                passing.insert(id);
            }
        };
        match rarest {
            Some(ids) => ids.iter().copied().for_each(&mut test),
            None => (0..self.entries.len() as u32).for_each(test),
        }
        passing
    }

    /// The best `depth` capabilities by cosine among those that pass the filters; fewer
    /// only if fewer pass. `passing` lists the ids that pass, for a filtered query.
    ///
    /// With the exact index, the exact scores of those that pass. With HNSW: no filter, a
    /// plain graph search; a filter that at most [`IndexConfig::exact_filter_max`]
    /// capabilities pass, the exact scores of those; otherwise a graph search that skips
    /// what the filter refuses, and the exact scores of those that pass if it ends short.
    fn dense_candidates(
        &self,
        vector: &[f32],
        depth: usize,
        passing: Option<&Passing>,
    ) -> Result<Vec<(u32, f32)>, SearchError> {
        let Some(passing) = passing else {
            return Ok(self.vectors.search_all(vector, depth)?);
        };
        if self.vectors.is_exact() || passing.ids.len() <= self.config.exact_filter_max {
            return Ok(self.vectors.search_among(vector, &passing.ids, depth)?);
        }
        // The graph walk skips what the filter refuses; a walk that ends short although
        // more pass falls back to scoring those that pass.
        let found = self
            .vectors
            .search(vector, depth, &|id| passing.contains(id))?;
        if found.len() >= depth.min(passing.ids.len()) {
            return Ok(found);
        }
        Ok(self.vectors.search_among(vector, &passing.ids, depth)?)
    }

    /// Orders two ids by (DID, capability name), which every node shares; live ids first.
    fn shared_order(&self, a: u32, b: u32) -> std::cmp::Ordering {
        let key = |id| self.entry(id).map(|e| (&e.did, &e.capability));
        match (key(a), key(b)) {
            (Some(x), Some(y)) => x.cmp(&y),
            (x, y) => y.is_some().cmp(&x.is_some()).then(a.cmp(&b)),
        }
    }

    /// Sorts scored ids best first, ties by (DID, capability name) rather than by local id.
    fn sort_shared(&self, scored: &mut [(u32, f32)]) {
        scored.sort_by(|a, b| {
            b.1.total_cmp(&a.1)
                .then_with(|| self.shared_order(a.0, b.0))
        });
    }

    /// The fused ranking of the best `depth` candidates of each list, and whether it holds
    /// every capability that passes the filters.
    fn rank(
        &self,
        query: &SearchQuery,
        vector: &[f32],
        signals: &dyn Signals,
        now: Timestamp,
        depth: usize,
    ) -> Result<(Vec<(u32, Hit)>, bool), SearchError> {
        let passing = (!unfiltered(query)).then(|| self.passing(query, signals));
        let keep = |id: u32| passing.as_ref().is_none_or(|p| p.contains(id));
        let mut dense = self.dense_candidates(vector, depth, passing.as_ref())?;
        let complete = dense.len() < depth;
        self.sort_shared(&mut dense);
        let lexical = self
            .bm25
            .top_filtered_by(&query.text, depth, &keep, &|a, b| self.shared_order(a, b));

        let mut candidates: HashMap<u32, (Option<usize>, Option<usize>, f32)> = HashMap::new();
        for (r, &(id, cosine)) in dense.iter().enumerate() {
            candidates.insert(id, (Some(r + 1), None, cosine));
        }
        let mut lexical_only = Vec::new();
        for (r, &(id, _)) in lexical.iter().enumerate() {
            candidates
                .entry(id)
                .and_modify(|c| c.1 = Some(r + 1))
                .or_insert_with(|| {
                    lexical_only.push(id);
                    (None, Some(r + 1), 0.0)
                });
        }
        // The cosine of BM25-only candidates, for their breakdown.
        for (id, cosine) in self
            .vectors
            .search_among(vector, &lexical_only, lexical_only.len())?
        {
            if let Some(c) = candidates.get_mut(&id) {
                c.2 = cosine;
            }
        }

        let weights = query.weights.unwrap_or_default();
        let total_weight = (weights.similarity + weights.trust + weights.freshness + weights.price)
            .max(f64::MIN_POSITIVE);
        let mut hits: Vec<(u32, Hit)> = candidates
            .into_iter()
            .filter_map(|(id, (dense_rank, lexical_rank, cosine))| {
                let entry = self.entry(id)?;
                let rrf = dense_rank.map_or(0.0, |r| 1.0 / (RRF_K + r as f64))
                    + lexical_rank.map_or(0.0, |r| 1.0 / (RRF_K + r as f64));
                let similarity = rrf / (2.0 / (RRF_K + 1.0));
                let age_days = now.as_millis().saturating_sub(entry.issued_at.as_millis()) as f64
                    / 86_400_000.0;
                let freshness = 0.5f64.powf(age_days / 30.0);
                let price = entry
                    .price_micros
                    .map_or(1.0, |m| 1.0 / (1.0 + m as f64 / 1e6));
                let trust = clamp_trust(signals.trust(&entry.did, &entry.capability));
                let score = (weights.similarity * similarity
                    + weights.trust * trust
                    + weights.freshness * freshness
                    + weights.price * price)
                    / total_weight;
                Some((
                    id,
                    Hit {
                        did: entry.did.clone(),
                        name: entry.name.clone(),
                        capability: entry.capability.clone(),
                        score,
                        breakdown: Breakdown {
                            similarity,
                            dense: f64::from(cosine),
                            dense_rank,
                            lexical_rank,
                            trust,
                            freshness,
                            price,
                        },
                    },
                ))
            })
            .collect();
        // Ties go by (DID, capability), never by the local id, so that every node with the
        // same cards ranks them alike.
        hits.sort_by(|a, b| {
            b.1.score
                .total_cmp(&a.1.score)
                .then_with(|| a.1.did.cmp(&b.1.did))
                .then_with(|| a.1.capability.cmp(&b.1.capability))
        });
        hits.truncate(MAX_RESULTS);
        Ok((hits, complete))
    }
}

/// The ids that pass a query's filters: a list and a bitmap.
struct Passing {
    ids: Vec<u32>,
    bits: Vec<u64>,
}

impl Passing {
    fn with_len(len: usize) -> Self {
        Passing {
            ids: Vec::new(),
            bits: vec![0; len.div_ceil(64)],
        }
    }

    fn insert(&mut self, id: u32) {
        if let Some(word) = self.bits.get_mut(id as usize / 64) {
            *word |= 1 << (id % 64);
            self.ids.push(id);
        }
    }

    fn contains(&self, id: u32) -> bool {
        self.bits
            .get(id as usize / 64)
            .is_some_and(|w| w & (1 << (id % 64)) != 0)
    }
}

/// Whether the query filters nothing.
fn unfiltered(query: &SearchQuery) -> bool {
    query.exclude.is_empty()
        && query.tags.is_empty()
        && query.orgs.is_empty()
        && query.min_trust.is_none()
}

/// Trust as ranked: clamped to [0, 1], and 0 if not a number.
fn clamp_trust(t: f64) -> f64 {
    if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

fn validate(query: &SearchQuery) -> Result<(), SearchError> {
    if query.text.trim().is_empty() {
        return Err(SearchError::EmptyQuery);
    }
    if query.text.len() > MAX_QUERY_LEN {
        return Err(SearchError::QueryTooLong {
            len: query.text.len(),
        });
    }
    if query.k == 0 || query.k > MAX_PAGE_SIZE {
        return Err(SearchError::BadPageSize(query.k));
    }
    if query.tags.len() > MAX_QUERY_TAGS {
        return Err(SearchError::BadTags(format!(
            "{} tags; at most {MAX_QUERY_TAGS}",
            query.tags.len()
        )));
    }
    if let Some(tag) = query
        .tags
        .iter()
        .find(|t| t.is_empty() || t.len() > agentnet_protocol::limits::MAX_TAG_LEN)
    {
        return Err(SearchError::BadTags(format!(
            "{tag:?} is empty or too long"
        )));
    }
    if query.orgs.len() > MAX_QUERY_ORGS {
        return Err(SearchError::TooManyOrgs(query.orgs.len()));
    }
    if let Some(w) = query.weights {
        let all = [w.similarity, w.trust, w.freshness, w.price];
        if all.iter().any(|x| !x.is_finite() || *x < 0.0) || all.iter().sum::<f64>() <= 0.0 {
            return Err(SearchError::BadWeights);
        }
    }
    if let Some(min) = query.min_trust
        && !(0.0..=1.0).contains(&min)
    {
        return Err(SearchError::BadMinTrust(min));
    }
    Ok(())
}

fn parse_cursor(cursor: &str) -> Result<(u64, usize), SearchError> {
    if cursor.len() != 24 || !cursor.is_ascii() {
        return Err(SearchError::BadCursor);
    }
    let token = u64::from_str_radix(&cursor[..16], 16).map_err(|_| SearchError::BadCursor)?;
    let offset = usize::from_str_radix(&cursor[16..], 16).map_err(|_| SearchError::BadCursor)?;
    if offset > MAX_RESULTS {
        return Err(SearchError::BadCursor);
    }
    Ok((token, offset))
}
