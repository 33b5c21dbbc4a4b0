//! Rendering a real chart directory (tests/charts/podinfo, shaped like the
//! upstream podinfo chart) with Helm's built-in objects, values coalescing,
//! subcharts, `.Files` and schema validation; the output parses as manifests.

use gitcanary::helm::chart::{render, Capabilities, Chart, Release, Rendered};
use gitcanary::manifest::yaml::parse_documents;
use serde_json::{json, Value};
use std::path::Path;

fn chart() -> Chart {
    Chart::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/charts/podinfo"))
        .expect("chart loads")
}

fn release() -> Release {
    Release {
        name: "frontend".into(),
        namespace: "test".into(),
        revision: 1,
        is_install: true,
    }
}

fn objects(out: &[Rendered]) -> Vec<Value> {
    let mut objs = Vec::new();
    for r in out {
        let docs =
            parse_documents(&r.text).unwrap_or_else(|e| panic!("{}: {e}\n{}", r.name, r.text));
        objs.extend(
            docs.into_iter()
                .map(|d| d.root.to_json())
                .filter(|v| !v.is_null()),
        );
    }
    objs
}

fn find<'a>(objs: &'a [Value], kind: &str) -> &'a Value {
    objs.iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {objs:#?}"))
}

#[test]
fn renders_chart_defaults() {
    let out = render(&chart(), &release(), &json!({}), &Capabilities::default()).unwrap();
    let names: Vec<&str> = out.iter().map(|r| r.name.as_str()).collect();
    // Partials, NOTES.txt, disabled templates and disabled subcharts render nothing.
    assert_eq!(
        names,
        [
            "podinfo/templates/configmap.yaml",
            "podinfo/templates/deployment.yaml"
        ]
    );
    let objs = objects(&out);
    let deploy = find(&objs, "Deployment");
    assert_eq!(deploy["metadata"]["name"], "frontend-podinfo");
    assert_eq!(deploy["metadata"]["namespace"], "test");
    assert_eq!(
        deploy["metadata"]["labels"]["helm.sh/chart"],
        "podinfo-6.5.4"
    );
    assert_eq!(
        deploy["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "Helm"
    );
    assert_eq!(deploy["metadata"]["labels"]["team"], "platform");
    assert_eq!(deploy["spec"]["replicas"], 1);
    let c = &deploy["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "ghcr.io/stefanprodan/podinfo:6.5.4");
    assert_eq!(c["ports"][0]["containerPort"], 9898);
    assert_eq!(
        c["resources"],
        json!({"requests": {"cpu": "1m", "memory": "16Mi"}})
    );
    let checksum = deploy["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        .as_str()
        .unwrap();
    assert_eq!(checksum.len(), 12);
    let cm = find(&objs, "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "frontend-podinfo-config");
    assert_eq!(cm["data"]["app.ini"], "level=info\ncolor=blue\n");
}

#[test]
fn supplied_values_win_and_enable_canary_and_subchart() {
    let values = json!({
        "image": {"tag": "6.6.0"}, "replicaCount": 3,
        "canary": {"enabled": true, "analysis": {"stepWeight": 10}},
        "redis": {"enabled": true, "port": 6380},
        "env": {"LOG_LEVEL": "debug"},
        "resources": null,
    });
    let out = render(&chart(), &release(), &values, &Capabilities::default()).unwrap();
    let objs = objects(&out);
    let deploy = find(&objs, "Deployment");
    assert_eq!(deploy["spec"]["replicas"], 3);
    let c = &deploy["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "ghcr.io/stefanprodan/podinfo:6.6.0");
    assert_eq!(
        c["imagePullPolicy"], "IfNotPresent",
        "unset keys keep chart defaults"
    );
    assert!(c.get("resources").is_none(), "null deletes a default: {c}");
    assert_eq!(c["env"], json!([{"name": "LOG_LEVEL", "value": "debug"}]));
    let canary = find(&objs, "Canary");
    assert_eq!(canary["apiVersion"], "flagger.app/v1beta1");
    assert_eq!(canary["spec"]["targetRef"]["name"], "frontend-podinfo");
    assert_eq!(
        canary["spec"]["analysis"],
        json!({"interval": "15s", "threshold": 10, "maxWeight": 50, "stepWeight": 10})
    );
    // The subchart sees its own section, parent globals over its own, and its defaults.
    let svc = find(&objs, "Service");
    assert_eq!(svc["metadata"]["name"], "frontend-redis");
    assert_eq!(
        svc["metadata"]["labels"],
        json!({"team": "platform", "region": "eu"})
    );
    assert_eq!(svc["spec"]["ports"][0]["port"], 6380);
}

#[test]
fn schema_violations_and_template_errors_are_named() {
    let err = render(
        &chart(),
        &release(),
        &json!({"replicaCount": -1}),
        &Capabilities::default(),
    )
    .unwrap_err();
    assert!(err.contains("replicaCount: must be >= 0"), "{err}");
    let err = render(
        &chart(),
        &release(),
        &json!({"image": {"repository": ""}}),
        &Capabilities::default(),
    )
    .unwrap_err();
    assert!(err.contains("image.repository: string too short"), "{err}");

    let mut broken = chart();
    broken.templates.insert(
        "templates/bad.yaml".into(),
        "a: 1\nb: {{ .Values.image.tag | nosuchfunc }}\n".into(),
    );
    let err = render(&broken, &release(), &json!({}), &Capabilities::default()).unwrap_err();
    assert!(err.starts_with("podinfo/templates/bad.yaml:2:"), "{err}");
    assert!(err.contains("nosuchfunc"), "{err}");
}

#[test]
fn capabilities_and_release_objects() {
    let mut c = chart();
    c.templates.insert(
        "templates/caps.yaml".into(),
        "kube: {{ .Capabilities.KubeVersion.Version }}\nhpa: {{ .Capabilities.APIVersions.Has \"autoscaling/v2\" }}\nx: {{ .Capabilities.APIVersions.Has \"x/v9\" }}\nrev: {{ .Release.Revision }}\nup: {{ .Release.IsUpgrade }}\ntpl: {{ .Template.Name }}\nlines: {{ .Files.Lines \"files/app.ini\" | len }}\n".into(),
    );
    let mut rel = release();
    rel.revision = 4;
    rel.is_install = false;
    let out = render(&c, &rel, &json!({}), &Capabilities::default()).unwrap();
    let caps = out.iter().find(|r| r.name.ends_with("caps.yaml")).unwrap();
    assert_eq!(caps.text, "kube: v1.29.0\nhpa: true\nx: false\nrev: 4\nup: true\ntpl: podinfo/templates/caps.yaml\nlines: 2\n");
}

mod releases {
    use gitcanary::helm::chart::Capabilities;
    use gitcanary::helm::release::{chart_source, expand, release_identity, ChartSource};
    use gitcanary::manifest::snapshot::DirSnapshot;
    use serde_json::json;
    use std::path::Path;

    fn repo() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples-repo")
    }

    #[test]
    fn seed_helm_releases_render_from_the_repo_chart() {
        let snap = DirSnapshot::new(repo());
        let loaded = gitcanary::manifest::load(&snap, "", None);
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        let x = expand(
            &snap,
            &loaded.objects,
            "https://example.com/repo.git",
            &Capabilities::default(),
        );
        assert!(x.errors.is_empty(), "{:?}", x.errors);
        let keys: Vec<String> = x
            .objects
            .iter()
            .map(|o| format!("{}/{}/{}", o.key.kind, o.key.namespace, o.key.name))
            .collect();
        for want in [
            "Deployment/test/frontend-podinfo",
            "Service/test/frontend-podinfo",
            "HorizontalPodAutoscaler/test/frontend-podinfo",
            "Deployment/test/backend-podinfo",
            "Service/test/backend-podinfo",
        ] {
            assert!(
                keys.contains(&want.to_string()),
                "{want} missing from {keys:?}"
            );
        }
        assert!(
            !keys.contains(&"HorizontalPodAutoscaler/test/backend-podinfo".to_string()),
            "{keys:?}"
        );
        let backend = x
            .objects
            .iter()
            .find(|o| o.key.kind == "Deployment" && o.key.name == "backend-podinfo")
            .unwrap()
            .value();
        assert_eq!(backend["spec"]["replicas"], 2);
        assert_eq!(
            backend["spec"]["template"]["spec"]["containers"][0]["image"],
            "stefanprodan/podinfo:2.0.0"
        );
        let frontend = x
            .objects
            .iter()
            .find(|o| o.key.kind == "Deployment" && o.key.name == "frontend-podinfo")
            .unwrap();
        assert!(
            frontend.value()["spec"].get("replicas").is_none(),
            "the HPA owns replicas"
        );
        assert_eq!(
            frontend.origin.file,
            "charts/podinfo/templates/deployment.yaml"
        );
    }

    #[test]
    fn chart_sources_and_release_names_follow_flux() {
        let url = "ssh://git@example.com/org/fleet.git";
        let v1 = json!({"apiVersion": "helm.fluxcd.io/v1", "metadata": {"name": "app", "namespace": "prod"}, "spec": {"chart": {"git": url, "path": "./charts/app"}}});
        assert_eq!(
            chart_source(&v1, url).unwrap(),
            ChartSource::Path("charts/app".into())
        );
        assert_eq!(
            release_identity(&v1),
            ("prod-app".to_string(), "prod".to_string())
        );
        let other = json!({"apiVersion": "helm.fluxcd.io/v1", "spec": {"chart": {"git": "https://bot:s3cret@other/x", "path": "c"}}});
        assert_eq!(
            chart_source(&other, url).unwrap(),
            ChartSource::Git {
                url: "https://bot:s3cret@other/x".into(),
                git_ref: "master".into(),
                path: "c".into(),
                auth: None,
            }
        );
        let repo = json!({"apiVersion": "helm.fluxcd.io/v1", "spec": {"chart": {"repository": "https://charts.example.com/", "name": "redis", "version": "1.0.0"}}});
        assert_eq!(
            chart_source(&repo, url).unwrap(),
            ChartSource::HelmRepo {
                url: Some("https://charts.example.com/".into()),
                object: None,
                chart: "redis".into(),
                version: "1.0.0".into(),
                access: Default::default(),
            }
        );
        let v2 = json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "metadata": {"name": "podinfo", "namespace": "flux-system"},
            "spec": {"targetNamespace": "apps", "chart": {"spec": {"chart": "./charts/podinfo", "sourceRef": {"kind": "GitRepository", "name": "flux-system"}}}}});
        assert_eq!(
            chart_source(&v2, url).unwrap(),
            ChartSource::Path("charts/podinfo".into())
        );
        assert_eq!(
            release_identity(&v2),
            ("apps-podinfo".to_string(), "apps".to_string())
        );
        let v2_repo = json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "spec": {"chart": {"spec": {"chart": "podinfo", "sourceRef": {"kind": "HelmRepository", "name": "podinfo"}}}}});
        assert!(matches!(
            chart_source(&v2_repo, url).unwrap(),
            ChartSource::HelmRepo {
                object: Some((None, _)),
                ..
            }
        ));
        let missing = json!({"apiVersion": "helm.fluxcd.io/v1", "spec": {"chart": {}}});
        assert_eq!(
            chart_source(&missing, url).unwrap_err(),
            "spec.chart.path: missing required field"
        );
    }

    #[test]
    fn values_from_and_errors_name_the_release_file() {
        let dir = repo_with_chart();
        let root = dir.path();
        std::fs::write(root.join("values.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-values\n  namespace: apps\ndata:\n  values.yaml: |\n    replicaCount: 4\n    message: from-configmap\n  tag: 2.0.5\n").unwrap();
        let values_from_release = "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: web\n  namespace: apps\nspec:\n  chart:\n    spec:\n      chart: ./charts/podinfo\n  valuesFrom:\n    - kind: ConfigMap\n      name: web-values\n    - kind: ConfigMap\n      name: web-values\n      valuesKey: tag\n      targetPath: image.tag\n  values:\n    message: from-release\n";
        std::fs::write(root.join("release.yaml"), values_from_release).unwrap();
        let x = render(root);
        assert!(x.errors.is_empty(), "{:?}", x.errors);
        let d = deployment(&x);
        assert_eq!(d["metadata"]["name"], "web-podinfo");
        assert_eq!(d["spec"]["replicas"], 4);
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["image"],
            "stefanprodan/podinfo:2.0.5"
        );
        let env = d["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
        assert!(
            env.contains("from-release"),
            "spec.values wins over valuesFrom: {env}"
        );

        // valuesFiles replace the chart's values.yaml (unless listed), merged in order;
        // paths are relative to the repository root or the chart.
        std::fs::write(
            root.join("charts/podinfo/values-prod.yaml"),
            "replicaCount: 3\nhpa:\n  enabled: false\n",
        )
        .unwrap();
        std::fs::create_dir_all(root.join("env")).unwrap();
        std::fs::write(root.join("env/prod.yaml"), "message: prod\n").unwrap();
        // Values files are no manifests: keep them out of the sync, as Flux users do.
        std::fs::write(root.join(".sourceignore"), "env/\n").unwrap();
        let files_release = |files: &str| {
            format!("apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: web\n  namespace: apps\nspec:\n  chart:\n    spec:\n      chart: ./charts/podinfo\n      valuesFiles:\n{files}")
        };
        std::fs::write(
            root.join("release.yaml"),
            files_release("        - ./charts/podinfo/values.yaml\n        - values-prod.yaml\n        - ./env/prod.yaml\n"),
        )
        .unwrap();
        let x = render(root);
        assert!(x.errors.is_empty(), "{:?}", x.errors);
        let d = deployment(&x);
        assert_eq!(d["spec"]["replicas"], 3);
        assert!(d.to_string().contains("\"prod\""), "{d}");
        assert!(
            d["spec"]["template"]["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap()
                .starts_with("stefanprodan/podinfo:"),
            "values.yaml listed first still gives the defaults"
        );
        std::fs::write(
            root.join("release.yaml"),
            files_release("        - values-nope.yaml\n"),
        )
        .unwrap();
        let x = render(root);
        let e = x.errors[0].to_string();
        assert!(
            e.contains("spec.chart.spec.valuesFiles[0]")
                && e.contains("values-nope.yaml: no such values file"),
            "{e}"
        );
        std::fs::remove_file(root.join("charts/podinfo/values-prod.yaml")).unwrap();
        std::fs::write(root.join("release.yaml"), values_from_release).unwrap();

        // A missing ConfigMap names the release's file, line and field.
        std::fs::remove_file(root.join("values.yaml")).unwrap();
        let x = render(root);
        let e = x.errors[0].to_string();
        assert!(e.starts_with("release.yaml:1:"), "{e}");
        assert!(
            e.contains("spec.valuesFrom[0]") && e.contains("ConfigMap apps/web-values not found"),
            "{e}"
        );

        // A template error names the chart file in the repository.
        std::fs::write(
            root.join("charts/podinfo/templates/broken.yaml"),
            "x: {{ .Values.image.tag | nosuch }}\n",
        )
        .unwrap();
        std::fs::write(root.join("release.yaml"), "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: web\n  namespace: apps\nspec:\n  chart:\n    spec:\n      chart: ./charts/podinfo\n").unwrap();
        let x = render(root);
        let e = x
            .errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(e.contains("charts/podinfo/templates/broken.yaml:1:"), "{e}");
    }

    #[test]
    fn helm_operator_chart_file_refs_and_value_file_secrets() {
        let dir = repo_with_chart();
        let root = dir.path();
        std::fs::create_dir_all(root.join("charts/podinfo/overrides")).unwrap();
        std::fs::write(
            root.join("charts/podinfo/overrides/prod.yaml"),
            "replicaCount: 5\nmessage: from-chart-file\nhpa:\n  enabled: false\n",
        )
        .unwrap();
        std::fs::write(root.join("secret.yaml"), "apiVersion: v1\nkind: Secret\nmetadata:\n  name: web-secret-values\n  namespace: apps\nstringData:\n  values.yaml: |\n    message: from-secret\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-cm\n  namespace: apps\ndata:\n  extra.yaml: |\n    podAnnotations:\n      from: configmap\n").unwrap();
        let hr = |from: &str| {
            format!("apiVersion: flux.weave.works/v1beta1\nkind: HelmRelease\nmetadata:\n  name: web\n  namespace: apps\nspec:\n  releaseName: web\n  timeout: 300\n  chart:\n    path: charts/podinfo\n{from}")
        };
        std::fs::write(root.join("release.yaml"), hr("  valueFileSecrets:\n    - name: web-secret-values\n  valuesFrom:\n    - chartFileRef:\n        path: overrides/prod.yaml\n    - configMapKeyRef:\n        name: web-cm\n        key: extra.yaml\n")).unwrap();
        let x = render(root);
        assert!(x.errors.is_empty(), "{:?}", x.errors);
        let d = deployment(&x);
        assert_eq!(d["spec"]["replicas"], 5);
        assert_eq!(
            d["spec"]["template"]["metadata"]["annotations"]["from"],
            "configmap"
        );
        assert!(
            d.to_string().contains("from-chart-file"),
            "valuesFrom comes after valueFileSecrets: {d}"
        );
        std::fs::write(root.join("release.yaml"), hr("  valuesFrom:\n    - chartFileRef:\n        path: overrides/nope.yaml\n    - externalSourceRef:\n        url: https://example.com/values.yaml\n")).unwrap();
        let x = render(root);
        let all: Vec<String> = x.errors.iter().map(|e| e.to_string()).collect();
        assert!(
            all[0].contains("spec.valuesFrom[0].chartFileRef")
                && all[0].contains("overrides/nope.yaml: no such file"),
            "{all:?}"
        );
        assert!(
            all[1].contains("spec.valuesFrom[1].externalSourceRef"),
            "{all:?}"
        );
    }

    #[test]
    fn post_renderers_patch_what_the_chart_renders() {
        let dir = repo_with_chart();
        let root = dir.path();
        let release = |post: &str| {
            format!("apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: web\n  namespace: apps\nspec:\n  chart:\n    spec:\n      chart: ./charts/podinfo\n  postRenderers:\n    - kustomize:\n{post}")
        };
        std::fs::write(root.join("release.yaml"), release(concat!(
            "        patches:\n",
            "          - target:\n              kind: Deployment\n            patch: |\n",
            "              - op: add\n                path: /metadata/labels/environment\n                value: production\n",
            "        patchesStrategicMerge:\n",
            "          - apiVersion: apps/v1\n            kind: Deployment\n            metadata:\n              name: web-podinfo\n",
            "            spec:\n              template:\n                spec:\n                  containers:\n",
            "                    - name: podinfo\n                      env:\n                        - name: EXTRA\n                          value: yes-please\n",
            "        patchesJson6902:\n",
            "          - target:\n              version: v1\n              kind: Service\n              name: web-podinfo\n",
            "            patch:\n              - op: replace\n                path: /spec/type\n                value: NodePort\n",
            "        images:\n          - name: stefanprodan/podinfo\n            newName: ghcr.io/stefanprodan/podinfo\n            newTag: 6.1.0\n",
        ))).unwrap();
        let x = render(root);
        assert!(x.errors.is_empty(), "{:?}", x.errors);
        let find = |kind: &str| {
            x.objects
                .iter()
                .find(|o| o.key.kind == kind)
                .unwrap()
                .value()
        };
        let d = find("Deployment");
        assert_eq!(d["metadata"]["labels"]["environment"], "production");
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], "ghcr.io/stefanprodan/podinfo:6.1.0");
        let env = c["env"].to_string();
        assert!(
            env.contains("PODINFO_UI_MESSAGE") && env.contains("yes-please"),
            "{env}"
        );
        assert_eq!(find("Service")["spec"]["type"], "NodePort");

        // A patch that cannot apply names the field.
        std::fs::write(root.join("release.yaml"), release("        patchesJson6902:\n          - target:\n              kind: Service\n            patch:\n              - op: remove\n                path: /spec/nope\n")).unwrap();
        let x = render(root);
        let e = x.errors[0].to_string();
        assert!(e.starts_with("release.yaml:1:1: spec.postRenderers: HelmRelease apps/web: Service web-podinfo: operation 0"), "{e}");
    }

    /// A temporary cluster repository holding a copy of the examples' podinfo chart.
    fn repo_with_chart() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for e in walk(&repo().join("charts/podinfo")) {
            let rel = e.strip_prefix(repo()).unwrap();
            std::fs::create_dir_all(dir.path().join(rel).parent().unwrap()).unwrap();
            std::fs::copy(&e, dir.path().join(rel)).unwrap();
        }
        dir
    }

    /// Loads the repository at `root` (which must load cleanly) and renders its
    /// HelmReleases.
    fn render(root: &Path) -> gitcanary::helm::release::Expansion {
        let snap = DirSnapshot::new(root);
        let loaded = gitcanary::manifest::load(&snap, "", None);
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        expand(&snap, &loaded.objects, "", &Capabilities::default())
    }

    /// The rendered Deployment.
    fn deployment(x: &gitcanary::helm::release::Expansion) -> serde_json::Value {
        x.objects
            .iter()
            .find(|o| o.key.kind == "Deployment")
            .unwrap()
            .value()
    }

    fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }
}

#[test]
fn skipped_remote_charts_never_show_credentials() {
    use gitcanary::manifest::{Object, ObjectKey};
    let v = json!({"apiVersion": "helm.fluxcd.io/v1", "kind": "HelmRelease", "metadata": {"name": "app", "namespace": "prod"},
        "spec": {"chart": {"git": "https://bot:s3cret@git.example.com/charts.git", "path": "charts/app"}}});
    let key = ObjectKey::new("helm.fluxcd.io/v1", "HelmRelease", "prod", "app");
    let obj = Object::from_json(key, "helm.fluxcd.io/v1".into(), &v, Default::default());
    let snap = gitcanary::manifest::snapshot::DirSnapshot::new(env!("CARGO_MANIFEST_DIR"));
    let x = gitcanary::helm::release::expand(&snap, &[obj], "", &Capabilities::default());
    assert_eq!(x.skipped.len(), 1);
    let why = &x.skipped[0].1;
    assert!(
        why.contains("git.example.com/charts.git") && !why.contains("s3cret"),
        "{why}"
    );
}
