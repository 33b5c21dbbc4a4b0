//! Field types of the kinds gitcanary knows (Deployment, Service, ConfigMap, Secret,
//! Namespace, HorizontalPodAutoscaler, Canary, HelmRelease). The check walks the whole
//! document and reports every mismatch, each with its line and field path, the way the
//! API server would reject them. Unknown fields pass: CRD versions add fields over time.

use super::object::ManifestError;
use super::yaml::{Node, Value};
use std::collections::HashMap;
use std::sync::OnceLock;

/// The expected type of a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ty {
    Str,
    Int,
    Bool,
    /// int or float (thresholds)
    Num,
    Map,
    Seq,
    /// a mapping whose values are all strings (labels, ConfigMap data)
    StrMap,
    /// a port or percentage: `8080`, `http`, `25%`
    IntOrStr,
    /// a resource quantity: `100m`, `0.5`, `1Gi`
    Quantity,
}

impl Ty {
    fn accepts(self, node: &Node) -> bool {
        matches!(
            (self, &node.value),
            (_, Value::Null)
                | (Ty::Str, Value::Str(_))
                | (Ty::Bool, Value::Bool(_))
                | (Ty::Int, Value::Int(_))
                | (Ty::Num, Value::Int(_) | Value::Float(_))
                | (Ty::Map | Ty::StrMap, Value::Map(_))
                | (Ty::Seq, Value::Seq(_))
                | (Ty::IntOrStr, Value::Int(_) | Value::Str(_))
                | (
                    Ty::Quantity,
                    Value::Int(_) | Value::Float(_) | Value::Str(_)
                )
        )
    }

    fn describe(self) -> &'static str {
        match self {
            Ty::Str => "a string",
            Ty::Int => "an integer",
            Ty::Bool => "a boolean",
            Ty::Num => "a number",
            Ty::Map => "a mapping",
            Ty::Seq => "a list",
            Ty::StrMap => "a mapping of strings",
            Ty::IntOrStr => "an integer or a string",
            Ty::Quantity => "a quantity such as 100m or 1Gi",
        }
    }
}

#[derive(Default)]
struct Schema {
    types: HashMap<String, Ty>,
    required: HashMap<String, Vec<&'static str>>,
}

impl Schema {
    fn ty(&mut self, path: &str, ty: Ty) -> &mut Self {
        self.types.insert(path.to_string(), ty);
        self
    }

    fn req(&mut self, parent: &str, fields: &[&'static str]) -> &mut Self {
        self.required
            .entry(parent.to_string())
            .or_default()
            .extend_from_slice(fields);
        self
    }

    fn all(&mut self, prefix: &str, fields: &[(&str, Ty)]) -> &mut Self {
        for (f, t) in fields {
            self.ty(&format!("{prefix}{f}"), *t);
        }
        self
    }

    fn metadata(&mut self, prefix: &str) -> &mut Self {
        use Ty::*;
        self.all(
            prefix,
            &[
                ("", Map),
                (".name", Str),
                (".namespace", Str),
                (".labels", StrMap),
                (".annotations", StrMap),
            ],
        )
    }

    fn pod_spec(&mut self, p: &str) -> &mut Self {
        use Ty::*;
        self.ty(p, Map).req(p, &["containers"]);
        self.all(
            p,
            &[
                (".containers", Seq),
                (".initContainers", Seq),
                (".volumes", Seq),
                (".volumes[].name", Str),
                (".volumes[].configMap", Map),
                (".volumes[].configMap.name", Str),
                (".volumes[].secret", Map),
                (".volumes[].secret.secretName", Str),
                (".terminationGracePeriodSeconds", Int),
                (".serviceAccountName", Str),
                (".nodeSelector", StrMap),
                (".restartPolicy", Str),
            ],
        );
        for c in [format!("{p}.containers[]"), format!("{p}.initContainers[]")] {
            self.req(&c, &["name"])
                .req(&format!("{c}.ports[]"), &["containerPort"])
                .req(&format!("{c}.env[]"), &["name"]);
            self.all(
                &c,
                &[
                    ("", Map),
                    (".name", Str),
                    (".image", Str),
                    (".imagePullPolicy", Str),
                    (".command", Seq),
                    (".command[]", Str),
                    (".args", Seq),
                    (".args[]", Str),
                    (".workingDir", Str),
                    (".ports", Seq),
                    (".ports[].containerPort", Int),
                    (".ports[].name", Str),
                    (".ports[].protocol", Str),
                    (".ports[].hostPort", Int),
                    (".env", Seq),
                    (".env[].name", Str),
                    (".env[].value", Str),
                    (".env[].valueFrom", Map),
                    (".envFrom", Seq),
                    (".envFrom[].configMapRef", Map),
                    (".envFrom[].secretRef", Map),
                    (".envFrom[].prefix", Str),
                    (".resources", Map),
                    (".resources.limits", Map),
                    (".resources.limits.*", Quantity),
                    (".resources.requests", Map),
                    (".resources.requests.*", Quantity),
                    (".volumeMounts", Seq),
                    (".volumeMounts[].name", Str),
                    (".volumeMounts[].mountPath", Str),
                ],
            );
            for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
                self.all(
                    &format!("{c}.{probe}"),
                    &[
                        ("", Map),
                        (".initialDelaySeconds", Int),
                        (".periodSeconds", Int),
                        (".timeoutSeconds", Int),
                        (".failureThreshold", Int),
                        (".successThreshold", Int),
                        (".httpGet", Map),
                        (".httpGet.path", Str),
                        (".httpGet.port", IntOrStr),
                        (".tcpSocket", Map),
                        (".tcpSocket.port", IntOrStr),
                        (".exec", Map),
                        (".exec.command", Seq),
                        (".exec.command[]", Str),
                    ],
                );
            }
        }
        self
    }
}

