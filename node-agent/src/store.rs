//! The durable allocation store: which sandbox holds which address, which addresses are cooling,
//! which were offered for release, and the agent epoch.
//!
//! One redb file. Every mutation is one write transaction committed with redb's default
//! `Durability::Immediate` (fsync before `commit` returns), so a change the caller saw succeed
//! survives `kill -9` and power loss, and a change interrupted part-way never happened. The agent
//! keeps an in-memory mirror ([`State`]) that is only updated after the commit succeeded; disk and
//! memory therefore never disagree about an address being free.
//!
//! A file that is missing or empty is initialised as a new store ([`Store::created`] says so: the
//! start-up check in [`verify`] decides whether that is a fresh node or a lost store); a file that
//! is truncated or altered fails to open with an error (redb's integrity check on open), never a
//! panic and never a silently repaired store.

use crate::error::{Error, Result};
use ipnet::Ipv4Net;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

mod rebuild;
pub mod verify;

/// Allocation key `container_id \0 if_name` → JSON [`Allocation`].
const ALLOCATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("allocations");
/// Address (as u32) → allocation key. A second index so "one address, one holder" is enforced by
/// the store itself, not only by the allocator.
const BY_IP: TableDefinition<u32, &str> = TableDefinition::new("by_ip");
/// Address (as u32) → unix seconds after which it may be handed out again.
const COOLING: TableDefinition<u32, u64> = TableDefinition::new("cooling");
/// Offered item (`a.b.c.d/32` or a `/28`) → JSON [`Offer`]. Never allocatable again.
const OFFERED: TableDefinition<&str, &[u8]> = TableDefinition::new("offered");
/// Scalars: `epoch`.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Strings: `boot_id`.
const META_STR: TableDefinition<&str, &str> = TableDefinition::new("meta_str");

/// Identifies one attachment (the CNI `CNI_CONTAINERID` + `CNI_IFNAME`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AllocKey {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub if_name: String,
}

impl AllocKey {
    pub fn new(container_id: impl Into<String>, if_name: impl Into<String>) -> Self {
        AllocKey { container_id: container_id.into(), if_name: if_name.into() }
    }

    fn encode(&self) -> String {
        format!("{}\0{}", self.container_id, self.if_name)
    }

    fn decode(s: &str) -> Self {
        let (c, i) = s.split_once('\0').unwrap_or((s, ""));
        AllocKey::new(c, i)
    }
}

/// One address given to one sandbox interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub if_name: String,
    /// The pod's address.
    pub ip: Ipv4Addr,
    /// ENI the address belongs to.
    pub eni_id: String,
    /// Route table of that ENI (254 = main for the primary ENI).
    pub table: u32,
    /// `CNI_NETNS` at ADD time.
    pub netns: String,
    /// Host side veth name.
    pub host_if: String,
    /// Pod namespace from `K8S_POD_NAMESPACE` (may be empty).
    #[serde(default)]
    pub pod_namespace: String,
    /// Pod name from `K8S_POD_NAME` (may be empty).
    #[serde(default)]
    pub pod_name: String,
    /// Unix seconds of the ADD.
    pub created_at: u64,
    /// Agent epoch that made it.
    pub epoch: u64,
    /// The CNI network (the config's `name`) of the ADD; empty in records made before it was
    /// recorded, and in records rebuilt from the host. A GC acts only on its own network's.
    #[serde(default)]
    pub network: String,
    /// Where the record came from (absent in records of a CNI ADD).
    #[serde(default, skip_serializing_if = "Origin::is_cni")]
    pub origin: Origin,
    /// IPv6 clusters: the pod's IPv6 address, derived from `ip` (then its node-local IPv4
    /// egress address) when it was given, and kept so teardown and restart use what the pod got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<std::net::Ipv6Addr>,
}

/// Where an allocation record came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Origin {
    /// A CNI ADD: the container and interface are known.
    #[default]
    Cni,
    /// Rebuilt from the host's wiring after the store was lost: only the address, the veth and
    /// the table are known. The first request naming the veth's netns and interface adopts it
    /// (`Agent::allocation_for` in agent/verify.rs); until then GC cannot judge it and leaves
    /// it alone.
    Host,
}

impl Origin {
    fn is_cni(&self) -> bool {
        *self == Origin::Cni
    }
}

impl Allocation {
    /// The key of this allocation.
    pub fn key(&self) -> AllocKey {
        AllocKey::new(&self.container_id, &self.if_name)
    }
}

