//! An image's OCI archive as a runc bundle: the archive unpacked by umoci, its image config read
//! from the layout, and runs of the container with the process and mounts a test gives.

use serde_json::{json, Value};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Every capability, for the privileged runs (a privileged Kubernetes container has them all).
const ALL_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_NET_ADMIN",
    "CAP_SYS_ADMIN",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_MKNOD",
    "CAP_AUDIT_WRITE",
];

pub struct Bundle {
    dir: tempfile::TempDir,
    /// umoci's runtime config, derived from the image config (user, entrypoint, env).
    base: Value,
    /// The image config (`config` of the OCI image configuration).
    pub image: Value,
    pub archive_bytes: u64,
}

/// How one container runs; `None`/empty keeps the image's own setting.
#[derive(Default)]
pub struct Run {
    /// Replaces the whole command line (entrypoint included), as Kubernetes' `command` does.
    pub command: Option<Vec<String>>,
    /// Appended to the image's entrypoint, as Kubernetes' `args` (without `command`) are.
    pub args: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    pub uid: Option<u32>,
    pub read_only_root: bool,
    /// Capabilities added to none (Kubernetes' `drop: [ALL]` + `add`), or all for `privileged`.
    pub caps: Vec<&'static str>,
    pub privileged: bool,
    /// (host path, container path, read-only).
    pub binds: Vec<(PathBuf, String, bool)>,
}

pub struct Exit {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Bundle {
    pub fn unpack(archive: &Path) -> Bundle {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("layout");
        std::fs::create_dir(&layout).unwrap();
        sh(Command::new("tar").arg("-xf").arg(archive).arg("-C").arg(&layout));
        let index = read_json(&layout.join("index.json"));
        let manifest = &index["manifests"][0];
        let name = manifest["annotations"]["org.opencontainers.image.ref.name"]
            .as_str()
            .expect("the archive names its image")
            .to_string();
        let manifest = read_json(&blob(&layout, &manifest["digest"]));
        let config = read_json(&blob(&layout, &manifest["config"]["digest"]));
        assert_eq!(config["os"], "linux", "{name}");
        let image = config["config"].clone();
        let bundle = dir.path().join("bundle");
        sh(Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:{name}", layout.display()))
            .arg(&bundle));
        let base = read_json(&bundle.join("config.json"));
        let archive_bytes = std::fs::metadata(archive).unwrap().len();
        Bundle { dir, base, image, archive_bytes }
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("bundle/rootfs")
    }

    /// Runs the container to its end; killed (and the test failed) after `timeout`.
    pub fn run(&self, run: &Run, timeout: Duration) -> Exit {
        let mut spec = self.base.clone();
        let p = &mut spec["process"];
        p["terminal"] = json!(false);
        if let Some(cmd) = &run.command {
            p["args"] = json!(cmd);
        }
        if let Some(args) = &run.args {
            let entry: Vec<Value> =
                self.image["Entrypoint"].as_array().cloned().unwrap_or_default();
            p["args"] =
                json!(entry.into_iter().chain(args.iter().map(|a| json!(a))).collect::<Vec<_>>());
        }
        let env = p["env"].as_array_mut().unwrap();
        env.extend(run.env.iter().map(|(k, v)| json!(format!("{k}={v}"))));
        if let Some(uid) = run.uid {
            p["user"] = json!({"uid": uid, "gid": uid});
        }
        let caps: Vec<&str> = if run.privileged { ALL_CAPS.to_vec() } else { run.caps.clone() };
        for set in ["bounding", "effective", "permitted"] {
            p["capabilities"][set] = json!(caps);
        }
        p["capabilities"]["inheritable"] = json!([]);
        p["capabilities"]["ambient"] = json!([]);
        spec["root"]["readonly"] = json!(run.read_only_root);
        if run.privileged {
            // A privileged container sees /proc/sys writable and nothing masked.
            spec["linux"]["readonlyPaths"] = json!([]);
            spec["linux"]["maskedPaths"] = json!([]);
        }
        let mounts = spec["mounts"].as_array_mut().unwrap();
        for (host, at, ro) in &run.binds {
            let mut options = vec!["rbind"];
            options.push(if *ro { "ro" } else { "rw" });
            mounts.push(
                json!({"destination": at, "type": "bind", "source": host, "options": options}),
            );
        }
        let bundle = self.dir.path().join("bundle");
        std::fs::write(bundle.join("config.json"), spec.to_string()).unwrap();

        let state = self.dir.path().join("runc-state");
        let id = format!("enipool-image-test-{}", std::process::id());
        let runc = |args: &[&str]| {
            let mut c = Command::new("runc");
            c.arg("--root").arg(&state).args(args);
            c
        };
        let mut child = runc(&["run", "--bundle", bundle.to_str().unwrap(), &id])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("runc");
        // Both pipes drained on their own threads: a full pipe would block the container.
        let drain = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = r.read_to_string(&mut s);
                s
            })
        };
        let out = drain(Box::new(child.stdout.take().unwrap()));
        let err = drain(Box::new(child.stderr.take().unwrap()));
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if Instant::now() > deadline {
                let _ = runc(&["kill", &id, "KILL"]).status();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
        let _ = runc(&["delete", "--force", &id]).output();
        let Some(status) = status else {
            panic!("container did not exit within {timeout:?}\nstdout: {stdout}\nstderr: {stderr}")
        };
        Exit { code: status.code(), stdout, stderr }
    }
}

fn blob(layout: &Path, digest: &Value) -> PathBuf {
    let d = digest.as_str().expect("digest");
    let (alg, hex) = d.split_once(':').expect("algorithm:hex");
    layout.join("blobs").join(alg).join(hex)
}

fn read_json(p: &Path) -> Value {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn sh(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}
