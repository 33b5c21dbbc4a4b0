//! The objects a canary generates, built by pure functions: the `<target>-primary`
//! Deployment with `-primary` copies of the ConfigMaps, Secrets and autoscaler it
//! references, and the apex, primary and canary Services. The executor reads their
//! inputs from the target and writes what these return.

use super::spec::CanarySpec;
use crate::manifest::ObjectKey;
use serde_json::{json, Value};

/// The key of Deployment `ns/name`.
pub fn deployment(ns: &str, name: &str) -> ObjectKey {
    ObjectKey::new("apps/v1", "Deployment", ns, name)
}

/// The key of the autoscaler `ns/name` (HorizontalPodAutoscaler `autoscaling/v2`).
pub fn autoscaler(ns: &str, name: &str) -> ObjectKey {
    ObjectKey::new("autoscaling/v2", "HorizontalPodAutoscaler", ns, name)
}

/// The label a Deployment's selector uses for its name (Flagger: `app`, `name` or
/// `app.kubernetes.io/name`).
pub fn selector_label(dep: &Value) -> String {
    let sel = &dep["spec"]["selector"]["matchLabels"];
    ["app", "name", "app.kubernetes.io/name"]
        .iter()
        .find(|l| sel.get(**l).is_some())
        .unwrap_or(&"app")
        .to_string()
}

