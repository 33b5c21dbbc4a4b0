//! A failed canary written back to Git: `gitcanary run` with a real Git remote (bare,
//! read with the git CLI), Debian's docker-registry for image automation, and real
//! traffic. Tag 1.0.1 of the image answers 500s; the others are healthy.

mod common;
use common::*;
use std::time::Duration;

fn app(reg: &str, tag: &str, revert: bool) -> Vec<(&'static str, String)> {
    let annotation = if revert {
        "  annotations:\n    gitcanary.io/revert-on-failure: \"true\"\n"
    } else {
        ""
    };
    vec![
        ("ns.yaml", NAMESPACE.to_string()),
        ("podinfo/configmap.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: podinfo-config\n  namespace: test\ndata:\n  PODINFO_UI_MESSAGE: 'hello'\n".to_string()),
        ("podinfo/deployment.yaml", format!("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: podinfo\n  namespace: test\n  annotations:\n    fluxcd.io/automated: \"true\"\n    fluxcd.io/tag.podinfod: semver:~1.0\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: podinfo\n  template:\n    metadata:\n      labels:\n        app: podinfo\n    spec:\n      terminationGracePeriodSeconds: 5\n      containers:\n        - name: podinfod\n          image: {reg}/podinfo:{tag} # the image under test\n          ports:\n            - name: http\n              containerPort: 9898\n          envFrom:\n            - configMapRef:\n                name: podinfo-config\n          readinessProbe:\n            httpGet:\n              path: /readyz\n              port: http\n            periodSeconds: 1\n")),
        ("podinfo/canary.yaml", format!("apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata:\n  name: podinfo\n  namespace: test\n{annotation}spec:\n  targetRef:\n    apiVersion: apps/v1\n    kind: Deployment\n    name: podinfo\n  progressDeadlineSeconds: 60\n  service:\n    port: 9898\n    targetPort: 9898\n  analysis:\n    interval: 1s\n    threshold: 3\n    maxWeight: 50\n    stepWeight: 10\n    metrics:\n      - name: request-success-rate\n        thresholdRange:\n          min: 99\n        interval: 5s\n    webhooks:\n      - name: load-test\n        url: http://flagger-loadtester.test/\n        timeout: 5s\n        metadata:\n          cmd: \"hey -z 2m -q 20 -c 2 http://podinfo-canary.test:9898/\"\n")),
    ]
}

/// A remote holding the app at 1.0.0, a registry offering 1.0.0, and a
/// config that scans every second and polls Git every second.
fn setup(revert: bool) -> (Registry, Remote, Setup) {
    setup_with(revert, |canary| canary)
}

/// `setup`, with the Canary's YAML edited by `canary`.
fn setup_with(revert: bool, canary: impl Fn(String) -> String) -> (Registry, Remote, Setup) {
    let reg = Registry::start(None);
    reg.push_tag("podinfo", "1.0.0", "2024-01-01T00:00:00Z");
    let remote = Remote::new();
    let mut files = app(&reg.addr, "1.0.0", revert);
    files[3].1 = canary(std::mem::take(&mut files[3].1));
    let refs: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    remote.write(&refs).push("seed");
    let setup = Setup::new(
        &remote.bare.display().to_string(),
        "  interval: 1s\n",
        "images:\n  interval: 1s\n",
    );
    // 1.0.1 is the bad release: every request fails.
    let script = format!(
        "case \"$IMAGE_TAG\" in 1.0.1) export FAULT_ERROR_RATE=1;; esac; exec {} demo-app --port \"$PORT\"",
        bin()
    );
    setup.with_local_images(&format!(
        "    images:\n      {}/podinfo: [\"sh\", \"-c\", {}]\n",
        reg.addr,
        serde_json::to_string(&script).unwrap()
    ));
    (reg, remote, setup)
}

fn log(remote: &Remote) -> Vec<String> {
    git(&remote.bare, &["log", "--format=%s", "main"])
        .lines()
        .map(str::to_string)
        .collect()
}

