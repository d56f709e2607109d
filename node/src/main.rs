//! `agentnet`: the agentnet command line.
//!
//! `agentnet node run` starts a node with its local API; `status`, `peers`, `search`,
//! `agent` and `intent` talk to a running node's API; `key` manages keys offline.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use agentnet_node::api::{self, API_TOKEN_FILE, ApiConfig, DEFAULT_API_ADDR};
use agentnet_node::config::{FileConfig, Overrides, RunConfig, default_data_dir};
use agentnet_node::{Node, NodeError};
use agentnet_protocol::{Keypair, PublicKey, read_key_file, write_key_file};
use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::Value;

/// agentnet: a peer-to-peer network for AI agents.
#[derive(Debug, Parser)]
#[command(name = "agentnet", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Show a running node's status.
    Status(ClientArgs),
    /// List a running node's connected peers.
    Peers(ClientArgs),
    /// Search a running node's index of agents' capabilities.
    Search {
        /// What to find, in words.
        text: String,
        /// How many results.
        #[arg(long, default_value_t = 10)]
        k: usize,
        /// Only results with all of these tags (comma-separated).
        #[arg(long)]
        tags: Option<String>,
        /// Only agents trusted at least this much (0 to 1).
        #[arg(long)]
        min_trust: Option<f64>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Register or remove agents on a running node.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Send intents through a running node.
    #[command(subcommand)]
    Intent(IntentCommand),
    /// Create and inspect Ed25519 keys and their did:key identities.
    #[command(subcommand)]
    Key(KeyCommand),
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// Start a node and its local API, and run until interrupted (Ctrl-C).
    ///
    /// Settings come from built-in defaults, then the config file, then environment
    /// variables, then these flags.
    Run {
        /// A TOML config file (see `agentnet_node::config`).
        #[arg(long, value_name = "FILE", env = "AGENTNET_CONFIG")]
        config: Option<PathBuf>,
        /// Where the node keeps its data. Default: $XDG_DATA_HOME/agentnet or
        /// ~/.local/share/agentnet.
        #[arg(long, value_name = "DIR", env = "AGENTNET_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// A multiaddr to listen on (repeatable). Default: TCP and QUIC on 127.0.0.1:7341.
        #[arg(
            long,
            value_name = "MULTIADDR",
            env = "AGENTNET_LISTEN",
            value_delimiter = ','
        )]
        listen: Vec<String>,
        /// The local API's address. Default 127.0.0.1:7340; any other address requires
        /// the bearer token in the data directory's `api-token`.
        #[arg(long, value_name = "ADDR", env = "AGENTNET_API")]
        api: Option<String>,
        /// A peer to dial at start (repeatable).
        #[arg(
            long,
            value_name = "MULTIADDR",
            env = "AGENTNET_BOOTSTRAP",
            value_delimiter = ','
        )]
        bootstrap: Vec<String>,
        /// Find peers on the LAN with mDNS.
        #[arg(long)]
        mdns: bool,
        /// The all-MiniLM-L6-v2 model directory (needs a build with `--features minilm`).
        #[arg(long, value_name = "DIR", env = "AGENTNET_MINILM_DIR")]
        minilm_dir: Option<PathBuf>,
    },
}

