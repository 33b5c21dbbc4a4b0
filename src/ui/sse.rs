//! Live updates for the UI: `/api/v1/events`, a Server-Sent Events stream. One watcher
//! per server looks at the state dir's status files once a second, only while a page
//! is connected, and broadcasts which areas changed (`sources`, `objects`, `canaries`,
//! `images`); each page keeps one stream and refetches only what changed. `changed` is
//! the pure part: it compares two fingerprints.

use axum::body::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};
use tokio::sync::{broadcast, mpsc};

/// How often the watcher looks while a page is open.
pub const POLL: Duration = Duration::from_secs(1);
/// A comment line this often keeps idle streams open through proxies.
pub const PING: Duration = Duration::from_secs(15);

/// What a fingerprint is made of: per area, the (path, mtime, length) of its files.
pub type Fingerprint = BTreeMap<&'static str, Vec<(PathBuf, SystemTime, u64)>>;

fn stat_into(out: &mut Vec<(PathBuf, SystemTime, u64)>, path: &Path, depth: usize) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    if meta.is_dir() {
        if depth == 0 {
            return;
        }
        let Ok(dir) = std::fs::read_dir(path) else {
            return;
        };
        let mut entries: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        entries.sort();
        for e in entries {
            stat_into(out, &e, depth - 1);
        }
    } else {
        let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        out.push((path.to_path_buf(), mtime, meta.len()));
    }
}

/// The files each area reads, stat'ed.
pub fn fingerprint(state_dir: &Path) -> Fingerprint {
    let status = state_dir.join("status");
    let areas: [(&'static str, Vec<PathBuf>); 4] = [
        ("sources", vec![status.join("source.json")]),
        // A cluster keeps its inventory: every sync attempt rewrites the source status.
        (
            "objects",
            vec![
                state_dir.join("inventory.json"),
                status.join("apps"),
                status.join("source.json"),
            ],
        ),
        ("canaries", vec![status.join("flagger.app")]),
        (
            "images",
            vec![
                status.join("images.json"),
                status.join("rejected-tags.json"),
            ],
        ),
    ];
    areas
        .into_iter()
        .map(|(area, paths)| {
            let mut files = Vec::new();
            for p in paths {
                stat_into(&mut files, &p, 4);
            }
            (area, files)
        })
        .collect()
}

/// The areas whose files differ between two fingerprints.
pub fn changed(before: &Fingerprint, after: &Fingerprint) -> Vec<&'static str> {
    after
        .iter()
        .filter(|(area, files)| before.get(*area) != Some(files))
        .map(|(area, _)| *area)
        .collect()
}

/// The broadcast of changed areas, and the watcher feeding it.
#[derive(Clone)]
pub struct Changes {
    tx: broadcast::Sender<String>,
    /// Ends every stream: the server's graceful shutdown waits for open responses.
    closing: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
}

impl Changes {
    /// Starts the watcher over `state_dir` (on the current tokio runtime); it stops
    /// when the last `Changes` is dropped.
    pub fn start(state_dir: PathBuf) -> Changes {
        let (tx, _) = broadcast::channel(16);
        let weak = tx.downgrade();
        tokio::spawn(async move {
            let mut last: Option<Fingerprint> = None;
            loop {
                tokio::time::sleep(POLL).await;
                let Some(tx) = weak.upgrade() else { return };
                if tx.receiver_count() == 0 {
                    last = None;
                    continue;
                }
                let dir = state_dir.clone();
                let Ok(now) = tokio::task::spawn_blocking(move || fingerprint(&dir)).await else {
                    continue;
                };
                if let Some(before) = &last {
                    let areas = changed(before, &now);
                    if !areas.is_empty() {
                        let _ = tx.send(areas.join(","));
                    }
                }
                last = Some(now);
            }
        });
        Changes {
            tx,
            closing: std::sync::Arc::new(tokio::sync::watch::channel(false).0),
        }
    }

    /// Ends every open stream and refuses new ones (at shutdown).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// A new page's stream: a `hello` event, then one `change` event per change.
    pub fn subscribe(&self) -> EventStream {
        let mut rx = self.tx.subscribe();
        let mut closing = self.closing.subscribe();
        let (out, body) = mpsc::channel::<Bytes>(4);
        tokio::spawn(async move {
            if *closing.borrow_and_update() {
                return;
            }
            if out
                .send(Bytes::from_static(
                    b"retry: 2000\nevent: hello\ndata: {}\n\n",
                ))
                .await
                .is_err()
            {
                return;
            }
            loop {
                let msg = tokio::select! {
                    got = rx.recv() => match got {
                        Ok(areas) => event(&areas),
                        // A slow page missed some: tell it everything changed.
                        Err(broadcast::error::RecvError::Lagged(_)) => event("sources,objects,canaries,images"),
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    _ = tokio::time::sleep(PING) => Bytes::from_static(b": ping\n\n"),
                    _ = closing.changed() => return,
                };
                if out.send(msg).await.is_err() {
                    return; // the page went away
                }
            }
        });
        EventStream { rx: body }
    }
}

fn event(areas: &str) -> Bytes {
    let areas: Vec<&str> = areas.split(',').collect();
    Bytes::from(format!(
        "event: change\ndata: {}\n\n",
        serde_json::json!({ "areas": areas })
    ))
}

/// The body of one SSE response.
pub struct EventStream {
    rx: mpsc::Receiver<Bytes>,
}

impl Body for EventStream {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_areas_whose_files_changed_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let status = dir.path().join("status");
        std::fs::create_dir_all(status.join("flagger.app/Canary/test")).unwrap();
        std::fs::write(status.join("source.json"), "{}").unwrap();
        let a = fingerprint(dir.path());
        assert!(changed(&a, &fingerprint(dir.path())).is_empty());
        std::fs::write(status.join("flagger.app/Canary/test/podinfo.json"), "{}").unwrap();
        let b = fingerprint(dir.path());
        assert_eq!(changed(&a, &b), vec!["canaries"]);
        std::fs::write(status.join("source.json"), "{\"ready\":true}").unwrap();
        std::fs::write(status.join("images.json"), "{}").unwrap();
        // A sync attempt may have changed a cluster's objects too.
        assert_eq!(
            changed(&b, &fingerprint(dir.path())),
            vec!["images", "objects", "sources"]
        );
    }

    #[tokio::test]
    async fn a_stream_says_hello_then_each_change() {
        use http_body_util::BodyExt;
        let dir = tempfile::tempdir().unwrap();
        let changes = Changes::start(dir.path().to_path_buf());
        let mut stream = changes.subscribe();
        let hello = stream.frame().await.unwrap().unwrap().into_data().unwrap();
        assert!(String::from_utf8_lossy(&hello).contains("event: hello"));
        // Let the watcher take its first look, then change a canary.
        tokio::time::sleep(POLL + Duration::from_millis(300)).await;
        let path = dir
            .path()
            .join("status/flagger.app/Canary/test/podinfo.json");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "{}").unwrap();
        let next = tokio::time::timeout(Duration::from_secs(5), stream.frame())
            .await
            .expect("a change event within the poll")
            .unwrap()
            .unwrap()
            .into_data()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&next),
            "event: change\ndata: {\"areas\":[\"canaries\"]}\n\n"
        );
        // At shutdown the stream ends, so the server's graceful shutdown can finish.
        changes.close();
        let end = tokio::time::timeout(Duration::from_secs(5), stream.frame()).await;
        assert!(matches!(end, Ok(None)), "the stream ended");
    }
}
