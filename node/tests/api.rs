//! The local API over real HTTP: every endpoint's happy path, the inbox with long-poll and
//! SSE, the bearer token, and clear 4xx JSON errors for bad input.

use std::time::Duration;

use agentnet_node::api::{self, ApiConfig};
use agentnet_node::{Node, NodeConfig, NodeHandle};
use serde_json::{Value, json};

struct Api {
    base: String,
    http: reqwest::Client,
    node: NodeHandle,
    _dir: tempfile::TempDir,
}

async fn api_with_token(token: Option<&str>) -> Api {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::builder(NodeConfig::new(dir.path()))
        .spawn()
        .await
        .expect("node");
    let base = if let Some(token) = token {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = api::router(node.clone(), Some(token.to_owned()));
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    } else {
        let server = api::serve(
            node.clone(),
            ApiConfig::new("127.0.0.1:0".parse().expect("addr"), dir.path()),
        )
        .await
        .expect("api");
        assert!(server.token().is_none(), "no token on loopback");
        let base = format!("http://{}", server.local_addr());
        std::mem::forget(server);
        base
    };
    Api {
        base,
        http: reqwest::Client::new(),
        node,
        _dir: dir,
    }
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.expect("body");
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, value)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
}

fn agent(name: &str, capability: &str, description: &str) -> Value {
    json!({
        "name": name,
        "description": format!("{name} the agent"),
        "capabilities": [{ "name": capability, "description": description, "tags": ["test"] }],
    })
}

