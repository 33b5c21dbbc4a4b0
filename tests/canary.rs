//! The canary engine end to end on the local target, through `gitcanary run` with a real
//! Git remote, real processes and real traffic from the built-in load tester.

mod common;
use common::*;
use std::time::Duration;

const IMAGES: &str = "    images:\n      example.com/podinfo: [\"gitcanary\", \"demo-app\", \"--port\", \"$(PORT)\"]\n";

fn app(tag: &str, error_rate: &str) -> Vec<(&'static str, String)> {
    vec![
        ("ns.yaml", NAMESPACE.to_string()),
        ("podinfo/configmap.yaml", format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: podinfo-config\n  namespace: test\ndata:\n  FAULT_ERROR_RATE: \"{error_rate}\"\n")),
        ("podinfo/deployment.yaml", format!("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: podinfo\n  namespace: test\nspec:\n  replicas: 2\n  selector:\n    matchLabels:\n      app: podinfo\n  template:\n    metadata:\n      labels:\n        app: podinfo\n    spec:\n      terminationGracePeriodSeconds: 5\n      containers:\n        - name: podinfod\n          image: example.com/podinfo:{tag}\n          ports:\n            - name: http\n              containerPort: 9898\n          envFrom:\n            - configMapRef:\n                name: podinfo-config\n          readinessProbe:\n            httpGet:\n              path: /readyz\n              port: http\n            periodSeconds: 1\n")),
        ("podinfo/canary.yaml", "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata:\n  name: podinfo\n  namespace: test\nspec:\n  targetRef:\n    apiVersion: apps/v1\n    kind: Deployment\n    name: podinfo\n  progressDeadlineSeconds: 60\n  service:\n    port: 9898\n    targetPort: 9898\n  analysis:\n    interval: 1s\n    threshold: 3\n    maxWeight: 50\n    stepWeight: 10\n    metrics:\n      - name: request-success-rate\n        thresholdRange:\n          min: 99\n        interval: 5s\n      - name: request-duration\n        thresholdRange:\n          max: 500\n        interval: 5s\n    webhooks:\n      - name: load-test\n        url: http://flagger-loadtester.test/\n        timeout: 5s\n        metadata:\n          cmd: \"hey -z 2m -q 20 -c 2 http://podinfo-canary.test:9898/\"\n".to_string()),
    ]
}

fn setup(tag: &str, error_rate: &str) -> (Remote, Setup) {
    let remote = Remote::new();
    let files = app(tag, error_rate);
    let refs: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    remote.write(&refs).push("seed");
    let setup = Setup::new(&remote.bare.display().to_string(), "  interval: 1h\n", "");
    setup.with_local_images(IMAGES);
    (remote, setup)
}

fn push(remote: &Remote, tag: &str, error_rate: &str, msg: &str) {
    let files = app(tag, error_rate);
    let refs: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    remote.write(&refs).push(msg);
}

fn canary(setup: &Setup) -> serde_json::Value {
    setup.canary("podinfo")
}

fn wait_phase(setup: &Setup, phase: &str, secs: u64) -> serde_json::Value {
    setup.wait_canary("podinfo", phase, secs)
}

fn events(c: &serde_json::Value) -> Vec<String> {
    canary_events(c)
}

