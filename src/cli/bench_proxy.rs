//! `gitcanary bench proxy`: gitcanary's Service proxy side by side with requests sent
//! direct to the two demo-app replicas it fronts and, when installed, nginx and HAProxy
//! fronting the same replicas. Each proxy is a process of its own, so its CPU time per
//! request comes from `/proc` (see `peers::cpu_time`): that is the main figure, steadier
//! than req/s on a machine the client, the proxies and the replicas share. Runs are
//! interleaved, with a fixed request count, over several rounds; medians are printed.

pub(super) mod load;
mod peers;

use peers::Proc;
use std::net::SocketAddr;
use std::process::ExitCode;

/// The concurrencies measured: a busy service and a light one.
const CONCURRENCIES: [usize; 2] = [32, 4];
/// Idle Services opened to measure what one costs.
const IDLE_SERVICES: usize = 200;

/// `gitcanary bench proxy` options.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Requests per throughput run (closed loop).
    #[arg(long, default_value_t = 20_000)]
    requests: u64,
    /// Requests per latency run (open loop, at `--rate`).
    #[arg(long, default_value_t = 6_000)]
    latency_requests: u64,
    /// Request rate of the latency runs, per second.
    #[arg(long, default_value_t = 3_000.0)]
    rate: f64,
    /// Rounds over every proxy and concurrency; medians are reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// The nginx binary (skipped when it does not run; "" skips it).
    #[arg(long, default_value = "nginx")]
    nginx: String,
    /// The HAProxy binary (skipped when it does not run; "" skips it).
    #[arg(long, default_value = "haproxy")]
    haproxy: String,
    /// Internal: serve gitcanary's proxy over demo apps on these loopback ports.
    #[arg(long, hide = true, value_delimiter = ',')]
    serve: Vec<u16>,
}

/// What requests go through.
struct Target {
    name: String,
    /// The proxy process; none for direct requests.
    proc: Option<Proc>,
    addrs: Vec<SocketAddr>,
}

