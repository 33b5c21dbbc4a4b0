//! `gitcanary images allow IMAGE:TAG`: clears a rejected tag, so image automation may
//! select it again. The clearing is a note entry on the branch head, written through a
//! Git writer of its own (on a scratch clone, so it never shares the daemon's cache
//! repository), and the daemon's cached set is updated at once.

use crate::config::Config;
use crate::history::note::{Entry, TagAction, TagRecord};
use crate::history::writer::{Retry, Writer};
use crate::image::rejected;
use crate::source::git::GitSource;
use crate::util::time::unix_now;
use std::process::ExitCode;

/// Clears the rejection of `image_tag`; exit 1 when it was not rejected.
pub fn allow(cfg: Config, image_tag: &str) -> anyhow::Result<ExitCode> {
    let (image, tag) = rejected::parse_image_tag(image_tag).map_err(anyhow::Error::msg)?;
    let state = cfg.state_dir();
    if rejected::read(&state).allows(&image, &tag) {
        eprintln!("{image}:{tag} is not rejected");
        return Ok(ExitCode::FAILURE);
    }
    let at = unix_now();
    // A scratch clone of its own, removed after: the daemon's cache repository is its
    // writer's alone.
    let scratch = state.join(format!("allow-{}", std::process::id()));
    let noted = note_allowed(&cfg, &scratch, &image, &tag, at);
    let _ = std::fs::remove_dir_all(&scratch);
    let head = noted?;
    rejected::record(
        &state,
        [rejected::Entry::Allowed {
            image: image.clone(),
            tag: tag.clone(),
            at,
        }],
    )?;
    println!(
        "✔ allowed {image}:{tag}: image automation may select it again (recorded on {})",
        &head[..head.len().min(12)]
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes the `tagAllowed` note entry on the branch head; the head.
fn note_allowed(
    cfg: &Config,
    scratch: &std::path::Path,
    image: &str,
    tag: &str,
    at: f64,
) -> anyhow::Result<String> {
    let source = GitSource::new(&cfg.source, &cfg.base_dir, scratch);
    let head = source.fetch()?.commit;
    let author = (cfg.git.author.name.clone(), cfg.git.author.email.clone());
    let writer = Writer::start(source, author, Retry::default())?;
    let record = TagRecord {
        action: TagAction::Allowed,
        image: image.to_string(),
        tag: tag.to_string(),
        time: at,
        canary: String::new(),
        reason: "gitcanary images allow".into(),
        extra: Default::default(),
    };
    writer.note(&head, vec![Entry::Tag(record)])?;
    Ok(head)
}
