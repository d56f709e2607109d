//! The agentnet testnet: N real nodes on one machine, with faults, attacks and reports.
//!
//! [`Testnet::builder`] starts `n` real nodes in this process, each with its own swarm
//! (TCP on 127.0.0.1), its own store in a temporary directory, connected in a chosen
//! [`Topology`]; with [`TestnetBuilder::processes`], each node is instead a separate
//! `agentnet node run` process driven over its local API ([`process`]). Every choice the harness makes (which node registers which card, which
//! random edges exist) comes from the seed. [`scenarios`] measures what researchers ask
//! about: propagation, late joiners, intent round trips, memory.
#![deny(missing_docs)]

pub mod catalog;
pub mod member;
pub mod process;
pub mod proxy;
pub mod report;
pub mod scenarios;
pub mod sybil;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use std::sync::Arc;

use agentnet_node::{Node, NodeConfig, NodeError, NodeHandle};
use agentnet_protocol::Did;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

pub use member::Member;
use process::NodeProcess;

/// Why the testnet failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestnetError {
    /// A node failed.
    #[error("node {index}: {source}")]
    Node {
        /// Which node.
        index: usize,
        /// Why.
        #[source]
        source: NodeError,
    },
    /// Files could not be set up.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// A condition did not hold in time.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
    /// Bad input (a catalog, a parameter).
    #[error("{0}")]
    Invalid(String),
}

/// How the nodes are connected at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Topology {
    /// Node i dials node i − 1.
    Line,
    /// A line whose last node also dials the first.
    Ring,
    /// Every node dials node 0.
    Star,
    /// Every pair is connected.
    Full,
    /// Node i dials `degree` distinct earlier nodes chosen by the seed (fewer for the
    /// first few), which keeps the graph connected.
    Random {
        /// Dials per node.
        degree: usize,
    },
}

impl std::str::FromStr for Topology {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "line" => Ok(Topology::Line),
            "ring" => Ok(Topology::Ring),
            "star" => Ok(Topology::Star),
            "full" => Ok(Topology::Full),
            other => match other.strip_prefix("random:").map(str::parse::<usize>) {
                Some(Ok(degree)) if degree > 0 => Ok(Topology::Random { degree }),
                _ => Err(format!(
                    "unknown topology `{other}`: use line, ring, star, full or random:K"
                )),
            },
        }
    }
}

/// SplitMix64: small, seedable, and the same everywhere.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

impl Topology {
    /// The edges (dialer, dialled) among `n` nodes.
    pub fn edges(self, n: usize, rng: &mut Rng) -> Vec<(usize, usize)> {
        let mut edges = Vec::new();
        match self {
            Topology::Line | Topology::Ring => {
                edges.extend((1..n).map(|i| (i, i - 1)));
                if self == Topology::Ring && n > 2 {
                    edges.push((n - 1, 0));
                }
            }
            Topology::Star => edges.extend((1..n).map(|i| (i, 0))),
            Topology::Full => {
                for i in 0..n {
                    edges.extend((0..i).map(|j| (i, j)));
                }
            }
            Topology::Random { degree } => {
                for i in 1..n {
                    let mut chosen = Vec::new();
                    while chosen.len() < degree.min(i) {
                        let j = rng.below(i);
                        if !chosen.contains(&j) {
                            chosen.push(j);
                        }
                    }
                    edges.extend(chosen.into_iter().map(|j| (i, j)));
                }
            }
        }
        edges
    }
}

type Configure = Box<dyn Fn(usize, &mut NodeConfig) + Send + Sync>;

/// Builds a [`Testnet`].
pub struct TestnetBuilder {
    nodes: usize,
    topology: Topology,
    seed: u64,
    configure: Option<Configure>,
    latency: Option<Duration>,
    gossip_loss: f64,
    processes: Option<PathBuf>,
}

impl std::fmt::Debug for TestnetBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestnetBuilder")
            .field("nodes", &self.nodes)
            .field("topology", &self.topology)
            .field("seed", &self.seed)
            .field("latency", &self.latency)
            .field("gossip_loss", &self.gossip_loss)
            .field("processes", &self.processes)
            .finish_non_exhaustive()
    }
}

impl TestnetBuilder {
    /// How many nodes. Default 5.
    pub fn nodes(mut self, n: usize) -> Self {
        self.nodes = n;
        self
    }

    /// How they are connected. Default [`Topology::Line`].
    pub fn topology(mut self, topology: Topology) -> Self {
        self.topology = topology;
        self
    }

