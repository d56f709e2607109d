//! Personalised EigenTrust on a weighted graph, computed by power iteration from scratch and
//! kept current by residual pushes when an edge changes (`specs/trust.md#aggregation`).
//!
//! With restart probability `a`, restart distribution `s` (the pre-trusted set) and the
//! row-normalised local-trust matrix `P` (a node without out-edges restarts: its row is
//! `s`), the trust vector is the fixed point `t = a·s + (1 − a)·Pᵀt`.
//!
//! Incremental updates keep an estimate `p` and a residual `r` with the invariant, for
//! every node `v`,
//!
//! ```text
//! p(v) + a·r(v) = a·s(v) + (1 − a) · Σ_w p(w)·P(w, v)
//! ```
//!
//! so `p = t` exactly when `r = 0`. Pushing node `u` moves `a·r(u)` into `p(u)` and spreads
//! `(1 − a)·r(u)` over its out-edges, preserving the invariant. When the row of `u`
//! changes from `P(u,·)` to `P'(u,·)`, adding `(1 − a)/a · p(u) · (P'(u,v) − P(u,v))` to
//! `r(v)` restores it; pushes then run until every `|r(v)|` is below the tolerance times
//! `v`'s out-degree (Zhang, Lofgren and Goel, "Approximate Personalized PageRank on
//! Dynamic Graphs", KDD 2016). The work is proportional to the change, not to the graph.

use std::collections::VecDeque;

/// A directed graph with non-negative edge weights and its personalised trust vector.
#[derive(Debug, Clone)]
pub(crate) struct Graph {
    restart: f64,
    tolerance: f64,
    out: Vec<Vec<(u32, f64)>>,
    out_sum: Vec<f64>,
    /// Share of a node's outflow that follows its edges; the rest restarts. 1 by default.
    keep: Vec<f64>,
    source: Vec<(u32, f64)>,
    source_dense: Vec<f64>,
    p: Vec<f64>,
    r: Vec<f64>,
    queued: Vec<bool>,
    queue: VecDeque<u32>,
    /// Edges changed without pushing; `recompute` must run before reading.
    dirty: bool,
    pushes: u64,
    iterations: u32,
}

impl Graph {
    pub(crate) fn new(restart: f64, tolerance: f64) -> Self {
        Graph {
            // Out-of-range or NaN settings fall back to safe values rather than poisoning
            // every trust value or making pushes run forever.
            restart: if restart.is_finite() {
                restart.clamp(1e-3, 1.0)
            } else {
                0.15
            },
            tolerance: if tolerance.is_finite() {
                tolerance.max(1e-15)
            } else {
                1e-9
            },
            out: Vec::new(),
            out_sum: Vec::new(),
            keep: Vec::new(),
            source: Vec::new(),
            source_dense: Vec::new(),
            p: Vec::new(),
            r: Vec::new(),
            queued: Vec::new(),
            queue: VecDeque::new(),
            dirty: false,
            pushes: 0,
            iterations: 0,
        }
    }

    /// Grows the graph to hold node `v`. A new node has no edges, no restart mass and
    /// trust 0, which satisfies the invariant with `r = 0`.
    pub(crate) fn ensure(&mut self, v: u32) {
        let n = v as usize + 1;
        if self.out.len() < n {
            self.out.resize_with(n, Vec::new);
            self.out_sum.resize(n, 0.0);
            self.keep.resize(n, 1.0);
            self.source_dense.resize(n, 0.0);
            self.p.resize(n, 0.0);
            self.r.resize(n, 0.0);
            self.queued.resize(n, false);
        }
    }

    pub(crate) fn edge_count(&self) -> usize {
        self.out.iter().map(Vec::len).sum()
    }

    /// Pushes performed so far by incremental updates.
    pub(crate) fn pushes(&self) -> u64 {
        self.pushes
    }

    /// Sets the restart distribution to be uniform over `nodes` and recomputes.
    pub(crate) fn set_source(&mut self, nodes: &[u32]) {
        for &v in nodes {
            self.ensure(v);
        }
        self.source_dense.iter_mut().for_each(|x| *x = 0.0);
        self.source.clear();
        if !nodes.is_empty() {
            let share = 1.0 / nodes.len() as f64;
            for &v in nodes {
                self.source_dense[v as usize] += share;
            }
            self.source = nodes
                .iter()
                .map(|&v| (v, self.source_dense[v as usize]))
                .collect();
            self.source.sort_unstable_by_key(|(v, _)| *v);
            self.source.dedup_by_key(|(v, _)| *v);
        }
        self.recompute();
    }

    /// The trust of `v` (0 for unknown nodes).
    pub(crate) fn trust(&self, v: u32) -> f64 {
        self.p.get(v as usize).copied().unwrap_or(0.0).max(0.0)
    }

    /// Power iterations the last `recompute` took.
    pub(crate) fn iterations(&self) -> u32 {
        self.iterations
    }

