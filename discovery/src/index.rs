//! The capability index: upsert and remove cards, search with fusion, filters, ranking and
//! cursors (`specs/discovery.md#capability-index`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use agentnet_protocol::{AgentCard, Did, Timestamp};

use crate::bm25::{Bm25, Bm25Config};
use crate::embed::{EmbedError, Embedder, LexicalConfig, LexicalEmbedder};
use crate::vector::{ExactIndex, VectorError, VectorIndex};

/// The longest query text.
pub const MAX_QUERY_LEN: usize = 1024;
/// The most results on one page.
pub const MAX_PAGE_SIZE: usize = 100;
/// The most results one query can page through.
pub const MAX_RESULTS: usize = 1000;
/// The most tag filters in one query.
pub const MAX_QUERY_TAGS: usize = 16;
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

/// Why each result ranks where it does. Every component is in [0, 1].
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Breakdown {
    /// Fused similarity: reciprocal rank fusion of the dense and BM25 ranks, scaled to [0, 1].
    pub similarity: f64,
    /// Cosine similarity of the dense vectors.
    pub dense: f64,
    /// Rank in the BM25 list (1-based), if the text matched any term.
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
    hits: Vec<(u32, Hit)>,
}

/// The capability index of one node. Keyed by (DID, capability name): upserting a card
/// replaces every capability of that DID, and every change is visible to the next search.
pub struct CapabilityIndex {
    embedder: LexicalEmbedder,
    vectors: Box<dyn VectorIndex>,
    bm25: Bm25,
    bm25_ids: HashMap<u32, u32>,
    bm25_back: HashMap<u32, u32>,
    entries: HashMap<u32, Entry>,
    by_did: HashMap<Did, Vec<u32>>,
    next_id: u32,
    snapshots: Mutex<VecDeque<Snapshot>>,
}

