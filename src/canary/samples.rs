//! Each canary's metric samples and weights for its current and its last analysis,
//! bounded, for the web UI's charts. `advance` is pure: it turns one step's status
//! change into new points. `record` is the engine's single hook: it keeps the series in
//! memory and mirrors them to `<status>.samples.json` (atomically, only when they
//! change), so `gitcanary get` in another process and a restarted server see the same.
//! This module never decides anything about a canary: it only watches statuses.

use super::state::{CanaryStatus, Phase};
use crate::history::note::CheckSummary;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Points kept per series: a 1-minute interval charts four hours, and 100 canaries
/// with two metrics stay under a few MB.
pub const MAX_POINTS: usize = 240;

/// Values in a canary row's sparkline: enough to see a trend in 110 pixels.
pub const SPARKLINE: usize = 60;

/// One metric's samples against its thresholds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Series {
    /// Metric name.
    pub name: String,
    /// Unit of the values (`%`, `ms`, or empty).
    pub unit: String,
    /// Lower bound.
    pub min: Option<f64>,
    /// Upper bound.
    pub max: Option<f64>,
    /// `[time, value]` pairs (Unix seconds); a null value is a check without data.
    pub points: Vec<(f64, Option<f64>)>,
    /// The times among `points` whose check failed (out of range, no data, or a
    /// query error), as the engine judged them. Left out when none did, so a reader
    /// of series from elsewhere (history notes) judges by the thresholds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<f64>,
    /// Every check of the analysis, counted as they ran: `points` keeps only the
    /// newest `MAX_POINTS`, this keeps count of all (for the rollout's note).
    #[serde(default)]
    pub summary: CheckSummary,
}

impl Series {
    /// The summary of every check; for series recorded before summaries were kept
    /// (an analysis running across an upgrade), the best the kept points tell.
    pub fn checks(&self) -> CheckSummary {
        if self.summary.count >= self.points.len() as u64 {
            return self.summary.clone();
        }
        let mut c = CheckSummary::default();
        for (t, v) in &self.points {
            c.add(*v, self.failed.contains(t));
        }
        c
    }
}

/// The samples of one analysis.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Analysis {
    /// The revision analysed.
    pub revision: String,
    /// When traffic to it began (Unix seconds).
    pub start: f64,
    /// `[time, weight]` pairs: one per step that changed the weight.
    pub weights: Vec<(f64, u32)>,
    /// One series per metric.
    pub metrics: Vec<Series>,
}

/// The current and the last analysis of one canary.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Samples {
    /// The analysis running now, or the last one to have run.
    pub current: Option<Analysis>,
    /// The one before it.
    pub last: Option<Analysis>,
}

impl Samples {
    /// The last `SPARKLINE` values of the most recent analysis's success-rate series
    /// (the overview's sparkline).
    pub fn success_rate(&self) -> Vec<f64> {
        let Some(a) = self.current.as_ref().or(self.last.as_ref()) else {
            return Vec::new();
        };
        let values: Vec<f64> = a
            .metrics
            .iter()
            .find(|s| s.name == "request-success-rate")
            .map(|s| s.points.iter().filter_map(|p| p.1).collect())
            .unwrap_or_default();
        values[values.len().saturating_sub(SPARKLINE)..].to_vec()
    }
}

/// The unit a metric's values are in (Flagger's built-in metrics: percent and ms).
pub fn unit(metric: &str) -> &'static str {
    match metric {
        "request-success-rate" => "%",
        "request-duration" => "ms",
        _ => "",
    }
}

fn push<T>(v: &mut Vec<T>, item: T) {
    if v.len() >= MAX_POINTS {
        v.remove(0);
    }
    v.push(item);
}

/// Adds what one step changed (`before` to `after`) at `now`; `true` when anything
/// changed. A new `analysisStart` opens a new analysis and the current one becomes
/// the last; a weight change adds a weight point; a check that ran adds one point per
/// metric.
pub fn advance(s: &mut Samples, before: &CanaryStatus, after: &CanaryStatus, now: f64) -> bool {
    let analysing = matches!(
        after.phase,
        Phase::Progressing | Phase::WaitingPromotion | Phase::Promoting | Phase::Finalising
    );
    let new_analysis = after.analysis_start > 0.0
        && analysing
        && s.current
            .as_ref()
            .is_none_or(|a| a.start != after.analysis_start);
    if !new_analysis && s.current.is_none() {
        return false;
    }
    let mut changed = false;
    if new_analysis {
        s.last = s.current.take();
        s.current = Some(Analysis {
            revision: after.last_applied_spec.clone(),
            start: after.analysis_start,
            weights: Vec::new(),
            metrics: Vec::new(),
        });
        changed = true;
    }
    let Some(a) = s.current.as_mut() else {
        return changed;
    };
    if after.canary_weight != before.canary_weight
        && a.weights.last().map(|w| w.1) != Some(after.canary_weight)
    {
        push(&mut a.weights, (now, after.canary_weight));
        changed = true;
    }
    let checked = after.last_step_time != before.last_step_time && !after.last_metrics.is_empty();
    if checked && analysing {
        for m in &after.last_metrics {
            let i = match a.metrics.iter().position(|s| s.name == m.name) {
                Some(i) => i,
                None => {
                    a.metrics.push(Series {
                        name: m.name.clone(),
                        unit: unit(&m.name).into(),
                        ..Default::default()
                    });
                    a.metrics.len() - 1
                }
            };
            let series = &mut a.metrics[i];
            series.min = m.min;
            series.max = m.max;
            push(&mut series.points, (after.last_step_time, m.value));
            series.summary.add(m.value, m.failed);
            if m.failed {
                series.failed.push(after.last_step_time);
            }
            let oldest = series.points[0].0;
            series.failed.retain(|t| *t >= oldest);
        }
        changed = true;
    }
    changed
}

