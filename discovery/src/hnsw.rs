//! HNSW through usearch: approximate search for large corpora, with true deletes.
//!
//! usearch (Unum) is a maintained C++ HNSW with Rust bindings. It was chosen over
//! instant-distance, which builds in batch only (no insert, no delete) and took 264 s to
//! build 100k × 384 vectors on this machine, against about 48 s for usearch
//! (`docs/design/0004-hnsw-backend.md`).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Duration;

use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use crate::sparse::SparseIndex;
use crate::vector::{ExactCopies, ExactIndex, Layout, VectorError, VectorIndex};

/// HNSW parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HnswConfig {
    /// Neighbours per node (M). Default 16.
    pub connectivity: usize,
    /// Candidate list size while inserting (efConstruction). Default 128.
    pub expansion_add: usize,
    /// Candidate list size while searching (ef). Default 64.
    pub expansion_search: usize,
    /// How vectors are stored in the graph. Default [`Quantization::F16`]: half the
    /// memory of f32 at the same speed and, on the capability search benchmark, the same
    /// agreement with exact search.
    pub quantization: Quantization,
}

/// Storage precision of vectors in the HNSW graph (queries are always f32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Quantization {
    /// 32-bit floats.
    F32,
    /// 16-bit floats.
    F16,
    /// 8-bit integers (for unit vectors): a quarter of the memory, about twice as fast,
    /// slightly less exact.
    I8,
}

impl Default for HnswConfig {
    fn default() -> Self {
        HnswConfig {
            connectivity: 16,
            expansion_add: 128,
            expansion_search: 64,
            quantization: Quantization::F16,
        }
    }
}

/// Why the HNSW index failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HnswError {
    /// usearch reported an error.
    #[error("HNSW index: {0}")]
    Backend(String),
}

/// An HNSW index of unit vectors searched by inner product.
pub struct HnswIndex {
    dim: usize,
    index: Index,
    /// Adds hold it shared; growth (`reserve`) holds it exclusively, so the index never
    /// grows while another thread is adding.
    grow: RwLock<()>,
    threads: usize,
}

impl std::fmt::Debug for HnswIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HnswIndex")
            .field("dim", &self.dim)
            .field("len", &self.index.size())
            .finish_non_exhaustive()
    }
}

impl HnswIndex {
    /// An empty index of dimension `dim` with room for `capacity` vectors (it grows).
    pub fn new(dim: usize, capacity: usize, config: HnswConfig) -> Result<Self, HnswError> {
        let options = IndexOptions {
            dimensions: dim,
            metric: MetricKind::IP,
            quantization: match config.quantization {
                Quantization::F32 => ScalarKind::F32,
                Quantization::F16 => ScalarKind::F16,
                Quantization::I8 => ScalarKind::I8,
            },
            connectivity: config.connectivity,
            expansion_add: config.expansion_add,
            expansion_search: config.expansion_search,
            multi: false,
        };
        let index = Index::new(&options).map_err(|e| HnswError::Backend(e.to_string()))?;
        let threads = std::thread::available_parallelism().map_or(1, |p| p.get());
        index
            .reserve_capacity_and_threads(capacity.max(16), threads)
            .map_err(|e| HnswError::Backend(e.to_string()))?;
        Ok(HnswIndex {
            dim,
            index,
            grow: RwLock::new(()),
            threads,
        })
    }

    /// Sets the search candidate list size (ef): larger is slower and more exact.
    pub fn set_expansion_search(&self, ef: usize) {
        self.index.change_expansion_search(ef);
    }

    /// The exact top `k` by brute force, with the same SIMD distance kernel as the graph
    /// search: the honest baseline for measuring HNSW's speed-up, and ground truth for recall.
    pub fn exact_search(&self, query: &[f32], k: usize) -> Result<Vec<(u32, f32)>, VectorError> {
        self.check(query)?;
        let matches = self
            .index
            .exact_search(query, k)
            .map_err(|e| VectorError::Backend(e.to_string()))?;
        Ok(similarities(&matches))
    }

    /// Bytes of memory the index uses.
    pub fn memory_usage(&self) -> usize {
        self.index.memory_usage()
    }

