//! gitcanary's own notifications (`notifications:` in the config): a sync failure and
//! its recovery, an image update pushed, a rollback written to Git, a rejected tag.
//! Deciding is [`decide`], a pure state machine (previous state + event → new state
//! and at most one message): it notifies on a change of state only, so a revision that
//! fails on every interval notifies once until it recovers (notification-controller
//! #284). [`Notifier`] keeps that state (in `status/notifications.json`, so a restart
//! does not repeat a notice) and hands messages to a sender thread that posts them to
//! the providers in order. Callers anywhere (the sync loop, the Git writer, the canary
//! engine) call [`Notifier::event`]; it never blocks on the network.

pub mod providers;

use crate::config::Config;
use providers::{Alert, Kind, Severity, Style};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// Errors setting up notifications.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A provider's address file could not be read.
    #[error("notifications.providers[{index}] ({name}): addressFile {path}: {reason}")]
    Address {
        /// Position in the list.
        index: usize,
        /// Provider name.
        name: String,
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The sender thread could not start.
    #[error("notifications: cannot start the sender: {0}")]
    Thread(std::io::Error),
}

/// Something that happened, as a caller reports it.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A sync failed. `revision` is the revision it tried (`main@sha1:…`), if known.
    SyncFailed {
        /// The revision that failed.
        revision: Option<String>,
        /// The error, as the status records it.
        error: String,
    },
    /// A sync applied `revision`.
    SyncSucceeded {
        /// The applied revision.
        revision: String,
    },
    /// Image automation pushed a commit.
    ImageUpdated {
        /// The pushed commit.
        commit: String,
        /// The branch it went to.
        branch: String,
        /// One line per changed value, e.g. `podinfo: 6.0.0 -> 6.0.1 (apps/podinfo.yaml)`.
        changes: Vec<String>,
    },
    /// A rollback was committed and pushed to Git.
    RollbackWritten {
        /// The canary, `name.namespace`.
        canary: String,
        /// The version rolled back to (a tag or a hash).
        to: String,
        /// The rollback commit.
        commit: String,
        /// Why the canary failed, in Flagger's words.
        reason: String,
    },
    /// Image automation will not select `image:tag` again.
    TagRejected {
        /// The canary whose failure rejected it, `name.namespace`.
        canary: String,
        /// Image repository.
        image: String,
        /// The tag.
        tag: String,
    },
    /// A rejection was cleared (`gitcanary images allow`).
    TagAllowed {
        /// Image repository.
        image: String,
        /// The tag.
        tag: String,
        /// Who or what cleared it, e.g. `gitcanary images allow (user alice)`.
        by: String,
    },
}

/// What [`decide`] remembers between events.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// The failing revision (`None` inside: failing before any fetch), while syncs fail.
    pub failing: Option<Option<String>>,
    /// Consecutive failures seen while failing.
    pub failures: u32,
    /// Rejections already notified, as `image:tag`.
    pub rejected: BTreeSet<String>,
}

/// A message to send.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// What it is about: the source name or the canary.
    pub subject: String,
    /// `GitRepository`, `ImageUpdateAutomation` or `Canary` (for generic receivers).
    pub kind: &'static str,
    /// Its severity.
    pub severity: Severity,
    /// Flux-style reason, e.g. `ReconciliationFailed`.
    pub reason: &'static str,
    /// The text.
    pub text: String,
    /// The revision or commit it concerns.
    pub revision: Option<String>,
}

/// Longest message text sent; sync errors list every manifest error.
const MAX_TEXT: usize = 2000;

