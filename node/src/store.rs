//! The node's embedded store: signed records (cards, tombstones, attestations, pause
//! notices), receipts, the keys of the node's own agents, and metadata.
//!
//! [`RedbStore`] keeps it in one redb file: ACID transactions, an fsync per commit, and
//! checksummed pages, so a write that returned `Ok` survives a crash. Table names carry a
//! version (`registry_v1`) so that a later layout can live beside this one during a
//! migration. The node owns the store from one task; the [`Store`] trait exists so that
//! tests run it in a temporary directory.

use std::path::{Path, PathBuf};

use agentnet_protocol::{SYNC_HASH_LEN, SyncItem, SyncTable};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use zeroize::Zeroizing;

/// A signed record, as stored and as reconciled by sync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    /// Its key within its table (for the registry, the agent's DID).
    pub key: Vec<u8>,
    /// Its version (the message's `seq`).
    pub version: u64,
    /// The first bytes of its envelope's content id.
    pub hash: [u8; SYNC_HASH_LEN],
    /// The signed envelope, exactly as received.
    pub envelope: Vec<u8>,
}

/// A record as sync compares it (`specs/sync.md`): its item and its fingerprint term.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncEntry {
    /// Key, version and hash.
    pub item: SyncItem,
    /// What the record adds to a fingerprint's sum (`specs/sync.md#fingerprints`).
    pub term: u128,
}

impl SyncEntry {
    /// The entry of `item`, its term computed.
    pub fn new(item: SyncItem) -> Self {
        let term = crate::sync::term(&item.key, item.version, &item.hash);
        SyncEntry { item, term }
    }
}

/// What [`Store::put_record`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// The key was new.
    Inserted,
    /// It replaced an older version.
    Replaced,
    /// The store already holds this version or a newer one; nothing changed.
    Stale,
}

/// Why the store failed. Every variant says what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The disk is full: nothing was written.
    #[error("the disk holding {0} is full; nothing was written. Free some space and retry")]
    Full(PathBuf),
    /// The store is in use by another process.
    #[error("{0} is in use by another agentnet process")]
    Locked(PathBuf),
    /// The file is damaged (a checksum failed) or is not an agentnet store.
    #[error("{path} is damaged or not an agentnet store: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What redb reported.
        reason: String,
    },
    /// Any other I/O or database failure.
    #[error("store {path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The protocol names a table this store does not keep.
    #[error("this store keeps no table {0}")]
    UnknownTable(String),
    /// A key or value is larger than the store accepts.
    #[error("{0} is larger than the store accepts")]
    TooLarge(&'static str),
}

/// An own agent's DID and the seed of its secret key.
pub type AgentKey = (String, Zeroizing<[u8; 32]>);

/// A stored receipt: its content id and its envelope.
pub type ReceiptEntry = ([u8; 32], Vec<u8>);

/// The largest key of a record.
pub const MAX_KEY_LEN: usize = 1024;
/// The largest stored envelope (the largest message the protocol allows fits).
pub const MAX_ENVELOPE_LEN: usize = 256 * 1024;

