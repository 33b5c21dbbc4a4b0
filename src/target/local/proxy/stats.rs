//! Proxy metrics per backend workload: Prometheus series named as Linkerd's
//! (`response_total` with `classification`, `response_latency_ms_bucket`), so PromQL
//! written for Linkerd works unchanged, and an in-process window for the canary
//! engine's built-in checks (success rate %, p99 ms over the last `1m`).

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Linkerd's latency buckets, in ms.
const BUCKETS: [f64; 24] = [
    1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 100.0, 200.0, 300.0, 400.0, 500.0,
    1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 10000.0, 20000.0, 30000.0, 40000.0,
];
const WINDOW_SECS: u64 = 600;
const SAMPLES_PER_SECOND: usize = 20_000;

#[derive(Default)]
struct Second {
    at: u64,
    total: u64,
    failures: u64,
    latencies_us: Vec<u32>,
}

#[derive(Default)]
struct Series {
    by_status: BTreeMap<u16, u64>,
    buckets: [u64; BUCKETS.len()],
    sum_ms: f64,
    count: u64,
    window: VecDeque<Second>,
}

/// Statistics for every (namespace, deployment).
#[derive(Default)]
pub struct Stats {
    /// namespace -> deployment -> series; looked up by `&str`, so recording a
    /// response allocates nothing once the series exists.
    series: Mutex<BTreeMap<String, BTreeMap<String, Series>>>,
}

/// What a window says.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowFigures {
    /// Requests in the window.
    pub requests: u64,
    /// Non-5xx share, percent.
    pub success_rate: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
}

/// Linkerd's classification: 5xx and transport failures are failures.
pub fn is_failure(status: u16) -> bool {
    status >= 500
}

impl Stats {
    /// Records one response (`status` 502/503 for transport failures) at second `now`.
    pub fn record(
        &self,
        namespace: &str,
        deployment: &str,
        status: u16,
        latency: Duration,
        now: u64,
    ) {
        let mut all = self.series.lock().unwrap_or_else(|e| e.into_inner());
        if !all
            .get(namespace)
            .is_some_and(|m| m.contains_key(deployment))
        {
            all.entry(namespace.to_string())
                .or_default()
                .insert(deployment.to_string(), Series::default());
        }
        let s = all
            .get_mut(namespace)
            .and_then(|m| m.get_mut(deployment))
            .expect("inserted above");
        *s.by_status.entry(status).or_default() += 1;
        let ms = latency.as_secs_f64() * 1000.0;
        for (i, b) in BUCKETS.iter().enumerate() {
            if ms <= *b {
                s.buckets[i] += 1;
            }
        }
        s.sum_ms += ms;
        s.count += 1;
        if s.window.back().is_none_or(|sec| sec.at != now) {
            s.window.push_back(Second {
                at: now,
                ..Default::default()
            });
            while s
                .window
                .front()
                .is_some_and(|sec| sec.at + WINDOW_SECS <= now)
            {
                s.window.pop_front();
            }
        }
        let sec = s.window.back_mut().expect("pushed above");
        sec.total += 1;
        if is_failure(status) {
            sec.failures += 1;
        }
        if sec.latencies_us.len() < SAMPLES_PER_SECOND {
            sec.latencies_us
                .push(latency.as_micros().min(u32::MAX as u128) as u32);
        }
    }

    /// Success rate and exact p99 over the last `window` ending at second `now`;
    /// `None` without requests (Flagger counts that as a failed check).
    pub fn window(
        &self,
        namespace: &str,
        deployment: &str,
        window: Duration,
        now: u64,
    ) -> Option<WindowFigures> {
        let all = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let s = all.get(namespace)?.get(deployment)?;
        let from = now.saturating_sub(window.as_secs().max(1));
        let secs: Vec<&Second> = s
            .window
            .iter()
            .filter(|sec| sec.at > from && sec.at <= now)
            .collect();
        let total: u64 = secs.iter().map(|s| s.total).sum();
        if total == 0 {
            return None;
        }
        let failures: u64 = secs.iter().map(|s| s.failures).sum();
        let mut lat: Vec<u32> = secs
            .iter()
            .flat_map(|s| s.latencies_us.iter().copied())
            .collect();
        lat.sort_unstable();
        let idx = ((lat.len() as f64 * 0.99).ceil() as usize).clamp(1, lat.len()) - 1;
        Some(WindowFigures {
            requests: total,
            success_rate: (total - failures) as f64 * 100.0 / total as f64,
            p99_ms: lat.get(idx).map(|us| *us as f64 / 1000.0).unwrap_or(0.0),
        })
    }

    /// Prometheus text for every series.
    pub fn render(&self) -> String {
        let all = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        if all.is_empty() {
            return out;
        }
        out.push_str("# HELP response_total Responses served by the gitcanary proxy, per backend workload.\n# TYPE response_total counter\n");
        for (ns, dep, s) in all
            .iter()
            .flat_map(|(ns, m)| m.iter().map(move |(d, s)| (ns, d, s)))
        {
            for (code, n) in &s.by_status {
                let class = if is_failure(*code) {
                    "failure"
                } else {
                    "success"
                };
                let _ = writeln!(out, "response_total{{direction=\"inbound\",namespace=\"{ns}\",deployment=\"{dep}\",classification=\"{class}\",status_code=\"{code}\"}} {n}");
            }
        }
        out.push_str("# HELP response_latency_ms Response latency through the gitcanary proxy, per backend workload.\n# TYPE response_latency_ms histogram\n");
        for (ns, dep, s) in all
            .iter()
            .flat_map(|(ns, m)| m.iter().map(move |(d, s)| (ns, d, s)))
        {
            let labels = format!("direction=\"inbound\",namespace=\"{ns}\",deployment=\"{dep}\"");
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "response_latency_ms_bucket{{{labels},le=\"{b}\"}} {}",
                    s.buckets[i]
                );
            }
            let _ = writeln!(
                out,
                "response_latency_ms_bucket{{{labels},le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(out, "response_latency_ms_sum{{{labels}}} {}", s.sum_ms);
            let _ = writeln!(out, "response_latency_ms_count{{{labels}}} {}", s.count);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_figures_and_exposition() {
        let st = Stats::default();
        for i in 0..100u64 {
            let status = if i % 4 == 0 { 500 } else { 200 };
            st.record(
                "test",
                "podinfo",
                status,
                Duration::from_millis(i + 1),
                1000 + i / 50,
            );
        }
        let w = st
            .window("test", "podinfo", Duration::from_secs(60), 1001)
            .unwrap();
        assert_eq!(w.requests, 100);
        assert_eq!(w.success_rate, 75.0);
        assert_eq!(w.p99_ms, 99.0);
        assert!(
            st.window("test", "podinfo", Duration::from_secs(60), 5000)
                .is_none(),
            "old data leaves the window"
        );
        let text = st.render();
        assert!(text.contains("response_total{direction=\"inbound\",namespace=\"test\",deployment=\"podinfo\",classification=\"failure\",status_code=\"500\"} 25"), "{text}");
        assert!(text.contains("response_latency_ms_bucket{direction=\"inbound\",namespace=\"test\",deployment=\"podinfo\",le=\"+Inf\"} 100"));
    }
}