fn build(kind: &str) -> Option<Schema> {
    use Ty::*;
    let mut s = Schema::default();
    s.metadata("metadata");
    match kind {
        "Deployment" => {
            s.ty("spec", Map)
                .req("spec", &["selector", "template"])
                .all(
                    "spec",
                    &[
                        (".replicas", Int),
                        (".selector", Map),
                        (".selector.matchLabels", StrMap),
                        (".selector.matchExpressions", Seq),
                        (".template", Map),
                        (".strategy", Map),
                        (".strategy.type", Str),
                        (".strategy.rollingUpdate", Map),
                        (".strategy.rollingUpdate.maxSurge", IntOrStr),
                        (".strategy.rollingUpdate.maxUnavailable", IntOrStr),
                        (".minReadySeconds", Int),
                        (".progressDeadlineSeconds", Int),
                        (".revisionHistoryLimit", Int),
                        (".paused", Bool),
                    ],
                );
            s.metadata("spec.template.metadata")
                .pod_spec("spec.template.spec");
        }
        "Service" => {
            s.all(
                "spec",
                &[
                    ("", Map),
                    (".ports", Seq),
                    (".ports[].port", Int),
                    (".ports[].targetPort", IntOrStr),
                    (".ports[].name", Str),
                    (".ports[].protocol", Str),
                    (".ports[].nodePort", Int),
                    (".selector", StrMap),
                    (".type", Str),
                    (".clusterIP", Str),
                ],
            )
            .req("spec.ports[]", &["port"]);
        }
        "ConfigMap" => {
            s.all(
                "",
                &[
                    ("data", StrMap),
                    ("binaryData", StrMap),
                    ("immutable", Bool),
                ],
            );
        }
        "Secret" => {
            s.all(
                "",
                &[
                    ("data", StrMap),
                    ("stringData", StrMap),
                    ("type", Str),
                    ("immutable", Bool),
                ],
            );
        }
        "Namespace" => {
            s.all("spec", &[("", Map), (".finalizers", Seq)]);
        }
        "HorizontalPodAutoscaler" => {
            s.ty("spec", Map)
                .req("spec", &["scaleTargetRef", "maxReplicas"])
                .req("spec.scaleTargetRef", &["kind", "name"]);
            s.all(
                "spec",
                &[
                    (".scaleTargetRef", Map),
                    (".scaleTargetRef.apiVersion", Str),
                    (".scaleTargetRef.kind", Str),
                    (".scaleTargetRef.name", Str),
                    (".minReplicas", Int),
                    (".maxReplicas", Int),
                    (".metrics", Seq),
                    (".targetCPUUtilizationPercentage", Int),
                    (".behavior", Map),
                ],
            );
        }
        "Canary" => {
            s.ty("spec", Map)
                .req("spec", &["targetRef", "service"])
                .req("spec.targetRef", &["name"]);
            s.req("spec.service", &["port"]).all(
                "spec",
                &[
                    (".targetRef", Map),
                    (".targetRef.apiVersion", Str),
                    (".targetRef.kind", Str),
                    (".targetRef.name", Str),
                    (".autoscalerRef", Map),
                    (".autoscalerRef.name", Str),
                    (".service", Map),
                    (".service.name", Str),
                    (".service.port", Int),
                    (".service.targetPort", IntOrStr),
                    (".service.portName", Str),
                    (".service.portDiscovery", Bool),
                    (".service.gateways", Seq),
                    (".service.hosts", Seq),
                    (".progressDeadlineSeconds", Int),
                    (".skipAnalysis", Bool),
                    (".suspend", Bool),
                    (".provider", Str),
                ],
            );
            for a in ["spec.analysis", "spec.canaryAnalysis"] {
                s.req(&format!("{a}.metrics[]"), &["name"])
                    .req(&format!("{a}.webhooks[]"), &["name", "url"]);
                s.all(
                    a,
                    &[
                        ("", Map),
                        (".interval", Str),
                        (".threshold", Int),
                        (".maxWeight", Int),
                        (".stepWeight", Int),
                        (".stepWeights", Seq),
                        (".stepWeights[]", Int),
                        (".stepWeightPromotion", Int),
                        (".iterations", Int),
                        (".mirror", Bool),
                        (".mirrorWeight", Int),
                        (".match", Seq),
                        (".metrics", Seq),
                        (".metrics[].name", Str),
                        (".metrics[].interval", Str),
                        (".metrics[].threshold", Num),
                        (".metrics[].thresholdRange", Map),
                        (".metrics[].thresholdRange.min", Num),
                        (".metrics[].thresholdRange.max", Num),
                        (".metrics[].templateRef", Map),
                        (".metrics[].templateVariables", StrMap),
                        (".webhooks", Seq),
                        (".webhooks[].name", Str),
                        (".webhooks[].url", Str),
                        (".webhooks[].type", Str),
                        (".webhooks[].timeout", Str),
                        (".webhooks[].metadata", StrMap),
                        (".webhooks[].retries", Int),
                        (".alerts", Seq),
                        (".primaryReadyThreshold", Int),
                        (".canaryReadyThreshold", Int),
                    ],
                );
            }
        }
        "HelmRelease" => {
            // valuesFrom entries differ by API (v2 kind/name, the Helm operator's
            // configMapKeyRef/secretKeyRef/chartFileRef); the planner checks them.
            s.ty("spec", Map).all(
                "spec",
                &[
                    (".releaseName", Str),
                    (".targetNamespace", Str),
                    (".interval", Str),
                    (".timeout", IntOrStr),
                    (".suspend", Bool),
                    (".chart", Map),
                    (".chart.repository", Str),
                    (".chart.name", Str),
                    (".chart.version", Str),
                    (".chart.git", Str),
                    (".chart.ref", Str),
                    (".chart.path", Str),
                    (".chart.spec", Map),
                    (".chart.spec.chart", Str),
                    (".chart.spec.version", Str),
                    (".chart.spec.sourceRef", Map),
                    (".chart.spec.sourceRef.kind", Str),
                    (".chart.spec.sourceRef.name", Str),
                    (".values", Map),
                    (".valuesFrom", Seq),
                    (".valuesFrom[].kind", Str),
                    (".valuesFrom[].name", Str),
                    (".valuesFrom[].valuesKey", Str),
                    (".valuesFrom[].targetPath", Str),
                    (".valuesFrom[].optional", Bool),
                    (".rollback", Map),
                ],
            );
        }
        _ => return None,
    }
    Some(s)
}

