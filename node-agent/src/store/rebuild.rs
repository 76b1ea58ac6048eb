//! Writing what the start-up check decided: a rebuild from the host in one transaction; and
//! rewriting one record in place (a rebuilt record adopted by the request that names its veth, a
//! network recorded on an older record).

use super::{ip_key, verify, AllocKey, Allocation, State, Store};
use super::{ALLOCATIONS, BY_IP, COOLING, META, META_STR, OFFERED};
use crate::error::{Error, Result};

impl Store {
    /// Replace `old`'s record by `new`, which keeps its address (a rebuilt record taking the
    /// identity of the request that names its veth, or a record gaining its network), in one
    /// transaction.
    pub fn replace(&self, st: &mut State, old: &AllocKey, new: Allocation) -> Result<()> {
        let key = new.key();
        match st.allocations.get(old) {
            Some(a) if a.ip == new.ip => {}
            _ => return Err(Error::StoreInvariant(format!("{old:?} does not hold {}", new.ip))),
        }
        if key != *old && st.allocations.contains_key(&key) {
            return Err(Error::StoreInvariant(format!("{key:?} already allocated")));
        }
        let bytes = serde_json::to_vec(&new).map_err(Error::StoreRecord)?;
        let tx = self.db.begin_write()?;
        {
            let enc = key.encode();
            let mut t = tx.open_table(ALLOCATIONS)?;
            t.remove(old.encode().as_str())?;
            t.insert(enc.as_str(), bytes.as_slice())?;
            tx.open_table(BY_IP)?.insert(ip_key(new.ip), enc.as_str())?;
        }
        tx.commit()?;
        st.allocations.remove(old);
        st.by_ip.insert(new.ip, key.clone());
        st.allocations.insert(key, new);
        Ok(())
    }

    /// Apply a rebuild ([`verify::plan_rebuild`]) in one transaction: drop the records the host
    /// contradicts, record the pods the store missed, withdraw offers of addresses in use, keep
    /// the published offer out of use, and start the plan's epoch in boot `boot_id`.
    pub fn rebuild(&self, st: &mut State, plan: &verify::RebuildPlan, boot_id: &str) -> Result<()> {
        let mut next = st.clone();
        for k in &plan.remove {
            if let Some(a) = next.allocations.remove(k) {
                next.by_ip.remove(&a.ip);
            }
        }
        for n in &plan.unoffer {
            next.offered.remove(n);
        }
        for a in &plan.add {
            if next.allocations.contains_key(&a.key()) || next.by_ip.contains_key(&a.ip) {
                return Err(Error::StoreInvariant(format!("rebuild: {} recorded twice", a.ip)));
            }
            next.cooling.remove(&a.ip);
            next.by_ip.insert(a.ip, a.key());
            next.allocations.insert(a.key(), a.clone());
        }
        for (n, o) in &plan.offer {
            if next.by_ip.keys().any(|ip| n.contains(ip)) {
                return Err(Error::StoreInvariant(format!("rebuild: offer {n} is in use")));
            }
            next.offered.insert(*n, *o);
        }
        next.epoch = plan.epoch;
        next.boot_id = boot_id.to_string();
        let tx = self.db.begin_write()?;
        {
            let mut allocs = tx.open_table(ALLOCATIONS)?;
            let mut by_ip = tx.open_table(BY_IP)?;
            let mut cooling = tx.open_table(COOLING)?;
            let mut offered = tx.open_table(OFFERED)?;
            for k in &plan.remove {
                if let Some(a) = st.allocations.get(k) {
                    allocs.remove(k.encode().as_str())?;
                    by_ip.remove(ip_key(a.ip))?;
                }
            }
            for n in &plan.unoffer {
                offered.remove(n.to_string().as_str())?;
            }
            for a in &plan.add {
                let bytes = serde_json::to_vec(a).map_err(Error::StoreRecord)?;
                let enc = a.key().encode();
                allocs.insert(enc.as_str(), bytes.as_slice())?;
                by_ip.insert(ip_key(a.ip), enc.as_str())?;
                cooling.remove(ip_key(a.ip))?;
            }
            for (n, o) in &plan.offer {
                let bytes = serde_json::to_vec(o).map_err(Error::StoreRecord)?;
                offered.insert(n.to_string().as_str(), bytes.as_slice())?;
            }
            tx.open_table(META)?.insert("epoch", plan.epoch)?;
            tx.open_table(META_STR)?.insert("boot_id", boot_id)?;
        }
        tx.commit()?;
        *st = next;
        Ok(())
    }
}
