//! Where the platform's pieces are replaced by real ones: the cluster refuses real EC2 (its nodes
//! are the simulator's) and the runner picks scenarios by it, so both read one definition here.

use std::path::PathBuf;

/// Where the scenarios run: the platform's pieces or real ones.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// A real cluster's kubeconfig, if given.
    pub kubeconfig: Option<PathBuf>,
    /// A real EC2 endpoint, if given.
    pub ec2_endpoint: Option<String>,
    /// The real cluster's name, if given.
    pub cluster_name: Option<String>,
    /// What runs the platform nodes' pod sandboxes (replaces [`crate::Spec::runtime`]'s default).
    pub runtime: crate::Runtime,
}

/// Settings that, with `--kubeconfig`, say "use real AWS" when `--ec2-endpoint` is not given.
pub const AWS_SETTINGS: [&str; 3] = ["AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION"];

impl Target {
    /// Why EC2 is the real one, or `None` for the simulator: `--ec2-endpoint`, or `--kubeconfig`
    /// with the standard AWS settings in the environment. One rule for every scenario, so a run
    /// never mixes the simulator and real EC2.
    pub fn real_ec2(&self) -> Option<String> {
        if let Some(e) = &self.ec2_endpoint {
            return Some(format!("--ec2-endpoint {e}"));
        }
        self.kubeconfig.as_ref()?;
        let set: Vec<&str> = AWS_SETTINGS
            .iter()
            .copied()
            .filter(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()))
            .collect();
        (!set.is_empty()).then(|| format!("--kubeconfig with {} set", set.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_ec2_only_when_asked() {
        // The environment is not touched (tests run in parallel): only the cases it cannot change.
        let t = Target::default();
        assert_eq!(t.real_ec2(), None, "no flags: the simulator, whatever the environment");
        let t = Target { ec2_endpoint: Some("aws".into()), ..Target::default() };
        assert_eq!(t.real_ec2().as_deref(), Some("--ec2-endpoint aws"));
        let t = Target {
            kubeconfig: Some("/k".into()),
            ec2_endpoint: Some("http://127.0.0.1:1".into()),
            ..Target::default()
        };
        assert!(t.real_ec2().is_some());
    }
}
