//! Embedders: text in, unit vector out. A card never carries a vector; every node embeds
//! the card's own text with its own embedder.

use std::collections::HashMap;

use crate::text::{
    FNV_OFFSET, NgramWindows, Prehashed, fnv1a_extend, for_each_word, is_stopword, stem,
};
use crate::vector::Layout;

/// Why text could not be embedded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EmbedError {
    /// The text is empty or has no words.
    #[error("nothing to embed: the text has no words")]
    Empty,
    /// The text is longer than the embedder accepts.
    #[error("text is {len} bytes; the embedder accepts at most {max}")]
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The model could not be loaded or run.
    #[error("embedding model: {0}")]
    Model(String),
    /// A remote embedding service failed or answered something unusable.
    #[error("embedding service: {0}")]
    Remote(String),
    /// The embedder returned a vector of the wrong dimension.
    #[error("the embedder returned {got} dimensions; expected {expected}")]
    Dimension {
        /// What it returned.
        got: usize,
        /// What it declared.
        expected: usize,
    },
}

/// Turns text into unit vectors of a fixed dimension.
///
/// `id` names the embedder and its parameters; an index records it, so that vectors from two
/// embedders are never compared.
pub trait Embedder: Send + Sync {
    /// A stable id, such as `lexical-v1-2048`.
    fn id(&self) -> &str;

    /// The vector dimension.
    fn dim(&self) -> usize;

    /// Embeds one text as a unit vector (or the zero vector if no feature is known).
    fn embed(&self, text: &str) -> Result<Vec<f32>, EmbedError>;

    /// Embeds several texts, in order. Embedders that batch (a model, a remote service)
    /// override this; all or nothing.
    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        texts.iter().map(|t| self.embed(t)).collect()
    }

    /// Counts `texts` towards the corpus statistics ([`Embedder::add_document`]) and embeds
    /// them with statistics that include them. All or nothing: on error nothing is counted.
    ///
    /// The default embeds, counts and, for an embedder that learns from the corpus, embeds
    /// again; [`LexicalEmbedder`] analyses each text once.
    fn learn_and_embed(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let vectors = self.embed_batch(texts)?;
        if !self.learns_from_corpus() {
            return Ok(vectors);
        }
        for text in texts {
            self.add_document(text);
        }
        self.embed_batch(texts).inspect_err(|_| {
            for text in texts {
                self.remove_document(text);
            }
        })
    }

    /// Whether vectors depend on the documents counted by [`Embedder::add_document`].
    fn learns_from_corpus(&self) -> bool {
        false
    }

    /// Whether most entries of this embedder's vectors are zero ([`Layout::Sparse`]) or
    /// not ([`Layout::Dense`], the default); an index searches them accordingly.
    fn layout(&self) -> Layout {
        Layout::Dense
    }

    /// Counts a newly indexed document towards corpus statistics (only embedders that learn
    /// from the corpus, such as [`LexicalEmbedder`], do anything).
    fn add_document(&mut self, _text: &str) {}

    /// Forgets a document counted by [`Embedder::add_document`].
    fn remove_document(&mut self, _text: &str) {}

    /// A copy that embeds as this one does now, with its corpus statistics frozen, for
    /// embedding away from the index (a background HNSW build re-embeds with it). `None`,
    /// the default, if the embedder cannot be copied.
    fn snapshot(&self) -> Option<Box<dyn Embedder>> {
        None
    }
}

/// The longest text the lexical embedder accepts: a card's description plus its
/// capabilities fit well within it.
pub const MAX_LEXICAL_TEXT_LEN: usize = 64 * 1024;

/// Parameters of [`LexicalEmbedder`].
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct LexicalConfig {
    /// Vector dimension (hash buckets). Default 2048.
    pub dim: usize,
    /// Weight of a word's stem. Default 1.
    pub word_weight: f32,
    /// Total weight of a word's character 3- to 5-grams. Default 1.
    pub ngram_weight: f32,
    /// Weight of a pair of adjacent words. Default 0.5.
    pub bigram_weight: f32,
}

impl Default for LexicalConfig {
    fn default() -> Self {
        LexicalConfig {
            dim: 2048,
            word_weight: 1.0,
            ngram_weight: 1.0,
            bigram_weight: 0.5,
        }
    }
}

