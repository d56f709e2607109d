//! `agentnet-bench`: release-mode benchmarks that print measured figures.
//!
//! Run with `cargo run --release -p agentnet-benches --bin agentnet-bench -- <command> --json`.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand, ValueEnum};

use agentnet_benches::trust;

/// agentnet benchmarks. Each command prints one JSON object with `--json`.
#[derive(Debug, Parser)]
#[command(name = "agentnet-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Attack simulations against the trust engine: sybil ring, camouflage, collusion,
    /// whitewashing. Checks the bars and exits non-zero if one fails.
    TrustSim {
        /// Which scenarios to run.
        #[arg(long, value_enum, default_value_t = Scenario::All)]
        scenario: Scenario,
        /// Seed of every random choice.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Divide every population by this factor (1 = the full sizes from the issue).
        #[arg(long, default_value_t = 1)]
        scale: usize,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Vector index: HNSW against an exact scan on synthetic clustered, low-rank vectors.
    Index {
        /// Base vectors.
        #[arg(long, default_value_t = 100_000)]
        n: usize,
        /// Dimension.
        #[arg(long, default_value_t = 384)]
        dim: usize,
        /// Queries.
        #[arg(long, default_value_t = 1_000)]
        queries: usize,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Search candidate list size (ef).
        #[arg(long, default_value_t = 64)]
        ef: usize,
        /// Write base.fvecs and query.fvecs here.
        #[arg(long)]
        export: Option<std::path::PathBuf>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Retrieval quality on a JSONL catalog and queries, against plain BM25 in the same run.
    Retrieval {
        /// Catalog JSONL: {"id", "name", "description", "tags"} per line.
        #[arg(long)]
        catalog: std::path::PathBuf,
        /// Queries JSONL: {"query", "relevant": [id, ...]} per line.
        #[arg(long)]
        queries: std::path::PathBuf,
        /// The embedder: lexical, minilm or hybrid (minilm fused with BM25). minilm and
        /// hybrid need a build with `--features minilm`.
        #[arg(long, default_value = "lexical")]
        embedder: String,
        /// The all-MiniLM-L6-v2 directory (scripts/fetch-minilm.sh writes it).
        #[arg(long, env = "AGENTNET_MINILM_DIR", default_value = agentnet_benches::retrieval::DEFAULT_MODEL_DIR)]
        model_dir: std::path::PathBuf,
        /// Lexical embedder: vector dimension.
        #[arg(long, default_value_t = agentnet_discovery::LexicalConfig::default().dim)]
        dim: usize,
        /// Lexical embedder: total weight of a word's character n-grams.
        #[arg(long, default_value_t = agentnet_discovery::LexicalConfig::default().ngram_weight)]
        ngram_weight: f32,
        /// Lexical embedder: weight of adjacent word pairs.
        #[arg(long, default_value_t = agentnet_discovery::LexicalConfig::default().bigram_weight)]
        bigram_weight: f32,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Capability search latency over N capabilities built from a catalog, HNSW against
    /// the exact scan in the same run, query embedding timed apart.
    Search {
        /// Catalog JSONL.
        #[arg(long)]
        catalog: std::path::PathBuf,
        /// Queries JSONL.
        #[arg(long)]
        queries: std::path::PathBuf,
        /// lexical or minilm (the index fuses either with BM25).
        #[arg(long, default_value = "lexical")]
        embedder: String,
        /// The all-MiniLM-L6-v2 directory.
        #[arg(long, env = "AGENTNET_MINILM_DIR", default_value = agentnet_benches::retrieval::DEFAULT_MODEL_DIR)]
        model_dir: std::path::PathBuf,
        /// Capabilities.
        #[arg(long, default_value_t = 50_000)]
        n: usize,
        /// Queries timed.
        #[arg(long = "query-count", default_value_t = 1_000)]
        query_count: usize,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Also time exact against HNSW at these sizes (comma-separated), to find the crossover.
        #[arg(long, value_delimiter = ',')]
        sweep: Vec<usize>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Aggregation speed: a from-scratch computation over N agents and M attestations, and
    /// single incremental updates measured against a full recompute in the same run.
    TrustAggregate {
        /// Agents.
        #[arg(long, default_value_t = 10_000)]
        agents: usize,
        /// Attestations (each backed by its own receipt).
        #[arg(long, default_value_t = 1_000_000)]
        attestations: usize,
        /// Incremental updates to time.
        #[arg(long, default_value_t = 1_000)]
        updates: usize,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// The gateway: ingestion throughput with durable commits, and reservation latency on
    /// one hot budget, over HTTP on the machine's Postgres, each against a bare-SQL baseline
    /// in the same run.
    GatewayIngest {
        /// Postgres; the run uses a fresh schema and drops it after.
        #[arg(
            long,
            env = "DATABASE_URL",
            default_value = "postgres://postgres@127.0.0.1:5432/test"
        )]
        database_url: String,
        /// Events to ingest.
        #[arg(long, default_value_t = 400_000)]
        events: usize,
        /// Runs per request.
        #[arg(long, default_value_t = 50)]
        runs_per_request: usize,
        /// Events per run.
        #[arg(long, default_value_t = 20)]
        events_per_run: usize,
        /// Concurrent ingesting clients.
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Reservations per client at 64 clients (four times as many at one client).
        #[arg(long, default_value_t = 200)]
        reservations: usize,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Ingestion survives kill -9: ingest into the `agentnet-gateway` binary, SIGKILL it
    /// mid-stream, restart it, retry what was not acknowledged, and count every row. Exits
    /// non-zero if anything acknowledged is missing or anything is there twice.
    GatewayDurability {
        /// The gateway binary (build it with `cargo build --release -p agentnet-gateway`).
        #[arg(long, default_value = "target/release/agentnet-gateway")]
        gateway: std::path::PathBuf,
        /// Postgres to make the fresh database on.
        #[arg(
            long,
            env = "DATABASE_URL",
            default_value = "postgres://postgres@127.0.0.1:5432/postgres"
        )]
        database_url: String,
        /// The fresh database (dropped first, and after).
        #[arg(long, default_value = "agentnet_durability")]
        database: String,
        /// Batches.
        #[arg(long, default_value_t = 2_000)]
        batches: usize,
        /// Runs per batch.
        #[arg(long, default_value_t = 10)]
        runs_per_batch: usize,
        /// Events per run.
        #[arg(long, default_value_t = 20)]
        events_per_run: usize,
        /// Concurrent clients.
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Milliseconds after the start to SIGKILL the gateway.
        #[arg(long, default_value_t = 1_500)]
        kill_after_ms: u64,
        /// The gateway's port.
        #[arg(long, default_value_t = 18_080)]
        port: u16,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    All,
    Sybil,
    Camouflage,
    Collusion,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::TrustSim {
            scenario,
            seed,
            scale,
            json,
        } => {
            let want = |s: Scenario| scenario == Scenario::All || scenario == s;
            let report = trust::attack_suite(
                seed,
                scale,
                want(Scenario::Sybil),
                want(Scenario::Camouflage),
                want(Scenario::Collusion),
            );
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{}", report.table());
            }
            if !report.failures.is_empty() {
                bail!("bars not met: {}", report.failures.join("; "));
            }
        }
        Command::Index {
            n,
            dim,
            queries,
            seed,
            ef,
            export,
            json,
        } => {
            let report =
                agentnet_benches::index::run(n, dim, queries, seed, ef, export.as_deref())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{report:#?}");
            }
        }
        Command::Retrieval {
            catalog,
            queries,
            embedder,
            model_dir,
            dim,
            ngram_weight,
            bigram_weight,
            json,
        } => {
            let mut lexical = agentnet_discovery::LexicalConfig::default();
            lexical.dim = dim;
            lexical.ngram_weight = ngram_weight;
            lexical.bigram_weight = bigram_weight;
            let report = agentnet_benches::retrieval::run(
                &catalog, &queries, &embedder, lexical, &model_dir,
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{report:#?}");
            }
        }
        Command::Search {
            catalog,
            queries,
            embedder,
            model_dir,
            n,
            query_count,
            seed,
            sweep,
            json,
        } => {
            let report = agentnet_benches::search::run(
                &catalog,
                &queries,
                &embedder,
                &model_dir,
                n,
                query_count,
                seed,
                &sweep,
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{report:#?}");
            }
        }
        Command::TrustAggregate {
            agents,
            attestations,
            updates,
            seed,
            json,
        } => {
            let report = trust::aggregate(agents, attestations, updates, seed);
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{report:#?}");
            }
        }
        Command::GatewayIngest {
            database_url,
            events,
            runs_per_request,
            events_per_run,
            clients,
            reservations,
            json,
        } => {
            let settings = agentnet_benches::gateway::Settings {
                database_url,
                events,
                runs_per_request,
                events_per_run,
                clients,
                reservations,
            };
            let runtime = tokio::runtime::Runtime::new()?;
            let report = runtime.block_on(agentnet_benches::gateway::run(&settings))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{report:#?}");
            }
        }
        Command::GatewayDurability {
            gateway,
            database_url,
            database,
            batches,
            runs_per_batch,
            events_per_run,
            clients,
            kill_after_ms,
            port,
            json,
        } => {
            let settings = agentnet_benches::durability::Settings {
                gateway,
                database_url,
                database,
                batches,
                runs_per_batch,
                events_per_run,
                clients,
                kill_after: std::time::Duration::from_millis(kill_after_ms),
                port,
            };
            let runtime = tokio::runtime::Runtime::new()?;
            let report = runtime.block_on(agentnet_benches::durability::run(&settings))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{report:#?}");
            }
            if !report.ok {
                bail!("rows were lost or duplicated");
            }
        }
    }
    Ok(())
}
