//! Anti-entropy by range-based set reconciliation (`specs/sync.md`): two peers compare
//! fingerprints of key ranges, split the ranges that differ, exchange the items of small
//! ranges, and fetch only the records that are missing or newer.

use agentnet_protocol::limits::{
    MAX_SYNC_FETCH_KEYS, MAX_SYNC_ITEMS, MAX_SYNC_MESSAGE_LEN, MAX_SYNC_RANGES, MAX_SYNC_RECORDS,
};
use agentnet_protocol::{
    RangeSummary, SYNC_HASH_LEN, SyncRange, SyncRequest, SyncResponse, SyncTable,
};
use sha2::{Digest, Sha256};

use crate::store::{Store, StoreError, SyncEntry};

/// A differing range with at most this many records is always described by its items; an
/// answer with fewer differing ranges shares [`MAX_SYNC_ITEMS`] among them instead
/// ([`respond`]).
pub(crate) const ITEM_THRESHOLD: usize = 32;
/// A differing range with more records is split into at most this many sub-ranges, fewer
/// when the answer's [`MAX_SYNC_RANGES`] must be shared among more ranges.
pub(crate) const SPLIT: usize = 16;
/// The most ranges an initiator puts in one request, so that the answer (each range split
/// in at least two) fits [`MAX_SYNC_RANGES`]; the rest wait for the next request.
pub(crate) const REQUEST_RANGES: usize = MAX_SYNC_RANGES / 2;
/// The most records one range scan reads while answering.
const MAX_SCAN: usize = 1 << 20;

/// What one record adds to a fingerprint's sum: the first 16 bytes of a hash of its (key,
/// version, hash).
pub(crate) fn term(key: &[u8], version: u64, hash: &[u8; SYNC_HASH_LEN]) -> u128 {
    let mut h = Sha256::new();
    h.update((key.len() as u32).to_be_bytes());
    h.update(key);
    h.update(version.to_be_bytes());
    h.update(hash);
    let digest = h.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(first)
}

/// The fingerprint of a set of records: the wrapping sum of their terms, and the count.
/// Order does not matter, so both sides compute it the same way.
pub(crate) fn fingerprint(records: &[SyncEntry]) -> ([u8; SYNC_HASH_LEN], u64) {
    let sum = records
        .iter()
        .fold(0u128, |sum, r| sum.wrapping_add(r.term));
    (sum.to_be_bytes(), records.len() as u64)
}

fn summary(records: &[SyncEntry]) -> RangeSummary {
    let (hash, count) = fingerprint(records);
    RangeSummary::Fingerprint { hash, count }
}

/// The whole key space with this store's fingerprint: the first request of a sync.
pub(crate) fn opening(store: &dyn Store, table: SyncTable) -> Result<SyncRequest, StoreError> {
    let all = store.items(table, &[], &[], MAX_SCAN)?;
    Ok(SyncRequest::Reconcile {
        table,
        ranges: vec![SyncRange {
            lower: Vec::new(),
            upper: Vec::new(),
            summary: summary(&all),
        }],
    })
}

/// The table `request` opens a sync of, if it is an opening (one range over the whole key
/// space, as [`opening`] sends).
pub(crate) fn opened(request: &SyncRequest) -> Option<SyncTable> {
    match request {
        SyncRequest::Reconcile { table, ranges }
            if ranges.len() == 1 && ranges[0].lower.is_empty() && ranges[0].upper.is_empty() =>
        {
            Some(*table)
        }
        _ => None,
    }
}

/// How an answer with `differing` ranges describes each: its items if it holds at most the
/// first number of records, else that many sub-ranges (the second). The ranges share the
/// answer's [`MAX_SYNC_ITEMS`] and [`MAX_SYNC_RANGES`], so that an answer resolves as much
/// as fits in one round trip: a table of up to 4,096 records that differs is answered with
/// its items at once.
fn shares(differing: usize) -> (usize, usize) {
    let differing = differing.max(1);
    (
        (MAX_SYNC_ITEMS / differing).max(ITEM_THRESHOLD),
        (MAX_SYNC_RANGES / differing).clamp(2, SPLIT),
    )
}

