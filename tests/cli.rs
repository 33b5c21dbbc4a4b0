//! End-to-end through the CLI: validate, diff, config errors, JSON logs, `run` with the
//! local watch and the push webhook, `/metrics`.

mod common;
use common::*;
use hmac::Mac;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn validate_reports_every_error_and_exit_codes() {
    let ok = Command::new(bin())
        .args([
            "validate",
            concat!(env!("CARGO_MANIFEST_DIR"), "/examples-repo"),
        ])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  namespace: x\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.yaml"),
        "kind: Service\nmetadata: {name: s}\nspec:\n  ports:\n    - port: http\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("c.yml"), "a: [\n").unwrap();
    let out = Command::new(bin())
        .arg("validate")
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("a.yaml:1:1: metadata.name: missing required field"),
        "{text}"
    );
    assert!(
        text.contains("b.yaml:1:1: apiVersion: missing required field"),
        "{text}"
    );
    assert!(
        text.contains(
            "b.yaml:5:13: spec.ports[0].port: expected an integer, found string \"http\""
        ),
        "{text}"
    );
    assert!(text.contains("c.yml:2:1: invalid YAML"), "{text}");
    assert!(text.contains("4 errors"), "{text}");
}

#[test]
fn config_errors_name_key_and_line_and_env_var_works() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("g.yaml");
    std::fs::write(&cfg, "source:\n  url: /tmp/x\ntarget:\n  locl: {}\n").unwrap();
    let out = Command::new(bin())
        .args(["sync", "--once"])
        .env("GITCANARY_CONFIG", &cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("g.yaml:4:3: target.locl: unknown field `locl`"),
        "{err}"
    );

    std::fs::write(
        &cfg,
        "source:\n  url: /tmp/x\ntarget:\n  kubernetes:\n    context: prod\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["--config", cfg.to_str().unwrap(), "sync", "--once"])
        .env("HOME", dir.path())
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "target.kubernetes ($KUBECONFIG or ~/.kube/config): failed to read kubeconfig"
        ),
        "{err}"
    );
}

#[test]
fn a_missing_config_says_how_to_give_one_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args(["describe", "canary", "test/podinfo"])
        .current_dir(dir.path())
        .env_remove("GITCANARY_CONFIG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        err.trim_end(),
        "error: gitcanary.yaml: no such config file; pass --config FILE or set GITCANARY_CONFIG"
    );
}

#[test]
fn bench_helm_names_the_flag_when_the_repository_has_no_release() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args(["bench", "helm", "--repo"])
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("no HelmRelease in releases/test/frontend.yaml: pass --repo with a gitcanary checkout's examples-repo"),
        "{err}"
    );
}

