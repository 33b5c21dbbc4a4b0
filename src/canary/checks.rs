//! Metric thresholds, judged by pure functions: a metric's value (from whichever
//! provider measured it) against its `thresholdRange`, worded as Flagger halts.

use super::spec::{CanarySpec, MetricSpec};

/// Go's short duration format for a latency in ms (`1.5s`, `250ms`).
pub fn go_duration(ms: f64) -> String {
    if ms >= 1000.0 {
        let s = format!("{:.3}", ms / 1000.0);
        format!("{}s", s.trim_end_matches('0').trim_end_matches('.'))
    } else {
        let s = format!("{ms:.3}");
        format!("{}ms", s.trim_end_matches('0').trim_end_matches('.'))
    }
}

/// The halt messages of a built-in metric (`request-success-rate` in percent,
/// `request-duration` as p99 in ms); `None` means no requests were seen, which
/// Flagger counts as a failed check. `provider` names the mesh in that message.
pub fn builtin(c: &CanarySpec, m: &MetricSpec, provider: &str, value: Option<f64>) -> Vec<String> {
    let Some(v) = value else {
        return vec![format!(
            "Halt advancement no values found for {provider} metric {} probably {} is not receiving traffic",
            m.name,
            c.target_id()
        )];
    };
    let id = c.id();
    let mut failures = Vec::new();
    match m.name.as_str() {
        "request-success-rate" => {
            if let Some(min) = m.min.filter(|min| v < *min) {
                failures.push(format!(
                    "Halt {id} advancement success rate {v:.2}% < {min}%"
                ));
            }
            if let Some(max) = m.max.filter(|max| v > *max) {
                failures.push(format!(
                    "Halt {id} advancement success rate {v:.2}% > {max}%"
                ));
            }
        }
        "request-duration" => {
            let p99 = go_duration(v);
            if let Some(max) = m.max.filter(|max| v > *max) {
                failures.push(format!(
                    "Halt {id} advancement request duration {p99} > {}",
                    go_duration(max)
                ));
            }
            if let Some(min) = m.min.filter(|min| v < *min) {
                failures.push(format!(
                    "Halt {id} advancement request duration {p99} < {}",
                    go_duration(min)
                ));
            }
        }
        _ => {}
    }
    failures
}

/// The halt message of a MetricTemplate check, if it failed: a query error, no
/// value (a failed check, as in Flagger), or a value outside the range.
pub fn template(
    c: &CanarySpec,
    m: &MetricSpec,
    value: Result<Option<f64>, String>,
) -> Option<String> {
    match value {
        Ok(None) => Some(format!(
            "Halt advancement no values found for custom metric: {}",
            m.name
        )),
        Err(e) => Some(format!("Metric query failed for {}: {e}", m.name)),
        Ok(Some(v)) => {
            if let Some(min) = m.min.filter(|min| v < *min) {
                Some(format!(
                    "Halt {} advancement {} {v:.2} < {min}",
                    c.id(),
                    m.name
                ))
            } else {
                m.max
                    .filter(|max| v > *max)
                    .map(|max| format!("Halt {} advancement {} {v:.2} > {max}", c.id(), m.name))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canary() -> CanarySpec {
        super::super::spec::parse(&json!({"apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                "service": {"port": 9898},
                "analysis": {"interval": "1m", "threshold": 5, "maxWeight": 50, "stepWeight": 10,
                    "metrics": [
                        {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"},
                        {"name": "request-duration", "thresholdRange": {"max": 500}, "interval": "1m"},
                        {"name": "errors", "thresholdRange": {"min": 1, "max": 10}, "interval": "1m",
                            "templateRef": {"name": "errors", "namespace": "test"}}]}}}))
        .unwrap()
    }

    #[test]
    fn built_in_metrics_halt_outside_their_range_in_flaggers_words() {
        let c = canary();
        let (rate, duration) = (&c.analysis.metrics[0], &c.analysis.metrics[1]);
        assert!(builtin(&c, rate, "gitcanary", Some(99.0)).is_empty());
        assert_eq!(
            builtin(&c, rate, "gitcanary", Some(98.5)),
            vec!["Halt podinfo.test advancement success rate 98.50% < 99%"]
        );
        assert!(builtin(&c, duration, "gitcanary", Some(500.0)).is_empty());
        assert_eq!(
            builtin(&c, duration, "gitcanary", Some(1500.0)),
            vec!["Halt podinfo.test advancement request duration 1.5s > 500ms"]
        );
        assert_eq!(
            builtin(&c, rate, "istio", None),
            vec!["Halt advancement no values found for istio metric request-success-rate probably podinfo.test is not receiving traffic"]
        );
    }

    #[test]
    fn template_metrics_halt_on_errors_no_values_and_either_bound() {
        let c = canary();
        let m = &c.analysis.metrics[2];
        assert_eq!(template(&c, m, Ok(Some(5.0))), None);
        assert_eq!(template(&c, m, Ok(Some(1.0))), None, "bounds are inclusive");
        assert_eq!(
            template(&c, m, Ok(Some(0.5))).unwrap(),
            "Halt podinfo.test advancement errors 0.50 < 1"
        );
        assert_eq!(
            template(&c, m, Ok(Some(12.0))).unwrap(),
            "Halt podinfo.test advancement errors 12.00 > 10"
        );
        assert_eq!(
            template(&c, m, Ok(None)).unwrap(),
            "Halt advancement no values found for custom metric: errors"
        );
        assert_eq!(
            template(&c, m, Err("prometheus unreachable".into())).unwrap(),
            "Metric query failed for errors: prometheus unreachable"
        );
    }

    #[test]
    fn durations_read_as_go_prints_them() {
        assert_eq!(go_duration(250.0), "250ms");
        assert_eq!(go_duration(1500.0), "1.5s");
        assert_eq!(go_duration(0.5), "0.5ms");
    }
}
