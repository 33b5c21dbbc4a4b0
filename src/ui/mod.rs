//! The built-in web UI and its JSON API, served on the server listener: `/ui/` (the
//! embedded pages), `/api/v1/` (sources, objects, canaries with their samples, images,
//! history, actions) and `/api/v1/events` (live updates). It reads the same state as
//! `gitcanary get` through `shapes`, and objects through the configured target's
//! [`Target`] trait (so it works on the local target and on Kubernetes alike); it never
//! writes the target, and acts only through the engine's command files and the
//! reconcile trigger. `auth` decides who may read and
//! act; `assets` holds the pages; `sse` the live stream; `history` the Git notes.

pub mod api;
pub mod assets;
pub mod auth;
pub mod history;
pub mod shapes;
pub mod sse;

use crate::config::Config;
use crate::targets::Target;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
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
    /// The target, opened for reading on first use (a cluster may be down at start).
    target: Mutex<Option<Arc<dyn Target>>>,
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
            target: Mutex::new(None),
        }))
    }

    /// The target, opened read-only the first time; blocking (a cluster connects), so
    /// it is called off the async workers. A failed open is tried again next time.
    fn target(&self) -> Result<Arc<dyn Target>, crate::targets::Error> {
        let mut slot = self.0.target.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = slot.as_ref() {
            return Ok(t.clone());
        }
        let t: Arc<dyn Target> = Arc::from(crate::targets::open(&self.0.cfg, false)?);
        *slot = Some(t.clone());
        Ok(t)
    }

    /// Runs `f` over a view of the target and the state dir.
    fn view<T>(&self, f: impl FnOnce(shapes::View) -> shapes::Result<T>) -> shapes::Result<T> {
        let target = self.target()?;
        f(shapes::View {
            target: &*target,
            state_dir: &self.0.state_dir,
        })
    }

    /// Ends the live streams, so the server can shut down gracefully.
    pub fn shutdown(&self) {
        self.0.changes.close();
    }
}
