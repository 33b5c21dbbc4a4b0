//! `gitcanary get sources|objects|...`: reads the state dir, and objects through the
//! configured target, so it works while `run` is active (every file it reads is
//! replaced atomically) and on Kubernetes as on the local target.

use crate::cli::listing::{self, Listing, Row};
use crate::cli::output::{self, Format};
use crate::config::Config;
use crate::targets::local::LocalStore;
use crate::ui::shapes;
use crate::util::time::unix_now;
use clap::Subcommand;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// What to list.
#[derive(Subcommand, Debug)]
pub enum What {
    /// The Git source: URL, branch, fetched and applied revisions, readiness.
    Sources {
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Automated images: policy, image, current and latest allowed tag, last scan.
    Images {
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Services on the local target: listen address and ready endpoints.
    Services {
        /// Only this Service: `namespace/name`, or `name` in `default`.
        service: Option<String>,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Format,
        /// Print only each port's URL, one a line (as `minikube service --url`).
        #[arg(long, conflicts_with = "output")]
        url: bool,
    },
    /// Canaries: phase, weight, failed checks, last transition and status message, as
    /// `kubectl get canaries`.
    Canaries {
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Format,
        /// After the list, print a row whenever a canary changes (Ctrl-C stops).
        #[arg(short = 'w', long)]
        watch: bool,
    },
    /// HelmReleases applied: release, revision, chart, objects, hooks, last hook error.
    #[command(alias = "hr", alias = "helmrelease")]
    Helmreleases {
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Objects applied to the target.
    Objects {
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Format,
        /// After the list, print a row whenever an object is applied (Ctrl-C stops).
        #[arg(short = 'w', long)]
        watch: bool,
    },
}

fn short_rev(rev: &Option<String>) -> String {
    match rev {
        Some(r) => match r.split_once("@sha1:") {
            Some((b, sha)) => format!("{b}@sha1:{}", &sha[..sha.len().min(12)]),
            None => r.clone(),
        },
        None => "-".into(),
    }
}

/// Each Service port's address and how many ready endpoints it has; `only` keeps
/// one Service (`namespace/name`).
pub(super) fn service_rows(state: &Path, only: Option<(&str, &str)>) -> anyhow::Result<Listing> {
    let read = |p: &str| -> serde_json::Value {
        std::fs::read(state.join(p))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    };
    let allocations = read("runtime/services.json");
    let endpoints = read("status/endpoints.json");
    let store = LocalStore::open(state)?;
    let mut rows = Vec::new();
    for (k, addr) in allocations.as_object().into_iter().flatten() {
        let mut parts = k.splitn(3, '/');
        let (Some(ns), Some(name), Some(port)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if only.is_some_and(|o| o != (ns, name)) {
            continue;
        }
        let key = crate::targets::local::proxy::service_key(ns, name);
        let Ok(Some(svc)) = store.get(&key) else {
            continue;
        };
        let selector = svc["spec"]["selector"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let ready = endpoints
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["namespace"] == ns && e["ready"] == true)
            .filter(|e| !selector.is_empty() && selector.iter().all(|(k, v)| e["labels"][k] == *v))
            .count();
        let address = format!("http://{}", addr.as_str().unwrap_or_default());
        rows.push(Row {
            key: k.clone(),
            cells: vec![ns.into(), name.into(), port.into(), address.clone(), ready.to_string()],
            value: serde_json::json!({"namespace": ns, "name": name, "port": port.parse::<u16>().unwrap_or(0),
                "address": address, "readyEndpoints": ready}),
        });
    }
    Ok(Listing {
        headers: &["NAMESPACE", "NAME", "PORT", "ADDRESS", "ENDPOINTS"],
        rows,
    })
}

/// `get services [NAME] [--url]`.
fn print_services(
    state: &Path,
    service: Option<&str>,
    fmt: Format,
    url: bool,
) -> anyhow::Result<ExitCode> {
    let only = service.map(|s| s.split_once('/').unwrap_or(("default", s)));
    let listing = service_rows(state, only)?;
    if let (Some((ns, name)), true) = (only, listing.rows.is_empty()) {
        eprintln!("error: service {ns}/{name} is not on the local target (`gitcanary get services` lists them)");
        return Ok(ExitCode::FAILURE);
    }
    if url {
        for r in &listing.rows {
            println!("{}", r.value["address"].as_str().unwrap_or_default());
        }
    } else {
        listing.print(fmt);
    }
    Ok(ExitCode::SUCCESS)
}

/// Canaries as `kubectl get canaries` shows them; the values are `ui::shapes`'.
fn canary_rows(view: shapes::View) -> anyhow::Result<Listing> {
    let cell = |v: &serde_json::Value, k: &str| match &v[k] {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let rows = shapes::canaries(view)?
        .into_iter()
        .map(|v| Row {
            key: format!("{}/{}", cell(&v, "namespace"), cell(&v, "name")),
            cells: [
                "namespace",
                "name",
                "status",
                "weight",
                "failedChecks",
                "lastTransitionTime",
                "message",
            ]
            .iter()
            .map(|k| cell(&v, k))
            .collect(),
            value: v,
        })
        .collect();
    Ok(Listing {
        headers: &[
            "NAMESPACE",
            "NAME",
            "STATUS",
            "WEIGHT",
            "FAILEDCHECKS",
            "LASTTRANSITIONTIME",
            "MESSAGE",
        ],
        rows,
    })
}

/// Objects in the inventory, with the revision and file that last wrote each; the
/// values are `ui::shapes`'.
fn object_rows(view: shapes::View) -> anyhow::Result<Listing> {
    let text = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
    let rows = shapes::objects(view)?
        .into_iter()
        .map(|v| {
            let ns = match text(&v, "namespace") {
                n if n.is_empty() => "-".to_string(),
                n => n,
            };
            let rev = text(&v, "revision");
            let group = text(&v, "apiVersion")
                .rsplit_once('/')
                .map(|(g, _)| g.to_string())
                .unwrap_or_default();
            Row {
                key: format!(
                    "{group}/{}/{}/{}",
                    text(&v, "kind"),
                    text(&v, "namespace"),
                    text(&v, "name")
                ),
                cells: vec![
                    text(&v, "kind"),
                    ns,
                    text(&v, "name"),
                    rev[..rev.len().min(12)].to_string(),
                    text(&v, "source"),
                ],
                value: v,
            }
        })
        .collect();
    Ok(Listing {
        headers: &["KIND", "NAMESPACE", "NAME", "REVISION", "SOURCE"],
        rows,
    })
}

/// How often `-w` looks again: state files are small, and a push shows within a second.
const WATCH_POLL: Duration = Duration::from_millis(500);

/// Prints a listing, or watches it.
fn list(
    fmt: Format,
    watch: bool,
    fetch: impl FnMut() -> anyhow::Result<Listing>,
) -> anyhow::Result<ExitCode> {
    let mut fetch = fetch;
    if watch {
        return listing::watch(fmt, WATCH_POLL, fetch);
    }
    fetch()?.print(fmt);
    Ok(ExitCode::SUCCESS)
}

/// Prints the last automation run's rows.
pub fn print_images(state: &Path, fmt: Format) -> anyhow::Result<()> {
    if fmt != Format::Table {
        output::print_value(fmt, &shapes::images(state));
        return Ok(());
    }
    let st = crate::sync::reconcile::read_images_status(state).unwrap_or_default();
    // Read afresh: a canary may have rejected a tag since automation last ran.
    let rejected = crate::image::rejected::read(state);
    let now = unix_now();
    let rows: Vec<Vec<String>> = st
        .rows
        .iter()
        .map(|r| {
            vec![
                r.policy.clone(),
                r.image.clone(),
                r.rule.clone(),
                r.current.clone(),
                r.latest.clone().unwrap_or_else(|| "-".into()),
                match rejected.of(&r.image).join(",") {
                    none if none.is_empty() => "-".into(),
                    tags => tags,
                },
                r.last_scan
                    .map(|t| crate::util::time::age(t, now))
                    .unwrap_or_else(|| "-".into()),
                r.message.clone(),
            ]
        })
        .collect();
    print!(
        "{}",
        output::table(
            &[
                "POLICY",
                "IMAGE",
                "RULE",
                "CURRENT",
                "LATEST",
                "REJECTED",
                "LAST SCAN",
                "MESSAGE"
            ],
            &rows
        )
    );
    if let Some(e) = &st.error {
        println!("error: {e}");
    }
    Ok(())
}

/// Opens the configured target for reading and runs `f` over it and the state dir.
fn with_view<T>(
    cfg: &Config,
    state: &Path,
    f: impl FnOnce(shapes::View) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let target = crate::targets::open(cfg, false)?;
    f(shapes::View {
        target: &*target,
        state_dir: state,
    })
}

/// Runs `get`.
pub fn get(config: &Path, what: What) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(config)?;
    let state = cfg.state_dir();
    match what {
        What::Sources { output: fmt } => {
            if fmt == Format::Table {
                let st = shapes::source_status(&cfg)?;
                let ready = if st.ready {
                    "True"
                } else if st.last_attempt_at.is_none() {
                    "Unknown"
                } else {
                    "False"
                };
                let fetched = st
                    .fetched_at
                    .map(|t| crate::util::time::age(t, unix_now()))
                    .unwrap_or_else(|| "-".into());
                print!(
                    "{}",
                    output::table(
                        &[
                            "NAME",
                            "URL",
                            "BRANCH",
                            "FETCHED",
                            "LAST FETCH",
                            "REVISION",
                            "SUSPENDED",
                            "READY",
                            "MESSAGE"
                        ],
                        &[vec![
                            st.name.clone(),
                            st.url.clone(),
                            st.branch.clone(),
                            short_rev(&st.fetched_revision),
                            fetched,
                            short_rev(&st.applied_revision),
                            if crate::source::suspend::is_suspended(&state) {
                                "True".into()
                            } else {
                                "False".into()
                            },
                            ready.into(),
                            st.message.clone(),
                        ]]
                    )
                );
            } else {
                output::print_value(fmt, &shapes::sources(&cfg)?);
            }
        }
        What::Images { output: fmt } => print_images(&state, fmt)?,
        What::Services {
            service,
            output: fmt,
            url,
        } => return print_services(&state, service.as_deref(), fmt, url),
        What::Canaries { output: fmt, watch } => {
            return with_view(&cfg, &state, |v| list(fmt, watch, || canary_rows(v)));
        }
        What::Helmreleases { output: fmt } => {
            let rows: Vec<serde_json::Value> = crate::sync::hooks::read_records(&state)
                .iter()
                .map(|r| {
                    let (ns, name) = r.helm_release.split_once('/').unwrap_or(("", &r.helm_release));
                    serde_json::json!({"namespace": ns, "name": name, "release": r.key(),
                        "revision": r.revision, "chart": r.chart, "objects": r.objects.len(),
                        "hooks": r.hooks.len(), "ready": if r.last_hook_error.is_none() { "True" } else { "False" },
                        "message": r.last_hook_error.clone().unwrap_or_else(|| format!("Release reconciliation succeeded (revision {})", r.revision))})
                })
                .collect();
            if fmt == Format::Table {
                let cols = [
                    ("NAMESPACE", "namespace"),
                    ("NAME", "name"),
                    ("RELEASE", "release"),
                    ("REVISION", "revision"),
                    ("CHART", "chart"),
                    ("OBJECTS", "objects"),
                    ("HOOKS", "hooks"),
                    ("READY", "ready"),
                    ("MESSAGE", "message"),
                ];
                print!("{}", output::rows_table(&cols, &rows));
            } else {
                output::print_value(fmt, &serde_json::Value::Array(rows));
            }
        }
        What::Objects { output: fmt, watch } => {
            return with_view(&cfg, &state, |v| list(fmt, watch, || object_rows(v)));
        }
    }
    Ok(ExitCode::SUCCESS)
}
