//! The rollout note format, pure: what gitcanary records under `refs/notes/gitcanary`.
//! A note holds entries (a finished rollout, a rejected or allowed tag). It reads as
//! text first, one section per entry, for `git log --notes=gitcanary`; then one fenced
//! JSON block (`{"gitcanary": 1, "entries": [...]}`) holds the same entries for
//! machines. Merging two notes is a union of their entries, so concurrent writers and
//! repeated rollouts on one commit append and never replace each other. Entries of a
//! kind this version does not know, and fields it does not know, are kept as they are.

use crate::util::time::rfc3339_secs;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// The format version written in the JSON block.
pub const VERSION: u32 = 1;

/// How an analysis ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Promoted.
    Succeeded,
    /// Rolled back.
    Failed,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outcome::Succeeded => "Succeeded",
            Outcome::Failed => "Failed",
        })
    }
}

/// A container whose image changed between the promoted and the analysed revision.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageChange {
    /// Container name.
    pub container: String,
    /// Image before (`repo:tag`).
    pub from: String,
    /// Image after.
    pub to: String,
}

/// One metric check of the analysis.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    /// When it ran (Unix seconds).
    pub time: f64,
    /// Metric name.
    pub metric: String,
    /// The value; `None` when the query returned no data.
    pub value: Option<f64>,
    /// Lower bound of the threshold range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Upper bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Whether the value was within the range.
    pub pass: bool,
}

impl Sample {
    /// A check at `time` of `metric`, judged against `min..=max`.
    pub fn new(
        time: f64,
        metric: &str,
        value: Option<f64>,
        min: Option<f64>,
        max: Option<f64>,
    ) -> Sample {
        Sample {
            time,
            metric: metric.into(),
            value,
            min,
            max,
            pass: Sample::passes(value, min, max),
        }
    }

    /// Whether `value` passes `min..=max`; Flagger counts no data as a failed check.
    pub fn passes(value: Option<f64>, min: Option<f64>, max: Option<f64>) -> bool {
        value.is_some_and(|v| min.is_none_or(|m| v >= m) && max.is_none_or(|m| v <= m))
    }

    /// The threshold as text: `>= 99`, `<= 500`, `1..5`, or `-`.
    pub fn threshold(&self) -> String {
        match (self.min, self.max) {
            (Some(a), Some(b)) => format!("{}..{}", num(a), num(b)),
            (Some(a), None) => format!(">= {}", num(a)),
            (None, Some(b)) => format!("<= {}", num(b)),
            (None, None) => "-".into(),
        }
    }
}

/// Every check of one metric in an analysis, counted as the checks ran: what stays
/// exact when the stored samples keep only the newest.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckSummary {
    /// Checks run.
    pub count: u64,
    /// Checks that failed (out of range, no data, or a query error).
    pub failures: u64,
    /// The lowest value seen; `None` when no check had data.
    pub min: Option<f64>,
    /// The highest value seen.
    pub max: Option<f64>,
    /// The last check's value; `None` when it had no data.
    pub last: Option<f64>,
}

impl CheckSummary {
    /// Counts one check.
    pub fn add(&mut self, value: Option<f64>, failed: bool) {
        self.count += 1;
        self.failures += u64::from(failed);
        if let Some(v) = value {
            self.min = Some(self.min.map_or(v, |m| m.min(v)));
            self.max = Some(self.max.map_or(v, |m| m.max(v)));
        }
        self.last = value;
    }
}

/// One metric's [`CheckSummary`] in a note.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricSummary {
    /// Metric name.
    pub metric: String,
    /// Its checks.
    #[serde(flatten)]
    pub checks: CheckSummary,
}

/// What a webhook answered during the analysis.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookResult {
    /// Webhook name.
    pub name: String,
    /// Its type (`pre-rollout`, `rollout`, `confirm-promotion`...).
    #[serde(rename = "type")]
    pub kind: String,
    /// Calls made.
    pub calls: u32,
    /// Calls that failed.
    pub failures: u32,
    /// `ok`, or `failed` when the last call failed.
    pub status: String,
    /// The first line of the last failure's body or error.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// One canary event.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NoteEvent {
    /// When (Unix seconds).
    pub time: f64,
    /// `info`, `warn` or `error`.
    pub severity: String,
    /// Flagger's wording.
    pub message: String,
}

