//! A finished analysis as the rollout record Git keeps (`history::note::Rollout`),
//! built from what the engine already has: the status before and after the last
//! step, the analysis's samples, the webhook results and images seen while it ran.
//! Pure: the executor gathers the inputs and hands the record to an
//! [`crate::history::OutcomeSink`]; nothing here touches Git.

use super::samples::Analysis;
use super::spec::CanarySpec;
use super::state::{CanaryStatus, Phase, Severity};
use crate::history::note::{
    first_line, ImageChange, MetricSummary, NoteEvent, Outcome, Rollout, Sample, WebhookResult,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What the engine saw of one analysis while it ran; kept across restarts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tracked {
    /// The revision analysed.
    pub revision: String,
    /// `(container, image)` of the primary when the analysis began, if seen before
    /// promotion.
    pub from_images: Vec<(String, String)>,
    /// The webhooks called.
    pub webhooks: Vec<WebhookResult>,
}

impl Tracked {
    /// Counts one webhook call; `failure` is the error or body of a failed one.
    pub fn webhook(&mut self, name: &str, kind: &str, failure: Option<&str>) {
        let i = match self
            .webhooks
            .iter()
            .position(|w| w.name == name && w.kind == kind)
        {
            Some(i) => i,
            None => {
                self.webhooks.push(WebhookResult {
                    name: name.into(),
                    kind: kind.into(),
                    ..Default::default()
                });
                self.webhooks.len() - 1
            }
        };
        let w = &mut self.webhooks[i];
        w.calls += 1;
        match failure {
            Some(f) => {
                w.failures += 1;
                w.status = "failed".into();
                w.message = first_line(f);
            }
            None => w.status = "ok".into(),
        }
    }
}

/// How the step from `before` to `after` ended an analysis, if it did: promotion
/// after finalising (or a skipped analysis), or a rollback.
pub fn finished(c: &CanarySpec, before: &CanaryStatus, after: &CanaryStatus) -> Option<Outcome> {
    if before.phase == after.phase {
        return None;
    }
    match after.phase {
        Phase::Succeeded if before.phase == Phase::Finalising || c.skip_analysis => {
            Some(Outcome::Succeeded)
        }
        Phase::Failed => Some(Outcome::Failed),
        _ => None,
    }
}

/// The containers' images of a Deployment, `(name, image)`.
pub fn images(deployment: &Value) -> Vec<(String, String)> {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
                    (s("name"), s("image"))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn tag(image: &str) -> String {
    let (_, tag, digest) = crate::manifest::kustomize::split_image(image);
    tag.or(digest).unwrap_or("latest").to_string()
}

/// Everything a finished analysis leaves in its note.
pub struct Finished<'a> {
    /// The canary.
    pub spec: &'a CanarySpec,
    /// The status before the last step.
    pub before: &'a CanaryStatus,
    /// The status after it.
    pub after: &'a CanaryStatus,
    /// How it ended.
    pub outcome: Outcome,
    /// The analysis's samples, if recorded.
    pub analysis: Option<&'a Analysis>,
    /// What the engine saw while it ran.
    pub tracked: &'a Tracked,
    /// The target's images now (`(container, image)`).
    pub to_images: Vec<(String, String)>,
    /// When it ended.
    pub now: f64,
}

/// The rollout record of a finished analysis.
pub fn rollout(f: &Finished) -> Rollout {
    let start = analysis_start(f.after, f.before);
    let events: Vec<NoteEvent> = f
        .after
        .events
        .iter()
        .filter(|e| e.at >= start)
        .map(|e| NoteEvent {
            time: e.at,
            severity: match e.severity {
                Severity::Info => "info",
                Severity::Warn => "warn",
                Severity::Error => "error",
            }
            .into(),
            message: e.message.clone(),
        })
        .collect();
    let reason = match f.outcome {
        Outcome::Succeeded => Phase::Succeeded.message().to_string(),
        // Flagger's rollback event says why ("Rolling back podinfo.test failed checks
        // threshold reached 5"); a halt or a gate says it in the last warning.
        Outcome::Failed => events
            .iter()
            .rev()
            .find(|e| e.message.starts_with("Rolling back"))
            .or_else(|| {
                events
                    .iter()
                    .rev()
                    .find(|e| e.severity != "info" && !e.message.starts_with("Canary failed!"))
            })
            .map(|e| e.message.clone())
            .unwrap_or_else(|| Phase::Failed.message().to_string()),
    };
    let images: Vec<ImageChange> = f
        .to_images
        .iter()
        .filter_map(|(name, to)| {
            let (_, from) = f.tracked.from_images.iter().find(|(n, _)| n == name)?;
            (from != to).then(|| ImageChange {
                container: name.clone(),
                from: from.clone(),
                to: to.clone(),
            })
        })
        .collect();
    let short = |r: &str| r.get(..12).unwrap_or(r).to_string();
    let (from_revision, to_revision) = (
        f.before.last_promoted_spec.clone(),
        f.tracked.revision.clone(),
    );
    let (from, to) = match images.as_slice() {
        [] => (short(&from_revision), short(&to_revision)),
        [one] => (tag(&one.from), tag(&one.to)),
        many => {
            let list = |side: fn(&ImageChange) -> &String| {
                many.iter()
                    .map(|i| format!("{}={}", i.container, tag(side(i))))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            (list(|i| &i.from), list(|i| &i.to))
        }
    };
    let mut samples: Vec<Sample> = f
        .analysis
        .map(|a| {
            a.metrics
                .iter()
                .flat_map(|s| {
                    s.points
                        .iter()
                        .map(|(t, v)| Sample::new(*t, &s.name, *v, s.min, s.max))
                })
                .collect()
        })
        .unwrap_or_default();
    samples.sort_by(|a, b| a.time.total_cmp(&b.time).then(a.metric.cmp(&b.metric)));
    let metric_summary = f
        .analysis
        .map(|a| {
            a.metrics
                .iter()
                .map(|s| MetricSummary {
                    metric: s.name.clone(),
                    checks: s.checks(),
                })
                .collect()
        })
        .unwrap_or_default();
    let weights = f.analysis.map(|a| a.weights.clone()).unwrap_or_default();
    let max_weight = weights
        .iter()
        .map(|w| w.1)
        .chain([f.before.canary_weight])
        .max()
        .unwrap_or(0);
    Rollout {
        canary: format!("{}/{}", f.spec.namespace, f.spec.name),
        outcome: Some(f.outcome),
        reason,
        from,
        to,
        images,
        from_revision,
        to_revision,
        max_weight,
        failed_checks: f.before.failed_checks.max(f.after.failed_checks),
        start,
        end: f.now,
        samples,
        metric_summary,
        weights,
        webhooks: f.tracked.webhooks.clone(),
        events,
        extra: Default::default(),
    }
}

/// When the analysis began: when traffic to the revision began, else its "New
/// revision detected!" event.
fn analysis_start(after: &CanaryStatus, before: &CanaryStatus) -> f64 {
    let detected = after
        .events
        .iter()
        .rev()
        .find(|e| e.message.starts_with("New revision detected!"))
        .map(|e| e.at);
    match (detected, before.analysis_start) {
        (Some(d), a) if a > 0.0 => d.min(a),
        (Some(d), _) => d,
        (None, a) if a > 0.0 => a,
        _ => before.last_transition_time,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canary::samples::Series;
    use crate::canary::state::Event;
    use serde_json::json;

    fn spec() -> CanarySpec {
        let obj = json!({
            "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                     "service": {"port": 9898},
                     "analysis": {"interval": "1m", "threshold": 2, "maxWeight": 50, "stepWeight": 10}}
        });
        crate::canary::spec::parse(&obj).unwrap()
    }

    fn event(at: f64, severity: Severity, message: &str) -> Event {
        Event {
            at,
            severity,
            message: message.into(),
        }
    }

    #[test]
    fn a_rollback_records_why_every_sample_and_the_image_tags() {
        let c = spec();
        let before = CanaryStatus {
            phase: Phase::Progressing,
            canary_weight: 20,
            failed_checks: 2,
            analysis_start: 100.0,
            last_promoted_spec: "a".repeat(64),
            events: vec![event(10.0, Severity::Info, "old analysis")],
            ..Default::default()
        };
        let mut after = before.clone();
        after.phase = Phase::Failed;
        after.canary_weight = 0;
        after.events.extend([
            event(99.0, Severity::Info, "New revision detected! Scaling up podinfo.test"),
            event(160.0, Severity::Warn, "Halt advancement no values found for gitcanary metric request-success-rate probably podinfo.test is not receiving traffic"),
            event(220.0, Severity::Warn, "Rolling back podinfo.test failed checks threshold reached 2"),
            event(220.0, Severity::Warn, "Canary failed! Scaling down podinfo.test"),
        ]);
        assert_eq!(finished(&c, &before, &after), Some(Outcome::Failed));
        assert_eq!(finished(&c, &after, &after), None);
        let analysis = Analysis {
            revision: "b".repeat(64),
            start: 100.0,
            weights: vec![(100.0, 10), (160.0, 20)],
            metrics: vec![Series {
                name: "request-success-rate".into(),
                unit: "%".into(),
                min: Some(99.0),
                max: None,
                points: vec![(160.0, None), (220.0, Some(90.0)), (100.0, Some(100.0))],
                failed: vec![160.0, 220.0],
                summary: Default::default(),
            }],
        };
        let mut tracked = Tracked {
            revision: "b".repeat(64),
            from_images: vec![(
                "podinfo".into(),
                "ghcr.io/stefanprodan/podinfo:6.0.0".into(),
            )],
            ..Default::default()
        };
        tracked.webhook("load-test", "rollout", None);
        tracked.webhook("load-test", "rollout", Some("\nconnection refused\nmore"));
        let r = rollout(&Finished {
            spec: &c,
            before: &before,
            after: &after,
            outcome: Outcome::Failed,
            analysis: Some(&analysis),
            tracked: &tracked,
            to_images: vec![(
                "podinfo".into(),
                "ghcr.io/stefanprodan/podinfo:6.0.1".into(),
            )],
            now: 221.0,
        });
        assert_eq!(r.canary, "test/podinfo");
        assert_eq!((r.from.as_str(), r.to.as_str()), ("6.0.0", "6.0.1"));
        assert_eq!(
            r.reason,
            "Rolling back podinfo.test failed checks threshold reached 2"
        );
        assert_eq!(
            (r.start, r.end, r.max_weight, r.failed_checks),
            (99.0, 221.0, 20, 2)
        );
        let checks: Vec<(f64, Option<f64>, bool)> = r
            .samples
            .iter()
            .map(|s| (s.time, s.value, s.pass))
            .collect();
        assert_eq!(
            checks,
            vec![
                (100.0, Some(100.0), true),
                (160.0, None, false),
                (220.0, Some(90.0), false)
            ]
        );
        assert_eq!(r.events.len(), 4, "only this analysis's events");
        assert_eq!(r.webhooks[0].calls, 2);
        assert_eq!(r.webhooks[0].status, "failed");
        assert_eq!(r.webhooks[0].message, "connection refused");
    }

    #[test]
    fn a_note_keeps_the_newest_points_and_counts_every_check() {
        use crate::canary::samples::{advance, Samples, MAX_POINTS};
        use crate::canary::state::MetricValue;
        let c = spec();
        let mut samples = Samples::default();
        let mut before = CanaryStatus {
            phase: Phase::Initialized,
            ..Default::default()
        };
        for i in 0..300 {
            let t = 1_000.0 + i as f64;
            let value = (i != 7).then_some(90.0 + (i % 11) as f64);
            let after = CanaryStatus {
                phase: Phase::Progressing,
                canary_weight: 10,
                analysis_start: 1_000.0,
                last_step_time: t,
                last_applied_spec: "rev".into(),
                last_metrics: vec![MetricValue {
                    name: "request-success-rate".into(),
                    value,
                    min: Some(99.0),
                    max: None,
                    failed: !Sample::passes(value, Some(99.0), None),
                }],
                ..Default::default()
            };
            advance(&mut samples, &before, &after, t);
            before = after;
        }
        let mut after = before.clone();
        after.phase = Phase::Failed;
        let r = rollout(&Finished {
            spec: &c,
            before: &before,
            after: &after,
            outcome: Outcome::Failed,
            analysis: samples.current.as_ref(),
            tracked: &Tracked::default(),
            to_images: Vec::new(),
            now: 1_300.0,
        });
        assert_eq!(r.samples.len(), MAX_POINTS, "the stored points stay capped");
        assert_eq!(r.samples[0].time, 1_060.0, "the newest kept");
        let s = &r.metric_summary[0];
        assert_eq!(s.metric, "request-success-rate");
        // Values cycle 90..=100; only 99 and 100 pass; check 7 had no data.
        let passing = (0..300).filter(|i| *i != 7 && i % 11 >= 9).count() as u64;
        assert_eq!(
            (s.checks.count, s.checks.failures),
            (300, 300 - passing),
            "every check of the analysis"
        );
        assert_eq!(
            (s.checks.min, s.checks.max, s.checks.last),
            (Some(90.0), Some(100.0), Some(90.0 + (299 % 11) as f64))
        );
    }

    #[test]
    fn without_an_image_change_the_hashes_name_the_revisions() {
        let c = spec();
        let before = CanaryStatus {
            phase: Phase::Finalising,
            last_promoted_spec: "0123456789abcdef".into(),
            ..Default::default()
        };
        let after = CanaryStatus {
            phase: Phase::Succeeded,
            ..before.clone()
        };
        let tracked = Tracked {
            revision: "fedcba9876543210".into(),
            from_images: vec![("app".into(), "app:1".into())],
            ..Default::default()
        };
        let outcome = finished(&c, &before, &after).unwrap();
        let r = rollout(&Finished {
            spec: &c,
            before: &before,
            after: &after,
            outcome,
            analysis: None,
            tracked: &tracked,
            to_images: vec![("app".into(), "app:1".into())],
            now: 5.0,
        });
        assert_eq!(
            (r.from.as_str(), r.to.as_str()),
            ("0123456789ab", "fedcba987654")
        );
        assert_eq!(
            r.reason,
            "Canary analysis completed successfully, promotion finished."
        );
        // Back at the promoted revision is no analysis.
        let waiting = CanaryStatus {
            phase: Phase::Waiting,
            ..Default::default()
        };
        assert_eq!(finished(&c, &waiting, &after), None);
    }
}
