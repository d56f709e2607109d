//! Exact search over sparse vectors through an inverted list per dimension
//! (`specs/discovery.md#dense-index`).
//!
//! A lexical vector has a few hundred of its 2,048 entries set, and a query's vector fewer
//! than a hundred. A scan of whole vectors reads every entry of every vector; this index reads
//! only the lists of the dimensions the query has, so an exact search costs a small share of
//! a scan, and it stays exact for every filter.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use crate::vector::{Stored, VectorError, VectorIndex, check_dim, terms};

/// Marks a slot whose vector was replaced or removed.
const DEAD: u32 = u32::MAX;

/// Dead entries are dropped once they outnumber the live ones and there are at least this
/// many.
const COMPACT_MIN: usize = 1 << 16;

/// An exact inner-product index for sparse vectors.
///
/// Each upsert appends the vector's non-zero entries to the lists of their dimensions under
/// a new slot; a replaced or removed vector's slot is marked dead and its entries are
/// skipped until a compaction (amortised: when dead entries outnumber live ones) drops
/// them. Every vector is also kept whole (as its non-zero entries if fewer than half are
/// set), which scores given ids by reading only the query's dimensions
/// ([`VectorIndex::search_among`], what a filter uses) and gives vectors back.
#[derive(Debug, Clone)]
pub struct SparseIndex {
    dim: usize,
    /// Per dimension, (slot, value) of every non-zero entry, in slot order.
    lists: Vec<Vec<(u32, f32)>>,
    /// Per slot, the id it holds, or [`DEAD`].
    ids: Vec<u32>,
    /// Per slot, its vector (`None` once dead) and its count of non-zero entries.
    rows: Vec<(Option<Stored>, u32)>,
    /// The live slot of each id.
    slot: HashMap<u32, u32>,
    live_entries: usize,
    dead_entries: usize,
}

/// A scored id, ordered best first: higher score, then lower id (as [`crate::vector::top_k`]).
#[derive(Clone, Copy, PartialEq)]
struct Ranked(f32, u32);

impl Eq for Ranked {}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        // "Greater" is worse, so that a max-heap keeps the worst of the best on top.
        other.0.total_cmp(&self.0).then(self.1.cmp(&other.1))
    }
}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The best `k` of a stream of scored ids, best first, ties by id.
struct Best {
    k: usize,
    heap: BinaryHeap<Ranked>,
}

impl Best {
    fn new(k: usize) -> Self {
        Best {
            k,
            heap: BinaryHeap::with_capacity(k.min(4096) + 1),
        }
    }

    fn offer(&mut self, id: u32, score: f32) {
        let candidate = Ranked(score, id);
        if self.heap.len() < self.k {
            self.heap.push(candidate);
        } else if self.heap.peek().is_some_and(|worst| candidate < *worst) {
            self.heap.pop();
            self.heap.push(candidate);
        }
    }

    fn into_sorted(self) -> Vec<(u32, f32)> {
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|Ranked(score, id)| (id, score))
            .collect()
    }
}

impl SparseIndex {
    /// An empty index of dimension `dim`.
    pub fn new(dim: usize) -> Self {
        SparseIndex {
            dim,
            // Made on the first upsert, so that an empty index allocates nothing.
            lists: Vec::new(),
            ids: Vec::new(),
            rows: Vec::new(),
            slot: HashMap::new(),
            live_entries: 0,
            dead_entries: 0,
        }
    }

    /// The vector of `id`, if present.
    pub fn get(&self, id: u32) -> Option<Vec<f32>> {
        let (row, _) = self.rows.get(*self.slot.get(&id)? as usize)?;
        Some(row.as_ref()?.to_dense(self.dim))
    }