    /// The seed of every random choice. Default 1.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Adjusts each node's config (given its index) before it starts.
    pub fn configure(mut self, f: impl Fn(usize, &mut NodeConfig) + Send + Sync + 'static) -> Self {
        self.configure = Some(Box::new(f));
        self
    }

    /// Puts a relay in front of every node that holds each chunk of bytes for `delay` in
    /// each direction ([`proxy`]); the harness dials the relays. Default none.
    pub fn latency(mut self, delay: Duration) -> Self {
        self.latency = Some(delay).filter(|d| !d.is_zero());
        self
    }

    /// Each node drops this share (0 to 1) of the gossip messages it receives, unread
    /// ([`NodeConfig::gossip_loss`]), each with its own seed drawn from the testnet's.
    pub fn gossip_loss(mut self, share: f64) -> Self {
        self.gossip_loss = share;
        self
    }

    /// Runs each node as a separate process of the `agentnet` binary at `binary`
    /// ([`process::find_binary`] finds the one built beside this executable), driven over
    /// its local API. Default: every node in this process.
    pub fn processes(mut self, binary: impl Into<PathBuf>) -> Self {
        self.processes = Some(binary.into());
        self
    }

    /// Starts the nodes, connects them, and waits until every edge is connected.
    pub async fn spawn(self) -> Result<Testnet, TestnetError> {
        if self.nodes == 0 {
            return Err(TestnetError::Invalid(
                "a testnet needs at least one node".into(),
            ));
        }
        if self.processes.is_some() && self.gossip_loss > 0.0 {
            return Err(TestnetError::Invalid(
                "gossip loss is injected inside a node; it needs in-process nodes".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.gossip_loss) {
            return Err(TestnetError::Invalid(format!(
                "gossip loss {} is not a share between 0 and 1",
                self.gossip_loss
            )));
        }
        let dir = tempfile::tempdir()?;
        let mut net = Testnet {
            nodes: Vec::with_capacity(self.nodes),
            rng: Rng::new(self.seed),
            seed: self.seed,
            dir,
            configure: self.configure,
            latency: self.latency,
            gossip_loss: self.gossip_loss,
            edges: Vec::new(),
            blocked: false,
            processes: self.processes,
        };
        for _ in 0..self.nodes {
            net.add_node().await?;
        }
        let edges = self.topology.edges(self.nodes, &mut net.rng);
        for &(from, to) in &edges {
            net.connect(from, to).await?;
        }
        net.wait_connected(&edges, Duration::from_secs(30)).await?;
        net.wait_gossip(Duration::from_secs(30)).await?;
        Ok(net)
    }
}

/// A node of the testnet.
#[derive(Debug)]
pub struct TestNode {
    /// Its handle, while it runs.
    handle: Option<Member>,
    /// The address others dial (its relay's, with latency), with `/p2p/<peer id>`.
    pub addr: Multiaddr,
    /// Its own TCP listener.
    pub listen: Multiaddr,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its peer id (kept across restarts: the key is in the store).
    pub peer_id: PeerId,
    /// The config it runs with (reused on restart).
    config: NodeConfig,
    /// Its latency relay.
    relay: Option<proxy::Relay>,
}

impl TestNode {
    /// Its handle, or `None` while it is down.
    pub fn handle(&self) -> Option<&Member> {
        self.handle.as_ref()
    }
}

/// N real nodes in this process.
pub struct Testnet {
    nodes: Vec<TestNode>,
    rng: Rng,
    seed: u64,
    dir: tempfile::TempDir,
    configure: Option<Configure>,
    latency: Option<Duration>,
    gossip_loss: f64,
    edges: Vec<(usize, usize)>,
    blocked: bool,
    processes: Option<PathBuf>,
}

impl std::fmt::Debug for Testnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Testnet")
            .field("nodes", &self.nodes.len())
            .field("seed", &self.seed)
            .field("edges", &self.edges.len())
            .finish_non_exhaustive()
    }
}

/// Polls `check` every millisecond or so until it holds, or fails after `timeout`.
pub async fn wait_until(
    timeout: Duration,
    what: &str,
    check: impl AsyncFnMut() -> bool,
) -> Result<Duration, TestnetError> {
    wait_every(timeout, Duration::from_millis(1), what, check).await
}

