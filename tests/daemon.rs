//! The running daemon: notifications on a change of state, `gitcanary reconcile`,
//! `suspend source` / `resume source` through the daemon API, and Flux's receiver path
//! `/hook/<digest>`. Real `gitcanary run` processes against real Git remotes.

mod common;
use common::*;
use sha2::Digest;
use std::time::Duration;

fn value(setup: &Setup) -> Option<String> {
    setup.object("core", "ConfigMap", "test", "cfg")?["data"]["key"]
        .as_str()
        .map(str::to_string)
}

/// The JSON bodies a [`receiver`] got so far.
fn received(got: &std::sync::Mutex<Vec<String>>) -> Vec<serde_json::Value> {
    got.lock()
        .unwrap()
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect()
}

/// Runs a command that must succeed; its stdout.
fn succeeds(setup: &Setup, args: &[&str]) -> String {
    stdout_of(setup.cmd(args))
}

fn wait_value(setup: &Setup, want: &str, secs: u64) {
    wait_for(Duration::from_secs(secs), || {
        (value(setup).as_deref() == Some(want)).then_some(())
    })
    .unwrap_or_else(|| panic!("the ConfigMap never became {want}: {:?}", value(setup)));
}

/// A remote served by `git daemon` (no local watch: only the interval, a webhook or
/// the API sync), and a config following it with `extra` appended.
fn served(extra: &str) -> (Remote, GitDaemon, Setup) {
    let remote = Remote::new();
    remote
        .write(&[("cfg.yaml", &configmap("cfg", "one"))])
        .push("one");
    let daemon = GitDaemon::start(remote.dir.path(), free_port());
    let setup = Setup::new(&daemon.url("remote.git"), "  interval: 1h\n", extra);
    (remote, daemon, setup)
}

#[test]
fn a_revision_failing_over_five_intervals_notifies_once_and_once_on_recovery() {
    let remote = Remote::new();
    remote
        .write(&[("cfg.yaml", &configmap("cfg", "one"))])
        .push("one");
    let (url, got) = receiver();
    let setup = Setup::new(
        &remote.bare.display().to_string(),
        "  interval: 1s\n",
        "notifications:\n  providers:\n    - name: ops\n      type: generic\n      addressFile: ./ops-url\n      severity: info\n    - name: pager\n      type: generic\n      addressFile: ./ops-url\n      severity: error\n",
    );
    std::fs::write(setup.dir.path().join("ops-url"), &url).unwrap();
    let running = setup.spawn_run(&[]);
    wait_value(&setup, "one", 20);

    let bad = remote
        .write(&[(
            "broken.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: [\n",
        )])
        .push("broken");
    // Five failing intervals of the same revision.
    wait_for(Duration::from_secs(30), || {
        (setup.status()["failures"].as_u64()? >= 5).then_some(())
    })
    .expect("the broken revision keeps failing");
    let during = received(&got);
    // One message to each provider (both take errors).
    assert_eq!(during.len(), 2, "{during:#?}");
    for m in &during {
        assert_eq!(m["severity"], "error");
        assert_eq!(m["reason"], "ReconciliationFailed");
        assert_eq!(m["name"], "flux-system");
        assert_eq!(m["revision"], format!("main@sha1:{bad}"));
        assert!(
            m["message"].as_str().unwrap().contains("broken.yaml"),
            "{m}"
        );
    }

    remote.remove("broken.yaml");
    let fixed = remote
        .write(&[("cfg.yaml", &configmap("cfg", "two"))])
        .push("fixed");
    wait_value(&setup, "two", 20);
    std::thread::sleep(Duration::from_millis(2500));
    running.stop();
    let all = received(&got);
    // The recovery goes to the info provider only.
    assert_eq!(all.len(), 3, "{all:#?}");
    assert_eq!(all[2]["severity"], "info");
    assert_eq!(all[2]["reason"], "ReconciliationSucceeded");
    assert!(all[2]["message"].as_str().unwrap().starts_with(&format!(
        "Applied revision: main@sha1:{fixed}; recovered after"
    )));
    for m in &all {
        assert!(!m.to_string().contains(&url), "the address leaked: {m}");
    }
}

