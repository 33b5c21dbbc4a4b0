//! `gitcanary promote|abort|retry|suspend|resume canary NS/NAME` (manual gates, taken by
//! the engine on its next tick) and `gitcanary describe canary NS/NAME`.

use crate::canary::commands;
use crate::canary::decide::Manual;
use crate::canary::executor::read_status;
use crate::config::Config;
use crate::targets::local::LocalStore;
use clap::Subcommand;
use std::process::ExitCode;

/// The object a command acts on.
#[derive(Subcommand, Debug)]
pub enum CanaryRef {
    /// A Canary, as `namespace/name` (or `name` in `default`).
    Canary {
        /// `namespace/name`.
        name: String,
    },
}

impl CanaryRef {
    fn split(&self) -> (String, String) {
        let CanaryRef::Canary { name } = self;
        match name.split_once('/') {
            Some((ns, n)) => (ns.to_string(), n.to_string()),
            None => ("default".to_string(), name.clone()),
        }
    }
}

fn exists(cfg: &Config, ns: &str, name: &str) -> anyhow::Result<()> {
    let store = LocalStore::open(&cfg.state_dir())?;
    let key = crate::manifest::ObjectKey::new("flagger.app/v1beta1", "Canary", ns, name);
    anyhow::ensure!(
        store.get(&key)?.is_some(),
        "canary {ns}/{name} not found in {}",
        cfg.state_dir().display()
    );
    Ok(())
}

/// Records a manual command for the engine.
pub fn manual(cfg: &Config, r: &CanaryRef, what: &str) -> anyhow::Result<ExitCode> {
    let (ns, name) = r.split();
    exists(cfg, &ns, &name)?;
    let state = cfg.state_dir();
    match what {
        "promote" => commands::request(&state, &ns, &name, Manual::Promote)?,
        "abort" => commands::request(&state, &ns, &name, Manual::Abort)?,
        "retry" => commands::request(&state, &ns, &name, Manual::Retry)?,
        "suspend" => commands::set_suspended(&state, &ns, &name, true)?,
        "resume" => commands::set_suspended(&state, &ns, &name, false)?,
        other => anyhow::bail!("unknown command {other}"),
    }
    println!("► {what} requested for canary {ns}/{name}; gitcanary run acts on it within a second");
    Ok(ExitCode::SUCCESS)
}

/// Prints a canary's spec summary, phase, metrics against thresholds, and events.
pub fn describe(cfg: &Config, r: &CanaryRef) -> anyhow::Result<ExitCode> {
    let (ns, name) = r.split();
    let store = LocalStore::open(&cfg.state_dir())?;
    let key = crate::manifest::ObjectKey::new("flagger.app/v1beta1", "Canary", &ns, &name);
    let obj = store
        .get(&key)?
        .ok_or_else(|| anyhow::anyhow!("canary {ns}/{name} not found"))?;
    let spec = crate::canary::spec::parse(&obj)
        .map_err(|e| anyhow::anyhow!("invalid canary: {}", e.join("; ")))?;
    let st = read_status(&cfg.state_dir(), &ns, &name);
    let a = &spec.analysis;
    println!("Name:         {}", spec.name);
    println!("Namespace:    {}", spec.namespace);
    println!(
        "Target:       Deployment/{} (primary {}-primary)",
        spec.target, spec.target
    );
    println!("Service:      {} port {}", spec.service, spec.port);
    let strategy = if a.iterations > 0 {
        format!(
            "{} iterations{}",
            a.iterations,
            if a.match_rules.as_array().is_some_and(|m| !m.is_empty()) {
                " (A/B)"
            } else {
                " (blue/green)"
            }
        )
    } else if !a.step_weights.is_empty() {
        format!("step weights {:?}", a.step_weights)
    } else {
        format!("step weight {} up to {}", a.step_weight, a.max_weight)
    };
    println!(
        "Analysis:     every {}, threshold {}, {strategy}",
        crate::util::duration::format(a.interval),
        a.threshold
    );
    let suspended = spec.suspend || commands::suspended(&cfg.state_dir(), &ns, &name);
    println!(
        "Status:       {:?}{}",
        st.phase,
        if suspended { " (suspended)" } else { "" }
    );
    if !st.message.is_empty() {
        println!("Message:      {}", st.message);
    }
    println!("Weight:       {}", st.canary_weight);
    println!("FailedChecks: {}/{}", st.failed_checks, a.threshold);
    println!("Metrics:");
    for m in &a.metrics {
        let last = st.last_metrics.iter().find(|v| v.name == m.name);
        let value = last
            .and_then(|l| l.value)
            .map(|v| format!("{v:.2}"))
            .unwrap_or_else(|| "no data".into());
        let bound = match (m.min, m.max) {
            (Some(min), Some(max)) => format!("{min} <= x <= {max}"),
            (Some(min), None) => format!(">= {min}"),
            (None, Some(max)) => format!("<= {max}"),
            (None, None) => "-".into(),
        };
        println!("  {:<24} last {value:<10} threshold {bound}", m.name);
    }
    println!("Events:");
    for e in &st.events {
        println!(
            "  {}  {:<5} {}",
            crate::util::time::rfc3339_secs(e.at),
            format!("{:?}", e.severity).to_lowercase(),
            e.message
        );
    }
    Ok(ExitCode::SUCCESS)
}
