//! The canary engine's scheduling through `gitcanary run`, with real processes and real
//! webhook receivers: canaries step independently, `maxConcurrentCanaries` holds, gates
//! run once per interval, manual commands wait for the engine, and replica changes in
//! Git reach the primary.

mod common;
use common::*;
use std::io::{BufReader, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const IMAGES: &str =
    "    images:\n      example.com/app: [\"gitcanary\", \"demo-app\", \"--port\", \"$(PORT)\"]\n";

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A webhook receiver on 127.0.0.1: answers each path with a status code after a
/// delay, and records when each request arrived.
struct Hooks {
    url: String,
    calls: Arc<Mutex<Vec<(String, f64)>>>,
}

impl Hooks {
    fn start(answer: fn(&str) -> (u16, Duration)) -> Hooks {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let calls = Arc::new(Mutex::new(Vec::new()));
        let seen = calls.clone();
        std::thread::spawn(move || {
            for stream in l.incoming().flatten() {
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let mut r = BufReader::new(stream);
                    let Some((first, _)) = read_request(&mut r) else {
                        return;
                    };
                    let path = first.split_whitespace().nth(1).unwrap_or("/").to_string();
                    seen.lock().unwrap().push((path.clone(), unix_now()));
                    let (code, delay) = answer(&path);
                    std::thread::sleep(delay);
                    let _ = r.get_mut().write_all(
                        format!(
                            "HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    );
                });
            }
        });
        Hooks { url, calls }
    }

    /// When each request to `path` arrived.
    fn calls(&self, path: &str) -> Vec<f64> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, t)| *t)
            .collect()
    }
}

/// A Deployment and its Canary (`interval`, stepWeight 10 up to 50, no metrics) with
/// `analysis_extra` appended inside `analysis:`.
fn app(name: &str, tag: &str, replicas: u32, interval: &str, analysis_extra: &str) -> String {
    format!("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: test\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n        - name: app\n          image: example.com/app:{tag}\n          ports:\n            - name: http\n              containerPort: 9898\n          readinessProbe:\n            httpGet:\n              path: /readyz\n              port: http\n            periodSeconds: 1\n---\napiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata:\n  name: {name}\n  namespace: test\nspec:\n  targetRef:\n    apiVersion: apps/v1\n    kind: Deployment\n    name: {name}\n  progressDeadlineSeconds: 120\n  service:\n    port: 9898\n    targetPort: 9898\n  analysis:\n    interval: {interval}\n    threshold: 3\n    maxWeight: 50\n    stepWeight: 10\n{analysis_extra}")
}

/// Pushes `apps` (file name, content) beside the namespace.
fn push(remote: &Remote, apps: &[(String, String)], msg: &str) {
    let mut files: Vec<(&str, &str)> = vec![("ns.yaml", NAMESPACE)];
    files.extend(apps.iter().map(|(p, c)| (p.as_str(), c.as_str())));
    remote.write(&files).push(msg);
}

/// A remote seeded with `apps` and `gitcanary run` on it, every canary initialized.
fn running(apps: &[(String, String)], rest: &str) -> (Remote, Setup, Running) {
    let remote = Remote::new();
    push(&remote, apps, "seed");
    let setup = Setup::new(&remote.bare.display().to_string(), "  interval: 1h\n", rest);
    setup.with_local_images(IMAGES);
    let run = setup.spawn_run(&[]);
    for (path, _) in apps {
        let name = path.trim_end_matches(".yaml");
        setup.wait_canary(name, "Initialized", 90);
    }
    (remote, setup, run)
}

/// podinfo with `analysis_extra`, initialized on 1.0.0, then 1.0.1 pushed.
fn podinfo_updated(interval: &str, analysis_extra: &str) -> (Remote, Setup, Running) {
    let apps = |tag: &str| {
        vec![(
            "podinfo.yaml".to_string(),
            app("podinfo", tag, 1, interval, analysis_extra),
        )]
    };
    let (remote, setup, run) = running(&apps("1.0.0"), "");
    push(&remote, &apps("1.0.1"), "podinfo 1.0.1");
    (remote, setup, run)
}

