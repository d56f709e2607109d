//! Retrieval evaluation: the benchmark data format and the metrics.

use std::collections::HashSet;

/// One catalog entry: a capability to be found.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct CatalogEntry {
    /// Its id, which queries name as relevant.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its description.
    pub description: String,
    /// Its tags.
    #[serde(default)]
    pub tags: Vec<String>,
}

impl CatalogEntry {
    /// The text that is indexed: name, description and tags joined by spaces, as the data
    /// set's reference figures were computed.
    pub fn text(&self) -> String {
        format!("{} {} {}", self.name, self.description, self.tags.join(" "))
    }
}

/// One query and the ids of the entries that answer it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct Query {
    /// The task, in words.
    pub query: String,
    /// The relevant catalog ids.
    pub relevant: Vec<String>,
}

/// Averages of the standard metrics over a set of queries.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Metrics {
    /// Share of relevant entries in the top 1, averaged.
    pub recall_at_1: f64,
    /// In the top 5.
    pub recall_at_5: f64,
    /// In the top 10.
    pub recall_at_10: f64,
    /// Binary-relevance nDCG over the top 10.
    pub ndcg_at_10: f64,
    /// Reciprocal rank of the first relevant entry in the top 10 (0 if none).
    pub mrr_at_10: f64,
    /// Queries evaluated.
    pub queries: usize,
}

/// Accumulates per-query results into [`Metrics`].
#[derive(Debug, Default)]
pub struct Evaluator {
    sums: Metrics,
}

impl Evaluator {
    /// Adds one query's ranking (ids, best first) against its relevant ids.
    pub fn add(&mut self, ranked: &[&str], relevant: &[String]) {
        let relevant: HashSet<&str> = relevant.iter().map(String::as_str).collect();
        if relevant.is_empty() {
            return;
        }
        let hits = |k: usize| {
            ranked
                .iter()
                .take(k)
                .filter(|id| relevant.contains(*id))
                .count() as f64
        };
        let total = relevant.len() as f64;
        let s = &mut self.sums;
        s.recall_at_1 += hits(1) / total;
        s.recall_at_5 += hits(5) / total;
        s.recall_at_10 += hits(10) / total;
        let dcg: f64 = ranked
            .iter()
            .take(10)
            .enumerate()
            .filter(|(_, id)| relevant.contains(*id))
            .map(|(i, _)| 1.0 / ((i + 2) as f64).log2())
            .sum();
        let ideal: f64 = (0..relevant.len().min(10))
            .map(|i| 1.0 / ((i + 2) as f64).log2())
            .sum();
        s.ndcg_at_10 += dcg / ideal;
        s.mrr_at_10 += ranked
            .iter()
            .take(10)
            .position(|id| relevant.contains(id))
            .map_or(0.0, |i| 1.0 / (i + 1) as f64);
        s.queries += 1;
    }

    /// The averages.
    pub fn metrics(&self) -> Metrics {
        let n = self.sums.queries.max(1) as f64;
        Metrics {
            recall_at_1: self.sums.recall_at_1 / n,
            recall_at_5: self.sums.recall_at_5 / n,
            recall_at_10: self.sums.recall_at_10 / n,
            ndcg_at_10: self.sums.ndcg_at_10 / n,
            mrr_at_10: self.sums.mrr_at_10 / n,
            queries: self.sums.queries,
        }
    }
}

/// Scores of every catalog entry for every query: `scores[q][c]`, higher is better;
/// `f32::NEG_INFINITY` means "not retrieved".
pub type ScoreMatrix = Vec<Vec<f32>>;

/// Cosine scores of `embedder` over `catalog` (exact search). The embedder's corpus
/// statistics should already include the catalog. A query that cannot be embedded retrieves
/// nothing. Returns the scores and the total time spent embedding queries, in seconds.
pub fn dense_scores(
    embedder: &dyn crate::Embedder,
    catalog: &[CatalogEntry],
    queries: &[Query],
) -> Result<(ScoreMatrix, f64), crate::EmbedError> {
    let texts: Vec<String> = catalog.iter().map(CatalogEntry::text).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let vectors = embedder.embed_batch(&refs)?;
    let mut embed_seconds = 0.0;
    let scores = queries
        .iter()
        .map(|q| {
            let started = std::time::Instant::now();
            let v = embedder.embed(&q.query);
            embed_seconds += started.elapsed().as_secs_f64();
            match v {
                Ok(v) => vectors.iter().map(|d| crate::dot(&v, d)).collect(),
                Err(_) => vec![f32::NEG_INFINITY; catalog.len()],
            }
        })
        .collect();
    Ok((scores, embed_seconds))
}

/// Pseudo-relevance feedback on a score matrix: each entry gains `beta` times its mean
/// similarity (`doc_sim[c][d]`) to the `top` best entries of the query's first ranking.
pub fn feedback(scores: &ScoreMatrix, doc_sim: &[Vec<f32>], top: usize, beta: f32) -> ScoreMatrix {
    scores
        .iter()
        .map(|row| {
            let mut order: Vec<usize> = (0..row.len()).filter(|&c| row[c].is_finite()).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            order.truncate(top);
            row.iter()
                .enumerate()
                .map(|(c, &s)| {
                    if !s.is_finite() || order.is_empty() {
                        return s;
                    }
                    let mean =
                        order.iter().map(|&d| doc_sim[c][d]).sum::<f32>() / order.len() as f32;
                    s + beta * mean
                })
                .collect()
        })
        .collect()
}