    /// Every (id, vector) pair, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, Vec<f32>)> + '_ {
        self.ids
            .iter()
            .filter(|&&id| id != DEAD)
            .filter_map(|&id| Some((id, self.get(id)?)))
    }

    /// Non-zero entries stored, live and dead: the index's size in entries.
    pub fn entries(&self) -> usize {
        self.live_entries + self.dead_entries
    }

    /// Marks `id`'s slot dead; returns whether `id` was present.
    fn kill(&mut self, id: u32) -> bool {
        let Some(slot) = self.slot.remove(&id) else {
            return false;
        };
        let slot = slot as usize;
        let (row, nnz) = &mut self.rows[slot];
        *row = None;
        self.live_entries -= *nnz as usize;
        self.dead_entries += *nnz as usize;
        self.ids[slot] = DEAD;
        true
    }

    /// Drops dead slots and their entries, renumbering the live slots in order.
    fn compact(&mut self) {
        let mut renumbered = vec![DEAD; self.ids.len()];
        let mut next = 0u32;
        for (slot, &id) in self.ids.iter().enumerate() {
            if id != DEAD {
                renumbered[slot] = next;
                next += 1;
            }
        }
        for list in &mut self.lists {
            list.retain_mut(|(slot, _)| {
                let to = renumbered[*slot as usize];
                *slot = to;
                to != DEAD
            });
        }
        let rows = std::mem::take(&mut self.rows);
        let mut ids = Vec::with_capacity(next as usize);
        let mut kept = Vec::with_capacity(next as usize);
        for (id, row) in self.ids.iter().zip(rows) {
            if *id != DEAD {
                self.slot.insert(*id, ids.len() as u32);
                ids.push(*id);
                kept.push(row);
            }
        }
        self.ids = ids;
        self.rows = kept;
        self.dead_entries = 0;
    }

    /// The inner product of `query` with every slot, live or dead (dead slots score 0).
    fn accumulate(&self, query: &[f32]) -> Vec<f32> {
        let mut scores = vec![0f32; self.ids.len()];
        for (list, &q) in self.lists.iter().zip(query) {
            if q == 0.0 {
                continue;
            }
            for &(slot, x) in list {
                // Slots in a list are below `ids.len()`.
                if let Some(s) = scores.get_mut(slot as usize) {
                    *s += q * x;
                }
            }
        }
        scores
    }

    /// Entries an accumulation over every list of `query`'s dimensions reads.
    fn accumulation_cost(&self, query: &[f32]) -> usize {
        self.lists
            .iter()
            .zip(query)
            .filter(|(_, q)| **q != 0.0)
            .map(|(list, _)| list.len())
            .sum::<usize>()
            + self.ids.len()
    }

    /// The `k` best live ids that `keep` accepts, from one accumulation over the lists.
    fn best_kept(
        &self,
        query: &[f32],
        k: usize,
        keep: impl Fn(u32) -> bool,
    ) -> Result<Vec<(u32, f32)>, VectorError> {
        check_dim(self.dim, query)?;
        if k == 0 || self.slot.is_empty() {
            return Ok(Vec::new());
        }
        let scores = self.accumulate(query);
        let mut best = Best::new(k);
        for (&id, &score) in self.ids.iter().zip(&scores) {
            if id != DEAD && keep(id) {
                best.offer(id, score);
            }
        }
        Ok(best.into_sorted())
    }

    fn row(&self, slot: u32) -> Option<&Stored> {
        self.rows.get(slot as usize)?.0.as_ref()
    }
}

impl VectorIndex for SparseIndex {
    fn dim(&self) -> usize {
        self.dim
    }

    fn upsert(&mut self, id: u32, vector: &[f32]) -> Result<(), VectorError> {
        check_dim(self.dim, vector)?;
        let slot = u32::try_from(self.ids.len())
            .ok()
            .filter(|s| *s != DEAD)
            .ok_or_else(|| VectorError::Backend("the sparse index is full".into()))?;
        self.kill(id);
        if self.lists.is_empty() {
            self.lists = vec![Vec::new(); self.dim];
        }
        let nonzero = terms(vector);
        for &(d, x) in &nonzero {
            self.lists[d as usize].push((slot, x));
        }
        self.live_entries += nonzero.len();
        self.ids.push(id);
        self.rows
            .push((Some(Stored::new(vector)), nonzero.len() as u32));
        self.slot.insert(id, slot);
        if self.dead_entries > self.live_entries && self.dead_entries >= COMPACT_MIN {
            self.compact();
        }
        Ok(())
    }

    fn remove(&mut self, id: u32) -> bool {
        let removed = self.kill(id);
        if self.slot.is_empty() {
            *self = SparseIndex::new(self.dim);
        } else if self.dead_entries > self.live_entries && self.dead_entries >= COMPACT_MIN {
            self.compact();
        }
        removed
    }

    fn search(
        &self,
        query: &[f32],
        k: usize,
        keep: &dyn Fn(u32) -> bool,
    ) -> Result<Vec<(u32, f32)>, VectorError> {
        self.best_kept(query, k, keep)
    }

    fn search_all(&self, query: &[f32], k: usize) -> Result<Vec<(u32, f32)>, VectorError> {
        self.best_kept(query, k, |_| true)
    }

