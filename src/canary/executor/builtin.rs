//! The built-in metrics (`request-success-rate`, `request-duration`), measured by the
//! target's built-in provider for the current canary revision only: the requests its
//! pods served (or that found none of them ready) since its analysis started. The
//! release before it stays out of the window, however long the metric's interval.

use super::*;
use crate::canary::metrics::MetricQuery;

/// Which requests the built-in metrics count.
pub(super) struct Counted {
    /// The canary's template hash, as the target computes it.
    revision: String,
    /// The second the analysis started, rounded up: a request in that second may still
    /// have found the canary scaling up.
    since: u64,
}

impl Counted {
    /// What a step of the canary with `status` counts; `template_hash` is its target
    /// Deployment's.
    pub(super) fn new(status: &CanaryStatus, template_hash: &str) -> Counted {
        Counted {
            revision: template_hash.to_string(),
            since: status.analysis_start.ceil() as u64,
        }
    }

    /// A built-in metric's current value; `None` without requests or for a template.
    pub(super) async fn value(
        &self,
        provider: &dyn MetricsProvider,
        c: &CanarySpec,
        m: &spec::MetricSpec,
        now: f64,
    ) -> Option<f64> {
        if m.template.is_some() {
            return None;
        }
        let q = MetricQuery {
            namespace: &c.namespace,
            target: &c.target,
            metric: &m.name,
            revision: &self.revision,
            since: self.since,
            interval: m.interval,
            now,
            query: "",
        };
        provider.query(&q).await.unwrap_or_else(|e| {
            tracing::warn!(metric = %m.name, "{e}");
            None
        })
    }

    /// Whether every built-in metric has requests of the current revision to judge.
    pub(super) async fn has_traffic(
        &self,
        provider: &dyn MetricsProvider,
        c: &CanarySpec,
        now: f64,
    ) -> bool {
        for m in c.analysis.metrics.iter().filter(|m| m.template.is_none()) {
            if self.value(provider, c, m, now).await.is_none() {
                return false;
            }
        }
        true
    }
}