/// The next state and the message, if any, for `event` in `state`. `source` names
/// the source in messages about it.
pub fn decide(state: &State, event: &Event, source: &str) -> (State, Option<Message>) {
    let mut next = state.clone();
    let msg = |kind, severity, reason, text: String, revision: Option<String>| Message {
        subject: source.to_string(),
        kind,
        severity,
        reason,
        text,
        revision,
    };
    let message = match event {
        Event::SyncFailed { revision, error } => {
            next.failures = state.failures + 1;
            if state.failing.as_ref() == Some(revision) {
                None
            } else {
                next.failing = Some(revision.clone());
                next.failures = 1;
                Some(msg(
                    "GitRepository",
                    Severity::Error,
                    "ReconciliationFailed",
                    error.clone(),
                    revision.clone(),
                ))
            }
        }
        Event::SyncSucceeded { revision } => match &state.failing {
            None => None,
            Some(_) => {
                next.failing = None;
                next.failures = 0;
                Some(msg(
                    "GitRepository",
                    Severity::Info,
                    "ReconciliationSucceeded",
                    format!(
                        "Applied revision: {revision}; recovered after {} failed attempt{}",
                        state.failures,
                        if state.failures == 1 { "" } else { "s" }
                    ),
                    Some(revision.clone()),
                ))
            }
        },
        Event::ImageUpdated {
            commit,
            branch,
            changes,
        } => {
            let mut text = format!("Committed and pushed change {commit} to {branch}");
            for c in changes {
                text.push_str("\n- ");
                text.push_str(c);
            }
            Some(msg(
                "ImageUpdateAutomation",
                Severity::Info,
                "Succeeded",
                text,
                Some(commit.clone()),
            ))
        }
        Event::RollbackWritten {
            canary,
            to,
            commit,
            reason,
        } => Some(Message {
            subject: canary.clone(),
            kind: "Canary",
            severity: Severity::Warn,
            reason: "RollbackWritten",
            text: format!("Rollback {canary} to {to} written to Git as {commit}: {reason}"),
            revision: Some(commit.clone()),
        }),
        Event::TagRejected { canary, image, tag } => {
            let key = format!("{image}:{tag}");
            next.rejected
                .insert(key.clone())
                .then(|| Message {
                    subject: canary.clone(),
                    kind: "Canary",
                    severity: Severity::Warn,
                    reason: "TagRejected",
                    text: format!(
                        "Tag {key} rejected after {canary} failed; image automation will not select it again (gitcanary images allow {key} clears it)"
                    ),
                    revision: None,
                })
        }
        Event::TagAllowed { image, tag, by } => {
            // Always news: the caller reports a clearing only when it cleared a
            // rejection, which this state may never have seen (notified before
            // providers were configured, or a lost state dir). Forgetting the key lets
            // a later rejection of the same tag notify again.
            let key = format!("{image}:{tag}");
            next.rejected.remove(&key);
            Some(Message {
                subject: image.clone(),
                kind: "ImagePolicy",
                severity: Severity::Info,
                reason: "TagAllowed",
                text: format!(
                    "Tag {key} allowed again by {by}; image automation may select it again"
                ),
                revision: None,
            })
        }
    };
    (next, message)
}

/// A provider ready to send to.
struct Resolved {
    name: String,
    kind: Kind,
    style: Style,
    min: Severity,
    url: String,
}

enum Job {
    Send(Message),
    Flush(mpsc::Sender<()>),
}

struct Inner {
    source: String,
    state: Mutex<State>,
    /// Where the state is kept; `None` keeps it in memory only.
    path: Option<PathBuf>,
    secrets: Vec<String>,
    tx: Mutex<mpsc::Sender<Job>>,
}

/// The handle callers report events to; cheap to clone. Without providers it does
/// nothing.
#[derive(Clone, Default)]
pub struct Notifier(Option<Arc<Inner>>);

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Notifier(..)")
    }
}

impl Notifier {
    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier(None)
    }

    /// The notifier `cfg.notifications` describes, with its state in the state dir.
    /// Reads every address file now, so a missing one fails at start.
    pub fn from_config(cfg: &Config) -> Result<Notifier, Error> {
        if cfg.notifications.providers.is_empty() {
            return Ok(Notifier::disabled());
        }
        let mut resolved = Vec::new();
        for (index, p) in cfg.notifications.providers.iter().enumerate() {
            let path = cfg.resolve(&p.address_file);
            let err = |reason: String| Error::Address {
                index,
                name: p.name.clone(),
                path: path.display().to_string(),
                reason,
            };
            let url = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
            let url = url.trim().to_string();
            if url.is_empty() {
                return Err(err("the file is empty".into()));
            }
            resolved.push(Resolved {
                name: p.name.clone(),
                // Validated with the config.
                kind: Kind::parse(&p.kind).unwrap_or(Kind::Generic),
                style: Style {
                    channel: p.channel.clone(),
                    username: p.username.clone(),
                },
                min: Severity::parse(&p.severity).unwrap_or(Severity::Info),
                url,
            });
        }
        let mut secrets = config_secrets(cfg);
        secrets.extend(resolved.iter().map(|r| r.url.clone()));
        let path = cfg.state_dir().join("status").join("notifications.json");
        let state = read_state(&path).unwrap_or_default();
        let tx = spawn_sender(resolved).map_err(Error::Thread)?;
        Ok(Notifier(Some(Arc::new(Inner {
            source: cfg.source.name.clone(),
            state: Mutex::new(state),
            path: Some(path),
            secrets,
            tx: Mutex::new(tx),
        }))))
    }

    /// Reports `event`; a message, if the state changed, is queued for the providers.
    /// Returns whether one was.
    pub fn event(&self, event: Event) -> bool {
        let Some(inner) = &self.0 else {
            return false;
        };
        let message = {
            let mut state = inner.state.lock().unwrap_or_else(|e| e.into_inner());
            // Another process may have written the file since (`gitcanary images allow`
            // cleared a rejection): its word is the latest.
            if let Some(on_disk) = inner.path.as_deref().and_then(read_state) {
                *state = on_disk;
            }
            let (next, message) = decide(&state, &event, &inner.source);
            if next != *state {
                if let Some(path) = &inner.path {
                    let bytes = serde_json::to_vec_pretty(&next).unwrap_or_default();
                    if let Err(e) = crate::util::atomic::write(path, &bytes) {
                        tracing::warn!("cannot write {}: {e}", path.display());
                    }
                }
                *state = next;
            }
            message
        };
        let Some(mut m) = message else {
            return false;
        };
        m.text = providers::redact(&m.text, &inner.secrets);
        if m.text.len() > MAX_TEXT {
            let cut = (0..=MAX_TEXT)
                .rev()
                .find(|i| m.text.is_char_boundary(*i))
                .unwrap_or(0);
            m.text.truncate(cut);
            m.text.push_str(" …");
        }
        let tx = inner.tx.lock().unwrap_or_else(|e| e.into_inner());
        tx.send(Job::Send(m)).is_ok()
    }

    /// Waits (up to `timeout`) until every queued message was sent or failed; a
    /// one-shot command calls it before exiting.
    pub fn flush(&self, timeout: Duration) {
        let Some(inner) = &self.0 else { return };
        let (ack, done) = mpsc::channel();
        let sent = inner
            .tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(Job::Flush(ack));
        if sent.is_ok() {
            let _ = done.recv_timeout(timeout);
        }
    }
}

