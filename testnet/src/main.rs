//! `agentnet-testnet`: run real nodes on this machine, measure them, and write reports.

use std::path::{Path, PathBuf};
use std::time::Duration;

use agentnet_testnet::catalog::{self, CatalogEntry};
use agentnet_testnet::report::{self, Chart, Report, Section, Series, Style};
use agentnet_testnet::scenarios::{self, Stats};
use agentnet_testnet::sybil::{self, SybilConfig};
use agentnet_testnet::{Testnet, Topology};
use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Run N real agentnet nodes on this machine, with faults, attacks and reports.
#[derive(Debug, Parser)]
#[command(name = "agentnet-testnet", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Scenario {
    /// Time until every node holds a newly registered card, with traffic per node.
    Propagation,
    /// Time for a node with gossip off to converge from one peer after the registry filled.
    LateJoin,
    /// Nodes leave and rejoin while cards are registered: delivery ratio and convergence.
    Churn,
    /// A 50/50 split, cards on both sides, then healing: time until all registries agree.
    Partition,
    /// The same queries on every node against a central exact index, under churn.
    SearchAgreement,
    /// A sybil ring vouches for a malicious agent: its trust rank on honest nodes.
    Sybil,
    /// Intents per second across the network, with latency and errors.
    IntentLoad,
    /// Sequential intent round trips between the first and the last node.
    IntentRtt,
    /// RSS of one node holding --agents agents.
    Memory,
    /// Propagation, then a partition, then a late joiner, on one testnet loaded once.
    Registry,
    /// Propagation, late-join, partition, search-agreement, intent-load, churn and sybil,
    /// each on a fresh testnet.
    All,
}

/// Everything a run can be told, from flags or from a TOML file (same names, kebab-case).
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
struct Options {
    /// Which scenarios (comma-separated), each on a fresh testnet.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "propagation")]
    #[serde(deserialize_with = "one_or_many")]
    scenario: Vec<Scenario>,
    /// Nodes; `sweep` takes several sizes (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "10")]
    #[serde(deserialize_with = "one_or_many")]
    nodes: Vec<usize>,
    /// line, ring, star, full or random:K.
    #[arg(long, default_value = "random:3")]
    topology: String,
    /// The seed of every random choice the harness makes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// A JSONL catalog (such as ../shared/data/gorilla_apibench/catalog.jsonl); without
    /// one, a synthetic catalog.
    #[arg(long)]
    catalog: Option<PathBuf>,
    /// A JSONL query file (`{"query": ..}` per line) for search-agreement; without one,
    /// queries made from catalog descriptions.
    #[arg(long)]
    queries: Option<PathBuf>,
    /// Agents spread over the nodes before measuring.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Cards to time (propagation).
    #[arg(long, default_value_t = 100)]
    cards: usize,
    /// Cards timed but left out of the figures first (propagation).
    #[arg(long, default_value_t = 10)]
    warmup: usize,
    /// One-way latency added to every connection the harness makes, through a relay.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Share of received gossip messages each node drops unread (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    gossip_loss: f64,
    /// Cards registered on each side of the partition.
    #[arg(long, default_value_t = 50)]
    cards_per_side: usize,
    /// How long churn lasts, in seconds.
    #[arg(long, default_value_t = 20.0)]
    churn_duration_s: f64,
    /// Nodes stopped per second during churn.
    #[arg(long, default_value_t = 0.5)]
    churn_rate: f64,
    /// How long a stopped node stays down, in seconds.
    #[arg(long, default_value_t = 4.0)]
    churn_downtime_s: f64,
    /// Cards registered per second during churn.
    #[arg(long, default_value_t = 5.0)]
    churn_cards_per_s: f64,
    /// Queries asked of every node per search-agreement round.
    #[arg(long, default_value_t = 100)]
    query_count: usize,
    /// Search-agreement rounds.
    #[arg(long, default_value_t = 3)]
    search_rounds: usize,
    /// Nodes stopped between search-agreement rounds.
    #[arg(long, default_value_t = 2)]
    search_churn: usize,
    /// Sybil rounds.
    #[arg(long, default_value_t = 20)]
    sybil_rounds: usize,
    /// Sybil nodes that join.
    #[arg(long, default_value_t = 3)]
    sybil_nodes: usize,
    /// Callers sending at once (intent-load).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// How long intent-load sends, in seconds.
    #[arg(long, default_value_t = 10.0)]
    load_duration_s: f64,
    /// Sequential intents (intent-rtt).
    #[arg(long, default_value_t = 500)]
    intents: usize,
    /// Connections each node keeps before pruning (`NodeConfig::target_peers`).
    #[arg(long, default_value_t = agentnet_node::DEFAULT_TARGET_PEERS)]
    target_peers: usize,
    /// Run each node as a separate `agentnet node run` process, driven over its local
    /// API, instead of all in this process. Propagation, late-join, partition, churn and
    /// registry run this way; the scenarios that serve intents or forge records need
    /// in-process nodes.
    #[arg(long)]
    processes: bool,
    /// The `agentnet` binary for --processes. Default: the one beside this executable,
    /// or $AGENTNET_BIN.
    #[arg(long, value_name = "FILE")]
    agentnet_bin: Option<PathBuf>,
}

