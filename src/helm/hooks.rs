//! Helm hooks, decided purely: which rendered objects are hooks (`helm.sh/hook`), their
//! events, weights and delete policies, Helm's hook order, the release record kept
//! between syncs, and which hooks a sync must run (install, upgrade or delete). The
//! local target runs them (`targets::local::runtime::job`); `helm test` runs the test
//! hooks, e.g. as a Canary `pre-rollout` webhook of type `helmv3`.

use super::release::INSTALL_ORDER;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A Helm hook event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Event {
    /// Before the first install's objects are applied.
    PreInstall,
    /// After the first install's objects are applied.
    PostInstall,
    /// Before an upgrade's objects are applied.
    PreUpgrade,
    /// After an upgrade's objects are applied.
    PostUpgrade,
    /// Before a release's objects are pruned.
    PreDelete,
    /// After a release's objects are pruned.
    PostDelete,
    /// Before a rollback (never emitted: a rollback here is a Git revert, an upgrade).
    PreRollback,
    /// After a rollback (never emitted, as above).
    PostRollback,
    /// `helm test` (`test-success` is the Helm 2 name).
    Test,
    /// A Helm 2 test expected to fail.
    TestFailure,
}

impl Event {
    /// Parses one `helm.sh/hook` entry.
    pub fn parse(s: &str) -> Option<Event> {
        Some(match s.trim() {
            "pre-install" => Event::PreInstall,
            "post-install" => Event::PostInstall,
            "pre-upgrade" => Event::PreUpgrade,
            "post-upgrade" => Event::PostUpgrade,
            "pre-delete" => Event::PreDelete,
            "post-delete" => Event::PostDelete,
            "pre-rollback" => Event::PreRollback,
            "post-rollback" => Event::PostRollback,
            "test" | "test-success" => Event::Test,
            "test-failure" => Event::TestFailure,
            _ => return None,
        })
    }

    /// Helm's name for the event.
    pub fn name(self) -> &'static str {
        match self {
            Event::PreInstall => "pre-install",
            Event::PostInstall => "post-install",
            Event::PreUpgrade => "pre-upgrade",
            Event::PostUpgrade => "post-upgrade",
            Event::PreDelete => "pre-delete",
            Event::PostDelete => "post-delete",
            Event::PreRollback => "pre-rollback",
            Event::PostRollback => "post-rollback",
            Event::Test => "test",
            Event::TestFailure => "test-failure",
        }
    }
}

/// One hook object of a release.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hook {
    /// Kind.
    pub kind: String,
    /// Name.
    pub name: String,
    /// Template file it came from, for messages.
    pub file: String,
    /// Events it runs on.
    pub events: Vec<Event>,
    /// `helm.sh/hook-weight` (default 0; lower runs first).
    pub weight: i64,
    /// `helm.sh/hook-delete-policy` entries.
    pub delete_policies: Vec<String>,
    /// The rendered object.
    pub object: Value,
}

impl Hook {
    /// Reads the hook annotations of a rendered object; `None` when it is no hook.
    /// An unknown event or a weight that is not an integer is an error, as in Helm.
    pub fn from_object(object: &Value, file: &str) -> Option<Result<Hook, String>> {
        let ann = &object["metadata"]["annotations"];
        let events = ann["helm.sh/hook"].as_str()?;
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        Some((|| {
            let mut parsed = Vec::new();
            for e in events.split(',').filter(|e| !e.trim().is_empty()) {
                parsed.push(Event::parse(e).ok_or_else(|| {
                    format!(
                        "{kind} {name}: metadata.annotations.helm.sh/hook: unknown hook event {:?}",
                        e.trim()
                    )
                })?);
            }
            let weight = match ann["helm.sh/hook-weight"].as_str().map(str::trim) {
                None | Some("") => 0,
                Some(w) => w.parse().map_err(|_| {
                    format!("{kind} {name}: metadata.annotations.helm.sh/hook-weight: {w:?} is not an integer")
                })?,
            };
            let delete_policies = ann["helm.sh/hook-delete-policy"]
                .as_str()
                .unwrap_or_default()
                .split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect();
            Ok(Hook {
                kind,
                name,
                file: file.to_string(),
                events: parsed,
                weight,
                delete_policies,
                object: object.clone(),
            })
        })())
    }

    /// Whether the hook runs on `event`.
    pub fn on(&self, event: Event) -> bool {
        self.events.contains(&event)
    }

    /// `kind/name` for messages.
    pub fn id(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }
}

