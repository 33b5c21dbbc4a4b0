//! Push → sync → store, against a real bare repository over `file://`.

mod common;
use common::*;

fn setup_with(files: &[(&str, &str)]) -> (Remote, Setup) {
    let remote = Remote::new();
    remote.write(files);
    remote.push("initial");
    let setup = Setup::new(&format!("file://{}", remote.bare.display()), "", "");
    (remote, setup)
}

#[test]
fn push_then_sync_applies_objects() {
    let (remote, setup) = setup_with(&[
        ("ns.yaml", NAMESPACE),
        ("apps/cfg.yaml", &configmap("cfg", "one")),
    ]);
    let (ok, out) = setup.sync();
    assert!(ok, "{out}");
    let cm = setup
        .object("core", "ConfigMap", "test", "cfg")
        .expect("stored");
    assert_eq!(cm["data"]["key"], "one");
    assert!(setup
        .object("core", "Namespace", "_cluster", "test")
        .is_some());

    let head = remote
        .write(&[("apps/cfg.yaml", &configmap("cfg", "two"))])
        .push("change");
    let (ok, out) = setup.sync();
    assert!(ok, "{out}");
    assert_eq!(
        setup.object("core", "ConfigMap", "test", "cfg").unwrap()["data"]["key"],
        "two"
    );
    let status = setup.status();
    assert_eq!(status["appliedRevision"], format!("main@sha1:{head}"));
    assert_eq!(status["fetchedRevision"], format!("main@sha1:{head}"));
    assert_eq!(status["ready"], true);
}

#[test]
fn broken_yaml_names_file_and_line_and_keeps_old_state() {
    let (remote, setup) = setup_with(&[
        ("apps/cfg.yaml", &configmap("cfg", "one")),
        ("apps/other.yaml", &configmap("other", "x")),
    ]);
    assert!(setup.sync().0);
    let good = setup.status()["appliedRevision"].clone();

    remote.write(&[
        ("apps/cfg.yaml", &configmap("cfg", "two")),
        ("apps/broken.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\ndata: [unclosed\n"),
        ("apps/typed.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: many\n  selector: {}\n  template:\n    spec:\n      containers: []\n"),
    ]);
    remote.remove("apps/other.yaml");
    remote.push("broken");
    let (ok, out) = setup.sync();
    assert!(!ok, "a broken revision must fail: {out}");
    assert!(
        out.contains("apps/broken.yaml:6:1: invalid YAML"),
        "names the file and line: {out}"
    );
    assert!(
        out.contains("apps/typed.yaml:6:13: spec.replicas: expected an integer"),
        "every error is reported: {out}"
    );
    // Nothing from the bad revision was applied, nothing was pruned.
    assert_eq!(
        setup.object("core", "ConfigMap", "test", "cfg").unwrap()["data"]["key"],
        "one"
    );
    assert!(setup.object("core", "ConfigMap", "test", "other").is_some());
    let status = setup.status();
    assert_eq!(status["appliedRevision"], good);
    assert_eq!(status["ready"], false);
    assert!(status["lastError"]
        .as_str()
        .unwrap()
        .contains("apps/broken.yaml:6:1"));

    // `get sources` shows it too.
    let out = setup.cmd(&["get", "sources"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("False") && text.contains("is invalid"),
        "{text}"
    );
}

#[test]
fn deleting_a_file_prunes_but_opt_outs_stay() {
    let kept = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: kept\n  namespace: test\n  annotations:\n    kustomize.toolkit.fluxcd.io/prune: disabled\n";
    let kept2 = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: kept2\n  namespace: test\n  annotations:\n    gitcanary.io/prune: disabled\n";
    let (remote, setup) = setup_with(&[
        ("ns.yaml", NAMESPACE),
        ("a.yaml", &configmap("gone", "1")),
        ("b.yaml", kept),
        ("c.yaml", kept2),
        ("d.yaml", &configmap("stays", "1")),
    ]);
    assert!(setup.sync().0);
    remote
        .remove("a.yaml")
        .remove("b.yaml")
        .remove("c.yaml")
        .remove("ns.yaml");
    remote.push("delete");
    let (ok, out) = setup.sync();
    assert!(ok, "{out}");
    assert!(
        setup.object("core", "ConfigMap", "test", "gone").is_none(),
        "pruned"
    );
    assert!(
        setup
            .object("core", "Namespace", "_cluster", "test")
            .is_none(),
        "namespace pruned"
    );
    assert!(
        setup.object("core", "ConfigMap", "test", "kept").is_some(),
        "flux opt-out honoured"
    );
    assert!(
        setup.object("core", "ConfigMap", "test", "kept2").is_some(),
        "gitcanary opt-out honoured"
    );
    assert!(setup.object("core", "ConfigMap", "test", "stays").is_some());
    // The opted-out objects are no longer managed: a later sync leaves them alone.
    let out = setup.cmd(&["get", "objects", "-o", "json"]);
    let objs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = objs
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["stays"]);
}

