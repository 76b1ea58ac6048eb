//! The object store: every object of every kind as a `serde_json::Value`, keyed by
//! (group, resource, namespace, name), one global monotonically increasing resourceVersion (like
//! etcd's revision), and a bounded event log that watches replay from.
//!
//! Objects are stored version-agnostic: a CRD with several served versions and conversion strategy
//! `None` (the only one supported) serves the same stored object under each version by rewriting
//! `apiVersion`, exactly what the real server does for `None`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;

/// Key of one stored object. Cluster-scoped objects have an empty namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjKey {
    /// API group ("" for core).
    pub group: String,
    pub resource: String,
    /// Namespace, "" for cluster-scoped.
    pub namespace: String,
    /// metadata.name.
    pub name: String,
}

/// Watch event types stored in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    /// Object removed (the object is its last state, with the deletion's resourceVersion).
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One entry of the event log.
#[derive(Debug, Clone)]
pub struct Event {
    /// The resourceVersion this change produced.
    pub rv: u64,
    pub ty: EventType,
    pub key: ObjKey,
    /// State before the change (None for Added); watches with selectors need it to turn a
    /// MODIFIED that leaves/enters the selection into DELETED/ADDED like the watch cache does.
    pub old: Option<Arc<Value>>,
    /// State after the change (for Deleted: the last state).
    pub obj: Arc<Value>,
}

/// Default number of events kept for watches; older resourceVersions get 410 Gone.
pub const DEFAULT_LOG_CAPACITY: usize = 10_000;

/// The store. Not thread-safe by itself: the server keeps it behind one mutex, which makes every
/// request a serializable transaction (the real apiserver gets that from etcd's CAS).
#[derive(Debug)]
pub struct Store {
    objects: BTreeMap<ObjKey, Value>,
    rv: u64,
    log: VecDeque<Event>,
    /// Highest resourceVersion whose event is no longer in the log. A watch from `rv < compacted`
    /// cannot be served (410 Gone).
    compacted: u64,
    capacity: usize,
}

impl Store {
    /// An empty store. The first resourceVersion handed out is 1 (after a fresh start rv "0" means
    /// "any", as for the real server).
    pub fn new(capacity: usize) -> Self {
        Store { objects: BTreeMap::new(), rv: 0, log: VecDeque::new(), compacted: 0, capacity }
    }

    /// Current (latest) resourceVersion.
    pub fn rv(&self) -> u64 {
        self.rv
    }

    /// Lowest resourceVersion a watch may start from.
    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    /// Hand out the next resourceVersion.
    pub fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    pub fn get(&self, key: &ObjKey) -> Option<&Value> {
        self.objects.get(key)
    }

    /// All objects of one resource, optionally in one namespace, in (namespace, name) order.
    pub fn list<'a>(
        &'a self,
        group: &'a str,
        resource: &'a str,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a ObjKey, &'a Value)> + 'a {
        let start = ObjKey {
            group: group.to_string(),
            resource: resource.to_string(),
            namespace: namespace.unwrap_or("").to_string(),
            name: String::new(),
        };
        self.objects.range(start..).take_while(move |(k, _)| {
            k.group == group
                && k.resource == resource
                && namespace.is_none_or(|ns| k.namespace == ns)
        })
    }

    /// Every object (for garbage collection scans).
    pub fn all(&self) -> impl Iterator<Item = (&ObjKey, &Value)> {
        self.objects.iter()
    }

    /// Store `obj` (whose metadata.resourceVersion the caller already set to a fresh rv) and log
    /// the change.
    pub fn put(&mut self, key: ObjKey, obj: Value, rv: u64) {
        let old = self.objects.insert(key.clone(), obj.clone());
        let ty = if old.is_some() { EventType::Modified } else { EventType::Added };
        self.record(Event { rv, ty, key, old: old.map(Arc::new), obj: Arc::new(obj) });
    }

    /// Remove an object; `last` is its final state stamped with the deletion's rv.
    pub fn remove(&mut self, key: &ObjKey, last: Value, rv: u64) {
        let old = self.objects.remove(key);
        self.record(Event {
            rv,
            ty: EventType::Deleted,
            key: key.clone(),
            old: old.map(Arc::new),
            obj: Arc::new(last),
        });
    }

    fn record(&mut self, ev: Event) {
        self.log.push_back(ev);
        while self.log.len() > self.capacity {
            if let Some(e) = self.log.pop_front() {
                self.compacted = e.rv;
            }
        }
    }

    /// Drop the whole event log, as an etcd compaction would: watches from any rv older than now
    /// get 410 Gone. Tests use it to exercise clients' relist path.
    pub fn compact(&mut self) {
        self.log.clear();
        self.compacted = self.rv;
    }

    /// Events with `rv > after`, or None when some of them were compacted away.
    pub fn events_after(&self, after: u64) -> Option<impl Iterator<Item = &Event>> {
        if after < self.compacted {
            return None;
        }
        // The log is sorted by rv: skip the prefix with binary search.
        let start = self.log.partition_point(|e| e.rv <= after);
        Some(self.log.range(start..))
    }
}