/// How to reach a running node's API.
#[derive(Debug, Clone, Args)]
struct ClientArgs {
    /// The node's API address.
    #[arg(long, value_name = "ADDR", env = "AGENTNET_API", default_value = DEFAULT_API_ADDR)]
    api: String,
    /// The API token. Default: the `api-token` file in --data-dir, if there is one.
    #[arg(long, env = "AGENTNET_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The node's data directory, to find its API token.
    #[arg(long, value_name = "DIR", env = "AGENTNET_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum AgentCommand {
    /// Register an agent described by a TOML card (`name`, `description`, `[[capabilities]]`);
    /// the node creates and keeps its key. Prints the agent's DID.
    Register {
        /// The card file.
        #[arg(long, value_name = "FILE.toml")]
        card: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Withdraw an agent: the node publishes its tombstone.
    Remove {
        /// The agent's DID.
        did: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show an agent's card.
    Show {
        /// The agent's DID.
        did: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
enum IntentCommand {
    /// Send an intent and wait for its result.
    Send {
        /// The sending agent (hosted on this node).
        #[arg(long)]
        from: String,
        /// The agent asked to act.
        #[arg(long)]
        to: String,
        /// The capability invoked.
        #[arg(long)]
        capability: String,
        /// The input, as JSON.
        #[arg(long, default_value = "{}")]
        input: String,
        /// Milliseconds the callee has.
        #[arg(long, default_value_t = 30_000)]
        timeout_ms: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Generate a new key, write it to FILE with mode 0600, and print its DID.
    Gen {
        /// Where to write the key. An existing file is never overwritten.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Print the did:key of a raw 32-byte Ed25519 public key.
    Did {
        /// The public key as 64 hexadecimal digits.
        #[arg(long, value_name = "HEX")]
        public_key_hex: String,
    },
    /// Print the DID, public key and libp2p PeerId of a key file.
    Show {
        /// The key file.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Node(NodeCommand::Run {
            config,
            data_dir,
            listen,
            api,
            bootstrap,
            mdns,
            minilm_dir,
        }) => {
            let file = match config {
                Some(path) => FileConfig::load(&path)?,
                None => FileConfig::default(),
            };
            let mut overrides = Overrides::default();
            overrides.data_dir = data_dir;
            overrides.listen = listen;
            overrides.api = api;
            overrides.bootstrap = bootstrap;
            overrides.mdns = mdns.then_some(true);
            overrides.minilm_dir = minilm_dir;
            let config = RunConfig::resolve(file, overrides)?;
            run_node(config).await?;
        }
        Command::Status(client) => {
            let status = Client::new(&client)?.get("/v1/status").await?;
            if client.json {
                print_json(&status);
            } else {
                println!("peer id       {}", text(&status["peer_id"]));
                for addr in status["listen_addrs"].as_array().into_iter().flatten() {
                    println!("listening     {}", text(addr));
                }
                println!("peers         {}", status["connected_peers"]);
                println!("agents        {}", status["agents"]);
                println!("capabilities  {}", status["capabilities"]);
                println!("embedder      {}", text(&status["embedder"]));
            }
        }
        Command::Peers(client) => {
            let peers = Client::new(&client)?.get("/v1/peers").await?;
            if client.json {
                print_json(&peers);
            } else {
                let list = peers["peers"].as_array().cloned().unwrap_or_default();
                if list.is_empty() {
                    println!("no connected peers");
                }
                for peer in list {
                    println!(
                        "{}  penalty {:>7.1}  gossip score {}",
                        text(&peer["peer_id"]),
                        peer["penalty"].as_f64().unwrap_or(0.0),
                        peer["gossip_score"]
                            .as_f64()
                            .map(|s| format!("{s:.1}"))
                            .unwrap_or_else(|| "-".into())
                    );
                }
            }
        }
        Command::Search {
            text: query,
            k,
            tags,
            min_trust,
            client,
        } => {
            let mut params = vec![("q", query), ("k", k.to_string())];
            if let Some(tags) = tags {
                params.push(("tags", tags));
            }
            if let Some(t) = min_trust {
                params.push(("min_trust", t.to_string()));
            }
            let c = Client::new(&client)?;
            let page = spinner("searching", c.get_query("/v1/search", &params)).await?;
            if client.json {
                print_json(&page);
            } else {
                let results = page["results"].as_array().cloned().unwrap_or_default();
                if results.is_empty() {
                    println!("no results");
                }
                for (i, r) in results.iter().enumerate() {
                    println!(
                        "{:>2}. {:.3}  {} / {}  {}",
                        i + 1,
                        r["score"].as_f64().unwrap_or(0.0),
                        text(&r["name"]),
                        text(&r["capability"]),
                        text(&r["did"])
                    );
                }
            }
        }
        Command::Agent(AgentCommand::Register { card, client }) => {
            let body = card_body(&card)?;
            let c = Client::new(&client)?;
            let reply = c.post("/v1/agents", &body).await?;
            if client.json {
                print_json(&reply);
            } else {
                println!("{}", text(&reply["did"]));
            }
        }
        Command::Agent(AgentCommand::Remove { did, client }) => {
            Client::new(&client)?
                .delete(&format!("/v1/agents/{did}"))
                .await?;
            if client.json {
                print_json(&serde_json::json!({ "removed": did }));
            } else {
                println!("removed {did}");
            }
        }
        Command::Agent(AgentCommand::Show { did, client }) => {
            let card = Client::new(&client)?
                .get(&format!("/v1/agents/{did}"))
                .await?;
            print_json(&card);
        }
        Command::Intent(IntentCommand::Send {
            from,
            to,
            capability,
            input,
            timeout_ms,
            client,
        }) => {
            let input: Value = serde_json::from_str(&input)
                .with_context(|| format!("--input is not JSON: {input}"))?;
            let c = Client::new(&client)?
                .with_timeout(Duration::from_millis(timeout_ms) + Duration::from_secs(10));
            let body = serde_json::json!({
                "from": from, "to": to, "capability": capability,
                "input": input, "timeout_ms": timeout_ms,
            });
            let outcome = spinner("waiting for the result", c.post("/v1/intents", &body)).await?;
            if client.json {
                print_json(&outcome);
            } else {
                println!("outcome   {}", text(&outcome["outcome"]));
                println!("latency   {} ms", outcome["latency_ms"]);
                if !outcome["output"].is_null() {
                    println!("output    {}", outcome["output"]);
                }
                if let Some(e) = outcome["error"].as_str() {
                    println!("error     {e}");
                }
                println!("receipt   {}", text(&outcome["receipt"]));
            }
        }
        Command::Key(KeyCommand::Gen { out }) => {
            let keypair = Keypair::generate().context("cannot generate a key")?;
            write_key_file(&out, &keypair, false)?;
            println!("{}", keypair.did());
        }
        Command::Key(KeyCommand::Did { public_key_hex }) => {
            let key = parse_public_key_hex(&public_key_hex)?;
            println!("{}", key.to_did());
        }
        Command::Key(KeyCommand::Show { key }) => {
            let keypair = read_key_file(&key)?;
            println!("did:        {}", keypair.did());
            println!("public key: {}", hex::encode(keypair.public().as_bytes()));
            println!("peer id:    {}", keypair.peer_id());
        }
    }
    Ok(())
}

/// Parses 64 hex digits as an Ed25519 public key, explaining exactly what is wrong otherwise.
fn parse_public_key_hex(input: &str) -> Result<PublicKey> {
    let hex_digits = input.trim();
    let hex_digits = hex_digits
        .strip_prefix("0x")
        .or_else(|| hex_digits.strip_prefix("0X"))
        .unwrap_or(hex_digits);
    if let Some((i, c)) = hex_digits
        .char_indices()
        .find(|(_, c)| !c.is_ascii_hexdigit())
    {
        bail!("--public-key-hex: {c:?} at position {i} is not a hexadecimal digit");
    }
    if hex_digits.len() != 64 {
        bail!(
            "--public-key-hex must be 64 hex digits (a 32-byte Ed25519 public key), got {} digits",
            hex_digits.len()
        );
    }
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(hex_digits, &mut bytes).context("--public-key-hex is not valid hex")?;
    PublicKey::from_bytes(&bytes)
        .context("--public-key-hex: these 32 bytes are not a valid Ed25519 public key (not a point on the curve)")
}

/// Runs a node and its API until Ctrl-C.
async fn run_node(config: RunConfig) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log))
        .context("bad log filter")?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
    let data_dir = config.node.data_dir.clone();
    let node = match Node::builder(config.node.clone()).spawn().await {
        Ok(node) => node,
        Err(NodeError::Store(e)) => {
            return Err(e).with_context(|| {
                format!(
                    "cannot open the store in {} (is another node running on it?)",
                    data_dir.display()
                )
            });
        }
        Err(e) => return Err(e).context("cannot start the node"),
    };
    let server = api::serve(node.clone(), ApiConfig::new(config.api, &data_dir))
        .await
        .context("cannot start the local API")?;
    // Give the listeners a moment to bind, so the addresses printed are real.
    tokio::time::sleep(Duration::from_millis(200)).await;
    println!("agentnet node {}", node.peer_id());
    println!("data      {}", data_dir.display());
    for addr in node.listen_addrs().await? {
        println!("listening {addr}/p2p/{}", node.peer_id());
    }
    println!("api       http://{}", server.local_addr());
    if server.token().is_some() {
        println!(
            "api token {} (send it as `Authorization: Bearer ...`)",
            data_dir.join(API_TOKEN_FILE).display()
        );
    }
    println!("embedder  {}", node.embedder());
    println!("agents    {}", node.agents().len());
    tokio::signal::ctrl_c()
        .await
        .context("cannot wait for Ctrl-C")?;
    eprintln!("stopping");
    server.stop();
    node.shutdown().await?;
    Ok(())
}

/// A client of a node's local API.
struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    fn new(args: &ClientArgs) -> Result<Self> {
        let token = match &args.token {
            Some(t) => Some(t.clone()),
            None => {
                let dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
                std::fs::read_to_string(dir.join(API_TOKEN_FILE))
                    .ok()
                    .map(|t| t.trim().to_owned())
            }
        };
        let base = if args.api.starts_with("http://") || args.api.starts_with("https://") {
            args.api.trim_end_matches('/').to_owned()
        } else {
            format!("http://{}", args.api)
        };
        Ok(Client {
            base,
            token,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(90))
                .build()?,
        })
    }

    fn with_timeout(mut self, timeout: Duration) -> Self {
        if let Ok(http) = reqwest::Client::builder().timeout(timeout).build() {
            self.http = http;
        }
        self
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value> {
        let request = match &self.token {
            Some(t) => request.bearer_auth(t),
            None => request,
        };
        let response = request.send().await.with_context(|| {
            format!(
                "cannot reach the node's API at {} (is `agentnet node run` running?)",
                self.base
            )
        })?;
        let status = response.status();
        let bytes = response.bytes().await?;
        let value: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        if !status.is_success() {
            let message = value["error"]["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| value.to_string());
            bail!("{status}: {message}");
        }
        Ok(value)
    }

    async fn get(&self, path: &str) -> Result<Value> {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    async fn get_query(&self, path: &str, params: &[(&str, String)]) -> Result<Value> {
        self.send(self.http.get(format!("{}{path}", self.base)).query(params))
            .await
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    async fn delete(&self, path: &str) -> Result<Value> {
        self.send(self.http.delete(format!("{}{path}", self.base)))
            .await
    }
}

/// Shows a spinner on stderr (when it is a terminal) while `work` runs.
async fn spinner<T>(message: &str, work: impl std::future::Future<Output = T>) -> T {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    bar.set_message(message.to_owned());
    bar.enable_steady_tick(Duration::from_millis(100));
    let out = work.await;
    bar.finish_and_clear();
    out
}

fn text(v: &Value) -> String {
    v.as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| v.to_string())
}

fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

/// Reads an agent card TOML file into the API's registration body.
fn card_body(path: &std::path::Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let card: toml::Value =
        toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?;
    let body = serde_json::to_value(card)?;
    if body.get("name").is_none() {
        bail!("{}: `name` is required", path.display());
    }
    Ok(body)
}
