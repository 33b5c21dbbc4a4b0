//! What `gitcanary install --export` prints: the manifests of `deploy/manifests/`,
//! embedded in the binary so they always match its version (as `flux install --export`
//! does), with the Git source of the config and the image filled in from flags. It owns
//! only text generation; it never talks to a cluster.

use crate::config::Config;
use crate::manifest::yaml::parse_documents;
use std::path::Path;

/// The files of `deploy/manifests/`, in apply order (Namespace and CRDs first).
pub const MANIFESTS: [(&str, &str); 8] = [
    (
        "00-namespace.yaml",
        include_str!("../deploy/manifests/00-namespace.yaml"),
    ),
    (
        "01-crd-canaries.yaml",
        include_str!("../deploy/manifests/01-crd-canaries.yaml"),
    ),
    (
        "02-crd-metrictemplates.yaml",
        include_str!("../deploy/manifests/02-crd-metrictemplates.yaml"),
    ),
    (
        "03-crd-alertproviders.yaml",
        include_str!("../deploy/manifests/03-crd-alertproviders.yaml"),
    ),
    (
        "10-rbac.yaml",
        include_str!("../deploy/manifests/10-rbac.yaml"),
    ),
    (
        "20-config.yaml",
        include_str!("../deploy/manifests/20-config.yaml"),
    ),
    (
        "30-deployment.yaml",
        include_str!("../deploy/manifests/30-deployment.yaml"),
    ),
    (
        "40-service.yaml",
        include_str!("../deploy/manifests/40-service.yaml"),
    ),
];

/// The config file's key in the ConfigMap.
pub const CONFIG_KEY: &str = "gitcanary.yaml";

/// Errors of `install --export`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag's value cannot be used.
    #[error("--{flag} {value:?}: {reason}")]
    Flag {
        /// The flag, without dashes.
        flag: &'static str,
        /// What was given.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// The filled-in config does not load (names the manifest file).
    #[error("{file}: {CONFIG_KEY}:{message}")]
    Config {
        /// The manifest file holding the ConfigMap.
        file: &'static str,
        /// The config loader's `line:col: field: what`.
        message: String,
    },
}

/// Result with the install error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The flags of `install --export`; `None` keeps the manifests' default.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `source.url`.
    pub url: Option<String>,
    /// `source.branch`.
    pub branch: Option<String>,
    /// `source.path`.
    pub path: Option<String>,
    /// The container image of the Deployment.
    pub image: Option<String>,
}

/// Where each flag lands: the file and the line prefix whose value it replaces.
const CONFIG_FILE: &str = "20-config.yaml";
const DEPLOYMENT_FILE: &str = "30-deployment.yaml";

/// All manifests as one multi-document YAML stream, with the flags filled in. The
/// resulting config is loaded before anything is printed, so a bad value fails here
/// rather than in a crash-looping pod.
pub fn export(opts: &Options) -> Result<String> {
    let mut out = format!(
        "# gitcanary {} install manifests: gitcanary install --export | kubectl apply -f -\n",
        env!("CARGO_PKG_VERSION")
    );
    for (file, text) in MANIFESTS {
        let text = match file {
            CONFIG_FILE => fill_config(text, opts)?,
            DEPLOYMENT_FILE => match &opts.image {
                Some(image) => {
                    check_image(image)?;
                    set_line_value(text, "          image: ", image)
                }
                None => text.to_string(),
            },
            _ => text.to_string(),
        };
        out.push_str("---\n");
        out.push_str(&text);
    }
    Ok(out)
}

fn fill_config(text: &str, opts: &Options) -> Result<String> {
    let mut text = text.to_string();
    if let Some(url) = &opts.url {
        check_url(url)?;
        text = set_line_value(&text, "      url: ", url);
    }
    if let Some(branch) = &opts.branch {
        check_branch(branch)?;
        text = set_line_value(&text, "      branch: ", branch);
    }
    if let Some(path) = &opts.path {
        check_path(path)?;
        text = set_line_value(&text, "      path: ", path);
    }
    let config = config_text(&text).map_err(|message| Error::Config {
        file: CONFIG_FILE,
        message,
    })?;
    Config::parse(&config, Path::new("/etc/gitcanary")).map_err(|message| Error::Config {
        file: CONFIG_FILE,
        message,
    })?;
    Ok(text)
}

/// The config file held by a ConfigMap manifest.
pub fn config_text(configmap: &str) -> Result<String, String> {
    let docs = parse_documents(configmap).map_err(|e| format!("{e}"))?;
    docs.into_iter()
        .map(|d| d.root.to_json())
        .find_map(|v| v["data"][CONFIG_KEY].as_str().map(str::to_string))
        .ok_or_else(|| " no such key in the ConfigMap".to_string())
}

