//! Handing finished analyses to Git: while a revision is analysed, the engine keeps
//! what the note needs that the status does not (the primary's images before
//! promotion, the webhook results); when the analysis ends, it builds the rollout
//! record (`canary::outcome`, pure) and gives it to the [`OutcomeSink`] with the
//! revisions that applied the target and its tracked configs. The sink (the Git
//! writer) picks the commit and writes the note; the engine never touches Git.
//! What is kept is mirrored beside the canary's status (`<status>.outcome.json`,
//! atomically), so a restart during a promotion, when the primary already runs the
//! new images, still knows what ran before.

use super::*;
use crate::canary::outcome::{self, Finished, Tracked};
use crate::history::note::Entry;
use crate::history::OutcomeSink;
use observe::Seen;

/// One canary's [`Tracked`], and whether the file holds it as it is.
#[derive(Default)]
pub(super) struct Kept {
    tracked: Tracked,
    saved: bool,
}

/// Where a canary's [`Tracked`] is mirrored, beside its status.
fn tracked_path(state_dir: &Path, ns: &str, name: &str) -> PathBuf {
    status_path(state_dir, ns, name).with_extension("outcome.json")
}

/// The mirrored [`Tracked`]; `None` when there is none or it does not parse (then
/// the note falls back to what a fresh look at the primary tells).
fn read_tracked(state_dir: &Path, ns: &str, name: &str) -> Option<Tracked> {
    let bytes = std::fs::read(tracked_path(state_dir, ns, name)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

impl Core {
    /// Starts tracking the revision a step sees, if it is new, and mirrors it at
    /// once. The primary's images are the "from" side only before promotion copies
    /// the target over them. Runs on the I/O thread.
    pub(super) fn track(&self, c: &CanarySpec, seen: &Seen) {
        if self.outcomes.is_none() {
            return;
        }
        let mut tracked = lock(&self.tracked);
        let kept = tracked.entry(c.id()).or_insert_with(|| Kept {
            tracked: read_tracked(&self.state_dir, &c.namespace, &c.name).unwrap_or_default(),
            saved: true,
        });
        if kept.tracked.revision == seen.obs.revision {
            return;
        }
        let before_promotion = !matches!(seen.status.phase, Phase::Promoting | Phase::Finalising);
        *kept = Kept {
            tracked: Tracked {
                revision: seen.obs.revision.clone(),
                from_images: seen
                    .primary
                    .as_ref()
                    .filter(|_| before_promotion)
                    .map(outcome::images)
                    .unwrap_or_default(),
                webhooks: Vec::new(),
            },
            saved: false,
        };
        self.save_kept(c, kept);
    }

    /// Mirrors what changed since the last save (webhook counts). Runs on the I/O
    /// thread.
    pub(super) fn save_tracked(&self, c: &CanarySpec) {
        if let Some(kept) = lock(&self.tracked).get_mut(&c.id()) {
            self.save_kept(c, kept);
        }
    }

    fn save_kept(&self, c: &CanarySpec, kept: &mut Kept) {
        if kept.saved {
            return;
        }
        let path = tracked_path(&self.state_dir, &c.namespace, &c.name);
        let bytes = serde_json::to_vec(&kept.tracked).unwrap_or_default();
        match crate::util::atomic::write(&path, &bytes) {
            Ok(()) => kept.saved = true,
            Err(e) => tracing::warn!("canary {}: writing {}: {e}", c.id(), path.display()),
        }
    }

    /// Forgets a removed canary's tracked analysis.
    pub(super) fn forget_tracked(&self, ns: &str, name: &str) {
        lock(&self.tracked).remove(&format!("{name}.{ns}"));
        let _ = std::fs::remove_file(tracked_path(&self.state_dir, ns, name));
    }

    /// Counts a webhook call of the revision `rev` for the canary's note.
    pub(super) fn track_webhook(
        &self,
        c: &CanarySpec,
        w: &spec::WebhookSpec,
        rev: &str,
        result: &Result<(), String>,
    ) {
        if self.outcomes.is_none() || w.kind == HookType::Event {
            return;
        }
        let mut tracked = lock(&self.tracked);
        if let Some(kept) = tracked
            .get_mut(&c.id())
            .filter(|k| k.tracked.revision == rev)
        {
            kept.tracked.webhook(
                &w.name,
                w.kind.as_str(),
                result.as_ref().err().map(String::as_str),
            );
            kept.saved = false;
        }
    }

    /// After a step's status is written: when it ended an analysis, hands the rollout
    /// to the sink. Runs on the I/O thread (it reads the samples and the inventory).
    pub(super) fn hand_over(&self, c: &CanarySpec, seen: &Seen, after: &CanaryStatus, now: f64) {
        let Some(sink) = &self.outcomes else {
            return;
        };
        let Some(result) = outcome::finished(c, &seen.status, after) else {
            return;
        };
        let tracked = lock(&self.tracked)
            .get(&c.id())
            .map(|k| k.tracked.clone())
            .unwrap_or_default();
        let samples = crate::canary::samples::load(&self.state_dir, &c.namespace, &c.name);
        let analysis = samples
            .current
            .as_ref()
            .filter(|a| a.revision == after.last_applied_spec || a.revision == tracked.revision);
        let rollout = outcome::rollout(&Finished {
            spec: c,
            before: &seen.status,
            after,
            outcome: result,
            analysis,
            tracked: &tracked,
            to_images: outcome::images(&seen.target),
            now,
        });
        let revisions = self.applied_revisions(c, seen);
        if revisions.is_empty() {
            tracing::warn!("the target's revision is unknown; the rollout is not recorded in Git");
            return;
        }
        sink.record(&revisions, vec![Entry::Rollout(Box::new(rollout))]);
    }

    /// The revisions that applied the target and the configs it tracks.
    fn applied_revisions(&self, c: &CanarySpec, seen: &Seen) -> Vec<String> {
        let mut keys = vec![deployment(&c.namespace, &c.target)];
        for kind_name in seen.tracked.keys() {
            if let Some((kind, name)) = kind_name.split_once('/') {
                keys.push(ObjectKey::new("v1", kind, &c.namespace, name));
            }
        }
        let mut revisions: Vec<String> = keys
            .iter()
            .filter_map(|k| self.workloads.applied_revision(k))
            .collect();
        revisions.dedup();
        revisions
    }
}

/// Shares the sink.
pub(super) type Sink = Option<Arc<dyn OutcomeSink>>;