/// When a hook object is deleted (`helm.sh/hook-delete-policy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeletePolicy {
    /// `before-hook-creation`: delete the previous one before creating the hook.
    pub before_creation: bool,
    /// `hook-succeeded`: delete it once it succeeded.
    pub on_success: bool,
    /// `hook-failed`: delete it when it failed.
    pub on_failure: bool,
}

impl DeletePolicy {
    /// The policy of `hook`. Helm 3 uses `before-hook-creation` when none is given.
    pub fn of(hook: &Hook) -> DeletePolicy {
        if hook.delete_policies.is_empty() {
            return DeletePolicy {
                before_creation: true,
                ..Default::default()
            };
        }
        let has = |p: &str| hook.delete_policies.iter().any(|x| x == p);
        DeletePolicy {
            before_creation: has("before-hook-creation"),
            on_success: has("hook-succeeded"),
            on_failure: has("hook-failed"),
        }
    }

    /// Whether the hook is deleted after it ended with `succeeded`.
    pub fn deletes_after(&self, succeeded: bool) -> bool {
        if succeeded {
            self.on_success
        } else {
            self.on_failure
        }
    }
}

/// Whether a hook passed, given how it ran: a `test-failure` hook that runs something
/// (a Pod or Job) passes when that fails, as in Helm 2. Returns `(ok, message)`.
pub fn judge(event: Event, runs: bool, result: Result<String, String>) -> (bool, String) {
    match (result, runs && event == Event::TestFailure) {
        (Ok(m), false) | (Err(m), true) => (true, m),
        (Ok(m), true) => (false, format!("expected to fail, but {m}")),
        (Err(m), false) => (false, m),
    }
}

/// Sorts hooks in Helm's order: by weight, then kind (install order), then name.
pub fn sort_hooks(hooks: &mut [Hook]) {
    let kind_rank = |k: &str| {
        INSTALL_ORDER
            .iter()
            .position(|x| *x == k)
            .unwrap_or(INSTALL_ORDER.len())
    };
    hooks.sort_by(|a, b| {
        (a.weight, kind_rank(&a.kind), &a.name).cmp(&(b.weight, kind_rank(&b.kind), &b.name))
    });
}

/// What is kept of a release between syncs (`<stateDir>/helm/releases/<ns>/<name>.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseRecord {
    /// The HelmRelease object, `namespace/name`.
    pub helm_release: String,
    /// Release name.
    pub name: String,
    /// Release namespace.
    pub namespace: String,
    /// `chart-version`.
    pub chart: String,
    /// sha256 over the rendered objects and hooks: a change is an upgrade.
    pub digest: String,
    /// Release revision: 1 at install, +1 per upgrade.
    #[serde(default)]
    pub revision: u64,
    /// Whether the revision was rendered as an install (`.Release.IsInstall`).
    #[serde(default)]
    pub is_install: bool,
    /// The rendered objects, as `Kind/namespace/name`.
    #[serde(default)]
    pub objects: Vec<String>,
    /// Hooks in Helm's order.
    pub hooks: Vec<Hook>,
    /// Helm's timeout for hooks (`spec.timeout`, default 5m), in seconds.
    pub timeout_secs: u64,
    /// Flux v2 `spec.dependsOn`, as `namespace/name` of HelmReleases: their hooks run
    /// first (and, on deletion, last).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Flux v2 `spec.test.enable`: run the test hooks after each install and upgrade.
    #[serde(default)]
    pub test_enable: bool,
    /// `spec.test.ignoreFailures`: a failing test is logged, not recorded as a failure.
    #[serde(default)]
    pub test_ignore_failures: bool,
    /// The last hook failure, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_hook_error: Option<String>,
}

impl ReleaseRecord {
    /// `namespace/name` of the release.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Its hooks for `event`, in order.
    pub fn hooks_for(&self, event: Event) -> Vec<&Hook> {
        self.hooks.iter().filter(|h| h.on(event)).collect()
    }
}

/// What one sync does with a release's hooks.
#[derive(Clone, Debug, PartialEq)]
pub struct HookStep {
    /// Release `namespace/name`.
    pub release: String,
    /// Event run before the objects change (`pre-install`, `pre-upgrade`, `pre-delete`).
    pub pre: Event,
    /// Event run after (`post-install`, `post-upgrade`, `post-delete`).
    pub post: Event,
    /// The record the hooks come from (the old one for a delete).
    pub record: ReleaseRecord,
}

