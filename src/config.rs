//! The `gitcanary.yaml` config. Unknown keys are errors that name the key and line.
//! Secrets are never written here: the config names environment variables and files.

use crate::manifest::de::{from_node, DeError};
use crate::manifest::yaml::parse_documents;
use crate::util::duration;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Errors loading the config.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// There is no config file at the path: a hint names both ways to give one.
    #[error("{path}: no such config file; pass --config FILE or set GITCANARY_CONFIG")]
    NotFound {
        /// The file.
        path: PathBuf,
    },
    /// The file could not be read. The cause is part of the message and not a
    /// `source`, so `{:#}` chains print it once.
    #[error("{path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: std::io::Error,
    },
    /// The file is not valid.
    #[error("{path}:{message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// `line:col: field: what`.
        message: String,
    },
}

/// Result with the config error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The whole config.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// The Git repository to follow.
    pub source: SourceConfig,
    /// Where to apply.
    #[serde(default)]
    pub target: TargetConfig,
    /// Git identity for commits gitcanary makes.
    #[serde(default)]
    pub git: GitConfig,
    /// The HTTP server for `/metrics`, `/healthz` and push webhooks.
    #[serde(default)]
    pub server: ServerConfig,
    /// Image automation.
    #[serde(default)]
    pub images: ImagesConfig,
    /// The canary engine.
    #[serde(default)]
    pub canary: CanaryConfig,
    /// The load tester's HTTP API (off unless `listen` is set).
    #[serde(default)]
    pub loadtester: LoadTesterConfig,
    /// Rollout history in Git: notes and rollbacks.
    #[serde(default)]
    pub history: HistoryConfig,
    /// Notifications of sync failures and recoveries, image updates, rollbacks written
    /// to Git and rejected tags.
    #[serde(default)]
    pub notifications: NotificationsConfig,
    /// Folder of the config file; relative paths in it are taken from here.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `source:`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SourceConfig {
    /// Name shown by `get sources`; Flux bootstraps the cluster repo as `flux-system`.
    #[serde(default = "default_source_name")]
    pub name: String,
    /// https, ssh, `file://` or a local path.
    pub url: String,
    /// Branch to follow.
    #[serde(default = "default_branch")]
    pub branch: String,
    /// Sub-folder to sync.
    #[serde(default)]
    pub path: String,
    /// Fetch interval.
    #[serde(default = "default_interval", with = "duration::serde_go")]
    pub interval: Duration,
    /// How long an applied revision's workloads may take to become healthy on the
    /// Kubernetes target (Flux's Kustomization `spec.timeout`); the interval when unset.
    #[serde(default, deserialize_with = "duration::serde_go_opt::deserialize")]
    pub timeout: Option<Duration>,
    /// Credentials.
    #[serde(default)]
    pub auth: Option<Auth>,
    /// The folder under which charts may come from Git repositories on this machine
    /// (`file://` or a path in `chart.git` or a GitRepository); unset refuses them all.
    #[serde(default)]
    pub local_chart_root: Option<PathBuf>,
}

/// `source.auth`: exactly one of `ssh` or `https`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Auth {
    /// SSH key authentication.
    pub ssh: Option<SshAuth>,
    /// HTTPS token or username/password.
    pub https: Option<HttpsAuth>,
}

/// `source.auth.ssh`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SshAuth {
    /// Private key file (ed25519 or RSA).
    pub private_key_file: PathBuf,
    /// `known_hosts` file the server's host key must be in.
    pub known_hosts_file: PathBuf,
    /// Env var holding the key's passphrase, if any.
    pub passphrase_env: Option<String>,
}

/// `source.auth.https`: a token, or a username and password, each from an env var.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpsAuth {
    /// Env var holding a token (sent as the password).
    pub token_env: Option<String>,
    /// Env var holding the username.
    pub username_env: Option<String>,
    /// Env var holding the password.
    pub password_env: Option<String>,
}

/// `target:`; the local target is the default.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TargetConfig {
    /// The embedded local target.
    pub local: Option<LocalTarget>,
    /// A Kubernetes cluster.
    pub kubernetes: Option<KubeTarget>,
}

