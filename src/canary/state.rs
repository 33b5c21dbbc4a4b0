//! Canary phases and status, with Flagger's names and fields.

use serde::{Deserialize, Serialize};

/// The phases of a canary, as Flagger names them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Creating the primary.
    #[default]
    Initializing,
    /// The primary serves; waiting for a new revision.
    Initialized,
    /// A new revision waits for a gate or a free slot.
    Waiting,
    /// Analysis is running.
    Progressing,
    /// Analysis passed; waiting for the promotion gate.
    WaitingPromotion,
    /// The primary is being updated and traffic shifted back to it.
    Promoting,
    /// Scaling the canary down after promotion.
    Finalising,
    /// Promoted.
    Succeeded,
    /// Rolled back.
    Failed,
}

impl Phase {
    /// The status message a phase starts with, worded as Flagger's `Promoted` condition.
    pub fn message(self) -> &'static str {
        match self {
            Phase::Initializing => "New Deployment detected, starting initialization.",
            Phase::Initialized => "Deployment initialization completed.",
            Phase::Waiting => "New revision detected, waiting to start the canary analysis.",
            Phase::Progressing => "New revision detected, progressing canary analysis.",
            Phase::WaitingPromotion => "Canary analysis completed, waiting for promotion approval.",
            Phase::Promoting => "Canary analysis completed, starting primary rolling update.",
            Phase::Finalising => "Canary analysis completed, routing all traffic to primary.",
            Phase::Succeeded => "Canary analysis completed successfully, promotion finished.",
            Phase::Failed => "Canary analysis failed, Deployment scaled to zero.",
        }
    }
}

/// Event severity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Normal progress.
    Info,
    /// A halted step or a rollback.
    Warn,
    /// A failure that needs attention.
    Error,
}

/// One event, worded as Flagger words it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Severity.
    pub severity: Severity,
    /// Message.
    pub message: String,
    /// When (Unix seconds).
    pub at: f64,
}

/// The status kept for each canary, persisted after every step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStatus {
    /// Phase.
    pub phase: Phase,
    /// Current canary weight.
    pub canary_weight: u32,
    /// Failed checks in this analysis.
    pub failed_checks: u32,
    /// Iterations done (blue/green, A/B).
    pub iterations: u32,
    /// Whether traffic is mirrored.
    pub mirrored: bool,
    /// Revision of the target last taken into analysis.
    pub last_applied_spec: String,
    /// Revision last promoted to the primary.
    pub last_promoted_spec: String,
    /// Checksums of the ConfigMaps and Secrets the target references (part of the revision).
    #[serde(default)]
    pub tracked_configs: std::collections::BTreeMap<String, String>,
    /// When the phase last changed (Unix seconds).
    pub last_transition_time: f64,
    /// When the last analysis step ran (Unix seconds).
    pub last_step_time: f64,
    /// When the confirm-rollout and rollback gates were last asked (Unix seconds).
    #[serde(default)]
    pub last_gate_time: f64,
    /// The last 100 events.
    pub events: Vec<Event>,
    /// Each metric's last value and threshold (flagger #1810 asks for this).
    #[serde(default)]
    pub last_metrics: Vec<MetricValue>,
    /// The target Deployment, kept for when the Canary is removed.
    #[serde(default)]
    pub target: String,
    /// The apex Service name, kept for when the Canary is removed.
    #[serde(default)]
    pub service: String,
    /// `revertOnDeletion`, kept for when the Canary is removed.
    #[serde(default)]
    pub revert_on_deletion: bool,
    /// When traffic to the current revision began (Unix seconds): the step that started
    /// the analysis. The built-in metrics count requests from here on.
    #[serde(default)]
    pub analysis_start: f64,
    /// What the canary is doing, or what runs now, in one sentence (the message of
    /// Flagger's `Promoted` condition).
    #[serde(default)]
    pub message: String,
}

/// A metric's last observed value against its threshold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricValue {
    /// Metric name.
    pub name: String,
    /// Last value; `None` when there was no data.
    pub value: Option<f64>,
    /// Lower bound.
    pub min: Option<f64>,
    /// Upper bound.
    pub max: Option<f64>,
    /// Whether the check failed: no value, a query error, or a value out of range.
    #[serde(default)]
    pub failed: bool,
}

/// Events kept in the status.
pub const MAX_EVENTS: usize = 100;