#[test]
fn never_prunes_what_it_did_not_apply() {
    let (remote, setup) = setup_with(&[("a.yaml", &configmap("mine", "1"))]);
    assert!(setup.sync().0);
    let foreign = setup
        .state()
        .join("objects/core/ConfigMap/test/foreign.json");
    std::fs::write(&foreign, r#"{"kind":"ConfigMap"}"#).unwrap();
    remote.remove("a.yaml");
    remote.write(&[("b.yaml", &configmap("new", "1"))]);
    remote.push("swap");
    assert!(setup.sync().0);
    assert!(
        foreign.exists(),
        "objects outside the inventory are never pruned"
    );
    assert!(setup.object("core", "ConfigMap", "test", "mine").is_none());
}

#[test]
fn duplicates_name_both_files() {
    let (remote, setup) = setup_with(&[("a.yaml", &configmap("cfg", "1"))]);
    assert!(setup.sync().0);
    remote
        .write(&[("dir/b.yaml", &format!("---\n{}", configmap("cfg", "2")))])
        .push("dup");
    let (ok, out) = setup.sync();
    assert!(!ok);
    assert!(
        out.contains(
            "ConfigMap/test/cfg is defined twice: first at a.yaml:1, again at dir/b.yaml:2"
        ),
        "{out}"
    );
    assert_eq!(
        setup.object("core", "ConfigMap", "test", "cfg").unwrap()["data"]["key"],
        "1"
    );
}

#[test]
fn path_escapes_are_refused() {
    let (remote, setup) = setup_with(&[("a.yaml", &configmap("cfg", "1"))]);
    assert!(setup.sync().0);
    remote.write(&[(
        "k/kustomization.yaml",
        "resources:\n  - ../../../etc/passwd\n",
    )]);
    std::os::unix::fs::symlink("../../../../etc", remote.work.join("evil")).unwrap();
    remote.push("escape");
    let (ok, out) = setup.sync();
    assert!(!ok);
    assert!(
        out.contains(
            "k/kustomization.yaml:2:5: resources: \"../../../etc/passwd\" escapes the repository"
        ),
        "{out}"
    );
    assert!(
        out.contains("evil: symlink to \"../../../../etc\" escapes the repository"),
        "{out}"
    );
}

#[test]
fn identities_that_would_leave_the_state_dir_are_refused() {
    let (remote, setup) = setup_with(&[("a.yaml", &configmap("cfg", "1"))]);
    assert!(setup.sync().0);
    remote
        .write(&[
            (
                "evil.yaml",
                "apiVersion: v1\nkind: ../../../pwned\nmetadata:\n  name: x\n  namespace: test\n",
            ),
            (
                "group.yaml",
                "apiVersion: ../../../pwned/v1\nkind: ConfigMap\nmetadata:\n  name: y\n  namespace: test\n",
            ),
            (
                "ns.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: z\n  namespace: a.b\n",
            ),
            ("b.yaml", &configmap("other", "2")),
        ])
        .remove("a.yaml")
        .push("escape");
    let out = setup.sync_fails();
    for want in [
        "evil.yaml:2:7: kind: \"../../../pwned\" is not a valid kind",
        "group.yaml:1:13: apiVersion: \"../../../pwned/v1\": the group \"../../../pwned\" is not a valid DNS subdomain",
        "ns.yaml:5:14: metadata.namespace: \"a.b\" is not a valid namespace",
    ] {
        assert!(out.contains(want), "{want}\n{out}");
    }
    assert!(!out.contains("image automation"), "{out}");
    // Release names and namespaces name the release records' files.
    remote
        .remove("evil.yaml")
        .remove("group.yaml")
        .remove("ns.yaml")
        .write(&[
            (
                "hr.yaml",
                "apiVersion: helm.fluxcd.io/v1\nkind: HelmRelease\nmetadata:\n  name: web\n  namespace: test\nspec:\n  releaseName: ../../../../pwned\n  chart:\n    path: charts/web\n",
            ),
            (
                "hr2.yaml",
                "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: api\n  namespace: test\nspec:\n  targetNamespace: ../../pwned\n  chart:\n    spec:\n      chart: ./charts/web\n",
            ),
        ])
        .push("release escape");
    let out = setup.sync_fails();
    for want in [
        "hr.yaml:1:1: spec.releaseName: HelmRelease test/web: \"../../../../pwned\" is not a valid release name",
        "hr2.yaml:1:1: spec.targetNamespace: HelmRelease test/api: \"../../pwned\" is not a valid namespace",
    ] {
        assert!(out.contains(want), "{want}\n{out}");
    }
    // The failing revision applied nothing: no new object, no prune, nothing outside.
    assert!(setup.object("core", "ConfigMap", "test", "other").is_none());
    assert!(setup.object("core", "ConfigMap", "test", "cfg").is_some());
    assert!(!setup.dir.path().join("pwned").exists());
}

#[test]
fn kustomization_resources_namespace_and_sourceignore() {
    let (_remote, setup) = setup_with(&[
        ("apps/kustomization.yaml", "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: prod\nresources:\n  - cfg.yaml\n"),
        ("apps/cfg.yaml", &configmap("cfg", "1")),
        ("apps/not-listed.yaml", &configmap("unlisted", "1")),
        (".sourceignore", "drafts/\n"),
        ("drafts/wip.yaml", "this: is: not: yaml"),
        ("charts/app/Chart.yaml", "apiVersion: v2\nname: app\nversion: 0.1.0\n"),
        ("charts/app/templates/x.yaml", "{{ .Values.broken }}"),
        ("ignored.yaml", &format!("{}  annotations:\n    fluxcd.io/ignore: \"true\"\n", configmap("ign", "1").replace("data:\n  key: \"1\"\n", ""))),
    ]);
    let (ok, out) = setup.sync();
    assert!(ok, "{out}");
    assert!(
        setup.object("core", "ConfigMap", "prod", "cfg").is_some(),
        "namespace override"
    );
    assert!(
        setup
            .object("core", "ConfigMap", "test", "unlisted")
            .is_none(),
        "only listed resources"
    );
    assert!(
        setup.object("core", "ConfigMap", "test", "ign").is_none(),
        "ignore annotation"
    );
}

#[test]
fn examples_repo_syncs_into_the_local_target() {
    let remote = Remote::new();
    remote.copy_from(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples-repo"));
    remote.push("seed");
    // The examples follow public Docker Hub images; nothing here may reach them.
    let setup = Setup::new(
        &remote.bare.display().to_string(),
        "",
        "images:\n  enabled: false\n",
    );
    let (ok, out) = setup.sync();
    assert!(ok, "{out}");
    let canary = setup
        .object("flagger.app", "Canary", "test", "podinfo")
        .expect("canary stored");
    assert_eq!(canary["spec"]["analysis"]["stepWeight"], 10);
    assert!(setup
        .object("flux.weave.works", "HelmRelease", "test", "frontend")
        .is_some());
    assert!(setup
        .object("apps", "Deployment", "test", "podinfo")
        .is_some());
    // The HelmReleases render from charts/podinfo into ordinary objects.
    let backend = setup
        .object("apps", "Deployment", "test", "backend-podinfo")
        .expect("chart rendered");
    assert_eq!(backend["spec"]["replicas"], 2);
    assert!(setup
        .object(
            "autoscaling",
            "HorizontalPodAutoscaler",
            "test",
            "frontend-podinfo"
        )
        .is_some());
    // A second sync writes nothing.
    let (ok, out) = setup.sync();
    assert!(
        ok && out.contains("0 created, 0 configured, 0 pruned, 12 unchanged"),
        "{out}"
    );
}

const CHART: &[(&str, &str)] = &[
    ("charts/web/Chart.yaml", "apiVersion: v2\nname: web\nversion: 1.0.0\n"),
    ("charts/web/values.yaml", "message: hello\nextra: false\n"),
    (
        "charts/web/templates/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cfg\ndata:\n  message: {{ .Values.message | quote }}\n",
    ),
    (
        "charts/web/templates/tests/ping.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-test\n  annotations:\n    helm.sh/hook: test\ndata: {}\n",
    ),
    (
        "charts/web/templates/data.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-data\n  annotations:\n    helm.sh/resource-policy: keep\ndata: {}\n",
    ),
    (
        "charts/web/templates/extra.yaml",
        "{{- if .Values.extra }}\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-extra\ndata: {}\n{{- end }}\n",
    ),
];

fn helm_release(values: &str) -> String {
    format!("apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: web\n  namespace: test\nspec:\n  interval: 5m\n  chart:\n    spec:\n      chart: ./charts/web\n      sourceRef:\n        kind: GitRepository\n        name: flux-system\n  values:\n{values}")
}

#[test]
fn helm_release_renders_applies_and_prunes_from_git() {
    let mut files = CHART.to_vec();
    let hr = helm_release("    message: first\n");
    files.push(("releases/web.yaml", &hr));
    let (remote, setup) = setup_with(&files);
    let (ok, out) = setup.sync();
    assert!(ok, "{out}");
    let cm = setup
        .object("core", "ConfigMap", "test", "web-cfg")
        .expect("rendered");
    assert_eq!(cm["data"]["message"], "first");
    assert!(setup
        .object("core", "ConfigMap", "test", "web-extra")
        .is_none());
    // Hooks are separated out, not applied as release objects.
    assert!(setup
        .object("core", "ConfigMap", "test", "web-test")
        .is_none());

    // Changing values in Git re-renders; a template switched on appears.
    remote
        .write(&[(
            "releases/web.yaml",
            &helm_release("    message: second\n    extra: true\n"),
        )])
        .push("values");
    let (ok, out) = setup.sync();
    assert!(ok, "{out}");
    assert_eq!(
        setup
            .object("core", "ConfigMap", "test", "web-cfg")
            .unwrap()["data"]["message"],
        "second"
    );
    assert!(setup
        .object("core", "ConfigMap", "test", "web-extra")
        .is_some());

    // spec.suspend holds the release as last applied: new values wait, nothing is
    // pruned; resuming applies them.
    let suspended =
        helm_release("    message: third\n").replacen("spec:\n", "spec:\n  suspend: true\n", 1);
    remote
        .write(&[("releases/web.yaml", &suspended)])
        .push("suspend");
    let (ok, out) = setup.sync();
    assert!(ok, "{out}");
    let cfg = |setup: &Setup| {
        setup
            .object("core", "ConfigMap", "test", "web-cfg")
            .unwrap()["data"]["message"]
            .clone()
    };
    assert_eq!(cfg(&setup), "second");
    assert!(setup
        .object("core", "ConfigMap", "test", "web-extra")
        .is_some());
    remote
        .write(&[(
            "releases/web.yaml",
            &helm_release("    message: third\n    extra: true\n"),
        )])
        .push("resume");
    let (ok, out) = setup.sync();
    assert!(ok, "{out}");
    assert_eq!(cfg(&setup), "third");

    // A template error applies nothing and keeps the last good state.
    let good = setup.status()["appliedRevision"].clone();
    remote
        .write(&[(
            "charts/web/templates/bad.yaml",
            "x: {{ .Values.message | nosuch }}\n",
        )])
        .push("bad template");
    let (ok, out) = setup.sync();
    assert!(!ok, "{out}");
    assert!(out.contains("charts/web/templates/bad.yaml:1:"), "{out}");
    assert_eq!(setup.status()["appliedRevision"], good);
    assert!(setup
        .object("core", "ConfigMap", "test", "web-extra")
        .is_some());

    // Removing the release prunes what it rendered.
    remote.remove("charts/web/templates/bad.yaml");
    remote.remove("releases/web.yaml");
    remote.push("remove release");
    let (ok, out) = setup.sync();
    assert!(ok, "{out}");
    assert!(setup
        .object("core", "ConfigMap", "test", "web-cfg")
        .is_none());
    assert!(setup
        .object("core", "ConfigMap", "test", "web-extra")
        .is_none());
    assert!(
        setup
            .object("core", "ConfigMap", "test", "web-data")
            .is_some(),
        "helm.sh/resource-policy: keep survives the release"
    );
}

type Hits = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// A real HTTP server on 127.0.0.1:0 serving fixed files (a Helm repository), with
/// basic auth when `basic` is given (`user:password`). Returns the URL and the paths
/// requested.
fn serve_files(files: Vec<(String, Vec<u8>)>, basic: Option<&str>) -> (String, Hits) {
    use base64::Engine as _;
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let hits: Hits = Default::default();
    let log = hits.clone();
    let want = basic.map(|b| {
        format!(
            "authorization: basic {}",
            base64::engine::general_purpose::STANDARD.encode(b)
        )
        .to_lowercase()
    });
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 4096];
            let n = conn.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
            let found = files.iter().find(|(p, _)| *p == path);
            log.lock().unwrap().push(path.clone());
            let authorized = want
                .as_ref()
                .is_none_or(|w| req.to_lowercase().lines().any(|l| l.trim() == w));
            let (status, body) = match found {
                _ if !authorized => ("401 Unauthorized", b"unauthorized".to_vec()),
                Some((_, b)) => ("200 OK", b.clone()),
                None => ("404 Not Found", b"not found".to_vec()),
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(&body);
        }
    });
    (addr, hits)
}

