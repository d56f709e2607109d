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
    /// The text that is indexed: name, description and tags.
    pub fn text(&self) -> String {
        format!(
            "{}. {}. {}",
            self.name,
            self.description,
            self.tags.join(", ")
        )
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

/// Evaluates `embedder` with exact cosine search over `catalog`. The embedder's corpus
/// statistics should already include the catalog. Queries that cannot be embedded count as
/// misses. Returns the metrics and the total time spent embedding queries, in seconds.
pub fn evaluate_embedder(
    embedder: &dyn crate::Embedder,
    catalog: &[CatalogEntry],
    queries: &[Query],
) -> Result<(Metrics, f64), crate::EmbedError> {
    let vectors: Vec<Vec<f32>> = catalog
        .iter()
        .map(|c| embedder.embed(&c.text()))
        .collect::<Result<_, _>>()?;
    let mut eval = Evaluator::default();
    let mut embed_seconds = 0.0;
    for q in queries {
        let started = std::time::Instant::now();
        let Ok(v) = embedder.embed(&q.query) else {
            eval.add(&[], &q.relevant);
            continue;
        };
        embed_seconds += started.elapsed().as_secs_f64();
        let mut scored: Vec<(usize, f32)> = vectors
            .iter()
            .enumerate()
            .map(|(i, d)| (i, crate::dot(&v, d)))
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let ranked: Vec<&str> = scored
            .iter()
            .take(10)
            .map(|(i, _)| catalog[*i].id.as_str())
            .collect();
        eval.add(&ranked, &q.relevant);
    }
    Ok((eval.metrics(), embed_seconds))
}

/// Evaluates plain BM25 (k1 = 1.2, b = 0.75) over `catalog`.
pub fn evaluate_bm25(catalog: &[CatalogEntry], queries: &[Query]) -> Metrics {
    let mut bm25 = crate::Bm25::new(crate::Bm25Config::default());
    for entry in catalog {
        bm25.add(&entry.text());
    }
    let mut eval = Evaluator::default();
    for q in queries {
        let ranked: Vec<&str> = bm25
            .top(&q.query, 10)
            .iter()
            .map(|(d, _)| catalog[*d as usize].id.as_str())
            .collect();
        eval.add(&ranked, &q.relevant);
    }
    eval.metrics()
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