/// The node's storage. Every write is durable when it returns, except
/// [`Store::put_replica`]'s, which are durable after the next [`Store::flush`] (or the
/// next other write).
pub trait Store: Send + Sync + 'static {
    /// Stores a record unless the store holds the same key at a newer version. Versions
    /// compare by `(version, hash)`, so two nodes holding different records under one
    /// version agree on which wins.
    fn put_record(&self, table: SyncTable, record: &StoredRecord)
    -> Result<PutOutcome, StoreError>;

    /// [`Store::put_record`] for a record learnt from the network. A crash may lose it
    /// until the next [`Store::flush`]: peers still hold it, and anti-entropy brings it
    /// back. This keeps a node that receives thousands of records from paying a disk
    /// flush for each one. The default is [`Store::put_record`].
    fn put_replica(
        &self,
        table: SyncTable,
        record: &StoredRecord,
    ) -> Result<PutOutcome, StoreError> {
        self.put_record(table, record)
    }

    /// Makes every earlier write durable. The default does nothing (every write already is).
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// The record under `key`.
    fn get_record(&self, table: SyncTable, key: &[u8]) -> Result<Option<StoredRecord>, StoreError>;

    /// Removes the record under `key` (an expired one); whether there was one.
    fn remove_record(&self, table: SyncTable, key: &[u8]) -> Result<bool, StoreError>;

    /// Records with `lower <= key < upper` (an empty `upper` means no bound), in key order,
    /// at most `limit`.
    fn records(
        &self,
        table: SyncTable,
        lower: &[u8],
        upper: &[u8],
        limit: usize,
    ) -> Result<Vec<StoredRecord>, StoreError>;

    /// What sync compares of the records with `lower <= key < upper`: key, version, hash
    /// and fingerprint term, without the envelopes, in key order, at most `limit`. Sync
    /// reads whole ranges on every round: [`RedbStore`] answers from memory.
    fn items(
        &self,
        table: SyncTable,
        lower: &[u8],
        upper: &[u8],
        limit: usize,
    ) -> Result<Vec<SyncEntry>, StoreError> {
        Ok(self
            .records(table, lower, upper, limit)?
            .into_iter()
            .map(|r| {
                SyncEntry::new(SyncItem {
                    key: r.key,
                    version: r.version,
                    hash: r.hash,
                })
            })
            .collect())
    }

    /// How many records `table` holds.
    fn count(&self, table: SyncTable) -> Result<u64, StoreError>;

    /// Stores a receipt envelope under its content id.
    fn put_receipt(&self, id: &[u8; 32], envelope: &[u8]) -> Result<(), StoreError>;

    /// A receipt by content id.
    fn get_receipt(&self, id: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Up to `limit` receipts with ids after `after` (all from the start when `None`), in
    /// id order: a restarted node replays them into trust and its replay cache.
    fn receipts(
        &self,
        after: Option<&[u8; 32]>,
        limit: usize,
    ) -> Result<Vec<ReceiptEntry>, StoreError>;

    /// Keeps the secret key seed of one of the node's own agents.
    fn put_agent_key(&self, did: &str, seed: &Zeroizing<[u8; 32]>) -> Result<(), StoreError>;

    /// Forgets an agent's key; whether it was there.
    fn remove_agent_key(&self, did: &str) -> Result<bool, StoreError>;

    /// Every own agent's DID and key seed.
    fn agent_keys(&self) -> Result<Vec<AgentKey>, StoreError>;

    /// A metadata value (node key, configuration).
    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Sets a metadata value.
    fn put_meta(&self, name: &str, value: &[u8]) -> Result<(), StoreError>;
}

/// key → (version, hash, envelope).
type RecordTable = TableDefinition<'static, &'static [u8], (u64, &'static [u8], &'static [u8])>;

const REGISTRY: RecordTable = TableDefinition::new("registry_v1");
const ATTESTATIONS: RecordTable = TableDefinition::new("attestations_v1");
const PAUSES: RecordTable = TableDefinition::new("pauses_v1");
const RECEIPTS: TableDefinition<'static, &'static [u8], &'static [u8]> =
    TableDefinition::new("receipts_v1");
const AGENT_KEYS: TableDefinition<'static, &'static str, &'static [u8]> =
    TableDefinition::new("agent_keys_v1");
const META: TableDefinition<'static, &'static str, &'static [u8]> = TableDefinition::new("meta_v1");

/// The synced tables, in the order of [`RECORD_TABLES`] and [`SyncItems::tables`].
const SYNCED: [SyncTable; 3] = [
    SyncTable::Registry,
    SyncTable::Attestations,
    SyncTable::Pauses,
];
const RECORD_TABLES: [RecordTable; 3] = [REGISTRY, ATTESTATIONS, PAUSES];

/// Where `table` stands in [`SYNCED`].
fn synced_index(table: SyncTable) -> Result<usize, StoreError> {
    SYNCED
        .iter()
        .position(|t| *t == table)
        .ok_or_else(|| StoreError::UnknownTable(format!("{table:?}")))
}

fn record_table(table: SyncTable) -> Result<RecordTable, StoreError> {
    Ok(RECORD_TABLES[synced_index(table)?])
}

/// The version, hash and fingerprint term of a stored record ([`SyncItems`]).
#[derive(Clone, Copy, Debug)]
struct Summary {
    version: u64,
    hash: [u8; SYNC_HASH_LEN],
    term: u128,
}

impl Summary {
    fn new(key: &[u8], version: u64, hash: [u8; SYNC_HASH_LEN]) -> Self {
        Summary {
            version,
            hash,
            term: crate::sync::term(key, version, &hash),
        }
    }
}