impl HookStep {
    /// Whether `spec.test.enable` runs the tests after this install or upgrade.
    pub fn tests_after_apply(&self) -> bool {
        self.record.test_enable && self.post != Event::PostDelete
    }

    /// Whether anything runs after the apply: `post-*` hooks or tests.
    pub fn runs_after_apply(&self) -> bool {
        !self.record.hooks_for(self.post).is_empty() || self.tests_after_apply()
    }
}

/// Decides the hook steps of a sync from the records of the last applied revision
/// (`prev`) and of the revision about to be applied (`next`): a new release installs,
/// a changed digest upgrades (the revision goes up by one), a release gone deletes.
/// Releases with no hooks for their events are left out. Returns the steps and `next`
/// with revisions carried over.
pub fn plan_hooks(
    prev: &[ReleaseRecord],
    next: &[ReleaseRecord],
) -> (Vec<HookStep>, Vec<ReleaseRecord>) {
    let mut steps = Vec::new();
    let mut records = Vec::new();
    for n in next {
        let mut n = n.clone();
        let old = prev.iter().find(|p| p.key() == n.key());
        let events = match old {
            None => {
                n.revision = 1;
                Some((Event::PreInstall, Event::PostInstall))
            }
            Some(o) if o.digest != n.digest => {
                n.revision = o.revision.max(1) + 1;
                Some((Event::PreUpgrade, Event::PostUpgrade))
            }
            Some(o) => {
                n.revision = o.revision.max(1);
                n.last_hook_error = o.last_hook_error.clone();
                None
            }
        };
        if let Some((pre, post)) = events {
            let tests = n.test_enable && !n.hooks_for(Event::Test).is_empty();
            if tests || !n.hooks_for(pre).is_empty() || !n.hooks_for(post).is_empty() {
                steps.push(HookStep {
                    release: n.key(),
                    pre,
                    post,
                    record: n.clone(),
                });
            }
        }
        records.push(n);
    }
    for o in prev {
        if next.iter().all(|n| n.key() != o.key())
            && (!o.hooks_for(Event::PreDelete).is_empty()
                || !o.hooks_for(Event::PostDelete).is_empty())
        {
            steps.push(HookStep {
                release: o.key(),
                pre: Event::PreDelete,
                post: Event::PostDelete,
                record: o.clone(),
            });
        }
    }
    (order_by_dependencies(steps), records)
}

/// Orders steps so a release's hooks run after those of the releases it depends on
/// (`dependsOn`), and deletions in the reverse order. Stable otherwise; a cycle keeps
/// the order given.
fn order_by_dependencies(steps: Vec<HookStep>) -> Vec<HookStep> {
    let (deletes, rest): (Vec<HookStep>, Vec<HookStep>) =
        steps.into_iter().partition(|s| s.pre == Event::PreDelete);
    let order = |mut pending: Vec<HookStep>| {
        let mut out: Vec<HookStep> = Vec::with_capacity(pending.len());
        while !pending.is_empty() {
            let ready = pending.iter().position(|s| {
                s.record.depends_on.iter().all(|d| {
                    !pending
                        .iter()
                        .any(|o| &o.record.helm_release == d && o.release != s.release)
                })
            });
            // A cycle: take the first, as written.
            out.push(pending.remove(ready.unwrap_or(0)));
        }
        out
    };
    let mut out = order(rest);
    let mut deletes = order(deletes);
    deletes.reverse();
    out.extend(deletes);
    out
}

/// A `helm test` command line as the Flagger helm tester takes it in `metadata.cmd`:
/// `test RELEASE [-n|--namespace NS] [--timeout D] [--cleanup] [--logs]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestCommand {
    /// Release name.
    pub release: String,
    /// Namespace, when given.
    pub namespace: Option<String>,
    /// Timeout, when given.
    pub timeout: Option<std::time::Duration>,
}