#[test]
fn helm_repository_charts_are_downloaded_verified_and_cached() {
    use sha2::Digest;
    let tgz = gitcanary::helm::repo::pack(&[
        ("redis/Chart.yaml", "apiVersion: v2\nname: redis\nversion: 1.2.0\n"),
        ("redis/values.yaml", "port: 6379\n"),
        ("redis/templates/svc.yaml", "apiVersion: v1\nkind: Service\nmetadata:\n  name: {{ .Release.Name }}\nspec:\n  ports:\n    - port: {{ .Values.port }}\n"),
    ]);
    let digest = gitcanary::manifest::object::hex(&sha2::Sha256::digest(&tgz));
    let index = format!("apiVersion: v1\nentries:\n  redis:\n    - version: 1.2.0\n      urls: [redis-1.2.0.tgz]\n      digest: {digest}\n    - version: 1.1.0\n      urls: [redis-1.1.0.tgz]\n      digest: {}\n", "ab".repeat(32));
    let (url, hits) = serve_files(
        vec![
            ("/index.yaml".into(), index.clone().into_bytes()),
            ("/redis-1.2.0.tgz".into(), tgz.clone()),
            ("/redis-1.1.0.tgz".into(), tgz.clone()),
        ],
        None,
    );
    let count =
        |hits: &Hits, path: &str| hits.lock().unwrap().iter().filter(|p| *p == path).count();
    let v1 = format!("apiVersion: helm.fluxcd.io/v1\nkind: HelmRelease\nmetadata:\n  name: cache\n  namespace: test\nspec:\n  releaseName: cache\n  chart:\n    repository: {url}/\n    name: redis\n    version: \"^1.0\"\n  values:\n    port: 6380\n");
    let v2 = format!("apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata:\n  name: charts\n  namespace: test\nspec:\n  url: {url}\n---\napiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: queue\n  namespace: test\nspec:\n  chart:\n    spec:\n      chart: redis\n      version: \"1.x\"\n      sourceRef:\n        kind: HelmRepository\n        name: charts\n");
    let (remote, setup) = setup_with(&[("releases/cache.yaml", &v1), ("releases/queue.yaml", &v2)]);
    let (ok, out) = setup.sync();
    assert!(ok, "{out}");
    let svc = setup
        .object("core", "Service", "test", "cache")
        .expect("rendered from the Helm repository");
    assert_eq!(svc["spec"]["ports"][0]["port"], 6380);
    let svc = setup
        .object("core", "Service", "test", "queue")
        .expect("rendered via a HelmRepository");
    assert_eq!(svc["spec"]["ports"][0]["port"], 6379);
    assert_eq!(
        count(&hits, "/redis-1.2.0.tgz"),
        1,
        "cached by digest after the first download"
    );
    // Within the repositories' intervals the index is reused: a no-op sync makes no request.
    let before = hits.lock().unwrap().len();
    let (ok, out) = setup.sync();
    assert!(ok, "{out}");
    assert_eq!(
        hits.lock().unwrap().len(),
        before,
        "{:?}",
        hits.lock().unwrap()
    );

    // A download whose digest differs from the index applies nothing.
    remote
        .write(&[("releases/cache.yaml", &v1.replace("\"^1.0\"", "1.1.0"))])
        .push("pin 1.1.0");
    let (ok, out) = setup.sync();
    assert!(!ok, "{out}");
    assert!(out.contains("digest mismatch"), "{out}");
    assert_eq!(
        setup.object("core", "Service", "test", "cache").unwrap()["spec"]["ports"][0]["port"],
        6380
    );
}

