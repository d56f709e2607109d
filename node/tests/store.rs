//! The redb store: versioned records, range scans, keys and metadata that survive a
//! restart, and clear errors for a locked, damaged or oversized input.

use agentnet_node::store::{
    MAX_ENVELOPE_LEN, PutOutcome, RedbStore, Store, StoreError, StoredRecord, SyncEntry,
};
use agentnet_protocol::SyncTable;
use zeroize::Zeroizing;

fn record(key: &str, version: u64, hash: u8) -> StoredRecord {
    StoredRecord {
        key: key.as_bytes().to_vec(),
        version,
        hash: [hash; 16],
        envelope: format!("{key}@{version}/{hash}").into_bytes(),
    }
}

#[test]
fn newer_versions_replace_and_older_ones_are_stale() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RedbStore::open(&dir.path().join("node.redb")).expect("open");
    let t = SyncTable::Registry;
    assert_eq!(
        store.put_record(t, &record("a", 2, 5)).expect("put"),
        PutOutcome::Inserted
    );
    assert_eq!(
        store.put_record(t, &record("a", 1, 9)).expect("put"),
        PutOutcome::Stale
    );
    assert_eq!(
        store.put_record(t, &record("a", 2, 5)).expect("put"),
        PutOutcome::Stale
    );
    // Same version: the higher hash wins, on every node alike.
    assert_eq!(
        store.put_record(t, &record("a", 2, 4)).expect("put"),
        PutOutcome::Stale
    );
    assert_eq!(
        store.put_record(t, &record("a", 2, 6)).expect("put"),
        PutOutcome::Replaced
    );
    assert_eq!(
        store.put_record(t, &record("a", 3, 0)).expect("put"),
        PutOutcome::Replaced
    );
    assert_eq!(
        store.get_record(t, b"a").expect("get"),
        Some(record("a", 3, 0))
    );
    // Tables are separate.
    assert_eq!(
        store.get_record(SyncTable::Pauses, b"a").expect("get"),
        None
    );
    assert!(store.remove_record(t, b"a").expect("remove"));
    assert!(!store.remove_record(t, b"a").expect("remove"));
    assert_eq!(store.count(t).expect("count"), 0);
}

#[test]
fn ranges_come_back_in_key_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RedbStore::open(&dir.path().join("node.redb")).expect("open");
    for key in ["d", "b", "a", "c", "e"] {
        store
            .put_record(SyncTable::Attestations, &record(key, 1, 1))
            .expect("put");
    }
    let keys = |lower: &[u8], upper: &[u8], limit| -> Vec<Vec<u8>> {
        store
            .records(SyncTable::Attestations, lower, upper, limit)
            .expect("range")
            .into_iter()
            .map(|r| r.key)
            .collect()
    };
    assert_eq!(keys(b"b", b"d", 10), vec![b"b".to_vec(), b"c".to_vec()]);
    assert_eq!(keys(b"c", b"", 10).len(), 3);
    assert_eq!(keys(b"", b"", 2), vec![b"a".to_vec(), b"b".to_vec()]);
    assert_eq!(store.count(SyncTable::Attestations).expect("count"), 5);
}

/// What sync would read of `table`, computed from the records in the file.
fn items_from_file(store: &RedbStore, table: SyncTable) -> Vec<SyncEntry> {
    store
        .records(table, &[], &[], usize::MAX)
        .expect("records")
        .into_iter()
        .map(|r| {
            SyncEntry::new(agentnet_protocol::SyncItem {
                key: r.key,
                version: r.version,
                hash: r.hash,
            })
        })
        .collect()
}

