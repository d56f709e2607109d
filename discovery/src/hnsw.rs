//! HNSW through usearch: approximate search for large corpora, with true deletes.
//!
//! usearch (Unum) is a maintained C++ HNSW with Rust bindings. It was chosen over
//! instant-distance, which builds in batch only (no insert, no delete) and took 264 s to
//! build 100k × 384 vectors on this machine, against about 48 s for usearch
//! (`docs/design/0004-hnsw-backend.md`).

use std::sync::RwLock;

use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use crate::vector::{ExactCopies, ExactIndex, VectorError, VectorIndex};

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

/// An exact scan while the corpus is small, HNSW once it grows past `threshold` vectors:
/// the vectors move into the graph in one step, and the index stays HNSW from then on.
#[derive(Debug)]
pub struct AdaptiveIndex {
    dim: usize,
    threshold: usize,
    config: HnswConfig,
    backend: Backend,
    /// Once on HNSW: exact copies for `search_among` (sparse where the vectors are).
    copies: ExactCopies,
}

#[derive(Debug)]
enum Backend {
    Exact(ExactIndex),
    Hnsw(HnswIndex),
}

impl AdaptiveIndex {
    /// An empty index that switches to HNSW (with `config`) above `threshold` vectors.
    pub fn new(dim: usize, threshold: usize, config: HnswConfig) -> Self {
        AdaptiveIndex {
            dim,
            threshold,
            config,
            backend: Backend::Exact(ExactIndex::new(dim)),
            copies: ExactCopies::default(),
        }
    }

    fn inner(&self) -> &dyn VectorIndex {
        match &self.backend {
            Backend::Exact(e) => e,
            Backend::Hnsw(h) => h,
        }
    }

    fn inner_mut(&mut self) -> &mut dyn VectorIndex {
        match &mut self.backend {
            Backend::Exact(e) => e,
            Backend::Hnsw(h) => h,
        }
    }

    fn migrate(&mut self) -> Result<(), VectorError> {
        let Backend::Exact(exact) = &self.backend else {
            return Ok(());
        };
        let hnsw = HnswIndex::new(self.dim, exact.len() * 2, self.config)
            .map_err(|e| VectorError::Backend(e.to_string()))?;
        let mut copies = ExactCopies::default();
        for (id, v) in exact.iter() {
            hnsw.insert_concurrent(id, v)?;
            copies.insert(id, v);
        }
        self.backend = Backend::Hnsw(hnsw);
        self.copies = copies;
        Ok(())
    }
}

impl VectorIndex for AdaptiveIndex {
    fn dim(&self) -> usize {
        self.dim
    }

    fn upsert(&mut self, id: u32, vector: &[f32]) -> Result<(), VectorError> {
        crate::vector::check_dim(self.dim, vector)?;
        if matches!(self.backend, Backend::Exact(_)) && self.len() >= self.threshold {
            self.migrate()?;
        }
        self.inner_mut().upsert(id, vector)?;
        if matches!(self.backend, Backend::Hnsw(_)) {
            self.copies.insert(id, vector);
        }
        Ok(())
    }

    fn remove(&mut self, id: u32) -> bool {
        self.copies.remove(id);
        self.inner_mut().remove(id)
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
            Backend::Exact(e) => e.search_among(query, ids, k),
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
        let dim = 16;
        let mut index = AdaptiveIndex::new(dim, 50, HnswConfig::default());
        for i in 0..50 {
            index.upsert(i, &unit(i, dim)).expect("upsert");
        }
        assert_eq!(index.backend(), "exact");
        assert!(index.is_exact());
        for i in 50..120 {
            index.upsert(i, &unit(i, dim)).expect("upsert");
        }
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
}