/// What sync reads of each synced table, kept in memory beside the file: sync reads whole
/// ranges on every round, and reading them from redb (and hashing every record for its
/// fingerprint term) took a third of a 50-node testnet's CPU while a partition healed.
/// About 100 bytes per record.
#[derive(Debug, Default)]
struct SyncItems {
    tables: [std::sync::RwLock<std::collections::BTreeMap<Vec<u8>, Summary>>; 3],
}

impl SyncItems {
    fn table(
        &self,
        table: SyncTable,
    ) -> Result<&std::sync::RwLock<std::collections::BTreeMap<Vec<u8>, Summary>>, StoreError> {
        Ok(&self.tables[synced_index(table)?])
    }
}

/// The store in one redb file.
#[derive(Debug)]
pub struct RedbStore {
    path: PathBuf,
    db: Database,
    /// Whether a commit since the last durable one was not durable.
    unflushed: std::sync::atomic::AtomicBool,
    /// The synced tables' items, in memory.
    items: SyncItems,
    /// Held from a record write's transaction until [`RedbStore::items`] shows it, so that
    /// the items change in the order the file does.
    writer: std::sync::Mutex<()>,
}

impl RedbStore {
    /// Opens the store at `path`, creating it (mode 0600 on Unix) and its tables if needed.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let fresh = !path.exists();
        let db = Database::create(path).map_err(|e| database_error(path, e))?;
        #[cfg(unix)]
        if fresh {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| io_error(path, &e))?;
        }
        let store = RedbStore {
            path: path.to_owned(),
            db,
            unflushed: std::sync::atomic::AtomicBool::new(false),
            items: SyncItems::default(),
            writer: std::sync::Mutex::new(()),
        };
        let txn = store.db.begin_write().map_err(|e| store.err(e))?;
        for table in RECORD_TABLES {
            txn.open_table(table).map_err(|e| store.err(e))?;
        }
        txn.open_table(RECEIPTS).map_err(|e| store.err(e))?;
        txn.open_table(AGENT_KEYS).map_err(|e| store.err(e))?;
        txn.open_table(META).map_err(|e| store.err(e))?;
        txn.commit().map_err(|e| store.err(e))?;
        for table in SYNCED {
            let loaded = store.scan(table, &[], &[], usize::MAX, |key, value| {
                (key.to_vec(), Summary::new(key, value.0, hash_of(value.1)))
            })?;
            *write_lock(store.items.table(table)?) = loaded.into_iter().collect();
        }
        Ok(store)
    }

    /// Holds record writes to the order of their commits ([`RedbStore::writer`]).
    fn writing(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: impl Into<redb::Error>) -> StoreError {
        database_error(&self.path, e)
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, StoreError> {
        self.write_with(redb::Durability::Immediate, f)
    }

    fn write_with<T>(
        &self,
        durability: redb::Durability,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, StoreError> {
        use std::sync::atomic::Ordering;
        let mut txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let durable = matches!(durability, redb::Durability::Immediate);
        if !durable {
            txn.set_durability(durability)
                .map_err(|e| self.err(redb::Error::from(e)))?;
        }
        let out = f(&txn).map_err(|e| self.err(e))?;
        txn.commit().map_err(|e| self.err(e))?;
        if durable {
            self.unflushed.store(false, Ordering::Release);
        } else {
            self.unflushed.store(true, Ordering::Release);
        }
        Ok(out)
    }

    fn put(
        &self,
        durability: redb::Durability,
        table: SyncTable,
        record: &StoredRecord,
    ) -> Result<PutOutcome, StoreError> {
        if record.key.len() > MAX_KEY_LEN {
            return Err(StoreError::TooLarge("the record key"));
        }
        if record.envelope.len() > MAX_ENVELOPE_LEN {
            return Err(StoreError::TooLarge("the envelope"));
        }
        let def = record_table(table)?;
        let items = self.items.table(table)?;
        let _writing = self.writing();
        let outcome = self.write_with(durability, |txn| {
            let mut t = txn.open_table(def)?;
            let existing = t.get(record.key.as_slice())?.map(|g| {
                let (version, hash, _) = g.value();
                (version, hash.to_vec())
            });
            let outcome = match existing {
                Some((version, hash))
                    if (version, hash.as_slice()) >= (record.version, &record.hash[..]) =>
                {
                    return Ok(PutOutcome::Stale);
                }
                Some(_) => PutOutcome::Replaced,
                None => PutOutcome::Inserted,
            };
            t.insert(
                record.key.as_slice(),
                (record.version, &record.hash[..], record.envelope.as_slice()),
            )?;
            Ok(outcome)
        })?;
        if outcome != PutOutcome::Stale {
            let summary = Summary::new(&record.key, record.version, record.hash);
            write_lock(items).insert(record.key.clone(), summary);
        }
        Ok(outcome)
    }
}

fn io_error(path: &Path, e: &std::io::Error) -> StoreError {
    if e.kind() == std::io::ErrorKind::StorageFull {
        StoreError::Full(path.to_owned())
    } else {
        StoreError::Io {
            path: path.to_owned(),
            reason: e.to_string(),
        }
    }
}

fn database_error(path: &Path, e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        redb::Error::Io(io) => io_error(path, &io),
        redb::Error::DatabaseAlreadyOpen => StoreError::Locked(path.to_owned()),
        redb::Error::Corrupted(reason) => StoreError::Corrupt {
            path: path.to_owned(),
            reason,
        },
        redb::Error::UpgradeRequired(v) => StoreError::Corrupt {
            path: path.to_owned(),
            reason: format!("written by an incompatible redb file format {v}"),
        },
        other => StoreError::Io {
            path: path.to_owned(),
            reason: other.to_string(),
        },
    }
}

