//! Okapi BM25 over an in-memory inverted index (`specs/discovery.md#bm25`).

use std::collections::HashMap;

use crate::text::words;

/// BM25 parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct Bm25Config {
    /// Term-frequency saturation. Default 1.2.
    pub k1: f32,
    /// Length normalisation. Default 0.75.
    pub b: f32,
}

impl Default for Bm25Config {
    fn default() -> Self {
        Bm25Config { k1: 1.2, b: 0.75 }
    }
}

/// A BM25 index over documents with dense ids `0..n`. Terms are lower-cased alphanumeric
/// words, with no stemming and no stopword removal: plain BM25, the baseline other
/// retrieval methods are measured against.
#[derive(Debug, Clone, Default)]
pub struct Bm25 {
    config: Bm25Config,
    postings: HashMap<String, Vec<(u32, u32)>>,
    lengths: Vec<u32>,
    /// Each document's distinct terms, so removal touches only its own postings.
    terms: Vec<Vec<String>>,
    live: Vec<bool>,
    total_length: u64,
    live_count: u32,
}

impl Bm25 {
    /// An empty index.
    pub fn new(config: Bm25Config) -> Self {
        Bm25 {
            config,
            ..Bm25::default()
        }
    }

    /// Adds a document and returns its id.
    pub fn add(&mut self, text: &str) -> u32 {
        let id = self.lengths.len() as u32;
        let mut tf: HashMap<String, u32> = HashMap::new();
        let mut length = 0u32;
        for word in words(text) {
            *tf.entry(word).or_default() += 1;
            length += 1;
        }
        let mut terms = Vec::with_capacity(tf.len());
        for (term, count) in tf {
            self.postings
                .entry(term.clone())
                .or_default()
                .push((id, count));
            terms.push(term);
        }
        self.terms.push(terms);
        self.lengths.push(length);
        self.live.push(true);
        self.total_length += u64::from(length);
        self.live_count += 1;
        id
    }

    /// Removes a document; its id is not reused.
    pub fn remove(&mut self, id: u32) {
        let Some(live) = self.live.get_mut(id as usize) else {
            return;
        };
        if !*live {
            return;
        }
        *live = false;
        self.total_length -= u64::from(self.lengths[id as usize]);
        self.live_count -= 1;
        for term in std::mem::take(&mut self.terms[id as usize]) {
            if let Some(list) = self.postings.get_mut(&term) {
                list.retain(|(doc, _)| *doc != id);
                if list.is_empty() {
                    self.postings.remove(&term);
                }
            }
        }
    }

    /// Live documents.
    pub fn len(&self) -> usize {
        self.live_count as usize
    }

    /// Whether no document is live.
    pub fn is_empty(&self) -> bool {
        self.live_count == 0
    }

    /// Scores every document that shares a term with `query`; unsorted.
    pub fn scores(&self, query: &str) -> HashMap<u32, f32> {
        let mut scores: HashMap<u32, f32> = HashMap::new();
        if self.live_count == 0 {
            return scores;
        }
        let n = self.live_count as f32;
        let avg = self.total_length as f32 / n;
        let Bm25Config { k1, b } = self.config;
        let mut terms: Vec<String> = words(query).collect();
        terms.sort_unstable();
        terms.dedup();
        for term in terms {
            let Some(list) = self.postings.get(&term) else {
                continue;
            };
            let df = list.len() as f32;
            let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
            for &(doc, tf) in list {
                let tf = tf as f32;
                let len = self.lengths[doc as usize] as f32;
                let norm = tf * (k1 + 1.0) / (tf + k1 * (1.0 - b + b * len / avg.max(1e-6)));
                *scores.entry(doc).or_default() += idf * norm;
            }
        }
        scores
    }

    /// The `k` best documents for `query`, best first (ties by id).
    pub fn top(&self, query: &str, k: usize) -> Vec<(u32, f32)> {
        let mut ranked: Vec<(u32, f32)> = self.scores(query).into_iter().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.truncate(k);
        ranked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rarer_terms_count_more_and_removal_works() {
        let mut index = Bm25::new(Bm25Config::default());
        let a = index.add("image classification model");
        let b = index.add("text classification model");
        let c = index.add("speech recognition model");
        let top = index.top("image classification", 3);
        assert_eq!(top[0].0, a);
        assert_eq!(top[1].0, b);
        assert!(!top.iter().any(|(d, _)| *d == c));
        index.remove(a);
        assert_eq!(index.top("image", 3), vec![]);
        assert_eq!(index.len(), 2);
    }
}
