//! The Canary spec, read from `flagger.app/v1beta1` (`spec.analysis`) and `v1alpha3`
//! (`spec.canaryAnalysis`, where a metric's `threshold` is a minimum for
//! request-success-rate and a maximum for everything else), and validated by Flagger's
//! rules. gitcanary allows any analysis interval of at least 1s; Flagger raises anything
//! below 10s to 10s.

use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// A metric check.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricSpec {
    /// `request-success-rate`, `request-duration`, or a template-backed name.
    pub name: String,
    /// Query window (defaults to the analysis interval).
    pub interval: Duration,
    /// Lower bound.
    pub min: Option<f64>,
    /// Upper bound.
    pub max: Option<f64>,
    /// MetricTemplate (name, namespace).
    pub template: Option<(String, String)>,
    /// `templateVariables`.
    pub variables: BTreeMap<String, String>,
}

/// Webhook types, with Flagger's semantics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookType {
    /// Gate before a new revision starts.
    ConfirmRollout,
    /// Once, before the first traffic step.
    PreRollout,
    /// Every interval, as a check (the default type).
    Rollout,
    /// Gate before each weight increase.
    ConfirmTrafficIncrease,
    /// Gate before promotion.
    ConfirmPromotion,
    /// After promotion or rollback.
    PostRollout,
    /// 2xx means roll back now.
    Rollback,
    /// Receives every event.
    Event,
}

const HOOK_TYPES: [(&str, HookType); 8] = [
    ("rollout", HookType::Rollout),
    ("confirm-rollout", HookType::ConfirmRollout),
    ("pre-rollout", HookType::PreRollout),
    ("confirm-traffic-increase", HookType::ConfirmTrafficIncrease),
    ("confirm-promotion", HookType::ConfirmPromotion),
    ("post-rollout", HookType::PostRollout),
    ("rollback", HookType::Rollback),
    ("event", HookType::Event),
];

impl HookType {
    fn parse(s: &str) -> Option<HookType> {
        if s.is_empty() {
            return Some(HookType::Rollout);
        }
        HOOK_TYPES.iter().find(|(n, _)| *n == s).map(|(_, t)| *t)
    }

    /// The type as a Canary spells it.
    pub fn as_str(self) -> &'static str {
        HOOK_TYPES
            .iter()
            .find(|(_, t)| *t == self)
            .map_or("rollout", |(n, _)| n)
    }
}

/// A webhook.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookSpec {
    /// Name.
    pub name: String,
    /// Type.
    pub kind: HookType,
    /// URL.
    pub url: String,
    /// Timeout (default 10s).
    pub timeout: Duration,
    /// Retries.
    pub retries: u32,
    /// `metadata`, sent in the payload.
    pub metadata: BTreeMap<String, String>,
}

/// `spec.analysis` / `spec.canaryAnalysis`.
#[derive(Clone, Debug, PartialEq)]
pub struct Analysis {
    /// Step interval.
    pub interval: Duration,
    /// Failed checks before rollback.
    pub threshold: u32,
    /// Highest canary weight (default 100).
    pub max_weight: u32,
    /// Weight step.
    pub step_weight: u32,
    /// Explicit weight steps.
    pub step_weights: Vec<u32>,
    /// Primary weight step during promotion (0: all at once).
    pub step_weight_promotion: u32,
    /// Blue/green (or A/B with `match`) iterations.
    pub iterations: u32,
    /// Flagger `match` rules, as written.
    pub match_rules: Value,
    /// Mirror traffic to the canary.
    pub mirror: bool,
    /// Percent mirrored.
    pub mirror_weight: Option<u32>,
    /// `sessionAffinity`: (cookie name, max age in seconds); a user sent to the canary
    /// once stays there for the analysis.
    pub session_affinity: Option<(String, u64)>,
    /// Percent of primary replicas that must be ready (default 100).
    pub primary_ready_threshold: u32,
    /// Percent of canary replicas that must be ready (default 100).
    pub canary_ready_threshold: u32,
    /// Metric checks.
    pub metrics: Vec<MetricSpec>,
    /// Webhooks.
    pub webhooks: Vec<WebhookSpec>,
    /// Alert provider references (name, namespace, severity).
    pub alerts: Vec<(String, String, String)>,
}