/// `target.local`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LocalTarget {
    /// State folder; defaults to `.gitcanary` beside the config file.
    pub state_dir: Option<PathBuf>,
    /// Commands for containers with no `command`, keyed by image repository, e.g.
    /// `ghcr.io/stefanprodan/podinfo: ["gitcanary", "demo-app", "--port", "$(PORT)"]`.
    #[serde(default)]
    pub images: std::collections::BTreeMap<String, Vec<String>>,
    /// Fixed listen addresses for Services, keyed `namespace/name` (first port);
    /// other Services get a free loopback port, kept across restarts.
    #[serde(default)]
    pub services: std::collections::BTreeMap<String, String>,
    /// Webhook hosts whose first label contains one of these are served by the built-in
    /// load tester (`http://flagger-loadtester.test/` and the helm tester
    /// `http://flagger-helmtester.kube-system/` work unchanged).
    #[serde(default = "default_loadtester_names")]
    pub loadtester_names: Vec<String>,
    /// Open connections per Service listener; further clients wait to be accepted.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

fn default_max_connections() -> usize {
    crate::util::listen::DEFAULT_MAX_CONNECTIONS
}

fn default_loadtester_names() -> Vec<String> {
    vec![
        "loadtester".into(),
        "load-tester".into(),
        "helmtester".into(),
        "helm-tester".into(),
    ]
}

impl Default for LocalTarget {
    fn default() -> Self {
        LocalTarget {
            state_dir: None,
            images: Default::default(),
            services: Default::default(),
            loadtester_names: default_loadtester_names(),
            max_connections: default_max_connections(),
        }
    }
}

/// `target.kubernetes`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeTarget {
    /// kubeconfig file (`~` expanded); without it, the in-cluster service account when
    /// running in a pod, else `$KUBECONFIG` or `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// kubeconfig context; the file's current context when absent.
    pub context: Option<String>,
    /// Field manager of server-side apply.
    #[serde(default = "default_field_manager")]
    pub field_manager: String,
    /// Namespace holding gitcanary's inventory and lease.
    #[serde(default = "default_kube_namespace")]
    pub namespace: String,
    /// Take ownership of fields other managers own (server-side apply `force`).
    #[serde(default)]
    pub force: bool,
    /// Folder for the Git and chart caches and status files; defaults to `.gitcanary`
    /// beside the config file. Disposable: the inventory lives in the cluster, so a pod
    /// can keep it on an emptyDir.
    pub state_dir: Option<PathBuf>,
}

fn default_field_manager() -> String {
    "gitcanary".into()
}

fn default_kube_namespace() -> String {
    "gitcanary".into()
}

/// `git:`
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GitConfig {
    /// Commit author.
    #[serde(default)]
    pub author: Author,
}

/// `git.author`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Author {
    /// Name.
    pub name: String,
    /// Email.
    pub email: String,
}

impl Default for Author {
    fn default() -> Self {
        Author {
            name: "gitcanary".into(),
            email: "gitcanary@localhost".into(),
        }
    }
}

/// `server:`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServerConfig {
    /// Listen address; port 0 picks a free port.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Env var holding the push-webhook secret; without it `/hook` is disabled.
    pub webhook_secret_env: Option<String>,
    /// Open connections at once; further clients wait to be accepted.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Env var holding the web UI's token: when set, `/ui` and `/api` need it (a login
    /// form sets a session cookie) and the UI's actions are on. The daemon API
    /// (`gitcanary reconcile|suspend|resume`) then takes it as a bearer token.
    pub ui_token_env: Option<String>,
    /// The name and namespace in Flux's receiver path `/hook/<digest>`.
    #[serde(default)]
    pub receiver: ReceiverConfig,
}

/// `server.receiver`: what Flux's receiver path digest,
/// `sha256(token + name + namespace)`, takes as the Receiver's name and namespace, so a
/// Git host's webhook URL from Flux keeps working.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReceiverConfig {
    /// The Receiver's name; `source.name` when unset.
    pub name: Option<String>,
    /// The Receiver's namespace; `flux-system` when unset.
    pub namespace: Option<String>,
}

impl Config {
    /// The receiver name and namespace of `/hook/<digest>`.
    pub fn receiver(&self) -> (String, String) {
        let r = &self.server.receiver;
        (
            r.name.clone().unwrap_or_else(|| self.source.name.clone()),
            r.namespace.clone().unwrap_or_else(|| "flux-system".into()),
        )
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            webhook_secret_env: None,
            max_connections: default_max_connections(),
            ui_token_env: None,
            receiver: Default::default(),
        }
    }
}

/// `canary:`
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CanaryConfig {
    /// Canaries analysed at once; the rest wait in `Waiting` (Flagger has no cap, #1069).
    pub max_concurrent_canaries: Option<u32>,
    /// The prefix of the env vars an `AlertProvider.spec.addressEnv` may name, so a pusher
    /// cannot send gitcanary's other variables (its secrets) to an address of theirs.
    pub alert_address_env_prefix: Option<String>,
}

