//! Rendering a real chart directory (tests/fixtures/charts/podinfo, shaped like the
//! upstream podinfo chart) with Helm's built-in objects, values coalescing,
//! subcharts, `.Files` and schema validation; the output parses as manifests.

use gitcanary::helm::chart::{render, Capabilities, Chart, Release, Rendered};
use gitcanary::manifest::yaml::parse_documents;
use serde_json::{json, Value};
use std::path::Path;

fn chart() -> Chart {
    Chart::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/charts/podinfo"))
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