    /// Inserts a vector from any thread; many threads may insert at once.
    pub fn insert_concurrent(&self, id: u32, vector: &[f32]) -> Result<(), VectorError> {
        self.check(vector)?;
        loop {
            {
                let _shared = self.grow.read().unwrap_or_else(|p| p.into_inner());
                // Headroom of one slot per thread: every thread past this check fits.
                if self.index.size() + self.threads < self.index.capacity() {
                    return self
                        .index
                        .add(u64::from(id), vector)
                        .map_err(|e| VectorError::Backend(e.to_string()));
                }
            }
            let _exclusive = self.grow.write().unwrap_or_else(|p| p.into_inner());
            if self.index.size() + self.threads >= self.index.capacity() {
                let wanted = (self.index.capacity() * 2).max(1024) + self.threads;
                self.index
                    .reserve_capacity_and_threads(wanted, self.threads)
                    .map_err(|e| VectorError::Backend(e.to_string()))?;
            }
        }
    }

    fn check(&self, v: &[f32]) -> Result<(), VectorError> {
        crate::vector::check_dim(self.dim, v)
    }
}

/// usearch's inner-product distance is `1 − cos`; turns matches into (id, cosine).
fn similarities(matches: &usearch::ffi::Matches) -> Vec<(u32, f32)> {
    matches
        .keys
        .iter()
        .zip(&matches.distances)
        .filter_map(|(&key, &d)| u32::try_from(key).ok().map(|id| (id, 1.0 - d)))
        .collect()
}

impl VectorIndex for HnswIndex {
    fn dim(&self) -> usize {
        self.dim
    }

    fn upsert(&mut self, id: u32, vector: &[f32]) -> Result<(), VectorError> {
        self.check(vector)?;
        if self.index.contains(u64::from(id)) {
            self.index
                .remove(u64::from(id))
                .map_err(|e| VectorError::Backend(e.to_string()))?;
        }
        self.insert_concurrent(id, vector)
    }

    fn remove(&mut self, id: u32) -> bool {
        self.index
            .remove(u64::from(id))
            .map(|n| n > 0)
            .unwrap_or(false)
    }

    fn search(
        &self,
        query: &[f32],
        k: usize,
        keep: &dyn Fn(u32) -> bool,
    ) -> Result<Vec<(u32, f32)>, VectorError> {
        self.check(query)?;
        if k == 0 || self.index.size() == 0 {
            return Ok(Vec::new());
        }
        let matches = self
            .index
            .filtered_search(query, k, |key: u64| u32::try_from(key).is_ok_and(keep))
            .map_err(|e| VectorError::Backend(e.to_string()))?;
        Ok(similarities(&matches))
    }

    fn search_all(&self, query: &[f32], k: usize) -> Result<Vec<(u32, f32)>, VectorError> {
        self.check(query)?;
        if k == 0 || self.index.size() == 0 {
            return Ok(Vec::new());
        }
        // No filter callback: usearch walks the graph without calling back into Rust.
        let matches = self
            .index
            .search(query, k)
            .map_err(|e| VectorError::Backend(e.to_string()))?;
        Ok(similarities(&matches))
    }

    fn search_among(
        &self,
        query: &[f32],
        ids: &[u32],
        k: usize,
    ) -> Result<Vec<(u32, f32)>, VectorError> {
        self.check(query)?;
        let mut buffer = vec![0f32; self.dim];
        let mut scored = Vec::with_capacity(ids.len());
        for &id in ids {
            let found = self
                .index
                .get(u64::from(id), &mut buffer)
                .map_err(|e| VectorError::Backend(e.to_string()))?;
            if found > 0 {
                scored.push((id, crate::dot(query, &buffer)));
            }
        }
        Ok(crate::vector::top_k(scored, k))
    }

    fn is_exact(&self) -> bool {
        false
    }

    fn backend(&self) -> &'static str {
        "hnsw-usearch"
    }

    fn len(&self) -> usize {
        self.index.size()
    }
}

