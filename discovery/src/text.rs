//! Text analysis shared by the lexical embedder and BM25: tokens, stems and character n-grams.

/// Words too common in capability descriptions and queries to say anything.
const STOPWORDS: &[&str] = &[
    "a", "about", "an", "and", "are", "as", "at", "be", "by", "can", "could", "do", "for", "from",
    "has", "have", "how", "i", "in", "into", "is", "it", "its", "me", "my", "of", "on", "or",
    "our", "so", "that", "the", "their", "them", "these", "this", "to", "us", "was", "we", "what",
    "which", "will", "with", "would", "you", "your",
];

/// Maximal runs of alphanumerics, as written: what [`words`] and [`for_each_word`] lower-case.
fn raw_words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
}

/// Lower-cased alphanumeric words, in order. Nothing else is dropped.
pub(crate) fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    raw_words(text).map(str::to_lowercase)
}

/// Whether `word` (lower case) is a stopword.
pub(crate) fn is_stopword(word: &str) -> bool {
    STOPWORDS.binary_search(&word).is_ok()
}

/// A light English stemmer for ASCII words: strips the first of the suffixes `-ations`,
/// `-ation`, `-ings`, `-ing`, `-ies`, `-ed`, `-ly`, `-s` from words long enough to keep a stem of at least 3
/// letters. It conflates "classify", "classifies" and "classifying" closely enough that the
/// character n-grams do the rest.
pub(crate) fn stem(word: &str) -> &str {
    const SUFFIXES: [&str; 8] = ["ations", "ation", "ings", "ing", "ies", "ed", "ly", "s"];
    if !word.is_ascii() {
        return word;
    }
    for suffix in SUFFIXES {
        if let Some(stem) = word.strip_suffix(suffix)
            && stem.len() >= 3
            && !word.ends_with("ss")
        {
            return stem;
        }
    }
    word
}

/// Calls `f` with each lower-cased alphanumeric word of `text`, in order, without
/// allocating per word: `buf` holds the current word.
pub(crate) fn for_each_word(text: &str, buf: &mut String, mut f: impl FnMut(&str)) {
    for raw in raw_words(text) {
        buf.clear();
        if raw.is_ascii() {
            buf.extend(raw.bytes().map(|b| char::from(b.to_ascii_lowercase())));
        } else {
            buf.push_str(&raw.to_lowercase());
        }
        f(buf);
    }
}

/// Reusable buffers for [`NgramWindows`].
#[derive(Default)]
pub(crate) struct NgramWindows {
    marked: Vec<u8>,
    bounds: Vec<usize>,
}

impl NgramWindows {
    /// Loads `word` with boundary markers: `"model"` becomes `"<model>"`.
    pub(crate) fn load(&mut self, word: &str) {
        self.marked.clear();
        self.bounds.clear();
        self.marked.push(b'<');
        self.bounds.push(0);
        for (at, _) in word.char_indices() {
            self.bounds.push(at + 1);
        }
        self.marked.extend_from_slice(word.as_bytes());
        self.bounds.push(self.marked.len());
        self.marked.push(b'>');
        self.bounds.push(self.marked.len());
    }

    /// How many n-grams [`NgramWindows::each`] yields for `sizes`.
    pub(crate) fn count(&self, sizes: std::ops::RangeInclusive<usize>) -> usize {
        let chars = self.bounds.len() - 1;
        sizes.map(|n| (chars + 1).saturating_sub(n)).sum()
    }

    /// Calls `f` with the UTF-8 bytes of each character n-gram of the loaded word, for `n`
    /// in `sizes`: `"<model>"` with n = 3 gives `"<mo"`, `"mod"`, `"ode"`, `"del"`, `"el>"`.
    pub(crate) fn each(&self, sizes: std::ops::RangeInclusive<usize>, mut f: impl FnMut(&[u8])) {
        let chars = self.bounds.len() - 1;
        for n in sizes {
            for start in 0..(chars + 1).saturating_sub(n) {
                f(&self.marked[self.bounds[start]..self.bounds[start + n]]);
            }
        }
    }
}

/// The FNV-1a offset basis.
pub(crate) const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// Continues a 64-bit FNV-1a hash over `bytes`.
pub(crate) fn fnv1a_extend(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// 64-bit FNV-1a: a fixed, portable hash, so that every node hashes features alike.
#[cfg(test)]
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_extend(FNV_OFFSET, bytes)
}

/// A `HashMap` hasher for keys that are already hashes (feature ids): one multiply and a
/// fold instead of SipHash. It is unkeyed, so a peer that grinds card texts could aim
/// features at one probe sequence of the document-frequency map; that map grows only with
/// the cards the registry admits.
#[derive(Default, Clone, Copy)]
pub(crate) struct PrehashedHasher(u64);

impl std::hash::Hasher for PrehashedHasher {
    fn finish(&self) -> u64 {
        let x = u128::from(self.0) * 0x9e37_79b9_7f4a_7c15;
        (x as u64) ^ ((x >> 64) as u64)
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0 = fnv1a_extend(self.0 ^ FNV_OFFSET, bytes);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

/// Builds [`PrehashedHasher`]s.
pub(crate) type Prehashed = std::hash::BuildHasherDefault<PrehashedHasher>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stopwords_are_sorted_for_binary_search() {
        assert!(STOPWORDS.windows(2).all(|w| w[0] < w[1]));
        assert!(is_stopword("the") && !is_stopword("model"));
    }

    #[test]
    fn stems_and_ngrams() {
        assert_eq!(stem("classifying"), "classify");
        assert_eq!(stem("images"), "image");
        assert_eq!(stem("class"), "class");
        assert_eq!(stem("is"), "is");
        let mut windows = NgramWindows::default();
        windows.load("cat");
        let mut grams = Vec::new();
        windows.each(3..=4, |g| {
            grams.push(String::from_utf8_lossy(g).into_owned())
        });
        assert_eq!(grams, vec!["<ca", "cat", "at>", "<cat", "cat>"]);
        assert_eq!(windows.count(3..=4), 5);
        windows.load("né");
        grams.clear();
        windows.each(3..=5, |g| {
            grams.push(String::from_utf8_lossy(g).into_owned())
        });
        assert_eq!(grams, vec!["<né", "né>", "<né>"]);
        assert_eq!(windows.count(3..=5), 3);
        windows.load("a");
        assert_eq!(windows.count(3..=5), 1);
        let w: Vec<String> = words("Image-Classification, 2D!").collect();
        assert_eq!(w, vec!["image", "classification", "2d"]);
        let mut seen = Vec::new();
        for_each_word("Image-Classification, ÉTÉ 2D!", &mut String::new(), |w| {
            seen.push(w.to_owned())
        });
        assert_eq!(seen, vec!["image", "classification", "été", "2d"]);
    }
}