impl std::fmt::Debug for CapabilityIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CapabilityIndex")
            .field("embedder", &self.embedder.id())
            .field("entries", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl Default for CapabilityIndex {
    fn default() -> Self {
        Self::new(LexicalConfig::default())
    }
}

impl CapabilityIndex {
    /// An empty index with the lexical embedder and an exact vector scan.
    pub fn new(config: LexicalConfig) -> Self {
        let embedder = LexicalEmbedder::new(config);
        let vectors = Box::new(ExactIndex::new(embedder.dim()));
        CapabilityIndex {
            embedder,
            vectors,
            bm25: Bm25::new(Bm25Config::default()),
            bm25_ids: HashMap::new(),
            bm25_back: HashMap::new(),
            entries: HashMap::new(),
            by_did: HashMap::new(),
            next_id: 0,
            snapshots: Mutex::new(VecDeque::new()),
        }
    }

    /// The id of the embedder that built every vector in this index.
    pub fn embedder_id(&self) -> &str {
        self.embedder.id()
    }

    /// Indexed capabilities.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
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
        // Whether a text embeds does not depend on corpus statistics, so checking first
        // means nothing below can fail half-way.
        for text in &texts {
            self.embedder.embed(text)?;
        }
        self.remove(&card.did);
        let mut ids = Vec::with_capacity(card.capabilities.len());
        for (cap, text) in card.capabilities.iter().zip(texts) {
            self.embedder.add_document(&text);
            let vector = self.embedder.embed(&text)?;
            // Ids are never reused while in use, even after the counter wraps.
            while self.entries.contains_key(&self.next_id) {
                self.next_id = self.next_id.wrapping_add(1);
            }
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1);
            self.vectors.upsert(id, &vector)?;
            let doc = self.bm25.add(&text);
            self.bm25_ids.insert(id, doc);
            self.bm25_back.insert(doc, id);
            self.entries.insert(
                id,
                Entry {
                    did: card.did.clone(),
                    name: card.name.clone(),
                    capability: cap.name.clone(),
                    tags: cap.tags.clone(),
                    text,
                    issued_at: card.issued_at,
                    price_micros: cap.price.as_ref().map(|p| p.amount_micros),
                },
            );
            ids.push(id);
        }
        self.by_did.insert(card.did.clone(), ids);
        Ok(())
    }

    /// Removes every capability of `did`; returns how many there were.
    pub fn remove(&mut self, did: &Did) -> usize {
        let Some(ids) = self.by_did.remove(did) else {
            return 0;
        };
        for id in &ids {
            if let Some(entry) = self.entries.remove(id) {
                self.embedder.remove_document(&entry.text);
            }
            self.vectors.remove(*id);
            if let Some(doc) = self.bm25_ids.remove(id) {
                self.bm25.remove(doc);
                self.bm25_back.remove(&doc);
            }
        }
        ids.len()
    }

    /// Searches. `trust(did, capability)` gives the node's trust in an agent for a
    /// capability, in [0, 1]; `now` dates freshness.
    ///
    /// The first page ranks every capability that passes the filters and keeps the ranking
    /// (at most [`MAX_RESULTS`]) as a snapshot; later pages read the snapshot, skipping
    /// capabilities removed or excluded since. So paging never repeats a result, even while
    /// the index changes.
    pub fn search(
        &self,
        query: &SearchQuery,
        trust: &dyn Fn(&Did, &str) -> f64,
        now: Timestamp,
    ) -> Result<Page, SearchError> {
        validate(query)?;
        if let Some(cursor) = &query.cursor {
            let (token, offset) = parse_cursor(cursor)?;
            let snapshots = self
                .snapshots
                .lock()
                .map_err(|_| SearchError::CursorExpired)?;
            let snapshot = snapshots
                .iter()
                .find(|s| s.token == token)
                .ok_or(SearchError::CursorExpired)?;
            return Ok(self.page(snapshot, offset, query));
        }
        let hits = self.rank(query, trust, now)?;
        // Random tokens: a client cannot guess another client's snapshot.
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(|_| SearchError::CursorExpired)?;
        let token = u64::from_le_bytes(bytes);
        let snapshot = Snapshot { token, hits };
        let page = self.page(&snapshot, 0, query);
        if page.next_cursor.is_some() {
            let mut snapshots = self
                .snapshots
                .lock()
                .map_err(|_| SearchError::CursorExpired)?;
            if snapshots.len() >= MAX_SNAPSHOTS {
                snapshots.pop_front();
            }
            snapshots.push_back(snapshot);
        }
        Ok(page)
    }

    fn page(&self, snapshot: &Snapshot, offset: usize, query: &SearchQuery) -> Page {
        let mut hits = Vec::with_capacity(query.k);
        let mut position = offset;
        let live = |id: &u32, hit: &Hit| {
            self.entries.get(id).is_some_and(|e| e.did == hit.did)
                && !query.exclude.contains(&hit.did)
        };
        for (id, hit) in snapshot.hits.iter().skip(offset) {
            position += 1;
            if live(id, hit) {
                hits.push(hit.clone());
                if hits.len() == query.k {
                    break;
                }
            }
        }
        let more = snapshot.hits[position.min(snapshot.hits.len())..]
            .iter()
            .any(|(id, hit)| live(id, hit));
        Page {
            hits,
            next_cursor: more.then(|| format!("{:016x}{:08x}", snapshot.token, position)),
        }
    }

    fn rank(
        &self,
        query: &SearchQuery,
        trust: &dyn Fn(&Did, &str) -> f64,
        now: Timestamp,
    ) -> Result<Vec<(u32, Hit)>, SearchError> {
        let weights = query.weights.unwrap_or_default();
        let mut trust_of: HashMap<u32, f64> = HashMap::new();
        let passes = |id: u32, trust_of: &mut HashMap<u32, f64>| -> bool {
            let Some(entry) = self.entries.get(&id) else {
                return false;
            };
            if query.exclude.contains(&entry.did)
                || !query.tags.iter().all(|t| entry.tags.contains(t))
            {
                return false;
            }
            let t = trust(&entry.did, &entry.capability);
            let t = if t.is_finite() {
                t.clamp(0.0, 1.0)
            } else {
                0.0
            };
            trust_of.insert(id, t);
            query.min_trust.is_none_or(|min| t >= min)
        };
        let candidates: HashSet<u32> = self
            .entries
            .keys()
            .copied()
            .filter(|&id| passes(id, &mut trust_of))
            .collect();
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let vector = self.embedder.embed(&query.text)?;
        let dense = self
            .vectors
            .search(&vector, candidates.len(), &|id| candidates.contains(&id))?;
        let mut lexical: Vec<(u32, f32)> = self
            .bm25
            .scores(&query.text)
            .into_iter()
            .filter_map(|(doc, s)| self.bm25_back.get(&doc).map(|&id| (id, s)))
            .filter(|(id, _)| candidates.contains(id))
            .collect();
        lexical.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let lexical_rank: HashMap<u32, usize> = lexical
            .iter()
            .enumerate()
            .map(|(r, (id, _))| (*id, r + 1))
            .collect();
        let total_weight = (weights.similarity + weights.trust + weights.freshness + weights.price)
            .max(f64::MIN_POSITIVE);
        let mut hits: Vec<(u32, Hit)> = dense
            .iter()
            .enumerate()
            .filter_map(|(r, &(id, cosine))| {
                let entry = self.entries.get(&id)?;
                let lexical_rank = lexical_rank.get(&id).copied();
                let rrf = 1.0 / (RRF_K + (r + 1) as f64)
                    + lexical_rank.map_or(0.0, |l| 1.0 / (RRF_K + l as f64));
                let similarity = rrf / (2.0 / (RRF_K + 1.0));
                let age_days = now.as_millis().saturating_sub(entry.issued_at.as_millis()) as f64
                    / 86_400_000.0;
                let freshness = 0.5f64.powf(age_days / 30.0);
                let price = entry
                    .price_micros
                    .map_or(1.0, |m| 1.0 / (1.0 + m as f64 / 1e6));
                let trust = trust_of.get(&id).copied().unwrap_or(0.0);
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
                            lexical_rank,
                            trust,
                            freshness,
                            price,
                        },
                    },
                ))
            })
            .collect();
        hits.sort_by(|a, b| b.1.score.total_cmp(&a.1.score).then(a.0.cmp(&b.0)));
        hits.truncate(MAX_RESULTS);
        Ok(hits)
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