/// An exact index while the corpus is small ([`ExactIndex`] for dense vectors,
/// [`SparseIndex`] for sparse ones), HNSW once it grows past `threshold` vectors.
///
/// The move never stalls the index: when it grows past the threshold, a background thread
/// builds the graph from a copy of the vectors while the exact scan keeps serving every
/// search, upsert and removal. The ids changed meanwhile are noted; once the graph is built,
/// the next call that may change the index ([`VectorIndex::upsert`], [`VectorIndex::remove`]
/// or [`AdaptiveIndex::poll_build`]) replays them into it and swaps it in. From then on the
/// index stays HNSW. A build holds a [`BackgroundPermit`], so that background index work
/// never takes every core from the work in the foreground.
#[derive(Debug)]
pub struct AdaptiveIndex {
    dim: usize,
    layout: Layout,
    /// The size at which the next build starts: the threshold, doubled after a failure.
    next_build: usize,
    config: HnswConfig,
    backend: Backend,
    /// Once on HNSW: exact copies for `search_among` (sparse where the vectors are).
    copies: ExactCopies,
    /// Why the last background build failed, if it did.
    last_error: Option<VectorError>,
    /// Tests hold a build until they send on this.
    #[cfg(test)]
    hold_next_build: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

#[derive(Debug)]
enum Backend {
    Exact(Scan),
    /// The exact scan serves while `build` builds the graph.
    Building(Scan, Build),
    Hnsw(HnswIndex),
}

/// The exact index an adaptive index serves from below its threshold.
#[derive(Debug)]
enum Scan {
    Dense(ExactIndex),
    Sparse(SparseIndex),
}

impl Scan {
    fn new(dim: usize, layout: Layout) -> Self {
        match layout {
            Layout::Dense => Scan::Dense(ExactIndex::new(dim)),
            Layout::Sparse => Scan::Sparse(SparseIndex::new(dim)),
        }
    }

    fn index(&self) -> &dyn VectorIndex {
        match self {
            Scan::Dense(e) => e,
            Scan::Sparse(s) => s,
        }
    }

    fn index_mut(&mut self) -> &mut dyn VectorIndex {
        match self {
            Scan::Dense(e) => e,
            Scan::Sparse(s) => s,
        }
    }

    /// The vector of `id`, if present.
    fn get(&self, id: u32) -> Option<Vec<f32>> {
        match self {
            Scan::Dense(e) => e.get(id).map(<[f32]>::to_vec),
            Scan::Sparse(s) => s.get(id),
        }
    }

    /// Every vector held, as a [`Source`] that owns them.
    fn copied(&self) -> Source {
        let pairs: Vec<(u32, Vec<f32>)> = match self {
            Scan::Dense(e) => e.iter().map(|(id, v)| (id, v.to_vec())).collect(),
            Scan::Sparse(s) => s.iter().collect(),
        };
        Box::new(pairs.into_iter().map(|(id, v)| (id, Some(v))))
    }
}

/// Where an index is in its move from the exact scan to HNSW.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// An exact scan, below the threshold.
    Exact,
    /// An exact scan, with the graph being built in the background.
    Building,
    /// HNSW.
    Hnsw,
}

/// A graph being built in the background.
#[derive(Debug)]
struct Build {
    slot: Arc<BuildSlot>,
    /// Ids upserted or removed since the build started.
    changed: HashSet<u32>,
}

/// What a build thread shares with its index.
#[derive(Debug, Default)]
struct BuildSlot {
    built: Mutex<Option<Built>>,
    done: Condvar,
    /// Set when the index is dropped: the thread gives up.
    cancelled: AtomicBool,
}

impl BuildSlot {
    fn take(&self) -> Option<Built> {
        lock(&self.built).take()
    }

