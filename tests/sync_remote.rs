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

/// `sync --once` with `token` in `GITCANARY_TEST_GIT_TOKEN`: (success, output).
fn sync(setup: &Setup, token: &str) -> (bool, String) {
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
}

#[test]
fn https_style_token_auth_against_a_smart_http_git_server() {
    let remote = Remote::new();
    remote
        .write(&[("cfg.yaml", &configmap("cfg", "over-http"))])
        .push("one");
    let server = GitHttp::start(remote.dir.path(), "tok-3x4mpl3");
    let url = format!("{}/remote.git", server.url_base);
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

const TOKEN_AUTH: &str =
    "  interval: 1h\n  auth:\n    https:\n      tokenEnv: GITCANARY_TEST_GIT_TOKEN\n";

#[test]
fn source_credentials_go_only_to_the_source_host_and_chart_repositories_use_their_secret_ref() {
    let charts = Remote::new();
    charts
        .write(&[
            ("charts/web/Chart.yaml", "apiVersion: v2\nname: web\nversion: 0.1.0\n"),
            ("charts/web/values.yaml", "message: default\n"),
            (
                "charts/web/templates/cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cfg\ndata:\n  message: {{ .Values.message }}\n",
            ),
        ])
        .push("chart");
    let remote = Remote::new();
    remote
        .write(&[("cfg.yaml", &configmap("cfg", "x"))])
        .push("one");
    copy_dir(&charts.bare, &remote.dir.path().join("charts.git"));
    let source_host = GitHttp::start(remote.dir.path(), "src-t0ken");
    // Another host that would gladly take the source's token.
    let attacker = GitHttp::start(charts.dir.path(), "src-t0ken");
    let private = GitHttp::start(charts.dir.path(), "chart-pw");
    let setup = Setup::new(
        &format!("{}/remote.git", source_host.url_base),
        TOKEN_AUTH,
        "",
    );
    let branch = "main";
    let v1 = |url: &str| {
        format!("apiVersion: helm.fluxcd.io/v1\nkind: HelmRelease\nmetadata:\n  name: web\n  namespace: test\nspec:\n  releaseName: web\n  chart:\n    git: {url}\n    ref: {branch}\n    path: charts/web\n")
    };

    // chart.git on another host: no credentials, so that host refuses the fetch.
    remote
        .write(&[(
            "web.yaml",
            &v1(&format!("{}/remote.git", attacker.url_base)),
        )])
        .push("chart from elsewhere");
    let (ok, out) = sync(&setup, "src-t0ken");
    assert!(!ok, "{out}");
    assert!(
        out.contains("the source's credentials go only to the source's own host"),
        "{out}"
    );
    let log = attacker.requests.lock().unwrap().clone();
    assert!(
        !log.is_empty() && log.iter().all(|l| l.ends_with(" anonymous")),
        "{log:?}"
    );

    // The same chart repository on the source's host gets the source's token.
    remote
        .write(&[(
            "web.yaml",
            &v1(&format!("{}/charts.git", source_host.url_base)),
        )])
        .push("chart from the source host");
    let (ok, out) = sync(&setup, "src-t0ken");
    assert!(ok, "{out}");
    assert!(setup
        .object("core", "ConfigMap", "test", "web-cfg")
        .is_some());

    // A GitRepository on another host uses its own spec.secretRef: username and
    // password, or a bearer token.
    let v2 = |secret: &str| {
        format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: chart-creds\n  namespace: test\nstringData:\n{secret}---\napiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata:\n  name: charts\n  namespace: test\nspec:\n  interval: 5m\n  url: {}/remote.git\n  ref:\n    branch: {branch}\n  secretRef:\n    name: chart-creds\n---\napiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: api\n  namespace: test\nspec:\n  chart:\n    spec:\n      chart: ./charts/web\n      sourceRef:\n        kind: GitRepository\n        name: charts\n  values:\n    message: m{}\n", private.url_base, secret.len())
    };
    for secret in [
        "  username: bot\n  password: chart-pw\n",
        "  bearerToken: chart-pw\n",
    ] {
        remote.write(&[("api.yaml", &v2(secret))]).push(secret);
        let (ok, out) = sync(&setup, "src-t0ken");
        assert!(ok, "{secret}: {out}");
        assert!(!out.contains("chart-pw"), "{out}");
        let cm = setup
            .object("core", "ConfigMap", "test", "api-cfg")
            .unwrap();
        assert_eq!(cm["data"]["message"], format!("m{}", secret.len()));
    }
    let log = private.requests.lock().unwrap().clone();
    assert!(log.iter().any(|l| l.ends_with(" authorized")), "{log:?}");
    // A wrong one is refused, and an SSH URL needs identity and known_hosts.
    remote
        .write(&[("api.yaml", &v2("  username: bot\n  password: nope\n"))])
        .push("wrong");
    let (ok, out) = sync(&setup, "src-t0ken");
    assert!(
        !ok && out.contains("refused the configured credentials"),
        "{out}"
    );
    remote
        .write(&[(
            "api.yaml",
            &v2("  identity: key\n").replace(
                &format!("{}/remote.git", private.url_base),
                "ssh://git@127.0.0.1:1/x.git",
            ),
        )])
        .push("ssh");
    let (ok, out) = sync(&setup, "src-t0ken");
    assert!(
        !ok && out.contains("Secret test/chart-creds has no known_hosts"),
        "{out}"
    );
}

#[test]
fn a_chart_repository_over_ssh_uses_the_identity_and_known_hosts_of_its_secret_ref() {
    let charts = Remote::new();
    charts
        .write(&[
            ("charts/web/Chart.yaml", "apiVersion: v2\nname: web\nversion: 0.1.0\n"),
            (
                "charts/web/templates/cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cfg\ndata:\n  message: over-ssh\n",
            ),
        ])
        .push("chart");
    let keys = tempfile::tempdir().unwrap();
    let ed = keys.path().join("id_ed25519");
    keygen(&ed, "ed25519");
    let sshd = Sshd::start(&[ed.with_extension("pub")]);
    let indent = |text: &str| {
        text.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: ssh-creds\n  namespace: test\nstringData:\n  identity: |\n{}  known_hosts: |\n{}",
        indent(&std::fs::read_to_string(&ed).unwrap()),
        indent(&sshd.known_hosts_line())
    );
    let release = format!("apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata:\n  name: charts\n  namespace: test\nspec:\n  interval: 5m\n  url: ssh://{}@127.0.0.1:{}{}\n  ref:\n    branch: main\n  secretRef:\n    name: ssh-creds\n---\napiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: web\n  namespace: test\nspec:\n  chart:\n    spec:\n      chart: ./charts/web\n      sourceRef:\n        kind: GitRepository\n        name: charts\n", whoami(), sshd.port, charts.bare.display());
    // Without the secretRef there is no key and no known_hosts: refused.
    let (remote, setup) = seeded(
        &[(
            "web.yaml",
            &release.replace("  secretRef:\n    name: ssh-creds\n", ""),
        )],
        "no secret",
        "",
    );
    let out = setup.sync_fails();
    assert!(
        out.contains("host key verification failed: no known_hosts for 127.0.0.1"),
        "{out}"
    );
    remote
        .write(&[("web.yaml", &release), ("secret.yaml", &secret)])
        .push("with secret");
    let (ok, out) = setup.sync();
    assert!(ok, "{out}");
    assert!(!out.contains("OPENSSH PRIVATE KEY"), "{out}");
    let cm = setup
        .object("core", "ConfigMap", "test", "web-cfg")
        .unwrap();
    assert_eq!(cm["data"]["message"], "over-ssh");
}
