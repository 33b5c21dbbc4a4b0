//! deploy/: the plain manifests load in gitcanary's own validator, and the CRDs follow the
//! API server's structural-schema rules and show the columns of Flagger's guides.

mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/manifests")
}

/// Every document of every file under `dir`, as JSON, with its file name.
fn documents(dir: &Path) -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let docs = gitcanary::manifest::yaml::parse_documents(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        out.extend(
            docs.into_iter()
                .map(|d| d.root.to_json())
                .filter(|v| !v.is_null())
                .map(|v| (name.clone(), v)),
        );
    }
    out
}

/// The objects of deploy/manifests, in file order.
fn plain_objects() -> Vec<Value> {
    documents(&manifests_dir())
        .into_iter()
        .map(|(_, v)| v)
        .collect()
}

fn crds() -> Vec<Value> {
    plain_objects()
        .into_iter()
        .filter(|v| v["kind"] == "CustomResourceDefinition")
        .collect()
}

/// `gitcanary validate DIR`.
fn validate(dir: &Path) -> std::process::Output {
    Command::new(bin())
        .arg("validate")
        .arg(dir)
        .output()
        .unwrap()
}

#[test]
fn deploy_manifests_pass_validate() {
    let out = validate(&manifests_dir());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("are valid"), "{text}");
}

/// The API server's structural-schema rules (and pruning): every node has a type unless it
/// is int-or-string or keeps unknown fields; an object lists its fields, its value type, or
/// keeps unknown fields (else pruning empties it); anyOf/oneOf only name required fields.
fn structural_errors(schema: &Value, path: &str, errors: &mut Vec<String>) {
    let open = schema["x-kubernetes-preserve-unknown-fields"] == true;
    if schema["type"].as_str().is_none_or(str::is_empty)
        && schema["x-kubernetes-int-or-string"] != true
        && !open
    {
        errors.push(format!("{path}: no type"));
    }
    if schema["type"] == "object"
        && schema.get("properties").is_none()
        && schema.get("additionalProperties").is_none()
        && !open
        && path != ".metadata"
    {
        errors.push(format!("{path}: an object with no fields is pruned empty"));
    }
    if schema.get("properties").is_some() && schema.get("additionalProperties").is_some() {
        errors.push(format!("{path}: properties and additionalProperties"));
    }
    for junctor in ["anyOf", "oneOf", "allOf"] {
        for alt in schema[junctor].as_array().into_iter().flatten() {
            let keys: Vec<&String> = alt.as_object().unwrap().keys().collect();
            if keys.iter().any(|k| *k != "required") {
                errors.push(format!(
                    "{path}.{junctor}: only `required` is allowed, not {keys:?}"
                ));
            }
            for field in alt["required"].as_array().into_iter().flatten() {
                if schema["properties"].get(field.as_str().unwrap()).is_none() {
                    errors.push(format!("{path}.{junctor}: {field} is not a property"));
                }
            }
        }
    }
    for (name, sub) in schema["properties"].as_object().into_iter().flatten() {
        structural_errors(sub, &format!("{path}.{name}"), errors);
    }
    if let Some(items) = schema.get("items") {
        structural_errors(items, &format!("{path}[]"), errors);
    }
    if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        structural_errors(values, &format!("{path}.*"), errors);
    }
}

