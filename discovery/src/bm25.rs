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

/// A BM25 index. Terms are lower-cased alphanumeric words, with no stemming and no stopword
/// removal: plain BM25, the baseline other retrieval methods are measured against.
///
/// Documents have `u32` ids chosen by the caller ([`Bm25::insert`]) or assigned in order
/// ([`Bm25::add`]); per-document arrays are as long as the largest id, so callers reuse
/// freed ids.
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

    /// Adds a document under the next unused id and returns it.
    pub fn add(&mut self, text: &str) -> u32 {
        let id = self.lengths.len() as u32;
        self.insert(id, text);
        id
    }

    /// Indexes `text` as document `id`, replacing what `id` held.
    pub fn insert(&mut self, id: u32, text: &str) {
        self.remove(id);
        let slot = id as usize;
        if self.lengths.len() <= slot {
            self.lengths.resize(slot + 1, 0);
            self.terms.resize(slot + 1, Vec::new());
            self.live.resize(slot + 1, false);
        }
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
        self.terms[slot] = terms;
        self.lengths[slot] = length;
        self.live[slot] = true;
        self.total_length += u64::from(length);
        self.live_count += 1;
    }

    /// Removes a document.
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
    pub fn scores(&self, query: &str) -> Vec<(u32, f32)> {
        if self.live_count == 0 {
            return Vec::new();
        }
        let n = self.live_count as f32;
        let avg = self.total_length as f32 / n;
        let Bm25Config { k1, b } = self.config;
        let mut terms: Vec<String> = words(query).collect();
        terms.sort_unstable();
        terms.dedup();
        // A dense accumulator: one slot per id, and the ids touched, in first-touch order.
        let mut acc = vec![0f32; self.lengths.len()];
        let mut touched = Vec::new();
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
                let slot = &mut acc[doc as usize];
                if *slot == 0.0 {
                    touched.push(doc);
                }
                // idf > 0 and norm > 0, so a touched slot never returns to 0.
                *slot += (idf * norm).max(f32::MIN_POSITIVE);
            }
        }
        touched.into_iter().map(|d| (d, acc[d as usize])).collect()
    }

    /// The `k` best documents for `query` that `keep` accepts, best first (ties by id).
    /// `keep` is asked about the best-scoring documents first, and only as far as needed.
    pub fn top_filtered(
        &self,
        query: &str,
        k: usize,
        keep: &dyn Fn(u32) -> bool,
    ) -> Vec<(u32, f32)> {
        self.top_filtered_by(query, k, keep, &|a, b| a.cmp(&b))
    }

    /// [`Bm25::top_filtered`] with ties broken by `tie` (a total order on ids), so that a
    /// caller whose ids are local can order ties by something every node shares.
    pub fn top_filtered_by(
        &self,
        query: &str,
        k: usize,
        keep: &dyn Fn(u32) -> bool,
        tie: &dyn Fn(u32, u32) -> std::cmp::Ordering,
    ) -> Vec<(u32, f32)> {
        let mut scored = self.scores(query);
        let order =
            |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then_with(|| tie(a.0, b.0));
        let mut out = Vec::with_capacity(k.min(scored.len()));
        // Look at the best 4k first; most filters are done by then.
        let head = (4 * k).max(64).min(scored.len());
        if head > 0 && head < scored.len() {
            scored.select_nth_unstable_by(head - 1, order);
        }
        let (first, rest) = scored.split_at_mut(head);
        // Everything in `rest` scores at most as high as anything in `first`.
        first.sort_by(order);
        out.extend(first.iter().copied().filter(|&(d, _)| keep(d)).take(k));
        if out.len() < k && !rest.is_empty() {
            let more: Vec<(u32, f32)> = rest.iter().copied().filter(|&(d, _)| keep(d)).collect();
            out.extend(crate::vector::top_k_by(more, k - out.len(), order));
        }
        out
    }

    /// The `k` best documents for `query`, best first (ties by id).
    pub fn top(&self, query: &str, k: usize) -> Vec<(u32, f32)> {
        self.top_filtered(query, k, &|_| true)
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
        // A caller-chosen id, replaced in place.
        index.insert(7, "image segmentation");
        index.insert(7, "audio segmentation");
        assert_eq!(index.top("image", 3), vec![]);
        assert_eq!(index.top("audio", 3)[0].0, 7);
        assert_eq!(index.len(), 3);
    }

    #[test]
    fn filtered_top_looks_past_the_head() {
        let mut index = Bm25::new(Bm25Config::default());
        for i in 0..500u32 {
            let text = if i.is_multiple_of(2) {
                "cat cat cat"
            } else {
                "cat dog"
            };
            index.insert(i, &format!("{text} {i}"));
        }
        // Only odd documents pass; they score below every even one, so all of them lie
        // past the first 4k.
        let top = index.top_filtered("cat", 10, &|d| d % 2 == 1);
        assert_eq!(top.len(), 10);
        assert!(top.iter().all(|(d, _)| d % 2 == 1));
        assert!(top.windows(2).all(|w| w[0].1 >= w[1].1));
        let plain = index.top("cat", 600);
        assert_eq!(plain.len(), 500);
    }
}