/// Describes `records` (all of `[lower, upper)`): their items if at most `items`, else
/// `split` sub-ranges with fingerprints.
fn describe(
    records: &[SyncEntry],
    lower: &[u8],
    upper: &[u8],
    (items, split): (usize, usize),
    out: &mut Vec<SyncRange>,
) {
    if records.len() <= items {
        out.push(SyncRange {
            lower: lower.to_vec(),
            upper: upper.to_vec(),
            summary: RangeSummary::Items(records.iter().map(|r| r.item.clone()).collect()),
        });
        return;
    }
    let chunk = records.len().div_ceil(split.max(1));
    let chunks: Vec<&[SyncEntry]> = records.chunks(chunk).collect();
    for (i, part) in chunks.iter().enumerate() {
        let sub_lower = if i == 0 {
            lower.to_vec()
        } else {
            part[0].item.key.clone()
        };
        let sub_upper = match chunks.get(i + 1) {
            Some(next) => next[0].item.key.clone(),
            None => upper.to_vec(),
        };
        out.push(SyncRange {
            lower: sub_lower,
            upper: sub_upper,
            summary: summary(part),
        });
    }
}

/// Answers a sync request from the store.
pub(crate) fn respond(store: &dyn Store, request: SyncRequest) -> Result<SyncResponse, StoreError> {
    match request {
        SyncRequest::Reconcile { table, ranges } => {
            let mut differing = Vec::new();
            for range in ranges {
                let mine = store.items(table, &range.lower, &range.upper, MAX_SCAN)?;
                let same = match &range.summary {
                    RangeSummary::Fingerprint { hash, count } => {
                        fingerprint(&mine) == (*hash, *count)
                    }
                    RangeSummary::Items(theirs) => {
                        theirs.len() == mine.len()
                            && theirs.iter().zip(&mine).all(|(t, m)| *t == m.item)
                    }
                };
                if !same {
                    differing.push((range, mine));
                }
            }
            let share = shares(differing.len());
            let mut out = Vec::new();
            for (range, mine) in &differing {
                describe(mine, &range.lower, &range.upper, share, &mut out);
            }
            // Stay within the message limits; the rest is reconciled next round.
            let mut items = 0;
            out.retain(|r| {
                let n = match &r.summary {
                    RangeSummary::Items(i) => i.len(),
                    RangeSummary::Fingerprint { .. } => 0,
                };
                items += n;
                items <= MAX_SYNC_ITEMS
            });
            out.truncate(MAX_SYNC_RANGES);
            Ok(SyncResponse::Reconcile { table, ranges: out })
        }
        SyncRequest::Fetch { table, keys } => {
            let mut records = Vec::new();
            let mut size = 0usize;
            for key in keys.iter().take(MAX_SYNC_FETCH_KEYS) {
                if let Some(r) = store.get_record(table, key)? {
                    // Room for framing: each record costs its length plus a few bytes.
                    if records.len() == MAX_SYNC_RECORDS
                        || size + r.envelope.len() + 16 > MAX_SYNC_MESSAGE_LEN
                    {
                        break;
                    }
                    size += r.envelope.len() + 16;
                    records.push(r.envelope);
                }
            }
            Ok(SyncResponse::Records(records))
        }
    }
}

/// What the initiator does next with a `Reconcile` answer: ranges to reconcile further
/// (with its own fingerprints) and keys to fetch.
pub(crate) fn plan(
    store: &dyn Store,
    table: SyncTable,
    ranges: &[SyncRange],
) -> Result<(Vec<SyncRange>, Vec<Vec<u8>>), StoreError> {
    let mut next = Vec::new();
    let mut fetch = Vec::new();
    for range in ranges {
        let mine = store.items(table, &range.lower, &range.upper, MAX_SCAN)?;
        match &range.summary {
            RangeSummary::Items(theirs) => {
                for item in theirs {
                    let newer = match mine
                        .binary_search_by(|m| m.item.key.as_slice().cmp(&item.key))
                    {
                        Ok(i) => {
                            (item.version, item.hash) > (mine[i].item.version, mine[i].item.hash)
                        }
                        Err(_) => true,
                    };
                    if newer {
                        fetch.push(item.key.clone());
                    }
                }
            }
            RangeSummary::Fingerprint { hash, count } => {
                if fingerprint(&mine) != (*hash, *count) {
                    next.push(SyncRange {
                        lower: range.lower.clone(),
                        upper: range.upper.clone(),
                        summary: summary(&mine),
                    });
                }
            }
        }
    }
    Ok((next, fetch))
}