#[test]
fn crds_are_structural() {
    let crds = crds();
    let names: Vec<&str> = crds
        .iter()
        .map(|c| c["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "canaries.flagger.app",
            "metrictemplates.flagger.app",
            "alertproviders.flagger.app"
        ]
    );
    let mut errors = Vec::new();
    for crd in &crds {
        assert_eq!(crd["apiVersion"], "apiextensions.k8s.io/v1");
        for v in crd["spec"]["versions"].as_array().unwrap() {
            let at = format!("{} {}", crd["metadata"]["name"], v["name"]);
            assert_eq!(v["subresources"]["status"], serde_json::json!({}), "{at}");
            let mut found = Vec::new();
            structural_errors(&v["schema"]["openAPIV3Schema"], "", &mut found);
            errors.extend(found.into_iter().map(|e| format!("{at}: {e}")));
        }
        let storage: Vec<&Value> = crd["spec"]["versions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["storage"] == true)
            .collect();
        assert_eq!(
            storage.len(),
            1,
            "{}: one storage version",
            crd["metadata"]["name"]
        );
        assert_eq!(storage[0]["name"], "v1beta1");
    }
    assert!(errors.is_empty(), "{errors:#?}");

    // The check itself catches what the API server refuses or prunes.
    let mut found = Vec::new();
    let bad = serde_json::json!({"type": "object", "properties": {
        "a": {"properties": {}}, "b": {"type": "object"},
        "c": {"type": "object", "properties": {"x": {"type": "string"}},
              "anyOf": [{"type": "string"}, {"required": ["y"]}]}}});
    structural_errors(&bad, "", &mut found);
    assert_eq!(found.len(), 4, "{found:#?}");
}

#[test]
fn canary_crd_serves_flaggers_versions_and_columns() {
    let crds = crds();
    let canary = &crds[0];
    let names = &canary["spec"]["names"];
    assert_eq!(names["kind"], "Canary");
    assert_eq!(names["plural"], "canaries");
    assert_eq!(names["shortNames"], serde_json::json!(["canary"]));
    assert!(names["categories"]
        .as_array()
        .unwrap()
        .contains(&"all".into()));
    let versions = canary["spec"]["versions"].as_array().unwrap();
    let served: Vec<&str> = versions
        .iter()
        .filter(|v| v["served"] == true)
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(served, ["v1beta1", "v1alpha3"]);
    for v in versions {
        // `kubectl get canaries` without -o wide, as in Flagger's guides.
        let shown: Vec<(&str, &str)> = v["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c.get("priority").is_none_or(|p| p == 0))
            .map(|c| (c["name"].as_str().unwrap(), c["jsonPath"].as_str().unwrap()))
            .collect();
        assert_eq!(
            shown,
            [
                ("Status", ".status.phase"),
                ("Weight", ".status.canaryWeight"),
                ("LastTransitionTime", ".status.lastTransitionTime")
            ],
            "{}",
            v["name"]
        );
    }
    // v1alpha3 objects are stored as v1beta1 without conversion, so both name both fields.
    for v in versions {
        let spec = &v["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(
            spec["properties"]["analysis"],
            spec["properties"]["canaryAnalysis"]
        );
    }
}

/// Every object of a multi-document YAML text, as JSON.
fn objects(text: &str) -> Vec<Value> {
    gitcanary::manifest::yaml::parse_documents(text)
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .into_iter()
        .map(|d| d.root.to_json())
        .filter(|v| !v.is_null())
        .collect()
}

/// The gitcanary config held by a ConfigMap object.
fn config_of(cm: &Value) -> gitcanary::config::Config {
    let text = cm["data"]["gitcanary.yaml"]
        .as_str()
        .expect("a config file");
    gitcanary::config::Config::parse(text, Path::new("/etc/gitcanary")).unwrap()
}

fn install_export(args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(["install", "--export"])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn install_export_prints_the_manifests_and_validate_accepts_them() {
    let out = install_export(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let plain: Vec<Value> = plain_objects();
    assert_eq!(objects(&text), plain);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("install.yaml"), &text).unwrap();
    let v = validate(dir.path());
    let report = String::from_utf8_lossy(&v.stdout);
    assert!(v.status.success(), "{report}");
    assert!(
        report.contains(&format!("{} objects in 1 files", plain.len())),
        "{report}"
    );
}

#[test]
fn install_export_flags_land_in_the_config_and_the_deployment() {
    let out = install_export(&[
        "--url",
        "ssh://git@github.com/acme/fleet.git",
        "--branch",
        "prod",
        "--path",
        "./clusters/eu-1",
        "--image",
        "registry.acme.test/gitcanary:1.2.3",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let objs = objects(&String::from_utf8(out.stdout).unwrap());
    let cm = objs.iter().find(|o| o["kind"] == "ConfigMap").unwrap();
    let cfg = config_of(cm);
    assert_eq!(cfg.source.url, "ssh://git@github.com/acme/fleet.git");
    assert_eq!(cfg.source.branch, "prod");
    assert_eq!(cfg.source.path, "./clusters/eu-1");
    assert_eq!(cfg.state_dir(), Path::new("/var/lib/gitcanary"));
    let deploy = objs.iter().find(|o| o["kind"] == "Deployment").unwrap();
    assert_eq!(
        deploy["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.acme.test/gitcanary:1.2.3"
    );

    // A bad value fails before anything is printed, naming the flag.
    let out = install_export(&["--url", "/srv/fleet.git"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--url \"/srv/fleet.git\""), "{err}");
    // Without --export it says how to apply.
    let out = Command::new(bin()).arg("install").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("gitcanary install --export | kubectl apply -f -"),
        "{err}"
    );
}

/// What the Deployment promises: 2 replicas, non-root, read-only root, the small
/// requests, the server's real probe paths and port, and a writable state dir.
#[test]
fn deployment_runs_hardened_with_probes_on_the_servers_port() {
    let objs: Vec<Value> = plain_objects();
    let deploy = objs.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let pod = &deploy["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(deploy["spec"]["replicas"], 2);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["resources"]["requests"]["memory"], "32Mi");
    assert_eq!(c["resources"]["requests"]["cpu"], "10m");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(
        c["image"].as_str().unwrap().rsplit(':').next().unwrap(),
        env!("CARGO_PKG_VERSION")
    );
    let cm = objs.iter().find(|o| o["kind"] == "ConfigMap").unwrap();
    let cfg = config_of(cm);
    let port = cfg.server.listen.rsplit(':').next().unwrap();
    assert!(
        cfg.server.listen.starts_with("0.0.0.0:"),
        "probes come from the kubelet"
    );
    assert_eq!(c["ports"][0]["containerPort"].to_string(), port);
    let mounts: Vec<&str> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    assert!(
        mounts.contains(&cfg.state_dir().to_str().unwrap()),
        "{mounts:?}"
    );
    assert!(mounts.contains(&"/etc/gitcanary"), "{mounts:?}");
}

fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/chart/gitcanary")
}

/// The chart rendered by gitcanary's own Helm renderer, as (template file, object).
fn render_chart(release: &str, namespace: &str, values: Value) -> Vec<(String, Value)> {
    use gitcanary::helm::chart::{render, Capabilities, Chart, Release};
    let chart = Chart::load_dir(&chart_dir()).expect("chart loads");
    let release = Release {
        name: release.into(),
        namespace: namespace.into(),
        revision: 1,
        is_install: true,
    };
    let out = render(&chart, &release, &values, &Capabilities::default()).expect("renders");
    out.into_iter()
        .flat_map(|r| {
            objects(&r.text)
                .into_iter()
                .map(move |o| (r.name.clone(), o))
        })
        .collect()
}

/// Objects compared by meaning: sorted by identity, the config file parsed, and the
/// chart's config checksum annotation (which the plain manifests cannot have) checked
/// and dropped.
fn normalised(objs: impl IntoIterator<Item = Value>) -> Vec<Value> {
    let mut out: Vec<Value> = objs
        .into_iter()
        .map(|mut o| {
            if o["kind"] == "ConfigMap" {
                let text = o["data"]["gitcanary.yaml"].as_str().unwrap().to_string();
                o["data"]["gitcanary.yaml"] = objects(&text).remove(0);
            }
            if o["kind"] == "Deployment" {
                let ann = o["spec"]["template"]["metadata"]["annotations"]
                    .as_object_mut()
                    .unwrap();
                if let Some(sum) = ann.remove("checksum/config") {
                    let sum = sum.as_str().unwrap();
                    assert!(sum.len() == 64 && sum.bytes().all(|b| b.is_ascii_hexdigit()));
                }
            }
            o
        })
        .collect();
    let key = |o: &Value| {
        format!(
            "{}/{}/{}/{}",
            o["apiVersion"], o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]
        )
    };
    out.sort_by_key(key);
    out
}

/// The first place two JSON values differ, as a path, or `None` when equal.
fn first_difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| {
                let (l, r) = (
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                first_difference(l, r, &format!("{path}.{k}"))
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (l, r))| first_difference(l, r, &format!("{path}[{i}]"))),
        _ if a == b => None,
        _ => Some(format!("{path}: {a} != {b}")),
    }
}

/// Asserts two object lists are equal, naming the first difference.
fn assert_same_objects(left: Vec<Value>, right: Vec<Value>) {
    if let Some(d) = first_difference(&Value::from(left), &Value::from(right), "") {
        panic!("chart and manifests differ at {d}");
    }
}

#[test]
fn chart_renders_the_plain_manifests() {
    let plain: Vec<Value> = plain_objects();
    let rendered = render_chart("gitcanary", "gitcanary", serde_json::json!({}));
    // Default values leave the namespace to `helm install --create-namespace`.
    let without_ns = plain.iter().filter(|o| o["kind"] != "Namespace").cloned();
    assert_same_objects(
        normalised(rendered.into_iter().map(|(_, o)| o)),
        normalised(without_ns),
    );
    let rendered = render_chart(
        "gitcanary",
        "gitcanary",
        serde_json::json!({"namespace": {"create": true}}),
    );
    assert_same_objects(
        normalised(rendered.into_iter().map(|(_, o)| o)),
        normalised(plain),
    );
}

#[test]
fn chart_values_land_and_the_output_passes_validate() {
    let values = serde_json::json!({
        "image": {"repository": "registry.acme.test/gitcanary", "tag": "1.2.3"},
        "replicas": 3,
        "git": {"url": "https://git.acme.test/fleet.git", "branch": "prod", "path": "./eu"},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
        "crds": {"install": false},
    });
    let rendered = render_chart("ops", "platform", values);
    let find = |kind: &str| {
        &rendered
            .iter()
            .find(|(_, o)| o["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind}"))
            .1
    };
    assert!(rendered
        .iter()
        .all(|(_, o)| o["kind"] != "CustomResourceDefinition"));
    let deploy = find("Deployment");
    assert_eq!(deploy["metadata"]["name"], "ops-gitcanary");
    assert_eq!(deploy["spec"]["replicas"], 3);
    let c = &deploy["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "registry.acme.test/gitcanary:1.2.3");
    assert_eq!(c["resources"]["requests"]["memory"], "64Mi");
    let cm = find("ConfigMap");
    assert_eq!(
        deploy["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"],
        cm["metadata"]["name"]
    );
    let cfg = config_of(cm);
    assert_eq!(cfg.source.url, "https://git.acme.test/fleet.git");
    assert_eq!(cfg.source.branch, "prod");
    assert_eq!(cfg.source.path, "./eu");
    let crb = find("ClusterRoleBinding");
    assert_eq!(crb["subjects"][0]["namespace"], "platform");
    assert_eq!(crb["subjects"][0]["name"], "ops-gitcanary");

    // The config checksum follows the config, so a new Git URL restarts the pods.
    let sum = |r: &[(String, Value)]| {
        r.iter().find(|(_, o)| o["kind"] == "Deployment").unwrap().1["spec"]["template"]["metadata"]
            ["annotations"]["checksum/config"]
            .clone()
    };
    let other = render_chart(
        "ops",
        "platform",
        serde_json::json!({"git": {"url": "https://git.acme.test/other.git"}}),
    );
    assert_ne!(sum(&rendered), sum(&other));

    // What the chart renders loads in gitcanary's own validator.
    let dir = tempfile::tempdir().unwrap();
    let all: Vec<String> = rendered
        .iter()
        .map(|(_, o)| gitcanary::util::yaml::yaml(o))
        .collect();
    std::fs::write(dir.path().join("rendered.yaml"), all.join("---\n")).unwrap();
    let v = validate(dir.path());
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
}

#[test]
fn chart_values_are_checked_against_its_schema() {
    use gitcanary::helm::chart::{render, Capabilities, Chart, Release};
    let chart = Chart::load_dir(&chart_dir()).unwrap();
    let release = Release {
        name: "gitcanary".into(),
        namespace: "gitcanary".into(),
        revision: 1,
        is_install: true,
    };
    let e = render(
        &chart,
        &release,
        &serde_json::json!({"replicas": "two"}),
        &Capabilities::default(),
    )
    .unwrap_err();
    assert!(e.contains("replicas"), "{e}");
}
