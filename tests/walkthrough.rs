//! The README's Quick start, run as written: its ```sh blocks marked
//! `<!-- walkthrough: NAME -->` run in order in one shell state (folder and
//! environment carry over, as in a terminal) against `gitcanary demo`, with no Git
//! identity in `$HOME`. The outcomes the README states (weights, event texts, versions
//! served) are checked, each both in the README's text and in what the commands print,
//! so the test follows the README and fails when behaviour departs from it.
//! Only `cargo run --release --` is swapped for the binary under test.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap()
}

/// The marked ```sh blocks of the Quick start, in order: (name, lines). Every ```sh
/// block of the section must be marked, so a new command cannot go untested; `skip:
/// why` marks one the walk-through does not run.
fn blocks(readme: &str) -> Vec<(String, Vec<String>)> {
    let start = readme
        .find("## Quick start")
        .expect("README has a Quick start");
    let section = &readme[start..];
    let end = section[3..].find("\n## ").map_or(section.len(), |i| i + 3);
    let mut out = Vec::new();
    let mut marker: Option<String> = None;
    let mut lines = section[..end].lines();
    while let Some(line) = lines.next() {
        if let Some(m) = line
            .strip_prefix("<!-- walkthrough: ")
            .and_then(|m| m.strip_suffix(" -->"))
        {
            marker = Some(m.to_string());
        } else if line == "```sh" {
            let name = marker.take().unwrap_or_else(|| {
                panic!("a ```sh block of the Quick start has no walkthrough marker")
            });
            let body: Vec<String> = lines
                .by_ref()
                .take_while(|l| *l != "```")
                .map(str::to_string)
                .collect();
            if !name.starts_with("skip:") {
                out.push((name, body));
            }
        } else if !line.trim().is_empty() {
            marker = None;
        }
    }
    out
}

/// Asserts that the README states `text` (wherever its lines wrap).
fn says(readme: &str, text: &str) {
    let flat = readme.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(flat.contains(text), "the README no longer says {text:?}");
}

/// Asserts that the README states `text` and that `output` shows it.
fn stated(readme: &str, output: &str, text: &str) {
    says(readme, text);
    assert!(
        output.contains(text),
        "the README states {text:?}, but got:\n{output}"
    );
}

/// The success rates in `Halt ... success rate R% < 99%` events.
fn halted_rates(describe: &str) -> Vec<f64> {
    describe
        .lines()
        .filter_map(|l| l.split("advancement success rate ").nth(1))
        .filter_map(|r| r.split('%').next()?.parse().ok())
        .collect()
}

/// A terminal: a folder and an environment that carry over from command to command.
struct Shell {
    cwd: PathBuf,
    env: Vec<(String, String)>,
    scratch: tempfile::TempDir,
}

impl Shell {
    fn new(cwd: &Path, home: &Path) -> Shell {
        let env = vec![
            ("PATH".into(), std::env::var("PATH").unwrap()),
            ("HOME".into(), home.display().to_string()),
            ("GIT_CONFIG_NOSYSTEM".into(), "1".into()),
            ("LANG".into(), "C".into()),
        ];
        Shell {
            cwd: cwd.into(),
            env,
            scratch: tempfile::tempdir().unwrap(),
        }
    }

    fn command(&self, script: &str) -> Command {
        let mut c = Command::new("bash");
        c.args(["-ec", script])
            .current_dir(&self.cwd)
            .env_clear()
            .envs(self.env.iter().cloned());
        c
    }

    /// Runs lines as one script, which must succeed; keeps its folder and
    /// environment. Returns stdout and stderr.
    fn run(&mut self, lines: &[String]) -> String {
        let (cwd, env) = (
            self.scratch.path().join("cwd"),
            self.scratch.path().join("env"),
        );
        let script = format!(
            "{}\npwd > '{}'\nenv -0 > '{}'\n",
            lines.join("\n"),
            cwd.display(),
            env.display()
        );
        let out = self.command(&script).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{lines:?} failed:\n{text}");
        self.cwd = std::fs::read_to_string(cwd).unwrap().trim_end().into();
        self.env = std::fs::read(env)
            .unwrap()
            .split(|b| *b == 0)
            .filter_map(|kv| {
                let kv = String::from_utf8_lossy(kv);
                let (k, v) = kv.split_once('=')?;
                Some((k.to_string(), v.to_string()))
            })
            .filter(|(k, _)| !matches!(k.as_str(), "PWD" | "OLDPWD" | "SHLVL" | "_"))
            .collect();
        text
    }

