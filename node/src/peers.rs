//! Which connections a node keeps (`specs/sync.md#connections`).
//!
//! Kademlia dials whichever peers a lookup asks, and gossipsub's long-lived streams keep
//! every connection open, so without pruning every node ends up connected to every other:
//! 99 connections each in a 100-node testnet, whose upkeep alone took most of this
//! machine's two cores. A node therefore keeps about `target` connections: above that, the
//! least recently used connection that nothing needs is closed. What a connection is needed
//! for is decided here, so that it can be tested without a swarm.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use agentnet_protocol::{SyncTable, Timestamp};
use libp2p::PeerId;
use libp2p::multiaddr::{Multiaddr, Protocol};

/// A connection younger than this is never pruned: a Kademlia lookup that dialled it is
/// still using it.
pub(crate) const YOUNG: Duration = Duration::from_secs(5);
/// A connection that carried a sync or an intent within this long is never pruned.
pub(crate) const RECENT_USE: Duration = Duration::from_secs(10);
/// A node with at most this many connections syncs with every peer that connects, however
/// the connection came about: a node with few peers learns from each of them.
pub(crate) const FEW_PEERS: usize = 3;
/// A node reconciling with fewer peers than this syncs with a peer that connects, however
/// the connection came about; with more, it leaves the peer to gossip, the periodic sync and
/// spreading.
pub(crate) const CONNECT_SYNCS: usize = 4;
/// A responder reconciles back with an initiator whose opening differed at most once per
/// (peer, table) per this long.
pub(crate) const REVERSE_SYNC_EVERY: Duration = Duration::from_secs(2);
/// A record that sync brings is gossiped again ([`Peers::should_repair`]) only if it was
/// issued at least this long after the node came online: clocks differ by a little, and a
/// node's meshes take a few heartbeats to form.
pub(crate) const REPAIR_MARGIN: Duration = Duration::from_secs(5);
/// ... and at most this long ago: older gaps are left to sync alone.
pub(crate) const REPAIR_WINDOW: Duration = Duration::from_secs(600);

/// What the node knows of one connected peer.
#[derive(Clone, Copy, Debug)]
struct Connected {
    since: Instant,
    last_used: Instant,
    /// Intents from this peer that this node has yet to answer.
    answering: usize,
}

/// The connections a node keeps and the peers it dialled on purpose.
#[derive(Debug)]
pub(crate) struct Peers {
    target: usize,
    /// Peers dialled on purpose (bootstrap, `NodeHandle::dial`, mDNS), in the order dialled;
    /// at most `target` of them, the oldest forgotten first.
    explicit: Vec<PeerId>,
    connected: HashMap<PeerId, Connected>,
    /// When this node last reconciled back with a peer, per table.
    reverse: HashMap<(PeerId, SyncTable), Instant>,
    /// Since when this node has had at least one connection, without a break.
    online_since: Option<Timestamp>,
}

impl Peers {
    /// A node that keeps about `target` connections (at least 1).
    pub(crate) fn new(target: usize) -> Self {
        Peers {
            target: target.max(1),
            explicit: Vec::new(),
            connected: HashMap::new(),
            reverse: HashMap::new(),
            online_since: None,
        }
    }

    /// Records that this node dials `addr` on purpose; the peer is kept once connected.
    /// An address without a `/p2p/` peer id cannot be matched to a peer and is not kept.
    pub(crate) fn dialling(&mut self, addr: &Multiaddr) {
        let Some(peer) = addr.iter().find_map(|p| match p {
            Protocol::P2p(peer) => Some(peer),
            _ => None,
        }) else {
            return;
        };
        self.explicit.retain(|p| *p != peer);
        if self.explicit.len() >= self.target {
            self.explicit.remove(0);
        }
        self.explicit.push(peer);
    }

    /// The connections this node keeps without pruning.
    pub(crate) fn target(&self) -> usize {
        self.target
    }

    /// Whether `peer` was dialled on purpose.
    pub(crate) fn is_explicit(&self, peer: &PeerId) -> bool {
        self.explicit.contains(peer)
    }

    /// Records a first connection to `peer`; returns whether to sync with it now: a peer
    /// dialled on purpose, any peer while this node has few ([`FEW_PEERS`]), and any peer
    /// while it reconciles with fewer than [`CONNECT_SYNCS`] (`syncing`). Beyond that, a
    /// connection (most are Kademlia's) opens no sync: gossip, the periodic sync and
    /// spreading keep it in step. A joiner that synced with each of the 99 peers Kademlia
    /// connected it to took 5.6 s to converge at 100 nodes, instead of 0.7 s.
    pub(crate) fn connected(&mut self, peer: PeerId, now: Instant, syncing: usize) -> bool {
        if self.connected.is_empty() {
            self.online_since = Some(Timestamp::now());
        }
        self.connected.insert(
            peer,
            Connected {
                since: now,
                last_used: now,
                answering: 0,
            },
        );
        self.is_explicit(&peer) || self.connected.len() <= FEW_PEERS || syncing < CONNECT_SYNCS
    }

