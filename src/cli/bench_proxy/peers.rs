//! The processes `bench proxy` measures: two demo-app replicas, gitcanary's Service
//! proxy in a child process of its own (this binary in a hidden serve mode), and nginx
//! and HAProxy with configs written here for the same upstreams. Each proxy is a
//! single process, so its CPU time and RSS can be read from `/proc/PID`.

use crate::manifest::object::{Object, ObjectKey, Origin};
use crate::targets::local::proxy::Proxy;
use crate::targets::local::runtime::Endpoint;
use crate::targets::local::LocalStore;
use anyhow::Context as _;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A child process that is stopped when dropped.
pub struct Proc {
    /// What it is, for the report.
    pub name: String,
    child: Child,
}

impl Proc {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM first, so nginx and HAProxy clean up; the demo app and the serve mode
        // stop on it too.
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time of a process so far: the scheduler's run time of each of its threads
/// (`se.sum_exec_runtime` in `/proc/PID/task/TID/sched`, nanoseconds), or, where the
/// kernel does not show that, user plus system time from `/proc/PID/stat`, which
/// counts in clock ticks: 10 ms, 2.5% of a 20,000-request run at 20 µs each. The
/// threads' sum leaves out threads that ended; the proxies measured here keep theirs
/// for the whole run.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    threads_run_time(pid).or_else(|| ticks_cpu_time(pid))
}

fn threads_run_time(pid: u32) -> Option<Duration> {
    let mut total = None;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        // A thread that ended since the listing is left out, as ended threads are.
        let sched = std::fs::read_to_string(task.path().join("sched")).ok();
        if let Some(t) = sched.as_deref().and_then(sum_exec_runtime) {
            *total.get_or_insert(Duration::ZERO) += t;
        }
    }
    total
}

/// `se.sum_exec_runtime` of a `/proc/…/sched` text: milliseconds with six decimals.
fn sum_exec_runtime(sched: &str) -> Option<Duration> {
    let line = sched
        .lines()
        .find(|l| l.split(':').next().map(str::trim) == Some("se.sum_exec_runtime"))?;
    let (ms, ns) = line.split(':').nth(1)?.trim().split_once('.')?;
    let ns: u64 = format!("{ns:0<6}").get(..6)?.parse().ok()?;
    Some(Duration::from_millis(ms.parse().ok()?) + Duration::from_nanos(ns))
}

/// User plus system CPU time of a process so far (`/proc/PID/stat` fields 14 and 15).
fn ticks_cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields are counted after its closing paren.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(Duration::from_secs_f64((utime + stime) as f64 / hz))
}

pub(crate) use super::super::bench_idle::rss_kb;

/// A loopback port free right now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn quiet(cmd: &mut Command) -> &mut Command {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
}

/// One demo-app replica on a free port (one worker thread, as `demo-app` runs).
pub fn demo_app() -> anyhow::Result<(Proc, SocketAddr)> {
    let port = free_port()?;
    let child = quiet(Command::new(std::env::current_exe()?).args([
        "demo-app",
        "--port",
        &port.to_string(),
    ]))
    .env("IMAGE_TAG", "bench")
    .spawn()?;
    let p = Proc {
        name: "demo-app".into(),
        child,
    };
    super::super::bench::wait_for_port(port, "demo-app")?;
    Ok((p, SocketAddr::from(([127, 0, 0, 1], port))))
}