    /// Enters deferred mode: edge changes are written without pushes until `recompute`.
    pub(crate) fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Whether edges changed in deferred mode since the last recompute.
    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// The normalised row of `u`: `keep(u)` of it along its out-edges and the rest to the
    /// restart distribution; all of it to the restart distribution if it has no edges.
    fn row(&self, u: u32) -> Vec<(u32, f64)> {
        let u = u as usize;
        if self.out_sum[u] > 0.0 {
            let scale = self.keep[u] / self.out_sum[u];
            let rest = 1.0 - self.keep[u];
            let mut row: Vec<(u32, f64)> =
                self.out[u].iter().map(|&(v, w)| (v, w * scale)).collect();
            if rest > 0.0 {
                row.extend(self.source.iter().map(|&(v, s)| (v, s * rest)));
            }
            row
        } else {
            self.source.clone()
        }
    }

    /// Sets the share of `u`'s outflow that follows its edges (clamped to [0, 1]); the
    /// rest returns to the restart distribution. Updates incrementally unless deferred.
    pub(crate) fn set_keep(&mut self, u: u32, keep: f64) {
        self.ensure(u);
        let keep = keep.clamp(0.0, 1.0);
        if (self.keep[u as usize] - keep).abs() < 1e-12 {
            return;
        }
        if self.dirty {
            self.keep[u as usize] = keep;
            return;
        }
        let before = self.row(u);
        self.keep[u as usize] = keep;
        let after = self.row(u);
        self.adjust(u, &before, &after);
    }

    /// Restores the invariant after the row of `u` changed from `before` to `after`, then pushes.
    fn adjust(&mut self, u: u32, before: &[(u32, f64)], after: &[(u32, f64)]) {
        let scale = (1.0 - self.restart) / self.restart * self.p[u as usize];
        if scale != 0.0 {
            for &(x, w) in before {
                self.r[x as usize] -= scale * w;
                self.enqueue(x);
            }
            for &(x, w) in after {
                self.r[x as usize] += scale * w;
                self.enqueue(x);
            }
        }
        self.push();
    }

    fn write_edge(&mut self, u: u32, v: u32, weight: f64) {
        let row = &mut self.out[u as usize];
        match row.iter().position(|(x, _)| *x == v) {
            Some(i) if weight > 0.0 => row[i].1 = weight,
            Some(i) => {
                row.swap_remove(i);
            }
            None if weight > 0.0 => row.push((v, weight)),
            None => {}
        }
        // Re-sum rather than adjust, so rounding errors never accumulate.
        self.out_sum[u as usize] = row.iter().map(|(_, w)| w).sum();
    }

    /// Sets the weight of edge `u → v` (0 removes it) and brings the trust vector up to date
    /// by pushing residuals.
    pub(crate) fn set_edge(&mut self, u: u32, v: u32, weight: f64) {
        self.ensure(u.max(v));
        if self.dirty {
            self.write_edge(u, v, weight);
            return;
        }
        let before = self.row(u);
        self.write_edge(u, v, weight);
        let after = self.row(u);
        self.adjust(u, &before, &after);
    }

    /// Sets an edge without updating the trust vector; call [`Graph::recompute`] after a batch.
    pub(crate) fn set_edge_deferred(&mut self, u: u32, v: u32, weight: f64) {
        self.ensure(u.max(v));
        self.write_edge(u, v, weight);
        self.dirty = true;
    }

    fn threshold(&self, v: usize) -> f64 {
        self.tolerance * (self.out[v].len().max(1) as f64)
    }

    fn enqueue(&mut self, v: u32) {
        let i = v as usize;
        if !self.queued[i] && self.r[i].abs() > self.threshold(i) {
            self.queued[i] = true;
            self.queue.push_back(v);
        }
    }

    fn push(&mut self) {
        let a = self.restart;
        while let Some(u) = self.queue.pop_front() {
            let ui = u as usize;
            self.queued[ui] = false;
            let ru = self.r[ui];
            if ru.abs() <= self.threshold(ui) {
                continue;
            }
            self.pushes += 1;
            self.p[ui] += a * ru;
            self.r[ui] = 0.0;
            let spread = (1.0 - a) * ru;
            let mut restart_share = 1.0;
            if self.out_sum[ui] > 0.0 {
                let scale = spread * self.keep[ui] / self.out_sum[ui];
                restart_share = 1.0 - self.keep[ui];
                for k in 0..self.out[ui].len() {
                    let (v, w) = self.out[ui][k];
                    self.r[v as usize] += scale * w;
                    self.enqueue(v);
                }
            }
            if restart_share > 0.0 {
                for k in 0..self.source.len() {
                    let (v, s) = self.source[k];
                    self.r[v as usize] += spread * restart_share * s;
                    self.enqueue(v);
                }
            }
        }
    }

