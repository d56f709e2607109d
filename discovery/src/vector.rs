//! Dense vector search behind a trait: an exact scan for small corpora, HNSW for large ones
//! ([`crate::AdaptiveIndex`] switches at a measured crossover).

use std::collections::HashMap;

use crate::embed::dot;

/// Why a vector was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VectorError {
    /// The vector's dimension differs from the index's.
    #[error("vector has {found} dimensions; the index holds {expected}")]
    Dimension {
        /// The index's dimension.
        expected: usize,
        /// The vector's.
        found: usize,
    },
    /// The index backend failed (for example, it could not allocate).
    #[error("vector index backend: {0}")]
    Backend(String),
}

/// Fails unless `v` has `expected` dimensions: every backend checks every vector with it.
pub(crate) fn check_dim(expected: usize, v: &[f32]) -> Result<(), VectorError> {
    if v.len() != expected {
        return Err(VectorError::Dimension {
            expected,
            found: v.len(),
        });
    }
    Ok(())
}

/// How an embedder's vectors are laid out, which decides how they are searched exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Layout {
    /// Most entries are non-zero (a neural model's): scanned whole.
    #[default]
    Dense,
    /// Most entries are zero (the lexical embedder's): searched through inverted lists.
    Sparse,
}

/// A set of unit vectors searchable by inner product.
pub trait VectorIndex: Send + Sync {
    /// The dimension of every vector.
    fn dim(&self) -> usize;

    /// Inserts or replaces the vector of `id`.
    fn upsert(&mut self, id: u32, vector: &[f32]) -> Result<(), VectorError>;

    /// Removes `id`; returns whether it was present.
    fn remove(&mut self, id: u32) -> bool;

    /// The `k` highest inner products among the ids that `keep` accepts, best first.
    fn search(
        &self,
        query: &[f32],
        k: usize,
        keep: &dyn Fn(u32) -> bool,
    ) -> Result<Vec<(u32, f32)>, VectorError>;

    /// The `k` highest inner products over every vector, best first. Backends override it
    /// when an unfiltered search is cheaper than a filtered one.
    fn search_all(&self, query: &[f32], k: usize) -> Result<Vec<(u32, f32)>, VectorError> {
        self.search(query, k, &|_| true)
    }

    /// Exact inner products of `query` with the vectors of `ids` (ids not present are
    /// skipped), best first, at most `k`.
    fn search_among(
        &self,
        query: &[f32],
        ids: &[u32],
        k: usize,
    ) -> Result<Vec<(u32, f32)>, VectorError>;

    /// Whether [`VectorIndex::search`] is exact. An approximate filtered search may return
    /// fewer than `k` results although more match; callers then fall back to
    /// [`VectorIndex::search_among`].
    fn is_exact(&self) -> bool;

    /// A short name of the backend, for reports.
    fn backend(&self) -> &'static str;

    /// Number of vectors.
    fn len(&self) -> usize;

    /// Whether the index is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Exact search: a scan over contiguous vectors with a vectorised dot product. Exact by
/// construction, and the fastest choice while the corpus is small.
#[derive(Debug, Clone)]
pub struct ExactIndex {
    dim: usize,
    ids: Vec<u32>,
    vectors: Vec<f32>,
    position: HashMap<u32, usize>,
}

impl ExactIndex {
    /// An empty index of dimension `dim`.
    pub fn new(dim: usize) -> Self {
        ExactIndex {
            dim,
            ids: Vec::new(),
            vectors: Vec::new(),
            position: HashMap::new(),
        }
    }

    fn check(&self, v: &[f32]) -> Result<(), VectorError> {
        check_dim(self.dim, v)
    }

    /// The vector of `id`, if present.
    pub(crate) fn get(&self, id: u32) -> Option<&[f32]> {
        let i = *self.position.get(&id)?;
        self.vectors.get(i * self.dim..(i + 1) * self.dim)
    }

    /// Every (id, vector) pair, in storage order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &[f32])> {
        self.ids
            .iter()
            .copied()
            .zip(self.vectors.chunks_exact(self.dim.max(1)))
    }
}