#[test]
fn sync_items_in_memory_follow_every_write_and_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node.redb");
    let t = SyncTable::Registry;
    {
        let store = RedbStore::open(&path).expect("open");
        for i in 0..50u8 {
            store
                .put_replica(t, &record(&format!("k{i:02}"), 1, i))
                .expect("put");
        }
        // Replaced, stale, removed, and another table untouched.
        store.put_record(t, &record("k07", 2, 9)).expect("newer");
        assert_eq!(
            store.put_record(t, &record("k08", 0, 0)).expect("older"),
            PutOutcome::Stale
        );
        assert!(store.remove_record(t, b"k09").expect("remove"));
        store
            .put_record(SyncTable::Pauses, &record("p", 1, 1))
            .expect("pause");
        let all = store.items(t, &[], &[], usize::MAX).expect("items");
        assert_eq!(all, items_from_file(&store, t));
        assert_eq!(all.len(), 49);
        let k07 = all.iter().find(|e| e.item.key == b"k07").expect("k07");
        assert_eq!((k07.item.version, k07.item.hash), (2, [9; 16]));
        // Ranges, limits, and a range whose bounds are reversed (a peer's mistake).
        let some = store.items(t, b"k10", b"k20", 5).expect("range");
        assert_eq!(some.len(), 5);
        assert_eq!(some[0].item.key, b"k10".to_vec());
        assert!(
            store
                .items(t, b"k20", b"k10", 5)
                .expect("reversed")
                .is_empty()
        );
        assert_eq!(
            store
                .items(SyncTable::Pauses, &[], &[], 10)
                .expect("p")
                .len(),
            1
        );
        store.flush().expect("flush");
    }
    let store = RedbStore::open(&path).expect("reopen");
    assert_eq!(
        store.items(t, &[], &[], usize::MAX).expect("items"),
        items_from_file(&store, t)
    );
    assert_eq!(
        store.items(t, &[], &[], usize::MAX).expect("items").len(),
        49
    );
}

#[test]
fn everything_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node.redb");
    {
        let store = RedbStore::open(&path).expect("open");
        store
            .put_record(SyncTable::Registry, &record("did:key:z1", 7, 1))
            .expect("put");
        store
            .put_agent_key("did:key:z1", &Zeroizing::new([9u8; 32]))
            .expect("key");
        store.put_receipt(&[3u8; 32], b"receipt").expect("receipt");
        store.put_meta("config", b"listen = []").expect("meta");
    }
    let store = RedbStore::open(&path).expect("reopen");
    assert_eq!(
        store
            .get_record(SyncTable::Registry, b"did:key:z1")
            .expect("get"),
        Some(record("did:key:z1", 7, 1))
    );
    let keys = store.agent_keys().expect("keys");
    assert_eq!(keys.len(), 1);
    assert_eq!((keys[0].0.as_str(), *keys[0].1), ("did:key:z1", [9u8; 32]));
    assert_eq!(
        store.get_receipt(&[3u8; 32]).expect("receipt"),
        Some(b"receipt".to_vec())
    );
    assert_eq!(
        store.get_meta("config").expect("meta"),
        Some(b"listen = []".to_vec())
    );
    assert!(store.remove_agent_key("did:key:z1").expect("remove"));
    assert!(store.agent_keys().expect("keys").is_empty());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o077, 0, "the store holds agent keys: owner only");
    }
}

#[test]
fn bad_situations_get_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node.redb");
    let store = RedbStore::open(&path).expect("open");
    // A second opener is refused while the first holds the file.
    assert!(matches!(RedbStore::open(&path), Err(StoreError::Locked(_))));
    // Oversized input is refused, and nothing is written.
    let mut big = record("k", 1, 1);
    big.envelope = vec![0; MAX_ENVELOPE_LEN + 1];
    assert!(matches!(
        store.put_record(SyncTable::Registry, &big),
        Err(StoreError::TooLarge(_))
    ));
    assert_eq!(store.count(SyncTable::Registry).expect("count"), 0);
    drop(store);
    // A file that is not a store.
    let junk = dir.path().join("junk.redb");
    std::fs::write(&junk, vec![0x5a; 8192]).expect("write");
    let err = RedbStore::open(&junk).expect_err("not a store");
    assert!(
        matches!(err, StoreError::Corrupt { .. } | StoreError::Io { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("junk.redb"), "{err}");
}