    /// `Σ_w p(w)·P(w, ·)` for the current estimate.
    fn propagate(&self, p: &[f64]) -> Vec<f64> {
        let mut next = vec![0.0; p.len()];
        let mut dangling = 0.0;
        for (u, &pu) in p.iter().enumerate() {
            if pu == 0.0 {
                continue;
            }
            if self.out_sum[u] > 0.0 {
                let scale = pu * self.keep[u] / self.out_sum[u];
                for &(v, w) in &self.out[u] {
                    next[v as usize] += scale * w;
                }
                dangling += pu * (1.0 - self.keep[u]);
            } else {
                dangling += pu;
            }
        }
        for &(v, s) in &self.source {
            next[v as usize] += dangling * s;
        }
        next
    }

    /// Recomputes the trust vector from scratch by power iteration, then sets the
    /// residuals from the invariant so that later incremental updates start exact.
    pub(crate) fn recompute(&mut self) {
        let a = self.restart;
        let n = self.out.len();
        let mut t = self.source_dense.clone();
        t.resize(n, 0.0);
        self.iterations = 0;
        for _ in 0..1000 {
            self.iterations += 1;
            let mut next = self.propagate(&t);
            let mut delta = 0.0;
            for v in 0..n {
                next[v] = a * self.source_dense[v] + (1.0 - a) * next[v];
                delta += (next[v] - t[v]).abs();
            }
            t = next;
            if delta < 1e-13 {
                break;
            }
        }
        let flow = self.propagate(&t);
        self.r = (0..n)
            .map(|v| (a * self.source_dense[v] + (1.0 - a) * flow[v] - t[v]) / a)
            .collect();
        self.p = t;
        self.queue.clear();
        self.queued.iter_mut().for_each(|q| *q = false);
        self.dirty = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
    }

    fn l1(a: &Graph, b: &Graph) -> f64 {
        (0..a.out.len().max(b.out.len()) as u32)
            .map(|v| (a.trust(v) - b.trust(v)).abs())
            .sum()
    }

    #[test]
    fn trust_is_a_distribution_centred_on_the_source() {
        let mut g = Graph::new(0.15, 1e-12);
        g.set_source(&[0]);
        g.set_edge_deferred(0, 1, 1.0);
        g.set_edge_deferred(1, 2, 1.0);
        g.set_edge_deferred(2, 0, 1.0);
        g.set_edge_deferred(3, 4, 1.0); // unreachable from the source
        g.recompute();
        let total: f64 = (0..5).map(|v| g.trust(v)).sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");
        assert!(g.trust(0) > g.trust(1) && g.trust(1) > g.trust(2));
        assert_eq!(g.trust(3), 0.0);
        assert_eq!(g.trust(4), 0.0);
    }

    #[test]
    fn incremental_updates_match_a_full_recompute() {
        let mut rng = Lcg(7);
        let n = 300u32;
        let mut inc = Graph::new(0.15, 1e-13);
        inc.set_source(&[0, 1, 2]);
        for _ in 0..3000 {
            inc.set_edge_deferred(
                (rng.next() % n as u64) as u32,
                (rng.next() % n as u64) as u32,
                1.0,
            );
        }
        inc.recompute();
        for step in 0..500 {
            let u = (rng.next() % n as u64) as u32;
            let v = (rng.next() % n as u64) as u32;
            let w = if step % 7 == 0 {
                0.0
            } else {
                (rng.next() % 100) as f64 / 10.0
            };
            inc.set_edge(u, v, w);
        }
        let mut full = inc.clone();
        full.recompute();
        let err = l1(&inc, &full);
        assert!(err < 1e-6, "L1 error {err}");
        assert!(inc.pushes() > 0);
    }

    #[test]
    fn keep_factors_update_incrementally_and_cut_loops() {
        let mut g = Graph::new(0.15, 1e-14);
        g.set_source(&[0]);
        g.set_edge(0, 1, 1.0);
        g.set_edge(1, 2, 1.0);
        g.set_edge(2, 3, 1.0);
        g.set_edge(3, 2, 1.0); // a closed pair that traps mass
        let trapped = g.trust(2) + g.trust(3);
        assert!((trapped - 0.7225).abs() < 1e-6, "{trapped}");
        g.set_keep(1, 0.2);
        let mut full = g.clone();
        full.recompute();
        assert!(l1(&g, &full) < 1e-9);
        // Analytically 0.7225 before and 0.3420 after: less than half stays trapped.
        let after = g.trust(2) + g.trust(3);
        assert!(
            (after - 0.342).abs() < 1e-3,
            "little flows past a doubtful node: {after}"
        );
    }

    #[test]
    fn a_node_losing_its_last_edge_restarts() {
        let mut g = Graph::new(0.15, 1e-14);
        g.set_source(&[0]);
        g.set_edge(0, 1, 1.0);
        g.set_edge(1, 2, 1.0);
        assert!(g.trust(2) > 0.0);
        g.set_edge(1, 2, 0.0);
        let mut full = g.clone();
        full.recompute();
        assert!(l1(&g, &full) < 1e-9);
        assert!(g.trust(2).abs() < 1e-9);
    }
}