/// A vector kept for exact scoring of given ids: sparse if at most a quarter of its entries
/// are non-zero, else dense. A dense vector is scored against a sparse query by reading only
/// the query's dimensions, which a sparse one cannot do; a quarter keeps the sparse form to
/// vectors whose every entry costs less to read than the query's few.
#[derive(Debug, Clone)]
pub(crate) enum Stored {
    Dense(Box<[f32]>),
    Sparse(Box<[(u32, f32)]>),
}

/// The non-zero entries of a query, (dimension, value): a lexical query has fewer than a
/// hundred of 2,048, so a stored dense vector is scored by reading only those.
pub(crate) fn terms(query: &[f32]) -> Vec<(u32, f32)> {
    query
        .iter()
        .enumerate()
        .filter(|(_, q)| **q != 0.0)
        .map(|(d, q)| (d as u32, *q))
        .collect()
}

impl Stored {
    pub(crate) fn new(v: &[f32]) -> Self {
        let nonzero = v.iter().filter(|x| **x != 0.0).count();
        if nonzero * 4 <= v.len() {
            Stored::Sparse(
                v.iter()
                    .enumerate()
                    .filter(|(_, x)| **x != 0.0)
                    .map(|(i, x)| (i as u32, *x))
                    .collect(),
            )
        } else {
            Stored::Dense(v.into())
        }
    }

    /// The inner product with `query`, whose non-zero entries are `terms`: whichever of
    /// the two reads fewer entries.
    pub(crate) fn dot(&self, query: &[f32], terms: &[(u32, f32)]) -> f32 {
        match self {
            Stored::Dense(v) if terms.len() * 4 < v.len() => terms
                .iter()
                .map(|&(i, q)| v.get(i as usize).map_or(0.0, |x| q * x))
                .sum(),
            Stored::Dense(v) => dot(query, v),
            Stored::Sparse(entries) => entries
                .iter()
                .map(|&(i, x)| query.get(i as usize).map_or(0.0, |q| q * x))
                .sum(),
        }
    }

    /// Entries [`Stored::dot`] reads.
    pub(crate) fn cost(&self, terms: usize) -> usize {
        match self {
            Stored::Dense(v) if terms * 4 < v.len() => terms,
            Stored::Dense(v) => v.len(),
            Stored::Sparse(entries) => entries.len(),
        }
    }

    /// The vector, dense.
    pub(crate) fn to_dense(&self, dim: usize) -> Vec<f32> {
        match self {
            Stored::Dense(v) => v.to_vec(),
            Stored::Sparse(entries) => {
                let mut v = vec![0f32; dim];
                for &(i, x) in entries.iter() {
                    if let Some(slot) = v.get_mut(i as usize) {
                        *slot = x;
                    }
                }
                v
            }
        }
    }
}

/// Exact copies of vectors by id, compact for sparse vectors: what an approximate index
/// scores against when it must be exact ([`VectorIndex::search_among`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct ExactCopies {
    by_id: Vec<Option<Stored>>,
}

impl ExactCopies {
    pub(crate) fn insert(&mut self, id: u32, v: &[f32]) {
        let slot = id as usize;
        if self.by_id.len() <= slot {
            self.by_id.resize(slot + 1, None);
        }
        self.by_id[slot] = Some(Stored::new(v));
    }

    pub(crate) fn remove(&mut self, id: u32) {
        if let Some(slot) = self.by_id.get_mut(id as usize) {
            *slot = None;
        }
        while self.by_id.last().is_some_and(Option::is_none) {
            self.by_id.pop();
        }
    }

    /// Exact top `k` among `ids` (absent ids skipped).
    pub(crate) fn search_among(&self, query: &[f32], ids: &[u32], k: usize) -> Vec<(u32, f32)> {
        let terms = terms(query);
        let scored = ids
            .iter()
            .filter_map(|&id| {
                let stored = self.by_id.get(id as usize)?.as_ref()?;
                Some((id, stored.dot(query, &terms)))
            })
            .collect();
        top_k(scored, k)
    }
}