#[test]
fn diff_exit_codes_follow_flux() {
    let (remote, setup) = seeded(&[("cfg.yaml", &configmap("cfg", "one"))], "one", "");
    let out = setup.cmd(&["diff"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("► ConfigMap/test/cfg created"));
    assert!(setup.sync().0);
    assert_eq!(setup.cmd(&["diff"]).status.code(), Some(0));
    remote
        .write(&[("cfg.yaml", &configmap("cfg", "two"))])
        .push("two");
    let out = setup.cmd(&["diff"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text.contains("► ConfigMap/test/cfg drifted")
            && text.contains("  -   key: one")
            && text.contains("  +   key: two"),
        "{text}"
    );
    remote.write(&[("bad.yaml", "a: [")]).push("bad");
    assert_eq!(setup.cmd(&["diff"]).status.code(), Some(2));
    // diff applied nothing
    assert_eq!(
        setup.object("core", "ConfigMap", "test", "cfg").unwrap()["data"]["key"],
        "one"
    );
}

#[test]
fn json_logs_have_msg() {
    let (_remote, setup) = seeded(&[("cfg.yaml", &configmap("cfg", "one"))], "one", "");
    let out = Command::new(bin())
        .arg("--config")
        .arg(&setup.config)
        .args(["--log-format", "json", "sync", "--once"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["msg"] == "ConfigMap/test/cfg created" && l["source"] == "flux-system"),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l["msg"]
            .as_str()
            .unwrap()
            .starts_with("Reconciliation finished in")),
        "{lines:?}"
    );
}

#[test]
fn run_syncs_local_commits_without_waiting_for_the_interval() {
    let (remote, setup) = seeded(
        &[("cfg.yaml", &configmap("cfg", "one"))],
        "one",
        "  interval: 1h\n",
    );
    let running = setup.spawn_run(&[]);
    wait_for(Duration::from_secs(20), || {
        setup.object("core", "ConfigMap", "test", "cfg")
    })
    .expect("first sync");
    let addr = setup.server_address();
    std::thread::sleep(Duration::from_millis(300));
    let pushed = Instant::now();
    remote
        .write(&[("cfg.yaml", &configmap("cfg", "two"))])
        .push("two");
    wait_for(Duration::from_secs(15), || {
        (setup.object("core", "ConfigMap", "test", "cfg")?["data"]["key"] == "two").then_some(())
    })
    .expect("a local commit is synced long before the 1h interval");
    eprintln!("local commit synced {:?} after push", pushed.elapsed());
    // Idle: no commit, no sync. (Our own fetch reads the watched refs; reads must not
    // trigger the next sync.)
    std::thread::sleep(Duration::from_millis(1500));
    let (code, body) = http(&addr, "GET", "/metrics", &[], "");
    assert_eq!(code, 200);
    let syncs: f64 = body
        .lines()
        .find(|l| l.starts_with("gitcanary_sync_total{source=\"flux-system\",result=\"success\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap();
    assert!(syncs <= 3.0, "an idle run kept syncing: {syncs} syncs");
    assert!(
        body.contains("gitcanary_sync_total{source=\"flux-system\",result=\"success\"}"),
        "{body}"
    );
    let (code, _) = http(&addr, "POST", "/hook", &[], "{}");
    assert_eq!(code, 404, "no secret configured: the receiver is off");
    running.stop();
}

#[test]
fn signed_push_webhook_triggers_a_fetch() {
    let remote = Remote::new();
    remote
        .write(&[("cfg.yaml", &configmap("cfg", "one"))])
        .push("one");
    let daemon = GitDaemon::start(remote.dir.path(), free_port());
    let setup = Setup::new(&daemon.url("remote.git"), "  interval: 1h\n", "");
    setup.edit_config(
        "  listen: 127.0.0.1:0\n",
        "  listen: 127.0.0.1:0\n  webhookSecretEnv: HOOK_SECRET\n",
    );
    let running = setup.spawn_run(&[("HOOK_SECRET", "s3cr3t")]);
    wait_for(Duration::from_secs(20), || {
        setup.object("core", "ConfigMap", "test", "cfg")
    })
    .expect("first sync");
    let addr = setup.server_address();
    remote
        .write(&[("cfg.yaml", &configmap("cfg", "two"))])
        .push("two");

    let body = r#"{"ref":"refs/heads/main"}"#;
    let (code, _) = http(
        &addr,
        "POST",
        "/hook",
        &[("X-Hub-Signature-256", "sha256=00")],
        body,
    );
    assert_eq!(code, 401);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        setup.object("core", "ConfigMap", "test", "cfg").unwrap()["data"]["key"],
        "one",
        "a bad signature triggers nothing"
    );

    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"s3cr3t").unwrap();
    mac.update(body.as_bytes());
    let sig: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let (code, _) = http(
        &addr,
        "POST",
        "/hook",
        &[("X-Hub-Signature-256", &format!("sha256={sig}"))],
        body,
    );
    assert_eq!(code, 202);
    wait_for(Duration::from_secs(15), || {
        (setup.object("core", "ConfigMap", "test", "cfg")?["data"]["key"] == "two").then_some(())
    })
    .expect("the webhook triggers a sync");
    let (_, stderr) = running.stop();
    assert!(
        !stderr.contains("s3cr3t"),
        "the secret never reaches the logs"
    );
}

/// Runs `gitcanary validate` on a folder holding `canary.yaml`; its exit code and output.
fn validate_canary(yaml: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("canary.yaml"), yaml).unwrap();
    let out = Command::new(bin())
        .arg("validate")
        .arg(dir.path())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn validate_applies_flaggers_canary_rules_at_the_field_line() {
    let (code, text) = validate_canary(
        "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata:\n  name: podinfo\n  namespace: test\nspec:\n  targetRef:\n    kind: Deployment\n    name: podinfo\n  service:\n    port: 9898\n  analysis:\n    interval: 500ms\n    threshold: 5\n    stepWeight: 10\n",
    );
    assert_eq!(code, Some(1));
    assert!(
        text.contains("canary.yaml:13:15: spec.analysis.interval: must be at least 1s"),
        "{text}"
    );
}

#[test]
fn validate_rejects_canary_weights_and_match_rules_at_their_line() {
    let (code, text) = validate_canary(
        "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata:\n  name: podinfo\n  namespace: test\nspec:\n  targetRef:\n    kind: Deployment\n    name: podinfo\n  service:\n    port: 9898\n  analysis:\n    interval: 10s\n    threshold: 5\n    maxWeight: 150\n    stepWeights:\n      - 20\n      - 10\n    iterations: 3\n    match:\n      - headers:\n          x-canary:\n            regex: \"^(insider\"\n",
    );
    assert_eq!(code, Some(1));
    for want in [
        "canary.yaml:15:16: spec.analysis.maxWeight: must be between 1 and 100, found 150",
        "canary.yaml:18:9: spec.analysis.stepWeights[1]: must be greater than the step before it (20), found 10",
        "canary.yaml:23:20: spec.analysis.match[0].headers.x-canary.regex: ",
    ] {
        assert!(text.contains(want), "{want:?} in {text}");
    }
}

#[test]
fn helm_template_prints_rendered_objects_and_fails_with_positions() {
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples-repo/releases/test/frontend.yaml"
    );
    let out = Command::new(bin())
        .args(["helm", "template", file])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Helm's install order: Service before Deployment before HorizontalPodAutoscaler.
    let svc = text.find("kind: Service").expect("service");
    let dep = text.find("kind: Deployment").expect("deployment");
    let hpa = text.find("kind: HorizontalPodAutoscaler").expect("hpa");
    assert!(svc < dep && dep < hpa, "{text}");
    assert!(
        text.contains("# Source: charts/podinfo/templates/deployment.yaml"),
        "{text}"
    );
    assert!(text.contains("helm.sh/chart: podinfo-"), "{text}");
    assert!(
        text.contains("app.kubernetes.io/managed-by: Helm"),
        "{text}"
    );

    // A chart that fails to render: non-zero exit, file:line in the message.
    let remote = Remote::new();
    remote.copy_from(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples-repo"
    )));
    remote.write(&[(
        "charts/podinfo/templates/oops.yaml",
        "a: 1\nb: {{ required \"image.digest is required\" .Values.image.digest }}\n",
    )]);
    let out = Command::new(bin())
        .args(["helm", "template"])
        .arg(remote.work.join("releases/test/frontend.yaml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("releases/test/frontend.yaml:2:1: spec.values:"),
        "{err}"
    );
    assert!(
        err.contains("charts/podinfo/templates/oops.yaml:2:"),
        "{err}"
    );
    assert!(err.contains("image.digest is required"), "{err}");
}

