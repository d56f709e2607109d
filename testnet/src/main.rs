//! `agentnet-testnet`: run real nodes on this machine and measure them.

use std::path::PathBuf;

use agentnet_testnet::catalog::{self, CatalogEntry};
use agentnet_testnet::{Testnet, Topology, scenarios};
use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};

/// Run N real agentnet nodes on this machine, with scenarios and reports.
#[derive(Debug, Parser)]
#[command(name = "agentnet-testnet", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Propagation, then a late joiner, then intent round trips, on one testnet.
    NodeFigures,
    /// Time until every node holds a newly registered card.
    Propagation,
    /// Time for a node with gossip off to converge from one peer.
    LateJoin,
    /// Intent round trips between the first and the last node.
    IntentRtt,
    /// RSS of one node holding --agents agents.
    Memory,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one scenario and print (or write) its report.
    Run {
        /// Which scenario.
        #[arg(long, value_enum)]
        scenario: Scenario,
        /// Nodes.
        #[arg(long, default_value_t = 5)]
        nodes: usize,
        /// line, ring, star, full or random:K.
        #[arg(long, default_value = "line")]
        topology: Topology,
        /// The seed of every random choice.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// A JSONL catalog (such as ../shared/data/gorilla_apibench/catalog.jsonl);
        /// without one, a synthetic catalog.
        #[arg(long)]
        catalog: Option<PathBuf>,
        /// Cards to time (propagation).
        #[arg(long, default_value_t = 200)]
        cards: usize,
        /// Cards registered before timing starts.
        #[arg(long, default_value_t = 20)]
        warmup: usize,
        /// Cards in the registry before the late joiner dials (late-join alone).
        #[arg(long, default_value_t = 1000)]
        registry: usize,
        /// Intents to send (intent-rtt).
        #[arg(long, default_value_t = 500)]
        intents: usize,
        /// Agents the node holds (memory).
        #[arg(long, default_value_t = 10_000)]
        agents: usize,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Write report.json here too.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn machine() -> Value {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    json!({ "cores": cores, "memory_bytes": mem_kb * 1024, "os": std::env::consts::OS })
}

#[tokio::main]
async fn main() -> Result<()> {
    // Logs go to stderr, off unless RUST_LOG asks for them.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let Command::Run {
        scenario,
        nodes,
        topology,
        seed,
        catalog,
        cards,
        warmup,
        registry,
        intents,
        agents,
        json,
        out,
    } = cli.command;
    let entries: Vec<CatalogEntry> = match &catalog {
        Some(path) => catalog::load(path).with_context(|| format!("catalog {}", path.display()))?,
        None => catalog::synthetic(10_000),
    };
    if nodes < 2 && scenario != Scenario::Memory {
        bail!("--nodes must be at least 2");
    }
    let mut report = json!({
        "scenario": format!("{scenario:?}"),
        "version": env!("CARGO_PKG_VERSION"),
        "seed": seed,
        "nodes": nodes,
        "topology": format!("{topology:?}"),
        "catalog": catalog.as_ref().map(|p| p.display().to_string()),
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "machine": machine(),
    });
    let started = std::time::Instant::now();
    match scenario {
        Scenario::Memory => {
            let dir = tempfile::tempdir()?;
            let m = scenarios::memory(dir.path(), &entries, agents).await?;
            report["memory"] = serde_json::to_value(m)?;
        }
        _ => {
            // Round trips are timed one after another, faster than the default rate limit
            // (100 a minute, bursts of 200) admits: raise it for this run, and say so.
            let limit = u32::try_from(intents.saturating_mul(2))
                .unwrap_or(u32::MAX)
                .max(200);
            report["intent_limits_per_minute_and_burst"] = json!(limit);
            let mut net = Testnet::builder()
                .nodes(nodes)
                .topology(topology)
                .seed(seed)
                .configure(move |_, c| {
                    c.intents.per_minute = limit;
                    c.intents.burst = limit;
                })
                .spawn()
                .await?;
            if matches!(scenario, Scenario::NodeFigures | Scenario::Propagation) {
                let p = scenarios::propagation(&mut net, &entries, warmup, cards).await?;
                report["propagation"] = serde_json::to_value(p)?;
            }
            if scenario == Scenario::LateJoin {
                scenarios::propagation(&mut net, &entries, registry, 0).await?;
            }
            if matches!(scenario, Scenario::NodeFigures | Scenario::LateJoin) {
                let l = scenarios::late_join(&mut net).await?;
                report["late_join"] = serde_json::to_value(l)?;
            }
            if matches!(scenario, Scenario::NodeFigures | Scenario::IntentRtt) {
                let r = scenarios::intent_rtt(&net, intents).await?;
                report["intent_rtt"] = serde_json::to_value(r)?;
            }
            net.shutdown().await;
        }
    }
    report["elapsed_s"] = json!(started.elapsed().as_secs_f64());
    let text = serde_json::to_string_pretty(&report)?;
    if let Some(dir) = out {
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("report.json"), &text)?;
    }
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{text}");
    }
    Ok(())
}