/// A TOML value that may be one item or a list of them.
fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany<T> {
        One(T),
        Many(Vec<T>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(t) => vec![t],
        OneOrMany::Many(v) => v,
    })
}

/// Parses the defaults out of the flags, so that flags and TOML share them.
#[derive(Debug, Parser)]
struct Defaults {
    #[command(flatten)]
    options: Options,
}

impl Default for Options {
    fn default() -> Self {
        Defaults::parse_from(["agentnet-testnet"]).options
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run scenarios on one network size and write report.json and report.md (with SVG
    /// plots) to --out.
    Run {
        #[command(flatten)]
        options: Options,
        /// Read the options from this TOML file instead of the flags (same names).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where to write the report; without it, only stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Run scenarios at several network sizes (`--nodes 10,25,50,100`) and plot how the
    /// figures grow.
    Sweep {
        #[command(flatten)]
        options: Options,
        /// Read the options from this TOML file instead of the flags (same names).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where to write the report.
        #[arg(long)]
        out: PathBuf,
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

fn spinner(message: String) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar.set_message(message);
    bar
}

/// What one scenario produced: its figures (JSON) and its report section.
struct Outcome {
    key: &'static str,
    figures: Value,
    section: Section,
}

fn ms(v: f64) -> String {
    format!("{v:.1} ms")
}

fn stats_rows(prefix: &str, s: &Stats) -> Vec<(String, String)> {
    vec![
        (format!("{prefix} p50"), ms(s.p50_ms)),
        (format!("{prefix} p95"), ms(s.p95_ms)),
        (format!("{prefix} p99"), ms(s.p99_ms)),
        (format!("{prefix} max"), ms(s.max_ms)),
    ]
}

fn chart(file: String, title: &str, x: &str, y: &str, series: Vec<Series>, style: Style) -> Chart {
    Chart {
        file,
        title: title.to_owned(),
        x_label: x.to_owned(),
        y_label: y.to_owned(),
        series,
        style,
        log_x: false,
        y_range: None,
    }
}

fn series(name: &str, points: Vec<(f64, f64)>) -> Series {
    Series {
        name: name.to_owned(),
        points,
    }
}

async fn spawn(o: &Options, nodes: usize) -> Result<Testnet> {
    let topology: Topology = o.topology.parse().map_err(anyhow::Error::msg)?;
    // The scenarios send intents faster than the default per-peer limit (100 a minute)
    // admits; the report says what was used.
    let mut builder = Testnet::builder()
        .nodes(nodes)
        .topology(topology)
        .seed(o.seed)
        .gossip_loss(o.gossip_loss)
        .configure({
            let target_peers = o.target_peers.max(1);
            move |_, c| {
                c.intents.per_minute = INTENT_LIMIT;
                c.intents.burst = INTENT_LIMIT;
                c.target_peers = target_peers;
            }
        });
    if o.latency_ms > 0 {
        builder = builder.latency(Duration::from_millis(o.latency_ms));
    }
    if o.processes {
        let binary = match &o.agentnet_bin {
            Some(path) => path.clone(),
            None => agentnet_testnet::process::find_binary()?,
        };
        builder = builder.processes(binary);
    }
    Ok(builder.spawn().await?)
}

/// Intents per minute (and burst) each node admits per peer and per agent in these runs.
const INTENT_LIMIT: u32 = 1_000_000;

/// Runs one scenario on a fresh testnet of `nodes` nodes; `tag` names its chart files.
async fn run_one(
    scenario: Scenario,
    o: &Options,
    nodes: usize,
    entries: &[CatalogEntry],
    tag: &str,
) -> Result<Vec<Outcome>> {
    let bar = spinner(format!("{scenario:?} on {nodes} nodes"));
    let result = run_inner(scenario, o, nodes, entries, tag, &bar).await;
    bar.finish_and_clear();
    result
}

async fn run_inner(
    scenario: Scenario,
    o: &Options,
    nodes: usize,
    entries: &[CatalogEntry],
    tag: &str,
    bar: &ProgressBar,
) -> Result<Vec<Outcome>> {
    if scenario == Scenario::Memory {
        let dir = tempfile::tempdir()?;
        let m = scenarios::memory(dir.path(), entries, o.agents).await?;
        let section = Section {
            heading: "Memory".into(),
            text: format!(
                "One node holding {} agents, each card signed by its own key.",
                m.agents
            ),
            table: vec![
                ("agents".into(), m.agents.to_string()),
                (
                    "RSS after".into(),
                    format!("{} MB", m.rss_after_bytes / 1_000_000),
                ),
                (
                    "bytes per agent".into(),
                    format!("{:.0}", m.bytes_per_agent),
                ),
                ("load".into(), format!("{:.2} s", m.load_s)),
            ],
            charts: vec![],
        };
        return Ok(vec![Outcome {
            key: "memory",
            figures: serde_json::to_value(m)?,
            section,
        }]);
    }
    if nodes < 2 {
        bail!("--nodes must be at least 2");
    }
    if o.processes && !runs_as_processes(scenario) {
        bail!(
            "{scenario:?} serves intents or forges records, which needs in-process nodes; \
             with --processes, run propagation, late-join, partition, churn or registry"
        );
    }
    bar.set_message(format!("{scenario:?}: starting {nodes} nodes"));
    let mut net = spawn(o, nodes).await?;
    bar.set_message(format!("{scenario:?} on {nodes} nodes: running"));
    let outcomes = if scenario == Scenario::Registry {
        let mut outcomes = Vec::new();
        for (k, s) in [
            Scenario::Propagation,
            Scenario::Partition,
            Scenario::LateJoin,
        ]
        .into_iter()
        .enumerate()
        {
            bar.set_message(format!("{s:?} on {nodes} nodes"));
            outcomes.push(measure(s, o, &mut net, entries, tag, k > 0).await?);
        }
        outcomes
    } else {
        vec![measure(scenario, o, &mut net, entries, tag, false).await?]
    };
    net.shutdown().await;
    Ok(outcomes)
}

/// Measures `scenario` on a running testnet; `loaded` says its agents are already spread.
async fn measure(
    scenario: Scenario,
    o: &Options,
    net: &mut Testnet,
    entries: &[CatalogEntry],
    tag: &str,
    loaded: bool,
) -> Result<Outcome> {
    let nodes = net.len();
    let outcome = match scenario {
        Scenario::Propagation => {
            let p = scenarios::propagation(net, entries, o.agents, o.warmup, o.cards).await?;
            let mut table = vec![
                ("agents loaded first".into(), p.agents.to_string()),
                ("load until all nodes held them".into(), ms(p.load_ms)),
                (
                    "then until every node re-embedded its vectors".into(),
                    ms(p.settle_ms),
                ),
                ("cards timed".into(), p.samples.to_string()),
            ];
            table.extend(stats_rows("to every node", &p.to_all_nodes));
            table.extend(stats_rows("to each node", &p.to_each_node));
            table.extend(stats_rows("register_agent on the origin", &p.register));
            table.push((
                "gossip messages per node per card".into(),
                format!("{:.2}", p.traffic_per_card.messages_per_node),
            ));
            table.push((
                "gossip bytes per node per card".into(),
                format!("{:.0}", p.traffic_per_card.bytes_per_node),
            ));
            table.push((
                "duplicates per node per card".into(),
                format!("{:.3}", p.traffic_per_card.duplicates_per_node),
            ));
            let cdf = report::cdf(&p.arrivals_ms);
            Outcome {
                key: "propagation",
                section: Section {
                    heading: format!("Propagation ({nodes} nodes)"),
                    text: format!(
                        "{} agents from the catalog were spread over the nodes first, and every \
                         node re-embedded its vectors under its new corpus statistics. Then {} \
                         cards ({} more as warm-up) were registered one at a time on seeded \
                         random nodes, each timed from the registering call (including the \
                         origin's durable commit) until every node held it. Messages are \
                         gossip messages the node's handler saw, after gossipsub's own \
                         de-duplication; duplicates are those carrying a record already held.",
                        p.agents, p.samples, p.warmup
                    ),
                    table,
                    charts: vec![chart(
                        format!("{tag}propagation_cdf.svg"),
                        &format!("Propagation CDF, {nodes} nodes"),
                        "ms from registration until the node holds the card",
                        "share of (card, node) arrivals",
                        vec![series("arrivals", cdf)],
                        Style::Line,
                    )],
                },
                figures: serde_json::to_value(p)?,
            }
        }
        Scenario::LateJoin => {
            if !loaded {
                load(net, entries, o.agents).await?;
            }
            let l = scenarios::late_join(net).await?;
            Outcome {
                key: "late_join",
                section: Section {
                    heading: format!("Late join ({nodes} nodes)"),
                    text: format!(
                        "After {} agents were spread over the network, one more node with \
                         gossip off dialled a single peer; it learns by anti-entropy alone.",
                        o.agents
                    ),
                    table: vec![
                        ("capabilities to learn".into(), l.capabilities.to_string()),
                        ("time to full convergence".into(), ms(l.convergence_ms)),
                    ],
                    charts: vec![],
                },
                figures: serde_json::to_value(l)?,
            }
        }
        Scenario::Partition => {
            if !loaded {
                load(net, entries, o.agents).await?;
            }
            let p = scenarios::partition(net, entries, o.cards_per_side).await?;
            Outcome {
                key: "partition",
                section: Section {
                    heading: format!("Partition ({nodes} nodes)"),
                    text: format!(
                        "The nodes were split {}/{} by blocking every connection between the \
                         sides; {} cards were registered on each side; the split {} (each \
                         side held its own cards and none of the other's). Once every node had \
                         re-embedded its vectors, the blocks were lifted and the harness's \
                         edges redialled.",
                        p.sides[0],
                        p.sides[1],
                        p.cards_per_side,
                        if p.split_held { "held" } else { "leaked" }
                    ),
                    table: vec![
                        (
                            "capabilities every node must hold".into(),
                            p.capabilities.to_string(),
                        ),
                        (
                            "from the split holding until every node re-embedded".into(),
                            ms(p.settle_ms),
                        ),
                        ("heal to full agreement".into(), ms(p.heal_ms)),
                        (
                            "records learnt by sync per node while healing".into(),
                            format!("{:.1}", p.heal_traffic.synced_per_node),
                        ),
                        (
                            "of those gossiped again (repair) per node".into(),
                            format!("{:.1}", p.heal_traffic.repaired_per_node),
                        ),
                        (
                            "sync requests sent per node while healing".into(),
                            format!("{:.1}", p.heal_traffic.sync_requests_per_node),
                        ),
                        (
                            "gossip messages per node while healing".into(),
                            format!("{:.1}", p.heal_traffic.messages_per_node),
                        ),
                    ],
                    charts: vec![chart(
                        format!("{tag}partition_convergence.svg"),
                        &format!(
                            "Partition and heal, {nodes} nodes (heal at {:.1} s)",
                            p.healed_at_s
                        ),
                        "s since the split",
                        "share of (capability, node) pairs held",
                        vec![series("held", p.curve.clone())],
                        Style::Line,
                    )],
                },
                figures: serde_json::to_value(p)?,
            }
        }
        Scenario::Churn => {
            if !loaded {
                load(net, entries, o.agents).await?;
            }
            let c = scenarios::churn(
                net,
                entries,
                Duration::from_secs_f64(o.churn_duration_s),
                o.churn_rate,
                Duration::from_secs_f64(o.churn_downtime_s),
                o.churn_cards_per_s,
            )
            .await?;
            Outcome {
                key: "churn",
                section: Section {
                    heading: format!("Churn ({nodes} nodes)"),
                    text: format!(
                        "For {:.0} s a random node (never node 0) stopped every {:.1} s and \
                         came back {:.1} s later from its store, while {:.1} cards a second were \
                         registered on running nodes. The delivery ratio is the share of \
                         (card, running node) pairs held when the churn ended.",
                        c.duration_s,
                        1.0 / c.rate_per_s,
                        c.downtime_s,
                        o.churn_cards_per_s
                    ),
                    table: vec![
                        ("departures".into(), c.departures.to_string()),
                        ("cards registered".into(), c.cards.to_string()),
                        (
                            "delivery ratio at the end".into(),
                            format!("{:.4}", c.delivery_ratio),
                        ),
                        ("convergence after the churn".into(), ms(c.convergence_ms)),
                    ],
                    charts: vec![chart(
                        format!("{tag}churn_convergence.svg"),
                        &format!("Churn, {nodes} nodes (ends at {:.1} s)", c.ended_at_s),
                        "s since the churn began",
                        "share of (capability, running node) pairs held",
                        vec![series("held", c.curve.clone())],
                        Style::Line,
                    )],
                },
                figures: serde_json::to_value(c)?,
            }
        }
        Scenario::SearchAgreement => {
            if !loaded {
                load(net, entries, o.agents).await?;
            }
            let queries = match &o.queries {
                Some(path) => scenarios::load_queries(path)?,
                None => scenarios::synthetic_queries(entries, o.query_count),
            };
            let queries: Vec<_> = queries.into_iter().take(o.query_count).collect();
            let s =
                scenarios::search_agreement(net, &queries, o.search_rounds, o.search_churn).await?;
            let rounds: Vec<(f64, f64)> = s
                .per_round
                .iter()
                .enumerate()
                .map(|(i, r)| (i as f64, *r))
                .collect();
            Outcome {
                key: "search_agreement",
                section: Section {
                    heading: format!("Search agreement ({nodes} nodes)"),
                    text: format!(
                        "{} queries were asked of every running node in each of {} rounds \
                         (top 10 by similarity alone, so a node's own trust does not reorder \
                         them), and compared with a central index scanning every card exactly. \
                         Between rounds {} nodes were stopped and others restarted.",
                        s.queries, s.rounds, o.search_churn
                    ),
                    table: vec![
                        (
                            "recall@10 against the central index".into(),
                            format!("{:.4}", s.recall_at_10),
                        ),
                        (
                            "lowest single recall".into(),
                            format!("{:.2}", s.min_recall),
                        ),
                        ("capabilities".into(), s.capabilities.to_string()),
                        ("departures".into(), s.departures.to_string()),
                    ],
                    charts: vec![Chart {
                        y_range: Some((0.0, 1.05)),
                        ..chart(
                            format!("{tag}search_agreement.svg"),
                            &format!("Search agreement per round, {nodes} nodes"),
                            "round",
                            "recall@10",
                            vec![series("recall", rounds)],
                            Style::LinePoints,
                        )
                    }],
                },
                figures: serde_json::to_value(s)?,
            }
        }
        Scenario::Sybil => {
            let config = SybilConfig {
                rounds: o.sybil_rounds,
                sybil_nodes: o.sybil_nodes,
                ..SybilConfig::default()
            };
            let s = sybil::sybil(net, config).await?;
            let best: Vec<(f64, f64)> = s
                .rounds
                .iter()
                .map(|r| (r.round as f64, r.best_rank as f64))
                .collect();
            let median: Vec<(f64, f64)> = s
                .rounds
                .iter()
                .map(|r| (r.round as f64, r.median_rank as f64))
                .collect();
            let line = |v: f64| {
                s.rounds
                    .iter()
                    .map(|r| (r.round as f64, v))
                    .collect::<Vec<_>>()
            };
            let m: Vec<(f64, f64)> = s
                .rounds
                .iter()
                .map(|r| (r.round as f64, r.malicious_score))
                .collect();
            let w: Vec<(f64, f64)> = s
                .rounds
                .iter()
                .map(|r| (r.round as f64, r.worker_score))
                .collect();
            Outcome {
                key: "sybil",
                section: Section {
                    heading: format!("Sybil ring ({nodes} honest nodes)"),
                    text: format!(
                        "{} sybil nodes joined with {} sybil agents and one malicious agent \
                         offering the honest workers' capability. Every round each sybil sent \
                         real intents to the malicious agent and to another sybil and \
                         published perfect attestations citing their receipts; honest callers \
                         searched, called the best result (or a random one, {:.0}% of the \
                         time) and attested to the outcome. The rank counts a provider as \
                         ahead only when strictly better, so ties favour the malicious agent.",
                        s.config.sybil_nodes,
                        s.sybils,
                        s.config.explore * 100.0
                    ),
                    table: vec![
                        ("honest workers".into(), s.config.workers.to_string()),
                        (
                            "sybil intents / attestations".into(),
                            format!("{} / {}", s.sybil_intents, s.sybil_attestations),
                        ),
                        (
                            "best rank of the malicious agent on any honest node".into(),
                            s.best_rank_ever.to_string(),
                        ),
                        (
                            "entered an honest top 10 (trust)".into(),
                            s.entered_top_10.to_string(),
                        ),
                        (
                            "entered an honest top 10 (search)".into(),
                            s.entered_search_top_10.to_string(),
                        ),
                    ],
                    charts: vec![
                        chart(
                            format!("{tag}sybil_rank.svg"),
                            "Malicious agent's trust rank on honest nodes",
                            "round",
                            "rank (1 is best)",
                            vec![
                                series("best over honest nodes", best),
                                series("median", median),
                                series("top-10 line", line(10.0)),
                            ],
                            Style::LinePoints,
                        ),
                        Chart {
                            y_range: Some((0.0, 1.0)),
                            ..chart(
                                format!("{tag}sybil_scores.svg"),
                                "Trust scores on honest nodes",
                                "round",
                                "mean score",
                                vec![series("malicious agent", m), series("honest workers", w)],
                                Style::LinePoints,
                            )
                        },
                    ],
                },
                figures: serde_json::to_value(s)?,
            }
        }
        Scenario::IntentLoad => {
            let l = scenarios::intent_load(
                net,
                o.concurrency,
                Duration::from_secs_f64(o.load_duration_s),
            )
            .await?;
            let mut table = vec![
                ("concurrent callers".into(), l.concurrency.to_string()),
                ("intents sent".into(), l.sent.to_string()),
                (
                    "successful intents per second".into(),
                    format!("{:.0}", l.intents_per_s),
                ),
                ("error rate".into(), format!("{:.4}", l.error_rate)),
            ];
            table.extend(stats_rows("latency", &l.latency));
            Outcome {
                key: "intent_load",
                section: Section {
                    heading: format!("Intent load ({nodes} nodes)"),
                    text: "Every node hosts an echo agent and a caller; the callers send \
                           intents one after another to echo agents on other nodes, with \
                           signed receipts on both sides."
                        .into(),
                    table,
                    charts: vec![],
                },
                figures: serde_json::to_value(l)?,
            }
        }
        Scenario::IntentRtt => {
            let r = scenarios::intent_rtt(net, o.intents).await?;
            let mut table = vec![
                ("intents".into(), r.sent.to_string()),
                ("errors".into(), r.errors.to_string()),
            ];
            table.extend(stats_rows("round trip", &r.round_trip));
            Outcome {
                key: "intent_rtt",
                section: Section {
                    heading: format!("Intent round trips ({nodes} nodes)"),
                    text: "Sequential intents from node 0 to an echo agent on the last node."
                        .into(),
                    table,
                    charts: vec![],
                },
                figures: serde_json::to_value(r)?,
            }
        }
        Scenario::Memory | Scenario::All | Scenario::Registry => {
            bail!("{scenario:?} is not a single scenario")
        }
    };
    Ok(outcome)
}

/// Whether `scenario` can drive nodes that run as separate processes (over their API).
fn runs_as_processes(scenario: Scenario) -> bool {
    matches!(
        scenario,
        Scenario::Propagation
            | Scenario::LateJoin
            | Scenario::Partition
            | Scenario::Churn
            | Scenario::Registry
    )
}

/// Spreads `agents` agents from `entries` over the nodes and waits until all hold them.
async fn load(net: &mut Testnet, entries: &[CatalogEntry], agents: usize) -> Result<()> {
    if agents > 0 {
        let base = net.node(0).capabilities().await?;
        net.load_agents(entries, agents).await?;
        scenarios::wait_capabilities(net, base + agents, Duration::from_secs(900)).await?;
    }
    Ok(())
}

const ALL: [Scenario; 7] = [
    Scenario::Propagation,
    Scenario::LateJoin,
    Scenario::Partition,
    Scenario::SearchAgreement,
    Scenario::IntentLoad,
    Scenario::Churn,
    Scenario::Sybil,
];

fn header(o: &Options, entries: usize) -> Value {
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "seed": o.seed,
        "options": o,
        "catalog_entries": entries,
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "machine": machine(),
        "intent_limit_per_minute": INTENT_LIMIT,
    })
}

fn load_catalog(o: &Options) -> Result<Vec<CatalogEntry>> {
    Ok(match &o.catalog {
        Some(path) => catalog::load(path).with_context(|| format!("catalog {}", path.display()))?,
        None => catalog::synthetic(10_000),
    })
}

fn read_config(path: &Path) -> Result<Options> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("{}", path.display()))
}

