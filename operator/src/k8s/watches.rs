//! What the watch caches keep of each object: only what a reader uses (a cache of thousands of
//! Nodes and pools is most of the operator's memory).

use k8s_openapi::api::core::v1::Node;
use kube::core::DeserializeGuard;

/// Drops what no reader of a cached object uses: `managedFields` (large with several SSA
/// managers) and the last-applied annotation.
pub fn trim_meta<K: kube::Resource>(o: &mut K) {
    let m = o.meta_mut();
    m.managed_fields = None;
    if let Some(a) = m.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// A cached Node keeps its metadata (name, uid, labels, deletion) and `spec.providerID`: that is
/// all the operator reads. Status (images, conditions, addresses…) and annotations go.
pub fn trim_node(g: &mut DeserializeGuard<Node>) {
    trim_meta(g);
    kube::Resource::meta_mut(g).annotations = None;
    if let Ok(n) = g.0.as_mut() {
        n.status = None;
        if let Some(s) = n.spec.as_mut() {
            *s = k8s_openapi::api::core::v1::NodeSpec {
                provider_id: s.provider_id.take(),
                unschedulable: s.unschedulable.take(),
                ..Default::default()
            };
        }
    }
}
