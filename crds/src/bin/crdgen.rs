//! Writes the CRD manifests into a directory (default: this crate's folder, i.e. `crds/`).
//!
//! Usage: `enipool-crdgen [DIR]`, or `enipool-crdgen --check [DIR]` to fail when files differ.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let check = args.first().is_some_and(|a| a == "--check");
    if check {
        args.remove(0);
    }
    let dir = args
        .first()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let files = match enipool_crds::generate::rendered() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("enipool-crdgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stale = false;
    for (name, yaml) in files {
        let path = dir.join(name);
        if check {
            if std::fs::read_to_string(&path).ok().as_deref() != Some(yaml.as_str()) {
                eprintln!("enipool-crdgen: {} is out of date; run enipool-crdgen", path.display());
                stale = true;
            }
        } else if let Err(e) = std::fs::write(&path, yaml) {
            eprintln!("enipool-crdgen: writing {}: {e}", path.display());
            return ExitCode::FAILURE;
        } else {
            eprintln!("wrote {}", path.display());
        }
    }
    if stale {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
