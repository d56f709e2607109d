//! The agentnet testnet: N real nodes on one machine, with faults, attacks and reports.
//!
//! [`Testnet::builder`] starts `n` real nodes in this process, each with its own swarm
//! (TCP on 127.0.0.1), its own store in a temporary directory, connected in a chosen
//! [`Topology`]. Every choice the harness makes (which node registers which card, which
//! random edges exist) comes from the seed. [`scenarios`] measures what researchers ask
//! about: propagation, late joiners, intent round trips, memory.
#![deny(missing_docs)]

pub mod catalog;
pub mod scenarios;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use agentnet_node::{Node, NodeConfig, NodeError, NodeHandle};
use libp2p::Multiaddr;

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
}

impl std::fmt::Debug for TestnetBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestnetBuilder")
            .field("nodes", &self.nodes)
            .field("topology", &self.topology)
            .field("seed", &self.seed)
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

    /// Starts the nodes, connects them, and waits until every edge is connected.
    pub async fn spawn(self) -> Result<Testnet, TestnetError> {
        if self.nodes == 0 {
            return Err(TestnetError::Invalid(
                "a testnet needs at least one node".into(),
            ));
        }
        let dir = tempfile::tempdir()?;
        let mut net = Testnet {
            nodes: Vec::with_capacity(self.nodes),
            rng: Rng::new(self.seed),
            seed: self.seed,
            dir,
            configure: self.configure,
        };
        for _ in 0..self.nodes {
            net.add_node().await?;
        }
        let edges = self.topology.edges(self.nodes, &mut net.rng);
        for &(from, to) in &edges {
            net.connect(from, to).await?;
        }
        for &(from, to) in &edges {
            let peer = net.nodes[to].handle.peer_id();
            let handle = net.nodes[from].handle.clone();
            wait_until(
                Duration::from_secs(20),
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
        Ok(net)
    }
}

/// A node of the testnet.
#[derive(Debug)]
pub struct TestNode {
    /// Its handle.
    pub handle: NodeHandle,
    /// Its TCP address, with `/p2p/<peer id>`.
    pub addr: Multiaddr,
    /// Its data directory.
    pub data_dir: PathBuf,
}

/// N real nodes in this process.
pub struct Testnet {
    nodes: Vec<TestNode>,
    rng: Rng,
    seed: u64,
    dir: tempfile::TempDir,
    configure: Option<Configure>,
}

impl std::fmt::Debug for Testnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Testnet")
            .field("nodes", &self.nodes.len())
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

/// Polls `check` every millisecond or so until it holds, or fails after `timeout`.
pub async fn wait_until(
    timeout: Duration,
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
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

impl Testnet {
    /// A builder: 5 nodes in a line, seed 1.
    pub fn builder() -> TestnetBuilder {
        TestnetBuilder {
            nodes: 5,
            topology: Topology::Line,
            seed: 1,
            configure: None,
        }
    }

    /// How many nodes.
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

    /// Node `i`'s handle.
    pub fn node(&self, i: usize) -> &NodeHandle {
        &self.nodes[i].handle
    }

    /// Node `i`.
    pub fn test_node(&self, i: usize) -> &TestNode {
        &self.nodes[i]
    }

    /// Every node's handle.
    pub fn handles(&self) -> Vec<NodeHandle> {
        self.nodes.iter().map(|n| n.handle.clone()).collect()
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
        config.listen = vec![
            "/ip4/127.0.0.1/tcp/0"
                .parse()
                .map_err(|e| TestnetError::Invalid(format!("listen address: {e}")))?,
        ];
        if let Some(configure) = &self.configure {
            configure(index, &mut config);
        }
        f(&mut config);
        let node_err = |source| TestnetError::Node { index, source };
        let handle = Node::builder(config).spawn().await.map_err(node_err)?;
        let peer = handle.peer_id();
        let listen = wait_for_listener(&handle).await.map_err(node_err)?;
        let addr = listen.with(libp2p::multiaddr::Protocol::P2p(peer));
        self.nodes.push(TestNode {
            handle,
            addr,
            data_dir,
        });
        Ok(index)
    }

    /// Node `from` dials node `to`.
    pub async fn connect(&self, from: usize, to: usize) -> Result<(), TestnetError> {
        self.nodes[from]
            .handle
            .dial(self.nodes[to].addr.clone())
            .await
            .map_err(|source| TestnetError::Node {
                index: from,
                source,
            })
    }

    /// Waits until every node satisfies `check` (given its handle).
    pub async fn wait_all(
        &self,
        timeout: Duration,
        what: &str,
        check: impl Fn(&NodeHandle) -> bool,
    ) -> Result<Duration, TestnetError> {
        let handles = self.handles();
        wait_until(timeout, what, async || handles.iter().all(&check)).await
    }

    /// Stops every node.
    pub async fn shutdown(self) {
        for node in &self.nodes {
            let _ = node.handle.shutdown().await;
        }
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