    /// Forgets `peer`'s last connection.
    pub(crate) fn disconnected(&mut self, peer: &PeerId) {
        self.connected.remove(peer);
        self.reverse.retain(|(p, _), _| p != peer);
        if self.connected.is_empty() {
            self.online_since = None;
        }
    }

    /// Whether a record issued at `issued_at`, which sync just brought, should be gossiped
    /// again: this node had been online since well before it was issued
    /// ([`REPAIR_MARGIN`]), so gossip should have brought it and did not (a partition, lost
    /// messages), and the peers this node's meshes reach probably lack it too; and it is
    /// recent ([`REPAIR_WINDOW`]). A node that was down or had not joined when the record was
    /// issued (a restart, a late joiner) missed it on its own account, and re-gossips
    /// nothing.
    pub(crate) fn should_repair(&self, issued_at: Timestamp, now: Timestamp) -> bool {
        self.online_since
            .is_some_and(|since| issued_at >= since.saturating_add(REPAIR_MARGIN))
            && issued_at.saturating_add(REPAIR_WINDOW) >= now
    }

    /// Records that a sync or an intent used the connection to `peer`.
    pub(crate) fn used(&mut self, peer: &PeerId, now: Instant) {
        if let Some(c) = self.connected.get_mut(peer) {
            c.last_used = now;
        }
    }

    /// Records that `peer` sent this node an intent, which it has yet to answer.
    pub(crate) fn intent_received(&mut self, peer: &PeerId) {
        if let Some(c) = self.connected.get_mut(peer) {
            c.answering += 1;
        }
    }

    /// Records that this node answered an intent from `peer`.
    pub(crate) fn intent_answered(&mut self, peer: &PeerId, now: Instant) {
        if let Some(c) = self.connected.get_mut(peer) {
            c.answering = c.answering.saturating_sub(1);
            c.last_used = now;
        }
    }

    /// Whether to reconcile table `table` back with `peer`, whose opening differed from this
    /// node's records; at most once per [`REVERSE_SYNC_EVERY`] per (peer, table).
    pub(crate) fn may_reverse(&mut self, peer: PeerId, table: SyncTable, now: Instant) -> bool {
        match self.reverse.get(&(peer, table)) {
            Some(at) if now.saturating_duration_since(*at) < REVERSE_SYNC_EVERY => false,
            _ => {
                self.reverse.insert((peer, table), now);
                true
            }
        }
    }

    /// The connections to close so that at most `target` remain, least recently used
    /// first. `needed` tells which peers the node needs for other reasons (its gossip mesh,
    /// a sync in progress); those are kept, as are peers dialled on purpose, young
    /// connections, recently used ones and those with an intent to answer. So the node may stay
    /// above `target` while everything it holds is needed.
    pub(crate) fn to_prune(&self, now: Instant, needed: impl Fn(&PeerId) -> bool) -> Vec<PeerId> {
        let excess = self.connected.len().saturating_sub(self.target);
        if excess == 0 {
            return Vec::new();
        }
        let mut idle: Vec<(Instant, PeerId)> = self
            .connected
            .iter()
            .filter(|(peer, c)| {
                now.saturating_duration_since(c.since) >= YOUNG
                    && now.saturating_duration_since(c.last_used) >= RECENT_USE
                    && c.answering == 0
                    && !self.is_explicit(peer)
                    && !needed(peer)
            })
            .map(|(peer, c)| (c.last_used, *peer))
            .collect();
        idle.sort_unstable();
        idle.into_iter().take(excess).map(|(_, p)| p).collect()
    }