impl CanaryConfig {
    /// `alertAddressEnvPrefix`, by default `GITCANARY_ALERT_`.
    pub fn alert_address_env_prefix(&self) -> &str {
        self.alert_address_env_prefix
            .as_deref()
            .unwrap_or("GITCANARY_ALERT_")
    }
}

/// `history:`
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HistoryConfig {
    /// Commit the reverse of a failed canary's change for every canary (one Canary opts
    /// in with the `gitcanary.io/revert-on-failure: "true"` annotation).
    #[serde(default)]
    pub revert_on_failure: bool,
}

/// `loadtester:`: the load tester's HTTP API. Canary webhooks reach the load tester in
/// process; this listener is only for callers outside gitcanary.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LoadTesterConfig {
    /// Listen address of the API; unset (the default) serves no HTTP at all.
    pub listen: Option<String>,
    /// Env var holding the bearer token callers must present.
    pub token_env: Option<String>,
    /// File holding the bearer token (instead of `tokenEnv`).
    pub token_file: Option<PathBuf>,
}

/// `notifications:`: where gitcanary's own events go (the canary's alerts go to the
/// AlertProviders its Canaries name).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NotificationsConfig {
    /// Providers, each with its severity filter.
    #[serde(default)]
    pub providers: Vec<NotificationProvider>,
}

/// `notifications.providers[]`: an AlertProvider's fields, with the address read from a
/// file (a webhook URL is a secret).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NotificationProvider {
    /// Name used in logs.
    pub name: String,
    /// `slack`, `rocket`, `msteams`, `discord`, `gchat` or `generic`.
    #[serde(rename = "type")]
    pub kind: String,
    /// File holding the webhook address.
    pub address_file: PathBuf,
    /// Slack/Rocket channel.
    pub channel: Option<String>,
    /// Name messages are posted as.
    pub username: Option<String>,
    /// Lowest severity sent: `info` (default), `warn` or `error`.
    #[serde(default = "default_severity")]
    pub severity: String,
}

fn default_severity() -> String {
    "info".into()
}

/// `images:`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ImagesConfig {
    /// Whether image automation runs at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How often registries are scanned.
    #[serde(default = "default_images_interval", with = "duration::serde_go")]
    pub interval: Duration,
    /// Registries spoken to over plain http (loopback ones always are).
    #[serde(default)]
    pub insecure_registries: Vec<String>,
    /// A docker `config.json` with `auths.<host>.auth` credentials.
    pub docker_config: Option<PathBuf>,
    /// Credentials from env vars, per registry host.
    #[serde(default)]
    pub credentials: Vec<RegistryCredentials>,
    /// Tags kept per image at most.
    #[serde(default = "default_max_tags")]
    pub max_tags: usize,
    /// Tags matching any of these regexes are ignored (Flux's default skips signatures).
    #[serde(default = "default_exclusions")]
    pub exclusion_list: Vec<String>,
    /// Push attempts when the remote moves under us.
    #[serde(default = "default_push_retries")]
    pub push_retries: u32,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        ImagesConfig {
            enabled: true,
            interval: default_images_interval(),
            insecure_registries: vec![],
            docker_config: None,
            credentials: vec![],
            max_tags: default_max_tags(),
            exclusion_list: default_exclusions(),
            push_retries: default_push_retries(),
        }
    }
}

/// `images.credentials[]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegistryCredentials {
    /// Registry host, e.g. `ghcr.io`.
    pub registry: String,
    /// Env var holding the username.
    pub username_env: String,
    /// Env var holding the password or token.
    pub password_env: String,
}

fn yes() -> bool {
    true
}

fn default_images_interval() -> Duration {
    Duration::from_secs(300)
}
fn default_max_tags() -> usize {
    10_000
}
fn default_exclusions() -> Vec<String> {
    vec![r"^.*\.sig$".into()]
}
fn default_push_retries() -> u32 {
    5
}

fn default_source_name() -> String {
    "flux-system".into()
}
fn default_branch() -> String {
    "main".into()
}
fn default_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_listen() -> String {
    "127.0.0.1:9797".into()
}

