//! The three images as containers, with no daemon: built by `scripts/build-images` (buildah on
//! debootstrap and busybox-static bases), each OCI archive unpacked by umoci into a runtime bundle
//! and run by runc with the command, user, capabilities, read-only root and mounts of the rendered
//! chart (`helm template`), so an image that does not fit its chart fails here.
//!
//! Needs root, helm, and buildah, debootstrap, busybox-static, umoci, runc (scripts/install-deps):
//! a missing tool fails the test, it never skips. The images hold this target dir's debug operator
//! and agent (`cargo test` built them; a release build would cost CI many minutes and change
//! nothing checked here) and the static release CNI plugin. `ENIPOOL_IMAGES_DIR=<dir>` checks
//! archives built beforehand instead, e.g. the release images of `make images` (target/images).

#[path = "common/binaries.rs"]
mod binaries;
#[path = "images/bundle.rs"]
mod bundle;
// Only the rendering is used here; the RBAC helpers serve rbac_audit.
#[allow(dead_code)]
#[path = "common/chart_rbac.rs"]
mod chart_rbac;

use bundle::{Bundle, Run};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const MB: u64 = 1_000_000;
const TIMEOUT: Duration = Duration::from_secs(60);

/// The directory of the three archives, built once per test binary.
fn images() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the image tests need root (debootstrap, buildah's chroot builds, runc): run as root"
        );
        for tool in ["buildah", "debootstrap", "umoci", "runc", "readelf", "tar"] {
            assert!(
                which(tool),
                "{tool} not found: the image tests need buildah, debootstrap, busybox-static, \
                 umoci and runc (scripts/install-deps installs them)"
            );
        }
        if let Some(dir) = std::env::var_os("ENIPOOL_IMAGES_DIR") {
            return PathBuf::from(dir);
        }
        let build = "cargo build -p enipool-operator -p enipool-agent";
        let op = binaries::fresh_binary("enipool-operator", &["operator/src", "crds/src"], build);
        let ag = binaries::fresh_binary("enipool-agent", &["node-agent/src", "crds/src"], build);
        let bin_dir = op.parent().unwrap().to_path_buf();
        assert_eq!(ag.parent().unwrap(), bin_dir);
        // Apart from `make images`' target/images, whose release archives this must not replace.
        let out = bin_dir.parent().unwrap().join("images-test");
        let started = Instant::now();
        let status = Command::new(chart_rbac::root().join("scripts/build-images"))
            .arg("--binaries")
            .arg(&bin_dir)
            .arg("--out")
            .arg(&out)
            .status()
            .expect("running scripts/build-images");
        assert!(status.success(), "scripts/build-images failed ({status})");
        eprintln!("images built in {:.0?}", started.elapsed());
        out
    })
}

fn which(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn unpack(name: &str, max_mb: u64) -> Bundle {
    let b = Bundle::unpack(&images().join(format!("enipool-{name}.oci.tar")));
    let mb = b.archive_bytes as f64 / MB as f64;
    eprintln!("enipool-{name}: {mb:.1} MB (OCI archive, compressed layers)");
    assert!(b.archive_bytes < max_mb * MB, "enipool-{name} is {mb:.1} MB, over {max_mb} MB");
    // The build stamps the commit it built from.
    let rev = b.image["Labels"]["org.opencontainers.image.revision"].as_str().unwrap_or("");
    assert!(
        rev.len() == 40 && rev.bytes().all(|c| c.is_ascii_hexdigit()),
        "revision label {rev:?}"
    );
    b
}

/// The rendered chart's objects.
fn chart() -> &'static [Value] {
    static DOCS: OnceLock<Vec<Value>> = OnceLock::new();
    DOCS.get_or_init(|| {
        chart_rbac::render("enipool", "kube-system", "default-values.yaml").expect("helm template")
    })
}

fn workload(kind: &str) -> &'static Value {
    chart().iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("no {kind} in the chart"))
}

fn container<'a>(pod: &'a Value, list: &str, name: &str) -> &'a Value {
    pod["spec"]["template"]["spec"][list]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no {list} {name} in the chart"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().into_iter().flatten().map(|s| s.as_str().unwrap().to_string()).collect()
}

/// The capabilities a container's securityContext leaves it, runc-style.
fn caps(c: &Value) -> Vec<&'static str> {
    let sc = &c["securityContext"]["capabilities"];
    assert_eq!(strings(&sc["drop"]), ["ALL"], "{}: drops every capability", c["name"]);
    strings(&sc["add"])
        .iter()
        .map(|a| match a.as_str() {
            "NET_ADMIN" => "CAP_NET_ADMIN",
            "SYS_ADMIN" => "CAP_SYS_ADMIN",
            other => panic!("capability {other} not mapped"),
        })
        .collect()
}