/// A finished analysis.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// `namespace/name`.
    pub canary: String,
    /// How it ended.
    pub outcome: Option<Outcome>,
    /// Why, in Flagger's wording.
    pub reason: String,
    /// What ran before: image tags when they changed, else the template hash.
    pub from: String,
    /// What was analysed.
    pub to: String,
    /// The images that changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageChange>,
    /// The promoted revision before (template hash and tracked configs).
    #[serde(default)]
    pub from_revision: String,
    /// The analysed revision.
    #[serde(default)]
    pub to_revision: String,
    /// The highest canary weight reached (percent).
    #[serde(default)]
    pub max_weight: u32,
    /// Failed checks when it ended.
    #[serde(default)]
    pub failed_checks: u32,
    /// When the analysis began (Unix seconds).
    pub start: f64,
    /// When it ended.
    pub end: f64,
    /// The metric checks, the newest up to the engine's cap per metric
    /// (`canary::samples::MAX_POINTS`).
    #[serde(default)]
    pub samples: Vec<Sample>,
    /// Every check of the analysis, per metric, however many `samples` kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metric_summary: Vec<MetricSummary>,
    /// `[time, weight]` for each weight change.
    #[serde(default)]
    pub weights: Vec<(f64, u32)>,
    /// The webhooks called.
    #[serde(default)]
    pub webhooks: Vec<WebhookResult>,
    /// The analysis's events.
    #[serde(default)]
    pub events: Vec<NoteEvent>,
    /// Fields of later versions (or of other writers), kept as they are.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Rollout {
    /// Seconds from start to end.
    pub fn duration(&self) -> f64 {
        (self.end - self.start).max(0.0)
    }
}

/// Whether a tag was rejected (its canary failed) or allowed again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TagAction {
    /// Image automation must not select it again.
    Rejected,
    /// The rejection was cleared.
    Allowed,
}

/// A rejected or allowed image tag.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TagRecord {
    /// What happened to the tag (the entry's `kind`).
    #[serde(skip, default = "rejected")]
    pub action: TagAction,
    /// Image repository.
    pub image: String,
    /// Tag.
    pub tag: String,
    /// When (Unix seconds).
    pub time: f64,
    /// The canary whose failure rejected it, if one did.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub canary: String,
    /// Why, or who allowed it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Fields of later versions, kept as they are.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

fn rejected() -> TagAction {
    TagAction::Rejected
}

/// One entry of a note.
#[derive(Clone, Debug, PartialEq)]
pub enum Entry {
    /// A finished analysis.
    Rollout(Box<Rollout>),
    /// A rejected or allowed tag.
    Tag(TagRecord),
    /// An entry this version does not know (a later version wrote it).
    Other(Value),
}

impl Entry {
    /// The entry as JSON, with its `kind`.
    pub fn to_value(&self) -> Value {
        let (kind, v) = match self {
            Entry::Rollout(r) => ("rollout", serde_json::to_value(r)),
            Entry::Tag(t) => (
                match t.action {
                    TagAction::Rejected => "tagRejected",
                    TagAction::Allowed => "tagAllowed",
                },
                serde_json::to_value(t),
            ),
            Entry::Other(v) => return v.clone(),
        };
        let mut v = v.unwrap_or(Value::Null);
        if let Some(o) = v.as_object_mut() {
            // `kind` first reads better in the note.
            let mut with_kind = serde_json::Map::new();
            with_kind.insert("kind".into(), kind.into());
            with_kind.extend(std::mem::take(o));
            *o = with_kind;
        }
        v
    }

    /// Reads an entry; one of an unknown kind or shape is kept as [`Entry::Other`].
    pub fn from_value(v: Value) -> Entry {
        // Read from a borrow (no copy of the samples); `kind` lands in `extra`.
        let kind = v["kind"].as_str().unwrap_or("rollout");
        let parsed = match kind {
            "rollout" => Rollout::deserialize(&v).ok().map(|mut r| {
                r.extra.remove("kind");
                Entry::Rollout(Box::new(r))
            }),
            "tagRejected" | "tagAllowed" => TagRecord::deserialize(&v).ok().map(|mut t| {
                t.extra.remove("kind");
                t.action = if kind == "tagAllowed" {
                    TagAction::Allowed
                } else {
                    TagAction::Rejected
                };
                Entry::Tag(t)
            }),
            _ => None,
        };
        parsed.unwrap_or(Entry::Other(v))
    }