/// Polls `check` every `every` until it holds, or fails after `timeout`.
pub async fn wait_every(
    timeout: Duration,
    every: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> bool,
) -> Result<Duration, TestnetError> {
    let started = Instant::now();
    loop {
        if check().await {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            return Err(TestnetError::Timeout(timeout, what.to_owned()));
        }
        tokio::time::sleep(every).await;
    }
}

/// The nodes' gossipsub heartbeat (`agentnet_node`'s swarm config).
const GOSSIP_HEARTBEAT: Duration = Duration::from_millis(500);

/// How often the harness polls nodes that run as processes.
const PROCESS_POLL: Duration = Duration::from_millis(10);

/// How long a restarted node waits for its old store to be released.
const STORE_RELEASE: Duration = Duration::from_secs(10);

impl Testnet {
    /// A builder: 5 nodes in a line, seed 1.
    pub fn builder() -> TestnetBuilder {
        TestnetBuilder {
            nodes: 5,
            topology: Topology::Line,
            seed: 1,
            configure: None,
            latency: None,
            gossip_loss: 0.0,
            processes: None,
        }
    }

    /// How many nodes (up or down).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The seeded generator the harness draws from.
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// Node `i`.
    ///
    /// # Panics
    ///
    /// If node `i` does not exist or is down ([`Testnet::try_node`] does not panic).
    pub fn node(&self, i: usize) -> &Member {
        match self.try_node(i) {
            Some(handle) => handle,
            None => panic!("node {i} is down or does not exist"),
        }
    }

    /// Node `i`, if it exists and runs.
    pub fn try_node(&self, i: usize) -> Option<&Member> {
        self.nodes.get(i).and_then(|n| n.handle.as_ref())
    }

    /// Node `i`'s in-process handle, for what only a node in this process can do (serve
    /// intents, forge records); an error if it runs as a process or is down.
    pub fn local(&self, i: usize) -> Result<&NodeHandle, TestnetError> {
        match self.try_node(i) {
            Some(Member::Local(handle)) => Ok(handle),
            Some(_) => Err(TestnetError::Invalid(format!(
                "node {i} runs as a separate process; this needs in-process nodes"
            ))),
            None => Err(TestnetError::Invalid(format!(
                "node {i} is down or does not exist"
            ))),
        }
    }

    /// Whether the nodes run as separate processes.
    pub fn is_processes(&self) -> bool {
        self.processes.is_some()
    }

    /// How often to ask every node how far it got: an in-process lookup is cheap, an HTTP
    /// request to each of many processes is not.
    pub fn poll(&self) -> Duration {
        if self.is_processes() {
            PROCESS_POLL
        } else {
            Duration::from_millis(1)
        }
    }

    /// Node `i`.
    pub fn test_node(&self, i: usize) -> &TestNode {
        &self.nodes[i]
    }

    /// Whether node `i` runs.
    pub fn is_up(&self, i: usize) -> bool {
        self.try_node(i).is_some()
    }

