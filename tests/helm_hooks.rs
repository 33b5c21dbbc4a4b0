//! Helm hooks on the local target: `pre-*`/`post-*` hooks run around the apply in Helm's
//! order (a failing `pre-upgrade` applies nothing), `gitcanary helm test` runs the test
//! hooks, and a Canary's `pre-rollout` webhook of type `helmv3` runs them as a check,
//! with real Git, real processes and real traffic.

mod common;
use common::*;

const IMAGES: &str = "    images:\n      example.com/podinfo: [\"gitcanary\", \"demo-app\", \"--port\", \"$(PORT)\"]\n";

const CHART: &str = "apiVersion: v2\nname: web\nversion: 0.1.0\n";

const VALUES: &str = r#"image:
  repository: example.com/podinfo
  tag: 1.0.0
marker: /dev/null
migrate:
  fail: false
test:
  expect: ""
canary:
  enabled: false
"#;

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
  labels:
    app: {{ .Release.Name }}
    helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
    app.kubernetes.io/managed-by: {{ .Release.Service }}
spec:
  replicas: 1
  selector:
    matchLabels:
      app: {{ .Release.Name }}
  template:
    metadata:
      labels:
        app: {{ .Release.Name }}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
        - name: web
          image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
          ports:
            - name: http
              containerPort: 9898
          readinessProbe:
            httpGet:
              path: /readyz
              port: http
            periodSeconds: 1
"#;

const HOOKS: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-migrate-env
  annotations:
    "helm.sh/hook": pre-install,pre-upgrade
    "helm.sh/hook-weight": "-5"
data:
  STEP: migrate
---
apiVersion: v1
kind: Secret
metadata:
  name: {{ .Release.Name }}-db
  annotations:
    "helm.sh/hook": pre-install,pre-upgrade
    "helm.sh/hook-weight": "-5"
stringData:
  DB_PASSWORD: hunter2-secret
---
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ .Release.Name }}-migrate
  annotations:
    "helm.sh/hook": pre-install,pre-upgrade
    "helm.sh/hook-weight": "-1"
    "helm.sh/hook-delete-policy": before-hook-creation,hook-succeeded
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: migrate
          image: busybox
          envFrom:
            - configMapRef:
                name: {{ .Release.Name }}-migrate-env
            - secretRef:
                name: {{ .Release.Name }}-db
          command:
            - sh
            - -c
            - echo "$STEP {{ .Values.image.tag }}" >> {{ .Values.marker }}{{ if .Values.migrate.fail }}; echo "migration failed with $DB_PASSWORD" >&2; exit 3{{ end }}
---
apiVersion: v1
kind: Pod
metadata:
  name: {{ .Release.Name }}-notify
  annotations:
    "helm.sh/hook": post-install,post-upgrade
spec:
  restartPolicy: Never
  containers:
    - name: notify
      image: busybox
      command: ["sh", "-c", "echo \"notify {{ .Values.image.tag }} revision {{ .Release.Revision }} upgrade={{ .Release.IsUpgrade }}\" >> {{ .Values.marker }}"]
---
apiVersion: v1
kind: Pod
metadata:
  name: {{ .Release.Name }}-test
  annotations:
    "helm.sh/hook": test
spec:
  restartPolicy: Never
  containers:
    - name: test
      image: curlimages/curl
      command:
        - sh
        - -c
        - |
          {{- if .Values.canary.enabled }}
          got=$(curl -sf http://{{ .Release.Name }}-canary.{{ .Release.Namespace }}:9898/version) || { echo "canary unreachable"; exit 1; }
          echo "$got" | grep -q '"{{ .Values.test.expect | default .Values.image.tag }}"' || { echo "expected version {{ .Values.test.expect | default .Values.image.tag }}, got $got"; exit 1; }
          {{- else }}
          echo "test {{ .Values.image.tag }}" >> {{ .Values.marker }}
          {{- end }}
"#;

const CANARY: &str = r#"{{- if .Values.canary.enabled }}
apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: {{ .Release.Name }}
spec:
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ .Release.Name }}
  progressDeadlineSeconds: 60
  service:
    port: 9898
    targetPort: 9898
  analysis:
    interval: 1s
    threshold: 2
    maxWeight: 20
    stepWeight: 10
    webhooks:
      - name: helm test
        type: pre-rollout
        url: http://flagger-helmtester.kube-system/
        timeout: 30s
        metadata:
          type: "helmv3"
          cmd: "test {{ .Release.Name }} -n {{ .Release.Namespace }}"
{{- end }}
"#;