#[test]
fn an_empty_webhook_secret_is_refused_at_start() {
    let (_remote, setup) = seeded(&[("cfg.yaml", &configmap("cfg", "one"))], "one", "");
    setup.edit_config(
        "  listen: 127.0.0.1:0\n",
        "  listen: 127.0.0.1:0\n  webhookSecretEnv: HOOK_SECRET\n",
    );
    let stderr = setup.run_refused(&[("HOOK_SECRET", "")]);
    assert!(
        stderr.contains(
            "server.webhookSecretEnv: environment variable HOOK_SECRET is empty; an empty secret would admit anyone"
        ),
        "{stderr}"
    );
    let stderr = setup.run_refused(&[]);
    assert!(
        stderr.contains("server.webhookSecretEnv: environment variable HOOK_SECRET is not set"),
        "{stderr}"
    );
}

#[test]
fn readyz_waits_for_an_applied_revision_and_healthz_does_not() {
    let bad = "apiVersion: v1\nkind: ConfigMap\nmetadata: [\n";
    let (remote, setup) = seeded(&[("cfg.yaml", bad)], "broken", "  interval: 1s\n");
    let running = setup.spawn_run(&[]);
    let addr = setup.server_address();
    wait_for(Duration::from_secs(20), || {
        setup.status()["lastError"].as_str().map(|_| ())
    })
    .expect("the first sync fails");
    let (code, body) = http(&addr, "GET", "/readyz", &[], "");
    assert_eq!(
        (code, body.as_str()),
        (503, "not ready: no revision applied yet\n")
    );
    assert_eq!(http(&addr, "GET", "/healthz", &[], "").0, 200);

    remote
        .write(&[("cfg.yaml", &configmap("cfg", "one"))])
        .push("fixed");
    wait_for(Duration::from_secs(30), || {
        (http(&addr, "GET", "/readyz", &[], "") == (200, "ok\n".to_string())).then_some(())
    })
    .expect("ready once a revision is applied");
    running.stop();

    // A restart on a broken head: the last-known-good revision is in place, so ready.
    remote.write(&[("cfg.yaml", bad)]).push("broken again");
    std::fs::remove_file(setup.state().join("status/server.json")).unwrap();
    let running = setup.spawn_run(&[]);
    let addr = setup.server_address();
    wait_for(Duration::from_secs(20), || {
        setup.status()["lastError"].as_str().map(|_| ())
    })
    .expect("the new head fails");
    wait_for(Duration::from_secs(10), || {
        (http(&addr, "GET", "/readyz", &[], "").0 == 200).then_some(())
    })
    .expect("ready on the last-known-good revision");
    running.stop();
}