/// The built-in embedder: no model files. Features are word stems, character 3- to 5-grams
/// of each word and adjacent word pairs, weighted by sublinear term frequency times an
/// inverse document frequency learned from the local corpus, signed-hashed into `dim`
/// buckets and L2-normalised.
///
/// The corpus statistics change as documents are added and removed ([`LexicalEmbedder::add_document`],
/// [`LexicalEmbedder::remove_document`]); vectors computed earlier keep their old weights
/// until re-embedded.
#[derive(Debug, Clone)]
pub struct LexicalEmbedder {
    id: String,
    config: LexicalConfig,
    document_frequency: HashMap<u64, u32, Prehashed>,
    documents: u32,
}

/// A text's features (sorted, distinct) with their raw weights, before IDF.
type Features = Vec<(u64, f32)>;

impl LexicalEmbedder {
    /// An embedder with no corpus yet.
    pub fn new(config: LexicalConfig) -> Self {
        let config = LexicalConfig {
            dim: config.dim.max(1),
            ..config
        };
        LexicalEmbedder {
            id: format!("lexical-v1-{}", config.dim),
            config,
            document_frequency: HashMap::default(),
            documents: 0,
        }
    }

    /// Features of `text` with their raw weights, before IDF: sorted by feature, each once.
    /// One pass over the text, with no allocation per word or n-gram.
    fn features(&self, text: &str) -> Features {
        let mut out: Features = Vec::with_capacity(text.len() * 4);
        let mut buf = String::new();
        let mut windows = NgramWindows::default();
        let mut previous = String::new();
        let mut have_previous = false;
        for_each_word(text, &mut buf, |word| {
            if is_stopword(word) {
                have_previous = false;
                return;
            }
            let stemmed = stem(word);
            out.push((
                feature(b'w', &[stemmed.as_bytes()]),
                self.config.word_weight,
            ));
            windows.load(word);
            let grams = windows.count(3..=5);
            if grams > 0 {
                let each = self.config.ngram_weight / grams as f32;
                windows.each(3..=5, |gram| out.push((feature(b'g', &[gram]), each)));
            }
            if have_previous {
                let pair = feature(b'b', &[previous.as_bytes(), b" ", stemmed.as_bytes()]);
                out.push((pair, self.config.bigram_weight));
            }
            previous.clear();
            previous.push_str(stemmed);
            have_previous = true;
        });
        // A stable sort keeps each feature's weights in text order, so sums are the same on
        // every node.
        out.sort_by_key(|&(f, _)| f);
        out.dedup_by(|next, kept| {
            if next.0 == kept.0 {
                kept.1 += next.1;
                true
            } else {
                false
            }
        });
        out
    }

    /// Refuses text that is too long.
    fn check_len(text: &str) -> Result<(), EmbedError> {
        if text.len() > MAX_LEXICAL_TEXT_LEN {
            return Err(EmbedError::TooLong {
                len: text.len(),
                max: MAX_LEXICAL_TEXT_LEN,
            });
        }
        Ok(())
    }

    /// Counts features towards the corpus statistics.
    fn count(&mut self, features: &Features) {
        for &(f, _) in features {
            *self.document_frequency.entry(f).or_default() += 1;
        }
        self.documents += 1;
    }

    /// Removes a document counted by [`LexicalEmbedder::count`].
    fn uncount(&mut self, features: &Features) {
        for &(f, _) in features {
            if let Some(df) = self.document_frequency.get_mut(&f) {
                *df -= 1;
                if *df == 0 {
                    self.document_frequency.remove(&f);
                }
            }
        }
        self.documents = self.documents.saturating_sub(1);
    }

    /// The unit vector of some features under the current statistics.
    fn vector(&self, features: &Features) -> Vec<f32> {
        let mut v = vec![0f32; self.config.dim];
        for &(f, tf) in features {
            let weight = (1.0 + tf.ln_1p()) * self.idf(f);
            let bucket = (f % self.config.dim as u64) as usize;
            let sign = if f >> 63 == 0 { 1.0 } else { -1.0 };
            v[bucket] += sign * weight;
        }
        normalise(&mut v);
        v
    }

    /// Documents in the corpus statistics.
    pub fn documents(&self) -> u32 {
        self.documents
    }