/// When each event whose message starts with `prefix` happened.
fn event_times(c: &serde_json::Value, prefix: &str) -> Vec<f64> {
    c["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["message"].as_str().unwrap_or("").starts_with(prefix))
        .map(|e| e["at"].as_f64().unwrap())
        .collect()
}

#[test]
fn a_slow_webhook_holds_back_only_its_own_canary() {
    let hooks = Hooks::start(|path| match path {
        "/slow" => (200, Duration::from_secs(20)),
        _ => (200, Duration::ZERO),
    });
    let slow = format!("    webhooks:\n      - name: helm-test\n        type: pre-rollout\n        url: {}/slow\n        timeout: 30s\n", hooks.url);
    let apps = |tag: &str| {
        vec![
            (
                "backend.yaml".to_string(),
                app("backend", tag, 1, "1s", &slow),
            ),
            ("podinfo.yaml".to_string(), app("podinfo", tag, 1, "1s", "")),
        ]
    };
    let (remote, setup, run) = running(&apps("1.0.0"), "");
    push(&remote, &apps("1.0.1"), "both 1.0.1");
    let t0 = wait_for(Duration::from_secs(60), || {
        hooks.calls("/slow").first().copied()
    })
    .expect("the slow pre-rollout webhook was called");
    // While backend's webhook takes 20 s, podinfo keeps stepping every second.
    std::thread::sleep(Duration::from_secs_f64((t0 + 17.0 - unix_now()).max(0.0)));
    let c = setup.canary("podinfo");
    let advances: Vec<f64> = event_times(&c, "Advance podinfo.test canary weight")
        .into_iter()
        .filter(|t| *t > t0 && *t < t0 + 17.0)
        .collect();
    assert!(
        advances.len() >= 3,
        "podinfo advanced {} times while backend's webhook ran: {:#?}",
        advances.len(),
        canary_events(&c)
    );
    assert_eq!(setup.canary("backend")["canaryWeight"], 0, "backend waits");
    setup.wait_canary("backend", "Succeeded", 90);
    run.stop();
}

#[test]
fn max_concurrent_canaries_is_never_exceeded() {
    let names = ["app1", "app2", "app3", "app4", "app5"];
    let apps = |tag: &str| -> Vec<(String, String)> {
        names
            .iter()
            .map(|n| (format!("{n}.yaml"), app(n, tag, 1, "1s", "")))
            .collect()
    };
    let (remote, setup, run) = running(&apps("1.0.0"), "canary:\n  maxConcurrentCanaries: 2\n");
    push(&remote, &apps("1.0.1"), "all 1.0.1");
    // Each analysis runs from "New revision detected!" to "Promotion completed!".
    let mut spans = Vec::new();
    for n in names {
        let c = setup.wait_canary(n, "Succeeded", 240);
        let start = *event_times(&c, "New revision detected!").last().unwrap();
        let end = *event_times(&c, "Promotion completed!").last().unwrap();
        assert!(start <= end);
        spans.push((start, end));
    }
    // The most analyses running at one moment. Events carry the time of the tick that
    // started a step, and a step may finish a tick later on a busy machine, so only
    // overlaps longer than a second count (each analysis lasts at least five).
    let mut edges: Vec<(f64, i32)> = spans
        .iter()
        .flat_map(|(s, e)| [(*s + 1.0, 1), (*e, -1)])
        .collect();
    edges.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let (mut now, mut most) = (0, 0);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    assert_eq!(most, 2, "analyses at once: {spans:?}");
    let waited = names
        .iter()
        .filter(|n| {
            canary_events(&setup.canary(n))
                .iter()
                .any(|e| e.contains("waiting for a free slot (maxConcurrentCanaries)"))
        })
        .count();
    assert!(waited >= 3, "{waited} canaries waited for a slot");
    run.stop();
}

#[test]
fn confirm_rollout_and_rollback_gates_run_once_per_interval() {
    let hooks = Hooks::start(|_| (403, Duration::ZERO));
    let gates = format!("    webhooks:\n      - name: approve\n        type: confirm-rollout\n        url: {0}/confirm\n      - name: stop\n        type: rollback\n        url: {0}/rollback\n", hooks.url);
    let (_remote, setup, run) = podinfo_updated("5s", &gates);
    setup.wait_canary("podinfo", "Waiting", 60);
    let t0 = hooks.calls("/confirm")[0];
    std::thread::sleep(Duration::from_secs_f64((t0 + 8.0 - unix_now()).max(0.0)));
    let in_window = |path: &str| {
        hooks
            .calls(path)
            .into_iter()
            .filter(|t| *t < t0 + 8.0)
            .count()
    };
    // An 8 s window with a 5 s interval: at t0 and t0+5, not every 500 ms tick.
    assert!(
        (1..=2).contains(&in_window("/confirm")),
        "confirm-rollout called {} times",
        in_window("/confirm")
    );
    assert!(
        in_window("/rollback") <= 2,
        "rollback called {} times",
        in_window("/rollback")
    );
    assert_eq!(setup.canary("podinfo")["phase"], "Waiting");
    run.stop();
}

#[test]
fn a_promote_command_waits_for_the_gate_it_opens() {
    let hooks = Hooks::start(|_| (403, Duration::ZERO));
    let gate = format!("    webhooks:\n      - name: step\n        type: confirm-traffic-increase\n        url: {}/traffic\n", hooks.url);
    let (_remote, setup, run) = podinfo_updated("10s", &gate);
    // Held at the closed gate.
    wait_for(Duration::from_secs(60), || {
        (!hooks.calls("/traffic").is_empty()).then_some(())
    })
    .expect("the gate was asked");
    std::thread::sleep(Duration::from_secs(1));
    let held = setup.canary("podinfo")["canaryWeight"].as_u64().unwrap();
    assert!(setup
        .cmd(&["promote", "canary", "test/podinfo"])
        .status
        .success());
    // The command waits for the next step (up to one 10 s interval) and opens the gate once.
    let want = held + 10;
    wait_for(Duration::from_secs(30), || {
        (setup.canary("podinfo")["canaryWeight"].as_u64() == Some(want)).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "promote was lost: {:#?}",
            canary_events(&setup.canary("podinfo"))
        )
    });
    // The engine writes the status first and retires the command after it (a crash in
    // between repeats the command rather than losing it): a moment later, it is gone.
    let command = setup.state().join("commands/canary/test/podinfo/command");
    wait_for(Duration::from_secs(5), || (!command.exists()).then_some(()))
        .expect("the command was retired once acted on");
    run.stop();
}

#[test]
fn a_replica_change_in_git_reaches_the_primary() {
    let apps = |replicas: u32| {
        vec![(
            "podinfo.yaml".to_string(),
            app("podinfo", "1.0.0", replicas, "1s", ""),
        )]
    };
    let (remote, setup, run) = running(&apps(1), "");
    push(&remote, &apps(3), "podinfo: 3 replicas");
    wait_for(Duration::from_secs(60), || {
        let p = setup.object("apps", "Deployment", "test", "podinfo-primary")?;
        let st: serde_json::Value = std::fs::read(
            setup
                .state()
                .join("status/apps/Deployment/test/podinfo-primary.json"),
        )
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())?;
        (p["spec"]["replicas"] == 3 && st["readyReplicas"] == 3).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "primary: {:?}",
            setup.object("apps", "Deployment", "test", "podinfo-primary")
        )
    });
    // A replica change is no new revision: nothing is analysed.
    let c = setup.canary("podinfo");
    assert_eq!(c["phase"], "Initialized", "{c}");
    run.stop();
}
