//! `gitcanary bench kube`: the Kubernetes target against a cluster (an envtest API
//! server will do): planning 10,000 objects against an inventory (pure), the first
//! sync of 1,000 generated objects compared with `kubectl apply --server-side` of the
//! same files, a no-op resync (time and writes), and the RSS of `gitcanary run`
//! holding a 10,000-object inventory.

use super::bench::{generate, proc_kb, verdict};
use crate::config::Config;
use crate::source::seed;
use crate::sync::reconcile::Reconciler;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// Arguments of `bench kube`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// kubeconfig of the cluster to write into (it gets `bench-*` namespaces).
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// Objects of the first-sync and no-op measurements.
    #[arg(long, default_value_t = 1_000)]
    pub objects: usize,
    /// Objects of the planning and RSS measurements.
    #[arg(long, default_value_t = 10_000)]
    pub inventory: usize,
    /// The kubectl to compare with.
    #[arg(long, default_value = "kubectl")]
    pub kubectl: String,
}

/// A generated repository whose namespaces are `<prefix>-team-N`, with their Namespace
/// objects and the inventory's namespace in a file of their own.
fn repo(work: &Path, prefix: &str, objects: usize) -> anyhow::Result<PathBuf> {
    let tree = work.join(format!("{prefix}-tree"));
    generate(&tree, objects, objects.div_ceil(10), "a")?;
    let mut namespaces = String::new();
    for i in 0..20 {
        namespaces.push_str(&format!(
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {prefix}-team-{i}\n"
        ));
    }
    namespaces.push_str(&format!(
        "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {prefix}-inv\n"
    ));
    for entry in walk(&tree.join("apps"))? {
        let text = std::fs::read_to_string(&entry)?;
        std::fs::write(
            &entry,
            text.replace("namespace: team-", &format!("namespace: {prefix}-team-")),
        )?;
    }
    // kubectl walks folders in name order: the Namespaces come first.
    std::fs::write(tree.join("00-namespaces.yaml"), namespaces)?;
    Ok(tree)
}

fn walk(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            out.extend(walk(&p)?);
        } else {
            out.push(p);
        }
    }
    Ok(out)
}

/// A reconciler for `tree` on the cluster, keeping its inventory in `<prefix>-inv`.
fn reconciler(
    args: &Args,
    work: &Path,
    tree: &Path,
    prefix: &str,
) -> anyhow::Result<(Reconciler, PathBuf)> {
    let remote = work.join(format!("{prefix}.git"));
    seed::commit_dir(&remote, tree, "main", "bench", ("bench", "bench@localhost"))?;
    let text = format!(
        "source:\n  url: {}\ntarget:\n  kubernetes:\n    kubeconfig: {}\n    namespace: {prefix}-inv\n    stateDir: {}\nserver:\n  listen: 127.0.0.1:0\n",
        remote.display(),
        args.kubeconfig.canonicalize()?.display(),
        work.join(format!("{prefix}-state")).display()
    );
    let path = work.join(format!("{prefix}.yaml"));
    std::fs::write(&path, &text)?;
    let cfg = Config::parse(&text, work).map_err(anyhow::Error::msg)?;
    Ok((Reconciler::open(cfg, true)?, path))
}