    fn is_done(&self) -> bool {
        lock(&self.built).is_some()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Background index jobs (graph builds, re-embeddings) running at once in this process:
/// half the cores, at least one.
pub fn max_concurrent_builds() -> usize {
    std::thread::available_parallelism().map_or(1, |p| (p.get() / 2).max(1))
}

/// The process-wide count of running background jobs.
static RUNNING_JOBS: Mutex<usize> = Mutex::new(0);
static JOB_FINISHED: Condvar = Condvar::new();

/// A place among the background index jobs of this process ([`max_concurrent_builds`] at
/// once), given back on drop. Graph builds take one; so should anything else that does
/// index work in the background, such as a [`crate::RefreshJob`], so that many indexes in
/// one process (a testnet) never take every core from the work in the foreground.
#[derive(Debug)]
pub struct BackgroundPermit(());

impl BackgroundPermit {
    /// Waits for a place.
    pub fn acquire() -> BackgroundPermit {
        let mut running = lock(&RUNNING_JOBS);
        while *running >= max_concurrent_builds() {
            running = JOB_FINISHED
                .wait(running)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *running += 1;
        BackgroundPermit(())
    }

    /// Waits for a place; `None` if `cancelled` is set meanwhile.
    fn acquire_unless(cancelled: &AtomicBool) -> Option<BackgroundPermit> {
        let max = max_concurrent_builds();
        let mut running = lock(&RUNNING_JOBS);
        loop {
            if cancelled.load(Ordering::Relaxed) {
                return None;
            }
            if *running < max {
                *running += 1;
                return Some(BackgroundPermit(()));
            }
            running = JOB_FINISHED
                .wait_timeout(running, Duration::from_millis(100))
                .map_or_else(|p| p.into_inner().0, |(guard, _)| guard);
        }
    }
}

impl Drop for BackgroundPermit {
    fn drop(&mut self) {
        let mut running = lock(&RUNNING_JOBS);
        *running = running.saturating_sub(1);
        // Every waiter looks again: one woken alone might be a cancelled build.
        JOB_FINISHED.notify_all();
    }
}

/// The vectors a background build puts in the graph, produced on the build thread
/// ([`AdaptiveIndex::start_build`]). `None` for an id keeps the vector the index holds.
pub type Source = Box<dyn Iterator<Item = (u32, Option<Vec<f32>>)> + Send>;

/// A graph, its exact copies, and the ids whose vectors the source left to the index.
type Built = Result<(HnswIndex, ExactCopies, Vec<u32>), VectorError>;

/// Builds the graph and its exact copies from `source`; `None` if cancelled.
fn build_graph(
    dim: usize,
    capacity: usize,
    source: Source,
    config: HnswConfig,
    slot: &BuildSlot,
) -> Option<Built> {
    let _permit = BackgroundPermit::acquire_unless(&slot.cancelled)?;
    let build = || {
        let hnsw = HnswIndex::new(dim, capacity, config)
            .map_err(|e| VectorError::Backend(e.to_string()))?;
        let mut copies = ExactCopies::default();
        let mut left = Vec::new();
        for (n, (id, vector)) in source.enumerate() {
            if n % 64 == 0 && slot.cancelled.load(Ordering::Relaxed) {
                return Ok(None);
            }
            match vector {
                Some(v) => {
                    hnsw.insert_concurrent(id, &v)?;
                    copies.insert(id, &v);
                }
                None => left.push(id),
            }
        }
        Ok(Some((hnsw, copies, left)))
    };
    build().transpose()
}

impl AdaptiveIndex {
    /// An empty index of dense vectors that moves to HNSW (with `config`) once it holds
    /// more than `threshold` vectors.
    pub fn new(dim: usize, threshold: usize, config: HnswConfig) -> Self {
        Self::with_layout(dim, threshold, config, Layout::Dense)
    }

    /// [`AdaptiveIndex::new`] for vectors of the given layout: below the threshold, sparse
    /// vectors are searched exactly through inverted lists ([`crate::SparseIndex`]), dense
    /// ones by a scan ([`ExactIndex`]).
    pub fn with_layout(dim: usize, threshold: usize, config: HnswConfig, layout: Layout) -> Self {
        AdaptiveIndex {
            dim,
            layout,
            next_build: threshold,
            config,
            backend: Backend::Exact(Scan::new(dim, layout)),
            copies: ExactCopies::default(),
            last_error: None,
            #[cfg(test)]
            hold_next_build: Mutex::new(None),
        }
    }

    /// Where the index is in its move to HNSW.
    pub fn phase(&self) -> Phase {
        match self.backend {
            Backend::Exact(_) => Phase::Exact,
            Backend::Building(..) => Phase::Building,
            Backend::Hnsw(_) => Phase::Hnsw,
        }
    }

    /// Whether upserting `more` new vectors would start the move to HNSW.
    pub fn would_start_build(&self, more: usize) -> bool {
        matches!(self.backend, Backend::Exact(_)) && self.len() + more > self.next_build
    }

    /// Why the last background build failed, if it did. The index then stays an exact scan
    /// and tries again at twice the size.
    pub fn last_build_error(&self) -> Option<&VectorError> {
        self.last_error.as_ref()
    }

    /// Whether a background build has finished and waits to be swapped in by
    /// [`AdaptiveIndex::poll_build`].
    pub fn build_ready(&self) -> bool {
        matches!(&self.backend, Backend::Building(_, build) if build.slot.is_done())
    }

    fn inner(&self) -> &dyn VectorIndex {
        match &self.backend {
            Backend::Exact(e) | Backend::Building(e, _) => e.index(),
            Backend::Hnsw(h) => h,
        }
    }

    /// Starts building the graph in the background, unless the index is already building
    /// or on HNSW. The graph is built from `source` if given (the capability index
    /// re-embeds its texts there under the corpus statistics of this moment, away from its
    /// lock), else from a copy of the vectors held now.
    pub fn start_build(&mut self, source: Option<Source>) {
        let Backend::Exact(exact) = &self.backend else {
            return;
        };
        let capacity = exact.index().len() * 2;
        let source = source.unwrap_or_else(|| exact.copied());
        let dim = self.dim;
        let slot = Arc::new(BuildSlot::default());
        let config = self.config;
        let thread_slot = Arc::clone(&slot);
        #[cfg(test)]
        let hold = lock(&self.hold_next_build).take();
        let spawned = std::thread::Builder::new()
            .name("hnsw-build".into())
            .spawn(move || {
                #[cfg(test)]
                if let Some(hold) = hold {
                    let _released = hold.recv();
                }
                let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    build_graph(dim, capacity, source, config, &thread_slot)
                }))
                .unwrap_or_else(|_| {
                    Some(Err(VectorError::Backend("the HNSW build panicked".into())))
                });
                if let Some(built) = built {
                    *lock(&thread_slot.built) = Some(built);
                    thread_slot.done.notify_all();
                }
            });
        match spawned {
            Ok(_detached) => {
                self.backend = match self.take_backend() {
                    Backend::Exact(exact) => Backend::Building(
                        exact,
                        Build {
                            slot,
                            changed: HashSet::new(),
                        },
                    ),
                    other => other,
                };
            }
            Err(e) => self.build_failed(VectorError::Backend(format!(
                "cannot start the HNSW build thread: {e}"
            ))),
        }
    }

