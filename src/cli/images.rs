//! `gitcanary images allow IMAGE:TAG`: clears a rejected tag, so image automation may
//! select it again.

use crate::config::Config;
use crate::image::rejected::{self, Entry};
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
    let entry = Entry::Allowed {
        image: image.clone(),
        tag: tag.clone(),
        at: unix_now(),
    };
    rejected::record(&state, [entry])?;
    println!("✔ allowed {image}:{tag}: image automation may select it again");
    Ok(ExitCode::SUCCESS)
}