/// One run's figures.
#[derive(Clone, Copy, Debug)]
struct Sample {
    cpu_us: f64,
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    failed: u64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The median of each figure over rounds; failures are summed.
fn summarize(samples: &[Sample]) -> Sample {
    let pick = |f: fn(&Sample) -> f64| median(samples.iter().map(f).collect());
    Sample {
        cpu_us: pick(|s| s.cpu_us),
        rps: pick(|s| s.rps),
        p50_us: pick(|s| s.p50_us),
        p99_us: pick(|s| s.p99_us),
        failed: samples.iter().map(|s| s.failed).sum(),
    }
}

/// One throughput run and one latency run through `t` at `conns` connections.
fn measure(rt: &tokio::runtime::Runtime, t: &Target, conns: usize, args: &Args) -> Sample {
    let pid = t.proc.as_ref().map(Proc::pid);
    let cpu = || pid.and_then(peers::cpu_time);
    let before = cpu();
    let closed = rt.block_on(load::closed(&t.addrs, conns, args.requests));
    let cpu_us = match (before, cpu()) {
        (Some(a), Some(b)) => b.saturating_sub(a).as_secs_f64() * 1e6 / args.requests as f64,
        _ => f64::NAN,
    };
    let open = load::open(&t.addrs, conns, args.latency_requests, args.rate);
    Sample {
        cpu_us,
        rps: closed.ok as f64 / closed.elapsed.as_secs_f64(),
        p50_us: load::quantile_us(&open.latencies, 0.5),
        p99_us: load::quantile_us(&open.latencies, 0.99),
        failed: closed.failed + open.failed,
    }
}

/// The targets: direct, gitcanary, and whichever of nginx and HAProxy run here.
fn targets(
    args: &Args,
    dir: &std::path::Path,
    upstreams: &[SocketAddr],
) -> anyhow::Result<(Vec<Target>, peers::GitcanaryCtl)> {
    let (gc, gc_addr, ctl) = peers::gitcanary(upstreams)?;
    let mut out = vec![
        Target {
            name: "direct".into(),
            proc: None,
            addrs: upstreams.to_vec(),
        },
        Target {
            name: "gitcanary".into(),
            proc: Some(gc),
            addrs: vec![gc_addr],
        },
    ];
    let others = [
        (!args.nginx.is_empty()).then(|| peers::nginx(&args.nginx, &dir.join("nginx"), upstreams)),
        (!args.haproxy.is_empty())
            .then(|| peers::haproxy(&args.haproxy, &dir.join("haproxy"), upstreams)),
    ];
    for started in others.into_iter().flatten() {
        let Some((p, addr)) = started? else {
            continue;
        };
        out.push(Target {
            name: p.name.clone(),
            proc: Some(p),
            addrs: vec![addr],
        });
    }
    Ok((out, ctl))
}

/// Runs the proxy benchmark (or, with `--serve`, is the gitcanary proxy under test).
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !args.serve.is_empty() {
        return peers::serve(&args.serve);
    }
    let dir = std::env::temp_dir().join(format!("gitcanary-bench-proxy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let result = bench(&args, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn bench(args: &Args, dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    let (app_a, a) = peers::demo_app()?;
    let (app_b, b) = peers::demo_app()?;
    let (targets, mut ctl) = targets(args, dir, &[a, b])?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    for t in &targets {
        rt.block_on(load::closed(&t.addrs, 32, args.requests / 4));
    }
    let mut samples = vec![Vec::new(); targets.len() * CONCURRENCIES.len()];
    for round in 0..args.rounds.max(1) {
        for (ci, &conns) in CONCURRENCIES.iter().enumerate() {
            // A different target goes first each round, so none always runs right
            // after the same neighbour.
            for k in 0..targets.len() {
                let ti = (k + round) % targets.len();
                let s = measure(&rt, &targets[ti], conns, args);
                samples[ti * CONCURRENCIES.len() + ci].push(s);
            }
        }
    }
    let rss: Vec<Option<u64>> = targets
        .iter()
        .map(|t| t.proc.as_ref().map(|p| peers::rss_kb(p.pid())))
        .collect();
    let idle_kb = ctl.idle_service_kb(IDLE_SERVICES)?;
    let rows: Vec<(String, [Sample; 2], Option<u64>)> = targets
        .iter()
        .enumerate()
        .map(|(ti, t)| {
            let at = |ci: usize| summarize(&samples[ti * CONCURRENCIES.len() + ci]);
            (t.name.clone(), [at(0), at(1)], rss[ti])
        })
        .collect();
    drop(targets);
    drop((app_a, app_b));
    Ok(report(args, &rows, idle_kb))
}

fn fmt_opt(v: f64, width: usize, prec: usize) -> String {
    if v.is_nan() {
        format!("{:>width$}", "-")
    } else {
        format!("{v:>width$.prec$}")
    }
}

/// Prints the table and the ratios to nginx, and turns the targets into the exit code.
fn report(args: &Args, rows: &[(String, [Sample; 2], Option<u64>)], idle_kb: f64) -> ExitCode {
    println!(
        "gitcanary bench proxy: 2 demo-app replicas on loopback; medians of {} rounds of {} requests \
         (throughput, closed loop) and {} at {} req/s (latency from the intended send time)",
        args.rounds.max(1),
        args.requests,
        args.latency_requests,
        args.rate
    );
    println!(
        "  {:<22} {:>15} {:>17} {:>17} {:>17} {:>8} {:>6}",
        "", "CPU µs/req", "req/s", "p50/p99 µs", "p50/p99 µs", "RSS", ""
    );
    println!(
        "  {:<22} {:>7} {:>7} {:>8} {:>8} {:>17} {:>17} {:>8} {:>6}",
        "through", "c32", "c4", "c32", "c4", "c32", "c4", "KB", "failed"
    );
    for (name, [c32, c4], rss) in rows {
        println!(
            "  {:<22} {} {} {:>8.0} {:>8.0} {:>8.0}/{:<8.0} {:>8.0}/{:<8.0} {:>8} {:>6}",
            name,
            fmt_opt(c32.cpu_us, 7, 1),
            fmt_opt(c4.cpu_us, 7, 1),
            c32.rps,
            c4.rps,
            c32.p50_us,
            c32.p99_us,
            c4.p50_us,
            c4.p99_us,
            rss.map_or("-".to_string(), |r| r.to_string()),
            c32.failed + c4.failed,
        );
    }
    let gc = rows.iter().find(|r| r.0 == "gitcanary");
    let nginx = rows.iter().find(|r| r.0.starts_with("nginx"));
    let failures: u64 = rows.iter().map(|r| r.1[0].failed + r.1[1].failed).sum();
    let mut ok = failures == 0 && idle_kb < 10.0;
    match (gc, nginx) {
        (Some((_, g, _)), Some((_, n, _))) => {
            let (r32, r4) = (g[0].cpu_us / n[0].cpu_us, g[1].cpu_us / n[1].cpu_us);
            let p99_diff = g[1].p99_us - n[1].p99_us;
            println!(
                "  gitcanary / nginx: CPU per request {r32:.2} at c32, {r4:.2} at c4 (target <= 1.00); \
                 req/s {:.2} at c32, {:.2} at c4; p99 at c4 {p99_diff:+.0} µs (target <= 0)",
                g[0].rps / n[0].rps,
                g[1].rps / n[1].rps,
            );
            ok &= r32 <= 1.0 && r4 <= 1.0 && p99_diff <= 0.0;
        }
        _ => println!(
            "  nginx: not run (install it, e.g. `apt-get install nginx-light`, for the comparison)"
        ),
    }
    println!("  memory per idle Service: {idle_kb:.1} KB (target < 10 KB)");
    if failures > 0 {
        println!("  {failures} requests failed");
    }
    super::bench::verdict(ok)
}