fn apex_version(setup: &Setup) -> Option<String> {
    let out = setup.cmd(&["get", "services", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let addr = v.as_array()?.iter().find(|s| s["name"] == "podinfo")?["address"]
        .as_str()?
        .trim_start_matches("http://")
        .to_string();
    let (code, _, body) = http_request(&addr, "GET", "/version", &[], b"");
    (code == 200).then_some(())?;
    serde_json::from_slice::<serde_json::Value>(&body).ok()?["version"]
        .as_str()
        .map(str::to_string)
}

/// The gitcanary note on `commit` in the remote, once there is one.
fn note_on(remote: &Remote, commit: &str) -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["notes", "--ref=gitcanary", "show", commit])
        .current_dir(&remote.bare)
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn images_table(setup: &Setup) -> String {
    String::from_utf8_lossy(&setup.cmd(&["get", "images"]).stdout).into_owned()
}

/// The `REJECTED` cell of the images table.
fn rejected_cell(setup: &Setup) -> String {
    let table = images_table(setup);
    let mut lines = table.lines();
    let header = lines.next().unwrap_or_default();
    let at = header.find("REJECTED").expect("a REJECTED column");
    let row = lines.next().unwrap_or_default();
    row.get(at..)
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Starts `gitcanary run`, publishes 1.0.1 once 1.0.0 runs, and waits for the analysis
/// of the automated 1.0.1 to fail;
/// the run and the failed commit.
fn fail_1_0_1(reg: &Registry, remote: &Remote, setup: &Setup) -> (Running, String) {
    let running = setup.spawn_run(&[]);
    setup.wait_canary("podinfo", "Initialized", 60);
    reg.push_tag("podinfo", "1.0.1", "2024-01-01T00:00:00Z");
    let auto = format!("Auto-release {}/podinfo:1.0.1", reg.addr);
    wait_for(Duration::from_secs(60), || {
        log(remote).contains(&auto).then_some(())
    })
    .unwrap_or_else(|| panic!("automation never pushed 1.0.1: {:?}", log(remote)));
    let failed = git(
        &remote.bare,
        &["log", "-1", "--format=%H", "--grep", &auto, "main"],
    );
    let failed_phase = || (setup.canary("podinfo")["phase"] == "Failed").then_some(());
    if wait_for(Duration::from_secs(120), failed_phase).is_none() {
        let (_, log) = running.stop();
        panic!("1.0.1 never failed: {}\n{log}", setup.canary("podinfo"));
    }
    (running, failed)
}

#[test]
fn a_failed_rollout_with_revert_on_is_rolled_back_in_git_and_its_tag_rejected() {
    let (reg, remote, setup) = setup(true);
    let (url, alerts) = receiver();
    std::fs::write(setup.dir.path().join("ops-url"), &url).unwrap();
    let text = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(
        &setup.config,
        format!("{text}notifications:\n  providers:\n    - name: ops\n      type: generic\n      addressFile: ./ops-url\n      severity: info\n"),
    )
    .unwrap();
    let (running, failed) = fail_1_0_1(&reg, &remote, &setup);

    // Exactly one revert commit, changing only the tag back.
    let subject = "Rollback podinfo.test to 1.0.0: failed checks threshold reached 3";
    wait_for(Duration::from_secs(60), || {
        log(&remote)
            .first()
            .is_some_and(|s| s == subject)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no rollback commit: {:?}", log(&remote)));
    let body = git(&remote.bare, &["log", "-1", "--format=%B", "main"]);
    assert!(
        body.trim_end()
            .ends_with(&format!("Gitcanary-Failed-Commit: {failed}")),
        "{body}"
    );
    let diff = git(&remote.bare, &["diff", "main~1", "main"]);
    let changed: Vec<&str> = diff
        .lines()
        .filter(|l| {
            (l.starts_with('+') || l.starts_with('-'))
                && !l.starts_with("+++")
                && !l.starts_with("---")
        })
        .collect();
    assert_eq!(
        changed,
        [
            format!(
                "-          image: {}/podinfo:1.0.1 # the image under test",
                reg.addr
            ),
            format!(
                "+          image: {}/podinfo:1.0.0 # the image under test",
                reg.addr
            ),
        ],
        "{diff}"
    );
    let seeded = app(&reg.addr, "1.0.0", true);
    assert_eq!(
        git(&remote.bare, &["show", "main:podinfo/deployment.yaml"]),
        seeded[2].1.trim_end(),
        "byte for byte what was promoted"
    );

    // Both are notified once.
    let sent = |what: &str| {
        let got = alerts.lock().unwrap();
        got.iter().filter(|b| b.contains(what)).count()
    };
    let rollback = "Rollback podinfo.test to 1.0.0 written to Git as ";
    wait_for(Duration::from_secs(20), || {
        (sent(rollback) == 1).then_some(())
    })
    .unwrap_or_else(|| panic!("{:#?}", alerts.lock().unwrap()));
    let rejected = format!(
        "Tag {}/podinfo:1.0.1 rejected after podinfo.test failed",
        reg.addr
    );
    assert_eq!(sent(&rejected), 1, "{:#?}", alerts.lock().unwrap());

    // The local target serves the promoted version, with no new analysis.
    let head = git(&remote.bare, &["rev-parse", "main"]);
    wait_for(Duration::from_secs(30), || {
        (setup.status()["appliedRevision"] == format!("main@sha1:{head}")).then_some(())
    })
    .expect("the revert is applied");
    wait_for(Duration::from_secs(30), || {
        setup.canary("podinfo")["message"]
            .as_str()?
            .starts_with("podinfo-primary.test serves the promoted revision")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("{}", setup.canary("podinfo")));
    assert_eq!(apex_version(&setup).as_deref(), Some("1.0.0"));
    let starts = canary_events(&setup.canary("podinfo"))
        .iter()
        .filter(|e| *e == "New revision detected! Scaling up podinfo.test")
        .count();
    assert_eq!(starts, 1, "only 1.0.1 was analysed");

    // The note on the failed commit records the rollback and the rejected tag.
    let note = git(&remote.bare, &["notes", "--ref=gitcanary", "show", &failed]);
    assert!(note.contains("reverted in "), "{note}");
    assert!(note.contains("tagRejected"), "{note}");

    // Automation does not pick 1.0.1 again while the registry offers it.
    assert_eq!(rejected_cell(&setup), "1.0.1");
    let before = log(&remote);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(log(&remote), before, "1.0.1 is not re-selected");

    // A newer tag is taken.
    reg.push_tag("podinfo", "1.0.2", "2024-01-02T00:00:00Z");
    let newer = format!("Auto-release {}/podinfo:1.0.2", reg.addr);
    wait_for(Duration::from_secs(60), || {
        log(&remote)
            .first()
            .is_some_and(|s| *s == newer)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("automation never moved to 1.0.2: {:?}", log(&remote)));

    // `images allow` clears the rejection, in Git too.
    let out = setup.cmd(&["images", "allow", &format!("{}/podinfo:1.0.1", reg.addr)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(rejected_cell(&setup), "-");
    // Notified once, at info, naming the tag and the command; never the address.
    let allowed = format!(
        "Tag {}/podinfo:1.0.1 allowed again by gitcanary images allow",
        reg.addr
    );
    assert_eq!(sent(&allowed), 1, "{:#?}", alerts.lock().unwrap());
    {
        let got = alerts.lock().unwrap();
        let body = got.iter().find(|b| b.contains(&allowed)).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            (v["severity"].as_str(), v["reason"].as_str()),
            (Some("info"), Some("TagAllowed")),
            "{body}"
        );
        assert!(got.iter().all(|b| !b.contains(&url)), "{got:#?}");
    }
    let again = setup.cmd(&["images", "allow", &format!("{}/podinfo:1.0.1", reg.addr)]);
    assert!(!again.status.success(), "no longer rejected");
    assert_eq!(sent(&allowed), 1, "{:#?}", alerts.lock().unwrap());
    let notes = git(
        &remote.bare,
        &["log", "--notes=gitcanary", "--format=%N", "main"],
    );
    assert!(notes.contains("tagAllowed"), "{notes}");
    running.stop();
}

#[test]
fn a_failed_rollout_with_revert_off_leaves_git_and_remembers_the_tag() {
    let (reg, remote, setup) = setup(false);
    let (running, failed) = fail_1_0_1(&reg, &remote, &setup);

    // The note is written on the failed commit; Git is unchanged.
    let note = wait_for(Duration::from_secs(30), || note_on(&remote, &failed))
        .expect("a note on the failed commit");
    assert!(note.contains("Failed"), "{note}");
    assert!(note.contains("tagRejected"), "{note}");
    assert_eq!(
        git(&remote.bare, &["rev-parse", "main"]),
        failed,
        "Git unchanged"
    );
    assert_eq!(rejected_cell(&setup), "1.0.1");
    running.stop();

    // A lost state dir forgets nothing: the rejection comes back from the notes.
    std::fs::remove_file(setup.state().join("status/rejected-tags.json")).unwrap();
    let running = setup.spawn_run(&[]);
    wait_for(Duration::from_secs(30), || {
        (rejected_cell(&setup) == "1.0.1").then_some(())
    })
    .unwrap_or_else(|| panic!("{}", images_table(&setup)));
    assert_eq!(
        git(&remote.bare, &["rev-parse", "main"]),
        failed,
        "still unchanged"
    );
    running.stop();
}

#[test]
fn a_restart_during_the_promotion_still_names_the_tags_in_the_note() {
    // Promotion in 2% steps: some 25 one-second steps to stop the daemon in, after the
    // primary already runs 1.0.2.
    let (reg, remote, setup) = setup_with(false, |canary| {
        canary.replace(
            "    stepWeight: 10\n",
            "    stepWeight: 10\n    stepWeightPromotion: 2\n",
        )
    });
    let running = setup.spawn_run(&[]);
    setup.wait_canary("podinfo", "Initialized", 60);
    reg.push_tag("podinfo", "1.0.2", "2024-01-02T00:00:00Z");
    let auto = format!("Auto-release {}/podinfo:1.0.2", reg.addr);
    wait_for(Duration::from_secs(60), || {
        log(&remote).contains(&auto).then_some(())
    })
    .unwrap_or_else(|| panic!("automation never pushed 1.0.2: {:?}", log(&remote)));
    let released = git(
        &remote.bare,
        &["log", "-1", "--format=%H", "--grep", &auto, "main"],
    );
    let promoting = || (setup.canary("podinfo")["phase"] == "Promoting").then_some(());
    if wait_for(Duration::from_secs(120), promoting).is_none() {
        let (_, log) = running.stop();
        panic!(
            "1.0.2 never got promoted: {}\n{log}",
            setup.canary("podinfo")
        );
    }
    running.stop();
    let status = setup.canary("podinfo");
    assert_eq!(
        status["phase"], "Promoting",
        "stopped mid-promotion: {status}"
    );

    let running = setup.spawn_run(&[]);
    let note = wait_for(Duration::from_secs(120), || note_on(&remote, &released));
    let Some(note) = note else {
        let (_, log) = running.stop();
        panic!("no note on {released}: {}\n{log}", setup.canary("podinfo"));
    };
    assert!(
        note.starts_with("gitcanary rollout test/podinfo: Succeeded\nFrom 1.0.0 to 1.0.2\n"),
        "{note}"
    );
    assert!(
        note.contains(&format!(
            "  podinfod: {0}/podinfo:1.0.0 -> {0}/podinfo:1.0.2\n",
            reg.addr
        )),
        "{note}"
    );
    // The load test's calls before the restart are counted too.
    let entry = gitcanary::history::Note::parse(&note);
    let rollout = entry.rollouts().next().unwrap();
    let load_test = rollout.webhooks.iter().find(|w| w.name == "load-test");
    assert!(load_test.is_some_and(|w| w.calls >= 5), "{note}");
    running.stop();
}