#[test]
fn private_helm_repositories_take_credentials_from_a_secret_ref() {
    use sha2::Digest;
    let tgz = gitcanary::helm::repo::pack(&[
        ("redis/Chart.yaml", "apiVersion: v2\nname: redis\nversion: 1.2.0\n"),
        ("redis/templates/svc.yaml", "apiVersion: v1\nkind: Service\nmetadata:\n  name: {{ .Release.Name }}\nspec:\n  ports:\n    - port: 6379\n"),
    ]);
    let digest = gitcanary::manifest::object::hex(&sha2::Sha256::digest(&tgz));
    let index = format!("apiVersion: v1\nentries:\n  redis:\n    - version: 1.2.0\n      urls: [redis-1.2.0.tgz]\n      digest: {digest}\n");
    let (url, hits) = serve_files(
        vec![
            ("/index.yaml".into(), index.into_bytes()),
            ("/redis-1.2.0.tgz".into(), tgz),
        ],
        Some("bot:s3cret-pw"),
    );
    let repo = |secret: &str| {
        format!("apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata:\n  name: private\n  namespace: test\nspec:\n  interval: 1m\n  url: {url}\n{secret}---\napiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: queue\n  namespace: test\nspec:\n  chart:\n    spec:\n      chart: redis\n      sourceRef:\n        kind: HelmRepository\n        name: private\n")
    };
    // No credentials: the error says what to set.
    let (remote, setup) = setup_with(&[("releases/queue.yaml", &repo(""))]);
    let (ok, out) = setup.sync();
    assert!(!ok, "{out}");
    assert!(
        out.contains("HTTP 401") && out.contains("spec.secretRef"),
        "{out}"
    );
    // A secretRef to a missing Secret is named.
    remote
        .write(&[(
            "releases/queue.yaml",
            &repo("  secretRef:\n    name: creds\n"),
        )])
        .push("secretRef");
    let (ok, out) = setup.sync();
    assert!(!ok, "{out}");
    assert!(
        out.contains("spec.secretRef: Secret test/creds not found"),
        "{out}"
    );
    // Wrong password: refused, and no password in the output.
    let secret = |pw: &str| {
        format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\n  namespace: test\nstringData:\n  username: bot\n  password: {pw}\n")
    };
    remote
        .write(&[("releases/creds.yaml", &secret("wrong-pw"))])
        .push("creds");
    let (ok, out) = setup.sync();
    assert!(!ok, "{out}");
    assert!(
        out.contains("credentials were refused") && !out.contains("wrong-pw"),
        "{out}"
    );
    remote
        .write(&[("releases/creds.yaml", &secret("s3cret-pw"))])
        .push("right creds");
    let (ok, out) = setup.sync();
    assert!(ok, "{out}");
    assert!(!out.contains("s3cret-pw"), "{out}");
    assert!(setup.object("core", "Service", "test", "queue").is_some());
    assert!(hits.lock().unwrap().iter().any(|p| p == "/redis-1.2.0.tgz"));
}