    /// When it happened, to order entries.
    pub fn time(&self) -> f64 {
        match self {
            Entry::Rollout(r) => r.end,
            Entry::Tag(t) => t.time,
            Entry::Other(v) => v["end"].as_f64().or(v["time"].as_f64()).unwrap_or(0.0),
        }
    }
}

/// A note: its entries, oldest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Note {
    /// The entries.
    pub entries: Vec<Entry>,
}

#[derive(Serialize, Deserialize)]
struct Block {
    gitcanary: u32,
    entries: Vec<Value>,
}

impl Note {
    /// The finished rollouts in the note.
    pub fn rollouts(&self) -> impl Iterator<Item = &Rollout> {
        self.entries.iter().filter_map(|e| match e {
            Entry::Rollout(r) => Some(r.as_ref()),
            _ => None,
        })
    }

    /// Adds `entries` that are not in the note yet, keeping time order: the union.
    pub fn merge(&mut self, entries: impl IntoIterator<Item = Entry>) {
        let mut seen: Vec<String> = self
            .entries
            .iter()
            .map(|e| e.to_value().to_string())
            .collect();
        for e in entries {
            let id = e.to_value().to_string();
            if !seen.contains(&id) {
                seen.push(id);
                self.entries.push(e);
            }
        }
        // Stable: entries at the same time keep the order they arrived in.
        self.entries.sort_by(|a, b| a.time().total_cmp(&b.time()));
    }

    /// Parses a note's text: every fenced JSON block (a note `git notes append` or a
    /// union merge concatenated has several), or the whole text when it is one JSON
    /// object (an entry written by hand). Text outside the blocks is for humans and
    /// is not read. A note with nothing readable has no entries.
    pub fn parse(text: &str) -> Note {
        let trimmed = text.trim();
        let blocks = if trimmed.starts_with('{') {
            vec![trimmed]
        } else {
            json_blocks(text)
        };
        let mut parsed: Vec<Vec<Value>> = blocks
            .into_iter()
            .filter_map(|b| serde_json::from_str::<Value>(b).ok())
            .map(values)
            .collect();
        let mut note = Note::default();
        if parsed.len() == 1 {
            // One block, as gitcanary writes it: its entries are distinct already, and
            // listing 1,000 notes should not pay for the union.
            note.entries = parsed
                .remove(0)
                .into_iter()
                .map(Entry::from_value)
                .collect();
            note.entries.sort_by(|a, b| a.time().total_cmp(&b.time()));
        } else {
            for entries in parsed {
                note.merge(entries.into_iter().map(Entry::from_value));
            }
        }
        note
    }

    /// The note's text: one human section per entry, then the JSON block.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (i, e) in self.entries.iter().enumerate() {
            if i > 0 {
                out.push_str("\n---\n\n");
            }
            out.push_str(&render_entry(e));
        }
        let block = Block {
            gitcanary: VERSION,
            entries: self.entries.iter().map(Entry::to_value).collect(),
        };
        out.push_str("\n```json\n");
        out.push_str(&serde_json::to_string_pretty(&block).unwrap_or_default());
        out.push_str("\n```\n");
        out
    }
}

/// The entries of a parsed block: `{"entries": [...]}`, a list, or one entry.
fn values(v: Value) -> Vec<Value> {
    match v {
        Value::Object(mut o) if o.contains_key("entries") => match o.remove("entries") {
            Some(Value::Array(a)) => a,
            _ => Vec::new(),
        },
        Value::Array(a) => a,
        v @ Value::Object(_) => vec![v],
        _ => Vec::new(),
    }
}