/// The `k` best of `scored`, best first (ties by id).
pub(crate) fn top_k(scored: Vec<(u32, f32)>, k: usize) -> Vec<(u32, f32)> {
    top_k_by(scored, k, |a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)))
}

/// The first `k` of `scored` under `order`, in that order.
pub(crate) fn top_k_by(
    mut scored: Vec<(u32, f32)>,
    k: usize,
    order: impl Fn(&(u32, f32), &(u32, f32)) -> std::cmp::Ordering,
) -> Vec<(u32, f32)> {
    let k = k.min(scored.len());
    if k == 0 {
        return Vec::new();
    }
    scored.select_nth_unstable_by(k - 1, &order);
    scored.truncate(k);
    scored.sort_by(order);
    scored
}

impl VectorIndex for ExactIndex {
    fn dim(&self) -> usize {
        self.dim
    }

    fn upsert(&mut self, id: u32, vector: &[f32]) -> Result<(), VectorError> {
        self.check(vector)?;
        match self.position.get(&id) {
            Some(&i) => self.vectors[i * self.dim..(i + 1) * self.dim].copy_from_slice(vector),
            None => {
                self.position.insert(id, self.ids.len());
                self.ids.push(id);
                self.vectors.extend_from_slice(vector);
            }
        }
        Ok(())
    }

    fn remove(&mut self, id: u32) -> bool {
        let Some(i) = self.position.remove(&id) else {
            return false;
        };
        let last = self.ids.len() - 1;
        if i != last {
            let moved = self.ids[last];
            self.ids[i] = moved;
            self.vectors
                .copy_within(last * self.dim..(last + 1) * self.dim, i * self.dim);
            self.position.insert(moved, i);
        }
        self.ids.pop();
        self.vectors.truncate(last * self.dim);
        true
    }

    fn search(
        &self,
        query: &[f32],
        k: usize,
        keep: &dyn Fn(u32) -> bool,
    ) -> Result<Vec<(u32, f32)>, VectorError> {
        self.check(query)?;
        let scored: Vec<(u32, f32)> = self
            .iter()
            .filter(|(id, _)| keep(*id))
            .map(|(id, v)| (id, dot(query, v)))
            .collect();
        Ok(top_k(scored, k))
    }

    fn search_among(
        &self,
        query: &[f32],
        ids: &[u32],
        k: usize,
    ) -> Result<Vec<(u32, f32)>, VectorError> {
        self.check(query)?;
        let scored: Vec<(u32, f32)> = ids
            .iter()
            .filter_map(|id| {
                let i = *self.position.get(id)?;
                Some((
                    *id,
                    dot(query, &self.vectors[i * self.dim..(i + 1) * self.dim]),
                ))
            })
            .collect();
        Ok(top_k(scored, k))
    }

    fn is_exact(&self) -> bool {
        true
    }

    fn backend(&self) -> &'static str {
        "exact"
    }

    fn len(&self) -> usize {
        self.ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsert_remove_and_filtered_search() {
        let mut index = ExactIndex::new(2);
        index.upsert(1, &[1.0, 0.0]).expect("dim");
        index.upsert(2, &[0.0, 1.0]).expect("dim");
        index.upsert(3, &[0.7, 0.7]).expect("dim");
        let top = index.search(&[1.0, 0.0], 2, &|_| true).expect("dim");
        assert_eq!(top.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 3]);
        let top = index.search(&[1.0, 0.0], 2, &|id| id != 1).expect("dim");
        assert_eq!(top.iter().map(|r| r.0).collect::<Vec<_>>(), vec![3, 2]);
        assert!(index.remove(1));
        assert!(!index.remove(1));
        index.upsert(3, &[0.0, 1.0]).expect("dim");
        let top = index.search(&[0.0, 1.0], 5, &|_| true).expect("dim");
        assert_eq!(top.len(), 2);
        assert_eq!(
            index.upsert(4, &[1.0]),
            Err(VectorError::Dimension {
                expected: 2,
                found: 1
            })
        );
        assert!(index.search(&[1.0, 0.0, 0.0], 1, &|_| true).is_err());
    }
}