#[test]
fn helm_release_charts_from_another_git_repository() {
    let charts = Remote::new();
    charts.write(CHART).push("charts");
    let hr = format!("apiVersion: helm.fluxcd.io/v1\nkind: HelmRelease\nmetadata:\n  name: web\n  namespace: test\nspec:\n  releaseName: web\n  chart:\n    git: file://{}\n    ref: main\n    path: charts/web\n  values:\n    message: from-other-repo\n", charts.bare.display());
    // Repositories on this machine are refused unless under source.localChartRoot.
    let (_remote, refused) = setup_with(&[("releases/web.yaml", &hr)]);
    let out = refused.sync_fails();
    assert!(
        out.contains(
            "charts from repositories on this machine are refused; set source.localChartRoot"
        ),
        "{out}"
    );
    let elsewhere = tempfile::tempdir().unwrap();
    refused.edit_config(
        "source:\n",
        &format!(
            "source:\n  localChartRoot: {}\n",
            elsewhere.path().display()
        ),
    );
    let out = refused.sync_fails();
    assert!(out.contains("outside source.localChartRoot"), "{out}");
    // A link inside the root to a repository outside it is outside too.
    let link = elsewhere.path().join("link.git");
    std::os::unix::fs::symlink(&charts.bare, &link).unwrap();
    let (_remote, linked) = setup_with(&[(
        "releases/web.yaml",
        &hr.replace(
            &charts.bare.display().to_string(),
            &link.display().to_string(),
        ),
    )]);
    linked.edit_config(
        "source:\n",
        &format!(
            "source:\n  localChartRoot: {}\n",
            elsewhere.path().display()
        ),
    );
    let out = linked.sync_fails();
    assert!(out.contains("outside source.localChartRoot"), "{out}");
    let setup_with = |files: &[(&str, &str)]| {
        let (remote, setup) = setup_with(files);
        setup.edit_config(
            "source:\n",
            &format!(
                "source:\n  localChartRoot: {}\n",
                charts.dir.path().display()
            ),
        );
        (remote, setup)
    };
    let (_remote, setup) = setup_with(&[("releases/web.yaml", &hr)]);
    let (ok, out) = setup.sync();
    assert!(ok, "{out}");
    let cm = setup
        .object("core", "ConfigMap", "test", "web-cfg")
        .expect("rendered from the chart repository");
    assert_eq!(cm["data"]["message"], "from-other-repo");

    // Flux v2: a sourceRef to a GitRepository object naming another repository.
    let v2 = format!("apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata:\n  name: charts\n  namespace: test\nspec:\n  interval: 5m\n  url: file://{}\n  ref:\n    branch: main\n---\napiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: api\n  namespace: test\nspec:\n  chart:\n    spec:\n      chart: ./charts/web\n      sourceRef:\n        kind: GitRepository\n        name: charts\n  values:\n    message: via-gitrepository\n", charts.bare.display());
    let (_remote, setup) = setup_with(&[("releases/api.yaml", &v2)]);
    let (ok, out) = setup.sync();
    assert!(ok, "{out}");
    let cm = setup
        .object("core", "ConfigMap", "test", "api-cfg")
        .expect("rendered via the GitRepository");
    assert_eq!(cm["data"]["message"], "via-gitrepository");

    // Tags, semver ranges over tags, and commits: the chart repository moves on, the
    // releases stay where their ref points.
    let tag = |name: &str| {
        git(&charts.work, &["tag", name]);
        git(&charts.work, &["push", "-q", "origin", name]);
    };
    let values = |msg: &str| format!("message: {msg}\nextra: false\n");
    charts.write(&[("charts/web/values.yaml", &values("one"))]);
    let one = charts.push("1.0.0");
    tag("v1.0.0");
    charts.write(&[("charts/web/values.yaml", &values("one-one"))]);
    charts.push("1.1.0");
    tag("v1.1.0");
    charts.write(&[("charts/web/values.yaml", &values("two"))]);
    charts.push("2.0.0");
    tag("v2.0.0");
    charts.write(&[("charts/web/values.yaml", &values("head"))]);
    charts.push("unreleased");
    let by_ref = |name: &str, r: &str| {
        format!("apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata:\n  name: {name}\n  namespace: test\nspec:\n  interval: 5m\n  url: file://{}\n  ref:\n{r}---\napiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: {name}\n  namespace: test\nspec:\n  chart:\n    spec:\n      chart: ./charts/web\n      sourceRef:\n        kind: GitRepository\n        name: {name}\n", charts.bare.display())
    };
    let v1_tag = hr
        .replace("ref: main", "ref: v1.1.0")
        .replace("name: web\n  namespace", "name: pinned\n  namespace")
        .replace("releaseName: web", "releaseName: pinned")
        .replace("    message: from-other-repo\n", "");
    let (_remote, setup) = setup_with(&[
        (
            "releases/semver.yaml",
            &by_ref("semver", "    semver: \">=1.0.0 <2.0.0\"\n"),
        ),
        ("releases/tag.yaml", &by_ref("tag", "    tag: v2.0.0\n")),
        (
            "releases/commit.yaml",
            &by_ref(
                "commit",
                &format!("    branch: main\n    commit: {}\n", &one[..12]),
            ),
        ),
        (
            "releases/branch.yaml",
            &by_ref("branch", "    branch: main\n"),
        ),
        ("releases/pinned.yaml", &v1_tag),
    ]);
    let (ok, out) = setup.sync();
    assert!(ok, "{out}");
    for (release, want) in [
        ("semver", "one-one"),
        ("tag", "two"),
        ("commit", "one"),
        ("branch", "head"),
        ("pinned", "one-one"),
    ] {
        let cm = setup
            .object("core", "ConfigMap", "test", &format!("{release}-cfg"))
            .unwrap_or_else(|| panic!("{release} rendered"));
        assert_eq!(cm["data"]["message"], want, "{release}");
    }
    let (_remote, setup) = setup_with(&[(
        "releases/semver.yaml",
        &by_ref("semver", "    semver: \">=3.0.0\"\n"),
    )]);
    let (ok, out) = setup.sync();
    assert!(!ok, "{out}");
    assert!(out.contains("no tag matches semver \">=3.0.0\""), "{out}");

    // A missing chart folder names the release, the field and the repository.
    let (_remote, setup) = setup_with(&[(
        "releases/web.yaml",
        &hr.replace("charts/web", "charts/nope"),
    )]);
    let (ok, out) = setup.sync();
    assert!(!ok, "{out}");
    assert!(
        out.contains("releases/web.yaml:1:1: spec.chart: HelmRelease test/web")
            && out.contains("charts/nope: chart folder not found"),
        "{out}"
    );
}

