//! Parsing the runtime's input: the network config on stdin and the `CNI_*` environment.
//!
//! [`parse_invocation`] is the single entry point (also the fuzz target's): it never panics, and
//! every rejection is an [`Error`] carrying the right CNI code. Stdin is read with a hard bound
//! ([`MAX_STDIN_BYTES`]) before any parsing.

pub use crate::env::{parse_args, parse_env, valid_id, valid_if_name, CniEnv};
use crate::error::Error;
use crate::proto::{self, Attachment, Command};
use crate::result::Dns;
use crate::version;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

/// Upper bound on the network config read from stdin.
pub const MAX_STDIN_BYTES: usize = 1 << 20;

/// Default agent timeout for ADD, DEL, CHECK and GC.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;

/// STATUS never waits longer than this: the runtime polls it and a slow answer means "not ready".
pub const STATUS_TIMEOUT_CAP_MS: u64 = 2_000;

/// The GC input key listing the attachments still in use (CNI 1.1).
pub const VALID_ATTACHMENTS: &str = "cni.dev/valid-attachments";

/// Capabilities whose runtimeConfig enipool would have to honour but cannot (it picks addresses and
/// MACs itself); declaring one is rejected rather than silently ignored.
const UNSUPPORTED_CAPABILITIES: &[&str] = &["ips", "mac", "ipRanges", "infinibandGUID", "deviceID"];

/// The verb from `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// A verb forwarded to the agent.
    Agent(Command),
    /// VERSION, answered by the shim itself.
    Version,
}

impl Verb {
    /// Parses `CNI_COMMAND`.
    pub fn parse(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "ADD" => Verb::Agent(Command::Add),
            "DEL" => Verb::Agent(Command::Del),
            "CHECK" => Verb::Agent(Command::Check),
            "STATUS" => Verb::Agent(Command::Status),
            "GC" => Verb::Agent(Command::Gc),
            "VERSION" => Verb::Version,
            other => {
                return Err(Error::env(
                    "CNI_COMMAND",
                    format!(
                        "unknown verb {other:?}; expected ADD, DEL, CHECK, STATUS, GC or VERSION"
                    ),
                ))
            }
        })
    }
}

/// The plugin's network config, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    /// `cniVersion`, one of [`version::SUPPORTED`].
    pub cni_version: String,
    pub name: String,
    /// `agentSocket`.
    pub agent_socket: PathBuf,
    /// `mtu` for the pod interface, if set.
    pub mtu: Option<u32>,
    /// `timeoutMs` as a duration.
    pub timeout: Duration,
    /// `delJournalDir`.
    pub del_journal_dir: PathBuf,
    /// `logFile`, if set.
    pub log_file: Option<PathBuf>,
    /// `prevResult`, unparsed (CHECK parses it strictly; DEL only passes through).
    pub prev_result: Option<Value>,
    /// `runtimeConfig` as given.
    pub runtime_config: Map<String, Value>,
    /// `dns`, echoed into the ADD result.
    pub dns: Option<Dns>,
    /// `cni.dev/valid-attachments`: required for GC, `None` when absent (other verbs).
    pub valid_attachments: Option<Vec<Attachment>>,
}

