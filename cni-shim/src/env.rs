//! The `CNI_*` environment: which variables each verb needs and the spec's rules for their values.

use crate::error::Error;
use crate::proto::Command;
use std::collections::BTreeMap;

/// The `CNI_*` environment for a forwarded verb.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CniEnv {
    /// `CNI_CONTAINERID` (empty for STATUS/GC).
    pub container_id: String,
    /// `CNI_NETNS` (empty for DEL when unknown, STATUS, GC).
    pub netns: String,
    /// `CNI_IFNAME` (empty for STATUS/GC).
    pub if_name: String,
    /// `CNI_ARGS`, split into key/value pairs.
    pub args: BTreeMap<String, String>,
}

/// Parses the `CNI_*` variables `command` needs.
pub fn parse_env(var: &dyn Fn(&str) -> Option<String>, command: Command) -> Result<CniEnv, Error> {
    if matches!(command, Command::Status | Command::Gc) {
        return Ok(CniEnv::default());
    }
    let container_id =
        var("CNI_CONTAINERID").ok_or_else(|| Error::env("CNI_CONTAINERID", "not set"))?;
    if !valid_id(&container_id) {
        return Err(Error::env(
            "CNI_CONTAINERID",
            "must start with a letter or digit and contain only letters, digits, '_', '.' and '-'",
        ));
    }
    let if_name = var("CNI_IFNAME").ok_or_else(|| Error::env("CNI_IFNAME", "not set"))?;
    if let Err(reason) = valid_if_name(&if_name) {
        return Err(Error::env("CNI_IFNAME", reason));
    }
    let netns = var("CNI_NETNS").unwrap_or_default();
    if netns.is_empty() && command != Command::Del {
        return Err(Error::env(
            "CNI_NETNS",
            "not set; ADD and CHECK need the sandbox's netns path",
        ));
    }
    let args = parse_args(&var("CNI_ARGS").unwrap_or_default())?;
    Ok(CniEnv { container_id, netns, if_name, args })
}

/// Splits `CNI_ARGS` (`K=V;K2=V2`).
pub fn parse_args(s: &str) -> Result<BTreeMap<String, String>, Error> {
    let mut out = BTreeMap::new();
    for pair in s.split(';').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                out.insert(k.to_string(), v.to_string());
            }
            _ => return Err(Error::env("CNI_ARGS", format!("{pair:?} is not KEY=VALUE"))),
        }
    }
    Ok(out)
}

/// Container IDs and network names: `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$` (as libcni validates them).
pub fn valid_id(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Interface names: 1-15 bytes, not `.`/`..`, no `/`, `:` or whitespace (the kernel's rules).
pub fn valid_if_name(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 15 {
        return Err(format!("{s:?} must be 1 to 15 bytes long"));
    }
    if s == "." || s == ".." {
        return Err(format!("{s:?} is not a valid interface name"));
    }
    if s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control()) {
        return Err(format!("{s:?} must not contain '/', ':' or whitespace"));
    }
    Ok(())
}
