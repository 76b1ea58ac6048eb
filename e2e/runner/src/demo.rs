//! `enipool-e2e demo`: the whole of enipool on this machine. Brings up a small VPC with two nodes,
//! runs a handful of pods, shows `kubectl get enipools` (and `-o wide`), proves pod-to-pod and
//! pod-to-internet traffic with pings, then stays up until Ctrl-C and cleans everything up.
//! With `--kubeconfig` the Kubernetes side is that cluster's API (see `cluster::external`).

use super::scenarios::{eni_of, pool_ready};
use super::{init_logging, runtime, Target};
use anyhow::{bail, Context, Result};
use cluster::{wait, Cluster, Spec};
use std::net::IpAddr;
use std::process::ExitCode;

/// Entry point of the `demo` subcommand.
pub fn main(target: &Target, ipv6: bool) -> ExitCode {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "enipool-e2e demo: must run as root (it creates network namespaces, veths and nftables \
             tables); run: sudo scripts/demo"
        );
        return ExitCode::FAILURE;
    }
    if let Some(why) = target.real_ec2() {
        eprintln!(
            "enipool-e2e demo: the demo's nodes are network namespaces of the EC2 simulator, not \
             real EC2 ({why}); drop --ec2-endpoint and unset AWS_PROFILE/AWS_REGION/\
             AWS_DEFAULT_REGION (--kubeconfig alone runs it against a real cluster's Kubernetes API)"
        );
        return ExitCode::FAILURE;
    }
    if ipv6 && target.runtime == cluster::Runtime::Containerd {
        eprintln!(
            "enipool-e2e demo --ipv6: the platform reads IPv6 pods' addresses from the libcni \
             runtime only; drop --runtime containerd"
        );
        return ExitCode::FAILURE;
    }
    init_logging();
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("enipool-e2e demo: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let r = rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let stop = async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        };
        demo(target, ipv6, stop).await
    });
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("enipool-e2e demo failed: {e:#}");
            eprintln!(
                "Everything it created has been removed. If a step above says what is missing, fix \
                 that and run `sudo scripts/demo` again; set ENIPOOL_E2E_LOG=info for more detail."
            );
            ExitCode::FAILURE
        }
    }
}

async fn demo(
    target: &Target,
    ipv6: bool,
    stop: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let family = if ipv6 { "an IPv6 " } else { "a " };
    eprintln!(
        "enipool demo: bringing up {family}VPC with two nodes on this machine (takes a minute)..."
    );
    let mut spec = Spec::new("demo", 2);
    if ipv6 {
        spec.ip_family = enipool_crds::IpFamily::IPv6;
    }
    spec.progress = true;
    spec.report_on_drop = false;
    spec.policy = serde_json::from_value(serde_json::json!({
        "mode": "SecondaryIP",
        "sizing": {"warmIPs": 3, "batch": 1},
        "release": {"enabled": true, "delaySeconds": 60},
        "cooldownSeconds": 5,
    }))?;
    tokio::pin!(stop);
    let up = Cluster::up(target, spec);
    let c = tokio::select! {
        c = up => c?,
        _ = &mut stop => bail!("interrupted during start-up"),
    };
    let body = async {
        show(&c).await?;
        c.step("all set");
        println!();
        println!("enipool is running. Point kubectl at it from another terminal:");
        println!("    export KUBECONFIG={}", c.kube.kubeconfig.display());
        println!(
            "    kubectl get enipools -o wide; kubectl get enipoolpolicies; kubectl get pods -n {} -o wide",
            c.pod_namespace()
        );
        println!("Pod network namespaces: ip netns list | grep {}-p-", c.fabric().prefix());
        println!("Press Ctrl-C to stop; everything is cleaned up on exit.");
        Ok::<(), anyhow::Error>(())
    };
    let r = tokio::select! {
        r = body => r,
        _ = &mut stop => Err(anyhow::anyhow!("interrupted")),
    };
    if r.is_ok() {
        stop.await;
    }
    eprintln!("\n==> stopping: operator, agents, network namespaces, temp files");
    let r = c.finish(r).await;
    if r.is_ok() {
        eprintln!("==> cleaned up, nothing left behind");
    }
    r
}