/// The contents of the ```` ```json ```` fenced blocks of `text`.
fn json_blocks(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("```json") {
        let after = &rest[i + 7..];
        let Some(nl) = after.find('\n') else { break };
        let body = &after[nl + 1..];
        let end = body
            .find("\n```")
            .or_else(|| body.starts_with("```").then_some(0));
        let Some(end) = end else { break };
        out.push(&body[..end]);
        rest = &body[end + 1..];
        rest = rest.get(3..).unwrap_or("");
    }
    out
}

fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.2}")
    }
}

/// Formats seconds the way the CLI shows durations (`2m30s`).
pub fn format_duration(secs: f64) -> String {
    crate::util::duration::format(std::time::Duration::from_secs_f64(secs.max(0.0).round()))
}

fn render_entry(e: &Entry) -> String {
    match e {
        Entry::Rollout(r) => render_rollout(r),
        Entry::Tag(t) => {
            let what = match t.action {
                TagAction::Rejected => "rejected",
                TagAction::Allowed => "allowed again",
            };
            let mut s = format!("gitcanary: image {}:{} {what}\n", t.image, t.tag);
            if !t.canary.is_empty() {
                s.push_str(&format!("Canary: {}\n", t.canary));
            }
            if !t.reason.is_empty() {
                s.push_str(&format!("Reason: {}\n", t.reason));
            }
            s.push_str(&format!("Time: {}\n", rfc3339_secs(t.time)));
            s
        }
        Entry::Other(v) => format!(
            "gitcanary: {} entry (see the JSON block)\n",
            v["kind"].as_str().unwrap_or("unknown")
        ),
    }
}

fn render_rollout(r: &Rollout) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let outcome = r.outcome.map(|o| o.to_string()).unwrap_or_default();
    let _ = writeln!(s, "gitcanary rollout {}: {outcome}", r.canary);
    let _ = writeln!(s, "From {} to {}", r.from, r.to);
    for i in &r.images {
        let _ = writeln!(s, "  {}: {} -> {}", i.container, i.from, i.to);
    }
    let _ = writeln!(s, "Reason: {}", r.reason);
    let _ = writeln!(
        s,
        "Max weight: {}%, failed checks: {}",
        r.max_weight, r.failed_checks
    );
    let _ = writeln!(
        s,
        "Started {}, ended {}, took {}",
        rfc3339_secs(r.start),
        rfc3339_secs(r.end),
        format_duration(r.duration())
    );
    if !r.to_revision.is_empty() {
        let _ = writeln!(
            s,
            "Revision: {} -> {}",
            short(&r.from_revision),
            short(&r.to_revision)
        );
    }
    for (key, v) in &r.extra {
        let _ = writeln!(
            s,
            "{key}: {}",
            v.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string())
        );
    }
    if !r.metric_summary.is_empty() {
        let _ = writeln!(s, "\nMetric checks (the whole analysis):");
    }
    for m in &r.metric_summary {
        let c = &m.checks;
        let value = |v: Option<f64>| v.map(num).unwrap_or_else(|| "no data".into());
        let _ = writeln!(
            s,
            "  {}: {} checks, {} failed, min {}, max {}, last {}",
            m.metric,
            c.count,
            c.failures,
            value(c.min),
            value(c.max),
            value(c.last)
        );
    }
    let checks: u64 = r.metric_summary.iter().map(|m| m.checks.count).sum();
    let kept = r.samples.len();
    let of_all = if checks > kept as u64 {
        format!(", the newest of {checks}")
    } else {
        String::new()
    };
    let _ = writeln!(s, "\nMetric samples ({kept}{of_all}):");
    if r.samples.is_empty() {
        let _ = writeln!(s, "  none");
    }
    for m in &r.samples {
        let value = m.value.map(num).unwrap_or_else(|| "no data".into());
        let result = if m.pass { "pass" } else { "FAIL" };
        let _ = writeln!(
            s,
            "  {}  {}  {value}  (threshold {})  {result}",
            rfc3339_secs(m.time),
            m.metric,
            m.threshold()
        );
    }
    let _ = writeln!(s, "\nWebhooks ({}):", r.webhooks.len());
    if r.webhooks.is_empty() {
        let _ = writeln!(s, "  none");
    }
    for w in &r.webhooks {
        let _ = write!(
            s,
            "  {} ({}): {}, {} calls, {} failed",
            w.name, w.kind, w.status, w.calls, w.failures
        );
        if !w.message.is_empty() {
            let _ = write!(s, ": {}", w.message);
        }
        s.push('\n');
    }
    let _ = writeln!(s, "\nEvents ({}):", r.events.len());
    for e in &r.events {
        let _ = writeln!(
            s,
            "  {}  {}  {}",
            rfc3339_secs(e.time),
            e.severity,
            e.message
        );
    }
    s
}