fn apex(setup: &Setup) -> String {
    let out = setup.cmd(&["get", "services", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "podinfo")
        .unwrap()["address"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .to_string()
}

fn version(addr: &str) -> String {
    let (code, _, body) = http_request(addr, "GET", "/version", &[], b"");
    assert_eq!(code, 200);
    serde_json::from_slice::<serde_json::Value>(&body).unwrap()["version"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `wanted` appear in `all` in this order (other events may come between).
fn in_order(all: &[String], wanted: &[&str]) {
    let mut it = all.iter();
    for w in wanted {
        assert!(
            it.any(|e| e == w),
            "missing or out of order: {w:?} in {all:#?}"
        );
    }
}

/// The app with its Canary replaced by `canary(tag)`'s output, run until initialized,
/// then `1.0.1` pushed: the analysis of a new revision is starting.
fn analysing(canary_yaml: &dyn Fn(&str) -> String) -> (Remote, Setup, Running) {
    let files = |tag: &str| -> Vec<(&'static str, String)> {
        let mut f = app(tag, "0");
        for (p, c) in &mut f {
            if *p == "podinfo/canary.yaml" {
                *c = canary_yaml(c);
            }
        }
        f
    };
    let remote = Remote::new();
    let seed = files("1.0.0");
    let refs: Vec<(&str, &str)> = seed.iter().map(|(p, c)| (*p, c.as_str())).collect();
    remote.write(&refs).push("seed");
    let setup = Setup::new(&remote.bare.display().to_string(), "  interval: 1h\n", "");
    setup.with_local_images(IMAGES);
    let running = setup.spawn_run(&[]);
    wait_phase(&setup, "Initialized", 60);
    let next = files("1.0.1");
    let refs: Vec<(&str, &str)> = next.iter().map(|(p, c)| (*p, c.as_str())).collect();
    remote.write(&refs).push("podinfo 1.0.1");
    (remote, setup, running)
}

#[test]
fn a_new_image_is_analysed_stepped_and_promoted() {
    let (remote, setup) = setup("1.0.0", "0");
    let running = setup.spawn_run(&[]);
    wait_phase(&setup, "Initialized", 60);
    assert_eq!(version(&apex(&setup)), "1.0.0");
    push(&remote, "1.0.1", "0", "podinfo 1.0.1");
    let c = wait_phase(&setup, "Succeeded", 120);
    in_order(
        &events(&c),
        &[
            "Initialization done! podinfo.test",
            "New revision detected! Scaling up podinfo.test",
            "Starting canary analysis for podinfo.test",
            "Advance podinfo.test canary weight 10",
            "Advance podinfo.test canary weight 20",
            "Advance podinfo.test canary weight 30",
            "Advance podinfo.test canary weight 40",
            "Advance podinfo.test canary weight 50",
            "Copying podinfo.test template spec to podinfo-primary.test",
            "Routing all traffic to primary",
            "Promotion completed! Scaling down podinfo.test",
        ],
    );
    // The load test starts with the analysis, so the first check already has traffic:
    // a healthy release passes every check.
    let warnings: Vec<&serde_json::Value> = c["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["severity"] != "info")
        .collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
    assert_eq!(c["failedChecks"], 0);
    // The primary now serves the new version through the Service.
    let addr = apex(&setup);
    wait_for(Duration::from_secs(30), || {
        (version(&addr) == "1.0.1").then_some(())
    })
    .expect("primary serves 1.0.1");
    for _ in 0..20 {
        assert_eq!(version(&addr), "1.0.1");
    }
    let out = setup.cmd(&["get", "canaries"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("podinfo") && table.contains("Succeeded"),
        "{table}"
    );
    rollout_note_is_in_git(&remote);
    running.stop();
}

/// The finished rollout is a note on the commit that introduced 1.0.1, pushed to the
/// remote: plain git shows it with every metric sample, and `gitcanary history` lists
/// it from a fresh clone with no state dir (issue 12).
fn rollout_note_is_in_git(remote: &Remote) {
    let commit = git(&remote.work, &["rev-parse", "HEAD"]);
    let bare = remote.bare.to_str().unwrap();
    wait_for(Duration::from_secs(30), || {
        let out = std::process::Command::new("git")
            .args([
                "--git-dir",
                bare,
                "notes",
                "--ref=gitcanary",
                "show",
                &commit,
            ])
            .output()
            .unwrap();
        out.status.success().then_some(())
    })
    .expect("a rollout note on the remote");
    remote.fetch_notes();
    let log = git(&remote.work, &["log", "--notes=gitcanary", "-1"]);
    for want in [
        "podinfo 1.0.1",
        "Notes (gitcanary):",
        "gitcanary rollout test/podinfo: Succeeded",
        "From 1.0.0 to 1.0.1",
        "Reason: Canary analysis completed successfully, promotion finished.",
        "Max weight: 50%, failed checks: 0",
        "(threshold >= 99)  pass",
        "(threshold <= 500)  pass",
        "load-test (rollout): ok",
        "Promotion completed! Scaling down podinfo.test",
        "```json",
    ] {
        assert!(log.contains(want), "{want:?} not in\n{log}");
    }
    assert!(!log.contains("FAIL"), "{log}");
    let samples = log.matches("request-success-rate  ").count();
    assert!(samples >= 5, "one sample per check: {samples}\n{log}");
    let fresh = remote.dir.path().join("fresh");
    git(remote.dir.path(), &["clone", "-q", bare, "fresh"]);
    let out = std::process::Command::new(bin())
        .args(["history", "--config", "absent.yaml"])
        .current_dir(&fresh)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "test/podinfo",
        "1.0.0 → 1.0.1",
        "Succeeded",
        "50%",
        &commit[..12],
        "podinfo 1.0.1",
    ] {
        assert!(table.contains(want), "{want:?} not in\n{table}");
    }
}

#[test]
fn a_faulty_config_is_rolled_back_and_the_primary_keeps_serving() {
    let (remote, setup) = setup("1.0.0", "0");
    // Alerts at severity error go to a generic provider whose address comes from an env var.
    // A second provider takes its address from a Secret, as in Flagger's docs.
    let (alert_url, alerts) = receiver();
    let provider = format!("apiVersion: flagger.app/v1beta1\nkind: AlertProvider\nmetadata:\n  name: on-call\n  namespace: test\nspec:\n  type: generic\n  addressEnv: GITCANARY_ALERT_URL\n---\napiVersion: flagger.app/v1beta1\nkind: AlertProvider\nmetadata:\n  name: team-chat\n  namespace: test\nspec:\n  type: gchat\n  secretRef:\n    name: team-chat-url\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: team-chat-url\n  namespace: test\nstringData:\n  address: {alert_url}\n");
    let canary = app("1.0.0", "0").into_iter().find(|(p, _)| *p == "podinfo/canary.yaml").unwrap().1.replace(
        "    webhooks:\n",
        "    alerts:\n      - name: on-call\n        severity: error\n        providerRef:\n          name: on-call\n      - name: team\n        severity: error\n        providerRef:\n          name: team-chat\n    webhooks:\n",
    );
    remote
        .write(&[
            ("podinfo/alerts.yaml", &provider),
            ("podinfo/canary.yaml", &canary),
        ])
        .push("alerts");
    let running = setup.spawn_run(&[("GITCANARY_ALERT_URL", &alert_url)]);
    wait_phase(&setup, "Initialized", 60);
    // Only the ConfigMap changes (the Canary keeps its alerts).
    let cm = app("1.0.0", "0.5")
        .into_iter()
        .find(|(p, _)| *p == "podinfo/configmap.yaml")
        .unwrap()
        .1;
    remote
        .write(&[("podinfo/configmap.yaml", &cm)])
        .push("make half the requests fail");
    let c = wait_phase(&setup, "Failed", 120);
    let ev = events(&c);
    assert!(
        ev.iter().any(
            |e| e.starts_with("Halt podinfo.test advancement success rate ")
                && e.ends_with("% < 99%")
        ),
        "{ev:#?}"
    );
    in_order(
        &ev,
        &[
            "New revision detected! Scaling up podinfo.test",
            "Rolling back podinfo.test failed checks threshold reached 3",
            "Canary failed! Scaling down podinfo.test",
        ],
    );
    assert_eq!(c["canaryWeight"], 0);
    let got = wait_for(Duration::from_secs(10), || {
        let a = alerts.lock().unwrap().clone();
        let generic = a.iter().any(|b| {
            b.contains("Canary failed! Scaling down podinfo.test") && b.contains("\"severity\"")
        });
        let gchat = a.iter().any(|b| {
            b.starts_with("{\"text\":\"podinfo.test: Canary failed! Scaling down podinfo.test")
        });
        (generic && gchat).then_some(a)
    })
    .expect("the rollback alerted both providers");
    let generic: Vec<&String> = got.iter().filter(|b| b.contains("\"severity\"")).collect();
    assert!(
        generic.iter().all(|b| b.contains("\"severity\":\"error\"")),
        "the severity filter drops info alerts: {got:?}"
    );
    // The primary keeps 100% of the traffic, with no errors.
    let addr = apex(&setup);
    for _ in 0..50 {
        let (code, _, _) = http_request(&addr, "GET", "/", &[], b"");
        assert_eq!(code, 200);
    }
    running.stop();
}

#[test]
fn a_killed_gitcanary_resumes_the_analysis_and_promotes_once() {
    let (remote, setup) = setup("1.0.0", "0");
    let mut running = setup.spawn_run(&[]);
    wait_phase(&setup, "Initialized", 60);
    push(&remote, "1.0.2", "0", "podinfo 1.0.2");
    let before = wait_for(Duration::from_secs(60), || {
        let c = canary(&setup);
        (c["phase"] == "Progressing" && c["canaryWeight"].as_u64()? >= 20).then_some(c)
    })
    .expect("mid-analysis");
    running.child.kill().unwrap(); // SIGKILL mid-analysis
    running.child.wait().unwrap();
    let after_kill = canary(&setup);
    assert!(
        after_kill["canaryWeight"].as_u64() >= before["canaryWeight"].as_u64(),
        "the weight persisted"
    );
    let running = setup.spawn_run(&[]);
    let c = wait_phase(&setup, "Succeeded", 120);
    let ev = events(&c);
    assert_eq!(
        ev.iter()
            .filter(|e| e.starts_with("Copying podinfo.test template spec"))
            .count(),
        1,
        "promoted once: {ev:#?}"
    );
    assert!(
        !ev.iter()
            .skip_while(|e| !e.contains("weight 20"))
            .any(|e| e == "Advance podinfo.test canary weight 10"),
        "did not start over: {ev:#?}"
    );
    let addr = apex(&setup);
    wait_for(Duration::from_secs(30), || {
        (version(&addr) == "1.0.2").then_some(())
    })
    .expect("primary serves 1.0.2");
    running.stop();
}

#[test]
fn a_metric_template_is_answered_by_a_real_prometheus() {
    let prometheus = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .iter()
        .find(|p| std::path::Path::new(p).exists())
        .copied()
        .expect("prometheus is installed (tests/run.sh installs it)");
    let (remote, setup) = setup("1.0.0", "0");
    // gitcanary on a known port, so Prometheus can scrape it.
    let gc_port = free_port();
    setup.edit_config(
        "  listen: 127.0.0.1:0\n",
        &format!("  listen: 127.0.0.1:{gc_port}\n"),
    );
    let prom_dir = tempfile::tempdir().unwrap();
    let prom_port = free_port();
    std::fs::write(
        prom_dir.path().join("prometheus.yml"),
        format!("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: gitcanary\n    static_configs:\n      - targets: ['127.0.0.1:{gc_port}']\n"),
    )
    .unwrap();
    let mut prom = std::process::Command::new(prometheus)
        .arg(format!(
            "--config.file={}",
            prom_dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            prom_dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The canary's checks: a MetricTemplate with Linkerd's PromQL, unchanged. The
    // threshold sits above what a healthy canary reaches, so the check proves a real
    // value came back and was compared.
    let template = format!("apiVersion: flagger.app/v1beta1\nkind: MetricTemplate\nmetadata:\n  name: success-rate\n  namespace: test\nspec:\n  provider:\n    type: prometheus\n    address: http://127.0.0.1:{prom_port}\n  query: |\n    sum(rate(response_total{{namespace=\"{{{{ namespace }}}}\",deployment=\"{{{{ target }}}}\",classification!=\"failure\",direction=\"inbound\"}}[{{{{ interval }}}}])) / sum(rate(response_total{{namespace=\"{{{{ namespace }}}}\",deployment=\"{{{{ target }}}}\",direction=\"inbound\"}}[{{{{ interval }}}}])) * 100\n");
    let canary = app("1.0.0", "0").into_iter().find(|(p, _)| *p == "podinfo/canary.yaml").unwrap().1.replace(
        "    metrics:\n",
        "    metrics:\n      - name: prom-success-rate\n        templateRef:\n          name: success-rate\n        thresholdRange:\n          min: 100.5\n        interval: 10s\n",
    )
    // Prometheus needs a few scrapes before a 10s rate() has data: be patient.
    .replace("threshold: 3\n", "threshold: 30\n");
    remote
        .write(&[
            ("podinfo/metric-template.yaml", &template),
            ("podinfo/canary.yaml", &canary),
        ])
        .push("metric template");
    let running = setup.spawn_run(&[]);
    wait_phase(&setup, "Initialized", 60);
    let mut files = app("1.0.3", "0");
    files.retain(|(p, _)| *p != "podinfo/canary.yaml");
    let refs: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    remote.write(&refs).push("podinfo 1.0.3");
    let c = wait_for(Duration::from_secs(120), || {
        let c = setup.canary("podinfo");
        let ev = events(&c);
        ev.iter()
            .any(|e| {
                e.starts_with("Halt podinfo.test advancement prom-success-rate 100.00 < 100.5")
            })
            .then_some(c)
    })
    .unwrap_or_else(|| {
        panic!(
            "Prometheus never answered the template query: {:#?}",
            events(&setup.canary("podinfo"))
        )
    });
    assert!(
        !events(&c)
            .iter()
            .any(|e| e.starts_with("Metric query failed")),
        "{:#?}",
        events(&c)
    );
    running.stop();
    let _ = prom.kill();
    let _ = prom.wait();
}

#[test]
fn a_webhook_answering_an_endless_body_fails_with_the_cap() {
    let hook = endless_body_server(500);
    let (_remote, setup, running) = analysing(&|c: &str| {
        c.replace(
            "    webhooks:\n",
            &format!("    webhooks:\n      - name: smoke\n        type: pre-rollout\n        url: http://{hook}/\n        timeout: 10s\n"),
        )
    });
    let failed = wait_for(Duration::from_secs(90), || {
        events(&canary(&setup))
            .into_iter()
            .find(|e| e.contains("pre-rollout check smoke failed"))
    })
    .expect("the pre-rollout webhook fails");
    assert_eq!(
        failed,
        "Halt podinfo.test advancement pre-rollout check smoke failed webhook response: response body larger than 64 KiB"
    );
    running.stop();
}

#[test]
fn manual_gates_promote_abort_and_describe() {
    let (remote, setup) = setup("1.0.0", "0");
    // A confirm-promotion gate on the load tester, closed until opened.
    let canary = app("1.0.0", "0").into_iter().find(|(p, _)| *p == "podinfo/canary.yaml").unwrap().1.replace(
        "    webhooks:\n",
        "    webhooks:\n      - name: gate\n        type: confirm-promotion\n        url: http://flagger-loadtester.test/gate/check\n",
    );
    remote
        .write(&[("podinfo/canary.yaml", &canary)])
        .push("promotion gate");
    let running = setup.spawn_run(&[]);
    wait_phase(&setup, "Initialized", 60);
    let mut files = app("1.1.0", "0");
    files.retain(|(p, _)| *p != "podinfo/canary.yaml");
    let refs: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    remote.write(&refs).push("podinfo 1.1.0");
    wait_phase(&setup, "WaitingPromotion", 120);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        setup.canary("podinfo")["phase"],
        "WaitingPromotion",
        "the closed gate holds"
    );
    let out = setup.cmd(&["describe", "canary", "test/podinfo"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Status:       WaitingPromotion")
            && text.contains("request-success-rate")
            && text.contains("threshold >= 99"),
        "{text}"
    );
    assert!(setup
        .cmd(&["promote", "canary", "test/podinfo"])
        .status
        .success());
    wait_phase(&setup, "Succeeded", 60);

    let mut files = app("1.2.0", "0");
    files.retain(|(p, _)| *p != "podinfo/canary.yaml");
    let refs: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    remote.write(&refs).push("podinfo 1.2.0");
    wait_phase(&setup, "Progressing", 60);
    assert!(setup
        .cmd(&["abort", "canary", "test/podinfo"])
        .status
        .success());
    let c = wait_phase(&setup, "Failed", 30);
    assert!(
        events(&c).contains(&"Rolling back podinfo.test aborted by gitcanary abort".to_string()),
        "{:#?}",
        events(&c)
    );
    assert!(
        !setup
            .cmd(&["promote", "canary", "test/nope"])
            .status
            .success(),
        "unknown canaries are an error"
    );
    running.stop();
}

#[test]
fn ab_testing_routes_matching_requests_to_the_canary_with_real_traffic() {
    let ab = "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata:\n  name: podinfo\n  namespace: test\nspec:\n  targetRef:\n    apiVersion: apps/v1\n    kind: Deployment\n    name: podinfo\n  progressDeadlineSeconds: 60\n  service:\n    port: 9898\n    targetPort: 9898\n  analysis:\n    interval: 1s\n    threshold: 3\n    iterations: 12\n    match:\n      - headers:\n          x-canary:\n            exact: \"insider\"\n      - headers:\n          cookie:\n            regex: \"^(.*?;)?(canary=always)(;.*)?$\"\n    metrics:\n      - name: request-success-rate\n        thresholdRange:\n          min: 99\n        interval: 5s\n    webhooks:\n      - name: load-test\n        url: http://flagger-loadtester.test/\n        timeout: 5s\n        metadata:\n          cmd: \"hey -z 2m -q 10 -c 2 -H 'X-Canary: insider' http://podinfo.test:9898/\"\n";
    let (_remote, setup, running) = analysing(&|_| ab.to_string());
    wait_phase(&setup, "Progressing", 60);
    // While the analysis runs, the apex sends insiders (header or cookie) to the canary
    // and everyone else to the primary.
    let addr = apex(&setup);
    let get = |headers: &[(&str, &str)]| {
        let (code, _, body) = http_request(&addr, "GET", "/version", headers, b"");
        assert_eq!(code, 200);
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["version"]
            .as_str()
            .unwrap()
            .to_string()
    };
    wait_for(Duration::from_secs(20), || {
        (get(&[("X-Canary", "insider")]) == "1.0.1").then_some(())
    })
    .expect("insiders reach the canary");
    for _ in 0..10 {
        assert_eq!(get(&[]), "1.0.0", "others stay on the primary");
        assert_eq!(get(&[("Cookie", "canary=always")]), "1.0.1");
        assert_eq!(get(&[("Cookie", "a=b;canary=always")]), "1.0.1");
        assert_eq!(get(&[("X-Canary", "outsider")]), "1.0.0");
    }
    let c = wait_phase(&setup, "Succeeded", 120);
    let ev = events(&c);
    assert!(
        ev.iter()
            .any(|e| e == "Advance podinfo.test canary iteration 1/12"),
        "{ev:#?}"
    );
    wait_for(Duration::from_secs(30), || {
        (get(&[]) == "1.0.1").then_some(())
    })
    .expect("promoted");
    running.stop();
}

#[test]
fn traffic_mirroring_copies_requests_to_the_canary_while_the_primary_answers() {
    let bg = "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata:\n  name: podinfo\n  namespace: test\nspec:\n  targetRef:\n    apiVersion: apps/v1\n    kind: Deployment\n    name: podinfo\n  progressDeadlineSeconds: 60\n  service:\n    port: 9898\n    targetPort: 9898\n  analysis:\n    interval: 1s\n    threshold: 3\n    iterations: 15\n    mirror: true\n    mirrorWeight: 100\n";
    let (_remote, setup, running) = analysing(&|_| bg.to_string());
    wait_for(Duration::from_secs(60), || {
        events(&canary(&setup))
            .iter()
            .any(|e| e == "Advance podinfo.test canary iteration 2/15")
            .then_some(())
    })
    .expect("mirroring iterations");
    let addr = apex(&setup);
    let out = setup.cmd(&["get", "services", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let canary_addr = v
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "podinfo-canary")
        .unwrap()["address"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .to_string();
    let teapots = || -> u64 {
        let (_, _, body) = http_request(&canary_addr, "GET", "/metrics", &[], b"");
        String::from_utf8_lossy(&body)
            .lines()
            .find(|l| l.starts_with("http_requests_total{status=\"4xx\"}"))
            .and_then(|l| l.split_whitespace().last()?.parse().ok())
            .unwrap_or(0)
    };
    let before = teapots();
    for _ in 0..20 {
        // The primary answers every request...
        assert_eq!(version(&addr), "1.0.0");
        let (code, _, _) = http_request(&addr, "GET", "/status/418", &[], b"");
        assert_eq!(code, 418);
    }
    // ...and the canary got a copy of each.
    let copies = wait_for(Duration::from_secs(10), || {
        let n = teapots() - before;
        (n >= 20).then_some(n)
    })
    .unwrap_or_else(|| panic!("canary saw {} mirrored requests", teapots() - before));
    assert_eq!(copies, 20);
    let c = wait_phase(&setup, "Succeeded", 120);
    in_order(
        &events(&c),
        &[
            "Advance podinfo.test canary iteration 15/15",
            "Stop traffic mirroring and route all traffic to canary",
            "Copying podinfo.test template spec to podinfo-primary.test",
            "Promotion completed! Scaling down podinfo.test",
        ],
    );
    running.stop();
}

fn generated_deployment(setup: &Setup, name: &str) -> bool {
    setup.object("apps", "Deployment", "test", name).is_some()
}

fn services(setup: &Setup) -> Vec<String> {
    let out = setup.cmd(&["get", "services", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v.as_array()
        .into_iter()
        .flatten()
        .map(|s| s["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn removing_a_canary_with_revert_on_deletion_hands_traffic_back_to_the_target() {
    let (remote, setup) = setup("1.0.0", "0");
    let mut files = app("1.0.0", "0");
    for (p, c) in &mut files {
        if *p == "podinfo/canary.yaml" {
            *c = c.replace(
                "spec:\n  targetRef:",
                "spec:\n  revertOnDeletion: true\n  targetRef:",
            );
        }
    }
    let refs: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    remote.write(&refs).push("revertOnDeletion");
    let running = setup.spawn_run(&[]);
    wait_phase(&setup, "Initialized", 60);
    assert!(generated_deployment(&setup, "podinfo-primary"));
    remote.remove("podinfo/canary.yaml").push("drop the canary");
    // The primary and the -primary/-canary Services go; the apex Service stays and
    // now reaches the target's own pods, which run the replicas Git gives them.
    wait_for(Duration::from_secs(60), || {
        (!generated_deployment(&setup, "podinfo-primary")).then_some(())
    })
    .expect("primary removed");
    let svcs = services(&setup);
    assert!(svcs.contains(&"podinfo".to_string()), "{svcs:?}");
    assert!(
        !svcs
            .iter()
            .any(|s| s.ends_with("-primary") || s.ends_with("-canary")),
        "{svcs:?}"
    );
    let addr = apex(&setup);
    for _ in 0..10 {
        assert_eq!(version(&addr), "1.0.0");
    }
    assert!(!setup
        .state()
        .join("status/flagger.app/Canary/test/podinfo.json")
        .exists());
    running.stop();
}

#[test]
fn removing_a_canary_restores_the_target_as_git_says() {
    let (remote, setup) = setup("1.0.0", "0");
    let running = setup.spawn_run(&[]);
    wait_phase(&setup, "Initialized", 60);
    remote.remove("podinfo/canary.yaml").push("drop the canary");
    wait_for(Duration::from_secs(60), || {
        (!generated_deployment(&setup, "podinfo-primary")).then_some(())
    })
    .expect("primary removed");
    // Everything the Canary generated is gone, and the target is back at 2 replicas.
    wait_for(Duration::from_secs(30), || {
        let st: serde_json::Value = std::fs::read(
            setup
                .state()
                .join("status/apps/Deployment/test/podinfo.json"),
        )
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())?;
        (st["readyReplicas"] == 2).then_some(())
    })
    .expect("target runs its 2 replicas");
    let svcs = services(&setup);
    assert!(!svcs.iter().any(|s| s.starts_with("podinfo")), "{svcs:?}");
    running.stop();
}

#[test]
fn session_affinity_keeps_a_user_on_the_canary_through_the_analysis() {
    let (_remote, setup, running) = analysing(&|c: &str| {
        c
            .replace("    interval: 1s\n", "    interval: 2s\n")
            .replace(
                "    stepWeight: 10\n",
                "    stepWeight: 10\n    sessionAffinity:\n      cookieName: flagger-cookie\n      maxAge: 21600\n",
            )
    });
    wait_for(Duration::from_secs(60), || {
        events(&canary(&setup))
            .iter()
            .any(|e| e == "Advance podinfo.test canary weight 10")
            .then_some(())
    })
    .expect("traffic shifting");
    let addr = apex(&setup);
    // A new user lands on the canary by weight and gets the affinity cookie...
    let cookie = wait_for(Duration::from_secs(10), || {
        let (code, headers, body) = http_request(&addr, "GET", "/version", &[], b"");
        assert_eq!(code, 200);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let set = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
            .map(|(_, v)| v.clone());
        if v["version"] == "1.0.1" {
            let set = set.expect("a request sent to the canary by weight gets the cookie");
            assert!(
                set.starts_with("flagger-cookie=") && set.contains("Max-Age=21600"),
                "{set}"
            );
            Some(set.split(';').next().unwrap().to_string())
        } else {
            assert!(set.is_none(), "no cookie from the primary");
            None
        }
    })
    .expect("the canary got a user");
    // ...and stays there while the analysis runs.
    for _ in 0..30 {
        let (_, _, body) = http_request(&addr, "GET", "/version", &[("Cookie", &cookie)], b"");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["version"], "1.0.1");
    }
    wait_phase(&setup, "Succeeded", 120);
    running.stop();
}

/// `app()` with one-minute metric windows, as in the rollback walk-through, a faster
/// load test, and replies delayed by `delay_ms`.
fn app_slow(tag: &str, delay_ms: u32) -> Vec<(&'static str, String)> {
    let mut files = app(tag, "0");
    for (p, c) in &mut files {
        if *p == "podinfo/canary.yaml" {
            *c = c
                .replace("        interval: 5s\n", "        interval: 1m\n")
                .replace("-q 20 -c 2", "-q 50 -c 2");
        } else if *p == "podinfo/configmap.yaml" {
            c.push_str(&format!("  FAULT_DELAY_MS: \"{delay_ms}\"\n"));
        }
    }
    files
}

fn push_files(remote: &Remote, files: &[(&'static str, String)], msg: &str) {
    let refs: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    remote.write(&refs).push(msg);
}

#[test]
fn a_slow_release_right_after_a_good_one_halts_at_its_first_check_and_a_revert_says_what_runs() {
    // When the slow release starts, its one-minute window still holds hundreds of the
    // good release's fast requests: they must not hide its own slow ones.
    let files = app_slow;
    let remote = Remote::new();
    push_files(&remote, &files("1.0.0", 0), "seed");
    let setup = Setup::new(&remote.bare.display().to_string(), "  interval: 1h\n", "");
    setup.with_local_images(IMAGES);
    let running = setup.spawn_run(&[]);
    wait_phase(&setup, "Initialized", 60);
    push_files(&remote, &files("1.0.1", 0), "podinfo 1.0.1");
    wait_phase(&setup, "Succeeded", 120);
    push_files(
        &remote,
        &files("1.0.2", 600),
        "podinfo 1.0.2 answers in 600ms",
    );
    let c = wait_phase(&setup, "Failed", 120);
    let ev = events(&c);
    let start = ev
        .iter()
        .rposition(|e| e == "New revision detected! Scaling up podinfo.test")
        .unwrap();
    let slow = &ev[start..];
    let first_check = slow
        .iter()
        .skip_while(|e| *e != "Advance podinfo.test canary weight 10")
        .skip(1)
        .find(|e| e.starts_with("Halt ") || e.starts_with("Advance "))
        .unwrap_or_else(|| panic!("no check after weight 10: {slow:#?}"));
    assert!(
        first_check.starts_with("Halt podinfo.test advancement request duration ")
            && first_check.ends_with(" > 500ms"),
        "the first check counts only the slow revision: {slow:#?}"
    );
    assert!(
        !slow.iter().any(|e| e.contains("canary weight 20")),
        "{slow:#?}"
    );

    // Git goes back to the promoted revision: nothing starts, and the status says what
    // serves the traffic.
    push_files(&remote, &files("1.0.1", 0), "revert to podinfo 1.0.1");
    let c = wait_for(Duration::from_secs(60), || {
        let c = canary(&setup);
        c["message"]
            .as_str()?
            .starts_with("podinfo-primary.test serves the promoted revision ")
            .then_some(c)
    })
    .unwrap_or_else(|| panic!("no message about the promoted revision: {}", canary(&setup)));
    assert_eq!(c["phase"], "Failed", "the last analysis did fail");
    assert_eq!(version(&apex(&setup)), "1.0.1");
    let out = setup.cmd(&["get", "canaries"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("MESSAGE") && table.contains("serves the promoted revision"),
        "{table}"
    );
    let (_, log) = running.stop();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("equals the promoted revision"))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "one line says why nothing starts: {lines:#?}"
    );
    assert!(
        lines[0].contains("podinfo-primary.test serves it"),
        "{}",
        lines[0]
    );
}