    /// Takes the backend out, leaving an empty exact scan (which allocates nothing) for
    /// the moment until it is put back.
    fn take_backend(&mut self) -> Backend {
        let empty = Backend::Exact(Scan::new(self.dim, self.layout));
        std::mem::replace(&mut self.backend, empty)
    }

    /// Stays an exact scan and tries again at twice the size.
    fn build_failed(&mut self, e: VectorError) {
        self.last_error = Some(e);
        self.next_build = self.len().max(1).saturating_mul(2);
    }

    /// Swaps in the graph of a finished background build, after replaying into it the
    /// changes made since its snapshot. Returns whether the index moved to HNSW. Cheap when
    /// no build has finished; a node calls it now and then so that a finished graph does
    /// not wait for the next upsert.
    pub fn poll_build(&mut self) -> bool {
        let Backend::Building(_, build) = &self.backend else {
            return false;
        };
        let Some(built) = build.slot.take() else {
            return false;
        };
        self.finish_build(built)
    }

    /// Waits for a background build, if one is running, and swaps its graph in. Returns
    /// whether the index moved to HNSW.
    pub fn wait_for_build(&mut self) -> bool {
        let Backend::Building(_, build) = &self.backend else {
            return false;
        };
        let slot = Arc::clone(&build.slot);
        let mut built = lock(&slot.built);
        while built.is_none() {
            built = slot.done.wait(built).unwrap_or_else(|p| p.into_inner());
        }
        let Some(done) = built.take() else {
            return false;
        };
        drop(built);
        self.finish_build(done)
    }

    fn finish_build(&mut self, built: Built) -> bool {
        let (exact, build) = match self.take_backend() {
            Backend::Building(exact, build) => (exact, build),
            other => {
                self.backend = other;
                return false;
            }
        };
        let replayed = built.and_then(|(hnsw, mut copies, left)| {
            let mut hnsw = hnsw;
            for &id in build.changed.iter().chain(&left) {
                match exact.get(id) {
                    Some(v) => {
                        hnsw.upsert(id, &v)?;
                        copies.insert(id, &v);
                    }
                    None => {
                        hnsw.remove(id);
                        copies.remove(id);
                    }
                }
            }
            Ok((hnsw, copies))
        });
        match replayed {
            Ok((hnsw, copies)) => {
                self.backend = Backend::Hnsw(hnsw);
                self.copies = copies;
                true
            }
            Err(e) => {
                self.backend = Backend::Exact(exact);
                self.build_failed(e);
                false
            }
        }
    }
}

impl Drop for AdaptiveIndex {
    fn drop(&mut self) {
        if let Backend::Building(_, build) = &self.backend {
            build.slot.cancelled.store(true, Ordering::Relaxed);
        }
    }
}

impl VectorIndex for AdaptiveIndex {
    fn dim(&self) -> usize {
        self.dim
    }

