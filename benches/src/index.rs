//! Vector index benchmark on synthetic clustered, low-rank vectors: HNSW against an exact
//! scan with the same dot-product kernel, measured in the same process.
//!
//! Data: 100 cluster centres in a 32-dimensional latent space; each vector is a centre plus
//! Gaussian noise, mapped to `dim` dimensions by a fixed random matrix, plus a little
//! isotropic noise, normalised. Uniform random vectors would make every ANN index look bad.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use agentnet_discovery::{ExactIndex, HnswConfig, HnswIndex, Quantization, VectorIndex, normalise};
use anyhow::{Context, Result};

/// What the benchmark measured.
#[derive(Debug, serde::Serialize)]
pub struct IndexReport {
    /// Which index served the approximate searches.
    pub backend: String,
    /// Base vectors.
    pub n: usize,
    /// Dimension.
    pub dim: usize,
    /// Queries.
    pub queries: usize,
    /// Seed.
    pub seed: u64,
    /// Mean share of the exact top 10 found in the HNSW top 10.
    pub recall_at_10: f64,
    /// HNSW queries per second, one thread.
    pub qps: f64,
    /// Exact brute-force queries per second, one thread, with the same SIMD distance kernel
    /// as the HNSW search (usearch's exact search).
    pub brute_force_qps: f64,
    /// Exact queries per second of this crate's portable scan (`ExactIndex`), for reference.
    pub portable_scan_qps: f64,
    /// `qps / brute_force_qps`.
    pub speedup: f64,
    /// Median HNSW query latency.
    pub p50_ms: f64,
    /// 99th percentile HNSW query latency.
    pub p99_ms: f64,
    /// Seconds to build the HNSW index (all cores).
    pub build_s: f64,
    /// HNSW memory per vector, bytes.
    pub bytes_per_vector: f64,
    /// Single-thread inserts per second into the built index.
    pub upserts_per_s: f64,
    /// Recall at 10 after 10% of the vectors were removed and replaced by new ones.
    pub recall_after_churn: f64,
    /// The search candidate list size used.
    pub ef: usize,
}

#[derive(Debug)]
struct Gaussian {
    state: u64,
    spare: Option<f32>,
}

impl Gaussian {
    fn new(seed: u64) -> Self {
        Gaussian {
            state: seed,
            spare: None,
        }
    }

    fn uniform(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn next(&mut self) -> f32 {
        if let Some(s) = self.spare.take() {
            return s;
        }
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        let r = (-2.0 * u1.ln()).sqrt();
        let t = 2.0 * std::f64::consts::PI * u2;
        self.spare = Some((r * t.sin()) as f32);
        (r * t.cos()) as f32
    }
}

/// Generates `count` vectors of the synthetic distribution (deterministic in `seed`).
#[derive(Debug)]
pub struct Synthetic {
    dim: usize,
    projection: Vec<f32>,
    centres: Vec<f32>,
    rng: Gaussian,
}

const LATENT: usize = 32;
const CLUSTERS: usize = 100;

impl Synthetic {
    /// The distribution for `dim` dimensions.
    pub fn new(dim: usize, seed: u64) -> Self {
        let mut rng = Gaussian::new(seed);
        let projection = (0..dim * LATENT)
            .map(|_| rng.next() / (LATENT as f32).sqrt())
            .collect();
        let centres = (0..CLUSTERS * LATENT).map(|_| rng.next()).collect();
        Synthetic {
            dim,
            projection,
            centres,
            rng,
        }
    }

