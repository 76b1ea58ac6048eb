//! The collectors: each adds members to the bundle or records why it could not.

use super::archive::Bundle;
use super::redact::is_credential_file;
use super::Options;
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// At most this much of a log (its end) goes into the bundle.
const LOG_TAIL_BYTES: u64 = 4 << 20;
/// Config and journal files larger than this are not CNI configs or journal entries.
const SMALL_FILE_BYTES: u64 = 1 << 20;
/// The allocation store is copied up to this size.
const STORE_BYTES: u64 = 64 << 20;
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// The sysctls that decide whether pod traffic flows (per-link `rp_filter` is added for every
/// link).
const SYSCTLS: &[&str] = &[
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/rp_filter",
    "net/ipv4/conf/default/rp_filter",
    "net/ipv4/conf/all/src_valid_mark",
    "net/ipv4/conf/all/arp_ignore",
    "net/ipv4/conf/all/arp_announce",
    "net/ipv4/ip_local_port_range",
    "net/ipv4/neigh/default/gc_thresh1",
    "net/ipv4/neigh/default/gc_thresh2",
    "net/ipv4/neigh/default/gc_thresh3",
    "net/netfilter/nf_conntrack_max",
    "net/netfilter/nf_conntrack_count",
];

/// `GET path` over HTTP/1.1 without keep-alive: (status line, body).
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(String, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)?;
    s.set_read_timeout(Some(HTTP_TIMEOUT))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "no end of HTTP headers")
    })?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head.lines().next().unwrap_or_default().to_string();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "chunked body"));
    }
    Ok((status, raw[split + 4..].to_vec()))
}

/// A wildcard listen address is reached on loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip().is_unspecified() {
        true => SocketAddr::from(([127, 0, 0, 1], addr.port())),
        false => addr,
    }
}

/// The agent's introspection (`/v1/allocations`, `/v1/enis`, its recent log lines) and health
/// endpoints.
pub fn agent_endpoints(b: &mut Bundle, opts: &Options) {
    let pretty = |body: &[u8]| match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default() + "\n",
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    let gets = [
        (opts.introspection_addr, "/v1/allocations", "agent/allocations.json", true),
        (opts.introspection_addr, "/v1/enis", "agent/enis.json", true),
        (opts.introspection_addr, "/v1/logs", "agent/recent.log", false),
        (opts.metrics_addr, "/readyz", "agent/readyz.txt", false),
        (opts.metrics_addr, "/metrics", "agent/metrics.txt", false),
    ];
    for (addr, path, name, json) in gets {
        let addr = reachable(addr);
        match http_get(addr, path) {
            Ok((status, body)) if status.contains(" 200 ") || !json => {
                let text =
                    if json { pretty(&body) } else { String::from_utf8_lossy(&body).into_owned() };
                let text = if json { text } else { format!("# GET {path}: {status}\n{text}") };
                b.text(name, &text);
            }
            Ok((status, _)) => b.miss(name, format!("GET http://{addr}{path}: {status}")),
            Err(e) => b.miss(name, format!("GET http://{addr}{path}: {e} (is the agent running?)")),
        }
    }
}

fn sha256_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let (mut n, mut buf) = (0u64, vec![0u8; 64 << 10]);
    loop {
        match f.read(&mut buf)? {
            0 => return Ok((n, hex::encode(h.finalize()))),
            k => {
                h.update(&buf[..k]);
                n += k as u64;
            }
        }
    }
}

/// This binary's version and commit; the shim binary on the node by size and digest.
pub fn versions(b: &mut Bundle, opts: &Options) {
    let mut out = format!(
        "enipool-agent {} (commit {})\nshim protocol {}\n",
        env!("CARGO_PKG_VERSION"),
        crate::metrics::COMMIT,
        enipool_cni::proto::PROTOCOL_VERSION,
    );
    let shim = opts.cni_bin_dir.join("enipool-cni");
    match sha256_file(&shim) {
        Ok((size, digest)) => {
            out.push_str(&format!("{}: {size} bytes, sha256 {digest}\n", shim.display()))
        }
        Err(e) => b.miss("versions.txt: shim binary", format!("{}: {e}", shim.display())),
    }
    b.text("versions.txt", &out);
}

