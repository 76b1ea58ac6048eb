//! Tests of the test platform's Kubernetes API server, driven the way enipool and
//! people drive a real one: `kube::Client`, kube-runtime's watcher, and `/usr/bin/kubectl`.

#[path = "kubeapi/audit.rs"]
mod audit;
#[allow(dead_code)]
// The chart renderer the platform-level tests share (a file, not a dependency on the crates
// above this one).
#[path = "../../runner/tests/common/chart_rbac.rs"]
mod chart_rbac;
#[path = "kubeapi/client.rs"]
mod client;
#[path = "kubeapi/common.rs"]
mod common;
#[path = "kubeapi/crd.rs"]
mod crd;
#[path = "kubeapi/kubectl.rs"]
mod kubectl;
#[path = "kubeapi/policies.rs"]
mod policies;
#[path = "kubeapi/rbac.rs"]
mod rbac;
#[path = "kubeapi/status.rs"]
mod status;
#[path = "kubeapi/tokens.rs"]
mod tokens;
#[path = "kubeapi/watch.rs"]
mod watch;
