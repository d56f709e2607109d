//! Nodes that run as separate `agentnet node run` processes, driven over their local API
//! (`specs/local-api.md`).
//!
//! [`NodeProcess::spawn`] writes the node's config as TOML into its data directory,
//! starts the binary with its API on an ephemeral loopback port, and reads the addresses
//! the node prints on start. Everything else goes over HTTP: status, registration,
//! dials, blocks (for partitions) and the Prometheus counters. [`NodeProcess::kill`] is a
//! crash (SIGKILL); [`NodeProcess::shutdown`] asks the node to stop (SIGINT) and kills it
//! if it has not stopped within [`STOP_GRACE`].

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use agentnet_node::api::{BlockBody, CapabilityBody, CardBody, DialBody, DidBody, RegisterBody};
use agentnet_node::api::{PeersBody, StatusBody};
use agentnet_node::{AgentSpec, MetricsSnapshot, NodeConfig, NodeError};
use agentnet_protocol::Did;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

/// How long a node has to print its addresses after it is started.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node asked to stop (SIGINT) has before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long one API request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The config file the harness writes into each node's data directory.
const CONFIG_FILE: &str = "testnet-node.toml";
/// The node's standard error, kept in its data directory.
const LOG_FILE: &str = "node.log";
/// Environment variables the `agentnet` binary reads; the harness's own are not passed on.
const NODE_ENV: [&str; 7] = [
    "AGENTNET_CONFIG",
    "AGENTNET_DATA_DIR",
    "AGENTNET_LISTEN",
    "AGENTNET_API",
    "AGENTNET_BOOTSTRAP",
    "AGENTNET_MINILM_DIR",
    "RUST_LOG",
];

/// Finds the `agentnet` binary: `AGENTNET_BIN`, else beside the running executable (or one
/// directory up, where cargo puts binaries for test executables in `deps/`).
pub fn find_binary() -> Result<PathBuf, NodeError> {
    if let Some(path) = std::env::var_os("AGENTNET_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()
        .map_err(|e| NodeError::Invalid(format!("cannot find this executable: {e}")))?;
    let name = format!("agentnet{}", std::env::consts::EXE_SUFFIX);
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(&name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            NodeError::Invalid(format!(
                "no `{name}` binary beside {} (build it with `cargo build -p agentnet-node`, \
                 or set AGENTNET_BIN)",
                exe.display()
            ))
        })
}

/// A node in its own process.
#[derive(Debug)]
pub struct NodeProcess {
    child: Mutex<Option<Child>>,
    pid: Option<u32>,
    base: String,
    http: reqwest::Client,
    peer_id: PeerId,
    listen: Multiaddr,
    data_dir: PathBuf,
}

/// The subset of [`NodeConfig`] a node process can be given, as its TOML config file.
fn config_toml(config: &NodeConfig) -> Result<String, NodeError> {
    if config.gossip_loss > 0.0 {
        return Err(NodeError::Invalid(
            "gossip loss is an in-process fault; a node process cannot be given it".into(),
        ));
    }
    let listen: Vec<String> = config.listen.iter().map(|a| a.to_string()).collect();
    let bootstrap: Vec<String> = config.bootstrap.iter().map(|a| a.to_string()).collect();
    let mut table = toml::Table::new();
    let mut put = |key: &str, value: toml::Value| {
        table.insert(key.to_owned(), value);
    };
    put(
        "data_dir",
        toml::Value::String(config.data_dir.display().to_string()),
    );
    put(
        "listen",
        toml::Value::Array(listen.into_iter().map(toml::Value::String).collect()),
    );
    put(
        "bootstrap",
        toml::Value::Array(bootstrap.into_iter().map(toml::Value::String).collect()),
    );
    put("api", toml::Value::String("127.0.0.1:0".into()));
    put("gossip", toml::Value::Boolean(config.gossip));
    put("mdns", toml::Value::Boolean(config.mdns));
    put(
        "sync_interval_secs",
        toml::Value::Integer(config.sync_interval.as_secs().max(1) as i64),
    );
    put(
        "idle_timeout_secs",
        toml::Value::Integer(config.idle_timeout.as_secs().max(1) as i64),
    );
    put(
        "max_connections",
        toml::Value::Integer(i64::from(config.max_connections)),
    );
    put(
        "target_peers",
        toml::Value::Integer(config.target_peers as i64),
    );
    put("log", toml::Value::String("warn".into()));
    let mut intents = toml::Table::new();
    intents.insert(
        "per_minute".into(),
        toml::Value::Integer(i64::from(config.intents.per_minute)),
    );
    intents.insert(
        "burst".into(),
        toml::Value::Integer(i64::from(config.intents.burst)),
    );
    put("intents", toml::Value::Table(intents));
    toml::to_string(&table).map_err(|e| NodeError::Invalid(format!("config: {e}")))
}