    /// The indices of the nodes that run.
    pub fn up(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| self.is_up(i)).collect()
    }

    /// The nodes that run.
    pub fn handles(&self) -> Vec<Member> {
        self.nodes.iter().filter_map(|n| n.handle.clone()).collect()
    }

    /// The connections the harness made (dialer, dialled): the topology's edges and any
    /// [`Testnet::connect`] since.
    pub fn edges(&self) -> &[(usize, usize)] {
        &self.edges
    }

    /// Starts one more node (not connected); returns its index.
    pub async fn add_node(&mut self) -> Result<usize, TestnetError> {
        self.add_node_with(|_| {}).await
    }

    /// Starts one more node, adjusting its config with `f` after the builder's own
    /// adjustment; returns its index.
    pub async fn add_node_with(
        &mut self,
        f: impl FnOnce(&mut NodeConfig),
    ) -> Result<usize, TestnetError> {
        let index = self.nodes.len();
        let data_dir = self.dir.path().join(format!("node-{index}"));
        let mut config = NodeConfig::new(&data_dir);
        config.listen = vec![address("/ip4/127.0.0.1/tcp/0")?];
        config.gossip_loss = self.gossip_loss;
        config.fault_seed = self.rng.next_u64();
        if let Some(configure) = &self.configure {
            configure(index, &mut config);
        }
        f(&mut config);
        let node_err = |source| TestnetError::Node { index, source };
        let (handle, listen) = self.start(&config).await.map_err(node_err)?;
        let peer_id = handle.peer_id();
        let (addr, relay) = self.front(&listen, peer_id).await?;
        // Restarts listen where the node listened first, so that its address holds.
        config.listen = vec![listen.clone()];
        self.nodes.push(TestNode {
            handle: Some(handle),
            addr,
            listen,
            data_dir,
            peer_id,
            config,
            relay,
        });
        Ok(index)
    }

    /// Starts a node with `config`, in this process or in its own; returns it and its TCP
    /// listen address.
    async fn start(&self, config: &NodeConfig) -> Result<(Member, Multiaddr), NodeError> {
        match &self.processes {
            Some(binary) => {
                let node = NodeProcess::spawn(binary, config).await?;
                let listen = node.listen().clone();
                Ok((Member::Process(Arc::new(node)), listen))
            }
            None => {
                let handle = Node::builder(config.clone()).spawn().await?;
                let listen = wait_for_listener(&handle).await?;
                Ok((Member::Local(handle), listen))
            }
        }
    }

    /// The address to dial for a node listening on `listen`: its own, or a relay's.
    async fn front(
        &self,
        listen: &Multiaddr,
        peer: PeerId,
    ) -> Result<(Multiaddr, Option<proxy::Relay>), TestnetError> {
        let Some(delay) = self.latency else {
            return Ok((listen.clone().with(Protocol::P2p(peer)), None));
        };
        let target = socket_addr(listen)?;
        let relay = proxy::Relay::start(target, delay).await?;
        let addr = Multiaddr::from(relay.addr().ip())
            .with(Protocol::Tcp(relay.addr().port()))
            .with(Protocol::P2p(peer));
        Ok((addr, Some(relay)))
    }

    /// Node `from` dials node `to` (and the pair joins [`Testnet::edges`]).
    pub async fn connect(&mut self, from: usize, to: usize) -> Result<(), TestnetError> {
        if !self.edges.contains(&(from, to)) {
            self.edges.push((from, to));
        }
        self.dial(from, to).await
    }

    async fn dial(&self, from: usize, to: usize) -> Result<(), TestnetError> {
        let Some(handle) = self.try_node(from) else {
            return Err(TestnetError::Invalid(format!("node {from} is down")));
        };
        handle
            .dial(self.nodes[to].addr.clone())
            .await
            .map_err(|source| TestnetError::Node {
                index: from,
                source,
            })
    }

    /// Waits until each of `edges` whose ends both run is connected.
    pub async fn wait_connected(
        &self,
        edges: &[(usize, usize)],
        timeout: Duration,
    ) -> Result<Duration, TestnetError> {
        let started = Instant::now();
        for &(from, to) in edges {
            let (Some(handle), true) = (self.try_node(from).cloned(), self.is_up(to)) else {
                continue;
            };
            let peer = self.nodes[to].peer_id;
            let left = timeout.saturating_sub(started.elapsed());
            wait_every(
                left,
                self.poll(),
                &format!("node {from} to connect to {to}"),
                async || {
                    handle
                        .connected_peers()
                        .await
                        .is_ok_and(|p| p.contains(&peer))
                },
            )
            .await?;
        }
        Ok(started.elapsed())
    }

    /// Waits until every running node with gossip on knows every connected peer with gossip
    /// on as subscribed to the registry topic, then for gossipsub's meshes to form (two
    /// heartbeats). A card published before that reaches only the peers already known,
    /// and the rest must wait for anti-entropy.
    pub async fn wait_gossip(&self, timeout: Duration) -> Result<Duration, TestnetError> {
        let started = Instant::now();
        let silent: Vec<PeerId> = self
            .nodes
            .iter()
            .filter(|n| !n.config.gossip)
            .map(|n| n.peer_id)
            .collect();
        for (i, node) in self.nodes.iter().enumerate() {
            let Some(handle) = node.handle.clone() else {
                continue;
            };
            if !node.config.gossip {
                continue;
            }
            let left = timeout.saturating_sub(started.elapsed());
            wait_every(
                left,
                self.poll(),
                &format!("node {i}'s gossip subscriptions"),
                async || {
                    // Peers with gossip off never subscribe.
                    let connected = handle
                        .connected_peers()
                        .await
                        .map(|p| p.iter().filter(|p| !silent.contains(p)).count());
                    let subscribed = handle.registry_peers().await;
                    matches!((connected, subscribed), (Ok(c), Ok(s)) if s >= c)
                },
            )
            .await?;
        }
        tokio::time::sleep(GOSSIP_HEARTBEAT * 2).await;
        Ok(started.elapsed())
    }

    /// Stops node `i` (its store stays; [`Testnet::restart`] brings it back). A node in
    /// this process shuts down; a node process is killed (SIGKILL), as in a crash.
    pub async fn kill(&mut self, i: usize) -> Result<(), TestnetError> {
        let Some(handle) = self.nodes.get_mut(i).and_then(|n| n.handle.take()) else {
            return Err(TestnetError::Invalid(format!("node {i} is not running")));
        };
        match handle {
            Member::Process(p) => p.kill().await,
            other => other.shutdown().await,
        }
        .map_err(|source| TestnetError::Node { index: i, source })
    }

    /// Starts node `i` again from its store, on its old address, and redials the
    /// neighbours it had ([`Testnet::edges`]) that run, unless a partition is in place.
    pub async fn restart(&mut self, i: usize) -> Result<(), TestnetError> {
        if self.is_up(i) {
            return Err(TestnetError::Invalid(format!("node {i} is running")));
        }
        let node_err = |source| TestnetError::Node { index: i, source };
        let config = self.nodes[i].config.clone();
        let started = Instant::now();
        // The store is released once the old swarm task and its helpers let go of it.
        let (handle, listen) = loop {
            match self.start(&config).await {
                Ok(started) => break started,
                Err(NodeError::Store(_)) if started.elapsed() < STORE_RELEASE => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(node_err(e)),
            }
        };
        if listen != self.nodes[i].listen {
            // The old port was taken: dial the new one from now on.
            let (addr, relay) = self.front(&listen, handle.peer_id()).await?;
            let node = &mut self.nodes[i];
            node.listen = listen.clone();
            node.config.listen = vec![listen];
            node.addr = addr;
            node.relay = relay;
        }
        self.nodes[i].handle = Some(handle);
        if !self.blocked {
            let neighbours: Vec<usize> = self
                .edges
                .iter()
                .filter_map(|&(a, b)| match (a == i, b == i) {
                    (true, false) => Some(b),
                    (false, true) => Some(a),
                    _ => None,
                })
                .filter(|&j| self.is_up(j))
                .collect();
            for j in neighbours {
                self.dial(i, j).await?;
            }
        }
        Ok(())
    }

    /// Splits the network into `groups` (node indices; a node in no group is alone): every
    /// running node blocks every node outside its group, which closes their connections and
    /// refuses new ones both ways, until [`Testnet::heal`].
    pub async fn partition(&mut self, groups: &[Vec<usize>]) -> Result<(), TestnetError> {
        let group_of = |i: usize| groups.iter().position(|g| g.contains(&i));
        for i in self.up() {
            let others: Vec<PeerId> = (0..self.nodes.len())
                .filter(|&j| j != i && (group_of(j).is_none() || group_of(j) != group_of(i)))
                .map(|j| self.nodes[j].peer_id)
                .collect();
            self.node(i)
                .block_peers(others)
                .await
                .map_err(|source| TestnetError::Node { index: i, source })?;
        }
        self.blocked = true;
        Ok(())
    }

    /// Lifts every block and redials the harness's edges whose ends both run, on every node
    /// at once (one by one, a busy 100-node network took seconds to get through them).
    pub async fn heal(&mut self) -> Result<(), TestnetError> {
        let everyone: Vec<PeerId> = self.nodes.iter().map(|n| n.peer_id).collect();
        let unblocks = futures::future::join_all(self.up().into_iter().map(|i| {
            let handle = self.node(i).clone();
            let everyone = everyone.clone();
            async move {
                handle
                    .unblock_peers(everyone)
                    .await
                    .map_err(|source| TestnetError::Node { index: i, source })
            }
        }))
        .await;
        unblocks.into_iter().collect::<Result<Vec<()>, _>>()?;
        self.blocked = false;
        let dials = futures::future::join_all(
            self.edges
                .iter()
                .filter(|&&(from, to)| self.is_up(from) && self.is_up(to))
                .map(|&(from, to)| self.dial(from, to)),
        )
        .await;
        dials.into_iter().collect::<Result<Vec<()>, _>>()?;
        Ok(())
    }

    /// Waits until every running node satisfies `check`, asking the nodes at once.
    pub async fn wait_all(
        &self,
        timeout: Duration,
        what: &str,
        check: impl AsyncFn(&Member) -> bool,
    ) -> Result<Duration, TestnetError> {
        let handles = self.handles();
        let check = &check;
        wait_every(timeout, self.poll(), what, async || {
            futures::future::join_all(handles.iter().map(|h| check(h)))
                .await
                .into_iter()
                .all(|ok| ok)
        })
        .await
    }

    /// Registers an agent for each of the first `count` entries of `catalog` (cycling) on
    /// seeded random running nodes, the nodes working at once; returns (node, DID) of each.
    pub async fn load_agents(
        &mut self,
        catalog: &[catalog::CatalogEntry],
        count: usize,
    ) -> Result<Vec<(usize, Did)>, TestnetError> {
        if catalog.is_empty() {
            return Err(TestnetError::Invalid("the catalog is empty".into()));
        }
        let up = self.up();
        if up.is_empty() {
            return Err(TestnetError::Invalid("no node is running".into()));
        }
        let mut per_node: Vec<Vec<usize>> = vec![Vec::new(); self.nodes.len()];
        for e in 0..count {
            let i = up[self.rng.below(up.len())];
            per_node[i].push(e);
        }
        let jobs = per_node
            .into_iter()
            .enumerate()
            .filter(|(_, e)| !e.is_empty());
        let results = futures::future::join_all(jobs.map(|(i, entries)| {
            let handle = self.node(i).clone();
            async move {
                let mut dids = Vec::with_capacity(entries.len());
                for e in entries {
                    let did = handle
                        .register_agent(catalog[e % catalog.len()].agent())
                        .await
                        .map_err(|source| TestnetError::Node { index: i, source })?;
                    dids.push((e, i, did));
                }
                Ok::<_, TestnetError>(dids)
            }
        }))
        .await;
        let mut all = Vec::with_capacity(count);
        for r in results {
            all.extend(r?);
        }
        all.sort_by_key(|(e, ..)| *e);
        Ok(all.into_iter().map(|(_, i, did)| (i, did)).collect())
    }

    /// Stops every node.
    pub async fn shutdown(self) {
        for node in &self.nodes {
            if let Some(handle) = &node.handle {
                let _ = handle.shutdown().await;
            }
        }
    }
}