fn memory() -> &'static Mutex<HashMap<(String, String), Samples>> {
    static MEMORY: OnceLock<Mutex<HashMap<(String, String), Samples>>> = OnceLock::new();
    MEMORY.get_or_init(Default::default)
}

/// Where a canary's samples are mirrored, beside its status.
pub fn path(state_dir: &Path, ns: &str, name: &str) -> PathBuf {
    super::executor::status_path(state_dir, ns, name).with_extension("samples.json")
}

fn read_file(state_dir: &Path, ns: &str, name: &str) -> Samples {
    std::fs::read(path(state_dir, ns, name))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Runs `f` over a canary's samples: this process's copy, else the mirrored file
/// (another process wrote it, or the engine has not stepped yet), which is then kept:
/// only this process's engine writes the file, through `record`, which updates the
/// copy first.
pub fn with<T>(state_dir: &Path, ns: &str, name: &str, f: impl FnOnce(&Samples) -> T) -> T {
    let key = (ns.to_string(), name.to_string());
    let mut mem = memory().lock().unwrap_or_else(|e| e.into_inner());
    f(mem
        .entry(key)
        .or_insert_with(|| read_file(state_dir, ns, name)))
}

/// A copy of a canary's samples.
pub fn load(state_dir: &Path, ns: &str, name: &str) -> Samples {
    with(state_dir, ns, name, Samples::clone)
}

/// The engine's hook after each step: adds the step's points and mirrors them to disk
/// when they changed. Runs on the engine's I/O thread. Returns whether they changed.
pub fn record(
    state_dir: &Path,
    ns: &str,
    name: &str,
    before: &CanaryStatus,
    after: &CanaryStatus,
    now: f64,
) -> bool {
    let key = (ns.to_string(), name.to_string());
    let mut mem = memory().lock().unwrap_or_else(|e| e.into_inner());
    let s = mem
        .entry(key)
        .or_insert_with(|| read_file(state_dir, ns, name));
    if !advance(s, before, after, now) {
        return false;
    }
    let bytes = serde_json::to_vec(s).unwrap_or_default();
    drop(mem);
    if let Err(e) = crate::util::atomic::write(&path(state_dir, ns, name), &bytes) {
        tracing::warn!("canary {name}.{ns}: writing its samples: {e}");
    }
    true
}

/// Forgets a removed canary's samples.
pub fn forget(state_dir: &Path, ns: &str, name: &str) {
    memory()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&(ns.to_string(), name.to_string()));
    let _ = std::fs::remove_file(path(state_dir, ns, name));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canary::state::MetricValue;

    fn status(phase: Phase, weight: u32, start: f64, step: f64, rate: Option<f64>) -> CanaryStatus {
        CanaryStatus {
            phase,
            canary_weight: weight,
            analysis_start: start,
            last_step_time: step,
            last_applied_spec: format!("rev-{start}"),
            last_metrics: rate
                .map(|v| {
                    vec![MetricValue {
                        name: "request-success-rate".into(),
                        value: Some(v),
                        min: Some(99.0),
                        max: None,
                        failed: false,
                    }]
                })
                .unwrap_or_default(),
            ..Default::default()
        }
    }

    #[test]
    fn one_weight_point_per_step_and_one_sample_per_check() {
        let mut s = Samples::default();
        let idle = status(Phase::Initialized, 0, 0.0, 0.0, None);
        assert!(
            !advance(&mut s, &idle, &idle, 5.0),
            "nothing before an analysis"
        );
        let mut before = idle;
        for (i, w) in [10, 20, 30].into_iter().enumerate() {
            let t = 100.0 + i as f64;
            let after = status(
                Phase::Progressing,
                w,
                100.0,
                t,
                Some(99.5 + i as f64 / 10.0),
            );
            assert!(advance(&mut s, &before, &after, t));
            before = after;
        }
        let a = s.current.as_ref().unwrap();
        assert_eq!(a.weights, vec![(100.0, 10), (101.0, 20), (102.0, 30)]);
        assert_eq!(a.metrics[0].unit, "%");
        assert_eq!(a.metrics[0].min, Some(99.0));
        assert_eq!(a.metrics[0].points.len(), 3);
        assert_eq!(s.success_rate(), vec![99.5, 99.6, 99.7]);
        assert!(
            !advance(&mut s, &before, &before, 103.0),
            "no step, no point"
        );
    }

    #[test]
    fn an_analysis_read_back_from_the_status_file_is_the_same_analysis() {
        // The next step's `before` is the status the last step wrote, read back from
        // its JSON file: its start must equal the one the samples hold, to the bit
        // (this one read back 1 ulp off before serde_json's float_roundtrip).
        let start = 1_796_053_485.366_468_7;
        let mut s = Samples::default();
        let idle = status(Phase::Progressing, 0, 0.0, 0.0, None);
        let first = status(Phase::Progressing, 10, start, start, None);
        assert!(advance(&mut s, &idle, &first, start));
        let reread: CanaryStatus =
            serde_json::from_slice(&serde_json::to_vec_pretty(&first).unwrap()).unwrap();
        assert_eq!(reread.analysis_start.to_bits(), start.to_bits());
        let second = CanaryStatus {
            canary_weight: 20,
            last_step_time: start + 3.0,
            ..reread.clone()
        };
        assert!(advance(&mut s, &reread, &second, start + 3.0));
        let weights: Vec<u32> = s
            .current
            .as_ref()
            .unwrap()
            .weights
            .iter()
            .map(|w| w.1)
            .collect();
        assert_eq!(weights, vec![10, 20], "one analysis, both steps");
        assert!(s.last.is_none());
    }

    #[test]
    fn a_new_analysis_keeps_the_last_one_and_series_stay_bounded() {
        let mut s = Samples::default();
        let mut before = status(Phase::Initialized, 0, 0.0, 0.0, None);
        for i in 0..(MAX_POINTS + 10) {
            let t = 10.0 + i as f64;
            let after = status(
                Phase::Progressing,
                (i % 5) as u32 * 10 + 10,
                10.0,
                t,
                Some(100.0),
            );
            advance(&mut s, &before, &after, t);
            before = after;
        }
        let a = s.current.as_ref().unwrap();
        assert_eq!(a.weights.len(), MAX_POINTS);
        assert_eq!(a.metrics[0].points.len(), MAX_POINTS);
        assert_eq!(a.metrics[0].points[0].0, 20.0, "the oldest points went");
        let all = &a.metrics[0].summary;
        assert_eq!(
            (all.count, all.failures, all.last),
            ((MAX_POINTS + 10) as u64, 0, Some(100.0)),
            "the summary counts every check"
        );
        assert_eq!(
            s.success_rate().len(),
            SPARKLINE,
            "the sparkline keeps the latest"
        );
        let next = status(Phase::Progressing, 10, 500.0, 500.0, Some(98.0));
        advance(&mut s, &before, &next, 500.0);
        assert_eq!(s.last.as_ref().unwrap().start, 10.0);
        assert_eq!(s.current.as_ref().unwrap().start, 500.0);
        assert_eq!(s.success_rate(), vec![98.0]);
    }

    #[test]
    fn failed_checks_are_kept_with_their_points_and_go_with_them() {
        let mut s = Samples::default();
        let mut before = status(Phase::Initialized, 0, 0.0, 0.0, None);
        for i in 0..(MAX_POINTS + 2) {
            let t = 10.0 + i as f64;
            let mut after = status(Phase::Progressing, 10, 10.0, t, Some(100.0));
            // The first three checks and the last one failed.
            after.last_metrics[0].failed = i < 3 || i == MAX_POINTS + 1;
            advance(&mut s, &before, &after, t);
            before = after;
        }
        let series = &s.current.as_ref().unwrap().metrics[0];
        assert_eq!(series.points.len(), MAX_POINTS);
        assert_eq!(
            series.failed,
            vec![12.0, 11.0 + MAX_POINTS as f64],
            "the two oldest failures left with their points"
        );
        assert_eq!(
            (series.summary.count, series.summary.failures),
            ((MAX_POINTS + 2) as u64, 4),
            "but stay counted"
        );
        assert_eq!(series.checks(), series.summary);
        // A series mirrored before summaries were kept: counted from its points.
        let old = Series {
            summary: CheckSummary::default(),
            ..series.clone()
        };
        assert_eq!(
            (old.checks().count, old.checks().failures),
            (MAX_POINTS as u64, 2)
        );
    }

    #[test]
    fn samples_are_mirrored_to_disk_for_other_processes() {
        let dir = tempfile::tempdir().unwrap();
        let before = status(Phase::Initialized, 0, 0.0, 0.0, None);
        let after = status(Phase::Progressing, 10, 7.0, 7.0, Some(100.0));
        assert!(record(dir.path(), "ns-mirror", "app", &before, &after, 7.0));
        assert_eq!(
            read_file(dir.path(), "ns-mirror", "app"),
            load(dir.path(), "ns-mirror", "app")
        );
        assert_eq!(
            read_file(dir.path(), "ns-mirror", "app").success_rate(),
            vec![100.0]
        );
        forget(dir.path(), "ns-mirror", "app");
        assert_eq!(load(dir.path(), "ns-mirror", "app"), Samples::default());
    }
}