/// Takes the next request's ranges from a sync's queue: up to [`REQUEST_RANGES`], sorted and
/// disjoint, as a request must be (`specs/sync.md`). The queue mixes ranges from several
/// answers, and from overlapping syncs with the same peer (on connect, on the tick), so
/// ranges that would overlap the ones taken stay queued for a later request.
pub(crate) fn take_disjoint(queue: &mut std::collections::VecDeque<SyncRange>) -> Vec<SyncRange> {
    let mut all: Vec<SyncRange> = queue.drain(..).collect();
    all.sort_by(|a, b| a.lower.cmp(&b.lower).then_with(|| a.upper.cmp(&b.upper)));
    let mut taken: Vec<SyncRange> = Vec::with_capacity(REQUEST_RANGES);
    for range in all {
        let fits = taken.len() < REQUEST_RANGES
            && taken
                .last()
                .is_none_or(|prev| !prev.upper.is_empty() && prev.upper <= range.lower);
        if fits {
            taken.push(range);
        } else {
            queue.push_back(range);
        }
    }
    taken
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{RedbStore, StoredRecord};

    fn rec(key: &str, version: u64) -> StoredRecord {
        StoredRecord {
            key: key.as_bytes().to_vec(),
            version,
            hash: [version as u8; 16],
            envelope: format!("{key}/{version}").into_bytes(),
        }
    }

    /// Runs the protocol between two stores in memory until it settles; returns the rounds
    /// and the keys fetched.
    fn reconcile(a: &dyn Store, b: &dyn Store) -> (usize, Vec<Vec<u8>>) {
        let table = SyncTable::Registry;
        let SyncRequest::Reconcile { ranges, .. } = opening(a, table).expect("opening") else {
            panic!("opening is a reconcile");
        };
        let mut pending: std::collections::VecDeque<SyncRange> = ranges.into();
        let mut fetched = Vec::new();
        for round in 1..500 {
            let take = pending.len().min(REQUEST_RANGES);
            let request = SyncRequest::Reconcile {
                table,
                ranges: pending.drain(..take).collect(),
            };
            let SyncResponse::Reconcile { ranges, .. } = respond(b, request).expect("respond")
            else {
                panic!("reconcile answers reconcile");
            };
            let items: usize = ranges
                .iter()
                .map(|r| match &r.summary {
                    RangeSummary::Items(i) => i.len(),
                    RangeSummary::Fingerprint { .. } => 0,
                })
                .sum();
            assert!(ranges.len() <= MAX_SYNC_RANGES && items <= MAX_SYNC_ITEMS);
            let (next, fetch) = plan(a, table, &ranges).expect("plan");
            for chunk in fetch.chunks(MAX_SYNC_RECORDS) {
                let SyncResponse::Records(envelopes) = respond(
                    b,
                    SyncRequest::Fetch {
                        table,
                        keys: chunk.to_vec(),
                    },
                )
                .expect("fetch") else {
                    panic!("fetch answers records");
                };
                for (key, env) in chunk.iter().zip(envelopes) {
                    let r = b.get_record(table, key).expect("get").expect("present");
                    assert_eq!(r.envelope, env);
                    a.put_record(table, &r).expect("put");
                    fetched.push(key.clone());
                }
            }
            pending.extend(next);
            if pending.is_empty() {
                return (round, fetched);
            }
        }
        panic!("did not settle");
    }

    #[test]
    fn a_late_joiner_pulls_exactly_what_it_lacks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = RedbStore::open(&dir.path().join("a.redb")).expect("a");
        let b = RedbStore::open(&dir.path().join("b.redb")).expect("b");
        for i in 0..2000 {
            b.put_record(SyncTable::Registry, &rec(&format!("did:{i:05}"), 1))
                .expect("put");
        }
        // a already holds 1,990 of them, one of them at an older version.
        for i in 10..2000 {
            a.put_record(SyncTable::Registry, &rec(&format!("did:{i:05}"), 1))
                .expect("put");
        }
        a.put_record(SyncTable::Registry, &rec("did:01000", 0)).ok();
        b.put_record(SyncTable::Registry, &rec("did:01500", 2))
            .expect("newer on b");
        // a holds one record b lacks: it is not pushed, and does not disturb the pull.
        a.put_record(SyncTable::Registry, &rec("did:zzzzz", 1))
            .expect("put");
        let (rounds, fetched) = reconcile(&a, &b);
        let mut want: Vec<Vec<u8>> = (0..10)
            .map(|i| format!("did:{i:05}").into_bytes())
            .collect();
        want.push(b"did:01500".to_vec());
        let mut got = fetched.clone();
        got.sort();
        assert_eq!(got, want, "only the missing and the newer records");
        assert!(rounds <= 8, "{rounds} rounds");
        // Settled: a second pass fetches nothing.
        let (_, again) = reconcile(&a, &b);
        assert!(again.is_empty());
    }

    #[test]
    fn answers_share_their_room_and_stay_within_the_limits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = RedbStore::open(&dir.path().join("a.redb")).expect("a");
        let b = RedbStore::open(&dir.path().join("b.redb")).expect("b");
        // A table small enough to answer with its items: one round trip.
        for i in 0..1100 {
            b.put_replica(SyncTable::Registry, &rec(&format!("did:{i:05}"), 1))
                .expect("put");
            if i % 11 != 0 {
                a.put_replica(SyncTable::Registry, &rec(&format!("did:{i:05}"), 1))
                    .expect("put");
            }
        }
        let (rounds, fetched) = reconcile(&a, &b);
        assert_eq!((rounds, fetched.len()), (1, 100));
        // A large one, differing throughout: every answer fits, and it settles.
        let c = RedbStore::open(&dir.path().join("c.redb")).expect("c");
        let d = RedbStore::open(&dir.path().join("d.redb")).expect("d");
        for i in 0..20_000 {
            let r = rec(&format!("did:{i:06}"), 1);
            d.put_replica(SyncTable::Registry, &r).expect("put");
            if i % 97 != 0 {
                c.put_replica(SyncTable::Registry, &r).expect("put");
            }
        }
        let (rounds, fetched) = reconcile(&c, &d);
        assert_eq!(fetched.len(), 20_000usize.div_ceil(97));
        assert!(rounds <= 12, "{rounds} rounds");
    }

    #[test]
    fn an_empty_joiner_pulls_everything() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = RedbStore::open(&dir.path().join("a.redb")).expect("a");
        let b = RedbStore::open(&dir.path().join("b.redb")).expect("b");
        for i in 0..700 {
            b.put_record(SyncTable::Registry, &rec(&format!("k{i}"), 1))
                .expect("put");
        }
        let (_, fetched) = reconcile(&a, &b);
        assert_eq!(fetched.len(), 700);
        assert_eq!(a.count(SyncTable::Registry).expect("count"), 700);
    }

    #[test]
    fn a_request_takes_sorted_disjoint_ranges_and_leaves_the_rest() {
        let range = |lower: &str, upper: &str| SyncRange {
            lower: lower.as_bytes().to_vec(),
            upper: upper.as_bytes().to_vec(),
            summary: RangeSummary::Items(Vec::new()),
        };
        // Answers arrive out of key order, and a second sync overlaps the first.
        let mut queue: std::collections::VecDeque<SyncRange> = [
            range("m", "p"),
            range("a", "c"),
            range("x", ""),
            range("b", "d"),
            range("c", "e"),
            range("", "a"),
        ]
        .into_iter()
        .collect();
        let taken = take_disjoint(&mut queue);
        let bounds: Vec<(&[u8], &[u8])> =
            taken.iter().map(|r| (&r.lower[..], &r.upper[..])).collect();
        assert_eq!(
            bounds,
            vec![
                (&b""[..], &b"a"[..]),
                (b"a", b"c"),
                (b"c", b"e"),
                (b"m", b"p"),
                (b"x", b""),
            ]
        );
        // The overlapping one waits, and goes out next time.
        assert_eq!(queue.len(), 1);
        assert_eq!(take_disjoint(&mut queue)[0].lower, b"b".to_vec());
        // Never more than a request may carry.
        let mut many: std::collections::VecDeque<SyncRange> = (0..100u8)
            .map(|i| range(&format!("k{i:03}"), &format!("k{i:03}~")))
            .collect();
        assert_eq!(take_disjoint(&mut many).len(), REQUEST_RANGES);
        assert_eq!(many.len(), 100 - REQUEST_RANGES);
    }
}