/// Replaces the value of the one line starting with `prefix` by `value`, quoted as a
/// JSON string (valid YAML whatever it holds, newlines and `#` included). The prefixes
/// are fixed by the embedded manifests, and a test checks each occurs exactly once.
fn set_line_value(text: &str, prefix: &str, value: &str) -> String {
    let quoted = serde_json::Value::from(value).to_string();
    text.lines()
        .map(|line| match line.strip_prefix(prefix) {
            Some(_) => format!("{prefix}{quoted}\n"),
            None => format!("{line}\n"),
        })
        .collect()
}

fn flag_error(flag: &'static str, value: &str, reason: &str) -> Error {
    Error::Flag {
        flag,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn check_url(url: &str) -> Result<()> {
    if url.trim().is_empty() || url.chars().any(char::is_control) {
        return Err(flag_error("url", url, "expected a repository URL"));
    }
    if crate::source::credentials::is_local(url) {
        return Err(flag_error(
            "url",
            url,
            "the pod cannot reach a repository on this machine; use an https:// or ssh:// URL",
        ));
    }
    Ok(())
}

fn check_branch(branch: &str) -> Result<()> {
    if !git2::Reference::is_valid_name(&format!("refs/heads/{branch}")) {
        return Err(flag_error("branch", branch, "not a valid branch name"));
    }
    Ok(())
}

fn check_path(path: &str) -> Result<()> {
    if path.chars().any(char::is_control) {
        return Err(flag_error(
            "path",
            path,
            "control characters are not allowed",
        ));
    }
    if Path::new(path).is_absolute()
        || Path::new(path)
            .components()
            .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(flag_error(
            "path",
            path,
            "expected a folder inside the repository, such as ./clusters/prod",
        ));
    }
    Ok(())
}

fn check_image(image: &str) -> Result<()> {
    if image.is_empty() || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(flag_error(
            "image",
            image,
            "expected an image reference such as registry.example.com/gitcanary:0.1.0",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str) -> &'static str {
        MANIFESTS.iter().find(|(f, _)| *f == name).unwrap().1
    }

    #[test]
    fn every_flag_replaces_exactly_one_line() {
        for (name, prefix) in [
            (CONFIG_FILE, "      url: "),
            (CONFIG_FILE, "      branch: "),
            (CONFIG_FILE, "      path: "),
            (DEPLOYMENT_FILE, "          image: "),
        ] {
            let hits = file(name).lines().filter(|l| l.starts_with(prefix)).count();
            assert_eq!(hits, 1, "{name}: {prefix:?}");
        }
    }

    #[test]
    fn values_are_quoted_so_yaml_reads_them_back_unchanged() {
        let opts = Options {
            url: Some("https://git.example.com/org/fleet.git#frag: x".into()),
            branch: Some("release/1.0".into()),
            path: Some("./clusters/prod # not a comment".into()),
            image: None,
        };
        let out = export(&opts).unwrap();
        let cm = out
            .split("---\n")
            .find(|d| d.contains("kind: ConfigMap"))
            .unwrap();
        let cfg = Config::parse(&config_text(cm).unwrap(), Path::new("/etc/gitcanary")).unwrap();
        assert_eq!(
            cfg.source.url,
            "https://git.example.com/org/fleet.git#frag: x"
        );
        assert_eq!(cfg.source.branch, "release/1.0");
        assert_eq!(cfg.source.path, "./clusters/prod # not a comment");
    }

    #[test]
    fn bad_flags_are_refused_naming_the_flag() {
        let cases = [
            (
                Options {
                    url: Some("/srv/fleet.git".into()),
                    ..Default::default()
                },
                "--url",
            ),
            (
                Options {
                    url: Some("file:///srv/x".into()),
                    ..Default::default()
                },
                "--url",
            ),
            (
                Options {
                    url: Some("https://x/\ny".into()),
                    ..Default::default()
                },
                "--url",
            ),
            (
                Options {
                    branch: Some("a..b".into()),
                    ..Default::default()
                },
                "--branch",
            ),
            (
                Options {
                    branch: Some("".into()),
                    ..Default::default()
                },
                "--branch",
            ),
            (
                Options {
                    path: Some("../other".into()),
                    ..Default::default()
                },
                "--path",
            ),
            (
                Options {
                    path: Some("/abs".into()),
                    ..Default::default()
                },
                "--path",
            ),
            (
                Options {
                    image: Some("a b".into()),
                    ..Default::default()
                },
                "--image",
            ),
        ];
        for (opts, flag) in cases {
            let e = export(&opts).unwrap_err().to_string();
            assert!(e.starts_with(flag), "{opts:?}: {e}");
        }
    }
}