/// A Canary.
#[derive(Clone, Debug, PartialEq)]
pub struct CanarySpec {
    /// Canary name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// The target Deployment.
    pub target: String,
    /// `autoscalerRef.name`.
    pub autoscaler: Option<String>,
    /// Apex service name (default: the target's name).
    pub service: String,
    /// Service port.
    pub port: u16,
    /// Service target port, as written (number or name).
    pub target_port: Value,
    /// `progressDeadlineSeconds` (default 600).
    pub progress_deadline: Duration,
    /// Promote without analysis.
    pub skip_analysis: bool,
    /// `revertOnDeletion`: when the Canary is removed, move traffic back to the target.
    pub revert_on_deletion: bool,
    /// Do nothing while set.
    pub suspend: bool,
    /// `provider`.
    pub provider: Option<String>,
    /// The analysis.
    pub analysis: Analysis,
}

impl CanarySpec {
    /// `name.namespace`, as Flagger's messages print a canary.
    pub fn id(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }

    /// `Canary/namespace/name`: the owner of the objects the canary generates.
    pub fn owner(&self) -> String {
        format!("Canary/{}/{}", self.namespace, self.name)
    }

    /// `target.namespace`.
    pub fn target_id(&self) -> String {
        format!("{}.{}", self.target, self.namespace)
    }

    /// Whether the analysis has a webhook of this type.
    pub fn has_hook(&self, kind: HookType) -> bool {
        self.analysis.webhooks.iter().any(|w| w.kind == kind)
    }
}

fn dur(v: &Value, field: &str, errors: &mut Vec<String>) -> Option<Duration> {
    let s = v.as_str()?;
    match crate::util::duration::parse(s) {
        Ok(d) => Some(d),
        Err(e) => {
            errors.push(format!("{field}: {e}"));
            None
        }
    }
}

/// An optional integer field that must lie in `lo..=hi`; out of range or not a whole
/// number is an error naming the field.
fn int_in(v: &Value, field: &str, lo: u32, hi: u32, errors: &mut Vec<String>) -> Option<u32> {
    if v.is_null() {
        return None;
    }
    match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
        Some(n) if (lo..=hi).contains(&n) => Some(n),
        _ if hi == u32::MAX => {
            errors.push(format!(
                "{field}: must be a whole number of at least {lo}, found {v}"
            ));
            None
        }
        _ => {
            errors.push(format!("{field}: must be between {lo} and {hi}, found {v}"));
            None
        }
    }
}

/// `stepWeights`: each a percentage in 1..=100, strictly ascending, since the engine
/// walks them in order and routes `100 - weight` to the primary.
fn step_weights(v: &Value, field: &str, errors: &mut Vec<String>) -> Vec<u32> {
    let mut out: Vec<u32> = Vec::new();
    for (i, w) in v.as_array().into_iter().flatten().enumerate() {
        let Some(w) = int_in(w, &format!("{field}[{i}]"), 1, 100, errors) else {
            continue;
        };
        if let Some(prev) = out.last().filter(|prev| w <= **prev) {
            errors.push(format!(
                "{field}[{i}]: must be greater than the step before it ({prev}), found {w}"
            ));
            continue;
        }
        out.push(w);
    }
    out
}