/// Runs the benchmark.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let work = std::env::temp_dir().join(format!("gitcanary-bench-kube-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let id = std::process::id();
    let mut ok = true;

    let plan_ms = bench_plan(&work, args.inventory)?;
    println!(
        "plan {} objects against an inventory: {plan_ms:.1} ms (target < 200 ms)",
        args.inventory
    );
    ok &= plan_ms < 200.0;

    let prefix = format!("bench-{id}");
    let tree = repo(&work, &prefix, args.objects)?;
    let (mut rec, _) = reconciler(&args, &work, &tree, &prefix)?;
    let t = Instant::now();
    let first = rec.sync_once()?;
    let first_time = t.elapsed();
    println!(
        "first sync of {} objects: {:.2} s ({} created)",
        args.objects,
        first_time.as_secs_f64(),
        first.applied.created
    );
    let t = Instant::now();
    let noop = rec.sync_once()?;
    let noop_time = t.elapsed();
    println!(
        "no-op resync of {} objects: {:.2} s, {} writes (targets: 0 writes, < 2 s)",
        args.objects,
        noop_time.as_secs_f64(),
        noop.applied.writes
    );
    ok &= noop.applied.writes == 0 && noop_time < Duration::from_secs(2);

    let kubectl_prefix = format!("bench-{id}-kubectl");
    let kubectl_tree = repo(&work, &kubectl_prefix, args.objects)?;
    // kubectl sends ports as written, and API servers before 1.21 refuse a port
    // without its protocol in server-side apply; gitcanary fills it in itself.
    for file in walk(&kubectl_tree.join("apps"))? {
        let text = std::fs::read_to_string(&file)?;
        std::fs::write(
            &file,
            text.replace("port: 80\n", "port: 80\n      protocol: TCP\n")
                .replace(
                    "containerPort: 9898\n",
                    "containerPort: 9898\n              protocol: TCP\n",
                ),
        )?;
    }
    let t = Instant::now();
    let out = Command::new(&args.kubectl)
        .arg("--kubeconfig")
        .arg(&args.kubeconfig)
        .args([
            "apply",
            "--server-side",
            "--field-manager",
            "bench",
            "-R",
            "-f",
        ])
        .arg(&kubectl_tree)
        .stdout(Stdio::null())
        .output();
    let kubectl_time = t.elapsed();
    match out {
        Ok(o) if o.status.success() => println!(
            "kubectl apply --server-side of the same files: {:.2} s; gitcanary / kubectl = {:.2}",
            kubectl_time.as_secs_f64(),
            first_time.as_secs_f64() / kubectl_time.as_secs_f64()
        ),
        Ok(o) => println!(
            "kubectl failed: {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .next()
                .unwrap_or("")
        ),
        Err(e) => println!("kubectl not run ({e}): apt-get install kubernetes-client"),
    }

    let rss = bench_rss(&args, &work, &format!("bench-{id}-rss"))?;
    println!(
        "RSS of gitcanary run with a {}-object inventory: {} MB (target < 60 MB)",
        args.inventory,
        rss / 1024
    );
    ok &= rss < 60 * 1024;
    let _ = std::fs::remove_dir_all(&work);
    Ok(verdict(ok))
}

/// Best of five `plan()` runs over `n` objects against an inventory of them, with a
/// tenth changed and a hundred gone.
fn bench_plan(work: &Path, n: usize) -> anyhow::Result<f64> {
    use crate::manifest::{load, snapshot::DirSnapshot};
    use crate::sync::inventory::Entry;
    let tree = work.join("plan-tree");
    generate(&tree, n, n.div_ceil(10), "a")?;
    let loaded = load(&DirSnapshot::new(&tree), ".", None);
    anyhow::ensure!(
        loaded.errors.is_empty(),
        "generated objects: {:?}",
        loaded.errors.first()
    );
    let mut inv = crate::sync::Inventory::default();
    for (i, o) in loaded.objects.iter().enumerate().skip(100) {
        let hash = if i % 10 == 0 {
            "changed".to_string()
        } else {
            o.hash.clone()
        };
        inv.entries.insert(
            o.key.clone(),
            Entry {
                api_version: o.api_version.clone(),
                hash,
                revision: "main@sha1:0".into(),
                file: o.origin.file.clone(),
                prune: true,
                live: true,
            },
        );
    }
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        let p = crate::sync::plan(&loaded.objects, &inv);
        best = best.min(t.elapsed().as_secs_f64() * 1000.0);
        std::hint::black_box(p);
    }
    Ok(best)
}

/// Syncs `args.inventory` objects, then starts `gitcanary run` on them and reads its
/// RSS after its first (no-op) sync.
fn bench_rss(args: &Args, work: &Path, prefix: &str) -> anyhow::Result<u64> {
    let tree = repo(work, prefix, args.inventory)?;
    let (mut rec, config) = reconciler(args, work, &tree, prefix)?;
    rec.sync_once()?;
    drop(rec);
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--config")
        .arg(&config)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id().to_string();
    // The first sync in `run` reads the inventory, dry-runs every object and reads the
    // revision's workloads for its health check; its summary line ends it.
    let stderr = child.stderr.take();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr.unwrap())
            .lines()
            .map_while(Result::ok)
        {
            if first_sync_ended(&line) {
                let _ = tx.send(line);
            }
        }
    });
    let ended = rx.recv_timeout(Duration::from_secs(300));
    std::thread::sleep(Duration::from_secs(2));
    let rss = proc_kb(&pid, "VmHWM").unwrap_or(0);
    // SIGTERM, so that it hands the Lease back.
    let _ = Command::new("kill").arg(&pid).status();
    let _ = child.wait();
    match ended {
        Ok(line) if line.contains("Reconciliation finished") => Ok(rss),
        Ok(line) => anyhow::bail!("gitcanary run: the first sync failed: {line}"),
        Err(_) => anyhow::bail!("gitcanary run: no sync ended within 300 s"),
    }
}

/// Whether a log line of `gitcanary run` ends a sync, with success or not.
fn first_sync_ended(line: &str) -> bool {
    [
        "Reconciliation finished",
        "sync failed",
        "revision is invalid",
    ]
    .iter()
    .any(|s| line.contains(s))
}
