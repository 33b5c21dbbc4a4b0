//! Image automation end to end: a real registry (Debian's docker-registry), a real Git
//! remote, `gitcanary images scan --once`, and what lands in `git log` and the target.

mod common;
use common::*;
use std::path::Path;

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples-repo")
}

fn commits(bare: &Path) -> Vec<String> {
    git(bare, &["log", "--format=%s", "main"])
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn helm_release_semver_bump_end_to_end() {
    let reg = Registry::start(None);
    for t in ["2.0.0", "2.0.1", "2.1.0", "3.0.0"] {
        reg.push_tag("stefanprodan/podinfo", t, "2024-01-01T00:00:00Z");
    }
    let remote = Remote::new();
    remote.copy_from(&examples());
    let fe = remote.work.join("releases/test/frontend.yaml");
    let original = std::fs::read_to_string(&fe).unwrap().replace(
        "repository: stefanprodan/podinfo",
        &format!("repository: {}/stefanprodan/podinfo", reg.addr),
    );
    std::fs::write(&fe, &original).unwrap();
    std::fs::remove_file(remote.work.join("releases/test/backend.yaml")).unwrap();
    remote.push("seed");
    let daemon = GitDaemon::start(remote.dir.path(), free_port());
    let setup = Setup::new(&daemon.url("remote.git"), "", "");

    let out = setup.cmd(&["images", "scan", "--once"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");

    // One pushed commit that changes exactly 2.0.0 to 2.0.1, named after the image.
    let log = commits(&remote.bare);
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(
        log[0],
        format!("Auto-release {}/stefanprodan/podinfo:2.0.1", reg.addr)
    );
    assert_eq!(
        git(&remote.bare, &["diff", "--name-only", "main~1", "main"]),
        "releases/test/frontend.yaml"
    );
    let pushed = git(&remote.bare, &["show", "main:releases/test/frontend.yaml"]);
    assert_eq!(
        pushed,
        original.replace("tag: 2.0.0", "tag: 2.0.1").trim_end()
    );
    let body = git(&remote.bare, &["log", "-1", "--format=%b", "main"]);
    assert!(
        body.contains(
            "releases/test/frontend.yaml: HelmRelease/test/frontend (chart-image): 2.0.0 -> 2.0.1"
        ),
        "{body}"
    );
    let author = git(&remote.bare, &["log", "-1", "--format=%an <%ae>", "main"]);
    assert_eq!(author, "gitcanary <gitcanary@localhost>");

    // The local target holds the new revision at once.
    let hr = setup
        .object("flux.weave.works", "HelmRelease", "test", "frontend")
        .unwrap();
    assert_eq!(hr["spec"]["values"]["image"]["tag"], "2.0.1");
    let head = git(&remote.bare, &["rev-parse", "main"]);
    assert_eq!(
        setup.status()["appliedRevision"],
        format!("main@sha1:{head}")
    );

    // `get images` explains it.
    let out = setup.cmd(&["get", "images"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("HelmRelease/test/frontend (chart-image)")
            && table.contains("semver:~2.0")
            && table.contains("2.0.1"),
        "{table}"
    );

    // Idempotent: the remote has the new value, so a second run commits nothing.
    assert!(setup.cmd(&["images", "scan", "--once"]).status.success());
    assert_eq!(commits(&remote.bare).len(), 2);
}

#[test]
fn basic_auth_from_docker_config_and_no_secret_in_output() {
    let reg = Registry::start(Some(("gc-user", "s3cret-pass")));
    for t in ["1.0.0", "1.2.0", "2.0.0"] {
        reg.push_tag("team/web", t, "2024-01-01T00:00:00Z");
    }
    let remote = Remote::new();
    remote
        .write(&[(
            "web.yaml",
            &automated_deployment(&reg.addr, "web", "semver:^1.0", "1.0.0"),
        )])
        .push("seed");

    // Without credentials: the scan fails clearly for that image, nothing is committed.
    let setup = Setup::new(&remote.bare.display().to_string(), "", "");
    setup.cmd(&["images", "scan", "--once"]);
    let out = setup.cmd(&["get", "images", "-o", "json"]);
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let msg = st["rows"][0]["message"].as_str().unwrap();
    assert!(
        msg.contains("401") && msg.contains("add credentials"),
        "{msg}"
    );
    assert_eq!(commits(&remote.bare).len(), 1);

    // With a docker config.json: the update goes through.
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode("gc-user:s3cret-pass");
    let cfg = tempfile::tempdir().unwrap();
    let docker = cfg.path().join("config.json");
    std::fs::write(
        &docker,
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.addr),
    )
    .unwrap();
    let setup = Setup::new(
        &remote.bare.display().to_string(),
        "",
        &format!("images:\n  dockerConfig: {}\n", docker.display()),
    );
    let out = setup.cmd(&["--log-level", "debug", "images", "scan", "--once"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        !text.contains("s3cret-pass") && !text.contains(&auth),
        "credentials leaked into output"
    );
    assert_eq!(
        commits(&remote.bare)[0],
        format!("Auto-release {}/team/web:1.2.0", reg.addr)
    );
}

#[test]
fn markers_on_a_deployment_and_a_kustomization_image() {
    let reg = Registry::start(None);
    for t in ["1.0.0", "1.5.0", "2.0.0"] {
        reg.push_tag("team/app", t, "2024-01-01T00:00:00Z");
    }
    let image = format!("{}/team/app", reg.addr);
    let flux = format!(
        "apiVersion: image.toolkit.fluxcd.io/v1beta2\nkind: ImageRepository\nmetadata:\n  name: app\n  namespace: flux-system\nspec:\n  image: {image}\n  interval: 1m\n---\napiVersion: image.toolkit.fluxcd.io/v1beta2\nkind: ImagePolicy\nmetadata:\n  name: app\n  namespace: flux-system\nspec:\n  imageRepositoryRef:\n    name: app\n  policy:\n    semver:\n      range: \">=1.0.0 <2.0.0\"\n---\napiVersion: image.toolkit.fluxcd.io/v1beta2\nkind: ImageUpdateAutomation\nmetadata:\n  name: auto\n  namespace: flux-system\nspec:\n  interval: 30m\n  sourceRef:\n    kind: GitRepository\n    name: flux-system\n  git:\n    checkout:\n      ref:\n        branch: main\n    commit:\n      author:\n        email: fluxcdbot@users.noreply.github.com\n        name: fluxcdbot\n      messageTemplate: 'Automated image update: {{{{range .Changed.Changes}}}}{{{{.OldValue}}}} -> {{{{.NewValue}}}} {{{{end}}}}'\n    push:\n      branch: main\n  update:\n    path: ./apps\n    strategy: Setters\n"
    );
    let deploy = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app\n  namespace: test\nspec:\n  selector:\n    matchLabels:\n      app: app\n  template:\n    metadata:\n      labels:\n        app: app\n    spec:\n      containers:\n        - name: app\n          image: {image}:1.0.0 # {{\"$imagepolicy\": \"flux-system:app\"}}\n"
    );
    let kustomization = format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - deploy.yaml\nimages:\n  - name: {image}\n    newTag: 1.0.0 # {{\"$imagepolicy\": \"flux-system:app:tag\"}}\n"
    );
    let (remote, setup) = seeded(
        &[
            ("flux-system/images.yaml", &flux),
            ("apps/deploy.yaml", &deploy),
            ("apps/kustomization.yaml", &kustomization),
        ],
        "seed",
        "",
    );
    let out = setup.cmd(&["images", "scan", "--once"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        git(&remote.bare, &["show", "main:apps/deploy.yaml"]),
        deploy.replace(":1.0.0 #", ":1.5.0 #").trim_end()
    );
    assert_eq!(
        git(&remote.bare, &["show", "main:apps/kustomization.yaml"]),
        kustomization
            .replace("newTag: 1.0.0", "newTag: 1.5.0")
            .trim_end()
    );
    let subject = commits(&remote.bare)[0].clone();
    assert!(
        subject.starts_with("Automated image update: ")
            && subject.contains(&format!("{image}:1.0.0 -> {image}:1.5.0")),
        "{subject}"
    );
    assert_eq!(
        git(&remote.bare, &["log", "-1", "--format=%an", "main"]),
        "fluxcdbot"
    );
    let d = setup.object("apps", "Deployment", "test", "app").unwrap();
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        format!("{image}:1.5.0")
    );
}

#[test]
fn a_concurrent_pusher_is_fetched_and_the_change_recomputed() {
    let reg = Registry::start(None);
    for t in ["1.0.0", "1.1.0"] {
        reg.push_tag("team/web", t, "2024-01-01T00:00:00Z");
        reg.push_tag("team/other", t, "2024-01-01T00:00:00Z");
    }
    // Only `apps` is synced; an automated workload outside it is not ours to update,
    // on the first attempt or on the retry after a rejected push.
    let (remote, setup) = seeded(
        &[
            (
                "apps/web.yaml",
                &automated_deployment(&reg.addr, "web", "semver:~1", "1.0.0"),
            ),
            (
                "outside/other.yaml",
                &automated_deployment(&reg.addr, "other", "semver:~1", "1.0.0"),
            ),
        ],
        "initial",
        "  path: apps\n",
    );
    let cfg = gitcanary::config::Config::load(&setup.config).unwrap();
    let source = gitcanary::source::GitSource::new(&cfg.source, &cfg.base_dir, &cfg.state_dir());
    let head = source.fetch().unwrap().commit;

    // Another pusher lands a commit after our fetch, before our push.
    remote
        .write(&[("apps/other.yaml", &configmap("other", "x"))])
        .push("concurrent change");

    let mut auto = gitcanary::image::automation::Automation::new(&cfg).unwrap();
    let author = ("gitcanary".to_string(), "gitcanary@localhost".to_string());
    let writer =
        gitcanary::history::Writer::start(source.clone(), author, Default::default()).unwrap();
    let out = auto.run(&source, &writer, &head, None, true).unwrap();
    assert_eq!(out.changes, 1);
    let log = commits(&remote.bare);
    assert_eq!(
        log,
        vec![
            format!("Auto-release {}/team/web:1.1.0", reg.addr),
            "concurrent change".into(),
            "initial".into()
        ]
    );
    assert_eq!(
        out.commit.unwrap(),
        git(&remote.bare, &["rev-parse", "main"])
    );
    assert_eq!(
        git(&remote.bare, &["diff", "--name-only", "main~1", "main"]),
        "apps/web.yaml"
    );
}

#[test]
fn a_release_whose_chart_repository_is_down_still_gets_its_tag_bumped() {
    let reg = Registry::start(None);
    for t in ["1.0.0", "1.0.1"] {
        reg.push_tag("team/web", t, "2024-01-01T00:00:00Z");
    }
    // Nothing listens on this port: every chart download is refused.
    let dead = format!("http://127.0.0.1:{}/", free_port());
    let release = format!("apiVersion: helm.fluxcd.io/v1\nkind: HelmRelease\nmetadata:\n  name: web\n  namespace: test\n  annotations:\n    fluxcd.io/automated: \"true\"\n    fluxcd.io/tag.chart-image: semver:~1.0\nspec:\n  releaseName: web\n  chart:\n    repository: {dead}\n    name: web\n    version: 1.0.0\n  values:\n    image:\n      repository: {}/team/web\n      tag: 1.0.0\n", reg.addr);
    let (remote, setup) = seeded(&[("releases/web.yaml", &release)], "initial", "");

    let out = setup.cmd(&["images", "scan", "--once"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The tag is bumped and pushed...
    assert_eq!(
        commits(&remote.bare)[0],
        format!("Auto-release {}/team/web:1.0.1", reg.addr),
        "{text}"
    );
    let pushed = git(&remote.bare, &["show", "main:releases/web.yaml"]);
    assert!(pushed.contains("tag: 1.0.1"), "{pushed}");
    let status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(setup.state().join("status/images.json")).unwrap())
            .unwrap();
    assert!(status["error"].is_null(), "{status}");
    // ...and the sync of that revision still reports the chart error, applying nothing.
    assert!(!out.status.success(), "{text}");
    assert!(text.contains(&format!("GET {dead}index.yaml")), "{text}");
    assert!(setup
        .object("helm.fluxcd.io", "HelmRelease", "test", "web")
        .is_none());
    let (ok, sync) = setup.sync();
    assert!(!ok && sync.contains("index.yaml"), "{sync}");
}

#[test]
fn bad_policies_are_named_and_nothing_is_committed() {
    let reg = Registry::start(None);
    reg.push_tag("team/a", "1.0.0", "2024-01-01T00:00:00Z");
    let (remote, setup) = seeded(
        &[
            (
                "a.yaml",
                &automated_deployment(&reg.addr, "a", "latest:foo", "1.0.0"),
            ),
            (
                "b.yaml",
                &automated_deployment(&reg.addr, "b", "regex:([", "1.0.0"),
            ),
            (
                "c.yaml",
                &automated_deployment(&reg.addr, "c", "semver:~x.1", "1.0.0"),
            ),
        ],
        "seed",
        "",
    );
    let out = setup.cmd(&["images", "scan", "--once"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("a.yaml:8:24: metadata.annotations.fluxcd.io/tag.app: Deployment/test/a: unknown policy prefix \"latest\""), "{text}");
    assert!(text.contains("b.yaml:8:24: metadata.annotations.fluxcd.io/tag.app: Deployment/test/b: invalid regex \"([\": unclosed character class"), "{text}");
    assert!(text.contains("c.yaml:8:24: metadata.annotations.fluxcd.io/tag.app: Deployment/test/c: invalid semver range"), "{text}");
    assert_eq!(commits(&remote.bare).len(), 1, "nothing committed");
    // The sync itself still applied the revision.
    assert!(setup.object("apps", "Deployment", "test", "a").is_some());
}

#[test]
fn run_follows_a_new_registry_tag_without_a_manual_step() {
    let reg = Registry::start(None);
    reg.push_tag("team/live", "1.0.0", "2024-01-01T00:00:00Z");
    let remote = Remote::new();
    remote
        .write(&[(
            "live.yaml",
            &automated_deployment(&reg.addr, "live", "semver:^1.0", "1.0.0"),
        )])
        .push("seed");
    let setup = Setup::scanning_images(&remote);
    let running = setup.spawn_run(&[]);
    wait_for(std::time::Duration::from_secs(20), || {
        setup.object("apps", "Deployment", "test", "live")
    })
    .expect("first sync");
    assert_eq!(commits(&remote.bare).len(), 1, "nothing to update yet");

    reg.push_tag("team/live", "1.1.0", "2024-01-02T00:00:00Z");
    let image = format!("{}/team/live:1.1.0", reg.addr);
    wait_for(std::time::Duration::from_secs(30), || {
        let d = setup.object("apps", "Deployment", "test", "live")?;
        (d["spec"]["template"]["spec"]["containers"][0]["image"] == image.as_str()).then_some(())
    })
    .expect("the new tag is committed, pushed and applied");
    assert_eq!(commits(&remote.bare)[0], format!("Auto-release {image}"));
    let (status, stderr) = running.stop();
    assert!(status.success(), "{stderr}");
}

#[test]
fn image_repository_secret_ref_and_interval() {
    let reg = Registry::start(Some(("robot", "pa55")));
    for t in ["1.0.0", "1.3.0"] {
        reg.push_tag("team/secure", t, "2024-01-01T00:00:00Z");
    }
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let dockerconfig = format!(
        r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
        reg.addr,
        b64("robot:pa55")
    );
    let image = format!("{}/team/secure", reg.addr);
    let files = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: regcred\n  namespace: flux-system\ntype: kubernetes.io/dockerconfigjson\ndata:\n  .dockerconfigjson: {}\n---\napiVersion: image.toolkit.fluxcd.io/v1beta2\nkind: ImageRepository\nmetadata:\n  name: secure\n  namespace: flux-system\nspec:\n  image: {image}\n  interval: 1m\n  secretRef:\n    name: regcred\n---\napiVersion: image.toolkit.fluxcd.io/v1beta2\nkind: ImagePolicy\nmetadata:\n  name: secure\n  namespace: flux-system\nspec:\n  imageRepositoryRef:\n    name: secure\n  policy:\n    semver:\n      range: 1.x\n---\napiVersion: image.toolkit.fluxcd.io/v1beta2\nkind: ImageUpdateAutomation\nmetadata:\n  name: auto\n  namespace: flux-system\nspec:\n  update:\n    path: ./apps\n",
        b64(&dockerconfig)
    );
    let deploy = format!("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: secure\n  namespace: test\nspec:\n  selector:\n    matchLabels: {{app: secure}}\n  template:\n    metadata:\n      labels: {{app: secure}}\n    spec:\n      containers:\n        - name: app\n          image: {image}:1.0.0 # {{\"$imagepolicy\": \"flux-system:secure\"}}\n");
    let (remote, setup) = seeded(
        &[
            ("flux-system/images.yaml", &files),
            ("apps/deploy.yaml", &deploy),
        ],
        "seed",
        "",
    );
    let out = setup.cmd(&["images", "scan", "--once"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("pa55"), "credentials leaked");
    assert_eq!(
        commits(&remote.bare)[0],
        format!("Auto-release {image}:1.3.0"),
        "the Secret's credentials were used"
    );
}
