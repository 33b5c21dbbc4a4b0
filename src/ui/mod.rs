//! The built-in web UI and its JSON API, served on the server listener: `/ui/` (the
//! embedded pages), `/api/v1/` (sources, objects, canaries with their samples, images,
//! history, actions) and `/api/v1/events` (live updates). It reads the same state as
//! `gitcanary get` through `shapes`, never writes the store, and acts only through the
//! engine's command files and the reconcile trigger. `auth` decides who may read and
//! act; `assets` holds the pages; `sse` the live stream; `history` the Git notes.

pub mod api;
pub mod assets;
pub mod auth;
pub mod history;
pub mod shapes;
pub mod sse;

use crate::config::Config;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedSender;

/// What the UI's handlers share.
#[derive(Clone)]
pub struct Ui(Arc<Inner>);

struct Inner {
    cfg: Config,
    state_dir: PathBuf,
    /// The bare repository the source is fetched into (for history notes).
    repo: PathBuf,
    auth: Option<auth::Auth>,
    changes: sse::Changes,
    trigger: UnboundedSender<()>,
}

impl Ui {
    /// The UI over `cfg`'s state; `auth` from `server.uiTokenEnv`; `trigger` asks the
    /// reconcile loop for a sync. Starts the change watcher on the current runtime.
    pub fn new(cfg: Config, auth: Option<auth::Auth>, trigger: UnboundedSender<()>) -> Ui {
        let state_dir = cfg.state_dir();
        let repo = crate::source::git::GitSource::new(&cfg.source, &cfg.base_dir, &state_dir)
            .cache_dir()
            .to_path_buf();
        let changes = sse::Changes::start(state_dir.clone());
        Ui(Arc::new(Inner {
            cfg,
            state_dir,
            repo,
            auth,
            changes,
            trigger,
        }))
    }

    /// Ends the live streams, so the server can shut down gracefully.
    pub fn shutdown(&self) {
        self.0.changes.close();
    }
}