fn hash_of(stored: &[u8]) -> [u8; SYNC_HASH_LEN] {
    let mut hash = [0u8; SYNC_HASH_LEN];
    let n = stored.len().min(SYNC_HASH_LEN);
    hash[..n].copy_from_slice(&stored[..n]);
    hash
}

fn to_record(key: &[u8], value: (u64, &[u8], &[u8])) -> StoredRecord {
    StoredRecord {
        key: key.to_vec(),
        version: value.0,
        hash: hash_of(value.1),
        envelope: value.2.to_vec(),
    }
}

fn read_lock<T>(lock: &std::sync::RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write_lock<T>(lock: &std::sync::RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

impl RedbStore {
    /// Maps the records with `lower <= key < upper` (an empty `upper` means no bound), in
    /// key order, at most `limit`.
    fn scan<T>(
        &self,
        table: SyncTable,
        lower: &[u8],
        upper: &[u8],
        limit: usize,
        map: impl Fn(&[u8], (u64, &[u8], &[u8])) -> T,
    ) -> Result<Vec<T>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn
            .open_table(record_table(table)?)
            .map_err(|e| self.err(e))?;
        let range = if upper.is_empty() {
            t.range::<&[u8]>(lower..)
        } else {
            t.range::<&[u8]>(lower..upper)
        }
        .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for item in range.take(limit) {
            let (k, v) = item.map_err(|e| self.err(e))?;
            out.push(map(k.value(), v.value()));
        }
        Ok(out)
    }
}

impl Store for RedbStore {
    fn put_record(
        &self,
        table: SyncTable,
        record: &StoredRecord,
    ) -> Result<PutOutcome, StoreError> {
        self.put(redb::Durability::Immediate, table, record)
    }

    fn put_replica(
        &self,
        table: SyncTable,
        record: &StoredRecord,
    ) -> Result<PutOutcome, StoreError> {
        self.put(redb::Durability::None, table, record)
    }

    fn flush(&self) -> Result<(), StoreError> {
        if self.unflushed.load(std::sync::atomic::Ordering::Acquire) {
            // An empty durable commit persists every non-durable one before it.
            self.write(|_| Ok(()))?;
        }
        Ok(())
    }

    fn get_record(&self, table: SyncTable, key: &[u8]) -> Result<Option<StoredRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn
            .open_table(record_table(table)?)
            .map_err(|e| self.err(e))?;
        let value = t.get(key).map_err(|e| self.err(e))?;
        Ok(value.map(|g| to_record(key, g.value())))
    }

    fn remove_record(&self, table: SyncTable, key: &[u8]) -> Result<bool, StoreError> {
        let def = record_table(table)?;
        let items = self.items.table(table)?;
        let _writing = self.writing();
        let removed = self.write(|txn| {
            let mut t = txn.open_table(def)?;
            let removed = t.remove(key)?.is_some();
            Ok(removed)
        })?;
        write_lock(items).remove(key);
        Ok(removed)
    }

    fn records(
        &self,
        table: SyncTable,
        lower: &[u8],
        upper: &[u8],
        limit: usize,
    ) -> Result<Vec<StoredRecord>, StoreError> {
        self.scan(table, lower, upper, limit, to_record)
    }

    fn items(
        &self,
        table: SyncTable,
        lower: &[u8],
        upper: &[u8],
        limit: usize,
    ) -> Result<Vec<SyncEntry>, StoreError> {
        use std::ops::Bound;
        let items = read_lock(self.items.table(table)?);
        let upper = if upper.is_empty() {
            Bound::Unbounded
        } else if upper <= lower {
            return Ok(Vec::new());
        } else {
            Bound::Excluded(upper)
        };
        Ok(items
            .range::<[u8], _>((Bound::Included(lower), upper))
            .take(limit)
            .map(|(key, s)| SyncEntry {
                item: SyncItem {
                    key: key.clone(),
                    version: s.version,
                    hash: s.hash,
                },
                term: s.term,
            })
            .collect())
    }

    fn count(&self, table: SyncTable) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn
            .open_table(record_table(table)?)
            .map_err(|e| self.err(e))?;
        t.len().map_err(|e| self.err(e))
    }

    fn put_receipt(&self, id: &[u8; 32], envelope: &[u8]) -> Result<(), StoreError> {
        if envelope.len() > MAX_ENVELOPE_LEN {
            return Err(StoreError::TooLarge("the receipt"));
        }
        self.write(|txn| {
            txn.open_table(RECEIPTS)?.insert(&id[..], envelope)?;
            Ok(())
        })
    }

    fn get_receipt(&self, id: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(RECEIPTS).map_err(|e| self.err(e))?;
        let value = t.get(&id[..]).map_err(|e| self.err(e))?;
        Ok(value.map(|g| g.value().to_vec()))
    }

    fn receipts(
        &self,
        after: Option<&[u8; 32]>,
        limit: usize,
    ) -> Result<Vec<ReceiptEntry>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(RECEIPTS).map_err(|e| self.err(e))?;
        let range = match after {
            Some(id) => t.range::<&[u8]>((
                std::ops::Bound::Excluded(&id[..]),
                std::ops::Bound::Unbounded,
            )),
            None => t.range::<&[u8]>(..),
        }
        .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for item in range.take(limit) {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let id: [u8; 32] = k.value().try_into().map_err(|_| StoreError::Corrupt {
                path: self.path.clone(),
                reason: "a receipt id is not 32 bytes".into(),
            })?;
            out.push((id, v.value().to_vec()));
        }
        Ok(out)
    }

    fn put_agent_key(&self, did: &str, seed: &Zeroizing<[u8; 32]>) -> Result<(), StoreError> {
        if did.len() > MAX_KEY_LEN {
            return Err(StoreError::TooLarge("the DID"));
        }
        self.write(|txn| {
            txn.open_table(AGENT_KEYS)?.insert(did, &seed[..])?;
            Ok(())
        })
    }

    fn remove_agent_key(&self, did: &str) -> Result<bool, StoreError> {
        self.write(|txn| {
            let removed = txn.open_table(AGENT_KEYS)?.remove(did)?.is_some();
            Ok(removed)
        })
    }

    fn agent_keys(&self) -> Result<Vec<AgentKey>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(AGENT_KEYS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for item in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let seed: [u8; 32] = v.value().try_into().map_err(|_| StoreError::Corrupt {
                path: self.path.clone(),
                reason: format!("the key of {} is not 32 bytes", k.value()),
            })?;
            out.push((k.value().to_owned(), Zeroizing::new(seed)));
        }
        Ok(out)
    }

    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(META).map_err(|e| self.err(e))?;
        let value = t.get(name).map_err(|e| self.err(e))?;
        Ok(value.map(|g| g.value().to_vec()))
    }

    fn put_meta(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        if name.len() > MAX_KEY_LEN {
            return Err(StoreError::TooLarge("the metadata name"));
        }
        if value.len() > MAX_ENVELOPE_LEN {
            return Err(StoreError::TooLarge("the metadata value"));
        }
        self.write(|txn| {
            txn.open_table(META)?.insert(name, value)?;
            Ok(())
        })
    }
}