/// The kept state; `None` when there is none or it does not parse.
fn read_state(path: &std::path::Path) -> Option<State> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// The values of the env vars the config names as secrets: a message quoting one
/// (an error echoing a URL with a token) has it replaced.
fn config_secrets(cfg: &Config) -> Vec<String> {
    let mut vars: Vec<&String> = Vec::new();
    if let Some(h) = cfg.source.auth.as_ref().and_then(|a| a.https.as_ref()) {
        vars.extend(h.token_env.iter().chain(&h.password_env));
    }
    if let Some(s) = cfg.source.auth.as_ref().and_then(|a| a.ssh.as_ref()) {
        vars.extend(&s.passphrase_env);
    }
    vars.extend(&cfg.server.webhook_secret_env);
    vars.extend(&cfg.server.ui_token_env);
    vars.extend(&cfg.loadtester.token_env);
    vars.extend(cfg.images.credentials.iter().map(|c| &c.password_env));
    vars.iter()
        .filter_map(|v| std::env::var(v).ok())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

/// Starts the thread that posts messages, one at a time so they arrive in order.
fn spawn_sender(providers: Vec<Resolved>) -> std::io::Result<mpsc::Sender<Job>> {
    crate::util::tls::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let http = reqwest::Client::builder()
        .build()
        .map_err(std::io::Error::other)?;
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("notify".into())
        .spawn(move || {
            for job in rx {
                match job {
                    Job::Send(m) => rt.block_on(send(&http, &providers, &m)),
                    Job::Flush(ack) => {
                        let _ = ack.send(());
                    }
                }
            }
        })?;
    Ok(tx)
}

async fn send(http: &reqwest::Client, providers: &[Resolved], m: &Message) {
    let mut fields = serde_json::Map::new();
    fields.insert("kind".into(), m.kind.into());
    fields.insert("name".into(), m.subject.clone().into());
    fields.insert("reason".into(), m.reason.into());
    if let Some(r) = &m.revision {
        fields.insert("revision".into(), r.clone().into());
    }
    let alert = Alert {
        subject: &m.subject,
        severity: m.severity,
        message: &m.text,
        fields,
    };
    for p in providers.iter().filter(|p| m.severity >= p.min) {
        let body = providers::body(p.kind, &p.style, &alert);
        match providers::post(http, &p.url, &body).await {
            Ok(()) => tracing::info!(provider = %p.name, reason = m.reason, "notification sent"),
            Err(e) => {
                tracing::warn!(provider = %p.name, reason = m.reason, "notification not sent: {e}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(events: &[Event]) -> Vec<Message> {
        let mut state = State::default();
        let mut out = Vec::new();
        for e in events {
            let (next, m) = decide(&state, e, "flux-system");
            state = next;
            out.extend(m);
        }
        out
    }

    fn failed(rev: &str) -> Event {
        Event::SyncFailed {
            revision: Some(rev.into()),
            error: format!("revision {rev} is invalid"),
        }
    }

    #[test]
    fn a_failing_revision_notifies_once_until_it_recovers() {
        let ok = Event::SyncSucceeded {
            revision: "main@sha1:b".into(),
        };
        let mut events = vec![ok.clone()];
        events.extend(std::iter::repeat_n(failed("main@sha1:a"), 5));
        events.extend([ok.clone(), ok.clone()]);
        let sent = run(&events);
        assert_eq!(sent.len(), 2, "{sent:#?}");
        assert_eq!(sent[0].severity, Severity::Error);
        assert_eq!(sent[0].reason, "ReconciliationFailed");
        assert_eq!(sent[0].text, "revision main@sha1:a is invalid");
        assert_eq!(sent[1].severity, Severity::Info);
        assert_eq!(
            sent[1].text,
            "Applied revision: main@sha1:b; recovered after 5 failed attempts"
        );
    }

    #[test]
    fn a_new_failing_revision_is_news_and_fetch_failures_repeat_silently() {
        let sent = run(&[
            failed("main@sha1:a"),
            failed("main@sha1:a"),
            failed("main@sha1:c"),
            failed("main@sha1:c"),
        ]);
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[1].revision.as_deref(), Some("main@sha1:c"));
        let fetch = Event::SyncFailed {
            revision: None,
            error: "fetch failed".into(),
        };
        assert_eq!(run(&[fetch.clone(), fetch.clone(), fetch]).len(), 1);
    }

    fn tag_events() -> (Event, Event) {
        let rejected = Event::TagRejected {
            canary: "podinfo.test".into(),
            image: "ghcr.io/stefanprodan/podinfo".into(),
            tag: "6.0.1".into(),
        };
        let allowed = Event::TagAllowed {
            image: "ghcr.io/stefanprodan/podinfo".into(),
            tag: "6.0.1".into(),
            by: "gitcanary images allow (user alice)".into(),
        };
        (rejected, allowed)
    }

    #[test]
    fn rejections_notify_once_until_allowed() {
        let (rejected, allowed) = tag_events();
        let sent = run(&[rejected.clone(), rejected.clone(), allowed, rejected]);
        let reasons: Vec<&str> = sent.iter().map(|m| m.reason).collect();
        assert_eq!(reasons, ["TagRejected", "TagAllowed", "TagRejected"]);
        assert!(sent[0].text.starts_with(
            "Tag ghcr.io/stefanprodan/podinfo:6.0.1 rejected after podinfo.test failed"
        ));
        assert_eq!(
            (sent[1].severity, sent[1].subject.as_str()),
            (Severity::Info, "ghcr.io/stefanprodan/podinfo")
        );
        assert_eq!(
            sent[1].text,
            "Tag ghcr.io/stefanprodan/podinfo:6.0.1 allowed again by gitcanary images allow (user alice); image automation may select it again"
        );
    }

    #[test]
    fn a_clearing_is_news_even_when_the_rejection_was_never_notified() {
        let (_, allowed) = tag_events();
        let sent = run(&[allowed]);
        assert_eq!(sent.len(), 1, "the command cleared a real rejection");
        assert_eq!(sent[0].reason, "TagAllowed");
    }

    /// A notifier keeping its state in `path`, with its queue.
    fn file_backed(path: &std::path::Path) -> (Notifier, mpsc::Receiver<Job>) {
        let (tx, rx) = mpsc::channel();
        let inner = Inner {
            source: "flux-system".into(),
            state: Mutex::new(read_state(path).unwrap_or_default()),
            path: Some(path.to_path_buf()),
            secrets: Vec::new(),
            tx: Mutex::new(tx),
        };
        (Notifier(Some(Arc::new(inner))), rx)
    }

    #[test]
    fn a_clearing_by_another_process_lets_the_daemon_notify_a_new_rejection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notifications.json");
        let (rejected, allowed) = tag_events();
        let (daemon, _queue) = file_backed(&path);
        assert!(daemon.event(rejected.clone()));
        assert!(!daemon.event(rejected.clone()), "once");
        // `gitcanary images allow`, a process of its own.
        let (cli, _cli_queue) = file_backed(&path);
        assert!(cli.event(allowed));
        // The daemon's memory still holds the old rejection; the file is newer.
        assert!(daemon.event(rejected.clone()), "rejected again is news");
        assert!(!daemon.event(rejected));
    }

    #[test]
    fn updates_and_rollbacks_always_notify() {
        let sent = run(&[
            Event::ImageUpdated {
                commit: "abc123".into(),
                branch: "main".into(),
                changes: vec!["podinfo: 6.0.0 -> 6.0.1 (apps/podinfo.yaml)".into()],
            },
            Event::RollbackWritten {
                canary: "podinfo.test".into(),
                to: "6.0.0".into(),
                commit: "def456".into(),
                reason: "failed checks threshold reached 5".into(),
            },
        ]);
        assert_eq!(
            sent[0].text,
            "Committed and pushed change abc123 to main\n- podinfo: 6.0.0 -> 6.0.1 (apps/podinfo.yaml)"
        );
        assert_eq!(
            sent[1].text,
            "Rollback podinfo.test to 6.0.0 written to Git as def456: failed checks threshold reached 5"
        );
        assert_eq!(sent[1].subject, "podinfo.test");
        assert_eq!(sent[1].severity, Severity::Warn);
    }
}