fn release(tag: &str, extra: &str) -> String {
    format!(
        "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: web\n  namespace: test\nspec:\n  interval: 5m\n  timeout: 1m\n  chart:\n    spec:\n      chart: ./charts/web\n      sourceRef:\n        kind: GitRepository\n        name: flux-system\n  values:\n    image:\n      tag: {tag}\n{extra}"
    )
}

fn seed(remote: &Remote, rel: &str) {
    remote
        .write(&[
            ("ns.yaml", NAMESPACE),
            ("charts/web/Chart.yaml", CHART),
            ("charts/web/values.yaml", VALUES),
            ("charts/web/templates/deployment.yaml", DEPLOYMENT),
            ("charts/web/templates/hooks.yaml", HOOKS),
            ("charts/web/templates/canary.yaml", CANARY),
            ("releases/web.yaml", rel),
        ])
        .push("seed");
}

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn hooks_run_in_order_around_the_apply_and_a_failing_pre_upgrade_applies_nothing() {
    let remote = Remote::new();
    let work = tempfile::tempdir().unwrap();
    let marker = work.path().join("hooks.log");
    let values = |fail: bool| {
        format!(
            "    marker: {}\n    migrate:\n      fail: {fail}\n",
            marker.display()
        )
    };
    seed(&remote, &release("1.0.0", &values(false)));
    let setup = Setup::new(&remote.bare.display().to_string(), "", "");
    setup.with_local_images(IMAGES);

    let (ok, out) = setup.sync();
    assert!(ok, "{out}");
    // pre-install: the ConfigMap hook (weight -5) feeds the Job (weight -1); then
    // post-install after the objects are applied.
    assert_eq!(
        lines(&marker),
        ["migrate 1.0.0", "notify 1.0.0 revision 1 upgrade=false"]
    );
    let d = setup.object("apps", "Deployment", "test", "web").unwrap();
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "example.com/podinfo:1.0.0"
    );
    assert_eq!(d["metadata"]["labels"]["helm.sh/chart"], "web-0.1.0");
    assert_eq!(
        d["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "Helm"
    );
    // Hooks are not objects of the release.
    assert!(setup
        .object("batch", "Job", "test", "web-migrate")
        .is_none());
    assert!(setup
        .object("", "ConfigMap", "test", "web-migrate-env")
        .is_none());

    // Nothing changed: no hooks, even though templates use `.Release.Revision`.
    for _ in 0..2 {
        let (ok, out) = setup.sync();
        assert!(ok, "{out}");
        assert_eq!(lines(&marker).len(), 2);
    }

    // An upgrade runs pre-upgrade and post-upgrade.
    remote
        .write(&[(
            "releases/web.yaml",
            &format!(
                "{}  test:\n    enable: true\n",
                release("1.0.1", &values(false))
            ),
        )])
        .push("web 1.0.1, with spec.test.enable");
    let (ok, out) = setup.sync();
    assert!(ok, "{out}");
    assert_eq!(
        lines(&marker)[2..],
        [
            "migrate 1.0.1".to_string(),
            "notify 1.0.1 revision 2 upgrade=true".to_string(),
            "test 1.0.1".to_string()
        ]
    );
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(setup.state().join("helm/releases/test/web.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["revision"], 2);
    let out = setup.cmd(&["get", "helmreleases", "-o", "json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["name"], "web");
    assert_eq!(rows[0]["revision"], 2);
    assert_eq!(rows[0]["chart"], "web-0.1.0");
    assert_eq!(rows[0]["ready"], "True");
    let out = setup.cmd(&["get", "hr"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("test/web"));

    // A failing pre-upgrade hook applies nothing: the Deployment stays at 1.0.1.
    remote
        .write(&[("releases/web.yaml", &release("1.0.2", &values(true)))])
        .push("web 1.0.2, broken migration");
    let (ok, out) = setup.sync();
    assert!(!ok, "{out}");
    assert!(
        out.contains("pre-upgrade hook Job/web-migrate failed")
            && out.contains("migration failed with <redacted>")
            && !out.contains("hunter2"),
        "{out}"
    );
    let d = setup.object("apps", "Deployment", "test", "web").unwrap();
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "example.com/podinfo:1.0.1"
    );
    assert!(setup.status()["lastError"]
        .as_str()
        .unwrap()
        .contains("nothing applied"));
    // backoffLimit 1: two attempts, no post-upgrade hook.
    assert_eq!(
        lines(&marker)[5..],
        ["migrate 1.0.2".to_string(), "migrate 1.0.2".to_string()]
    );

    // `helm test` runs the test hooks of the applied release.
    let out = setup.cmd(&["helm", "test", "web", "-n", "test"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 test(s) passed"));
    assert_eq!(lines(&marker).last().unwrap(), "test 1.0.1");
    let out = setup.cmd(&["helm", "test", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("release nope not found"));
}

#[test]
fn helm_test_hooks_gate_a_canary_as_a_pre_rollout_check() {
    let remote = Remote::new();
    let canary_values = "    canary:\n      enabled: true\n";
    seed(&remote, &release("1.0.0", canary_values));
    let setup = Setup::new(&remote.bare.display().to_string(), "  interval: 1h\n", "");
    setup.with_local_images(IMAGES);
    let running = setup.spawn_run(&[]);
    let wait_phase = |phase: &str| setup.wait_canary("web", phase, 120);
    let events = canary_events;
    wait_phase("Initialized");

    // The tests pass against the new version: promoted.
    remote
        .write(&[("releases/web.yaml", &release("1.0.1", canary_values))])
        .push("web 1.0.1");
    let c = wait_phase("Succeeded");
    let ev = events(&c);
    assert!(
        ev.iter().any(|e| e == "Advance web.test canary weight 10"),
        "{ev:#?}"
    );

    // The tests fail: the analysis halts at pre-rollout and rolls back.
    remote
        .write(&[(
            "releases/web.yaml",
            &release(
                "1.0.2",
                &format!("{canary_values}    test:\n      expect: 9.9.9\n"),
            ),
        )])
        .push("web 1.0.2 with a failing test");
    let c = wait_phase("Failed");
    let ev = events(&c);
    assert!(
        ev.iter().any(|e| e
            .starts_with("Halt web.test advancement pre-rollout check helm test failed")
            && e.contains("expected version 9.9.9")),
        "{ev:#?}"
    );
    assert!(
        ev.iter()
            .any(|e| e.starts_with("Rolling back web.test failed checks threshold reached 2")),
        "{ev:#?}"
    );
    drop(running);
}

#[test]
fn the_state_dir_is_private_and_secret_files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    let remote = Remote::new();
    let work = tempfile::tempdir().unwrap();
    let marker = work.path().join("hooks.log");
    seed(
        &remote,
        &release("1.0.0", &format!("    marker: {}\n", marker.display())),
    );
    remote
        .write(&[(
            "secret.yaml",
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: test\nstringData:\n  password: hunter2\n",
        )])
        .push("a secret");
    let setup = Setup::new(&remote.bare.display().to_string(), "", "");
    setup.with_local_images(IMAGES);
    // A state dir an older version left open to everyone, with a Secret readable by all.
    let state = setup.state();
    let old = state.join("objects/core/Secret/test/old.json");
    std::fs::create_dir_all(old.parent().unwrap()).unwrap();
    std::fs::write(&old, "{}").unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();

    let (ok, out) = setup.sync();
    assert!(ok, "{out}");
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&old), 0o600, "tightened at start");
    assert_eq!(mode(&state.join("objects/core/Secret/test/db.json")), 0o600);
    assert_eq!(
        mode(&state.join("objects/apps/Deployment/test/web.json")),
        0o600
    );
    assert_eq!(mode(&state.join("helm/releases/test/web.json")), 0o600);
    let logs: Vec<_> = std::fs::read_dir(state.join("logs/hooks/test"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!logs.is_empty());
    for log in logs {
        assert_eq!(mode(&log), 0o600, "{}", log.display());
    }
}