    fn upsert(&mut self, id: u32, vector: &[f32]) -> Result<(), VectorError> {
        crate::vector::check_dim(self.dim, vector)?;
        self.poll_build();
        match &mut self.backend {
            Backend::Exact(exact) => exact.index_mut().upsert(id, vector)?,
            Backend::Building(exact, build) => {
                exact.index_mut().upsert(id, vector)?;
                build.changed.insert(id);
            }
            Backend::Hnsw(hnsw) => {
                hnsw.upsert(id, vector)?;
                self.copies.insert(id, vector);
            }
        }
        if matches!(self.backend, Backend::Exact(_)) && self.len() > self.next_build {
            self.start_build(None);
        }
        Ok(())
    }

    fn remove(&mut self, id: u32) -> bool {
        self.poll_build();
        match &mut self.backend {
            Backend::Exact(exact) => exact.index_mut().remove(id),
            Backend::Building(exact, build) => {
                build.changed.insert(id);
                exact.index_mut().remove(id)
            }
            Backend::Hnsw(hnsw) => {
                self.copies.remove(id);
                hnsw.remove(id)
            }
        }
    }

    fn search(
        &self,
        query: &[f32],
        k: usize,
        keep: &dyn Fn(u32) -> bool,
    ) -> Result<Vec<(u32, f32)>, VectorError> {
        self.inner().search(query, k, keep)
    }

    fn search_all(&self, query: &[f32], k: usize) -> Result<Vec<(u32, f32)>, VectorError> {
        self.inner().search_all(query, k)
    }

    fn search_among(
        &self,
        query: &[f32],
        ids: &[u32],
        k: usize,
    ) -> Result<Vec<(u32, f32)>, VectorError> {
        match &self.backend {
            Backend::Exact(e) | Backend::Building(e, _) => e.index().search_among(query, ids, k),
            Backend::Hnsw(_) => {
                crate::vector::check_dim(self.dim, query)?;
                Ok(self.copies.search_among(query, ids, k))
            }
        }
    }

    fn is_exact(&self) -> bool {
        self.inner().is_exact()
    }

