//! A recording fake of [`HostNet`] for tests without root. It keeps the links it "created" and,
//! optionally, persists them to a file so a crash test can see what a killed process wired. Like
//! the real host, teardown only marks a veth ("doomed"); it is deleted by `reap_links` or by the
//! next `setup_pod` of the same name (the fake has no background reaper).

use super::{EniConfig, HostError, HostNet, HostPod, NodeConfig, PodConfig, PodWired};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Mutex;

#[derive(Default)]
pub struct FakeHost {
    /// Every call, in order, as a short string.
    pub calls: Mutex<Vec<String>>,
    links: Mutex<Links>,
    persist: Option<PathBuf>,
    /// Make `setup_pod` fail (rollback tests).
    pub fail_setup_pod: std::sync::atomic::AtomicBool,
}

/// Live links (name → the pod address and table they were wired for) and doomed ones (torn
/// down, not reaped).
#[derive(Default, Clone, serde::Serialize, serde::Deserialize)]
struct Links {
    live: BTreeMap<String, (Ipv4Addr, u32)>,
    doomed: BTreeSet<String>,
}

impl FakeHost {
    /// A fake whose links are persisted to `path` (and loaded from it if it exists).
    pub fn persistent(path: PathBuf) -> Self {
        let links = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        FakeHost { links: Mutex::new(links), persist: Some(path), ..Default::default() }
    }

    fn record(&self, s: String) {
        self.calls.lock().unwrap().push(s);
    }

    fn save(&self, links: &Links) {
        if let Some(p) = &self.persist {
            let tmp = p.with_extension("tmp");
            std::fs::write(&tmp, serde_json::to_vec(links).unwrap()).unwrap();
            std::fs::rename(&tmp, p).unwrap();
        }
    }

    /// Current links (not torn down).
    pub fn links(&self) -> BTreeSet<String> {
        self.links.lock().unwrap().live.keys().cloned().collect()
    }

    /// A pod wired on the host by someone else (an earlier agent whose store is gone).
    pub fn wire(&self, host_if: &str, ip: Ipv4Addr, table: u32) {
        let mut l = self.links.lock().unwrap();
        l.live.insert(host_if.to_string(), (ip, table));
        self.save(&l);
    }

    /// Links torn down and not deleted yet.
    pub fn doomed(&self) -> BTreeSet<String> {
        self.links.lock().unwrap().doomed.clone()
    }
}

impl HostNet for FakeHost {
    fn setup_node(&self, cfg: &NodeConfig) -> Result<(), HostError> {
        self.record(format!("setup_node {}", cfg.primary_ip));
        Ok(())
    }
    fn setup_eni(&self, eni: &EniConfig) -> Result<(), HostError> {
        self.record(format!("setup_eni {} table {}", eni.id, eni.table));
        Ok(())
    }
    fn teardown_eni(&self, eni: &EniConfig) -> Vec<HostError> {
        self.record(format!("teardown_eni {} table {}", eni.id, eni.table));
        Vec::new()
    }
    fn setup_pod(&self, pod: &PodConfig) -> Result<PodWired, HostError> {
        self.record(format!("setup_pod {} {} mtu {}", pod.host_if, pod.ip, pod.mtu));
        if self.fail_setup_pod.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(HostError::NotFound(format!("netns {}", pod.netns)));
        }
        let mut l = self.links.lock().unwrap();
        l.doomed.remove(&pod.host_if);
        l.live.insert(pod.host_if.clone(), (pod.ip, pod.table));
        self.save(&l);
        Ok(PodWired { host_mac: "02:00:00:00:00:01".into(), pod_mac: "02:00:00:00:00:02".into() })
    }
    fn ensure_pod_host(&self, pod: &PodConfig) -> Result<(), HostError> {
        self.record(format!("ensure_pod_host {} {}", pod.host_if, pod.ip));
        Ok(())
    }
    fn teardown_pod(&self, pod: &PodConfig) -> Vec<HostError> {
        self.record(format!("teardown_pod {} {}", pod.host_if, pod.ip));
        let mut l = self.links.lock().unwrap();
        if l.live.remove(&pod.host_if).is_some() {
            l.doomed.insert(pod.host_if.clone());
        }
        self.save(&l);
        Vec::new()
    }
    fn reap_links(&self) -> Result<(), HostError> {
        self.record("reap_links".into());
        let mut l = self.links.lock().unwrap();
        l.doomed.clear();
        self.save(&l);
        Ok(())
    }
    fn check_pod(&self, pod: &PodConfig) -> Result<PodWired, HostError> {
        if self.links.lock().unwrap().live.contains_key(&pod.host_if) {
            Ok(PodWired {
                host_mac: "02:00:00:00:00:01".into(),
                pod_mac: "02:00:00:00:00:02".into(),
            })
        } else {
            Err(HostError::NotFound(format!("link {}", pod.host_if)))
        }
    }
    fn host_links(&self) -> Result<Vec<String>, HostError> {
        Ok(self.links.lock().unwrap().live.keys().cloned().collect())
    }
    fn pod_wiring(&self) -> Result<Vec<HostPod>, HostError> {
        let l = self.links.lock().unwrap();
        Ok(l.live
            .iter()
            .map(|(n, (ip, table))| HostPod { host_if: n.clone(), ip: *ip, table: *table })
            .collect())
    }
    fn uninstall(&self) -> Vec<HostError> {
        self.record("uninstall".into());
        Vec::new()
    }
    fn snapshot(&self) -> Result<super::drift::HostSnapshot, HostError> {
        // Rules, routes and nftables are not modelled: a repair on the fake finds nothing to
        // compare with rather than everything missing.
        Err(HostError::NotFound("host snapshot (not modelled by the fake host)".into()))
    }
    fn removals(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
    fn nft_table(&self) -> Result<Option<String>, HostError> {
        Err(HostError::NotFound("nftables (not modelled by the fake host)".into()))
    }
}
