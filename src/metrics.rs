//! A small Prometheus registry: counters and gauges with labels, rendered in the text
//! exposition format at `/metrics`. Subsystems register their own families here.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Mutex, OnceLock};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

struct Family {
    help: &'static str,
    kind: Kind,
    series: BTreeMap<Vec<(&'static str, String)>, f64>,
}

/// The process-wide registry.
#[derive(Default)]
pub struct Registry {
    families: Mutex<BTreeMap<&'static str, Family>>,
}

/// The global registry served at `/metrics`.
pub fn global() -> &'static Registry {
    static REG: OnceLock<Registry> = OnceLock::new();
    REG.get_or_init(Registry::default)
}

impl Registry {
    fn update(
        &self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
        labels: &[(&'static str, &str)],
        f: impl FnOnce(&mut f64),
    ) {
        let mut fams = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let fam = fams.entry(name).or_insert_with(|| Family {
            help,
            kind,
            series: BTreeMap::new(),
        });
        let key = labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
        f(fam.series.entry(key).or_insert(0.0));
    }

    /// Adds `by` to a counter.
    pub fn inc(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        by: f64,
    ) {
        self.update(name, help, Kind::Counter, labels, |v| *v += by);
    }

    /// Sets a gauge.
    pub fn set(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        value: f64,
    ) {
        self.update(name, help, Kind::Gauge, labels, |v| *v = value);
    }

    /// Renders every family in the Prometheus text format.
    pub fn render(&self) -> String {
        let fams = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        for (name, fam) in fams.iter() {
            let kind = if fam.kind == Kind::Counter {
                "counter"
            } else {
                "gauge"
            };
            let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} {kind}", fam.help);
            for (labels, value) in &fam.series {
                out.push_str(name);
                if !labels.is_empty() {
                    out.push('{');
                    for (i, (k, v)) in labels.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let v = v
                            .replace('\\', "\\\\")
                            .replace('"', "\\\"")
                            .replace('\n', "\\n");
                        let _ = write!(out, "{k}=\"{v}\"");
                    }
                    out.push('}');
                }
                let _ = writeln!(out, " {value}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_text_format() {
        let r = Registry::default();
        r.inc("x_total", "Things.", &[("result", "ok")], 1.0);
        r.inc("x_total", "Things.", &[("result", "ok")], 2.0);
        r.set("y", "A gauge.", &[], 5.0);
        let text = r.render();
        assert!(
            text.contains("# TYPE x_total counter\nx_total{result=\"ok\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE y gauge\ny 5\n"), "{text}");
    }
}