fn exposed(image: &Value) -> Vec<String> {
    let mut ports: Vec<String> =
        image["ExposedPorts"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
    ports.sort();
    ports
}

#[test]
fn operator_image_runs_as_the_chart_runs_it() {
    let b = unpack("operator", 300);
    let deploy = workload("Deployment");
    let pod_sc = &deploy["spec"]["template"]["spec"]["securityContext"];
    let c = container(deploy, "containers", "operator");
    let uid = pod_sc["runAsUser"].as_u64().expect("the chart sets runAsUser") as u32;
    assert_eq!(b.image["User"], format!("{uid}:{uid}"), "the image's user is the chart's");
    assert_eq!(strings(&b.image["Entrypoint"]), ["/usr/local/bin/enipool-operator"]);
    let port = c["ports"][0]["containerPort"].as_u64().unwrap();
    assert_eq!(exposed(&b.image), [format!("{port}/tcp")]);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    let as_chart = |args: &[&str]| Run {
        args: Some(args.iter().map(|s| s.to_string()).collect()),
        read_only_root: true,
        caps: caps(c),
        ..Run::default()
    };

    let help = b.run(&as_chart(&["--help"]), TIMEOUT);
    assert_eq!(help.code, Some(0), "--help: {}", help.stderr);
    assert!(help.stdout.contains("--cluster-name"), "{}", help.stdout);
    let version = b.run(&as_chart(&["--version"]), TIMEOUT);
    assert_eq!(version.code, Some(0), "--version: {}", version.stderr);
    assert!(version.stdout.contains(env!("CARGO_PKG_VERSION")), "{}", version.stdout);

    // The chart's own arguments where there is no AWS region and no API server: a clear error
    // naming what is missing and an exit, no panic; first the region (IMDS is unreachable here),
    // then, with the region set as IRSA or Pod Identity would, the Kubernetes API.
    let args = strings(&c["args"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let region = ("AWS_REGION".to_string(), "eu-west-1".to_string());
    for (env, missing) in [(vec![], "no AWS region"), (vec![region], "Kubernetes API")] {
        let run = b.run(&Run { env, ..as_chart(&args) }, TIMEOUT);
        let all = format!("{}{}", run.stdout, run.stderr);
        assert!(run.code.is_some_and(|c| c != 0), "exit {:?}\n{all}", run.code);
        assert!(!all.contains("panicked"), "{all}");
        assert!(all.contains(missing), "the error names what is missing ({missing}): {all}");
    }
}

#[test]
fn agent_image_has_nft_and_runs_sysctl_init() {
    let b = unpack("agent", 300);
    let ds = workload("DaemonSet");
    let agent = container(ds, "containers", "agent");
    assert_eq!(strings(&b.image["Entrypoint"]), ["/usr/local/bin/enipool-agent"]);
    let metrics = agent["ports"][0]["containerPort"].as_u64().unwrap();
    let args = strings(&agent["args"]);
    let intro = args
        .iter()
        .find_map(|a| a.strip_prefix("--introspection-addr="))
        .and_then(|a| a.rsplit_once(':'))
        .map(|(_, p)| p.to_string())
        .expect("--introspection-addr in the chart");
    let mut want = vec![format!("{metrics}/tcp"), format!("{intro}/tcp")];
    want.sort();
    assert_eq!(exposed(&b.image), want, "EXPOSE matches the chart's ports");

    // `nft` is what the agent execs; with the agent's capabilities it reads the (empty) ruleset
    // of the container's own network namespace.
    let nft = |args: &[&str]| Run {
        command: Some(args.iter().map(|s| s.to_string()).collect()),
        read_only_root: true,
        caps: caps(agent),
        ..Run::default()
    };
    let v = b.run(&nft(&["nft", "--version"]), TIMEOUT);
    assert_eq!(v.code, Some(0), "nft --version: {}", v.stderr);
    assert!(v.stdout.starts_with("nftables v"), "{}", v.stdout);
    let l = b.run(&nft(&["nft", "list", "ruleset"]), TIMEOUT);
    assert_eq!(l.code, Some(0), "nft list ruleset: {}", l.stderr);
    // `enipool-agent support`, run with kubectl exec in this image, gathers `ip` output.
    let ip = b.run(&nft(&["ip", "rule"]), TIMEOUT);
    assert_eq!(ip.code, Some(0), "ip rule: {}", ip.stderr);
    assert!(ip.stdout.contains("lookup main"), "{}", ip.stdout);

    // The agent's Kubernetes client (kube with rustls) loads the system's CA roots when it is
    // built, whatever the API server's scheme or CA: without a bundle the agent cannot start.
    let ca = b.run(&nft(&["test", "-s", "/etc/ssl/certs/ca-certificates.crt"]), TIMEOUT);
    assert_eq!(ca.code, Some(0), "no CA bundle in the agent image: {}", ca.stderr);

    let help = b.run(&Run { args: Some(vec!["--help".into()]), ..nft(&[]) }, TIMEOUT);
    assert_eq!(help.code, Some(0), "--help: {}", help.stderr);

    // The chart's privileged init container, in the container's own network namespace (the
    // sysctl it sets is per namespace, so the host's stays untouched).
    let init = container(ds, "initContainers", "sysctl-init");
    assert_eq!(init["securityContext"]["privileged"], true);
    let run = b.run(
        &Run {
            args: Some(strings(&init["args"])),
            privileged: true,
            read_only_root: init["securityContext"]["readOnlyRootFilesystem"] == true,
            ..Run::default()
        },
        TIMEOUT,
    );
    assert_eq!(run.code, Some(0), "sysctl-init: {}{}", run.stdout, run.stderr);
    assert!(format!("{}{}", run.stdout, run.stderr).contains("ip_forward"), "{}", run.stderr);
}

#[test]
fn cni_image_installs_a_static_plugin_on_the_host() {
    let b = unpack("cni", 10);
    let ds = workload("DaemonSet");
    let init = container(ds, "initContainers", "install-cni");
    let command = strings(&init["command"]);
    assert_eq!(strings(&b.image["Entrypoint"]), command[..1], "the chart runs the image's shell");
    let mount = |volume: &str| {
        init["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == volume)
            .and_then(|m| m["mountPath"].as_str())
            .unwrap_or_else(|| panic!("install-cni mounts no {volume}"))
            .to_string()
    };
    // The hostPath of the node's CNI bin dir, and the ConfigMap holding the script.
    let host = tempfile::tempdir().unwrap();
    let host_bin = host.path().join("opt/cni/bin");
    let script_dir = host.path().join("install");
    std::fs::create_dir_all(&host_bin).unwrap();
    std::fs::create_dir_all(&script_dir).unwrap();
    let cm = chart()
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["data"]["install-cni.sh"].is_string())
        .expect("the install-cni.sh ConfigMap");
    std::fs::write(
        script_dir.join("install-cni.sh"),
        cm["data"]["install-cni.sh"].as_str().unwrap(),
    )
    .unwrap();
    let env: Vec<(String, String)> = init["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().into(), e["value"].as_str().unwrap_or("").into()))
        .collect();
    let required: Vec<String> = env
        .iter()
        .find(|(k, _)| k == "REQUIRE")
        .map(|(_, v)| v.split_whitespace().map(String::from).collect())
        .unwrap_or_default();
    let sc = &init["securityContext"];
    let install = Run {
        command: Some(command),
        env,
        uid: Some(sc["runAsUser"].as_u64().unwrap() as u32),
        read_only_root: sc["readOnlyRootFilesystem"] == true,
        caps: caps(init),
        binds: vec![
            (host_bin.clone(), mount("cni-bin-dir"), false),
            (script_dir, mount("cni-install"), true),
        ],
        ..Run::default()
    };
    // A node without the plugins the conflist chains: refused, naming the missing one.
    if let Some(first) = required.first() {
        let run = b.run(&install, TIMEOUT);
        assert_eq!(run.code, Some(1), "install-cni without {first}: {}", run.stdout);
        assert!(run.stderr.contains(&format!("chains '{first}'")), "{}", run.stderr);
        assert!(!host_bin.join("enipool-cni").exists(), "nothing installed on refusal");
    }
    // The node's standard plugins, as the script sees them: executables of those names.
    for p in &required {
        std::fs::write(host_bin.join(p), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(host_bin.join(p), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let run = b.run(&install, TIMEOUT);
    assert_eq!(run.code, Some(0), "install-cni: {}{}", run.stdout, run.stderr);

    // On the host: the plugin, static (it runs whatever the node's libc), answering VERSION.
    let plugin = host_bin.join("enipool-cni");
    let elf = Command::new("readelf").arg("-lW").arg(&plugin).output().unwrap();
    assert!(elf.status.success(), "{} is no ELF binary", plugin.display());
    assert!(
        !String::from_utf8_lossy(&elf.stdout).contains("program interpreter"),
        "the installed plugin is dynamically linked"
    );
    let out = Command::new(&plugin).env_clear().env("CNI_COMMAND", "VERSION").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("VERSION answers JSON");
    assert!(strings(&v["supportedVersions"]).contains(&"1.0.0".to_string()), "{v}");
    let mut files: Vec<String> = std::fs::read_dir(&host_bin)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut want: Vec<String> = required.iter().cloned().chain(["enipool-cni".into()]).collect();
    want.sort();
    assert_eq!(files, want, "the install adds the plugin and leaves no temporary file");
    // Nothing else in the image than busybox and the plugin.
    let root = b.rootfs();
    assert!(root.join("opt/enipool/bin/enipool-cni").is_file() && root.join("busybox/sh").exists());
}