/// What the analysis asks of its router that `spec.provider` does not support
/// (Flagger's feature tables), as `field: message` errors; an unknown provider is not
/// checked.
fn provider_errors(spec: &Value, a: &Value, path: &str) -> Vec<String> {
    let provider = spec["provider"].as_str();
    let Some(caps) = super::router::provider_capabilities(provider) else {
        return Vec::new();
    };
    let weighted =
        !a["stepWeight"].is_null() || a["stepWeights"].as_array().is_some_and(|s| !s.is_empty());
    let matches = a["match"].as_array().is_some_and(|m| !m.is_empty());
    let mirror = a["mirror"].as_bool().unwrap_or(false);
    let affinity = a["sessionAffinity"].is_object();
    super::router::unsupported(&caps, weighted, matches, mirror, affinity)
        .into_iter()
        .map(|(field, feature)| {
            let field = field.replacen("spec.analysis", path, 1);
            format!(
                "{field}: provider {} does not support {feature}",
                provider.unwrap_or("gitcanary")
            )
        })
        .collect()
}

/// Reads and validates a Canary object; errors name the field.
pub fn parse(obj: &Value) -> Result<CanarySpec, Vec<String>> {
    let mut errors = Vec::new();
    let api = obj["apiVersion"].as_str().unwrap_or_default();
    let v1alpha3 = api.ends_with("/v1alpha3");
    let spec = &obj["spec"];
    let (a, path) =
        if v1alpha3 || (spec.get("analysis").is_none() && spec.get("canaryAnalysis").is_some()) {
            (&spec["canaryAnalysis"], "spec.canaryAnalysis")
        } else {
            (&spec["analysis"], "spec.analysis")
        };
    if !a.is_object() {
        errors.push(format!("{path}: missing required field"));
    }
    let interval = dur(&a["interval"], &format!("{path}.interval"), &mut errors);
    if a["interval"].is_null() && a.is_object() {
        errors.push(format!("{path}.interval: missing required field"));
    }
    if interval.is_some_and(|i| i < Duration::from_secs(1)) {
        errors.push(format!("{path}.interval: must be at least 1s"));
    }
    if a["threshold"].is_null() && a.is_object() {
        errors.push(format!("{path}.threshold: missing required field"));
    }
    let mut int = |key: &str, lo: u32, hi: u32| {
        int_in(&a[key], &format!("{path}.{key}"), lo, hi, &mut errors)
    };
    // Flagger reads a threshold of 0 as 1 (`GetAnalysisThreshold`); taken literally it
    // would roll back before the first check.
    let threshold = int("threshold", 0, u32::MAX).map(|t| t.max(1));
    let max_weight = int("maxWeight", 1, 100);
    let step_weight = int("stepWeight", 1, 100);
    let step_weight_promotion = int("stepWeightPromotion", 0, 100);
    let iterations = int("iterations", 0, u32::MAX);
    let mirror_weight = int("mirrorWeight", 0, 100);
    let primary_ready_threshold = int("primaryReadyThreshold", 0, 100);
    let canary_ready_threshold = int("canaryReadyThreshold", 0, 100);
    let step_weights = step_weights(
        &a["stepWeights"],
        &format!("{path}.stepWeights"),
        &mut errors,
    );
    if a.is_object()
        && a["iterations"].is_null()
        && a["stepWeight"].is_null()
        && a["stepWeights"].as_array().is_none_or(|s| s.is_empty())
    {
        errors.push(format!(
            "{path}: set one of iterations, stepWeight or stepWeights"
        ));
    }
    if let Err(e) = super::matches::parse_matches(&a["match"]) {
        errors.push(format!("{path}.{e}"));
    }
    errors.extend(provider_errors(spec, a, path));
    let metric_interval = interval.unwrap_or(Duration::from_secs(60));
    let default_ns = obj["metadata"]["namespace"].as_str().unwrap_or("default");
    let metrics = metrics(a, path, metric_interval, default_ns, &mut errors);
    let webhooks = webhooks(a, path, &mut errors);
    let ns = obj["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    let alerts = a["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|al| {
            let r = &al["providerRef"];
            (
                r["name"].as_str().unwrap_or_default().to_string(),
                r["namespace"].as_str().unwrap_or(&ns).to_string(),
                al["severity"].as_str().unwrap_or("info").to_string(),
            )
        })
        .collect();
    let target = spec["targetRef"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if target.is_empty() {
        errors.push("spec.targetRef.name: missing required field".into());
    }
    if let Some(k) = spec["targetRef"]["kind"]
        .as_str()
        .filter(|k| *k != "Deployment")
    {
        errors.push(format!(
            "spec.targetRef.kind: {k:?} is not supported on the local target (use Deployment)"
        ));
    }
    let port = spec["service"]["port"].as_u64();
    if port.is_none() {
        errors.push("spec.service.port: missing required field".into());
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(CanarySpec {
        name: obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        namespace: ns,
        service: spec["service"]["name"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| target.clone()),
        target,
        autoscaler: spec["autoscalerRef"]["name"].as_str().map(str::to_string),
        port: port.unwrap_or(80) as u16,
        target_port: spec["service"]
            .get("targetPort")
            .cloned()
            .unwrap_or(spec["service"]["port"].clone()),
        progress_deadline: Duration::from_secs(
            spec["progressDeadlineSeconds"].as_u64().unwrap_or(600),
        ),
        skip_analysis: spec["skipAnalysis"].as_bool().unwrap_or(false),
        revert_on_deletion: spec["revertOnDeletion"].as_bool().unwrap_or(false),
        suspend: spec["suspend"].as_bool().unwrap_or(false),
        provider: spec["provider"].as_str().map(str::to_string),
        analysis: Analysis {
            interval: interval.unwrap_or(Duration::from_secs(60)),
            threshold: threshold.unwrap_or(1),
            max_weight: max_weight.unwrap_or(100),
            step_weight: step_weight.unwrap_or(0),
            step_weights,
            step_weight_promotion: step_weight_promotion.unwrap_or(0),
            iterations: iterations.unwrap_or(0),
            match_rules: a["match"].clone(),
            mirror: a["mirror"].as_bool().unwrap_or(false),
            mirror_weight,
            session_affinity: a["sessionAffinity"].is_object().then(|| {
                (
                    a["sessionAffinity"]["cookieName"]
                        .as_str()
                        .unwrap_or("flagger-cookie")
                        .to_string(),
                    a["sessionAffinity"]["maxAge"].as_u64().unwrap_or(86_400),
                )
            }),
            primary_ready_threshold: primary_ready_threshold.unwrap_or(100),
            canary_ready_threshold: canary_ready_threshold.unwrap_or(100),
            metrics,
            webhooks,
            alerts,
        },
    })
}

/// The analysis's metrics; a metric's interval defaults to the analysis's, and a
/// template's namespace to the Canary's.
fn metrics(
    a: &Value,
    path: &str,
    metric_interval: Duration,
    default_ns: &str,
    errors: &mut Vec<String>,
) -> Vec<MetricSpec> {
    let mut metrics = Vec::new();
    for (i, m) in a["metrics"].as_array().into_iter().flatten().enumerate() {
        let name = m["name"].as_str().unwrap_or_default().to_string();
        let mut min = m["thresholdRange"]["min"].as_f64();
        let mut max = m["thresholdRange"]["max"].as_f64();
        if let Some(t) = m["threshold"].as_f64() {
            // v1alpha3 (and v1beta1 without thresholdRange): a minimum for the success
            // rate, a maximum for everything else.
            if min.is_none() && max.is_none() {
                if name == "request-success-rate" {
                    min = Some(t)
                } else {
                    max = Some(t)
                }
            }
        }
        let template = m["templateRef"]["name"].as_str().map(|n| {
            (
                n.to_string(),
                m["templateRef"]["namespace"]
                    .as_str()
                    .unwrap_or(default_ns)
                    .to_string(),
            )
        });
        if template.is_none() && name != "request-success-rate" && name != "request-duration" {
            errors.push(format!(
                "{path}.metrics[{i}]: {name:?} is not a built-in metric; set templateRef"
            ));
        }
        if let Some((lo, hi)) = min.zip(max).filter(|(lo, hi)| lo > hi) {
            errors.push(format!(
                "{path}.metrics[{i}].thresholdRange: min {lo} is above max {hi}; no value can pass"
            ));
        }
        let field = format!("{path}.metrics[{i}].interval");
        let interval = dur(&m["interval"], &field, errors);
        if interval.is_some_and(|i| i < Duration::from_secs(1)) {
            errors.push(format!("{field}: must be at least 1s"));
        }
        metrics.push(MetricSpec {
            interval: interval.unwrap_or(metric_interval),
            name,
            min,
            max,
            template,
            variables: crate::manifest::object::string_map(&m["templateVariables"]),
        });
    }
    metrics
}

/// The analysis's webhooks; a timeout defaults to 10 s.
fn webhooks(a: &Value, path: &str, errors: &mut Vec<String>) -> Vec<WebhookSpec> {
    let mut webhooks = Vec::new();
    for (i, w) in a["webhooks"].as_array().into_iter().flatten().enumerate() {
        let ty = w["type"].as_str().unwrap_or_default();
        let Some(kind) = HookType::parse(ty) else {
            errors.push(format!(
                "{path}.webhooks[{i}].type: unknown webhook type {ty:?}"
            ));
            continue;
        };
        webhooks.push(WebhookSpec {
            name: w["name"].as_str().unwrap_or_default().to_string(),
            kind,
            url: w["url"].as_str().unwrap_or_default().to_string(),
            timeout: dur(
                &w["timeout"],
                &format!("{path}.webhooks[{i}].timeout"),
                errors,
            )
            .unwrap_or(Duration::from_secs(10)),
            retries: w["retries"].as_u64().unwrap_or(0) as u32,
            metadata: crate::manifest::object::string_map(&w["metadata"]),
        });
    }
    webhooks
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn v1beta1_and_v1alpha3_read_the_same() {
        let beta = json!({"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {"targetRef": {"kind": "Deployment", "name": "podinfo"}, "service": {"port": 9898},
                "analysis": {"interval": "10s", "threshold": 5, "maxWeight": 50, "stepWeight": 10,
                    "metrics": [{"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"},
                                {"name": "request-duration", "thresholdRange": {"max": 500}, "interval": "30s"}]}}});
        let alpha = json!({"apiVersion": "flagger.app/v1alpha3", "kind": "Canary", "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {"targetRef": {"kind": "Deployment", "name": "podinfo"}, "service": {"port": 9898},
                "canaryAnalysis": {"interval": "10s", "threshold": 5, "maxWeight": 50, "stepWeight": 10,
                    "metrics": [{"name": "request-success-rate", "threshold": 99, "interval": "1m"},
                                {"name": "request-duration", "threshold": 500, "interval": "30s"}]}}});
        assert_eq!(parse(&beta).unwrap(), parse(&alpha).unwrap());
        let s = parse(&beta).unwrap();
        assert_eq!(
            (s.analysis.metrics[0].min, s.analysis.metrics[1].max),
            (Some(99.0), Some(500.0))
        );
        assert_eq!(s.progress_deadline, Duration::from_secs(600));
        assert_eq!(s.id(), "podinfo.test");
    }

    #[test]
    fn flagger_validation_rules() {
        let errs = parse(&json!({"metadata": {"name": "x"}, "spec": {"targetRef": {"name": "x"}, "service": {"port": 80}, "analysis": {"interval": "500ms"}}})).unwrap_err();
        assert_eq!(
            errs,
            vec![
                "spec.analysis.interval: must be at least 1s",
                "spec.analysis.threshold: missing required field",
                "spec.analysis: set one of iterations, stepWeight or stepWeights",
            ]
        );
    }

    fn analysis(a: Value) -> Result<CanarySpec, Vec<String>> {
        parse(
            &json!({"metadata": {"name": "x"}, "spec": {"targetRef": {"name": "x"}, "service": {"port": 80},
            "analysis": a}}),
        )
    }

    fn with_provider(provider: &str, a: Value) -> Result<CanarySpec, Vec<String>> {
        parse(
            &json!({"metadata": {"name": "x"}, "spec": {"provider": provider, "targetRef": {"name": "x"},
            "service": {"port": 80}, "analysis": a}}),
        )
    }

    #[test]
    fn a_canary_asking_more_than_its_provider_supports_is_refused() {
        let ab = json!({"interval": "1m", "threshold": 5, "iterations": 10,
            "match": [{"headers": {"x-canary": {"exact": "insider"}}}]});
        assert_eq!(
            with_provider("linkerd", ab.clone()).unwrap_err(),
            vec!["spec.analysis.match: provider linkerd does not support header and cookie matching (A/B testing)"]
        );
        assert!(with_provider("nginx", ab.clone()).is_ok());
        assert!(with_provider("istio", ab).is_ok());
        let mirrored = json!({"interval": "1m", "threshold": 5, "iterations": 10, "mirror": true});
        assert_eq!(
            with_provider("nginx", mirrored.clone()).unwrap_err(),
            vec!["spec.analysis.mirror: provider nginx does not support traffic mirroring"]
        );
        assert!(with_provider("gitcanary", mirrored).is_ok());
        let weighted = json!({"interval": "1m", "threshold": 5, "stepWeight": 10});
        assert_eq!(
            with_provider("kubernetes", weighted.clone()).unwrap_err(),
            vec!["spec.analysis.stepWeight: provider kubernetes does not support weighted traffic"]
        );
        // An unknown provider is not judged.
        assert!(with_provider("haproxy", weighted).is_ok());
    }

    #[test]
    fn weights_must_be_percentages_and_steps_ascending() {
        let errs = analysis(
            json!({"interval": "1s", "threshold": 1, "maxWeight": 150, "stepWeight": 0,
            "stepWeights": [10, 5, 20, 20, 101], "stepWeightPromotion": -1}),
        )
        .unwrap_err();
        assert_eq!(
            errs,
            vec![
                "spec.analysis.maxWeight: must be between 1 and 100, found 150",
                "spec.analysis.stepWeight: must be between 1 and 100, found 0",
                "spec.analysis.stepWeightPromotion: must be between 0 and 100, found -1",
                "spec.analysis.stepWeights[1]: must be greater than the step before it (10), found 5",
                "spec.analysis.stepWeights[3]: must be greater than the step before it (20), found 20",
                "spec.analysis.stepWeights[4]: must be between 1 and 100, found 101",
            ]
        );
        let ok = analysis(json!({"interval": "1s", "threshold": 1, "stepWeights": [1, 50, 100]}))
            .unwrap();
        assert_eq!(ok.analysis.step_weights, vec![1, 50, 100]);
        assert_eq!(super::super::decide::next_weight(&ok, 50), 100);
    }

    #[test]
    fn a_match_regex_must_compile() {
        let errs = analysis(json!({"interval": "1s", "threshold": 1, "iterations": 5,
            "match": [{"headers": {"x-canary": {"exact": "a"}}}, {"headers": {"cookie": {"regex": "^(canary"}}}]}))
        .unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("spec.analysis.match[1].headers.cookie.regex: "),
            "{errs:?}"
        );
    }

    #[test]
    fn threshold_zero_reads_as_one_and_metric_windows_are_checked() {
        let s = analysis(json!({"interval": "1s", "threshold": 0, "stepWeight": 10})).unwrap();
        assert_eq!(s.analysis.threshold, 1);
        let errs = analysis(json!({"interval": "1s", "threshold": -2, "stepWeight": 10,
            "metrics": [{"name": "request-success-rate", "interval": "0s", "thresholdRange": {"min": 99, "max": 90}}]}))
        .unwrap_err();
        assert_eq!(
            errs,
            vec![
                "spec.analysis.threshold: must be a whole number of at least 0, found -2",
                "spec.analysis.metrics[0].thresholdRange: min 99 is above max 90; no value can pass",
                "spec.analysis.metrics[0].interval: must be at least 1s",
            ]
        );
    }
}
