//! The built-in metrics (`request-success-rate`, `request-duration`) from the proxy's
//! in-process window, counted for the current canary revision only: the requests its pods
//! served (or that found none of them ready) since its analysis started. The release
//! before it stays out of the window, however long the metric's interval.

use super::*;
use crate::canary::state::MetricValue;
use crate::targets::local::proxy::stats::WindowFigures;
use crate::targets::local::runtime::spec::{pod_template_hash, template_hash};

/// Which requests the built-in metrics count.
pub(super) struct Counted {
    /// The canary pods' `pod-template-hash`.
    revision: String,
    /// The second the analysis started, rounded up: a request in that second may still
    /// have found the canary scaling up.
    since: u64,
}

impl Counted {
    /// What a step of the canary with `status` and target Deployment `target` counts.
    pub(super) fn new(status: &CanaryStatus, target: &Value) -> Counted {
        Counted {
            revision: pod_template_hash(&template_hash(&target["spec"]["template"])).to_string(),
            since: status.analysis_start.ceil() as u64,
        }
    }

    fn window(&self, c: &CanarySpec, m: &spec::MetricSpec, now: f64) -> Option<WindowFigures> {
        let scope = Scope {
            revision: Some(&self.revision),
            since: self.since,
            span: m.interval,
            now: now as u64 + 1,
        };
        global_stats().window(&c.namespace, &c.target, &scope)
    }

    /// Whether every built-in metric has requests of the current revision to judge.
    pub(super) fn has_traffic(&self, c: &CanarySpec, now: f64) -> bool {
        c.analysis
            .metrics
            .iter()
            .filter(|m| m.template.is_none())
            .all(|m| self.window(c, m, now).is_some())
    }

    /// A built-in metric's current value; `None` without requests or for a template.
    fn value(&self, c: &CanarySpec, m: &spec::MetricSpec, now: f64) -> Option<f64> {
        let w = self.window(c, m, now)?;
        match m.name.as_str() {
            "request-success-rate" => Some(w.success_rate),
            "request-duration" => Some(w.p99_ms),
            _ => None,
        }
    }

    /// Every metric's current value against its thresholds, kept in the status when a
    /// check ran (for `describe`); templates show no value.
    pub(super) fn values(&self, c: &CanarySpec, now: f64) -> Vec<MetricValue> {
        c.analysis
            .metrics
            .iter()
            .map(|m| MetricValue {
                name: m.name.clone(),
                value: self.value(c, m, now),
                min: m.min,
                max: m.max,
            })
            .collect()
    }

    /// The halt messages of one built-in metric check, in Flagger's words.
    pub(super) fn check(
        &self,
        c: &CanarySpec,
        m: &spec::MetricSpec,
        provider: &str,
        now: f64,
    ) -> Vec<String> {
        let Some(w) = self.window(c, m, now) else {
            // Flagger counts an empty metric result as a failed check.
            return vec![format!("Halt advancement no values found for {provider} metric {} probably {} is not receiving traffic", m.name, c.target_id())];
        };
        let id = c.id();
        let mut failures = Vec::new();
        match m.name.as_str() {
            "request-success-rate" => {
                let rate = w.success_rate;
                if let Some(min) = m.min.filter(|min| rate < *min) {
                    failures.push(format!(
                        "Halt {id} advancement success rate {rate:.2}% < {min}%"
                    ));
                }
                if let Some(max) = m.max.filter(|max| rate > *max) {
                    failures.push(format!(
                        "Halt {id} advancement success rate {rate:.2}% > {max}%"
                    ));
                }
            }
            "request-duration" => {
                let p99 = go_duration(w.p99_ms);
                if let Some(max) = m.max.filter(|max| w.p99_ms > *max) {
                    failures.push(format!(
                        "Halt {id} advancement request duration {p99} > {}",
                        go_duration(max)
                    ));
                }
                if let Some(min) = m.min.filter(|min| w.p99_ms < *min) {
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
}

/// Go's short duration format for a latency in ms (`1.5s`, `250ms`).
fn go_duration(ms: f64) -> String {
    if ms >= 1000.0 {
        let s = format!("{:.3}", ms / 1000.0);
        format!("{}s", s.trim_end_matches('0').trim_end_matches('.'))
    } else {
        let s = format!("{ms:.3}");
        format!("{}ms", s.trim_end_matches('0').trim_end_matches('.'))
    }
}