    /// Connected peers as this node counts them.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.connected.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_records_issued_while_the_node_was_online_are_repaired() {
        let mut p = Peers::new(8);
        let now = Timestamp::now();
        assert!(!p.should_repair(now, now), "offline: nothing");
        let a = PeerId::random();
        p.connected(a, Instant::now(), 0);
        assert!(p.online_since.is_some());
        // Online for the last 100 s.
        let t0 = now.saturating_sub(Duration::from_secs(100));
        p.online_since = Some(t0);
        let issued = t0.saturating_add(Duration::from_secs(50));
        assert!(p.should_repair(issued, now));
        assert!(!p.should_repair(t0, now), "issued as the node came online");
        let much_later = issued.saturating_add(REPAIR_WINDOW + Duration::from_secs(1));
        assert!(!p.should_repair(issued, much_later), "too old");
        // Offline, then back: what was issued before it came back was missed here.
        p.disconnected(&a);
        assert!(!p.should_repair(issued, now));
        p.connected(a, Instant::now(), 0);
        assert!(!p.should_repair(issued, now));
    }

    fn peers(n: usize) -> Vec<PeerId> {
        (0..n).map(|_| PeerId::random()).collect()
    }

    #[test]
    fn only_idle_unneeded_connections_beyond_the_target_are_pruned() {
        let t0 = Instant::now();
        let mut p = Peers::new(3);
        let ids = peers(8);
        let dialled: Multiaddr = format!("/ip4/127.0.0.1/tcp/1/p2p/{}", ids[0])
            .parse()
            .expect("address");
        p.dialling(&dialled);
        for (i, id) in ids.iter().enumerate() {
            // ids[0] and ids[1] sync (dialled, and while the node had few peers), ids[2]
            // too (the third), the rest do not: the node is busy syncing.
            let sync = p.connected(*id, t0 + Duration::from_millis(i as u64), CONNECT_SYNCS);
            assert_eq!(sync, i < FEW_PEERS, "peer {i}");
        }
        assert_eq!(p.len(), 8);
        // All young: nothing goes.
        assert!(
            p.to_prune(t0 + Duration::from_secs(1), |_| false)
                .is_empty()
        );
        let later = t0 + RECENT_USE + Duration::from_secs(1);
        p.used(&ids[3], later + Duration::from_millis(1));
        p.intent_received(&ids[4]);
        let mesh = ids[5];
        let pruned = p.to_prune(later, |peer| *peer == mesh);
        // 8 connected, target 3: five should go, but ids[0] was dialled, ids[3] was just
        // used, ids[4] has an intent to answer and ids[5] is in the mesh, so only the four others can go,
        // oldest use first.
        assert_eq!(pruned, vec![ids[1], ids[2], ids[6], ids[7]]);
        for peer in &pruned {
            p.disconnected(peer);
        }
        // Still above the target with only needed peers: nothing more goes.
        assert!(p.to_prune(later, |peer| *peer == mesh).is_empty());
        // Once answered, and idle again, the intent's peer can go.
        p.intent_answered(&ids[4], later);
        let idle_again = later + RECENT_USE;
        assert_eq!(p.to_prune(idle_again, |peer| *peer == mesh), vec![ids[4]]);
    }

    #[test]
    fn a_node_syncing_with_few_peers_syncs_with_one_that_connects() {
        let t0 = Instant::now();
        let mut p = Peers::new(64);
        for _ in 0..FEW_PEERS {
            p.connected(PeerId::random(), t0, 0);
        }
        assert!(p.connected(PeerId::random(), t0, CONNECT_SYNCS - 1));
        assert!(!p.connected(PeerId::random(), t0, CONNECT_SYNCS));
    }

    #[test]
    fn reconciling_back_is_rate_limited_per_peer_and_table() {
        let t0 = Instant::now();
        let mut p = Peers::new(8);
        let peer = PeerId::random();
        p.connected(peer, t0, 0);
        assert!(p.may_reverse(peer, SyncTable::Registry, t0));
        assert!(!p.may_reverse(peer, SyncTable::Registry, t0 + Duration::from_millis(100)));
        assert!(p.may_reverse(peer, SyncTable::Pauses, t0 + Duration::from_millis(100)));
        assert!(p.may_reverse(peer, SyncTable::Registry, t0 + REVERSE_SYNC_EVERY));
        p.disconnected(&peer);
        assert!(p.may_reverse(peer, SyncTable::Registry, t0 + REVERSE_SYNC_EVERY));
    }

    #[test]
    fn the_peers_dialled_on_purpose_are_bounded() {
        let mut p = Peers::new(2);
        let ids = peers(3);
        for id in &ids {
            p.dialling(
                &format!("/ip4/127.0.0.1/tcp/1/p2p/{id}")
                    .parse()
                    .expect("address"),
            );
        }
        assert!(!p.is_explicit(&ids[0]));
        assert!(p.is_explicit(&ids[1]) && p.is_explicit(&ids[2]));
        // No peer id: nothing to keep.
        p.dialling(&"/ip4/127.0.0.1/tcp/1".parse().expect("address"));
        assert!(p.is_explicit(&ids[2]));
    }
}