#[test]
fn kustomize_patches_apply_and_bad_ones_name_their_entry() {
    let deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  labels:\n    app: web\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n        - name: web\n          image: example.com/web:1.0.0\n          env:\n            - name: MODE\n              value: dev\n";
    let base = "resources:\n  - deployment.yaml\n";
    let overlay = |extra: &str| {
        format!("namespace: prod\nresources:\n  - ../base\npatches:\n  - path: replicas.yaml\n  - target:\n      kind: Deployment\n      labelSelector: app=web\n    patch: |-\n      - op: add\n        path: /metadata/annotations\n        value:\n          team: web\npatchesStrategicMerge:\n  - env.yaml\n{extra}")
    };
    let (remote, setup) = setup_with(&[
        ("apps/base/deployment.yaml", deploy),
        ("apps/base/kustomization.yaml", base),
        ("apps/prod/replicas.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 3\n"),
        ("apps/prod/env.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n    spec:\n      containers:\n        - name: web\n          env:\n            - name: MODE\n              value: prod\n"),
        ("apps/prod/kustomization.yaml", &overlay("")),
        ("apps/kustomization.yaml", "resources:\n  - prod\n"),
    ]);
    let (ok, out) = setup.sync();
    assert!(ok, "{out}");
    let d = setup
        .object("apps", "Deployment", "prod", "web")
        .expect("patched Deployment in the overlay's namespace");
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["metadata"]["annotations"]["team"], "web");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"],
        "prod"
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "example.com/web:1.0.0"
    );

    // A JSON 6902 patch that does not apply names the kustomization, line and entry,
    // and the revision applies nothing.
    remote
        .write(&[(
            "apps/prod/kustomization.yaml",
            &overlay("patchesJson6902:\n  - target:\n      kind: Deployment\n      name: web\n    patch: |-\n      - op: replace\n        path: /spec/nope\n        value: 1\n"),
        )])
        .push("bad patch");
    let (ok, out) = setup.sync();
    assert!(!ok, "{out}");
    assert!(
        out.contains("apps/prod/kustomization.yaml:17:5: patchesJson6902[0]: patching Deployment web (apps/base/deployment.yaml): operation 0: path \"/spec/nope\" not found"),
        "{out}"
    );
    assert_eq!(
        setup.object("apps", "Deployment", "prod", "web").unwrap()["spec"]["replicas"],
        3
    );

    // patchesJson6902 run after the namespace is set, as in kustomize: a target in the
    // overlay's namespace matches objects whose files name none.
    remote
        .write(&[(
            "apps/prod/kustomization.yaml",
            &overlay("patchesJson6902:\n  - target:\n      kind: Deployment\n      name: web\n      namespace: prod\n    patch: |-\n      - op: add\n        path: /metadata/labels/tier\n        value: prod\n"),
        )])
        .push("good json6902");
    let (ok, out) = setup.sync();
    assert!(ok, "{out}");
    assert_eq!(
        setup.object("apps", "Deployment", "prod", "web").unwrap()["metadata"]["labels"]["tier"],
        "prod"
    );
}

