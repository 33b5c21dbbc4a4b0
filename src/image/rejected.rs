//! Rejected tags: a tag whose canary failed is never selected again for its image
//! (flux2 #4676: automation pushed the failed tag straight back). A newer tag still is.
//! The set is the fold of rejection and allow entries in time order; the notes under
//! `refs/notes/gitcanary` hold those entries, and `status/rejected-tags.json` caches
//! the fold for the running process. `allows` is the pure filter automation applies
//! before `policy::select`.

use crate::manifest::kustomize::split_image;
use crate::oci::reference::ImageRepo;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Why a tag is rejected.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejection {
    /// The image repository, normalised (`docker.io/library/podinfo`).
    pub image: String,
    /// The rejected tag.
    pub tag: String,
    /// The canary whose analysis failed (`podinfo.test`).
    pub canary: String,
    /// The commit that brought the tag.
    pub commit: String,
    /// When (Unix seconds).
    pub at: f64,
}

/// One entry of the record: a rejection, or its clearing by `gitcanary images allow`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum Entry {
    /// The tag was rolled back.
    Rejected(Rejection),
    /// The tag may be selected again.
    #[serde(rename_all = "camelCase")]
    Allowed {
        /// The image repository, normalised.
        image: String,
        /// The tag.
        tag: String,
        /// When (Unix seconds).
        at: f64,
    },
}

impl Entry {
    fn at(&self) -> f64 {
        match self {
            Entry::Rejected(r) => r.at,
            Entry::Allowed { at, .. } => *at,
        }
    }
}

/// The image repository as automation keys it: `podinfo` and
/// `docker.io/library/podinfo` are one image.
pub fn normalise(repo: &str) -> String {
    ImageRepo::parse(repo).to_string()
}

/// Splits `IMAGE:TAG` into the normalised image and the tag.
pub fn parse_image_tag(s: &str) -> Result<(String, String), String> {
    match split_image(s) {
        (repo, Some(tag), None) if !repo.is_empty() && !tag.is_empty() => {
            Ok((normalise(repo), tag.to_string()))
        }
        _ => Err(format!(
            "{s:?}: expected IMAGE:TAG, e.g. ghcr.io/stefanprodan/podinfo:6.0.1"
        )),
    }
}

/// The rejected tags, by image and tag.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Rejected {
    /// Rejections by `(image, tag)`.
    #[serde(with = "as_list")]
    pub tags: BTreeMap<(String, String), Rejection>,
}

mod as_list {
    use super::Rejection;
    use serde::{Deserialize, Deserializer, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<S: Serializer>(
        m: &BTreeMap<(String, String), Rejection>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.values())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<(String, String), Rejection>, D::Error> {
        let list = Vec::<Rejection>::deserialize(d)?;
        Ok(list
            .into_iter()
            .map(|r| ((super::normalise(&r.image), r.tag.clone()), r))
            .collect())
    }
}

impl Rejected {
    /// Folds entries in time order (ties keep the given order): the last word on a tag wins.
    pub fn fold(entries: impl IntoIterator<Item = Entry>) -> Rejected {
        let mut entries: Vec<Entry> = entries.into_iter().collect();
        entries.sort_by(|a, b| a.at().total_cmp(&b.at()));
        let mut set = Rejected::default();
        for e in entries {
            set.apply(e);
        }
        set
    }

    /// Applies one entry.
    pub fn apply(&mut self, e: Entry) {
        match e {
            Entry::Rejected(mut r) => {
                r.image = normalise(&r.image);
                self.tags.insert((r.image.clone(), r.tag.clone()), r);
            }
            Entry::Allowed { image, tag, .. } => {
                self.tags.remove(&(normalise(&image), tag));
            }
        }
    }

    /// Whether automation may select `tag` for `image`.
    pub fn allows(&self, image: &str, tag: &str) -> bool {
        !self.tags.contains_key(&(normalise(image), tag.to_string()))
    }

    /// The rejected tags of `image`, sorted.
    pub fn of(&self, image: &str) -> Vec<String> {
        let image = normalise(image);
        self.tags
            .keys()
            .filter(|(i, _)| *i == image)
            .map(|(_, t)| t.clone())
            .collect()
    }

    /// `tags` without the rejected ones of `image`.
    pub fn filter(&self, image: &str, tags: &[String]) -> Vec<String> {
        tags.iter()
            .filter(|t| self.allows(image, t))
            .cloned()
            .collect()
    }
}

/// The rejections a failed canary makes: each container image of the target's template
/// (`failed`) that differs from the promoted one, split into image and tag. Digests
/// and untagged images are not tags automation selects, so they are skipped.
pub fn from_failure(
    canary: &str,
    commit: &str,
    failed_images: &[String],
    promoted_images: &[String],
    at: f64,
) -> Vec<Rejection> {
    failed_images
        .iter()
        .filter(|i| !promoted_images.contains(i))
        .filter_map(|i| match split_image(i) {
            (repo, Some(tag), None) => Some(Rejection {
                image: normalise(repo),
                tag: tag.to_string(),
                canary: canary.to_string(),
                commit: commit.to_string(),
                at,
            }),
            _ => None,
        })
        .collect()
}

/// Where the running process caches the set.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("status").join("rejected-tags.json")
}

/// Reads the cached set; empty when there is none or it does not parse (it is rebuilt
/// from the notes at start-up).
pub fn read(state_dir: &Path) -> Rejected {
    std::fs::read(path(state_dir))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Writes the cached set atomically.
pub fn write(state_dir: &Path, set: &Rejected) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(set).expect("the set serializes");
    crate::util::atomic::write(&path(state_dir), &bytes)
}