/// Cosine similarity between every pair of catalog entries under `embedder`.
pub fn doc_similarities(
    embedder: &dyn crate::Embedder,
    catalog: &[CatalogEntry],
) -> Result<Vec<Vec<f32>>, crate::EmbedError> {
    let texts: Vec<String> = catalog.iter().map(CatalogEntry::text).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let vectors = embedder.embed_batch(&refs)?;
    Ok(vectors
        .iter()
        .map(|a| vectors.iter().map(|b| crate::dot(a, b)).collect())
        .collect())
}

/// BM25 (k1 = 1.2, b = 0.75) scores over `catalog`; entries that match no term are not
/// retrieved.
pub fn bm25_scores(catalog: &[CatalogEntry], queries: &[Query]) -> ScoreMatrix {
    let mut bm25 = crate::Bm25::new(crate::Bm25Config::default());
    for entry in catalog {
        bm25.add(&entry.text());
    }
    queries
        .iter()
        .map(|q| {
            let mut row = vec![f32::NEG_INFINITY; catalog.len()];
            for (doc, s) in bm25.scores(&q.query) {
                if let Some(slot) = row.get_mut(doc as usize) {
                    *slot = s;
                }
            }
            row
        })
        .collect()
}

/// Reciprocal rank fusion of several score matrices (`specs/discovery.md#fusion`): each
/// entry scores the sum over the lists that retrieved it of `1 / (k + rank)`.
pub fn fuse_rrf(lists: &[&ScoreMatrix], k: f64) -> ScoreMatrix {
    let Some(first) = lists.first() else {
        return Vec::new();
    };
    (0..first.len())
        .map(|q| {
            let n = first[q].len();
            let mut fused = vec![f32::NEG_INFINITY; n];
            for list in lists {
                let row = &list[q];
                let mut order: Vec<usize> =
                    (0..n).filter(|&c| row[c] > f32::NEG_INFINITY).collect();
                order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
                for (rank, c) in order.into_iter().enumerate() {
                    let add = (1.0 / (k + rank as f64 + 1.0)) as f32;
                    fused[c] = if fused[c] == f32::NEG_INFINITY {
                        add
                    } else {
                        fused[c] + add
                    };
                }
            }
            fused
        })
        .collect()
}

/// A weighted sum of score matrices, each first scaled per query by its largest score
/// (so that BM25 and cosines are comparable); entries no list retrieved stay unretrieved.
pub fn fuse_weighted(lists: &[(&ScoreMatrix, f32)]) -> ScoreMatrix {
    let Some((first, _)) = lists.first() else {
        return Vec::new();
    };
    (0..first.len())
        .map(|q| {
            let n = first[q].len();
            let mut fused = vec![f32::NEG_INFINITY; n];
            for (list, weight) in lists {
                let row = &list[q];
                let max = row
                    .iter()
                    .copied()
                    .filter(|s| s.is_finite())
                    .fold(0f32, f32::max);
                if max <= 0.0 {
                    continue;
                }
                for (c, &s) in row.iter().enumerate() {
                    if s.is_finite() {
                        let add = weight * s / max;
                        fused[c] = if fused[c] == f32::NEG_INFINITY {
                            add
                        } else {
                            fused[c] + add
                        };
                    }
                }
            }
            fused
        })
        .collect()
}

/// Metrics of a score matrix: each query's top 10 by score (ties by catalog order).
pub fn evaluate_scores(
    catalog: &[CatalogEntry],
    queries: &[Query],
    scores: &ScoreMatrix,
) -> Metrics {
    let mut eval = Evaluator::default();
    for (q, row) in queries.iter().zip(scores) {
        let mut order: Vec<usize> = (0..row.len())
            .filter(|&c| row[c] > f32::NEG_INFINITY)
            .collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        let ranked: Vec<&str> = order
            .iter()
            .take(10)
            .filter_map(|&c| catalog.get(c).map(|e| e.id.as_str()))
            .collect();
        eval.add(&ranked, &q.relevant);
    }
    eval.metrics()
}

/// Evaluates `embedder` with exact cosine search over `catalog`; see [`dense_scores`].
pub fn evaluate_embedder(
    embedder: &dyn crate::Embedder,
    catalog: &[CatalogEntry],
    queries: &[Query],
) -> Result<(Metrics, f64), crate::EmbedError> {
    let (scores, seconds) = dense_scores(embedder, catalog, queries)?;
    Ok((evaluate_scores(catalog, queries, &scores), seconds))
}

/// Evaluates plain BM25 (k1 = 1.2, b = 0.75) over `catalog`.
pub fn evaluate_bm25(catalog: &[CatalogEntry], queries: &[Query]) -> Metrics {
    evaluate_scores(catalog, queries, &bm25_scores(catalog, queries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_of_known_rankings() {
        let mut e = Evaluator::default();
        e.add(&["a", "b", "c"], &["b".to_string()]);
        e.add(&["x", "y"], &["z".to_string()]);
        let m = e.metrics();
        assert_eq!(m.queries, 2);
        assert_eq!(m.recall_at_1, 0.0);
        assert_eq!(m.recall_at_5, 0.5);
        assert!((m.mrr_at_10 - 0.25).abs() < 1e-12);
        assert!((m.ndcg_at_10 - 0.5 / 3f64.log2()).abs() < 1e-12);
    }
}