/// A fully parsed invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum Invocation {
    /// VERSION, with the `cniVersion` the caller sent, if any.
    Version(Option<String>),
    /// A verb for the agent.
    Plugin {
        command: Command,
        env: CniEnv,
        /// The config (boxed: it dwarfs the VERSION variant).
        conf: Box<NetConf>,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConf {
    cni_version: String,
    name: Option<String>,
    #[serde(rename = "type")]
    _plugin_type: Option<String>,
    agent_socket: Option<PathBuf>,
    mtu: Option<u32>,
    timeout_ms: Option<u64>,
    del_journal_dir: Option<PathBuf>,
    log_file: Option<PathBuf>,
    prev_result: Option<Value>,
    ipam: Option<Value>,
    #[serde(default)]
    capabilities: BTreeMap<String, bool>,
    #[serde(default)]
    runtime_config: Map<String, Value>,
    dns: Option<Dns>,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    valid_attachments: Option<Vec<RawAttachment>>,
}

#[derive(Deserialize)]
struct RawAttachment {
    #[serde(rename = "containerID")]
    container_id: String,
    ifname: String,
}

/// Reads stdin up to [`MAX_STDIN_BYTES`]; more is a decoding failure, not a silent truncation.
pub fn read_stdin(input: &mut dyn Read) -> Result<Vec<u8>, Error> {
    let mut buf = Vec::new();
    input.take(MAX_STDIN_BYTES as u64 + 1).read_to_end(&mut buf).map_err(|source| Error::Io {
        context: "reading the network config from stdin".into(),
        source,
    })?;
    if buf.len() > MAX_STDIN_BYTES {
        return Err(Error::decode(
            "network config on stdin",
            format!("larger than the {MAX_STDIN_BYTES}-byte limit"),
        ));
    }
    Ok(buf)
}

/// Best-effort `cniVersion` from stdin, for stamping error objects before full parsing succeeds.
pub fn sniff_version(stdin: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct V {
        #[serde(rename = "cniVersion")]
        cni_version: String,
    }
    serde_json::from_slice::<V>(stdin).ok().map(|v| v.cni_version)
}

/// The fuzz entry point: `data` is `KEY=VALUE` lines (the environment), a NUL byte, then stdin.
///
/// Shared by the cargo-fuzz target and the bounded fuzz test so both exercise exactly the same path:
/// the bounded stdin read followed by [`parse_invocation`].
pub fn parse_fuzz_input(data: &[u8]) -> Result<Invocation, Error> {
    let (env_block, mut stdin) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let env_text = String::from_utf8_lossy(env_block);
    let vars: Vec<(&str, &str)> = env_text.lines().filter_map(|l| l.split_once('=')).collect();
    let lookup = |k: &str| vars.iter().rev().find(|(n, _)| *n == k).map(|(_, v)| v.to_string());
    let input = read_stdin(&mut stdin)?;
    parse_invocation(&lookup, &input)
}

/// Parses the whole invocation from an environment lookup and the bytes of stdin.
pub fn parse_invocation(
    var: &dyn Fn(&str) -> Option<String>,
    stdin: &[u8],
) -> Result<Invocation, Error> {
    let verb = match var("CNI_COMMAND") {
        Some(c) => Verb::parse(&c)?,
        None => return Err(Error::env("CNI_COMMAND", "not set; the runtime must set it")),
    };
    let command = match verb {
        Verb::Version => return parse_version_request(stdin).map(Invocation::Version),
        Verb::Agent(c) => c,
    };
    let conf = parse_conf(stdin, command)?;
    let env = parse_env(var, command)?;
    Ok(Invocation::Plugin { command, env, conf: Box::new(conf) })
}

fn parse_version_request(stdin: &[u8]) -> Result<Option<String>, Error> {
    if stdin.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let v: Value =
        serde_json::from_slice(stdin).map_err(|e| Error::decode("VERSION request", e))?;
    match v.get("cniVersion") {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Error::decode("VERSION request", "cniVersion is not a string")),
    }
}