    /// BM25's inverse document frequency, `ln(1 + (N − df + 0.5) / (df + 0.5))`; a feature
    /// absent from the corpus gets the highest value.
    fn idf(&self, feature: u64) -> f32 {
        let n = self.documents as f32;
        let df = self.document_frequency.get(&feature).copied().unwrap_or(0) as f32;
        (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
    }
}

impl Embedder for LexicalEmbedder {
    fn id(&self) -> &str {
        &self.id
    }

    fn snapshot(&self) -> Option<Box<dyn Embedder>> {
        Some(Box::new(self.clone()))
    }

    fn dim(&self) -> usize {
        self.config.dim
    }

    fn embed(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        Self::check_len(text)?;
        let features = self.features(text);
        if features.is_empty() {
            return Err(EmbedError::Empty);
        }
        Ok(self.vector(&features))
    }

    fn learn_and_embed(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut analysed = Vec::with_capacity(texts.len());
        for text in texts {
            Self::check_len(text)?;
            let features = self.features(text);
            if features.is_empty() {
                return Err(EmbedError::Empty);
            }
            analysed.push(features);
        }
        for features in &analysed {
            self.count(features);
        }
        Ok(analysed.iter().map(|f| self.vector(f)).collect())
    }

    fn learns_from_corpus(&self) -> bool {
        true
    }

    /// A text sets a few hundred of the buckets, a query fewer than a hundred.
    fn layout(&self) -> Layout {
        Layout::Sparse
    }

    fn add_document(&mut self, text: &str) {
        let features = self.features(text);
        self.count(&features);
    }

    fn remove_document(&mut self, text: &str) {
        let features = self.features(text);
        self.uncount(&features);
    }
}

/// A feature id: FNV-1a of its kind byte followed by its parts.
fn feature(kind: u8, parts: &[&[u8]]) -> u64 {
    parts
        .iter()
        .fold(fnv1a_extend(FNV_OFFSET, &[kind]), |h, part| {
            fnv1a_extend(h, part)
        })
}

/// Scales `v` to unit length (leaves the zero vector alone).
pub fn normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// The dot product, written so the compiler vectorises it (eight independent accumulators).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let chunks = n / 8;
    for i in 0..chunks {
        for (k, slot) in acc.iter_mut().enumerate() {
            *slot += a[i * 8 + k] * b[i * 8 + k];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for i in chunks * 8..n {
        sum += a[i] * b[i];
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> LexicalEmbedder {
        let mut e = LexicalEmbedder::new(LexicalConfig::default());
        for doc in [
            "Translate text between English and German",
            "Classify images into a thousand categories",
            "Summarise long documents into short paragraphs",
            "Detect objects in photographs with bounding boxes",
        ] {
            e.add_document(doc);
        }
        e
    }

    #[test]
    fn vectors_are_unit_length_and_related_texts_are_closer() {
        let e = corpus();
        let q = e.embed("image classification").expect("embed");
        let a = e
            .embed("Classify images into a thousand categories")
            .expect("embed");
        let b = e
            .embed("Translate text between English and German")
            .expect("embed");
        assert!((dot(&q, &q) - 1.0).abs() < 1e-5);
        assert!(
            dot(&q, &a) > 0.2 && dot(&q, &a) > 3.0 * dot(&q, &b).max(0.0),
            "{} vs {}",
            dot(&q, &a),
            dot(&q, &b)
        );
        assert_eq!(e.id(), "lexical-v1-2048");
    }

    #[test]
    fn bad_text_is_refused() {
        let e = corpus();
        assert_eq!(e.embed("  ,, !"), Err(EmbedError::Empty));
        assert_eq!(e.embed("the of and"), Err(EmbedError::Empty));
        assert!(matches!(
            e.embed(&"a".repeat(MAX_LEXICAL_TEXT_LEN + 1)),
            Err(EmbedError::TooLong { .. })
        ));
    }

    #[test]
    fn corpus_statistics_follow_adds_and_removes() {
        let mut e = corpus();
        let before = e.document_frequency.clone();
        e.add_document("Translate speech to text");
        assert_eq!(e.documents(), 5);
        e.remove_document("Translate speech to text");
        assert_eq!(e.document_frequency, before);
        assert_eq!(e.documents(), 4);
    }

    #[test]
    fn dot_matches_a_plain_loop() {
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..37).map(|i| 1.0 - i as f32 * 0.1).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - plain).abs() < 1e-3);
    }
}