fn io(what: &str) -> impl Fn(std::io::Error) -> NodeError + '_ {
    move |e| NodeError::Network(format!("{what}: {e}"))
}

impl NodeProcess {
    /// Starts `binary` as a node with `config` (its data directory, listen addresses,
    /// bootstrap peers and the other settings a config file carries) and waits until it
    /// has printed its peer id, a TCP listen address and its API address.
    pub async fn spawn(binary: &Path, config: &NodeConfig) -> Result<Self, NodeError> {
        std::fs::create_dir_all(&config.data_dir).map_err(io("data directory"))?;
        let config_path = config.data_dir.join(CONFIG_FILE);
        std::fs::write(&config_path, config_toml(config)?).map_err(io("config file"))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(config.data_dir.join(LOG_FILE))
            .map_err(io("log file"))?;
        let mut command = Command::new(binary);
        command
            .arg("node")
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true);
        for var in NODE_ENV {
            command.env_remove(var);
        }
        let mut child = command
            .spawn()
            .map_err(|e| NodeError::Invalid(format!("cannot start {}: {e}", binary.display())))?;
        let pid = child.id();
        let Some(stdout) = child.stdout.take() else {
            return Err(NodeError::Network("the node's stdout was not piped".into()));
        };
        let mut lines = BufReader::new(stdout).lines();
        let started = tokio::time::timeout(START_TIMEOUT, async {
            let (mut peer, mut listen, mut api) = (None, None, None);
            while let Some(line) = lines.next_line().await.map_err(io("node output"))? {
                if let Some(id) = line.strip_prefix("agentnet node ") {
                    peer = id.trim().parse::<PeerId>().ok();
                } else if let Some(addr) = line.strip_prefix("listening ") {
                    let addr: Multiaddr = addr
                        .trim()
                        .parse()
                        .map_err(|e| NodeError::Network(format!("listen address: {e}")))?;
                    if listen.is_none() && addr.iter().any(|p| matches!(p, Protocol::Tcp(_))) {
                        listen = Some(strip_p2p(addr));
                    }
                } else if let Some(url) = line.strip_prefix("api ") {
                    api = Some(url.trim().to_owned());
                }
                // The API line comes after the listen lines.
                if let (Some(peer), Some(api)) = (peer, &api) {
                    return Ok((peer, listen, api.clone()));
                }
            }
            Err(NodeError::Network(format!(
                "the node exited before it printed its addresses (see {})",
                config.data_dir.join(LOG_FILE).display()
            )))
        })
        .await;
        let (peer_id, printed, base) = match started {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => {
                let _ = child.kill().await;
                return Err(e);
            }
            Err(_) => {
                let _ = child.kill().await;
                return Err(NodeError::Network(format!(
                    "the node printed no addresses within {START_TIMEOUT:?}"
                )));
            }
        };
        // Nothing more comes on stdout, but keep it drained so the node never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| NodeError::Network(format!("http client: {e}")))?;
        let mut node = NodeProcess {
            child: Mutex::new(Some(child)),
            pid,
            base,
            http,
            peer_id,
            listen: Multiaddr::empty(),
            data_dir: config.data_dir.clone(),
        };
        node.listen = match printed {
            Some(listen) => listen,
            None => node.wait_for_listener().await?,
        };
        Ok(node)
    }

    /// A node slow to bind printed no listen address: ask its API until it has one.
    async fn wait_for_listener(&self) -> Result<Multiaddr, NodeError> {
        let started = std::time::Instant::now();
        loop {
            let status = self.status().await?;
            let tcp = status
                .listen_addrs
                .iter()
                .filter_map(|a| a.parse::<Multiaddr>().ok())
                .find(|a| a.iter().any(|p| matches!(p, Protocol::Tcp(_))));
            if let Some(addr) = tcp {
                return Ok(strip_p2p(addr));
            }
            if started.elapsed() > START_TIMEOUT {
                let _ = self.kill().await;
                return Err(NodeError::Network(format!(
                    "no TCP listen address after {START_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Its peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Its TCP listen address (without `/p2p/`).
    pub fn listen(&self) -> &Multiaddr {
        &self.listen
    }

    /// Its API's base URL (`http://127.0.0.1:port`).
    pub fn api(&self) -> &str {
        &self.base
    }

    /// Its data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    async fn call<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<Option<T>, NodeError> {
        let response = request
            .send()
            .await
            .map_err(|e| NodeError::Network(format!("{what}: {e}")))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| NodeError::Network(format!("{what}: {e}")))?;
        if status.is_success() {
            if bytes.is_empty() || status == reqwest::StatusCode::NO_CONTENT {
                return Ok(None);
            }
            return serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| NodeError::Network(format!("{what}: bad answer: {e}")));
        }
        let message = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        let message = format!("{what}: {status}: {message}");
        Err(if status.is_client_error() {
            NodeError::Invalid(message)
        } else {
            NodeError::Network(message)
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, NodeError> {
        self.call(self.http.get(format!("{}{path}", self.base)), path)
            .await?
            .ok_or_else(|| NodeError::Network(format!("{path}: empty answer")))
    }

    async fn post(&self, path: &str, body: &impl Serialize) -> Result<(), NodeError> {
        self.call::<serde_json::Value>(
            self.http.post(format!("{}{path}", self.base)).json(body),
            path,
        )
        .await
        .map(|_| ())
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<StatusBody, NodeError> {
        self.get("/v1/status").await
    }

    /// The peers it is connected to.
    pub async fn connected_peers(&self) -> Result<Vec<PeerId>, NodeError> {
        let body: PeersBody = self.get("/v1/peers").await?;
        Ok(body
            .peers
            .iter()
            .filter_map(|p| p.peer_id.parse().ok())
            .collect())
    }

    /// Whether it holds `did`'s card with its capabilities in its search index.
    pub async fn is_indexed(&self, did: &Did) -> Result<bool, NodeError> {
        let path = format!("/v1/agents/{did}");
        match self.get::<CardBody>(&path).await {
            Ok(card) => Ok(card.indexed),
            // No card (404) or a tombstone (410).
            Err(NodeError::Invalid(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Registers an agent hosted by this node (`POST /v1/agents`).
    pub async fn register_agent(&self, spec: AgentSpec) -> Result<Did, NodeError> {
        if !spec.credentials.is_empty() {
            return Err(NodeError::Invalid(
                "the local API registers agents without credentials".into(),
            ));
        }
        let body = RegisterBody {
            name: spec.name,
            description: spec.description,
            capabilities: spec
                .capabilities
                .into_iter()
                .map(CapabilityBody::from)
                .collect(),
            endpoints: spec.endpoints,
            card: None,
        };
        let url = format!("{}/v1/agents", self.base);
        let did: DidBody = self
            .call(self.http.post(url).json(&body), "/v1/agents")
            .await?
            .ok_or_else(|| NodeError::Network("/v1/agents: empty answer".into()))?;
        did.did
            .parse()
            .map_err(|e| NodeError::Network(format!("/v1/agents: bad DID: {e}")))
    }

    /// Dials `addr` (`POST /v1/peers`).
    pub async fn dial(&self, addr: &Multiaddr) -> Result<(), NodeError> {
        let body = DialBody {
            addr: addr.to_string(),
        };
        self.post("/v1/peers", &body).await
    }

    /// Blocks (`true`) or unblocks `peers`.
    pub async fn block(&self, peers: &[PeerId], block: bool) -> Result<(), NodeError> {
        let path = if block {
            "/v1/peers/block"
        } else {
            "/v1/peers/unblock"
        };
        for chunk in peers.chunks(agentnet_node::MAX_BLOCKED_PER_COMMAND) {
            let body = BlockBody {
                peers: chunk.iter().map(|p| p.to_string()).collect(),
            };
            self.post(path, &body).await?;
        }
        Ok(())
    }

    /// Its counters, read from `/metrics`.
    pub async fn metrics(&self) -> Result<MetricsSnapshot, NodeError> {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| NodeError::Network(format!("/metrics: {e}")))?
            .text()
            .await
            .map_err(|e| NodeError::Network(format!("/metrics: {e}")))?;
        Ok(parse_metrics(&text))
    }

    /// Kills the process (SIGKILL: a crash, as far as the node can tell).
    pub async fn kill(&self) -> Result<(), NodeError> {
        if let Some(mut child) = self.child.lock().await.take() {
            child.kill().await.map_err(io("kill"))?;
        }
        Ok(())
    }

    /// Asks the node to stop (SIGINT, as Ctrl-C), and kills it if it has not stopped
    /// within [`STOP_GRACE`].
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        let Some(mut child) = self.child.lock().await.take() else {
            return Ok(());
        };
        if let Some(pid) = self.pid {
            // `kill` from procps: this crate forbids the unsafe a direct libc call needs.
            let _ = Command::new("kill")
                .arg("-INT")
                .arg(pid.to_string())
                .status()
                .await;
        }
        match tokio::time::timeout(STOP_GRACE, child.wait()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(io("wait")(e)),
            Err(_) => child.kill().await.map_err(io("kill")),
        }
    }
}

/// `addr` without its `/p2p/..` suffix.
fn strip_p2p(addr: Multiaddr) -> Multiaddr {
    addr.into_iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect()
}

/// The counters of a Prometheus text page that [`MetricsSnapshot`] holds; others are
/// ignored, and a missing one reads 0.
pub fn parse_metrics(text: &str) -> MetricsSnapshot {
    let mut m = MetricsSnapshot::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let mut parts = line.split_whitespace();
        let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Ok(value) = value.parse::<u64>() else {
            continue;
        };
        let slot = match name.strip_prefix("agentnet_") {
            Some("gossip_accepted_total") => &mut m.gossip_accepted,
            Some("gossip_rejected_total") => &mut m.gossip_rejected,
            Some("gossip_ignored_total") => &mut m.gossip_ignored,
            Some("gossip_received_total") => &mut m.gossip_received,
            Some("gossip_received_bytes_total") => &mut m.gossip_bytes,
            Some("gossip_dropped_total") => &mut m.gossip_dropped,
            Some("synced_records_total") => &mut m.synced_records,
            Some("gossip_repaired_total") => &mut m.gossip_repaired,
            Some("sync_requests_total") => &mut m.sync_requests,
            Some("sync_answered_total") => &mut m.sync_answered,
            Some("intents_sent_total") => &mut m.intents_sent,
            Some("intents_received_total") => &mut m.intents_received,
            Some("intents_rejected_total") => &mut m.intents_rejected,
            Some("intents_completed_total") => &mut m.intents_completed,
            Some("intent_timeouts_total") => &mut m.intent_timeouts,
            Some("peer_penalties_total") => &mut m.penalties,
            Some("agents") => &mut m.agents,
            Some("capabilities") => &mut m.capabilities,
            _ => continue,
        };
        *slot = value;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_pages_are_read_into_the_counters() {
        let page = "# HELP agentnet_gossip_received_total x\n\
                    # TYPE agentnet_gossip_received_total counter\n\
                    agentnet_gossip_received_total 12\n\
                    agentnet_synced_records_total 3\n\
                    agentnet_capabilities 40\n\
                    agentnet_something_new 9\n\
                    garbage\n";
        let m = parse_metrics(page);
        assert_eq!(m.gossip_received, 12);
        assert_eq!(m.synced_records, 3);
        assert_eq!(m.capabilities, 40);
        assert_eq!(m.gossip_bytes, 0);
    }

    #[test]
    fn a_process_config_carries_what_a_config_file_can() {
        let mut config = NodeConfig::new("/tmp/n0");
        config.target_peers = 7;
        let text = config_toml(&config).expect("toml");
        let file: agentnet_node::config::FileConfig = toml::from_str(&text).expect("parses");
        assert_eq!(file.target_peers, Some(7));
        assert_eq!(file.api.as_deref(), Some("127.0.0.1:0"));
        config.gossip_loss = 0.1;
        assert!(config_toml(&config).is_err());
    }
}