/// gitcanary's Service proxy in front of `upstreams`, in a child process, with the
/// pipes that drive it.
pub fn gitcanary(upstreams: &[SocketAddr]) -> anyhow::Result<(Proc, SocketAddr, GitcanaryCtl)> {
    let ports: Vec<String> = upstreams.iter().map(|a| a.port().to_string()).collect();
    let mut child = Command::new(std::env::current_exe()?)
        .args(["bench", "proxy", "--serve", &ports.join(",")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let ctl = GitcanaryCtl {
        stdin: child.stdin.take().context("child stdin")?,
        stdout: std::io::BufReader::new(child.stdout.take().context("child stdout")?),
    };
    let mut p = (
        Proc {
            name: "gitcanary".into(),
            child,
        },
        ctl,
    );
    let line = p.1.line()?;
    let addr = line
        .strip_prefix("listening ")
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("gitcanary serve mode said {line:?}"))?;
    Ok((p.0, addr, p.1))
}

/// The serve mode's stdin and stdout.
pub struct GitcanaryCtl {
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl GitcanaryCtl {
    fn line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        anyhow::ensure!(!line.is_empty(), "gitcanary serve mode exited");
        Ok(line.trim().to_string())
    }

    /// Has the serve mode open `n` more, idle, Services and say what each costs, KB.
    pub fn idle_service_kb(&mut self, n: usize) -> anyhow::Result<f64> {
        writeln!(self.stdin, "idle {n}")?;
        let line = self.line()?;
        line.strip_prefix("idle-kb ")
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("gitcanary serve mode said {line:?}"))
    }
}

fn service(i: usize) -> Object {
    let name = format!("svc-{i}");
    let v = serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "bench"},
        "spec": {"selector": {"app": "demo"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}});
    Object::from_json(
        ObjectKey::new("v1", "Service", "bench", &name),
        "v1".into(),
        &v,
        Origin {
            file: "bench".into(),
            line: 1,
        },
    )
}

fn apply_services(store: &LocalStore, n: usize, revision: &str) -> anyhow::Result<()> {
    let objects: Vec<Object> = (0..n).map(service).collect();
    let inv = store.inventory()?;
    store.apply(&crate::sync::plan(&objects, &inv), &objects, &inv, revision)?;
    Ok(())
}

/// The hidden serve mode: one Service `bench/svc-0` over two ready replicas at `ports`,
/// served as `gitcanary run` serves it (two runtime workers, metrics recorded), until
/// stdin closes. `idle N` on stdin adds N idle Services and answers `idle-kb <KB each>`.
pub fn serve(ports: &[u16]) -> anyhow::Result<ExitCode> {
    let work = std::env::temp_dir().join(format!("gitcanary-bench-serve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = rt.block_on(serve_in(&work, ports));
    let _ = std::fs::remove_dir_all(&work);
    result.map(|()| ExitCode::SUCCESS)
}

async fn serve_in(work: &Path, ports: &[u16]) -> anyhow::Result<()> {
    let store = LocalStore::open(work)?;
    apply_services(&store, 1, "bench")?;
    let endpoints = (0..ports.len())
        .map(|i| Endpoint {
            namespace: "bench".into(),
            deployment: "demo".into(),
            pod: format!("demo-{i}"),
            labels: [
                ("app".to_string(), "demo".to_string()),
                (
                    crate::targets::local::runtime::spec::POD_TEMPLATE_HASH.to_string(),
                    "bench".to_string(),
                ),
            ]
            .into(),
            ready: true,
            ports: vec![(Some("http".into()), 9898, ports[i])],
        })
        .collect();
    let proxy = Proxy::new(work, Arc::new(Mutex::new(endpoints)), Default::default())?;
    proxy.sync_services().await?;
    let addr = proxy.addresses().await[0].3;
    println!("listening {addr}");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The bench stops its children with SIGTERM: end cleanly, so the store is removed.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let line = tokio::select! {
            line = rx.recv() => line,
            _ = term.recv() => None,
        };
        let Some(line) = line else { break };
        if let Some(n) = line
            .strip_prefix("idle ")
            .and_then(|n| n.parse::<usize>().ok())
        {
            let before = rss_kb(std::process::id());
            apply_services(&store, n + 1, "bench-idle")?;
            proxy.sync_services().await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
            let after = rss_kb(std::process::id());
            println!(
                "idle-kb {:.2}",
                after.saturating_sub(before) as f64 / n as f64
            );
        }
    }
    Ok(())
}

/// Writes a proxy's config file into `dir`.
fn write_config(dir: &Path, name: &str, text: &str) -> anyhow::Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    Ok(path)
}

/// The binary's version line, or `None` when it is not installed.
fn version(bin: &str, flag: &str) -> Option<String> {
    let out = Command::new(bin).arg(flag).output().ok()?;
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    text.lines().next().map(str::trim).map(str::to_string)
}