    /// Runs a long-running `--watch` line and reads its rows until one shows `phase`
    /// (or `limit` passes); then stops it. Returns the rows.
    fn watch_until(&self, line: &str, phase: &str, limit: Duration) -> Vec<Vec<String>> {
        let mut child = self
            .command(&format!("exec {line}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let deadline = Instant::now() + limit;
        let mut rows = Vec::new();
        let mut columns: Vec<usize> = Vec::new();
        while let Ok(l) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            if columns.is_empty() {
                columns = column_starts(&l);
            }
            let cells = cut(&l, &columns);
            let done = cells.get(2).is_some_and(|p| p == phase);
            rows.push(cells);
            if done {
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            rows.last()
                .and_then(|r| r.get(2))
                .is_some_and(|p| p == phase),
            "`{line}` never showed {phase} within {limit:?}: {rows:?}"
        );
        rows
    }

    /// Runs a block: plain lines as a script, a `--watch` line until `phase`.
    fn block(
        &mut self,
        lines: &[String],
        phase: &str,
        limit: Duration,
    ) -> (String, Vec<Vec<String>>) {
        let mut out = String::new();
        let mut rows = Vec::new();
        let mut pending = Vec::new();
        for l in lines {
            if l.contains("--watch") {
                out.push_str(&self.run(&std::mem::take(&mut pending)));
                rows = self.watch_until(l, phase, limit);
            } else {
                pending.push(l.clone());
            }
        }
        if !pending.is_empty() {
            out.push_str(&self.run(&pending));
        }
        (out, rows)
    }
}

/// Where each column of a table starts, from its header (cells may be empty or hold
/// spaces, so rows are cut at these offsets rather than split on spaces).
fn column_starts(header: &str) -> Vec<usize> {
    let chars: Vec<char> = header.chars().collect();
    (0..chars.len())
        .filter(|&i| chars[i] != ' ' && (i == 0 || chars[i - 1] == ' '))
        .collect()
}

/// A row's cells, cut at the header's column starts.
fn cut(line: &str, starts: &[usize]) -> Vec<String> {
    let chars: Vec<char> = line.chars().collect();
    starts
        .iter()
        .enumerate()
        .map(|(i, &a)| {
            let b = if i + 1 == starts.len() {
                chars.len()
            } else {
                starts[i + 1]
            };
            chars[a.min(chars.len())..b.min(chars.len())]
                .iter()
                .collect::<String>()
                .trim()
                .to_string()
        })
        .collect()
}

/// `gitcanary demo`, stopped with SIGTERM (so its replicas stop too) when dropped.
struct Demo {
    running: Option<Running>,
    stdout: Arc<Mutex<String>>,
}

impl Demo {
    /// Runs the demo block's one line, `cargo run --release -- ARGS`, as the binary.
    fn start(lines: &[String], checkout: &Path) -> Demo {
        assert_eq!(lines.len(), 1, "the demo block is one command: {lines:?}");
        let args = lines[0]
            .strip_prefix("cargo run --release -- ")
            .expect("the demo block runs `cargo run --release -- ...`");
        let mut child = Command::new(bin())
            .args(args.split_whitespace())
            .current_dir(checkout)
            .env("GITCANARY_DEMO_LISTEN", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = Arc::new(Mutex::new(String::new()));
        let (pipe, sink) = (child.stdout.take().unwrap(), stdout.clone());
        std::thread::spawn(move || {
            for l in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&l);
                s.push('\n');
            }
        });
        Demo {
            running: Some(Running { child }),
            stdout,
        }
    }

    /// What the demo printed, once it contains `text`.
    fn printed(&self, text: &str, limit: Duration) -> String {
        wait_for(limit, || {
            let s = self.stdout.lock().unwrap().clone();
            s.contains(text).then_some(s)
        })
        .unwrap_or_else(|| {
            panic!(
                "the demo never printed {text:?}: {}",
                self.stdout.lock().unwrap()
            )
        })
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop();
        }
    }
}

/// Weights of the `Progressing` rows, in order, without repeats.
fn weights(rows: &[Vec<String>]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in rows
        .iter()
        .filter(|r| r.get(2).is_some_and(|p| p == "Progressing"))
    {
        let w = r[3].clone();
        if w != "0" && out.last() != Some(&w) {
            out.push(w);
        }
    }
    out
}