/// ConfigMaps and Secrets a pod spec references (env, envFrom, volumes), sorted.
pub fn config_refs(pod: &Value) -> Vec<(String, String)> {
    let mut out = std::collections::BTreeSet::new();
    for c in pod["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(pod["initContainers"].as_array().into_iter().flatten())
    {
        for f in c["envFrom"].as_array().into_iter().flatten() {
            if let Some(n) = f["configMapRef"]["name"].as_str() {
                out.insert(("ConfigMap".to_string(), n.to_string()));
            }
            if let Some(n) = f["secretRef"]["name"].as_str() {
                out.insert(("Secret".to_string(), n.to_string()));
            }
        }
        for e in c["env"].as_array().into_iter().flatten() {
            if let Some(n) = e["valueFrom"]["configMapKeyRef"]["name"].as_str() {
                out.insert(("ConfigMap".to_string(), n.to_string()));
            }
            if let Some(n) = e["valueFrom"]["secretKeyRef"]["name"].as_str() {
                out.insert(("Secret".to_string(), n.to_string()));
            }
        }
    }
    for v in pod["volumes"].as_array().into_iter().flatten() {
        if let Some(n) = v["configMap"]["name"].as_str() {
            out.insert(("ConfigMap".to_string(), n.to_string()));
        }
        if let Some(n) = v["secret"]["secretName"].as_str() {
            out.insert(("Secret".to_string(), n.to_string()));
        }
    }
    out.into_iter().collect()
}

/// Points a pod spec's ConfigMap and Secret references at their `-primary` copies.
fn rename_config_refs(pod: &mut Value) {
    let rename = |v: &mut Value| {
        if let Some(n) = v.as_str() {
            *v = format!("{n}-primary").into();
        }
    };
    for list in ["containers", "initContainers"] {
        for c in pod[list].as_array_mut().into_iter().flatten() {
            for f in c["envFrom"].as_array_mut().into_iter().flatten() {
                for r in ["configMapRef", "secretRef"] {
                    if f.get(r).is_some() {
                        rename(&mut f[r]["name"]);
                    }
                }
            }
            for e in c["env"].as_array_mut().into_iter().flatten() {
                for r in ["configMapKeyRef", "secretKeyRef"] {
                    if e["valueFrom"].get(r).is_some() {
                        rename(&mut e["valueFrom"][r]["name"]);
                    }
                }
            }
        }
    }
    for v in pod["volumes"].as_array_mut().into_iter().flatten() {
        if v.get("configMap").is_some() {
            rename(&mut v["configMap"]["name"]);
        }
        if v.get("secret").is_some() {
            rename(&mut v["secret"]["secretName"]);
        }
    }
}

/// The primary Deployment and the copies it needs, from the canary's `target`
/// Deployment. `existing` is the primary as it is now; `get` reads the referenced
/// ConfigMaps, Secrets and autoscaler (absent ones are not copied). The Deployment
/// comes last, so its configs exist before it does.
pub fn primary_objects(
    c: &CanarySpec,
    target: &Value,
    existing: Option<&Value>,
    get: impl Fn(&ObjectKey) -> Option<Value>,
) -> Vec<(ObjectKey, Value)> {
    let label = selector_label(target);
    let primary_name = format!("{}-primary", c.target);
    let mut p = target.clone();
    p["metadata"] = json!({"name": primary_name, "namespace": c.namespace, "labels": {label.clone(): primary_name}});
    p["spec"]["selector"]["matchLabels"][&label] = primary_name.clone().into();
    p["spec"]["template"]["metadata"]["labels"][&label] = primary_name.clone().into();
    // Flagger's Promote copies the target's replicas unless an autoscaler owns them.
    if let Some(e) = existing.filter(|_| c.autoscaler.is_some()) {
        p["spec"]["replicas"] = e["spec"]["replicas"].clone();
    }
    let mut out = Vec::new();
    for (kind, name) in config_refs(&target["spec"]["template"]["spec"]) {
        let Some(mut cfg) = get(&ObjectKey::new("v1", &kind, &c.namespace, &name)) else {
            continue;
        };
        let copy = format!("{name}-primary");
        cfg["metadata"] = json!({"name": copy, "namespace": c.namespace});
        out.push((ObjectKey::new("v1", &kind, &c.namespace, &copy), cfg));
    }
    rename_config_refs(&mut p["spec"]["template"]["spec"]);
    if let Some(hpa_name) = &c.autoscaler {
        if let Some(mut hpa) = get(&autoscaler(&c.namespace, hpa_name)) {
            let copy = format!("{hpa_name}-primary");
            hpa["metadata"] = json!({"name": copy, "namespace": c.namespace});
            hpa["spec"]["scaleTargetRef"]["name"] = primary_name.clone().into();
            out.push((autoscaler(&c.namespace, &copy), hpa));
        }
    }
    out.push((deployment(&c.namespace, &primary_name), p));
    out
}

/// The apex, primary and canary Services of a canary whose target is `target`: the
/// apex and `-primary` select the primary's pods, `-canary` the target's.
pub fn services(c: &CanarySpec, target: &Value) -> Vec<(ObjectKey, Value)> {
    let label = selector_label(target);
    let svc = |name: &str, app: &str| {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": c.namespace},
            "spec": {"selector": {label.clone(): app}, "ports": [{"name": "http", "port": c.port, "targetPort": c.target_port}]}})
    };
    let primary = format!("{}-primary", c.target);
    [
        (c.service.clone(), primary.clone()),
        (format!("{}-primary", c.service), primary),
        (format!("{}-canary", c.service), c.target.clone()),
    ]
    .into_iter()
    .map(|(name, app)| {
        (
            ObjectKey::new("v1", "Service", &c.namespace, &name),
            svc(&name, &app),
        )
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary(autoscaler: bool) -> CanarySpec {
        let mut spec = json!({"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898},
            "analysis": {"interval": "1m", "threshold": 5, "maxWeight": 50, "stepWeight": 10}});
        if autoscaler {
            spec["autoscalerRef"] = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "name": "podinfo"});
        }
        super::super::spec::parse(
            &json!({"apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test"}, "spec": spec}),
        )
        .unwrap()
    }

    fn target() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "podinfo", "namespace": "test", "labels": {"team": "a"}},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "podinfo"}},
                "template": {"metadata": {"labels": {"app": "podinfo"}}, "spec": {
                    "containers": [{"name": "c", "envFrom": [{"configMapRef": {"name": "cfg"}}],
                        "env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "k"}}}]}],
                    "volumes": [{"name": "v", "configMap": {"name": "missing"}}]}}}})
    }

    fn get(key: &ObjectKey) -> Option<Value> {
        match (key.kind.as_str(), key.name.as_str()) {
            ("ConfigMap", "cfg") => {
                Some(json!({"metadata": {"name": "cfg", "uid": "x"}, "data": {"a": "1"}}))
            }
            ("Secret", "sec") => Some(json!({"metadata": {"name": "sec"}, "data": {"k": "dg=="}})),
            ("HorizontalPodAutoscaler", "podinfo") => Some(
                json!({"metadata": {"name": "podinfo"}, "spec": {"scaleTargetRef": {"name": "podinfo"}, "maxReplicas": 4}}),
            ),
            _ => None,
        }
    }

    #[test]
    fn the_primary_selects_its_own_pods_and_uses_primary_config_copies() {
        let objs = primary_objects(&canary(false), &target(), None, get);
        let names: Vec<String> = objs
            .iter()
            .map(|(k, _)| format!("{}/{}", k.kind, k.name))
            .collect();
        // Absent configs are not copied; the Deployment comes last.
        assert_eq!(
            names,
            vec![
                "ConfigMap/cfg-primary",
                "Secret/sec-primary",
                "Deployment/podinfo-primary"
            ]
        );
        assert_eq!(
            objs[0].1["metadata"],
            json!({"name": "cfg-primary", "namespace": "test"})
        );
        assert_eq!(objs[0].1["data"]["a"], "1");
        let p = &objs[2].1;
        assert_eq!(p["metadata"]["labels"], json!({"app": "podinfo-primary"}));
        assert_eq!(
            p["spec"]["selector"]["matchLabels"]["app"],
            "podinfo-primary"
        );
        assert_eq!(
            p["spec"]["template"]["metadata"]["labels"]["app"],
            "podinfo-primary"
        );
        assert_eq!(p["spec"]["replicas"], 3);
        let pod = &p["spec"]["template"]["spec"];
        assert_eq!(
            pod["containers"][0]["envFrom"][0]["configMapRef"]["name"],
            "cfg-primary"
        );
        assert_eq!(
            pod["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["name"],
            "sec-primary"
        );
        assert_eq!(pod["volumes"][0]["configMap"]["name"], "missing-primary");
    }

    #[test]
    fn with_an_autoscaler_the_primary_keeps_its_replicas_and_gets_its_own_autoscaler() {
        let existing = json!({"spec": {"replicas": 2}});
        let objs = primary_objects(&canary(true), &target(), Some(&existing), get);
        let hpa = objs
            .iter()
            .find(|(k, _)| k.kind == "HorizontalPodAutoscaler")
            .unwrap();
        assert_eq!(hpa.0.name, "podinfo-primary");
        assert_eq!(hpa.1["spec"]["scaleTargetRef"]["name"], "podinfo-primary");
        assert_eq!(objs.last().unwrap().1["spec"]["replicas"], 2);
        // Without an autoscaler the target's replicas win.
        let objs = primary_objects(&canary(false), &target(), Some(&existing), get);
        assert_eq!(objs.last().unwrap().1["spec"]["replicas"], 3);
    }

    #[test]
    fn services_route_the_apex_to_the_primary() {
        let svcs = services(&canary(false), &target());
        let sel: Vec<(String, Value)> = svcs
            .iter()
            .map(|(k, v)| (k.name.clone(), v["spec"]["selector"]["app"].clone()))
            .collect();
        assert_eq!(
            sel,
            vec![
                ("podinfo".to_string(), json!("podinfo-primary")),
                ("podinfo-primary".to_string(), json!("podinfo-primary")),
                ("podinfo-canary".to_string(), json!("podinfo")),
            ]
        );
        assert_eq!(svcs[0].1["spec"]["ports"][0]["port"], 9898);
    }
}