fn short(rev: &str) -> &str {
    rev.get(..12).unwrap_or(rev)
}

/// The first line of `text`, bounded: what a note keeps of a failure body.
pub fn first_line(text: &str) -> String {
    let line = text.trim().lines().next().unwrap_or_default().trim();
    line.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn rollout(canary: &str, end: f64) -> Rollout {
        Rollout {
            canary: canary.into(),
            outcome: Some(Outcome::Succeeded),
            reason: "Canary analysis completed successfully, promotion finished.".into(),
            from: "6.0.0".into(),
            to: "6.0.1".into(),
            images: vec![ImageChange {
                container: "podinfo".into(),
                from: "ghcr.io/stefanprodan/podinfo:6.0.0".into(),
                to: "ghcr.io/stefanprodan/podinfo:6.0.1".into(),
            }],
            from_revision: "a".repeat(64),
            to_revision: "b".repeat(64),
            max_weight: 50,
            failed_checks: 0,
            start: end - 150.0,
            end,
            samples: vec![
                Sample::new(
                    end - 100.0,
                    "request-success-rate",
                    Some(99.5),
                    Some(99.0),
                    None,
                ),
                Sample::new(end - 50.0, "request-duration", None, None, Some(500.0)),
            ],
            metric_summary: Vec::new(),
            weights: vec![(end - 140.0, 10), (end - 100.0, 50)],
            webhooks: vec![WebhookResult {
                name: "acceptance".into(),
                kind: "pre-rollout".into(),
                calls: 2,
                failures: 1,
                status: "ok".into(),
                message: "status code 500".into(),
            }],
            events: vec![NoteEvent {
                time: end - 150.0,
                severity: "info".into(),
                message: "New revision detected! Scaling up podinfo.test".into(),
            }],
            extra: BTreeMap::new(),
        }
    }

    #[test]
    fn a_note_reads_as_text_and_round_trips_through_its_json_block() {
        let mut note = Note::default();
        note.merge([Entry::Rollout(Box::new(rollout(
            "test/podinfo",
            1_000_000.0,
        )))]);
        let text = note.render();
        assert!(
            text.starts_with("gitcanary rollout test/podinfo: Succeeded\nFrom 6.0.0 to 6.0.1\n"),
            "{text}"
        );
        for line in [
            "Max weight: 50%, failed checks: 0",
            "took 2m30s",
            "request-success-rate  99.50  (threshold >= 99)  pass",
            "request-duration  no data  (threshold <= 500)  FAIL",
            "acceptance (pre-rollout): ok, 2 calls, 1 failed: status code 500",
            "info  New revision detected! Scaling up podinfo.test",
        ] {
            assert!(text.contains(line), "{line:?} missing in\n{text}");
        }
        assert_eq!(text.matches("```json").count(), 1);
        assert_eq!(Note::parse(&text), note);
    }

    #[test]
    fn the_summary_counts_every_check_and_reads_in_text_and_json() {
        let mut checks = CheckSummary::default();
        for (v, failed) in [(Some(99.5), false), (None, true), (Some(100.0), false)] {
            checks.add(v, failed);
        }
        assert_eq!(
            checks,
            CheckSummary {
                count: 3,
                failures: 1,
                min: Some(99.5),
                max: Some(100.0),
                last: Some(100.0)
            }
        );
        checks.add(None, true);
        assert_eq!((checks.last, checks.max), (None, Some(100.0)));
        let mut r = rollout("test/podinfo", 1_000_000.0);
        r.metric_summary = vec![MetricSummary {
            metric: "request-success-rate".into(),
            checks: CheckSummary {
                count: 300,
                ..checks
            },
        }];
        let note = Note {
            entries: vec![Entry::Rollout(Box::new(r))],
        };
        let text = note.render();
        for line in [
            "Metric checks (the whole analysis):\n  request-success-rate: 300 checks, 2 failed, min 99.50, max 100, last no data\n",
            "Metric samples (2, the newest of 300):",
            "\"metricSummary\": [\n",
            "\"count\": 300,",
        ] {
            assert!(text.contains(line), "{line:?} missing in\n{text}");
        }
        assert_eq!(Note::parse(&text), note);
        // A note without one (older versions) reads as it did.
        let plain = Note {
            entries: vec![Entry::Rollout(Box::new(rollout("t/a", 5.0)))],
        };
        assert!(!plain.render().contains("metricSummary"));
        assert!(plain.render().contains("Metric samples (2):"));
    }

    #[test]
    fn merging_is_a_union_that_keeps_every_rollout_once_in_time_order() {
        let a = Entry::Rollout(Box::new(rollout("test/a", 200.0)));
        let b = Entry::Rollout(Box::new(rollout("test/b", 100.0)));
        let c = Entry::Tag(TagRecord {
            action: TagAction::Rejected,
            image: "ghcr.io/x/app".into(),
            tag: "1.2.3".into(),
            time: 150.0,
            canary: "test/a".into(),
            reason: "failed checks threshold reached 5".into(),
            extra: BTreeMap::new(),
        });
        let mut mine = Note::default();
        mine.merge([a.clone()]);
        let mut theirs = Note::default();
        theirs.merge([b.clone(), c.clone()]);
        let mut merged = Note::parse(&mine.render());
        merged.merge(Note::parse(&theirs.render()).entries);
        merged.merge(Note::parse(&mine.render()).entries);
        assert_eq!(merged.entries, vec![b, c, a]);
        let text = merged.render();
        assert!(
            text.contains("gitcanary: image ghcr.io/x/app:1.2.3 rejected"),
            "{text}"
        );
        assert_eq!(Note::parse(&text), merged);
    }

    #[test]
    fn unknown_kinds_and_fields_survive_and_garbage_is_no_entry() {
        let text = "hand-written\n```json\n{\"gitcanary\": 2, \"entries\": [{\"kind\": \"future\", \"x\": 1}, {\"kind\": \"rollout\", \"canary\": \"a/b\", \"outcome\": \"Failed\", \"reason\": \"r\", \"from\": \"1\", \"to\": \"2\", \"start\": 1, \"end\": 2, \"revertCommit\": \"abc\"}]}\n```\n";
        let note = Note::parse(text);
        assert_eq!(note.entries.len(), 2);
        let again = Note::parse(&note.render());
        assert_eq!(again, note);
        let r = again.rollouts().next().unwrap();
        assert_eq!(r.extra["revertCommit"], "abc");
        assert!(note.render().contains("revertCommit: abc"));
        // Several blocks (git's cat_sort_uniq merge, `git notes append`) are all read.
        let two = format!("{}\n{}", Note::parse(text).render(), rollout_note(5.0));
        assert_eq!(Note::parse(&two).entries.len(), 3);
        for junk in [
            "",
            "not json",
            "```json\nnot json\n```",
            "```json\n{\"entries\": 3}\n```",
            "```json",
        ] {
            assert!(Note::parse(junk).entries.is_empty(), "{junk:?}");
        }
        // The hand-written single-object form the UI fixture used.
        let one = Note::parse(
            r#"{"canary":"test/podinfo","outcome":"Succeeded","from":"1.0.0","to":"1.0.1","reason":"","start":100,"end":160}"#,
        );
        assert_eq!(one.rollouts().next().unwrap().duration(), 60.0);
    }

    fn rollout_note(end: f64) -> String {
        let mut n = Note::default();
        n.merge([Entry::Rollout(Box::new(rollout("x/y", end)))]);
        n.render()
    }

    #[test]
    fn thresholds_and_checks_follow_flagger() {
        assert!(Sample::passes(Some(99.0), Some(99.0), None));
        assert!(!Sample::passes(Some(98.9), Some(99.0), None));
        assert!(!Sample::passes(Some(501.0), None, Some(500.0)));
        assert!(!Sample::passes(None, None, Some(500.0)), "no data fails");
        assert_eq!(first_line("\n  boom: bad\nstack\n"), "boom: bad");
    }
}