#[test]
fn the_readme_quick_start_works_as_written() {
    let readme = readme();
    let blocks = blocks(&readme);
    let names: Vec<&str> = blocks.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "demo",
            "release",
            "promoted",
            "rollback",
            "rolled-back",
            "look"
        ],
        "the walk-through's steps"
    );
    let lines = |name: &str| blocks.iter().find(|(n, _)| n == name).unwrap().1.clone();
    let root = tempfile::tempdir().unwrap();
    let checkout = root.path().join("gitcanary");
    let home = root.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples-repo"),
        &checkout.join("examples-repo"),
    );
    let mut times = Vec::new();

    // demo: the banner shows the release block's commands, with absolute paths; then
    // the Services, once the canary has created them.
    let t = Instant::now();
    let demo = Demo::start(&lines("demo"), &checkout);
    let banner = demo.printed("Services (", Duration::from_secs(60));
    times.push(("demo up", t.elapsed()));
    let dir = checkout.join("gitcanary-demo");
    for l in lines("release") {
        let abs = l
            .replace("cd gitcanary-demo", &format!("cd {}", dir.display()))
            .replace("$PWD", &dir.display().to_string());
        assert!(
            banner.contains(&format!("  {abs}\n")),
            "the banner lacks {abs:?}:\n{banner}"
        );
    }
    assert!(!banner.contains("/./"), "{banner}");
    for svc in [
        "test/podinfo:",
        "test/podinfo-primary:",
        "test/podinfo-canary:",
    ] {
        assert!(banner.contains(svc), "the banner lacks {svc}:\n{banner}");
    }
    let status = |phase: &str| {
        let p = dir.join("state/status/flagger.app/Canary/test/podinfo.json");
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
        v["phase"] == phase
    };
    says(&readme, "the canary is `Initialized`");
    assert!(status("Initialized"), "the canary is Initialized");

    // release: the weights step up, then the canary is promoted.
    let mut sh = Shell::new(&checkout, &home);
    let t = Instant::now();
    let (_, rows) = sh.block(&lines("release"), "Succeeded", Duration::from_secs(240));
    times.push(("release to Succeeded", t.elapsed()));
    assert_eq!(weights(&rows), ["10", "20", "30", "40", "50"], "{rows:?}");
    says(&readme, "the weight steps 10, 20, 30, 40, 50");
    says(&readme, "the canary is `Succeeded`");
    // The load test starts with the analysis, so no check finds the window empty:
    // below the header, every row has no failed check.
    says(&readme, "with no failed checks");
    assert!(
        rows.iter().skip(1).all(|r| r[4] == "0"),
        "failed checks: {rows:?}"
    );

    // promoted: the Service serves the new version; describe shows the events.
    let t = Instant::now();
    let (out, _) = sh.block(&lines("promoted"), "", Duration::ZERO);
    times.push(("promoted commands", t.elapsed()));
    for text in [
        "\"version\":\"6.0.1\"",
        "request-success-rate",
        "New revision detected! Scaling up podinfo.test",
        "Advance podinfo.test canary weight 50",
        "Promotion completed! Scaling down podinfo.test",
    ] {
        stated(&readme, &out, text);
    }

    // rollback: faults make the canary fail its checks, and it rolls back.
    let t = Instant::now();
    let (_, rows) = sh.block(&lines("rollback"), "Failed", Duration::from_secs(240));
    times.push(("fault to Failed", t.elapsed()));
    assert!(
        rows.iter().any(|r| r[4] == "5"),
        "5 failed checks: {rows:?}"
    );
    says(&readme, "after 5 failed checks the canary rolls back");
    says(&readme, "and is `Failed`");

    // rolled-back: the primary still serves the promoted version, with no errors.
    let t = Instant::now();
    let (out, _) = sh.block(&lines("rolled-back"), "", Duration::ZERO);
    times.push(("rolled-back commands", t.elapsed()));
    stated(&readme, &out, "\"version\":\"6.0.1\"");
    let curl: Vec<String> = lines("rolled-back")
        .into_iter()
        .filter(|l| l.starts_with("curl"))
        .collect();
    for _ in 0..20 {
        let out = sh.run(&curl);
        assert!(
            out.contains("\"version\":\"6.0.1\"") && !out.contains("error"),
            "{out}"
        );
    }
    stated(
        &readme,
        &out,
        "Rolling back podinfo.test failed checks threshold reached 5",
    );
    says(&readme, "the success rate falls to about 50% (`Halt podinfo.test advancement success rate 50.00% < 99%`)");
    let rates = halted_rates(&out);
    assert!(
        rates.iter().any(|r| (45.0..=55.0).contains(r)),
        "about 50%: {rates:?}\n{out}"
    );

    // look: every command works from the clone, with no --config.
    let t = Instant::now();
    let (out, _) = sh.block(&lines("look"), "", Duration::ZERO);
    times.push(("look commands", t.elapsed()));
    assert!(out.contains("flux-system") && out.contains("True"), "{out}");
    assert!(out.contains("frontend"), "{out}");

    eprintln!("walk-through step times:");
    for (step, d) in times {
        eprintln!("  {step}: {:.1}s", d.as_secs_f64());
    }
    drop(demo);
}