fn intro(o: &Options) -> Section {
    Section {
        heading: "Setup".into(),
        text: format!(
            "Real agentnet nodes in one process, each with its own libp2p swarm (TCP, noise, \
             yamux on 127.0.0.1), redb store and lexical index; topology `{}`, seed {}, \
             {} ms added latency, {:.0}% gossip loss. Reproduce with the command in \
             testnet/README.md or the options in report.json.",
            o.topology,
            o.seed,
            o.latency_ms,
            o.gossip_loss * 100.0
        ),
        table: vec![],
        charts: vec![],
    }
}

/// The figure of a scenario's JSON plotted against the network size.
fn headline(key: &str, figures: &Value) -> Vec<(&'static str, f64)> {
    let f = |path: &[&str]| {
        path.iter()
            .try_fold(figures, |v, k| v.get(k))
            .and_then(Value::as_f64)
            .unwrap_or(f64::NAN)
    };
    match key {
        "propagation" => vec![
            ("p50 to every node (ms)", f(&["to_all_nodes", "p50_ms"])),
            ("p99 to every node (ms)", f(&["to_all_nodes", "p99_ms"])),
            (
                "gossip bytes per node per card",
                f(&["traffic_per_card", "bytes_per_node"]),
            ),
        ],
        "late_join" => vec![("late joiner convergence (ms)", f(&["convergence_ms"]))],
        "partition" => vec![("partition heal (ms)", f(&["heal_ms"]))],
        "churn" => vec![
            ("convergence after churn (ms)", f(&["convergence_ms"])),
            ("delivery ratio", f(&["delivery_ratio"])),
        ],
        "search_agreement" => vec![("recall@10", f(&["recall_at_10"]))],
        "intent_load" => vec![
            ("intents per second", f(&["intents_per_s"])),
            ("intent p99 (ms)", f(&["latency", "p99_ms"])),
        ],
        "sybil" => vec![("best malicious rank", f(&["best_rank_ever"]))],
        _ => vec![],
    }
}