    fn backend(&self) -> &'static str {
        self.inner().backend()
    }

    fn len(&self) -> usize {
        self.inner().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(i: u32, dim: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dim)
            .map(|j| {
                let h = crate::text::fnv1a(&[i.to_le_bytes(), (j as u32).to_le_bytes()].concat());
                (h % 1000) as f32 - 500.0
            })
            .collect();
        crate::normalise(&mut v);
        v
    }

    #[test]
    fn insert_search_filter_remove() {
        let dim = 16;
        let mut index = HnswIndex::new(dim, 8, HnswConfig::default()).expect("index");
        for i in 0..200 {
            index.upsert(i, &unit(i, dim)).expect("upsert");
        }
        assert_eq!(index.len(), 200);
        let top = index.search(&unit(42, dim), 1, &|_| true).expect("search");
        assert_eq!(top[0].0, 42);
        assert!((top[0].1 - 1.0).abs() < 1e-4);
        let top = index
            .search(&unit(42, dim), 1, &|id| id != 42)
            .expect("search");
        assert_ne!(top[0].0, 42);
        assert!(index.remove(42));
        assert!(!index.remove(42));
        let top = index.search(&unit(42, dim), 5, &|_| true).expect("search");
        assert!(top.iter().all(|(id, _)| *id != 42));
        // Re-upserting replaces, never duplicates.
        index.upsert(7, &unit(8, dim)).expect("upsert");
        assert_eq!(index.len(), 199);
        assert!(index.upsert(1, &[0.0; 3]).is_err());
        assert_eq!(index.exact_search(&unit(9, dim), 1).expect("exact")[0].0, 9);
        let among = index
            .search_among(&unit(9, dim), &[3, 9, 42, 11], 2)
            .expect("among");
        assert_eq!(among.len(), 2);
        assert_eq!(among[0].0, 9);
    }

    #[test]
    fn adaptive_switches_to_hnsw_and_keeps_every_vector() {
        for (layout, exact) in [(Layout::Dense, "exact"), (Layout::Sparse, "exact-sparse")] {
            switches_to_hnsw(layout, exact);
        }
    }

    fn switches_to_hnsw(layout: Layout, exact: &str) {
        let dim = 16;
        let mut index = AdaptiveIndex::with_layout(dim, 50, HnswConfig::default(), layout);
        for i in 0..50 {
            index.upsert(i, &unit(i, dim)).expect("upsert");
        }
        assert_eq!(index.backend(), exact);
        assert!(index.is_exact());
        for i in 50..120 {
            index.upsert(i, &unit(i, dim)).expect("upsert");
        }
        // Replaced while the graph builds (or just after): replayed from the exact index.
        index.upsert(7, &unit(1007, dim)).expect("upsert");
        index.wait_for_build();
        let top = index
            .search(&unit(1007, dim), 1, &|_| true)
            .expect("search");
        assert_eq!(top[0].0, 7, "the replaced vector is in the graph");
        assert_eq!(index.phase(), Phase::Hnsw);
        assert_eq!(index.backend(), "hnsw-usearch");
        assert_eq!(index.len(), 120);
        for i in [0, 25, 49, 50, 119] {
            let top = index.search(&unit(i, dim), 1, &|_| true).expect("search");
            assert_eq!(top[0].0, i, "vector {i} survived the move");
        }
        assert!(index.remove(3));
        assert_eq!(index.len(), 119);
        assert!(index.upsert(1, &[0.0; 3]).is_err());
    }

    /// An index just past `threshold` whose background build waits until the returned
    /// sender sends (or is dropped).
    fn held_past_threshold(
        dim: usize,
        threshold: u32,
    ) -> (AdaptiveIndex, std::sync::mpsc::SyncSender<()>) {
        let mut index = AdaptiveIndex::new(dim, threshold as usize, HnswConfig::default());
        let (release, hold) = std::sync::mpsc::sync_channel(1);
        index.hold_next_build = Mutex::new(Some(hold));
        for i in 0..=threshold {
            index.upsert(i, &unit(i, dim)).expect("upsert");
        }
        (index, release)
    }

    #[test]
    fn changes_made_while_the_graph_builds_are_replayed_into_it() {
        let dim = 16;
        let (mut index, release) = held_past_threshold(dim, 100);
        // Past the threshold: the graph builds in the background (held here) while the
        // exact scan serves.
        assert_eq!(index.phase(), Phase::Building);
        assert!(index.is_exact());
        assert!(!index.build_ready());
        assert!(!index.poll_build());
        // Changes while it builds: new vectors, a replaced one, removed ones.
        for i in 101..150 {
            index.upsert(i, &unit(i, dim)).expect("upsert");
        }
        index.upsert(7, &unit(1007, dim)).expect("upsert");
        assert!(index.remove(3));
        assert!(index.remove(120));
        assert!(!index.would_start_build(1000), "one build at a time");
        let top = index.search(&unit(140, dim), 1, &|_| true).expect("search");
        assert_eq!(top[0].0, 140, "the exact scan serves new vectors at once");
        release.send(()).expect("release");
        assert!(index.wait_for_build());
        assert_eq!(index.phase(), Phase::Hnsw);
        assert_eq!(index.len(), 148);
        for i in [0, 50, 100, 101, 149] {
            let top = index.search(&unit(i, dim), 1, &|_| true).expect("search");
            assert_eq!(top[0].0, i, "vector {i} is in the graph");
        }
        let top = index
            .search(&unit(1007, dim), 1, &|_| true)
            .expect("search");
        assert_eq!(top[0].0, 7, "the replaced vector was replayed");
        for gone in [3, 120] {
            let top = index
                .search(&unit(gone, dim), 5, &|_| true)
                .expect("search");
            assert!(
                top.iter().all(|(id, _)| *id != gone),
                "{gone} stays removed"
            );
            let among = index
                .search_among(&unit(gone, dim), &[gone], 1)
                .expect("among");
            assert!(among.is_empty(), "{gone} has no exact copy");
        }
        assert!(index.last_build_error().is_none());
    }

    #[test]
    fn an_index_dropped_while_its_graph_waits_cancels_the_build() {
        let dim = 16;
        let (index, release) = held_past_threshold(dim, 10);
        let Backend::Building(_, build) = &index.backend else {
            panic!("building");
        };
        let slot = Arc::clone(&build.slot);
        drop(index);
        assert!(slot.cancelled.load(Ordering::Relaxed));
        release.send(()).expect("release");
        // The thread gives up without building: nothing is ever put in the slot.
        for _ in 0..50 {
            if Arc::strong_count(&slot) == 1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(Arc::strong_count(&slot), 1, "the build thread has ended");
        assert!(!slot.is_done());
    }
}