    fn search_among(
        &self,
        query: &[f32],
        ids: &[u32],
        k: usize,
    ) -> Result<Vec<(u32, f32)>, VectorError> {
        check_dim(self.dim, query)?;
        let slots: Vec<(u32, u32)> = ids
            .iter()
            .filter_map(|id| Some((*id, *self.slot.get(id)?)))
            .collect();
        let terms = terms(query);
        let row_cost: usize = slots
            .iter()
            .filter_map(|&(_, s)| Some(self.row(s)?.cost(terms.len())))
            .sum();
        let mut best = Best::new(k);
        if row_cost <= self.accumulation_cost(query) {
            for (id, slot) in slots {
                let score = self.row(slot).map_or(0.0, |r| r.dot(query, &terms));
                best.offer(id, score);
            }
        } else {
            let scores = self.accumulate(query);
            for (id, slot) in slots {
                best.offer(id, scores.get(slot as usize).copied().unwrap_or(0.0));
            }
        }
        Ok(best.into_sorted())
    }

    fn is_exact(&self) -> bool {
        true
    }

    fn backend(&self) -> &'static str {
        "exact-sparse"
    }

    fn len(&self) -> usize {
        self.slot.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vector::ExactIndex;

    /// A sparse unit vector from `seed`: about one entry in eight set.
    fn sparse(seed: u32, dim: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dim)
            .map(|j| {
                let h =
                    crate::text::fnv1a(&[seed.to_le_bytes(), (j as u32).to_le_bytes()].concat());
                if h.is_multiple_of(8) {
                    (h % 1000) as f32 / 500.0 - 1.0
                } else {
                    0.0
                }
            })
            .collect();
        crate::normalise(&mut v);
        v
    }

    #[test]
    fn agrees_with_the_dense_scan_through_replacements_removals_and_compactions() {
        let dim = 256;
        let mut sparse_index = SparseIndex::new(dim);
        let mut dense = ExactIndex::new(dim);
        let mut step = 0u32;
        for round in 0..6u32 {
            for id in 0..3000u32 {
                step += 1;
                let v = sparse(step, dim);
                // Replace everything each round, and remove every seventh id in odd rounds.
                if round % 2 == 1 && id % 7 == 0 {
                    assert_eq!(sparse_index.remove(id), dense.remove(id));
                } else {
                    sparse_index.upsert(id, &v).expect("dim");
                    dense.upsert(id, &v).expect("dim");
                }
            }
            assert_eq!(sparse_index.len(), dense.len());
            assert!(
                sparse_index.dead_entries <= sparse_index.live_entries
                    || sparse_index.dead_entries < COMPACT_MIN,
                "dead entries are compacted away"
            );
            for q in 0..20 {
                let query = sparse(1_000_000 + round * 100 + q, dim);
                let a = sparse_index.search_all(&query, 10).expect("dim");
                let b = dense.search_all(&query, 10).expect("dim");
                let ids = |r: &[(u32, f32)]| r.iter().map(|x| x.0).collect::<Vec<_>>();
                assert_eq!(ids(&a), ids(&b), "round {round} query {q}");
                for (x, y) in a.iter().zip(&b) {
                    assert!((x.1 - y.1).abs() < 1e-5);
                }
                let odd = |id: u32| id % 2 == 1;
                let a = sparse_index.search(&query, 10, &odd).expect("dim");
                let b = dense.search(&query, 10, &odd).expect("dim");
                assert_eq!(ids(&a), ids(&b));
                let among: Vec<u32> = (0..3000).step_by(3).collect();
                let a = sparse_index.search_among(&query, &among, 5).expect("dim");
                let b = dense.search_among(&query, &among, 5).expect("dim");
                assert_eq!(ids(&a), ids(&b));
                let few = [4, 9, 2999, 5000];
                let a = sparse_index.search_among(&query, &few, 5).expect("dim");
                let b = dense.search_among(&query, &few, 5).expect("dim");
                assert_eq!(ids(&a), ids(&b));
            }
        }
        let v = sparse(42, dim);
        sparse_index.upsert(12, &v).expect("dim");
        assert_eq!(sparse_index.get(12), Some(v));
        assert_eq!(sparse_index.iter().count(), sparse_index.len());
        assert!(sparse_index.upsert(1, &[0.0; 3]).is_err());
        assert!(sparse_index.search_all(&[0.0; 3], 1).is_err());
        for id in 0..3000 {
            sparse_index.remove(id);
        }
        assert!(sparse_index.is_empty());
        assert_eq!(sparse_index.entries(), 0, "an emptied index holds nothing");
        assert!(
            sparse_index
                .search_all(&sparse(1, dim), 3)
                .expect("dim")
                .is_empty()
        );
    }
}
