//! Push → sync → store over the network transports: `git daemon` (git://) and a real
//! `sshd` with host-key checking, plus failure handling when the remote goes away.

mod common;
use common::*;
use std::time::Duration;

#[test]
fn git_daemon_push_sync_and_recovery_after_outage() {
    let remote = Remote::new();
    let port = free_port();
    let daemon = GitDaemon::start(remote.dir.path(), port);
    let url = daemon.url("remote.git");
    // Push over git:// too (receive-pack enabled).
    remote.write(&[("cfg.yaml", &configmap("cfg", "one"))]);
    git(&remote.work, &["add", "-A"]);
    git(&remote.work, &["commit", "-qm", "one"]);
    git(&remote.work, &["push", "-q", &url, "HEAD:main"]);

    let setup = Setup::new(&url, "  interval: 1h\n", "");
    let (ok, out) = setup.sync();
    assert!(ok, "{out}");
    assert_eq!(
        setup.object("core", "ConfigMap", "test", "cfg").unwrap()["data"]["key"],
        "one"
    );

    // The remote goes away: the sync fails clearly, the applied state stays.
    drop(daemon);
    let (ok, out) = setup.sync();
    assert!(!ok);
    assert!(out.contains("fetch git://127.0.0.1"), "{out}");
    assert_eq!(
        setup.object("core", "ConfigMap", "test", "cfg").unwrap()["data"]["key"],
        "one"
    );
    let st = setup.status();
    assert_eq!(st["ready"], false);
    assert_eq!(st["failures"], 1);
    assert!(st["appliedRevision"]
        .as_str()
        .unwrap()
        .starts_with("main@sha1:"));

    // `run` keeps retrying with backoff and never crashes; when the remote returns, it
    // picks up the new commit without waiting for the 1h interval.
    let running = setup.spawn_run(&[]);
    wait_for(Duration::from_secs(20), || {
        (setup.status()["failures"].as_u64()? >= 3).then_some(())
    })
    .expect("retries while the remote is down");
    remote
        .write(&[("cfg.yaml", &configmap("cfg", "two"))])
        .push("two");
    let _daemon = GitDaemon::start(remote.dir.path(), port);
    wait_for(Duration::from_secs(30), || {
        let v = setup.object("core", "ConfigMap", "test", "cfg")?;
        (v["data"]["key"] == "two").then_some(())
    })
    .expect("recovers once the remote is back");
    // The status is saved just after the objects are applied.
    wait_for(Duration::from_secs(10), || {
        (setup.status()["ready"] == true).then_some(())
    })
    .expect("ready again once the remote is back");
    let (status, stderr) = running.stop();
    assert!(status.success(), "graceful shutdown: {stderr}");
    assert!(stderr.contains("shutting down"), "{stderr}");
}

fn ssh_setup(remote: &Remote, sshd: &Sshd, key: &std::path::Path, known_hosts: &str) -> Setup {
    let kh = remote.dir.path().join("known_hosts");
    std::fs::write(&kh, known_hosts).unwrap();
    let url = format!(
        "ssh://{}@127.0.0.1:{}{}",
        whoami(),
        sshd.port,
        remote.bare.display()
    );
    let auth = format!(
        "  auth:\n    ssh:\n      privateKeyFile: {}\n      knownHostsFile: {}\n",
        key.display(),
        kh.display()
    );
    Setup::new(&url, &auth, "")
}

#[test]
fn ssh_with_ed25519_and_rsa_keys_and_host_key_checking() {
    if sshd_path().is_none() {
        panic!("sshd not found: install openssh-server (.ci/run does)");
    }
    let remote = Remote::new();
    remote
        .write(&[("cfg.yaml", &configmap("cfg", "ssh"))])
        .push("one");
    let keys = tempfile::tempdir().unwrap();
    let ed = keys.path().join("id_ed25519");
    let rsa = keys.path().join("id_rsa");
    keygen(&ed, "ed25519");
    keygen(&rsa, "rsa");
    let sshd = Sshd::start(&[ed.with_extension("pub"), rsa.with_extension("pub")]);

    for key in [&ed, &rsa] {
        let setup = ssh_setup(&remote, &sshd, key, &sshd.known_hosts_line());
        let (ok, out) = setup.sync();
        assert!(ok, "ssh sync with {}: {out}", key.display());
        assert_eq!(
            setup.object("core", "ConfigMap", "test", "cfg").unwrap()["data"]["key"],
            "ssh"
        );
    }

    // A changed host key is refused, with a clear message and nothing applied.
    let other = keys.path().join("other_host");
    keygen(&other, "ed25519");
    let fake = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let mut parts = fake.split_whitespace();
    let wrong = format!(
        "[127.0.0.1]:{} {} {}\n",
        sshd.port,
        parts.next().unwrap(),
        parts.next().unwrap()
    );
    let setup = ssh_setup(&remote, &sshd, &ed, &wrong);
    let (ok, out) = setup.sync();
    assert!(!ok);
    assert!(out.contains("HOST KEY MISMATCH for [127.0.0.1]:"), "{out}");
    assert!(setup.object("core", "ConfigMap", "test", "cfg").is_none());

    // An unknown host is refused too.
    let setup = ssh_setup(&remote, &sshd, &ed, "# empty\n");
    let (ok, out) = setup.sync();
    assert!(!ok);
    assert!(out.contains("is not in known_hosts"), "{out}");
}

#[test]
fn https_style_token_auth_against_a_smart_http_git_server() {
    let remote = Remote::new();
    remote
        .write(&[("cfg.yaml", &configmap("cfg", "over-http"))])
        .push("one");
    let server = GitHttp::start(remote.dir.path(), "tok-3x4mpl3");
    let url = format!("{}/remote.git", server.url_base);
    let sync = |setup: &Setup, token: &str| {
        let out = std::process::Command::new(bin())
            .arg("--config")
            .arg(&setup.config)
            .args(["sync", "--once"])
            .env("GITCANARY_TEST_GIT_TOKEN", token)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    // No credentials configured: the error says what to set.
    let anon = Setup::new(&url, "  interval: 1h\n", "");
    let (ok, out) = sync(&anon, "");
    assert!(!ok, "{out}");
    assert!(out.contains("set source.auth.https"), "{out}");

    let setup = Setup::new(
        &url,
        "  interval: 1h\n  auth:\n    https:\n      tokenEnv: GITCANARY_TEST_GIT_TOKEN\n",
        "",
    );
    // A wrong token is refused, and never shown.
    let (ok, out) = sync(&setup, "wrong-t0ken");
    assert!(!ok, "{out}");
    assert!(out.contains("refused the configured credentials"), "{out}");
    assert!(!out.contains("wrong-t0ken"), "{out}");
    // The right token syncs over smart HTTP.
    let (ok, out) = sync(&setup, "tok-3x4mpl3");
    assert!(ok, "{out}");
    assert!(!out.contains("tok-3x4mpl3"), "{out}");
    assert_eq!(
        setup.object("core", "ConfigMap", "test", "cfg").unwrap()["data"]["key"],
        "over-http"
    );
    let log = server.requests.lock().unwrap().clone();
    assert!(
        log.iter()
            .any(|l| l.starts_with("POST /remote.git/git-upload-pack authorized")),
        "{log:?}"
    );
}