impl Config {
    /// Loads and validates the config file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|reason| {
            if reason.kind() == std::io::ErrorKind::NotFound {
                Error::NotFound { path: path.into() }
            } else {
                Error::Read {
                    path: path.into(),
                    reason,
                }
            }
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&text, &base).map_err(|message| Error::Invalid {
            path: path.into(),
            message,
        })
    }

    /// Parses config text; relative paths are taken from `base_dir`.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Config, String> {
        let docs = parse_documents(text).map_err(|e| format!("{e}"))?;
        let root = docs
            .into_iter()
            .next()
            .map(|d| d.root)
            .ok_or_else(|| "1:1: the config is empty".to_string())?;
        let mut cfg: Config = from_node(&root, "").map_err(|e: DeError| e.to_string())?;
        cfg.base_dir = base_dir.to_path_buf();
        cfg.validate(&root)?;
        Ok(cfg)
    }

    fn validate(&self, root: &crate::manifest::yaml::Node) -> Result<(), String> {
        let at = |path: &[&str]| {
            root.path(path)
                .map(|n| format!("{}: ", n.pos))
                .unwrap_or_default()
        };
        if self.source.url.trim().is_empty() {
            return Err(format!(
                "{}source.url: must not be empty",
                at(&["source", "url"])
            ));
        }
        if self.source.interval < Duration::from_secs(1) {
            return Err(format!(
                "{}source.interval: must be at least 1s",
                at(&["source", "interval"])
            ));
        }
        if let Some(auth) = &self.source.auth {
            match (&auth.ssh, &auth.https) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err(format!(
                        "{}source.auth: set exactly one of ssh or https",
                        at(&["source", "auth"])
                    ))
                }
                (None, Some(h)) => {
                    let pair = (h.username_env.is_some(), h.password_env.is_some());
                    if h.token_env.is_none() && pair != (true, true)
                        || h.token_env.is_some() && pair != (false, false)
                    {
                        return Err(format!(
                            "{}source.auth.https: set tokenEnv, or both usernameEnv and passwordEnv",
                            at(&["source", "auth", "https"])
                        ));
                    }
                }
                (Some(_), None) => {}
            }
        }
        for (i, re) in self.images.exclusion_list.iter().enumerate() {
            if let Err(e) = regex::Regex::new(re) {
                return Err(format!(
                    "{}images.exclusionList[{i}]: invalid regex: {}",
                    at(&["images", "exclusionList"]),
                    crate::image::policy::regex_error(&e)
                ));
            }
        }
        let lt = &self.loadtester;
        if lt.listen.is_some() && lt.token_env.is_some() == lt.token_file.is_some() {
            return Err(format!(
                "{}loadtester: set exactly one of tokenEnv or tokenFile; the API runs commands, so it is never served without a token",
                at(&["loadtester"])
            ));
        }
        if self.canary.alert_address_env_prefix().is_empty() {
            return Err(format!(
                "{}canary.alertAddressEnvPrefix: must not be empty (it would let an AlertProvider read any variable)",
                at(&["canary", "alertAddressEnvPrefix"])
            ));
        }
        for (i, p) in self.notifications.providers.iter().enumerate() {
            let at = at(&["notifications", "providers"]);
            if let Err(e) = crate::notify::providers::Kind::parse(&p.kind) {
                return Err(format!("{at}notifications.providers[{i}].type: {e}"));
            }
            if crate::notify::providers::Severity::parse(&p.severity).is_none() {
                return Err(format!(
                    "{at}notifications.providers[{i}].severity: {:?} is not info, warn or error",
                    p.severity
                ));
            }
        }
        if self.target.local.is_some() && self.target.kubernetes.is_some() {
            return Err(format!(
                "{}target: set only one of local or kubernetes",
                at(&["target"])
            ));
        }
        Ok(())
    }

    /// Resolves a path from the config against its folder.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            // `./state` is `<base>/state`, not `<base>/./state`, in messages too.
            p.components()
                .filter(|c| *c != std::path::Component::CurDir)
                .fold(self.base_dir.clone(), |acc, c| acc.join(c))
        }
    }

    /// The state dir: `target.local.stateDir` or `target.kubernetes.stateDir`.
    pub fn state_dir(&self) -> PathBuf {
        let local = self.target.local.as_ref().and_then(|l| l.state_dir.clone());
        let kube = self
            .target
            .kubernetes
            .as_ref()
            .and_then(|k| k.state_dir.clone());
        let dir = local.or(kube).unwrap_or_else(|| ".gitcanary".into());
        self.resolve(&dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply() {
        let c = Config::parse("source:\n  url: /tmp/repo\n", Path::new("/etc/gc")).unwrap();
        assert_eq!(c.source.branch, "main");
        assert_eq!(c.source.interval, Duration::from_secs(60));
        assert_eq!(c.source.name, "flux-system");
        assert_eq!(c.state_dir(), PathBuf::from("/etc/gc/.gitcanary"));
        assert_eq!(c.git.author.name, "gitcanary");
    }

    #[test]
    fn relative_paths_print_without_dot_segments() {
        let c = Config::parse(
            "source:\n  url: /tmp/repo\ntarget:\n  local:\n    stateDir: ./state\n",
            Path::new("/srv/demo"),
        )
        .unwrap();
        // Path equality ignores `.` segments; what the user reads is the display.
        assert_eq!(c.state_dir().display().to_string(), "/srv/demo/state");
    }

    #[test]
    fn the_kubernetes_target_takes_a_state_dir() {
        let c = Config::parse(
            "source:\n  url: x\ntarget:\n  kubernetes:\n    stateDir: /var/lib/gitcanary\n",
            Path::new("/etc/gitcanary"),
        )
        .unwrap();
        assert_eq!(c.state_dir(), PathBuf::from("/var/lib/gitcanary"));
        let c = Config::parse(
            "source:\n  url: x\ntarget:\n  kubernetes: {}\n",
            Path::new("/etc/gc"),
        )
        .unwrap();
        assert_eq!(c.state_dir(), PathBuf::from("/etc/gc/.gitcanary"));
    }

    #[test]
    fn a_missing_config_names_both_ways_to_give_one_and_its_cause_once() {
        let dir = tempfile::tempdir().unwrap();
        let e = Config::load(&dir.path().join("gitcanary.yaml")).unwrap_err();
        let text = format!("{:#}", anyhow::Error::from(e));
        assert!(
            text.contains("--config FILE or set GITCANARY_CONFIG"),
            "{text}"
        );
        assert!(!text.contains("os error"), "{text}");
        // Other read errors keep their cause, said once.
        let e = Config::load(dir.path()).unwrap_err();
        let text = format!("{:#}", anyhow::Error::from(e));
        assert_eq!(text.matches("os error").count(), 1, "{text}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = Config::parse("source:\n  url: x\n  brnch: dev\n", Path::new(".")).unwrap_err();
        assert!(
            e.starts_with("3:3: source.brnch: unknown field `brnch`"),
            "{e}"
        );
        let e = Config::parse("source:\n  url: x\n  interval: 5\n", Path::new(".")).unwrap_err();
        assert_eq!(
            e,
            "3:13: source.interval: expected a string, found integer (quote the value)"
        );
        let e = Config::parse("source:\n  url: x\n  interval: 5y\n", Path::new(".")).unwrap_err();
        assert!(
            e.starts_with("3:13: source.interval: invalid duration"),
            "{e}"
        );
        let e = Config::parse(
            "source:\n  url: x\n  auth:\n    https:\n      password: hunter2\n",
            Path::new("."),
        )
        .unwrap_err();
        assert!(
            e.contains("source.auth.https.password: unknown field"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "secret echoed: {e}");
        let e = Config::parse(
            "source:\n  url: x\n  auth: {https: {usernameEnv: U}}\n",
            Path::new("."),
        )
        .unwrap_err();
        assert!(
            e.contains("set tokenEnv, or both usernameEnv and passwordEnv"),
            "{e}"
        );
    }

    #[test]
    fn loadtester_api_needs_a_token_and_alert_prefix_is_not_empty() {
        let c = Config::parse("source:\n  url: x\n", Path::new(".")).unwrap();
        assert_eq!(c.loadtester.listen, None, "no load tester API by default");
        assert_eq!(c.canary.alert_address_env_prefix(), "GITCANARY_ALERT_");
        let e = Config::parse(
            "source:\n  url: x\nloadtester:\n  listen: 127.0.0.1:8080\n",
            Path::new("."),
        )
        .unwrap_err();
        assert!(
            e.starts_with("4:3: loadtester: set exactly one of tokenEnv or tokenFile"),
            "{e}"
        );
        let c = Config::parse(
            "source:\n  url: x\nloadtester:\n  listen: 127.0.0.1:8080\n  tokenEnv: LT_TOKEN\n",
            Path::new("."),
        )
        .unwrap();
        assert_eq!(c.loadtester.token_env.as_deref(), Some("LT_TOKEN"));
        let e = Config::parse(
            "source:\n  url: x\ncanary:\n  alertAddressEnvPrefix: \"\"\n",
            Path::new("."),
        )
        .unwrap_err();
        assert!(
            e.contains("canary.alertAddressEnvPrefix: must not be empty"),
            "{e}"
        );
    }
}