fn assert_error(status: u16, body: &Value, want_status: u16, mentions: &str) {
    assert_eq!(status, want_status, "{body}");
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no error shape: {body}"));
    assert!(body["error"]["code"].is_string(), "{body}");
    assert!(
        message.to_lowercase().contains(&mentions.to_lowercase()),
        "`{message}` should mention `{mentions}`"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_search_and_intents_work_end_to_end_over_http() {
    let api = api_with_token(None).await;
    let (status, body) = api.get("/v1/status").await;
    assert_eq!(status, 200);
    assert_eq!(body["peer_id"], api.node.peer_id().to_string());
    assert_eq!(body["agents"], 0);
    assert!(
        body["embedder"]
            .as_str()
            .expect("embedder")
            .starts_with("lexical")
    );

    let (status, alice) = api
        .post(
            "/v1/agents",
            agent("alice", "plan", "Plan a trip to Berlin"),
        )
        .await;
    assert_eq!(status, 201, "{alice}");
    let alice = alice["did"].as_str().expect("did").to_owned();
    let (_, bob) = api
        .post(
            "/v1/agents",
            agent("bob", "translate", "Translate English to German"),
        )
        .await;
    let bob = bob["did"].as_str().expect("did").to_owned();

    let (status, card) = api.get(&format!("/v1/agents/{bob}")).await;
    assert_eq!(status, 200);
    assert_eq!(card["name"], "bob");
    assert_eq!(card["hosted_here"], true);
    assert_eq!(card["capabilities"][0]["name"], "translate");

    let (status, page) = api.get("/v1/search?q=german%20translation&k=5").await;
    assert_eq!(status, 200);
    assert_eq!(page["results"][0]["did"], bob);
    assert_eq!(page["results"][0]["capability"], "translate");
    assert!(page["results"][0]["breakdown"]["similarity"].is_number());
    let (_, page) = api.get("/v1/search?q=trip&tags=test&min_trust=0.1").await;
    assert_eq!(page["results"][0]["did"], alice);

    // bob answers from his inbox over HTTP (long-poll), alice sends over HTTP.
    let poller = {
        let base = api.base.clone();
        let bob = bob.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let intent: Value = http
                .get(format!("{base}/v1/agents/{bob}/intents?wait_ms=10000"))
                .send()
                .await
                .expect("poll")
                .json()
                .await
                .expect("intent");
            assert_eq!(intent["capability"], "translate");
            assert_eq!(intent["input"]["text"], "hello");
            let id = intent["id"].as_str().expect("id");
            let response = http
                .post(format!("{base}/v1/intents/{id}/result"))
                .json(
                    &json!({ "status": "completed", "output": { "text": "hallo" },
                               "cost": { "amount_micros": 5, "currency": "USD" } }),
                )
                .send()
                .await
                .expect("result");
            assert_eq!(response.status().as_u16(), 204);
            // Answering twice is a clear 404.
            let again = http
                .post(format!("{base}/v1/intents/{id}/result"))
                .json(&json!({ "status": "completed" }))
                .send()
                .await
                .expect("result");
            assert_eq!(again.status().as_u16(), 404);
        })
    };
    let (status, outcome) = api
        .post(
            "/v1/intents",
            json!({ "from": alice, "to": bob, "capability": "translate", "input": { "text": "hello" } }),
        )
        .await;
    poller.await.expect("poller");
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(outcome["outcome"], "success");
    assert_eq!(outcome["output"]["text"], "hallo");
    assert_eq!(outcome["cost"]["amount_micros"], 5);
    assert_eq!(outcome["receipt"].as_str().expect("receipt").len(), 64);

    let (status, trust) = api
        .get(&format!("/v1/trust/{bob}?capability=translate"))
        .await;
    assert_eq!(status, 200);
    assert!(trust["score"].as_f64().expect("score") > 0.5, "{trust}");
    assert!(trust["direct_evidence"].as_f64().expect("evidence") > 0.0);

    // An empty inbox long-poll ends with 204.
    let (status, _) = api
        .get(&format!("/v1/agents/{bob}/intents?wait_ms=50"))
        .await;
    assert_eq!(status, 204);

    let (status, peers) = api.get("/v1/peers").await;
    assert_eq!(status, 200);
    assert_eq!(peers["peers"], json!([]));
    let metrics = api
        .http
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .expect("metrics");
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/plain")
    );
    let metrics = metrics.text().await.expect("text");
    assert!(
        metrics.contains("agentnet_intents_completed_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("agentnet_agents 2"));

    let (status, doc) = api.get("/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().expect("version").starts_with("3."));
    for path in [
        "/v1/status",
        "/v1/agents",
        "/v1/search",
        "/v1/intents",
        "/v1/intents/{id}/result",
        "/v1/agents/{did}/intents",
        "/v1/trust/{did}",
        "/v1/peers",
        "/v1/peers/block",
        "/v1/peers/unblock",
        "/metrics",
    ] {
        assert!(doc["paths"].get(path).is_some(), "OpenAPI lacks {path}");
    }

    // Removal publishes a tombstone: the card is gone (410) and search no longer finds it.
    let (status, _) = api
        .call(reqwest::Method::DELETE, &format!("/v1/agents/{bob}"), None)
        .await;
    assert_eq!(status, 204);
    let (status, body) = api.get(&format!("/v1/agents/{bob}")).await;
    assert_error(status, &body, 410, "withdrawn");
    let (_, page) = api.get("/v1/search?q=german%20translation").await;
    assert!(
        page["results"]
            .as_array()
            .expect("results")
            .iter()
            .all(|r| r["did"] != bob)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_streams_intents_as_server_sent_events() {
    let api = api_with_token(None).await;
    let (_, alice) = api
        .post("/v1/agents", agent("alice", "plan", "Plan a trip"))
        .await;
    let (_, bob) = api
        .post("/v1/agents", agent("bob", "echo", "Echo the input"))
        .await;
    let (alice, bob) = (
        alice["did"].as_str().expect("did").to_owned(),
        bob["did"].as_str().expect("did").to_owned(),
    );
    let mut stream = api
        .http
        .get(format!("{}/v1/agents/{bob}/intents", api.base))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("sse");
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/event-stream")
    );
    let base = api.base.clone();
    let sender = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("{base}/v1/intents"))
            .json(&json!({ "from": alice, "to": bob, "capability": "echo", "input": [1, 2], "timeout_ms": 10000 }))
            .send()
            .await
            .expect("send")
            .json::<Value>()
            .await
            .expect("outcome")
    });
    let mut text = String::new();
    while !text.contains("\n\n") || !text.contains("data:") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.chunk())
            .await
            .expect("an event in time")
            .expect("chunk")
            .expect("stream open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("event: intent"), "{text}");
    let data = text
        .lines()
        .find_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
        .expect("data line");
    let intent: Value = serde_json::from_str(data).expect("json");
    assert_eq!(intent["input"], json!([1, 2]));
    let id = intent["id"].as_str().expect("id");
    let (status, _) = api
        .post(
            &format!("/v1/intents/{id}/result"),
            json!({ "status": "failed", "error": "no can do" }),
        )
        .await;
    assert_eq!(status, 204);
    let outcome = sender.await.expect("sender");
    assert_eq!(outcome["outcome"], "failure");
    assert_eq!(outcome["error"], "no can do");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_json_errors() {
    let api = api_with_token(None).await;
    let (_, alice) = api
        .post("/v1/agents", agent("alice", "plan", "Plan a trip"))
        .await;
    let alice = alice["did"].as_str().expect("did").to_owned();

    let (s, b) = api.get("/v1/agents/not-a-did").await;
    assert_error(s, &b, 400, "not a valid DID");
    let (s, b) = api
        .get("/v1/agents/did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp")
        .await;
    assert_error(s, &b, 404, "no card");
    let (s, b) = api
        .post(
            "/v1/agents",
            json!({ "name": "x", "capabilities": [], "colour": "red" }),
        )
        .await;
    assert_error(s, &b, 400, "colour");
    let (s, b) = api
        .post("/v1/agents", json!({ "name": "x", "capabilities": [] }))
        .await;
    assert_error(s, &b, 400, "capability");
    let (s, b) = api
        .post(
            "/v1/agents",
            json!({ "name": "x", "capabilities": [{ "name": "bad name!", "description": "d" }] }),
        )
        .await;
    assert_error(s, &b, 400, "capabilities[0].name");
    let (s, b) = api.post("/v1/agents", json!({ "card": "zz" })).await;
    assert_error(s, &b, 400, "hex");
    let (s, b) = api.post("/v1/agents", json!({ "card": "00ff00" })).await;
    assert_error(s, &b, 400, "card");
    let response = api
        .http
        .post(format!("{}/v1/agents", api.base))
        .body("{}")
        .send()
        .await
        .expect("post");
    assert_eq!(response.status().as_u16(), 415);
    let huge = json!({ "name": "x".repeat(300 * 1024) });
    let (s, b) = api.post("/v1/agents", huge).await;
    assert_error(s, &b, 413, "larger than");
    let (s, b) = api.get("/v1/search").await;
    assert_error(s, &b, 400, "q");
    let (s, b) = api.get("/v1/search?q=").await;
    assert_error(s, &b, 400, "empty");
    let (s, b) = api.get("/v1/search?q=x&k=0").await;
    assert_error(s, &b, 400, "k must be");
    let (s, b) = api.get("/v1/search?q=x&k=ten").await;
    assert_error(s, &b, 400, "k");
    let (s, b) = api.get("/v1/search?q=x&min_trust=2").await;
    assert_error(s, &b, 400, "min_trust");
    let (s, b) = api.get("/v1/search?q=x&cursor=garbage").await;
    assert_error(s, &b, 400, "cursor");
    let (s, b) = api.get("/v1/search?q=x&colour=red").await;
    assert_error(s, &b, 400, "colour");
    let (s, b) = api
        .post("/v1/intents", json!({ "from": alice, "to": "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp", "capability": "x", "timeout_ms": 0 }))
        .await;
    assert_error(s, &b, 400, "timeout_ms");
    let (s, b) = api
        .post("/v1/intents", json!({ "from": "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp", "to": alice, "capability": "x" }))
        .await;
    assert_error(s, &b, 404, "not hosted");
    let (s, b) = api
        .post(
            "/v1/intents",
            json!({ "from": alice, "to": alice, "capability": "plan" }),
        )
        .await;
    assert_error(s, &b, 400, "itself");
    let (s, b) = api
        .post("/v1/intents/xyz/result", json!({ "status": "completed" }))
        .await;
    assert_error(s, &b, 400, "32 hex digits");
    let (s, b) = api
        .post(
            "/v1/intents/00000000000000000000000000000000/result",
            json!({ "status": "done" }),
        )
        .await;
    assert_error(s, &b, 400, "completed, failed or declined");
    let (s, b) = api
        .post(
            "/v1/intents/00000000000000000000000000000000/result",
            json!({ "status": "completed" }),
        )
        .await;
    assert_error(s, &b, 404, "no intent");
    let (s, b) = api
        .get(&format!("/v1/agents/{alice}/intents?wait_ms=soon"))
        .await;
    assert_error(s, &b, 400, "wait_ms");
    let (s, b) = api
        .call(
            reqwest::Method::DELETE,
            "/v1/agents/did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp",
            None,
        )
        .await;
    assert_error(s, &b, 404, "not hosted");
    let (s, b) = api.get("/v2/whatever").await;
    assert_error(s, &b, 404, "no such endpoint");
    // What a browser page could send is refused on a token-less loopback API.
    let from_page = api
        .http
        .get(format!("{}/v1/status", api.base))
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("get");
    assert_eq!(from_page.status().as_u16(), 403);
    let rebound = api
        .http
        .get(format!("{}/v1/status", api.base))
        .header("host", "evil.example:7340")
        .send()
        .await
        .expect("get");
    assert_eq!(rebound.status().as_u16(), 403);
    let body: Value = rebound.json().await.expect("json");
    assert_eq!(body["error"]["code"], "forbidden");
    // Nothing above changed the node.
    assert_eq!(api.node.agents().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_required_when_one_is_set() {
    let token = "a".repeat(64);
    let api = api_with_token(Some(&token)).await;
    let (s, b) = api.get("/v1/status").await;
    assert_error(s, &b, 401, "bearer");
    let wrong = api
        .http
        .get(format!("{}/v1/status", api.base))
        .bearer_auth("b".repeat(64))
        .send()
        .await
        .expect("get");
    assert_eq!(wrong.status().as_u16(), 401);
    let right = api
        .http
        .get(format!("{}/v1/status", api.base))
        .bearer_auth(&token)
        .send()
        .await
        .expect("get");
    assert_eq!(right.status().as_u16(), 200);
    // The token file is created with mode 0600 and reused.
    let dir = tempfile::tempdir().expect("tempdir");
    let first = api::api_token(dir.path()).expect("token");
    assert_eq!(first.len(), 64);
    assert_eq!(api::api_token(dir.path()).expect("token"), first);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(api::API_TOKEN_FILE))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pre_signed_card_is_published_as_it_is() {
    use agentnet_protocol::limits::MAX_CARD_LIFETIME;
    use agentnet_protocol::{AgentCard, Capability, Keypair, SignedEnvelope, Timestamp};
    let api = api_with_token(None).await;
    // An agent that keeps its own key signs its card, naming this node as its host.
    let key = Keypair::generate().expect("key");
    let now = Timestamp::now();
    let card = AgentCard {
        did: key.did(),
        name: "self-signed".into(),
        description: "keeps its own key".into(),
        capabilities: vec![Capability {
            name: "summarise".into(),
            description: "Summarise a long document".into(),
            tags: vec!["text".into()],
            version: "1".into(),
            price: None,
        }],
        endpoints: vec![],
        host: api.node.peer_id(),
        seq: 1,
        issued_at: now,
        expires_at: now.saturating_add(MAX_CARD_LIFETIME),
        credentials: vec![],
    };
    let envelope = SignedEnvelope::seal(&key, &card).expect("seal");
    let (s, b) = api
        .post(
            "/v1/agents",
            json!({ "card": hex::encode(envelope.to_bytes()) }),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["did"], key.did().as_str());
    let (s, b) = api.get(&format!("/v1/agents/{}", key.did())).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["name"], "self-signed");
    let (s, b) = api.get("/v1/search?q=summarise%20a%20document&k=3").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["results"][0]["did"], key.did().as_str(), "{b}");
    // A card whose signature does not match is refused.
    let mut forged = envelope.to_bytes();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let (s, b) = api
        .post("/v1/agents", json!({ "card": hex::encode(forged) }))
        .await;
    assert!((400..500).contains(&s), "{s} {b}");
}

async fn connected(node: &NodeHandle, peer: libp2p::PeerId, want: bool) -> bool {
    for _ in 0..1000 {
        let now = node.connected_peers().await.expect("peers").contains(&peer);
        if now == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_are_dialled_blocked_and_unblocked_over_http() {
    let api = api_with_token(None).await;
    let other_dir = tempfile::tempdir().expect("tempdir");
    let mut config = NodeConfig::new(other_dir.path());
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("addr")];
    let other = Node::builder(config).spawn().await.expect("node");
    let mut addrs = Vec::new();
    for _ in 0..500 {
        addrs = other.listen_addrs().await.expect("addrs");
        if !addrs.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let addr = format!("{}/p2p/{}", addrs[0], other.peer_id());

    let (status, body) = api
        .post("/v1/peers", json!({ "addr": "not an address" }))
        .await;
    assert_error(status, &body, 400, "addr");
    let (status, body) = api
        .post("/v1/peers", json!({ "addr": addrs[0].to_string() }))
        .await;
    assert_error(status, &body, 400, "/p2p/");
    let (status, body) = api.post("/v1/peers", json!({ "addr": addr })).await;
    assert_eq!(status, 202, "{body}");
    assert!(connected(&api.node, other.peer_id(), true).await);
    let (_, status_body) = api.get("/v1/status").await;
    assert_eq!(status_body["connected_peers"], 1, "{status_body}");

    let (status, body) = api
        .post("/v1/peers/block", json!({ "peers": ["nope"] }))
        .await;
    assert_error(status, &body, 400, "nope");
    let too_many: Vec<String> = (0..=agentnet_node::MAX_BLOCKED_PER_COMMAND)
        .map(|_| other.peer_id().to_string())
        .collect();
    let (status, body) = api
        .post("/v1/peers/block", json!({ "peers": too_many }))
        .await;
    assert_error(status, &body, 400, "at most");

    let peers = json!({ "peers": [other.peer_id().to_string()] });
    let (status, _) = api.post("/v1/peers/block", peers.clone()).await;
    assert_eq!(status, 204);
    assert!(
        connected(&api.node, other.peer_id(), false).await,
        "block closes"
    );
    let (status, body) = api.post("/v1/peers", json!({ "addr": addr })).await;
    assert_error(status, &body, 409, "");
    let (status, _) = api.post("/v1/peers/unblock", peers).await;
    assert_eq!(status, 204);
    let (status, body) = api.post("/v1/peers", json!({ "addr": addr })).await;
    assert_eq!(status, 202, "{body}");
    assert!(
        connected(&api.node, other.peer_id(), true).await,
        "unblocked, it redials"
    );
    other.shutdown().await.expect("shutdown");
}