#[test]
fn oci_helm_repositories_pick_a_tag_verify_and_cache() {
    let registry = Registry::start(Some(("bot", "oci-pw")));
    let chart = |version: &str, port: u16| {
        gitcanary::helm::repo::pack(&[
            ("redis/Chart.yaml", &format!("apiVersion: v2\nname: redis\nversion: {version}\n")),
            ("redis/templates/svc.yaml", &format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: {{{{ .Release.Name }}}}\nspec:\n  ports:\n    - port: {port}\n")),
        ])
    };
    registry.push_chart("charts/redis", "1.0.0", &chart("1.0.0", 6000));
    registry.push_chart("charts/redis", "1.2.0", &chart("1.2.0", 6120));
    registry.push_chart("charts/redis", "1.3.0-rc.1", &chart("1.3.0-rc.1", 6130));
    registry.push_chart("charts/redis", "2.0.0", &chart("2.0.0", 7000));
    let release = |version: &str| {
        format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: oci-creds\n  namespace: test\nstringData:\n  username: bot\n  password: oci-pw\n---\napiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata:\n  name: oci\n  namespace: test\nspec:\n  type: oci\n  interval: 5m\n  url: oci://{}/charts\n  secretRef:\n    name: oci-creds\n---\napiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: cache\n  namespace: test\nspec:\n  chart:\n    spec:\n      chart: redis\n      version: \"{version}\"\n      sourceRef:\n        kind: HelmRepository\n        name: oci\n", registry.addr)
    };
    let (remote, setup) = setup_with(&[("releases/cache.yaml", &release("^1.0"))]);
    let (ok, out) = setup.sync();
    assert!(ok, "{out}");
    assert!(!out.contains("oci-pw"), "{out}");
    let port = |setup: &Setup| {
        setup.object("core", "Service", "test", "cache").unwrap()["spec"]["ports"][0]["port"]
            .clone()
    };
    assert_eq!(port(&setup), 6120, "highest stable 1.x");
    remote
        .write(&[("releases/cache.yaml", &release("2.0.0"))])
        .push("redis 2.0.0");
    let (ok, out) = setup.sync();
    assert!(ok, "{out}");
    assert_eq!(port(&setup), 7000);
    // A dockerconfigjson Secret works too.
    let docker = format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: oci-creds\n  namespace: test\ntype: kubernetes.io/dockerconfigjson\nstringData:\n  .dockerconfigjson: '{{\"auths\":{{\"{}\":{{\"username\":\"bot\",\"password\":\"oci-pw\"}}}}}}'\n---\n", registry.addr);
    let text = release("2.0.0");
    let rest = &text[text.find("---\n").unwrap() + 4..];
    remote
        .write(&[("releases/cache.yaml", &format!("{docker}{rest}"))])
        .push("dockerconfigjson");
    let (ok, out) = setup.sync();
    assert!(ok, "{out}");
    // Flux's newer form: spec.chartRef to an OCIRepository naming the artifact.
    let chart_ref = |r: &str| {
        format!("apiVersion: source.toolkit.fluxcd.io/v1beta2\nkind: OCIRepository\nmetadata:\n  name: redis-chart\n  namespace: test\nspec:\n  interval: 5m\n  url: oci://{}/charts/redis\n  ref:\n    {r}\n  secretRef:\n    name: oci-creds\n---\napiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: queue\n  namespace: test\nspec:\n  chartRef:\n    kind: OCIRepository\n    name: redis-chart\n", registry.addr)
    };
    remote
        .write(&[("releases/queue.yaml", &chart_ref("semver: \"~1.0\""))])
        .push("queue via chartRef");
    let (ok, out) = setup.sync();
    assert!(ok, "{out}");
    let queue = |setup: &Setup| {
        setup.object("core", "Service", "test", "queue").unwrap()["spec"]["ports"][0]["port"]
            .clone()
    };
    assert_eq!(queue(&setup), 6000);
    remote
        .write(&[("releases/queue.yaml", &chart_ref("tag: 1.3.0-rc.1"))])
        .push("queue rc by tag");
    let (ok, out) = setup.sync();
    assert!(ok, "{out}");
    assert_eq!(queue(&setup), 6130);
    remote.remove("releases/queue.yaml").push("drop queue");

    // Cached by digest: the archives are on disk under their layer digests.
    let cached = std::fs::read_dir(setup.state().join("helm-charts"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "tgz")
        })
        .count();
    assert_eq!(cached, 4);
    remote
        .write(&[("releases/cache.yaml", &release(">=3.0.0"))])
        .push("no such version");
    let (ok, out) = setup.sync();
    assert!(!ok, "{out}");
    assert!(out.contains("no tag matches \">=3.0.0\""), "{out}");
}