/// Applies entries to the cached set (read, apply, write).
pub fn record(state_dir: &Path, entries: impl IntoIterator<Item = Entry>) -> std::io::Result<()> {
    let mut set = read(state_dir);
    for e in entries {
        set.apply(e);
    }
    write(state_dir, &set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(image: &str, tag: &str, at: f64) -> Entry {
        Entry::Rejected(Rejection {
            image: image.into(),
            tag: tag.into(),
            canary: "podinfo.test".into(),
            commit: "abc".into(),
            at,
        })
    }

    #[test]
    fn the_last_entry_on_a_tag_wins_in_time_order_and_names_are_normalised() {
        let set = Rejected::fold([
            Entry::Allowed {
                image: "docker.io/library/podinfo".into(),
                tag: "1.0.1".into(),
                at: 30.0,
            },
            rejected("podinfo", "1.0.1", 10.0),
            rejected("podinfo", "1.0.2", 20.0),
        ]);
        assert!(set.allows("podinfo", "1.0.1"), "allowed after rejected");
        assert!(!set.allows("docker.io/library/podinfo", "1.0.2"));
        assert!(set.allows("other", "1.0.2"), "per image");
        assert_eq!(set.of("podinfo"), ["1.0.2"]);
        let tags: Vec<String> = ["1.0.1", "1.0.2", "1.0.3"].map(String::from).into();
        assert_eq!(set.filter("podinfo", &tags), ["1.0.1", "1.0.3"]);
    }

    #[test]
    fn a_failure_rejects_the_changed_images_tags_only() {
        let r = from_failure(
            "podinfo.test",
            "c0ffee",
            &[
                "127.0.0.1:5000/podinfo:1.0.2".into(),
                "sidecar:1".into(),
                "app@sha256:00".into(),
            ],
            &["127.0.0.1:5000/podinfo:1.0.1".into(), "sidecar:1".into()],
            5.0,
        );
        assert_eq!(r.len(), 1);
        assert_eq!(
            (r[0].image.as_str(), r[0].tag.as_str()),
            ("127.0.0.1:5000/podinfo", "1.0.2")
        );
    }

    /// Automation's decision for a Deployment at `current` with `offered` tags.
    fn automation_picks(
        current: &str,
        offered: &[&str],
        set: &Rejected,
    ) -> (Option<String>, String) {
        use crate::image::automation::{decide, Resolved, Scan};
        let text = format!("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: podinfo\n  namespace: test\n  annotations:\n    fluxcd.io/automated: \"true\"\n    fluxcd.io/tag.app: semver:~1.0\nspec:\n  template:\n    spec:\n      containers:\n        - name: app\n          image: reg.example/podinfo:{current}\n");
        let found = crate::image::discover::find_in_file("d.yaml", &text, false);
        assert!(found.errors.is_empty(), "{:?}", found.errors);
        let setters: Vec<_> = found
            .setters
            .into_iter()
            .map(|s| {
                let r = Resolved {
                    interval: None,
                    policy: crate::image::policy::Policy::from_flux_v1("semver:~1.0").unwrap(),
                    image: "reg.example/podinfo".into(),
                    exclusions: vec![],
                    rule: "semver:~1.0".into(),
                };
                (s, Ok(r))
            })
            .collect();
        let scan = Scan {
            tags: offered.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        };
        let scans = [("reg.example/podinfo".to_string(), scan)].into();
        let (changes, rows) = decide(&setters, &scans, set);
        (
            changes.first().map(|c| c.new_tag.clone()),
            rows[0].message.clone(),
        )
    }

    #[test]
    fn automation_skips_a_rejected_tag_and_takes_a_newer_one() {
        let set = Rejected::fold([rejected("reg.example/podinfo", "1.0.1", 1.0)]);
        // Reverted to 1.0.0 while the registry still offers 1.0.1: nothing to do.
        assert_eq!(
            automation_picks("1.0.0", &["1.0.0", "1.0.1"], &set),
            (None, "up to date".to_string())
        );
        // Without the rejection, 1.0.1 would be taken.
        assert_eq!(
            automation_picks("1.0.0", &["1.0.0", "1.0.1"], &Rejected::default())
                .0
                .as_deref(),
            Some("1.0.1")
        );
        // Revert off: Git still holds the rejected tag; no downgrade, and it says why.
        let (pick, why) = automation_picks("1.0.1", &["1.0.0", "1.0.1"], &set);
        assert_eq!(pick, None);
        assert_eq!(
            why,
            "1.0.1 was rejected by a failed canary; waiting for a tag above it"
        );
        // A newer tag moves on, from either.
        for current in ["1.0.0", "1.0.1"] {
            assert_eq!(
                automation_picks(current, &["1.0.0", "1.0.1", "1.0.2"], &set)
                    .0
                    .as_deref(),
                Some("1.0.2")
            );
        }
    }

    #[test]
    fn image_tag_arguments() {
        assert_eq!(
            parse_image_tag("127.0.0.1:5000/podinfo:1.0.2").unwrap(),
            ("127.0.0.1:5000/podinfo".to_string(), "1.0.2".to_string())
        );
        assert!(parse_image_tag("127.0.0.1:5000/podinfo").is_err());
        assert!(parse_image_tag("podinfo@sha256:00").is_err());
    }

    #[test]
    fn the_cache_round_trips_and_a_missing_one_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()), Rejected::default());
        record(dir.path(), [rejected("podinfo", "1.0.2", 1.0)]).unwrap();
        assert!(!read(dir.path()).allows("podinfo", "1.0.2"));
        record(
            dir.path(),
            [Entry::Allowed {
                image: "podinfo".into(),
                tag: "1.0.2".into(),
                at: 2.0,
            }],
        )
        .unwrap();
        assert!(read(dir.path()).allows("podinfo", "1.0.2"));
    }
}
