//! An embedder that calls an OpenAI-compatible `POST /v1/embeddings` endpoint.
//!
//! The client is blocking: call it from a thread that may block (in a tokio program,
//! `spawn_blocking`), as with every [`Embedder`].

use std::io::Read;
use std::time::Duration;

use crate::embed::{EmbedError, Embedder, MAX_LEXICAL_TEXT_LEN, normalise};

/// The most texts one request carries.
pub const MAX_HTTP_BATCH: usize = 2048;
/// The largest response body read, in bytes.
pub const MAX_HTTP_RESPONSE: u64 = 256 * 1024 * 1024;

/// Where and how to reach the service.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct HttpEmbedderConfig {
    /// The API base, such as `http://127.0.0.1:8000/v1`; `/embeddings` is appended.
    pub base_url: String,
    /// The model name sent with each request.
    pub model: String,
    /// Sent as `Authorization: Bearer ...` if set.
    pub api_key: Option<String>,
    /// The vector dimension the model returns; every answer is checked against it.
    pub dim: usize,
    /// The whole-request timeout. Default 30 s.
    pub timeout: Duration,
    /// Texts per request, 1 to [`MAX_HTTP_BATCH`]. Default 64.
    pub batch: usize,
}

impl HttpEmbedderConfig {
    /// A configuration with the default timeout and batch size.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>, dim: usize) -> Self {
        HttpEmbedderConfig {
            base_url: base_url.into(),
            model: model.into(),
            api_key: None,
            dim,
            timeout: Duration::from_secs(30),
            batch: 64,
        }
    }
}

/// An embedder backed by a remote OpenAI-compatible service.
#[derive(Debug)]
pub struct HttpEmbedder {
    id: String,
    url: String,
    config: HttpEmbedderConfig,
    client: reqwest::blocking::Client,
}

#[derive(serde::Serialize)]
struct Request<'a> {
    model: &'a str,
    input: &'a [&'a str],
    encoding_format: &'static str,
}

#[derive(serde::Deserialize)]
struct Response {
    data: Vec<Datum>,
}

#[derive(serde::Deserialize)]
struct Datum {
    index: usize,
    embedding: Vec<f32>,
}

impl HttpEmbedder {
    /// A client for the service; nothing is sent until the first embedding.
    pub fn new(config: HttpEmbedderConfig) -> Result<Self, EmbedError> {
        if config.dim == 0 {
            return Err(EmbedError::Remote(
                "the dimension must be at least 1".into(),
            ));
        }
        if config.batch == 0 || config.batch > MAX_HTTP_BATCH {
            return Err(EmbedError::Remote(format!(
                "the batch size must be between 1 and {MAX_HTTP_BATCH}"
            )));
        }
        let base = config.base_url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(EmbedError::Remote(format!(
                "the base URL {base:?} must start with http:// or https://"
            )));
        }
        let url = format!("{base}/embeddings");
        let client = reqwest::blocking::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .build()
            .map_err(|e| EmbedError::Remote(format!("cannot build the HTTP client: {e}")))?;
        Ok(HttpEmbedder {
            id: format!("http-{}-{}", config.model, config.dim),
            url,
            config,
            client,
        })
    }

    fn request(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut request = self.client.post(&self.url).json(&Request {
            model: &self.config.model,
            input: texts,
            encoding_format: "float",
        });
        if let Some(key) = &self.config.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().map_err(|e| {
            if e.is_timeout() {
                EmbedError::Remote(format!(
                    "{} did not answer within {:?}",
                    self.url, self.config.timeout
                ))
            } else {
                EmbedError::Remote(format!("cannot reach {}: {e}", self.url))
            }
        })?;
        let status = response.status();
        let mut body = Vec::new();
        response
            .take(MAX_HTTP_RESPONSE + 1)
            .read_to_end(&mut body)
            .map_err(|e| EmbedError::Remote(format!("reading the answer of {}: {e}", self.url)))?;
        if body.len() as u64 > MAX_HTTP_RESPONSE {
            return Err(EmbedError::Remote(format!(
                "the answer of {} is larger than {MAX_HTTP_RESPONSE} bytes",
                self.url
            )));
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
            return Err(EmbedError::Remote(format!(
                "{} answered {status}: {text}",
                self.url
            )));
        }
        let parsed: Response = serde_json::from_slice(&body).map_err(|e| {
            EmbedError::Remote(format!("{} answered malformed JSON: {e}", self.url))
        })?;
        if parsed.data.len() != texts.len() {
            return Err(EmbedError::Remote(format!(
                "{} returned {} embeddings for {} texts",
                self.url,
                parsed.data.len(),
                texts.len()
            )));
        }
        let mut out: Vec<Option<Vec<f32>>> = vec![None; texts.len()];
        for datum in parsed.data {
            if datum.embedding.len() != self.config.dim {
                return Err(EmbedError::Dimension {
                    got: datum.embedding.len(),
                    expected: self.config.dim,
                });
            }
            if datum.embedding.iter().any(|x| !x.is_finite()) {
                return Err(EmbedError::Remote(format!(
                    "{} returned a non-finite value",
                    self.url
                )));
            }
            let slot = out.get_mut(datum.index).ok_or_else(|| {
                EmbedError::Remote(format!("{} returned index {}", self.url, datum.index))
            })?;
            let mut v = datum.embedding;
            normalise(&mut v);
            if slot.replace(v).is_some() {
                return Err(EmbedError::Remote(format!(
                    "{} returned index {} twice",
                    self.url, datum.index
                )));
            }
        }
        // Every index is in range and none repeats, so all slots are filled.
        Ok(out.into_iter().flatten().collect())
    }
}

impl Embedder for HttpEmbedder {
    fn id(&self) -> &str {
        &self.id
    }

    fn dim(&self) -> usize {
        self.config.dim
    }

    fn embed(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        let mut out = self.embed_batch(&[text])?;
        out.pop().ok_or(EmbedError::Empty)
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        for text in texts {
            if text.trim().is_empty() {
                return Err(EmbedError::Empty);
            }
            if text.len() > MAX_LEXICAL_TEXT_LEN {
                return Err(EmbedError::TooLong {
                    len: text.len(),
                    max: MAX_LEXICAL_TEXT_LEN,
                });
            }
        }
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(self.config.batch) {
            out.extend(self.request(chunk)?);
        }
        Ok(out)
    }
}
