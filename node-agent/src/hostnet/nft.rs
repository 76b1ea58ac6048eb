//! enipool's nftables table `ip enipool`: SNAT for traffic leaving the VPC and the CONNMARK that
//! sends NodePort replies out the primary ENI. Rendered as one script and applied in one `nft -f`
//! transaction that creates, deletes and recreates the table, so re-applying never duplicates a
//! rule and other tables are never touched.
//!
//! A text script rather than the `nftables` crate's JSON: the whole table is one deterministic
//! string (the unit test pins it byte for byte) and nft applies it atomically either way.

use super::{HostError, NodeConfig, SnatPorts, CONNMARK};
use std::io::Write;
use std::process::{Command, Stdio};

/// Removes the table (uninstall). Creating it first makes the delete succeed when it is absent.
pub const DELETE_SCRIPT: &str = "table ip enipool\ndelete table ip enipool\n";

/// Render the desired table.
///
/// In an IPv6 cluster (`ipv4_egress`) pods' IPv4 addresses are node-local: every connection from
/// them is SNATed to the node, to the VPC too, whatever `externalSNAT` and the exclusions say,
/// and the forward chain refuses new connections into the range from anywhere but the node.
pub fn render(cfg: &NodeConfig, primary_if: &str) -> String {
    let egress = cfg.ipv4_egress;
    let external_snat = cfg.external_snat && egress.is_none();
    let mut no_snat: Vec<String> = match egress {
        Some(_) => vec![],
        None => cfg.vpc_cidrs.iter().chain(&cfg.snat_exclude).map(|n| n.to_string()).collect(),
    };
    no_snat.sort();
    no_snat.dedup();
    let set = if no_snat.is_empty() {
        String::new()
    } else {
        format!("\t\telements = {{ {} }}\n", no_snat.join(", "))
    };
    let mark = format!("0x{CONNMARK:08x}");
    let mut s = String::new();
    s.push_str("table ip enipool\ndelete table ip enipool\ntable ip enipool {\n");
    s.push_str(&format!("\tset no-snat {{\n\t\ttype ipv4_addr\n\t\tflags interval\n{set}\t}}\n"));
    // NodePort: connections entering on the primary ENI for a local address are marked so the
    // replies (from pods on secondary ENIs) skip the ENI table (rule prio 1024) and leave by eth0.
    s.push_str("\tchain mangle-prerouting {\n\t\ttype filter hook prerouting priority mangle; policy accept;\n");
    s.push_str(&format!(
        "\t\tiifname \"{primary_if}\" fib daddr type local ct mark set ct mark | {mark}\n"
    ));
    if !external_snat {
        // Pod connections to outside the VPC are marked too, so they leave by eth0 and get SNATed.
        s.push_str(&format!(
            "\t\tiifname \"eni*\" ct state new ip daddr != @no-snat fib daddr type != local ct mark set ct mark | {mark}\n"
        ));
    }
    s.push_str(&format!(
        "\t\tiifname \"eni*\" ct mark & {mark} == {mark} meta mark set meta mark | {mark}\n"
    ));
    s.push_str("\t}\n");
    if !external_snat {
        s.push_str("\tchain nat-postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n");
        s.push_str("\t\tip daddr @no-snat return\n\t\tfib daddr type local return\n");
        let flag = match cfg.snat_ports {
            SnatPorts::FullyRandom => " fully-random",
            SnatPorts::Random => " random",
            SnatPorts::Sequential => "",
        };
        s.push_str(&format!("\t\tiifname \"eni*\" snat to {}{flag}\n", cfg.primary_ip));
        s.push_str("\t}\n");
    }
    if let Some(range) = egress {
        s.push_str("\tchain filter-forward {\n\t\ttype filter hook forward priority filter; policy accept;\n");
        s.push_str(&format!("\t\tip daddr {range} ct state new reject\n"));
        s.push_str("\t}\n");
    }
    s.push_str("}\n");
    s
}

