//! Text analysis shared by the lexical embedder and BM25: tokens, stems and character n-grams.

/// Words too common in capability descriptions and queries to say anything.
const STOPWORDS: &[&str] = &[
    "a", "about", "an", "and", "are", "as", "at", "be", "by", "can", "could", "do", "for", "from",
    "has", "have", "how", "i", "in", "into", "is", "it", "its", "me", "my", "of", "on", "or",
    "our", "so", "that", "the", "their", "them", "these", "this", "to", "us", "was", "we", "what",
    "which", "will", "with", "would", "you", "your",
];

/// Lower-cased alphanumeric words, in order. Nothing else is dropped.
pub(crate) fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
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

/// Character n-grams of `word` with boundary markers, for `n` in `sizes`:
/// `"model"` with n = 3 gives `"<mo"`, `"mod"`, `"ode"`, `"del"`, `"el>"`.
pub(crate) fn char_ngrams(
    word: &str,
    sizes: std::ops::RangeInclusive<usize>,
    out: &mut Vec<String>,
) {
    let chars: Vec<char> = std::iter::once('<')
        .chain(word.chars())
        .chain(std::iter::once('>'))
        .collect();
    for n in sizes {
        if chars.len() < n {
            continue;
        }
        for window in chars.windows(n) {
            out.push(window.iter().collect());
        }
    }
}

/// 64-bit FNV-1a: a fixed, portable hash, so that every node hashes features alike.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

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
        let mut grams = Vec::new();
        char_ngrams("cat", 3..=4, &mut grams);
        assert_eq!(grams, vec!["<ca", "cat", "at>", "<cat", "cat>"]);
        let w: Vec<String> = words("Image-Classification, 2D!").collect();
        assert_eq!(w, vec!["image", "classification", "2d"]);
    }
}