/// Parses a `helm test` command (with or without a leading `helm`).
pub fn parse_test_command(cmd: &str) -> Result<TestCommand, String> {
    let words: Vec<&str> = cmd.split_whitespace().collect();
    let words = match words.first() {
        Some(&"helm" | &"helmv3" | &"helm3") => &words[1..],
        _ => &words[..],
    };
    let rest = match words.first() {
        Some(&"test") => &words[1..],
        _ => {
            return Err(format!(
                "helm tester: expected `test RELEASE [-n NAMESPACE]`, got {cmd:?}"
            ))
        }
    };
    let mut out = TestCommand {
        release: String::new(),
        namespace: None,
        timeout: None,
    };
    let mut i = 0;
    while i < rest.len() {
        let w = rest[i];
        let value = |i: usize| {
            rest.get(i + 1)
                .map(|s| s.to_string())
                .ok_or_else(|| format!("helm tester: {w} needs a value"))
        };
        match w {
            "-n" | "--namespace" => {
                out.namespace = Some(value(i)?);
                i += 1;
            }
            "--timeout" => {
                let t = value(i)?;
                // Helm 2 took seconds, Helm 3 a duration.
                out.timeout = Some(match t.parse::<u64>() {
                    Ok(secs) => std::time::Duration::from_secs(secs),
                    Err(_) => crate::util::duration::parse(&t)
                        .map_err(|e| format!("helm tester: --timeout: {e}"))?,
                });
                i += 1;
            }
            "--cleanup" | "--logs" | "--parallel" => {}
            _ if w.starts_with("--namespace=") => {
                out.namespace = Some(w["--namespace=".len()..].to_string())
            }
            _ if w.starts_with("--timeout=") => {
                out.timeout = Some(
                    crate::util::duration::parse(&w["--timeout=".len()..])
                        .map_err(|e| format!("helm tester: --timeout: {e}"))?,
                )
            }
            _ if w.starts_with('-') => {
                return Err(format!("helm tester: unsupported flag {w}"));
            }
            _ if out.release.is_empty() => out.release = w.to_string(),
            _ => return Err(format!("helm tester: unexpected argument {w:?}")),
        }
        i += 1;
    }
    if out.release.is_empty() {
        return Err("helm tester: `test` needs a release name".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hook(kind: &str, name: &str, events: &str, weight: Option<&str>) -> Hook {
        let mut ann = json!({"helm.sh/hook": events});
        if let Some(w) = weight {
            ann["helm.sh/hook-weight"] = json!(w);
        }
        Hook::from_object(
            &json!({"kind": kind, "metadata": {"name": name, "annotations": ann}}),
            "t.yaml",
        )
        .unwrap()
        .unwrap()
    }

    fn record(name: &str, digest: &str, hooks: Vec<Hook>) -> ReleaseRecord {
        ReleaseRecord {
            helm_release: format!("test/{name}"),
            name: name.into(),
            namespace: "test".into(),
            chart: "podinfo-1.0.0".into(),
            digest: digest.into(),
            revision: 0,
            is_install: true,
            objects: Vec::new(),
            hooks,
            timeout_secs: 300,
            depends_on: vec![],
            test_enable: false,
            test_ignore_failures: false,
            last_hook_error: None,
        }
    }

    #[test]
    fn delete_policy_defaults_to_before_hook_creation() {
        let mut h = hook("Job", "migrate", "pre-install", None);
        assert_eq!(
            DeletePolicy::of(&h),
            DeletePolicy {
                before_creation: true,
                ..Default::default()
            }
        );
        h.delete_policies = vec!["hook-succeeded".into(), "hook-failed".into()];
        let p = DeletePolicy::of(&h);
        assert!(!p.before_creation);
        assert!(p.deletes_after(true) && p.deletes_after(false));
        h.delete_policies = vec!["hook-succeeded".into()];
        assert!(!DeletePolicy::of(&h).deletes_after(false));
    }

    #[test]
    fn a_test_failure_hook_passes_when_it_fails() {
        assert_eq!(
            judge(Event::TestFailure, true, Err("exit 1".into())),
            (true, "exit 1".into())
        );
        assert!(!judge(Event::TestFailure, true, Ok("done".into())).0);
        assert!(!judge(Event::Test, true, Err("x".into())).0);
        assert!(judge(Event::TestFailure, false, Ok("kept".into())).0);
    }

    #[test]
    fn parses_hook_annotations() {
        let h = hook("Job", "migrate", "pre-install, pre-upgrade", Some("-5"));
        assert_eq!(h.events, vec![Event::PreInstall, Event::PreUpgrade]);
        assert_eq!(h.weight, -5);
        assert_eq!(
            hook("Pod", "t", "test-success", None).events,
            vec![Event::Test]
        );
        assert!(
            Hook::from_object(&json!({"kind": "Pod", "metadata": {"name": "x"}}), "f").is_none()
        );
        let bad = Hook::from_object(
            &json!({"kind": "Pod", "metadata": {"name": "x", "annotations": {"helm.sh/hook": "pre-instal"}}}),
            "f",
        )
        .unwrap()
        .unwrap_err();
        assert!(bad.contains("unknown hook event \"pre-instal\""), "{bad}");
        let bad = Hook::from_object(
            &json!({"kind": "Pod", "metadata": {"name": "x", "annotations": {"helm.sh/hook": "test", "helm.sh/hook-weight": "one"}}}),
            "f",
        )
        .unwrap()
        .unwrap_err();
        assert!(bad.contains("hook-weight"), "{bad}");
    }

    #[test]
    fn helm_hook_order() {
        let mut hooks = vec![
            hook("Job", "b", "pre-install", Some("1")),
            hook("Job", "a", "pre-install", Some("1")),
            hook("ConfigMap", "z", "pre-install", Some("1")),
            hook("Pod", "first", "pre-install", Some("-1")),
        ];
        sort_hooks(&mut hooks);
        let names: Vec<_> = hooks.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["first", "z", "a", "b"]);
    }

    #[test]
    fn install_upgrade_unchanged_delete() {
        let hooks = vec![
            hook("Job", "migrate", "pre-install,pre-upgrade", None),
            hook("Job", "cleanup", "pre-delete", None),
        ];
        let (steps, recs) = plan_hooks(&[], &[record("a", "d1", hooks.clone())]);
        assert_eq!(steps.len(), 1);
        assert_eq!(
            (steps[0].pre, steps[0].post),
            (Event::PreInstall, Event::PostInstall)
        );
        assert_eq!(recs[0].revision, 1);

        let (steps, recs2) = plan_hooks(&recs, &[record("a", "d1", hooks.clone())]);
        assert!(steps.is_empty());
        assert_eq!(recs2[0].revision, 1);

        let (steps, recs3) = plan_hooks(&recs2, &[record("a", "d2", hooks.clone())]);
        assert_eq!(steps[0].pre, Event::PreUpgrade);
        assert_eq!(recs3[0].revision, 2);

        let (steps, recs4) = plan_hooks(&recs3, &[]);
        assert!(recs4.is_empty());
        assert_eq!(steps[0].pre, Event::PreDelete);
        assert_eq!(
            steps[0].record.hooks_for(Event::PreDelete)[0].name,
            "cleanup"
        );

        // A release with only test hooks has no sync steps.
        let (steps, _) = plan_hooks(
            &[],
            &[record("t", "d", vec![hook("Pod", "t", "test", None)])],
        );
        assert!(steps.is_empty());
        let mut with_tests = record("t", "d", vec![hook("Pod", "t", "test", None)]);
        with_tests.test_enable = true;
        let (steps, _) = plan_hooks(&[], &[with_tests]);
        assert_eq!(steps.len(), 1, "spec.test.enable runs tests after install");
    }

    #[test]
    fn dependencies_order_hooks() {
        let hooks = vec![hook("Job", "j", "pre-install,pre-delete", None)];
        let mut app = record("app", "d", hooks.clone());
        app.depends_on = vec!["test/db".into()];
        let mut db = record("db", "d", hooks.clone());
        db.helm_release = "test/db".into();
        app.helm_release = "test/app".into();
        let (steps, recs) = plan_hooks(&[], &[app.clone(), db.clone()]);
        let names: Vec<_> = steps.iter().map(|s| s.release.as_str()).collect();
        assert_eq!(names, ["test/db", "test/app"], "db installs first");
        let (steps, _) = plan_hooks(&recs, &[]);
        let names: Vec<_> = steps.iter().map(|s| s.release.as_str()).collect();
        assert_eq!(names, ["test/app", "test/db"], "app is deleted first");
        // A cycle keeps the given order.
        db.depends_on = vec!["test/app".into()];
        let (steps, _) = plan_hooks(&[], &[app, db]);
        assert_eq!(steps.len(), 2);
    }

    #[test]
    fn test_commands() {
        assert_eq!(
            parse_test_command("test podinfo -n test --timeout 2m --cleanup").unwrap(),
            TestCommand {
                release: "podinfo".into(),
                namespace: Some("test".into()),
                timeout: Some(std::time::Duration::from_secs(120)),
            }
        );
        assert_eq!(
            parse_test_command("helm test frontend --timeout=30s")
                .unwrap()
                .timeout,
            Some(std::time::Duration::from_secs(30))
        );
        assert_eq!(
            parse_test_command("test podinfo --timeout 90")
                .unwrap()
                .timeout,
            Some(std::time::Duration::from_secs(90))
        );
        assert!(parse_test_command("install x").is_err());
        assert!(parse_test_command("test").is_err());
        assert!(parse_test_command("test a --wat").is_err());
    }
}
