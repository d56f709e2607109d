//! `agentnet-gateway`: an organisation's control plane. With no subcommand it serves.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agentnet_gateway::network::NodeNetwork;
use agentnet_gateway::{Db, DbOptions, Gateway, GatewayConfig, Network, api, keys};
use agentnet_node::{Node, NodeConfig};
use agentnet_protocol::{Keypair, read_key_file, write_key_file};
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use libp2p::Multiaddr;

/// The agentnet gateway: keys, budgets, policies, the kill switch and the audit log for an
/// organisation's agents, on Postgres.
#[derive(Debug, Parser)]
#[command(name = "agentnet-gateway", version, about)]
struct Cli {
    /// Postgres, such as postgres://postgres@127.0.0.1:5432/agentnet.
    #[arg(
        long,
        env = "DATABASE_URL",
        global = true,
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    /// Where the gateway keeps its key and its node's data.
    #[arg(long, env = "AGENTNET_GATEWAY_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Where to serve the REST API.
    #[arg(
        long,
        env = "AGENTNET_GATEWAY_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    listen: SocketAddr,
    /// Run without a node: pauses are signed and kept, but not published.
    #[arg(long)]
    no_node: bool,
    /// The embedded node's listen addresses.
    #[arg(long = "node-listen", default_values = ["/ip4/127.0.0.1/tcp/7351", "/ip4/127.0.0.1/udp/7351/quic-v1"])]
    node_listen: Vec<Multiaddr>,
    /// Peers the embedded node dials at start.
    #[arg(long)]
    bootstrap: Vec<Multiaddr>,
    /// Requests per minute per API key.
    #[arg(long, default_value_t = 6000)]
    rate_per_minute: u32,
    /// Let alert webhooks point at loopback, private and link-local addresses (a
    /// receiver on this machine or inside this network). Off, a webhook must reach a
    /// public address.
    #[arg(long)]
    allow_private_webhooks: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the REST API (the default).
    Serve,
    /// Administration.
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create an organisation and its first admin key, printed once.
    Init {
        /// The organisation's name.
        #[arg(long)]
        org: String,
    },
    /// Print the gateway's DID: agents' membership credentials and pause notices name it.
    Did,
}

fn data_dir(cli: &Cli) -> PathBuf {
    cli.data_dir.clone().unwrap_or_else(|| {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".local/share/agentnet-gateway")
    })
}

/// The gateway's key, made on first use.
fn gateway_key(dir: &Path) -> Result<Keypair> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("gateway.key");
    if path.exists() {
        return read_key_file(&path).with_context(|| format!("cannot read {}", path.display()));
    }
    let key = Keypair::generate().context("no randomness for a key")?;
    write_key_file(&path, &key, false)
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("new gateway key {} in {}", key.did(), path.display());
    Ok(key)
}

/// Connects, retrying with backoff while the database is down.
async fn connect(url: &str, startup: &api::Startup) -> Db {
    let mut delay = Duration::from_millis(500);
    loop {
        match Db::connect(url, DbOptions::default()).await {
            Ok(db) => return db,
            Err(e) => {
                tracing::error!(error = %e, retry_in_ms = delay.as_millis() as u64, "the database is unavailable");
                eprintln!("error: {e}; retrying in {delay:?}");
                startup.failed(e.to_string());
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let dir = data_dir(&cli);
    match &cli.command {
        Some(Command::Admin(AdminCommand::Init { org })) => {
            let key = gateway_key(&dir)?;
            let db = Db::connect(&cli.database_url, DbOptions::default())
                .await
                .with_context(|| format!("cannot use the database at {}", cli.database_url))?;
            let gw = Gateway::new(db, key, None, GatewayConfig::default());
            let (org_id, key) = keys::init_org(&gw, org).await?;
            println!("org_id   {org_id}");
            println!("key_id   {}", key.key_id);
            println!("key      {}", key.key);
            println!("gateway  {}", gw.did());
            println!("(store the key now: only its hash is kept)");
        }
        Some(Command::Admin(AdminCommand::Did)) => {
            println!("{}", gateway_key(&dir)?.did());
        }
        None | Some(Command::Serve) => serve(&cli, &dir).await?,
    }
    Ok(())
}

async fn serve(cli: &Cli, dir: &Path) -> Result<()> {
    let key = gateway_key(dir)?;
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cli.listen))?;
    let startup = api::Startup::default();
    let app = startup.router();
    // Small answers go out at once, not held back by Nagle's algorithm.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = tokio::spawn(async move {
        // The client's address: key checks that reach the database are limited per address.
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
    });
    eprintln!(
        "agentnet-gateway {} listening on http://{}",
        key.did(),
        cli.listen
    );

    let node = if cli.no_node {
        None
    } else {
        let mut config = NodeConfig::new(dir.join("node"));
        config.listen = cli.node_listen.clone();
        config.bootstrap = cli.bootstrap.clone();
        // The gateway obeys its own pause notices about every agent.
        config.pause_issuers = vec![key.did()];
        let node = Node::builder(config)
            .spawn()
            .await
            .context("cannot start the gateway's node")?;
        eprintln!(
            "node {} listening on {:?}",
            node.peer_id(),
            node.listen_addrs().await?
        );
        Some(node)
    };
    let network = node
        .clone()
        .map(|n| Arc::new(NodeNetwork(n)) as Arc<dyn Network>);

    let db = tokio::select! {
        db = connect(&cli.database_url, &startup) => db,
        _ = tokio::signal::ctrl_c() => return Ok(()),
    };
    let config = GatewayConfig {
        rate_per_minute: cli.rate_per_minute,
        private_webhooks: cli.allow_private_webhooks,
        ..GatewayConfig::default()
    };
    let gw = Gateway::new(db, key, network, config);
    startup.ready(gw.clone());
    tracing::info!("database ready; serving /api/v1");
    tokio::spawn(gw.run_maintenance());
    let served = server.await.context("the server task failed")?;
    if let Some(node) = node {
        let _ = node.shutdown().await;
    }
    served.context("the server failed")
}