/// Parses and validates the network config for `command`.
pub fn parse_conf(stdin: &[u8], command: Command) -> Result<NetConf, Error> {
    let value: Value =
        serde_json::from_slice(stdin).map_err(|e| Error::decode("network config on stdin", e))?;
    let Some(obj) = value.as_object() else {
        return Err(Error::decode("network config on stdin", "not a JSON object"));
    };
    match obj.get("cniVersion") {
        Some(Value::String(v)) => version::check(v, command)?,
        Some(_) => {
            return Err(Error::decode("network config on stdin", "cniVersion is not a string"))
        }
        None => return Err(Error::InvalidConfig("cniVersion is missing".into())),
    }
    let raw: RawConf =
        serde_json::from_value(value).map_err(|e| Error::decode("network config on stdin", e))?;
    let name = raw.name.ok_or_else(|| Error::InvalidConfig("name is missing".into()))?;
    if !valid_id(&name) {
        return Err(Error::InvalidConfig(format!(
            "name {name:?} must start with a letter or digit and contain only letters, digits, '_', '.' and '-'"
        )));
    }
    if raw.ipam.is_some() {
        return Err(Error::UnsupportedField {
            field: "ipam".into(),
            hint: "enipool allocates VPC addresses itself; remove the ipam section".into(),
        });
    }
    for (cap, on) in &raw.capabilities {
        if *on && UNSUPPORTED_CAPABILITIES.contains(&cap.as_str()) {
            return Err(Error::UnsupportedField {
                field: format!("capabilities.{cap}"),
                hint: "enipool chooses addresses and MACs itself; remove this capability".into(),
            });
        }
    }
    if let Some(mtu) = raw.mtu {
        if !(576..=9001).contains(&mtu) {
            return Err(Error::InvalidConfig(format!("mtu {mtu} out of range 576..=9001")));
        }
    }
    let timeout_ms = raw.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
    if !(1..=300_000).contains(&timeout_ms) {
        return Err(Error::InvalidConfig(format!(
            "timeoutMs {timeout_ms} out of range 1..=300000"
        )));
    }
    let timeout_ms =
        if command == Command::Status { timeout_ms.min(STATUS_TIMEOUT_CAP_MS) } else { timeout_ms };
    let valid_attachments = raw.valid_attachments.map(|list| {
        list.into_iter()
            .map(|a| Attachment { container_id: a.container_id, if_name: a.ifname })
            .collect::<Vec<_>>()
    });
    // Without the runtime's list a GC cannot tell a live attachment from a stale one; taking the
    // missing key for an empty list would tear down every pod of the network.
    if command == Command::Gc && valid_attachments.is_none() {
        return Err(Error::InvalidConfig(format!(
            "GC of network {name:?} needs {VALID_ATTACHMENTS:?} (the list of attachments the \
             runtime still uses); without it nothing is released"
        )));
    }
    Ok(NetConf {
        cni_version: raw.cni_version,
        name,
        agent_socket: raw.agent_socket.unwrap_or_else(|| proto::DEFAULT_AGENT_SOCKET.into()),
        mtu: raw.mtu,
        timeout: Duration::from_millis(timeout_ms),
        del_journal_dir: raw
            .del_journal_dir
            .unwrap_or_else(|| proto::DEFAULT_DEL_JOURNAL_DIR.into()),
        log_file: raw.log_file,
        prev_result: raw.prev_result,
        runtime_config: raw.runtime_config,
        dns: raw.dns,
        valid_attachments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::codes::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    const ADD_ENV: &[(&str, &str)] = &[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc123"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_NETNS", "/var/run/netns/x"),
        ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web"),
    ];

    #[test]
    fn full_config() {
        let conf = br#"{"cniVersion":"1.0.0","name":"enipool","type":"enipool-cni",
            "agentSocket":"/tmp/a.sock","mtu":9001,"timeoutMs":50,"delJournalDir":"/tmp/j",
            "logFile":"/tmp/log","runtimeConfig":{"portMappings":[]},
            "capabilities":{"portMappings":true},"dns":{"nameservers":["10.0.0.2"]}}"#;
        let Invocation::Plugin { command, env, conf } =
            parse_invocation(&env(ADD_ENV), conf).unwrap()
        else {
            panic!("not a plugin call")
        };
        assert_eq!(command, Command::Add);
        assert_eq!(env.args["K8S_POD_NAME"], "web");
        assert_eq!(conf.agent_socket, PathBuf::from("/tmp/a.sock"));
        assert_eq!(conf.mtu, Some(9001));
        assert_eq!(conf.timeout, Duration::from_millis(50));
        assert_eq!(conf.dns.unwrap().nameservers, ["10.0.0.2"]);
    }

    #[test]
    fn defaults() {
        let conf = parse_conf(br#"{"cniVersion":"0.3.1","name":"n"}"#, Command::Add).unwrap();
        assert_eq!(conf.agent_socket, PathBuf::from(proto::DEFAULT_AGENT_SOCKET));
        assert_eq!(conf.del_journal_dir, PathBuf::from(proto::DEFAULT_DEL_JOURNAL_DIR));
        assert_eq!(conf.timeout, Duration::from_millis(DEFAULT_TIMEOUT_MS));
        let status = parse_conf(br#"{"cniVersion":"1.1.0","name":"n"}"#, Command::Status).unwrap();
        assert_eq!(status.timeout, Duration::from_millis(STATUS_TIMEOUT_CAP_MS));
    }

    #[test]
    fn config_rejections() {
        let table: &[(&str, Command, u32)] = &[
            ("", Command::Add, DECODING_FAILURE),
            ("{", Command::Add, DECODING_FAILURE),
            ("[]", Command::Add, DECODING_FAILURE),
            (r#"{"name":"n"}"#, Command::Add, INVALID_NETWORK_CONFIG),
            (r#"{"cniVersion":1,"name":"n"}"#, Command::Add, DECODING_FAILURE),
            (r#"{"cniVersion":"0.2.0","name":"n"}"#, Command::Add, INCOMPATIBLE_VERSION),
            (r#"{"cniVersion":"1.0.0","name":"n"}"#, Command::Gc, INCOMPATIBLE_VERSION),
            (r#"{"cniVersion":"0.3.1","name":"n"}"#, Command::Check, INCOMPATIBLE_VERSION),
            (r#"{"cniVersion":"1.0.0"}"#, Command::Add, INVALID_NETWORK_CONFIG),
            (r#"{"cniVersion":"1.0.0","name":"a b"}"#, Command::Add, INVALID_NETWORK_CONFIG),
            (
                r#"{"cniVersion":"1.0.0","name":"n","mtu":70000}"#,
                Command::Add,
                INVALID_NETWORK_CONFIG,
            ),
            (r#"{"cniVersion":"1.0.0","name":"n","mtu":-1}"#, Command::Add, DECODING_FAILURE),
            (
                r#"{"cniVersion":"1.0.0","name":"n","timeoutMs":0}"#,
                Command::Add,
                INVALID_NETWORK_CONFIG,
            ),
            (r#"{"cniVersion":"1.0.0","name":"n","ipam":{}}"#, Command::Add, UNSUPPORTED_FIELD),
            (
                r#"{"cniVersion":"1.0.0","name":"n","capabilities":{"ips":true}}"#,
                Command::Add,
                UNSUPPORTED_FIELD,
            ),
        ];
        for (input, cmd, code) in table {
            let err = parse_conf(input.as_bytes(), *cmd).unwrap_err();
            assert_eq!(err.code(), *code, "{input}: {err}");
        }
    }

    #[test]
    fn env_rejections() {
        let conf = br#"{"cniVersion":"1.0.0","name":"n"}"#;
        let table: &[(&[(&str, &str)], u32)] = &[
            (&[], INVALID_ENV),
            (&[("CNI_COMMAND", "FROB")], INVALID_ENV),
            (&[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0"), ("CNI_NETNS", "/n")], INVALID_ENV),
            (
                &[
                    ("CNI_COMMAND", "ADD"),
                    ("CNI_CONTAINERID", "../x"),
                    ("CNI_IFNAME", "eth0"),
                    ("CNI_NETNS", "/n"),
                ],
                INVALID_ENV,
            ),
            (&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c"), ("CNI_NETNS", "/n")], INVALID_ENV),
            (
                &[
                    ("CNI_COMMAND", "ADD"),
                    ("CNI_CONTAINERID", "c"),
                    ("CNI_IFNAME", "a/b"),
                    ("CNI_NETNS", "/n"),
                ],
                INVALID_ENV,
            ),
            (
                &[
                    ("CNI_COMMAND", "ADD"),
                    ("CNI_CONTAINERID", "c"),
                    ("CNI_IFNAME", "eth0123456789abc"),
                ],
                INVALID_ENV,
            ),
            (
                &[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c"), ("CNI_IFNAME", "eth0")],
                INVALID_ENV,
            ),
            (
                &[
                    ("CNI_COMMAND", "ADD"),
                    ("CNI_CONTAINERID", "c"),
                    ("CNI_IFNAME", "eth0"),
                    ("CNI_NETNS", "/n"),
                    ("CNI_ARGS", "novalue"),
                ],
                INVALID_ENV,
            ),
        ];
        for (vars, code) in table {
            let err = parse_invocation(&env(vars), conf).unwrap_err();
            assert_eq!(err.code(), *code, "{vars:?}: {err}");
        }
        // DEL tolerates a missing netns.
        let del = [("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c"), ("CNI_IFNAME", "eth0")];
        assert!(parse_invocation(&env(&del), conf).is_ok());
    }

    #[test]
    fn gc_attachments_and_version_requests() {
        let conf = br#"{"cniVersion":"1.1.0","name":"n","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}"#;
        let Invocation::Plugin { conf, .. } =
            parse_invocation(&env(&[("CNI_COMMAND", "GC")]), conf).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            conf.valid_attachments,
            Some(vec![Attachment { container_id: "a".into(), if_name: "eth0".into() }])
        );
        let v = env(&[("CNI_COMMAND", "VERSION")]);
        assert_eq!(parse_invocation(&v, b"").unwrap(), Invocation::Version(None));
        assert_eq!(
            parse_invocation(&v, br#"{"cniVersion":"0.4.0"}"#).unwrap(),
            Invocation::Version(Some("0.4.0".into()))
        );
        assert_eq!(parse_invocation(&v, b"{").unwrap_err().code(), DECODING_FAILURE);
    }

    /// GC acts only on an explicit list: a missing key is an invalid config naming it (never an
    /// empty list, which would release every attachment), an empty list is kept as given, and
    /// the other verbs do not need the key.
    #[test]
    fn gc_needs_the_valid_attachments_key() {
        let err = parse_conf(br#"{"cniVersion":"1.1.0","name":"n"}"#, Command::Gc).unwrap_err();
        assert_eq!(err.code(), INVALID_NETWORK_CONFIG, "{err}");
        assert!(err.to_string().contains("cni.dev/valid-attachments"), "{err}");
        let null = br#"{"cniVersion":"1.1.0","name":"n","cni.dev/valid-attachments":null}"#;
        assert_eq!(parse_conf(null, Command::Gc).unwrap_err().code(), INVALID_NETWORK_CONFIG);
        let empty = br#"{"cniVersion":"1.1.0","name":"n","cni.dev/valid-attachments":[]}"#;
        assert_eq!(parse_conf(empty, Command::Gc).unwrap().valid_attachments, Some(vec![]));
        let add = parse_conf(br#"{"cniVersion":"1.1.0","name":"n"}"#, Command::Add).unwrap();
        assert_eq!(add.valid_attachments, None);
    }

    #[test]
    fn stdin_is_bounded() {
        let big = vec![b' '; MAX_STDIN_BYTES + 10];
        let err = read_stdin(&mut big.as_slice()).unwrap_err();
        assert_eq!(err.code(), DECODING_FAILURE);
        let ok = vec![b' '; MAX_STDIN_BYTES];
        assert_eq!(read_stdin(&mut ok.as_slice()).unwrap().len(), MAX_STDIN_BYTES);
    }
}