/// `openssl s_server -WWW` serving `dir` over TLS on 127.0.0.1, with a certificate
/// from a fresh CA, requiring a client certificate from that CA. Returns the URL, the
/// CA, a client certificate and key, and the server process.
fn tls_file_server(dir: &std::path::Path) -> (String, String, String, String, Running) {
    sh(dir, "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=gitcanary-test-ca 2>/dev/null
        for who in server client; do
          openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout $who.key -out $who.csr -subj /CN=$who 2>/dev/null
        done
        printf 'basicConstraints=CA:FALSE\\nkeyUsage=digitalSignature\\nextendedKeyUsage=serverAuth\\nsubjectAltName=IP:127.0.0.1\\n' > server.ext
        printf 'basicConstraints=CA:FALSE\\nkeyUsage=digitalSignature\\nextendedKeyUsage=clientAuth\\n' > client.ext
        for who in server client; do
          openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -out $who.pem -extfile $who.ext 2>/dev/null
        done");
    let port = free_port();
    let server = start_server(
        std::process::Command::new("openssl")
            .args(["s_server", "-quiet", "-WWW", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .args([
                "-cert",
                "server.pem",
                "-key",
                "server.key",
                "-Verify",
                "1",
                "-CAfile",
                "ca.pem",
            ])
            .current_dir(dir)
            .stdin(std::process::Stdio::null()),
        port,
        "openssl is installed",
    );
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    (
        format!("https://127.0.0.1:{port}"),
        read("ca.pem"),
        read("client.pem"),
        read("client.key"),
        server,
    )
}

#[test]
fn helm_repositories_with_a_private_ca_and_a_client_certificate() {
    use sha2::Digest;
    let served = tempfile::tempdir().unwrap();
    let tgz = gitcanary::helm::repo::pack(&[
        ("redis/Chart.yaml", "apiVersion: v2\nname: redis\nversion: 1.2.0\n"),
        ("redis/templates/svc.yaml", "apiVersion: v1\nkind: Service\nmetadata:\n  name: {{ .Release.Name }}\nspec:\n  ports:\n    - port: 6379\n"),
    ]);
    let digest = gitcanary::manifest::object::hex(&sha2::Sha256::digest(&tgz));
    std::fs::write(served.path().join("redis-1.2.0.tgz"), &tgz).unwrap();
    std::fs::write(
        served.path().join("index.yaml"),
        format!("apiVersion: v1\nentries:\n  redis:\n    - version: 1.2.0\n      urls: [redis-1.2.0.tgz]\n      digest: {digest}\n"),
    )
    .unwrap();
    let (url, ca, cert, key, _server) = tls_file_server(served.path());
    let indent = |pem: &str| {
        pem.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    let secret = |with_client: bool| {
        let mut s = format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: repo-tls\n  namespace: test\nstringData:\n  ca.crt: |\n{}", indent(&ca));
        if with_client {
            s.push_str(&format!(
                "  tls.crt: |\n{}  tls.key: |\n{}",
                indent(&cert),
                indent(&key)
            ));
        }
        s
    };
    let release = format!("apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata:\n  name: internal\n  namespace: test\nspec:\n  interval: 1m\n  url: {url}\n  certSecretRef:\n    name: repo-tls\n---\napiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: cache\n  namespace: test\nspec:\n  chart:\n    spec:\n      chart: redis\n      sourceRef:\n        kind: HelmRepository\n        name: internal\n");
    // Without the CA, the server's certificate is not trusted.
    let untrusted = release.replace("  certSecretRef:\n    name: repo-tls\n", "");
    let (remote, setup) = setup_with(&[("releases/cache.yaml", &untrusted)]);
    let out = setup.sync_fails();
    assert!(
        out.contains("GET https://127.0.0.1") && out.contains("UnknownIssuer"),
        "{out}"
    );
    // The CA alone: the server wants a client certificate, and says so.
    remote
        .write(&[
            ("releases/cache.yaml", &release),
            ("releases/tls.yaml", &secret(false)),
        ])
        .push("trust the CA");
    let out = setup.sync_fails();
    assert!(out.contains("CertificateRequired"), "{out}");
    // With the client certificate: verified both ways, rendered.
    remote
        .write(&[("releases/tls.yaml", &secret(true))])
        .push("client cert");
    let (ok, out) = setup.sync();
    assert!(ok, "{out}");
    assert!(!out.contains("PRIVATE KEY"), "{out}");
    assert!(setup.object("core", "Service", "test", "cache").is_some());

    // The same CA and client certificate reach an OCI registry (the distribution API
    // as static files: manifest and blob).
    let layer = format!("sha256:{digest}");
    let v2 = served.path().join("v2/charts/redis");
    std::fs::create_dir_all(v2.join("manifests")).unwrap();
    std::fs::create_dir_all(v2.join("blobs")).unwrap();
    std::fs::write(v2.join("blobs").join(&layer), &tgz).unwrap();
    std::fs::write(
        v2.join("manifests/1.2.0"),
        format!(r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.cncf.helm.config.v1+json","size":2,"digest":"sha256:{digest}"}},"layers":[{{"mediaType":"application/vnd.cncf.helm.chart.content.v1.tar+gzip","size":{},"digest":"{layer}"}}]}}"#, tgz.len()),
    )
    .unwrap();
    let oci = release
        .replace(&format!("  url: {url}\n"), &format!("  type: oci\n  url: oci://{}/charts\n", url.trim_start_matches("https://")))
        .replace("name: cache\n  namespace: test\nspec:\n  chart:\n    spec:\n      chart: redis\n", "name: cache\n  namespace: test\nspec:\n  chart:\n    spec:\n      chart: redis\n      version: 1.2.0\n");
    remote
        .write(&[("releases/cache.yaml", &oci)])
        .push("oci over mutual TLS");
    let (ok, out) = setup.sync();
    assert!(ok, "{out}");
    assert!(setup.object("core", "Service", "test", "cache").is_some());
}