async fn show(c: &Cluster) -> Result<()> {
    let nodes = c.nodes();
    c.step("waiting for the operator to make both ENIPools Ready (ENIs and warm addresses)");
    for n in &nodes {
        pool_ready(c, &n.name).await?;
    }
    let path = match c.spec.runtime {
        cluster::Runtime::Libcni => "kubelet -> libcni -> enipool-cni",
        cluster::Runtime::Containerd => "kubelet -> CRI -> containerd -> enipool-cni",
    };
    c.step(&format!("running pods: web-0..2 on the first node, api-0..2 on the second ({path})"));
    let mut pods = Vec::new();
    for (prefix, n) in [("web", &nodes[0]), ("api", &nodes[1])] {
        for i in 0..3 {
            let name = format!("{prefix}-{i}");
            wait::poll(
                &format!("pod {name} to get an address"),
                super::scenarios::SETTLE,
                || async {
                    if c.pod(&name).is_err() {
                        c.create_pod(&name, &n.name).await?;
                    }
                    c.start_sandbox(&name).await.map(drop)
                },
            )
            .await?;
            let p = c.pod(&name)?;
            let pool = c.pool(&n.name).await?;
            let eni = match p.pod_ip()? {
                IpAddr::V4(ip) => eni_of(&pool, ip)
                    .map(|e| format!("{} (device {})", e.id, e.device_index))
                    .unwrap_or_else(|| "?".into()),
                IpAddr::V6(_) => (pool.status.iter().flat_map(|s| &s.enis))
                    .find(|e| !e.ipv6_prefixes.is_empty())
                    .map(|e| format!("{} (its /80 {})", e.id, e.ipv6_prefixes.join(", ")))
                    .unwrap_or_else(|| "?".into()),
            };
            let ip = p.pod_ip()?.to_string();
            println!("    pod {name:<6} on {}  ip {ip:<24} ENI {eni}", n.name);
            pods.push(name);
        }
    }
    // Let the agents publish their counts before showing the table.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    for args in [
        vec!["get", "enipools"],
        vec!["get", "enipools", "-o", "wide"],
        vec!["get", "pods", "-n", c.pod_namespace(), "-o", "wide"],
    ] {
        println!("\n$ kubectl {}", args.join(" "));
        print!("{}", c.kubectl(&args)?);
    }
    let (a, b) = (c.pod("web-0")?, c.pod("api-2")?);
    let b_ip = b.pod_ip()?;
    println!("\n$ ping from pod web-0 ({}) to pod api-2 ({b_ip}) on the other node", a.pod_ip()?);
    print!("{}", ping_out(&a.netns, b_ip).await?);
    if b.ipv6.is_some() {
        let internet = c.fabric().internet_host_ipv6();
        println!(
            "\n$ ping from pod api-2 to the IPv6 internet host {internet} (its own address, no NAT)"
        );
        print!("{}", ping_out(&b.netns, internet.into()).await?);
    }
    let internet = c.fabric().internet_host_ip();
    println!(
        "\n$ ping from pod api-2 to the internet host {internet} (SNATed to the node's primary IP)"
    );
    print!("{}", ping_out(&b.netns, internet.into()).await?);
    Ok(())
}

async fn ping_out(netns: &str, to: IpAddr) -> Result<String> {
    let ns = netns.to_string();
    let out = wait::blocking(move || {
        fabric::exec_in(&ns, &["ping", "-c", "3", "-i", "0.3", "-W", "1", &to.to_string()])
    })
    .await
    .context("running ping")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("ping to {to} failed:\n{text}");
    }
    Ok(text)
}
