//! `enipool-cni`: exec'd by the container runtime for every CNI call; see [`enipool_cni::plugin`].
#![forbid(unsafe_code)]

fn main() {
    let var = |k: &str| std::env::var(k).ok();
    let code =
        enipool_cni::plugin::run(&var, &mut std::io::stdin().lock(), &mut std::io::stdout().lock());
    std::process::exit(code);
}
