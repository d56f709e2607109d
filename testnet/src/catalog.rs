//! Agents from a catalog in the JSONL format of `../shared/data/` (one
//! `{"id", "name", "description", "tags"}` object per line), made valid as cards.

use std::path::Path;

use agentnet_node::AgentSpec;
use agentnet_protocol::Capability;
use agentnet_protocol::limits::{
    MAX_CAPABILITY_DESCRIPTION_LEN, MAX_CAPABILITY_NAME_LEN, MAX_NAME_LEN, MAX_TAG_LEN, MAX_TAGS,
};
use serde::Deserialize;

use crate::TestnetError;

/// One catalog line.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct CatalogEntry {
    /// A unique id, such as `hf:0001`.
    pub id: String,
    /// The display name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// The largest catalog read.
pub const MAX_CATALOG_LEN: u64 = 256 * 1024 * 1024;

/// Reads a JSONL catalog.
pub fn load(path: &Path) -> Result<Vec<CatalogEntry>, TestnetError> {
    read_jsonl(path)
}

/// Reads a JSONL file of at most [`MAX_CATALOG_LEN`] bytes, one `T` per non-empty line.
pub fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>, TestnetError> {
    let len = std::fs::metadata(path)?.len();
    if len > MAX_CATALOG_LEN {
        return Err(TestnetError::Invalid(format!(
            "{} is larger than {MAX_CATALOG_LEN} bytes",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| {
                TestnetError::Invalid(format!("{} line {}: {e}", path.display(), i + 1))
            })
        })
        .collect()
}

fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// A token: the characters the protocol allows in names and tags, others as `-`.
fn token(s: &str, max: usize) -> String {
    let t: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._:/+-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let t = cut(t.trim_matches('-'), max);
    if t.is_empty() { "x".to_owned() } else { t }
}

impl CatalogEntry {
    /// The agent this entry describes: one capability named after the entry's id.
    pub fn agent(&self) -> AgentSpec {
        let mut tags: Vec<String> = Vec::new();
        for tag in &self.tags {
            let t = token(&tag.to_lowercase(), MAX_TAG_LEN);
            if !tags.contains(&t) && tags.len() < MAX_TAGS {
                tags.push(t);
            }
        }
        let name = {
            let n = cut(self.name.lines().next().unwrap_or("").trim(), MAX_NAME_LEN);
            if n.is_empty() { self.id.clone() } else { n }
        };
        AgentSpec::new(
            name,
            cut(&self.description, 1024),
            vec![Capability {
                name: token(&self.id, MAX_CAPABILITY_NAME_LEN),
                description: cut(
                    &format!("{} {}", self.name, self.description),
                    MAX_CAPABILITY_DESCRIPTION_LEN,
                ),
                tags,
                version: String::new(),
                price: None,
            }],
        )
    }
}

/// A synthetic catalog of `n` entries, for runs without data files.
pub fn synthetic(n: usize) -> Vec<CatalogEntry> {
    const VERBS: [&str; 8] = [
        "translate",
        "summarise",
        "classify",
        "transcribe",
        "plan",
        "search",
        "detect",
        "generate",
    ];
    const NOUNS: [&str; 8] = [
        "text", "images", "audio", "trips", "code", "invoices", "emails", "tables",
    ];
    (0..n)
        .map(|i| {
            let verb = VERBS[i % VERBS.len()];
            let noun = NOUNS[(i / VERBS.len()) % NOUNS.len()];
            CatalogEntry {
                id: format!("syn:{i:06}"),
                name: format!("{verb}-{noun}-{i}"),
                description: format!("Agent {i} can {verb} {noun} quickly and well"),
                tags: vec![verb.to_owned(), noun.to_owned()],
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_become_valid_cards() {
        let entry = CatalogEntry {
            id: "hf:0001".into(),
            name: "dmis-lab/biobert-v1.1".into(),
            description: "BioBERT ".repeat(500),
            tags: vec![
                "Natural Language Processing Feature Extraction".into(),
                "huggingface".into(),
            ],
        };
        let spec = entry.agent();
        let cap = &spec.capabilities[0];
        assert_eq!(cap.name, "hf:0001");
        assert!(cap.description.len() <= MAX_CAPABILITY_DESCRIPTION_LEN);
        assert_eq!(cap.tags[0], "natural-language-processing-feat");
        assert!(cap.tags.iter().all(|t| t.len() <= MAX_TAG_LEN));
        assert_eq!(synthetic(3).len(), 3);
    }
}