const KNOWN: [&str; 8] = [
    "Deployment",
    "Service",
    "ConfigMap",
    "Secret",
    "Namespace",
    "HorizontalPodAutoscaler",
    "Canary",
    "HelmRelease",
];

fn schema(kind: &str) -> Option<&'static Schema> {
    static ALL: OnceLock<HashMap<&'static str, Schema>> = OnceLock::new();
    ALL.get_or_init(|| KNOWN.iter().filter_map(|k| Some((*k, build(k)?))).collect())
        .get(kind)
}

/// Checks the field types of a known kind; returns every mismatch found.
pub fn check(kind: &str, root: &Node, file: &str) -> Vec<ManifestError> {
    let mut errors = Vec::new();
    if let Some(s) = schema(kind) {
        walk(s, root, "", &mut String::new(), file, &mut errors);
    }
    errors
}

/// `norm` is the path with list indexes replaced by `[]`, `shown` the real one.
fn walk(
    s: &Schema,
    node: &Node,
    norm: &str,
    shown: &mut String,
    file: &str,
    errors: &mut Vec<ManifestError>,
) {
    let ty = s.types.get(norm).copied();
    if let Some(ty) = ty {
        if !ty.accepts(node) {
            let found = match &node.value {
                Value::Str(v) => format!("string {v:?}"),
                _ => node.type_name().to_string(),
            };
            errors.push(ManifestError::at(
                file,
                node.pos,
                Some(shown.clone()),
                format!("expected {}, found {found}", ty.describe()),
            ));
            return;
        }
    }
    match &node.value {
        Value::Map(entries) => {
            if let Some(req) = s.required.get(norm) {
                for field in req {
                    if node.get(field).is_none() {
                        let path = if shown.is_empty() {
                            field.to_string()
                        } else {
                            format!("{shown}.{field}")
                        };
                        errors.push(ManifestError::at(
                            file,
                            node.pos,
                            Some(path),
                            "missing required field",
                        ));
                    }
                }
            }
            for (k, v) in entries {
                let Some(key) = k.scalar_text() else { continue };
                let child_norm = if norm.is_empty() {
                    key.clone()
                } else {
                    format!("{norm}.{key}")
                };
                let len = shown.len();
                if !shown.is_empty() {
                    shown.push('.');
                }
                shown.push_str(&key);
                if ty == Some(Ty::StrMap) {
                    if !matches!(v.value, Value::Str(_)) {
                        errors.push(ManifestError::at(
                            file,
                            v.pos,
                            Some(shown.clone()),
                            format!(
                                "expected a string, found {} (quote the value)",
                                v.type_name()
                            ),
                        ));
                    }
                } else if s.types.contains_key(&child_norm)
                    || !s.types.contains_key(&format!("{norm}.*"))
                {
                    walk(s, v, &child_norm, shown, file, errors);
                } else {
                    walk(s, v, &format!("{norm}.*"), shown, file, errors);
                }
                shown.truncate(len);
            }
        }
        Value::Seq(items) => {
            let child_norm = format!("{norm}[]");
            for (i, item) in items.iter().enumerate() {
                let len = shown.len();
                shown.push_str(&format!("[{i}]"));
                walk(s, item, &child_norm, shown, file, errors);
                shown.truncate(len);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::yaml::parse_documents;

    fn errs(kind: &str, text: &str) -> Vec<String> {
        let doc = parse_documents(text).unwrap().remove(0);
        check(kind, &doc.root, "f.yaml")
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn reports_every_type_error_with_its_place() {
        let text = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: three
  selector: {matchLabels: {app: web}}
  template:
    spec:
      containers:
        - name: web
          ports:
            - containerPort: http
";
        assert_eq!(
            errs("Deployment", text),
            vec![
                "f.yaml:6:13: spec.replicas: expected an integer, found string \"three\"",
                "f.yaml:13:30: spec.template.spec.containers[0].ports[0].containerPort: expected an integer, found string \"http\"",
            ]
        );
    }

    #[test]
    fn string_maps_and_required_fields() {
        let e = errs(
            "ConfigMap",
            "kind: ConfigMap\nmetadata: {name: c}\ndata:\n  a: 1\n",
        );
        assert_eq!(
            e,
            vec!["f.yaml:4:6: data.a: expected a string, found integer (quote the value)"]
        );
        let e = errs(
            "Service",
            "kind: Service\nmetadata: {name: s}\nspec:\n  ports:\n    - name: http\n",
        );
        assert_eq!(
            e,
            vec!["f.yaml:5:7: spec.ports[0].port: missing required field"]
        );
        assert!(errs("Deployment", "spec:\n  selector: {}\n  template:\n    spec:\n      containers: []\n      nodeSelector: {a: b}\n").is_empty());
        assert!(errs("Widget", "spec: 5\n").is_empty());
    }
}