/// Apply a script with `nft -f -`. Must be called from a thread inside the host netns (the child
/// inherits the calling thread's netns).
pub fn apply(script: &str) -> Result<(), HostError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| HostError::Io { op: "spawn nft", source })?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes())
        .map_err(|source| HostError::Io { op: "write nft script", source })?;
    let out =
        child.wait_with_output().map_err(|source| HostError::Io { op: "wait nft", source })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(HostError::Nft(String::from_utf8_lossy(&out.stderr).trim().to_string()))
    }
}

/// `nft list table ip enipool`, or `None` when the table does not exist. Same thread rule as
/// [`apply`].
pub fn list() -> Result<Option<String>, HostError> {
    let out = Command::new("nft")
        .args(["list", "table", "ip", "enipool"])
        .stdin(Stdio::null())
        .output()
        .map_err(|source| HostError::Io { op: "run nft list", source })?;
    let err = String::from_utf8_lossy(&out.stderr);
    match out.status.success() {
        true => Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned())),
        false if err.contains("No such file or directory") => Ok(None),
        false => Err(HostError::Nft(err.trim().to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(external: bool) -> NodeConfig {
        NodeConfig {
            primary_mac: None,
            primary_ip: "10.0.0.10".parse().unwrap(),
            vpc_cidrs: vec!["10.0.0.0/16".parse().unwrap()],
            snat_exclude: vec!["192.168.0.0/16".parse().unwrap(), "10.0.0.0/16".parse().unwrap()],
            external_snat: external,
            snat_ports: SnatPorts::FullyRandom,
            ipv4_egress: None,
        }
    }

    #[test]
    fn snat_port_selection_follows_the_setting() {
        for (ports, rule) in [
            (SnatPorts::FullyRandom, "snat to 10.0.0.10 fully-random\n"),
            (SnatPorts::Random, "snat to 10.0.0.10 random\n"),
            (SnatPorts::Sequential, "snat to 10.0.0.10\n"),
        ] {
            let s = render(&NodeConfig { snat_ports: ports, ..cfg(false) }, "eth0");
            assert!(s.contains(rule), "{ports:?}:\n{s}");
        }
        assert!("fully-random".parse::<SnatPorts>() == Ok(SnatPorts::FullyRandom));
        assert!("persistent".parse::<SnatPorts>().unwrap_err().contains("persistent"));
    }

    #[test]
    fn renders_snat_and_connmark() {
        let s = render(&cfg(false), "eth0");
        assert!(s.starts_with("table ip enipool\ndelete table ip enipool\n"), "atomic recreate");
        assert!(
            s.contains("elements = { 10.0.0.0/16, 192.168.0.0/16 }"),
            "deduplicated exclusions:\n{s}"
        );
        assert!(s.contains("iifname \"eni*\" snat to 10.0.0.10 fully-random"));
        assert!(
            s.contains("iifname \"eth0\" fib daddr type local ct mark set ct mark | 0x00000080")
        );
        assert_eq!(s, render(&cfg(false), "eth0"), "deterministic");
    }

    #[test]
    fn ipv6_pods_ipv4_egress_is_always_snated_and_closed_to_new_connections() {
        let v6 = NodeConfig {
            ipv4_egress: Some("169.254.172.0/22".parse().unwrap()),
            external_snat: true,
            ..cfg(false)
        };
        let s = render(&v6, "eth0");
        // No VPC or excluded destination escapes the SNAT: the source is node-local.
        assert!(
            s.contains("\tset no-snat {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t}\n"),
            "{s}"
        );
        assert!(s.contains("iifname \"eni*\" snat to 10.0.0.10 fully-random"), "{s}");
        assert!(s.contains("ip daddr 169.254.172.0/22 ct state new reject"), "{s}");
        assert!(
            !render(&cfg(false), "eth0").contains("filter-forward"),
            "IPv4 clusters keep theirs"
        );
    }

    #[test]
    fn external_snat_has_no_snat_chain() {
        let s = render(&cfg(true), "eth0");
        assert!(!s.contains("snat to"));
        assert!(s.contains("fib daddr type local ct mark set"), "NodePort connmark stays");
    }
}