#[test]
fn reconcile_prints_the_applied_revision_and_the_error() {
    let (remote, _daemon, setup) = served("");
    let running = setup.spawn_run(&[]);
    wait_value(&setup, "one", 20);
    setup.server_address();

    let two = remote
        .write(&[("cfg.yaml", &configmap("cfg", "two"))])
        .push("two");
    // Without --with-source the last fetched revision is synced again: not `two`.
    let stdout = succeeds(&setup, &["reconcile"]);
    assert!(!stdout.contains(&two), "{stdout}");
    assert_eq!(value(&setup).as_deref(), Some("one"));

    let stdout = succeeds(&setup, &["reconcile", "--with-source"]);
    assert!(
        stdout.contains(&format!(
            "✔ fetched revision main@sha1:{two}\n✔ applied revision main@sha1:{two}\n"
        )),
        "{stdout}"
    );
    assert_eq!(value(&setup).as_deref(), Some("two"));

    remote.write(&[("bad.yaml", "kind: [\n")]).push("bad");
    let out = setup.cmd(&["reconcile", "--with-source", "--timeout", "30s"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("✗ revision main@sha1:"), "{stderr}");
    assert!(stderr.contains("bad.yaml"), "{stderr}");
    running.stop();

    // No daemon: said plainly, non-zero.
    let out = setup.cmd(&["reconcile"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no gitcanary daemon is running"));
}

#[test]
fn suspend_holds_a_pushed_change_across_a_restart_until_resume() {
    let remote = Remote::new();
    remote
        .write(&[("cfg.yaml", &configmap("cfg", "one"))])
        .push("one");
    // A local path: the watch would sync a push at once.
    let setup = Setup::new(&remote.bare.display().to_string(), "  interval: 1s\n", "");
    let running = setup.spawn_run(&[]);
    wait_value(&setup, "one", 20);
    setup.server_address();

    assert_eq!(
        succeeds(&setup, &["suspend", "source"]),
        "► suspending source flux-system\n✔ source suspended\n"
    );
    let out = setup.cmd(&["get", "sources"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("SUSPENDED"), "{table}");
    assert!(table.lines().nth(1).unwrap().contains(" True "), "{table}");

    let two = remote
        .write(&[("cfg.yaml", &configmap("cfg", "two"))])
        .push("two");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        value(&setup).as_deref(),
        Some("one"),
        "suspended: nothing applies"
    );
    let out = setup.cmd(&["reconcile"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is suspended"));

    // The suspension survives a restart.
    running.stop();
    std::fs::remove_file(setup.state().join("status/server.json")).unwrap();
    let running = setup.spawn_run(&[]);
    setup.server_address();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        value(&setup).as_deref(),
        Some("one"),
        "still suspended after a restart"
    );
    let out = setup.cmd(&["get", "sources", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["suspended"], true);

    let stdout = succeeds(&setup, &["resume", "source", "flux-system"]);
    assert!(
        stdout.contains(&format!("✔ source resumed\n◎ waiting for reconciliation\n✔ fetched revision main@sha1:{two}\n✔ applied revision main@sha1:{two}\n")),
        "{stdout}"
    );
    assert_eq!(value(&setup).as_deref(), Some("two"));
    running.stop();
}

#[test]
fn the_daemon_api_needs_its_header_a_loopback_host_or_the_token() {
    let (_remote, _daemon, setup) = served("");
    let running = setup.spawn_run(&[]);
    wait_value(&setup, "one", 20);
    let addr = setup.server_address();
    let (code, _) = http(&addr, "POST", "/daemon/v1/suspend", &[], "");
    assert_eq!(
        code, 403,
        "a browser's cross-site form post has no such header"
    );
    let (code, _) = http(
        &addr,
        "POST",
        "/daemon/v1/suspend",
        &[("X-Gitcanary-Api", "1"), ("Host", "rebound.example")],
        "",
    );
    assert_eq!(code, 403, "a rebound name is refused");
    assert!(!setup.state().join("commands/source/suspended").exists());
    running.stop();

    // With a token, the token is what counts.
    setup.edit_config(
        "  listen: 127.0.0.1:0\n",
        "  listen: 127.0.0.1:0\n  uiTokenEnv: UI_TOKEN\n",
    );
    std::fs::remove_file(setup.state().join("status/server.json")).unwrap();
    let token = "0123456789abcdef-token";
    let running = setup.spawn_run(&[("UI_TOKEN", token)]);
    let addr = setup.server_address();
    let (code, _) = http(
        &addr,
        "POST",
        "/daemon/v1/suspend",
        &[("X-Gitcanary-Api", "1")],
        "",
    );
    assert_eq!(code, 401);
    stdout_of(
        std::process::Command::new(bin())
            .args([
                "--config",
                setup.config.to_str().unwrap(),
                "suspend",
                "source",
            ])
            .env("UI_TOKEN", token)
            .output()
            .unwrap(),
    );
    assert!(setup.state().join("commands/source/suspended").exists());
    running.stop();
}

#[test]
fn flux_receiver_path_triggers_a_fetch() {
    let (remote, _daemon, setup) = served("");
    setup.edit_config(
        "  listen: 127.0.0.1:0\n",
        "  listen: 127.0.0.1:0\n  webhookSecretEnv: HOOK_SECRET\n  receiver:\n    name: github-receiver\n",
    );
    let running = setup.spawn_run(&[("HOOK_SECRET", "s3cr3t")]);
    wait_value(&setup, "one", 20);
    let addr = setup.server_address();
    remote
        .write(&[("cfg.yaml", &configmap("cfg", "two"))])
        .push("two");
    // Flux: sha256(token + receiver name + namespace); the namespace defaults to flux-system.
    let digest: String = sha2::Sha256::digest(b"s3cr3tgithub-receiverflux-system")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let wrong: String = sha2::Sha256::digest(b"s3cr3tflux-systemflux-system")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let (code, _) = http(&addr, "POST", &format!("/hook/{wrong}"), &[], "{}");
    assert_eq!(code, 401);
    let (code, _) = http(
        &addr,
        "POST",
        &format!("/hook/{digest}"),
        &[("X-Hub-Signature-256", "sha256=00")],
        "{}",
    );
    assert_eq!(code, 401, "a signature that is there must be right");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        value(&setup).as_deref(),
        Some("one"),
        "refused calls trigger nothing"
    );
    let (code, _) = http(&addr, "POST", &format!("/hook/{digest}"), &[], "{}");
    assert_eq!(code, 202);
    wait_value(&setup, "two", 15);
    running.stop();
}