/// The allocation store file (the agent's durable state) and a listing of the state dir.
pub fn store_files(b: &mut Bundle, opts: &Options) {
    let mut listing = String::new();
    match std::fs::read_dir(&opts.state_dir) {
        Ok(rd) => {
            let mut entries: Vec<_> = rd.flatten().collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                listing.push_str(&format!("{len:>10}  {}\n", e.file_name().to_string_lossy()));
            }
            b.text("agent/state-dir.txt", &listing);
        }
        Err(e) => b.miss("agent/state-dir.txt", format!("{}: {e}", opts.state_dir.display())),
    }
    let store = opts.state_dir.join("allocations.redb");
    match read_limited(&store, STORE_BYTES) {
        // Pod names, container ids and addresses only: nothing to redact, and binary.
        Ok(bytes) => b.raw("agent/allocations.redb", bytes),
        Err(e) => b.miss("agent/allocations.redb", format!("{}: {e}", store.display())),
    }
}

fn read_limited(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    if len > max {
        return Err(std::io::Error::other(format!("{len} bytes, more than the {max} collected")));
    }
    let mut out = Vec::new();
    f.take(max).read_to_end(&mut out)?;
    Ok(out)
}

/// The last [`LOG_TAIL_BYTES`] of a log.
fn read_tail(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))?;
    let mut out = Vec::new();
    f.read_to_end(&mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn is_cni_config(name: &str) -> bool {
    let name = name.strip_suffix(".enipool-bak").unwrap_or(name);
    [".conf", ".conflist", ".json"].iter().any(|e| name.ends_with(e))
}

/// Every CNI config in the config dir (other CNIs' too: which one the runtime picks matters),
/// and the shim's log where the enipool config names one.
pub fn cni_conf(b: &mut Bundle, opts: &Options) {
    let dir = &opts.cni_conf_dir;
    let mut logs: Vec<PathBuf> = opts.shim_log.iter().cloned().collect();
    match std::fs::read_dir(dir) {
        Ok(rd) => {
            let mut entries: Vec<_> = rd.flatten().collect();
            entries.sort_by_key(|e| e.file_name());
            if entries.is_empty() {
                b.miss("cni/net.d", format!("{} is empty", dir.display()));
            }
            for e in entries {
                let name = e.file_name().to_string_lossy().into_owned();
                let member = format!("cni/net.d/{name}");
                if is_credential_file(&name) {
                    b.miss(&member, "not read: the name suggests credentials");
                    continue;
                }
                if !e.file_type().is_ok_and(|t| t.is_file()) || !is_cni_config(&name) {
                    b.miss(&member, "not read: not a CNI config file");
                    continue;
                }
                match read_limited(&e.path(), SMALL_FILE_BYTES) {
                    Ok(bytes) => {
                        logs.extend(shim_log_files(&bytes));
                        b.text(&member, &String::from_utf8_lossy(&bytes));
                    }
                    Err(err) => b.miss(&member, err),
                }
            }
        }
        Err(e) => b.miss("cni/net.d", format!("{}: {e}", dir.display())),
    }
    logs.sort();
    logs.dedup();
    if logs.is_empty() {
        b.miss(
            "cni/shim.log",
            "no enipool-cni config sets logFile: the shim logs to the container runtime's log",
        );
    }
    for (i, log) in logs.iter().enumerate() {
        let member = if i == 0 { "cni/shim.log".to_string() } else { format!("cni/shim-{i}.log") };
        match read_tail(log) {
            Ok(text) => b.text(&member, &format!("# {}\n{text}", log.display())),
            Err(e) => b.miss(&member, format!("{}: {e}", log.display())),
        }
    }
}

/// `logFile` of every enipool-cni plugin in a config (a conflist or a single-plugin conf).
fn shim_log_files(config: &[u8]) -> Vec<PathBuf> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(config) else { return vec![] };
    let plugins =
        v.get("plugins").and_then(|p| p.as_array()).cloned().unwrap_or_else(|| vec![v.clone()]);
    plugins
        .iter()
        .filter(|p| p.get("type").and_then(|t| t.as_str()) == Some("enipool-cni"))
        .filter_map(|p| p.get("logFile").and_then(|l| l.as_str()))
        .filter(|l| !l.is_empty())
        .map(PathBuf::from)
        .collect()
}

/// The shim's DEL journal: releases recorded while the agent could not be reached.
pub fn del_journal(b: &mut Bundle, opts: &Options) {
    let dir = &opts.del_journal_dir;
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        // No journal dir: the shim never had to record a DEL.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            b.text(
                "cni/del-journal/index.txt",
                &format!("{}: absent (no entry ever recorded)\n", dir.display()),
            );
            return;
        }
        Err(e) => return b.miss("cni/del-journal", format!("{}: {e}", dir.display())),
    };
    let mut entries: Vec<_> = rd.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    let mut index = format!("{}: {} entries\n", dir.display(), entries.len());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        index.push_str(&format!("{name}\n"));
        match read_limited(&e.path(), SMALL_FILE_BYTES) {
            Ok(bytes) => {
                b.text(&format!("cni/del-journal/{name}"), &String::from_utf8_lossy(&bytes))
            }
            Err(err) => b.miss(&format!("cni/del-journal/{name}"), err),
        }
    }
    b.text("cni/del-journal/index.txt", &index);
}