    /// The next vector.
    pub fn sample(&mut self) -> Vec<f32> {
        let c = (self.rng.uniform() * CLUSTERS as f64) as usize % CLUSTERS;
        let latent: Vec<f32> = (0..LATENT)
            .map(|j| self.centres[c * LATENT + j] + 0.5 * self.rng.next())
            .collect();
        let mut v: Vec<f32> = (0..self.dim)
            .map(|i| {
                let row = &self.projection[i * LATENT..(i + 1) * LATENT];
                row.iter().zip(&latent).map(|(a, b)| a * b).sum::<f32>() + 0.05 * self.rng.next()
            })
            .collect();
        normalise(&mut v);
        v
    }
}

fn write_fvecs(path: &Path, vectors: &[Vec<f32>]) -> Result<()> {
    let mut out = BufWriter::new(
        File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
    );
    for v in vectors {
        out.write_all(&(v.len() as i32).to_le_bytes())?;
        for x in v {
            out.write_all(&x.to_le_bytes())?;
        }
    }
    out.flush()?;
    Ok(())
}

fn exact_top(exact: &ExactIndex, queries: &[Vec<f32>]) -> Result<(Vec<Vec<u32>>, f64)> {
    let started = Instant::now();
    let truth = queries
        .iter()
        .map(|q| {
            exact
                .search(q, 10, &|_| true)
                .map(|r| r.into_iter().map(|(id, _)| id).collect())
        })
        .collect::<Result<Vec<Vec<u32>>, _>>()?;
    Ok((truth, started.elapsed().as_secs_f64()))
}

/// The exact top 10 of each query by usearch's brute-force search (same SIMD kernel as HNSW).
fn same_kernel_truth(hnsw: &HnswIndex, queries: &[Vec<f32>]) -> Result<Vec<Vec<u32>>> {
    queries
        .iter()
        .map(|q| {
            Ok(hnsw
                .exact_search(q, 10)?
                .into_iter()
                .map(|(id, _)| id)
                .collect())
        })
        .collect()
}

/// The two exact scans must agree (up to floating-point ties), or a vector is missing.
fn check_agreement(a: &[Vec<u32>], b: &[Vec<u32>]) -> Result<()> {
    let total: usize = a.iter().map(Vec::len).sum();
    let agree: usize = a
        .iter()
        .zip(b)
        .map(|(x, y)| x.iter().filter(|id| y.contains(id)).count())
        .sum();
    anyhow::ensure!(
        agree as f64 >= 0.999 * total as f64,
        "the two exact scans disagree on {} of {total} neighbours",
        total - agree
    );
    Ok(())
}

fn recall(index: &HnswIndex, queries: &[Vec<f32>], truth: &[Vec<u32>]) -> Result<(f64, Vec<f64>)> {
    let mut hits = 0usize;
    let mut latencies = Vec::with_capacity(queries.len());
    for (q, t) in queries.iter().zip(truth) {
        let started = Instant::now();
        let found = index.search_all(q, 10)?;
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        hits += found.iter().filter(|(id, _)| t.contains(id)).count();
    }
    Ok((hits as f64 / (10 * queries.len()).max(1) as f64, latencies))
}

/// Runs the benchmark.
pub fn run(
    n: usize,
    dim: usize,
    queries: usize,
    seed: u64,
    ef: usize,
    export: Option<&Path>,
) -> Result<IndexReport> {
    let mut data = Synthetic::new(dim, seed);
    let base: Vec<Vec<f32>> = (0..n).map(|_| data.sample()).collect();
    let query_set: Vec<Vec<f32>> = (0..queries).map(|_| data.sample()).collect();
    if let Some(dir) = export {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        write_fvecs(&dir.join("base.fvecs"), &base)?;
        write_fvecs(&dir.join("query.fvecs"), &query_set)?;
    }

    let mut exact = ExactIndex::new(dim);
    for (i, v) in base.iter().enumerate() {
        exact.upsert(i as u32, v)?;
    }
    let (portable_truth, portable_s) = exact_top(&exact, &query_set)?;

    // f32 storage: the same vectors as the exact baselines, so recall measures the graph.
    let mut config = HnswConfig::default();
    config.quantization = Quantization::F32;
    let started = Instant::now();
    let mut hnsw = HnswIndex::new(dim, n + n / 5, config)?;
    let threads = std::thread::available_parallelism().map_or(1, |p| p.get());
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let hnsw = &hnsw;
                let base = &base;
                s.spawn(move || -> Result<()> {
                    for i in (t..base.len()).step_by(threads) {
                        hnsw.insert_concurrent(i as u32, &base[i])?;
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("an insert thread panicked"))??;
        }
        Ok(())
    })?;
    let build_s = started.elapsed().as_secs_f64();
    hnsw.set_expansion_search(ef);

    let started = Instant::now();
    let truth = same_kernel_truth(&hnsw, &query_set)?;
    let exact_s = started.elapsed().as_secs_f64();
    check_agreement(&truth, &portable_truth)?;

    let started = Instant::now();
    let (recall_at_10, mut latencies) = recall(&hnsw, &query_set, &truth)?;
    let hnsw_s = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let pct = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];

    // Churn: replace 10% of the vectors, one at a time, timing single-thread upserts.
    let churn = n / 10;
    let mut current = base;
    let started = Instant::now();
    for i in 0..churn {
        let id = (i * 10) as u32;
        let v = data.sample();
        hnsw.upsert(id, &v)?;
        exact.upsert(id, &v)?;
        current[id as usize] = v;
    }
    let upserts_per_s = churn as f64 / started.elapsed().as_secs_f64();
    let truth_after = same_kernel_truth(&hnsw, &query_set)?;
    let (portable_after, _) = exact_top(&exact, &query_set)?;
    check_agreement(&truth_after, &portable_after).context("after churn")?;
    let (recall_after_churn, _) = recall(&hnsw, &query_set, &truth_after)?;

    let qps = queries as f64 / hnsw_s;
    let brute_force_qps = queries as f64 / exact_s;
    Ok(IndexReport {
        backend: "usearch-hnsw".into(),
        n,
        dim,
        queries,
        seed,
        recall_at_10,
        qps,
        brute_force_qps,
        portable_scan_qps: queries as f64 / portable_s,
        speedup: qps / brute_force_qps,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        build_s,
        bytes_per_vector: hnsw.memory_usage() as f64 / n as f64,
        upserts_per_s,
        recall_after_churn,
        ef,
    })
}
