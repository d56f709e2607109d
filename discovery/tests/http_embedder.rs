//! The `http` embedder against a local OpenAI-compatible stub server started by each test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use agentnet_discovery::{EmbedError, Embedder, HttpEmbedder, HttpEmbedderConfig, dot};

#[derive(Clone, Copy, Debug)]
enum Mode {
    Good,
    Slow,
    ServerError,
    WrongDim,
    Garbage,
    MissingOne,
}

/// Batch sizes received, and the Authorization header of each request.
type Seen = Arc<Mutex<Vec<(usize, Option<String>)>>>;

struct Stub {
    base: String,
    seen: Seen,
}

const DIM: usize = 8;

/// The stub's vector for a text: a deterministic function of its bytes.
fn vector_of(text: &str) -> Vec<f32> {
    let mut v = vec![0f32; DIM];
    for (i, b) in text.bytes().enumerate() {
        v[(i + b as usize) % DIM] += f32::from(b) / 100.0;
    }
    v
}

fn serve(stream: TcpStream, mode: Mode, seen: Seen) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut stream = stream;
    loop {
        let mut length = 0usize;
        let mut auth = None;
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let lower = l.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().expect("length");
            }
            if lower.starts_with("authorization:") {
                auth = Some(l["authorization:".len()..].trim().to_owned());
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).expect("body");
        let request: serde_json::Value = serde_json::from_slice(&body).expect("json");
        let inputs: Vec<String> = request["input"]
            .as_array()
            .expect("input")
            .iter()
            .map(|v| v.as_str().expect("str").to_owned())
            .collect();
        seen.lock().expect("lock").push((inputs.len(), auth));
        let (status, payload) = match mode {
            Mode::Slow => {
                thread::sleep(Duration::from_millis(1500));
                (200, String::new())
            }
            Mode::ServerError => (500, r#"{"error":"model overloaded"}"#.to_owned()),
            Mode::Garbage => (200, "not json".to_owned()),
            Mode::Good | Mode::WrongDim | Mode::MissingOne => {
                let mut data: Vec<serde_json::Value> = inputs
                    .iter()
                    .enumerate()
                    .rev() // out of order: the client must sort by index
                    .map(|(i, t)| {
                        let mut v = vector_of(t);
                        if matches!(mode, Mode::WrongDim) {
                            v.push(1.0);
                        }
                        serde_json::json!({"object": "embedding", "index": i, "embedding": v})
                    })
                    .collect();
                if matches!(mode, Mode::MissingOne) {
                    data.pop();
                }
                (
                    200,
                    serde_json::json!({"object": "list", "data": data, "model": "stub"})
                        .to_string(),
                )
            }
        };
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{payload}",
            payload.len()
        );
        if stream.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

fn stub(mode: Mode) -> Stub {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}/v1", listener.local_addr().expect("addr"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let seen = seen2.clone();
            thread::spawn(move || serve(stream, mode, seen));
        }
    });
    Stub { base, seen }
}

fn embedder(stub: &Stub, batch: usize) -> HttpEmbedder {
    let mut config = HttpEmbedderConfig::new(stub.base.clone(), "stub-model", DIM);
    config.batch = batch;
    config.timeout = Duration::from_millis(500);
    config.api_key = Some("sk-test".into());
    HttpEmbedder::new(config).expect("config")
}

#[test]
fn batches_keep_order_and_normalise() {
    let stub = stub(Mode::Good);
    let e = embedder(&stub, 4);
    let texts: Vec<String> = (0..10).map(|i| format!("text number {i}")).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let out = e.embed_batch(&refs).expect("embed");
    assert_eq!(out.len(), 10);
    for (text, v) in texts.iter().zip(&out) {
        let mut want = vector_of(text);
        agentnet_discovery::normalise(&mut want);
        assert!((dot(v, &want) - 1.0).abs() < 1e-5, "{text}");
    }
    let seen = stub.seen.lock().expect("lock").clone();
    assert_eq!(
        seen.iter().map(|s| s.0).collect::<Vec<_>>(),
        vec![4, 4, 2],
        "ten texts in batches of four"
    );
    assert!(
        seen.iter()
            .all(|s| s.1.as_deref() == Some("Bearer sk-test"))
    );
    assert_eq!(e.id(), "http-stub-model-8");
    assert_eq!(e.dim(), DIM);
}

#[test]
fn a_slow_service_times_out_with_a_clear_error() {
    let stub = stub(Mode::Slow);
    let e = embedder(&stub, 4);
    let started = std::time::Instant::now();
    let err = e.embed("hello").expect_err("must time out");
    assert!(started.elapsed() < Duration::from_millis(1400));
    assert!(
        matches!(&err, EmbedError::Remote(m) if m.contains("did not answer")),
        "{err}"
    );
}

#[test]
fn bad_answers_are_typed_errors() {
    let err = embedder(&stub(Mode::ServerError), 4)
        .embed("hello")
        .expect_err("500");
    assert!(
        matches!(&err, EmbedError::Remote(m) if m.contains("500") && m.contains("overloaded")),
        "{err}"
    );
    let err = embedder(&stub(Mode::WrongDim), 4)
        .embed("hello")
        .expect_err("dim");
    assert_eq!(
        err,
        EmbedError::Dimension {
            got: DIM + 1,
            expected: DIM
        }
    );
    let err = embedder(&stub(Mode::Garbage), 4)
        .embed("hello")
        .expect_err("garbage");
    assert!(
        matches!(&err, EmbedError::Remote(m) if m.contains("malformed")),
        "{err}"
    );
    let err = embedder(&stub(Mode::MissingOne), 4)
        .embed_batch(&["a b", "c d"])
        .expect_err("missing");
    assert!(
        matches!(&err, EmbedError::Remote(m) if m.contains("1 embeddings for 2")),
        "{err}"
    );
}

#[test]
fn unreachable_service_and_bad_config_are_refused() {
    // A port nothing listens on: bind, note the port, close.
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let config = HttpEmbedderConfig::new(format!("http://127.0.0.1:{port}/v1"), "m", DIM);
    let err = HttpEmbedder::new(config)
        .expect("config")
        .embed("hello")
        .expect_err("refused");
    assert!(
        matches!(&err, EmbedError::Remote(m) if m.contains("cannot reach")),
        "{err}"
    );
    assert!(HttpEmbedder::new(HttpEmbedderConfig::new("ftp://x", "m", DIM)).is_err());
    assert!(HttpEmbedder::new(HttpEmbedderConfig::new("http://x", "m", 0)).is_err());
    let stub = stub(Mode::Good);
    let e = embedder(&stub, 4);
    assert_eq!(e.embed("   "), Err(EmbedError::Empty));
    assert!(
        stub.seen.lock().expect("lock").is_empty(),
        "nothing sent for bad input"
    );
}
