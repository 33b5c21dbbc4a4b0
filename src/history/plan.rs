//! What the Git writer writes, decided without Git: the text of a note after adding
//! entries or after meeting the remote's version of it, and how long to wait before
//! trying a rejected push again.

use super::note::{Entry, Note};
use std::time::Duration;

/// The note text for a commit after adding `entries` to its current note (`None`:
/// no note yet). `None` when every entry is already there: nothing to write.
pub fn add_entries(current: Option<&str>, entries: &[Entry]) -> Option<String> {
    let mut note = current.map(Note::parse).unwrap_or_default();
    let before = note.entries.len();
    note.merge(entries.iter().cloned());
    if current.is_some() && note.entries.len() == before {
        return None;
    }
    Some(note.render())
}

/// The union of our note and the remote's for one commit: every entry of both, once.
pub fn union(ours: &str, theirs: &str) -> String {
    let mut note = Note::parse(theirs);
    note.merge(Note::parse(ours).entries);
    note.render()
}

/// The wait before push attempt `attempt` (1-based) after a rejection: doubling from
/// `base` up to `cap`, plus up to as much again from `jitter` (any number), so two
/// writers that collided do not collide again in lockstep.
pub fn backoff(attempt: u32, base: Duration, cap: Duration, jitter: u64) -> Duration {
    let exp = base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(cap);
    let extra = exp.as_millis() as u64;
    exp + Duration::from_millis(if extra == 0 { 0 } else { jitter % (extra + 1) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::note::{Outcome, Rollout};

    fn entry(canary: &str, end: f64) -> Entry {
        Entry::Rollout(Box::new(Rollout {
            canary: canary.into(),
            outcome: Some(Outcome::Failed),
            end,
            ..Default::default()
        }))
    }

    #[test]
    fn adding_appends_and_adding_again_writes_nothing() {
        let first = add_entries(None, &[entry("t/a", 1.0)]).unwrap();
        let second = add_entries(Some(&first), &[entry("t/a", 2.0)]).unwrap();
        assert_eq!(Note::parse(&second).entries.len(), 2);
        assert_eq!(add_entries(Some(&second), &[entry("t/a", 1.0)]), None);
        // A hand-written note gains the entry and keeps its own.
        let hand = r#"{"canary":"t/b","outcome":"Succeeded","reason":"","from":"1","to":"2","start":0,"end":0.5}"#;
        let text = add_entries(Some(hand), &[entry("t/a", 1.0)]).unwrap();
        assert_eq!(Note::parse(&text).entries.len(), 2);
    }

    #[test]
    fn a_union_loses_neither_side() {
        let base = add_entries(None, &[entry("t/a", 1.0)]).unwrap();
        let ours = add_entries(Some(&base), &[entry("t/a", 3.0)]).unwrap();
        let theirs = add_entries(Some(&base), &[entry("t/b", 2.0)]).unwrap();
        let merged = Note::parse(&union(&ours, &theirs));
        let ends: Vec<f64> = merged.rollouts().map(|r| r.end).collect();
        assert_eq!(ends, vec![1.0, 2.0, 3.0]);
        assert_eq!(union(&ours, &theirs), union(&theirs, &ours));
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_bounded_jitter() {
        let (base, cap) = (Duration::from_millis(20), Duration::from_millis(500));
        assert_eq!(backoff(1, base, cap, 0), Duration::from_millis(20));
        assert_eq!(backoff(3, base, cap, 0), Duration::from_millis(80));
        assert_eq!(backoff(30, base, cap, 0), cap);
        assert_eq!(backoff(1, base, cap, 7), Duration::from_millis(27));
        assert!(backoff(30, base, cap, u64::MAX) <= cap * 2);
    }
}
