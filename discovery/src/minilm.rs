//! all-MiniLM-L6-v2 in pure Rust (candle): BERT, mean pooling over the attention mask, L2
//! normalisation, as sentence-transformers computes it. Behind the `minilm` cargo feature.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config, DTYPE};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::embed::{EmbedError, Embedder, MAX_LEXICAL_TEXT_LEN, normalise};

/// The files a model directory must hold (`scripts/fetch-minilm.sh` writes them).
pub const MINILM_FILES: [&str; 3] = ["model.safetensors", "config.json", "tokenizer.json"];

/// Tokens per text; longer texts are truncated, as sentence-transformers does for this
/// model (`max_seq_length` 256).
pub const MINILM_MAX_TOKENS: usize = 256;

/// Texts per forward pass in [`Embedder::embed_batch`].
pub const MINILM_BATCH: usize = 32;

/// Why a model directory could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MinilmError {
    /// A required file is missing.
    #[error(
        "{0} is missing; run scripts/fetch-minilm.sh to fetch all-MiniLM-L6-v2 into that directory"
    )]
    Missing(PathBuf),
    /// A file could not be read or parsed.
    #[error("cannot load {path}: {reason}")]
    Load {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The all-MiniLM-L6-v2 sentence embedder (384 dimensions), on the CPU.
pub struct MinilmEmbedder {
    model: BertModel,
    tokenizer: Tokenizer,
    dim: usize,
    device: Device,
}

impl std::fmt::Debug for MinilmEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MinilmEmbedder")
            .field("dim", &self.dim)
            .finish_non_exhaustive()
    }
}

impl MinilmEmbedder {
    /// Loads `model.safetensors`, `config.json` and `tokenizer.json` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, MinilmError> {
        for file in MINILM_FILES {
            let path = dir.join(file);
            if !path.is_file() {
                return Err(MinilmError::Missing(path));
            }
        }
        let load_err = |file: &str, reason: String| MinilmError::Load {
            path: dir.join(file),
            reason,
        };
        let config_text = std::fs::read_to_string(dir.join("config.json"))
            .map_err(|e| load_err("config.json", e.to_string()))?;
        let config: Config = serde_json::from_str(&config_text)
            .map_err(|e| load_err("config.json", e.to_string()))?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| load_err("tokenizer.json", e.to_string()))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MINILM_MAX_TOKENS,
                ..TruncationParams::default()
            }))
            .map_err(|e| load_err("tokenizer.json", e.to_string()))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..PaddingParams::default()
        }));
        let weights = std::fs::read(dir.join("model.safetensors"))
            .map_err(|e| load_err("model.safetensors", e.to_string()))?;
        let device = Device::Cpu;
        let vb = VarBuilder::from_buffered_safetensors(weights, DTYPE, &device)
            .map_err(|e| load_err("model.safetensors", e.to_string()))?;
        let model = BertModel::load(vb, &config)
            .map_err(|e| load_err("model.safetensors", e.to_string()))?;
        Ok(MinilmEmbedder {
            model,
            tokenizer,
            dim: config.hidden_size,
            device,
        })
    }

    fn forward(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let model_err = |e: &dyn std::fmt::Display| EmbedError::Model(e.to_string());
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| model_err(&e))?;
        let rows = encodings.len();
        let cols = encodings.first().map_or(0, |e| e.get_ids().len());
        let mut ids = Vec::with_capacity(rows * cols);
        let mut mask = Vec::with_capacity(rows * cols);
        for e in &encodings {
            ids.extend_from_slice(e.get_ids());
            mask.extend_from_slice(e.get_attention_mask());
        }
        let run = || -> candle_core::Result<Vec<Vec<f32>>> {
            let ids = Tensor::from_vec(ids, (rows, cols), &self.device)?;
            let mask = Tensor::from_vec(mask, (rows, cols), &self.device)?;
            let types = ids.zeros_like()?;
            let hidden = self.model.forward(&ids, &types, Some(&mask))?;
            // Mean pooling over real tokens only.
            let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
            let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
            let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
            summed.broadcast_div(&counts)?.to_vec2::<f32>()
        };
        let mut out = run().map_err(|e| model_err(&e))?;
        for v in &mut out {
            normalise(v);
        }
        Ok(out)
    }
}

impl Embedder for MinilmEmbedder {
    fn id(&self) -> &str {
        "minilm-l6-v2"
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn embed(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        let mut out = self.embed_batch(&[text])?;
        out.pop().ok_or(EmbedError::Empty)
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        for text in texts {
            if text.len() > MAX_LEXICAL_TEXT_LEN {
                return Err(EmbedError::TooLong {
                    len: text.len(),
                    max: MAX_LEXICAL_TEXT_LEN,
                });
            }
            if text.trim().is_empty() {
                return Err(EmbedError::Empty);
            }
        }
        // Batch texts of similar length together, so that little is padding.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        let mut out = vec![Vec::new(); texts.len()];
        for chunk in order.chunks(MINILM_BATCH) {
            let batch: Vec<&str> = chunk.iter().map(|&i| texts[i]).collect();
            for (&i, v) in chunk.iter().zip(self.forward(&batch)?) {
                out[i] = v;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_without_the_model_says_how_to_fetch_it() {
        let dir = std::env::temp_dir().join(format!("agentnet-no-model-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let err = MinilmEmbedder::load(&dir).expect_err("no model there");
        assert!(matches!(err, MinilmError::Missing(_)));
        assert!(err.to_string().contains("scripts/fetch-minilm.sh"), "{err}");
    }

    /// Runs only where the model was fetched: `AGENTNET_MINILM_DIR=... cargo test --features minilm`.
    #[test]
    fn embeddings_match_sentence_transformers() {
        let Some(dir) = std::env::var_os("AGENTNET_MINILM_DIR") else {
            eprintln!("AGENTNET_MINILM_DIR is not set; skipping");
            return;
        };
        let model = MinilmEmbedder::load(Path::new(&dir)).expect("model loads");
        let v = model
            .embed_batch(&[
                "A man is eating food.",
                "A man is eating a piece of bread.",
                "A man is riding a horse.",
            ])
            .expect("embeds");
        assert_eq!(v[0].len(), 384);
        // Cosines from an independent numpy implementation of the same model.
        assert!((crate::dot(&v[0], &v[1]) - 0.7553).abs() < 2e-3);
        assert!((crate::dot(&v[0], &v[2]) - 0.2474).abs() < 2e-3);
        // A batch gives the same vectors as one text at a time.
        let one = model.embed("A man is riding a horse.").expect("embeds");
        assert!((crate::dot(&one, &v[2]) - 1.0).abs() < 1e-4);
    }
}