fn address(s: &str) -> Result<Multiaddr, TestnetError> {
    s.parse()
        .map_err(|e| TestnetError::Invalid(format!("address {s}: {e}")))
}

/// The IP and TCP port of a `/ip4/../tcp/..` address.
fn socket_addr(addr: &Multiaddr) -> Result<std::net::SocketAddr, TestnetError> {
    let mut ip = None;
    let mut port = None;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(a) => ip = Some(std::net::IpAddr::V4(a)),
            Protocol::Ip6(a) => ip = Some(std::net::IpAddr::V6(a)),
            Protocol::Tcp(p) => port = Some(p),
            _ => {}
        }
    }
    match (ip, port) {
        (Some(ip), Some(port)) => Ok(std::net::SocketAddr::new(ip, port)),
        _ => Err(TestnetError::Invalid(format!(
            "{addr} is not a TCP address"
        ))),
    }
}

async fn wait_for_listener(handle: &NodeHandle) -> Result<Multiaddr, NodeError> {
    let started = Instant::now();
    loop {
        if let Some(addr) = handle.listen_addrs().await?.into_iter().next() {
            return Ok(addr);
        }
        if started.elapsed() > Duration::from_secs(10) {
            return Err(NodeError::Network("no listen address after 10 s".into()));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topologies_have_the_edges_they_promise() {
        let mut rng = Rng::new(1);
        assert_eq!(
            Topology::Line.edges(4, &mut rng),
            vec![(1, 0), (2, 1), (3, 2)]
        );
        assert_eq!(Topology::Ring.edges(3, &mut rng).len(), 3);
        assert_eq!(
            Topology::Star.edges(4, &mut rng),
            vec![(1, 0), (2, 0), (3, 0)]
        );
        assert_eq!(Topology::Full.edges(4, &mut rng).len(), 6);
        let a = Topology::Random { degree: 3 }.edges(20, &mut Rng::new(7));
        let b = Topology::Random { degree: 3 }.edges(20, &mut Rng::new(7));
        assert_eq!(a, b, "the seed decides");
        assert!(a.iter().all(|(i, j)| j < i));
        assert_eq!(
            "random:4".parse::<Topology>(),
            Ok(Topology::Random { degree: 4 })
        );
        assert!("mesh".parse::<Topology>().is_err());
    }
}
