//! `gitcanary images allow IMAGE:TAG`: clears a rejected tag, so image automation may
//! select it again. The clearing is a note entry on the branch head, written through a
//! Git writer of its own (on a scratch clone, so it never shares the daemon's cache
//! repository), and the daemon's cached set is updated at once. The clearing is then
//! notified (info, `TagAllowed`) through the configured `notifications:` providers.

use crate::config::Config;
use crate::history::note::{first_line, Entry, TagAction, TagRecord};
use crate::history::writer::{Retry, Writer};
use crate::image::rejected;
use crate::notify::{Event, Notifier};
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
    // Before any change: a provider whose address file is missing fails the command
    // with nothing cleared, as it keeps `gitcanary run` from starting.
    let notifier = Notifier::from_config(&cfg)?;
    let by = allowed_by(
        std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .ok(),
    );
    let at = unix_now();
    // A scratch clone of its own, removed after: the daemon's cache repository is its
    // writer's alone.
    let scratch = state.join(format!("allow-{}", std::process::id()));
    let noted = note_allowed(&cfg, &scratch, &image, &tag, &by, at);
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
    notifier.event(Event::TagAllowed {
        image: image.clone(),
        tag: tag.clone(),
        by,
    });
    // The sender posts in the background; the process must not exit before it did.
    notifier.flush(std::time::Duration::from_secs(15));
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
    by: &str,
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
        reason: by.to_string(),
        extra: Default::default(),
    };
    writer.note(&head, vec![Entry::Tag(record)])?;
    Ok(head)
}

/// Who cleared a rejection, for the note and the notification: the command, and the
/// login user when the environment names one.
fn allowed_by(user: Option<String>) -> String {
    // One bounded line: the name lands in the note's text and in chat messages.
    match user.map(|u| first_line(&u)).filter(|u| !u.is_empty()) {
        Some(u) => format!("gitcanary images allow (user {u})"),
        None => "gitcanary images allow".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_is_named_on_one_line_when_known() {
        assert_eq!(
            allowed_by(Some("alice".into())),
            "gitcanary images allow (user alice)"
        );
        assert_eq!(
            allowed_by(Some("eve\nReason: forged".into())),
            "gitcanary images allow (user eve)"
        );
        assert_eq!(allowed_by(Some(" ".into())), "gitcanary images allow");
        assert_eq!(allowed_by(None), "gitcanary images allow");
    }
}