/// Who offered an item for release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// `releaseRequest.revision` the offer answered.
    pub revision: i64,
    /// Agent epoch that made the offer.
    pub epoch: u64,
}

/// The in-memory mirror of the store, read by the allocator.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct State {
    pub allocations: BTreeMap<AllocKey, Allocation>,
    /// Holder of every address in use.
    pub by_ip: BTreeMap<Ipv4Addr, AllocKey>,
    /// Cooling addresses → free-after (unix seconds).
    pub cooling: BTreeMap<Ipv4Addr, u64>,
    /// Offered items (never allocatable again).
    pub offered: BTreeMap<Ipv4Net, Offer>,
    /// Current epoch (0 before the first start).
    pub epoch: u64,
    /// Boot id recorded at the last start.
    pub boot_id: String,
}

pub struct Store {
    db: Database,
    created: bool,
}

fn ip_key(ip: Ipv4Addr) -> u32 {
    u32::from(ip)
}

impl Store {
    /// Open (or create) the store at `path` and load its state. The whole file is verified
    /// (every page's checksum): a truncated or altered file is an error naming the file, and the
    /// file is left as it was for a person to look at.
    pub fn open(path: &Path) -> Result<(Store, State)> {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        let new_dir = dir.is_some_and(|d| !d.exists());
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir).map_err(Error::io("create state dir"))?;
        }
        // redb initialises a missing or empty file as a new database.
        let created = std::fs::metadata(path).map(|m| m.len() == 0).unwrap_or(true);
        let corrupt = |e: redb::Error| Error::StoreFile { path: path.to_path_buf(), source: e };
        let db = Database::builder()
            .set_check_integrity_on_open(true)
            .create(path)
            .map_err(|e| corrupt(e.into()))?;
        let store = Store { db, created };
        store.init_tables()?;
        if created {
            // The new file's directory entry must be as durable as its first commit: without it
            // a power loss can leave a directory without the file, and the next start a new store.
            if let Some(dir) = dir {
                sync_dir(dir)?;
                if new_dir {
                    if let Some(parent) = dir.parent().filter(|d| !d.as_os_str().is_empty()) {
                        sync_dir(parent)?;
                    }
                }
            }
        }
        let state = store.load()?;
        Ok((store, state))
    }

    /// Whether this open initialised a new store (the file was missing or empty).
    pub fn created(&self) -> bool {
        self.created
    }

    fn init_tables(&self) -> Result<()> {
        let tx = self.db.begin_write()?;
        tx.open_table(ALLOCATIONS)?;
        tx.open_table(BY_IP)?;
        tx.open_table(COOLING)?;
        tx.open_table(OFFERED)?;
        tx.open_table(META)?;
        tx.open_table(META_STR)?;
        tx.commit()?;
        Ok(())
    }

    /// Read everything from disk.
    pub fn load(&self) -> Result<State> {
        let tx = self.db.begin_read()?;
        let mut st = State::default();
        for row in tx.open_table(ALLOCATIONS)?.iter()? {
            let (k, v) = row?;
            let a: Allocation = serde_json::from_slice(v.value()).map_err(Error::StoreRecord)?;
            st.by_ip.insert(a.ip, AllocKey::decode(k.value()));
            st.allocations.insert(AllocKey::decode(k.value()), a);
        }
        for row in tx.open_table(COOLING)?.iter()? {
            let (k, v) = row?;
            st.cooling.insert(Ipv4Addr::from(k.value()), v.value());
        }
        for row in tx.open_table(OFFERED)?.iter()? {
            let (k, v) = row?;
            let net: Ipv4Net = k
                .value()
                .parse()
                .map_err(|_| Error::StoreInvariant(format!("bad offered key {}", k.value())))?;
            let o: Offer = serde_json::from_slice(v.value()).map_err(Error::StoreRecord)?;
            st.offered.insert(net, o);
        }
        st.epoch = tx.open_table(META)?.get("epoch")?.map(|v| v.value()).unwrap_or(0);
        st.boot_id = tx
            .open_table(META_STR)?
            .get("boot_id")?
            .map(|v| v.value().to_string())
            .unwrap_or_default();
        Ok(st)
    }

    /// Start a new epoch (every agent start) and record the boot id.
    pub fn bump_epoch(&self, st: &mut State, boot_id: &str) -> Result<u64> {
        let epoch = st.epoch + 1;
        let tx = self.db.begin_write()?;
        tx.open_table(META)?.insert("epoch", epoch)?;
        tx.open_table(META_STR)?.insert("boot_id", boot_id)?;
        tx.commit()?;
        st.epoch = epoch;
        st.boot_id = boot_id.to_string();
        Ok(epoch)
    }

    /// Record an allocation. Refuses a key or an address already held, and an offered address.
    pub fn add(&self, st: &mut State, a: Allocation) -> Result<()> {
        let key = a.key();
        if st.allocations.contains_key(&key) {
            return Err(Error::StoreInvariant(format!("{key:?} already allocated")));
        }
        if let Some(holder) = st.by_ip.get(&a.ip) {
            return Err(Error::StoreInvariant(format!("{} already held by {holder:?}", a.ip)));
        }
        if st.offered.keys().any(|n| n.contains(&a.ip)) {
            return Err(Error::StoreInvariant(format!("{} was offered for release", a.ip)));
        }
        let bytes = serde_json::to_vec(&a).map_err(Error::StoreRecord)?;
        let tx = self.db.begin_write()?;
        {
            let enc = key.encode();
            tx.open_table(ALLOCATIONS)?.insert(enc.as_str(), bytes.as_slice())?;
            tx.open_table(BY_IP)?.insert(ip_key(a.ip), enc.as_str())?;
            tx.open_table(COOLING)?.remove(ip_key(a.ip))?;
        }
        crate::fault::point("store-add-before-commit");
        tx.commit()?;
        st.cooling.remove(&a.ip);
        st.by_ip.insert(a.ip, key.clone());
        st.allocations.insert(key, a);
        Ok(())
    }

    /// Remove an allocation; its address cools until `free_after` (unix seconds). Removing an
    /// absent key is a no-op returning `None`.
    pub fn remove(
        &self,
        st: &mut State,
        key: &AllocKey,
        free_after: u64,
    ) -> Result<Option<Allocation>> {
        let Some(a) = st.allocations.get(key).cloned() else { return Ok(None) };
        let tx = self.db.begin_write()?;
        {
            tx.open_table(ALLOCATIONS)?.remove(key.encode().as_str())?;
            tx.open_table(BY_IP)?.remove(ip_key(a.ip))?;
            tx.open_table(COOLING)?.insert(ip_key(a.ip), free_after)?;
        }
        crate::fault::point("store-remove-before-commit");
        tx.commit()?;
        st.allocations.remove(key);
        st.by_ip.remove(&a.ip);
        st.cooling.insert(a.ip, free_after);
        Ok(Some(a))
    }

    /// Commit an offer: the items are never allocatable again (until forgotten after release).
    pub fn offer(&self, st: &mut State, items: &[Ipv4Net], offer: Offer) -> Result<()> {
        for n in items {
            if st.by_ip.keys().any(|ip| n.contains(ip)) {
                return Err(Error::StoreInvariant(format!("offer {n} contains an address in use")));
            }
        }
        let bytes = serde_json::to_vec(&offer).map_err(Error::StoreRecord)?;
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(OFFERED)?;
            for n in items {
                t.insert(n.to_string().as_str(), bytes.as_slice())?;
            }
        }
        tx.commit()?;
        for n in items {
            st.offered.insert(*n, offer);
        }
        Ok(())
    }

    /// Forget offered items the operator has released (gone from the ENIs).
    pub fn forget_offers(&self, st: &mut State, items: &[Ipv4Net]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(OFFERED)?;
            let mut c = tx.open_table(COOLING)?;
            for n in items {
                t.remove(n.to_string().as_str())?;
                // A released address that comes back later (re-assigned by EC2) starts clean.
                for ip in n.hosts().chain([n.network(), n.broadcast()]) {
                    c.remove(ip_key(ip))?;
                }
            }
        }
        tx.commit()?;
        for n in items {
            st.offered.remove(n);
            st.cooling.retain(|ip, _| !n.contains(ip));
        }
        Ok(())
    }

    /// Drop cooling entries whose time has passed. Returns how many.
    pub fn expire_cooling(&self, st: &mut State, now: u64) -> Result<usize> {
        let done: Vec<Ipv4Addr> =
            st.cooling.iter().filter(|(_, t)| **t <= now).map(|(ip, _)| *ip).collect();
        if done.is_empty() {
            return Ok(0);
        }
        let tx = self.db.begin_write()?;
        {
            let mut c = tx.open_table(COOLING)?;
            for ip in &done {
                c.remove(ip_key(*ip))?;
            }
        }
        tx.commit()?;
        for ip in &done {
            st.cooling.remove(ip);
        }
        Ok(done.len())
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(Error::io("fsync the state dir"))
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