/// nginx in the foreground as one process (`master_process off`, one worker's worth of
/// work), round robin over `upstreams` with keep-alive both ways and no access log.
pub fn nginx(
    bin: &str,
    dir: &Path,
    upstreams: &[SocketAddr],
) -> anyhow::Result<Option<(Proc, SocketAddr)>> {
    let Some(v) = version(bin, "-v") else {
        return Ok(None);
    };
    let port = free_port()?;
    let d = dir.display();
    let servers: String = upstreams
        .iter()
        .map(|a| format!("    server {a};\n"))
        .collect();
    let conf = format!(
        "worker_processes 1;\nmaster_process off;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 1000000;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         upstream demo {{\n{servers}    keepalive 64;\n    keepalive_requests 1000000;\n  }}\n\
         server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://demo;\n\
         proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n"
    );
    let path = write_config(dir, "nginx.conf", &conf)?;
    let child = quiet(Command::new(bin).args([
        "-p",
        &d.to_string(),
        "-e",
        &format!("{d}/error.log"),
        "-c",
        &path.display().to_string(),
    ]))
    .spawn()?;
    let p = Proc {
        name: v.rsplit(' ').next().unwrap_or("nginx").replace('/', " "),
        child,
    };
    super::super::bench::wait_for_port(port, "nginx")
        .with_context(|| format!("see {d}/error.log"))?;
    Ok(Some((p, SocketAddr::from(([127, 0, 0, 1], port)))))
}

/// HAProxy in the foreground with one thread, round robin over `upstreams`, keep-alive
/// both ways (connections to the servers reused), no log.
pub fn haproxy(
    bin: &str,
    dir: &Path,
    upstreams: &[SocketAddr],
) -> anyhow::Result<Option<(Proc, SocketAddr)>> {
    let Some(v) = version(bin, "-v") else {
        return Ok(None);
    };
    let port = free_port()?;
    let servers: String = upstreams
        .iter()
        .enumerate()
        .map(|(i, a)| format!("  server s{i} {a}\n"))
        .collect();
    let conf = format!(
        "global\n  nbthread 1\n  maxconn 1024\n\
         defaults\n  mode http\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n\
         option http-keep-alive\n  http-reuse always\n\
         frontend fe\n  bind 127.0.0.1:{port}\n  default_backend be\n\
         backend be\n  balance roundrobin\n{servers}"
    );
    let path = write_config(dir, "haproxy.cfg", &conf)?;
    let child =
        quiet(Command::new(bin).args(["-db", "-f", &path.display().to_string()])).spawn()?;
    // "2.6.12-1+deb12u4": the upstream version is enough.
    let version = v.split_whitespace().nth(2).unwrap_or("");
    let version = version.split('-').next().unwrap_or(version);
    let p = Proc {
        name: format!("haproxy {version}"),
        child,
    };
    super::super::bench::wait_for_port(port, "haproxy")?;
    Ok(Some((p, SocketAddr::from(([127, 0, 0, 1], port)))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_time_is_read_to_the_nanosecond_from_a_sched_file() {
        let sched = "cat (5848, #threads: 1)\n\
            -------------------------------------------------------------------\n\
            se.exec_start                                :       3024903.413093\n\
            se.vruntime                                  :       1256389.337310\n\
            se.sum_exec_runtime                          :          1250.250865\n\
            nr_switches                                  :                    1\n";
        assert_eq!(
            sum_exec_runtime(sched),
            Some(Duration::from_nanos(1_250_250_865))
        );
        assert_eq!(sum_exec_runtime("se.vruntime : 1.5\n"), None);
    }

    #[test]
    fn this_process_has_run_for_some_time() {
        let me = std::process::id();
        let before = cpu_time(me).unwrap();
        let start = std::time::Instant::now();
        // Spin until the reading has grown by 20 ms of CPU: it follows the CPU spent.
        while cpu_time(me).unwrap() < before + Duration::from_millis(20) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "cpu_time stands still"
            );
        }
        assert!(ticks_cpu_time(me).unwrap() >= Duration::from_millis(10));
    }
}