/// Runs every scenario of `o` at every size of `o`; with more than one size, the report
/// opens with scaling curves.
async fn sweep(o: Options, out: Option<PathBuf>, print_json: bool) -> Result<()> {
    let sizes = o.nodes.clone();
    let mut list = Vec::new();
    for s in &o.scenario {
        match s {
            // With --processes, those that can run that way.
            Scenario::All => list.extend(
                ALL.into_iter()
                    .filter(|&s| !o.processes || runs_as_processes(s)),
            ),
            s => list.push(*s),
        }
    }
    if sizes.is_empty() || list.is_empty() {
        bail!("give at least one size and one scenario");
    }
    if sizes.len() > 1 && list.contains(&Scenario::Memory) {
        bail!("memory runs one node: leave it out of a sweep");
    }
    let tagged = sizes.len() > 1;
    let entries = load_catalog(&o)?;
    let started = std::time::Instant::now();
    let mut figures = header(&o, entries.len());
    figures["sizes"] = json!(sizes);
    let mut sections = vec![intro(&o)];
    // figure name -> (nodes, value)
    let mut curves: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    let mut by_size = serde_json::Map::new();
    for &n in &sizes {
        let mut at = serde_json::Map::new();
        for &scenario in &list {
            let tag = if tagged {
                format!("n{n}_")
            } else {
                String::new()
            };
            for outcome in run_one(scenario, &o, n, &entries, &tag).await? {
                for (name, value) in headline(outcome.key, &outcome.figures) {
                    match curves.iter_mut().find(|(k, _)| k == name) {
                        Some((_, points)) => points.push((n as f64, value)),
                        None => curves.push((name.to_owned(), vec![(n as f64, value)])),
                    }
                }
                at.insert(outcome.key.to_owned(), outcome.figures);
                sections.push(outcome.section);
            }
        }
        if tagged {
            by_size.insert(n.to_string(), Value::Object(at));
        } else {
            for (k, v) in at {
                figures[k] = v;
            }
        }
    }
    if tagged {
        figures["by_size"] = Value::Object(by_size);
    }
    figures["elapsed_s"] = json!(started.elapsed().as_secs_f64());
    let mut table = Vec::new();
    for (name, points) in &curves {
        let values: Vec<String> = points
            .iter()
            .map(|(n, v)| format!("{n:.0}: {v:.2}"))
            .collect();
        table.push((name.clone(), values.join(", ")));
    }
    let charts = curves
        .iter()
        .enumerate()
        .map(|(i, (name, points))| {
            chart(
                format!("scaling_{i}.svg"),
                &format!("{name} by network size"),
                "nodes",
                name,
                vec![series(name, points.clone())],
                Style::LinePoints,
            )
        })
        .collect();
    if tagged {
        sections.insert(
            1,
            Section {
                heading: "Scaling".into(),
                text: format!(
                    "Each size ran on a fresh testnet; the sections below give every size's \
                 figures. Sizes: {sizes:?}."
                ),
                table,
                charts,
            },
        );
    }
    let report = Report {
        title: format!(
            "agentnet testnet: {} at {:?} nodes",
            list.iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", "),
            sizes
        ),
        json: figures,
        sections,
    };
    if let Some(dir) = &out {
        report::write(dir, &report)?;
        eprintln!("report written to {}", dir.display());
    }
    if print_json {
        println!("{}", serde_json::to_string(&report.json)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&report.json)?);
    }
    Ok(())
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
    match Cli::parse().command {
        Command::Run {
            options,
            config,
            out,
            json,
        } => {
            let options = match config {
                Some(path) => read_config(&path)?,
                None => options,
            };
            if options.nodes.len() != 1 {
                bail!("run takes one --nodes; use sweep for several sizes");
            }
            sweep(options, out, json).await
        }
        Command::Sweep {
            options,
            config,
            out,
        } => {
            let options = match config {
                Some(path) => read_config(&path)?,
                None => options,
            };
            sweep(options, Some(out), false).await
        }
    }
}