/// Rules, routes, links, neighbours, addresses, enipool's nftables table and the sysctls, read
/// from a thread in `netns` (the agent's `--netns`; default: this process's own).
pub fn host(b: &mut Bundle, netns: Option<&Path>) {
    let netns = netns.map(Path::to_path_buf);
    let gathered = std::thread::spawn(move || {
        let mut b = Bundle::default();
        if let Some(p) = &netns {
            let entered = std::fs::File::open(p).map_err(|e| e.to_string()).and_then(|f| {
                nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| e.to_string())
            });
            if let Err(e) = entered {
                b.miss("host", format!("enter netns {}: {e}", p.display()));
                return b;
            }
        }
        let commands: &[(&str, &[&str])] = &[
            ("host/ip-rule.txt", &["ip", "rule", "show"]),
            ("host/ip-route-all.txt", &["ip", "route", "show", "table", "all"]),
            ("host/ip-link.txt", &["ip", "-d", "link", "show"]),
            ("host/ip-addr.txt", &["ip", "addr", "show"]),
            ("host/ip-neigh.txt", &["ip", "neigh", "show"]),
            ("host/nft-table-enipool.txt", &["nft", "list", "table", "ip", "enipool"]),
        ];
        for (name, argv) in commands {
            command(&mut b, name, argv);
        }
        b.text("host/sysctls.txt", &sysctls());
        b
    })
    .join();
    match gathered {
        Ok(g) => b.absorb(g),
        Err(_) => b.miss("host", "the collecting thread panicked"),
    }
}

fn command(b: &mut Bundle, name: &str, argv: &[&str]) {
    let out = Command::new(argv[0]).args(&argv[1..]).stdin(Stdio::null()).output();
    let shown = argv.join(" ");
    match out {
        Ok(o) if o.status.success() => {
            b.text(name, &format!("# {shown}\n{}", String::from_utf8_lossy(&o.stdout)))
        }
        Ok(o) => b.miss(
            name,
            format!("{shown}: {}: {}", o.status, String::from_utf8_lossy(&o.stderr).trim()),
        ),
        Err(e) => b.miss(name, format!("{shown}: {e}")),
    }
}

/// `name = value` for each of [`SYSCTLS`] and every link's `rp_filter`, read through `/proc/sys`
/// (which answers for the reading thread's netns).
fn sysctls() -> String {
    let mut keys: Vec<String> = SYSCTLS.iter().map(|s| s.to_string()).collect();
    if let Ok(rd) = std::fs::read_dir("/proc/sys/net/ipv4/conf") {
        let mut links: Vec<String> =
            rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        links.sort();
        keys.extend(
            links
                .into_iter()
                .filter(|l| l != "all" && l != "default")
                .map(|l| format!("net/ipv4/conf/{l}/rp_filter")),
        );
    }
    let mut out = String::new();
    for k in keys {
        let name = k.replace('/', ".");
        match std::fs::read_to_string(Path::new("/proc/sys").join(&k)) {
            Ok(v) => out.push_str(&format!("{name} = {}\n", v.trim().replace('\t', " "))),
            Err(e) => out.push_str(&format!("{name}: unreadable ({e})\n")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shim_log_is_found_in_the_enipool_plugin_only() {
        let conflist = br#"{"cniVersion":"1.0.0","name":"enipool","plugins":[
            {"type":"enipool-cni","logFile":"/var/log/enipool-cni.log"},
            {"type":"portmap","logFile":"/var/log/other.log"}]}"#;
        assert_eq!(shim_log_files(conflist), [PathBuf::from("/var/log/enipool-cni.log")]);
        let single = br#"{"cniVersion":"1.0.0","name":"x","type":"enipool-cni","logFile":"/l"}"#;
        assert_eq!(shim_log_files(single), [PathBuf::from("/l")]);
        assert!(shim_log_files(b"not json").is_empty());
    }

    #[test]
    fn only_cni_config_files_are_read() {
        for n in
            ["05-enipool.conflist", "10-aws.conflist.enipool-bak", "99-loopback.conf", "x.json"]
        {
            assert!(is_cni_config(n), "{n}");
        }
        for n in ["README", "multus.d", "bundle.tgz"] {
            assert!(!is_cni_config(n), "{n}");
        }
    }
}
