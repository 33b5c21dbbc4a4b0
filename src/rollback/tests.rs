use super::plan::{commit_message, plan, FileVersions, Outcome, Workload};

const DEPLOY: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: podinfo
  namespace: test
spec:
  replicas: 2 # scaled by hand
  template:
    spec:
      containers:
        - name: podinfo
          image: ghcr.io/stefanprodan/podinfo:6.0.0 # {\"$imagepolicy\": \"test:podinfo\"}
          env:
            - name: PODINFO_UI_COLOR
              value: \"#34577c\"
            - name: LEVEL
              value: info
          envFrom:
            - configMapRef:
                name: podinfo-config
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: other
  namespace: test
spec:
  template:
    spec:
      containers:
        - name: other
          image: nginx:1.25
";

const CONFIG: &str = "\
apiVersion: v1
kind: ConfigMap
metadata:
  name: podinfo-config
  namespace: test
data:
  FAULT_DELAY_MS: '0'
  MODE: normal
";

fn podinfo() -> Workload {
    Workload {
        namespace: "test".into(),
        deployment: "podinfo".into(),
    }
}

fn file(path: &str, promoted: &str, failed: &str, head: &str) -> FileVersions {
    FileVersions {
        path: path.into(),
        promoted: Some(promoted.into()),
        failed: Some(failed.into()),
        head: Some(head.into()),
    }
}

fn reverted(outcome: Outcome) -> (Vec<(String, String)>, Vec<super::plan::Change>) {
    match outcome {
        Outcome::Revert { files, changes } => (files, changes),
        other => panic!("expected a revert, got {other:?}"),
    }
}

#[test]
fn only_the_failed_values_go_back_and_unrelated_changes_in_the_same_commit_stay() {
    // The failed commit bumps the tag, scales by hand, changes another Deployment and
    // a ConfigMap value; a later commit changes the other Deployment again.
    let failed = DEPLOY
        .replace("podinfo:6.0.0", "podinfo:6.0.1")
        .replace("replicas: 2", "replicas: 3")
        .replace("nginx:1.25", "nginx:1.26");
    let head = failed.replace("nginx:1.26", "nginx:1.27");
    let cfg_failed = CONFIG.replace("'0'", "'600'");
    let files = [
        file("apps/podinfo.yaml", DEPLOY, &failed, &head),
        file("apps/config.yaml", CONFIG, &cfg_failed, &cfg_failed),
    ];
    let (files, changes) = reverted(plan(&podinfo(), &files).unwrap());
    let got: Vec<(&str, String, &str, &str)> = changes
        .iter()
        .map(|c| {
            (
                c.object.as_str(),
                c.field.to_string(),
                c.failed.as_str(),
                c.promoted.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "Deployment/test/podinfo",
                "spec.template.spec.containers[podinfo].image".to_string(),
                "ghcr.io/stefanprodan/podinfo:6.0.1",
                "ghcr.io/stefanprodan/podinfo:6.0.0"
            ),
            (
                "ConfigMap/test/podinfo-config",
                "data.FAULT_DELAY_MS".to_string(),
                "600",
                "0"
            ),
        ]
    );
    let by_path: std::collections::HashMap<_, _> = files.into_iter().collect();
    // Byte for byte: only the tag went back; replicas, the comment and the other
    // Deployment's later change stay.
    assert_eq!(
        by_path["apps/podinfo.yaml"],
        head.replace("podinfo:6.0.1", "podinfo:6.0.0")
    );
    assert_eq!(
        by_path["apps/config.yaml"], CONFIG,
        "quoting kept as written"
    );
}

#[test]
fn an_env_entry_goes_back_even_when_the_list_was_reordered() {
    let failed = DEPLOY.replace("value: info", "value: debug");
    // The head reorders the env list (same values): still the failed value, matched by name.
    let head = failed.replace(
        "            - name: PODINFO_UI_COLOR\n              value: \"#34577c\"\n            - name: LEVEL\n              value: debug\n",
        "            - name: LEVEL\n              value: debug\n            - name: PODINFO_UI_COLOR\n              value: \"#34577c\"\n",
    );
    assert_ne!(head, failed);
    let (files, changes) =
        reverted(plan(&podinfo(), &[file("p.yaml", DEPLOY, &failed, &head)]).unwrap());
    assert_eq!(
        changes[0].field.to_string(),
        "spec.template.spec.containers[podinfo].env[LEVEL].value"
    );
    assert_eq!(files[0].1, head.replace("value: debug", "value: info"));
}

#[test]
fn a_value_changed_again_since_the_failed_commit_is_superseded() {
    let failed = DEPLOY.replace("podinfo:6.0.0", "podinfo:6.0.1");
    let head = DEPLOY.replace("podinfo:6.0.0", "podinfo:6.0.2");
    let out = plan(&podinfo(), &[file("p.yaml", DEPLOY, &failed, &head)]).unwrap();
    let Outcome::Superseded { changes } = out else {
        panic!("{out:?}")
    };
    assert_eq!(
        changes[0].head.as_deref(),
        Some("ghcr.io/stefanprodan/podinfo:6.0.2")
    );
    // Removed since: superseded too.
    let gone = plan(
        &podinfo(),
        &[FileVersions {
            head: None,
            ..file("p.yaml", DEPLOY, &failed, "")
        }],
    )
    .unwrap();
    assert!(matches!(gone, Outcome::Superseded { .. }), "{gone:?}");
}

#[test]
fn a_partly_superseded_change_is_left_whole() {
    let failed = DEPLOY
        .replace("podinfo:6.0.0", "podinfo:6.0.1")
        .replace("value: info", "value: debug");
    let head = failed.replace("value: debug", "value: warn");
    let out = plan(&podinfo(), &[file("p.yaml", DEPLOY, &failed, &head)]).unwrap();
    let Outcome::Superseded { changes } = out else {
        panic!("{out:?}")
    };
    assert_eq!(changes.len(), 2);
    assert_eq!(
        changes.iter().filter(|c| c.head.is_some()).count(),
        1,
        "only the env value changed since"
    );
}

#[test]
fn structural_changes_and_unrelated_commits_revert_nothing() {
    let added = DEPLOY.replace(
        "            - name: LEVEL\n",
        "            - name: NEW\n              value: x\n            - name: LEVEL\n",
    );
    let out = plan(&podinfo(), &[file("p.yaml", DEPLOY, &added, &added)]).unwrap();
    assert_eq!(
        out,
        Outcome::Unrevertable(
            "Deployment/test/podinfo: spec.template.spec.containers[podinfo].env: items were added or removed".into()
        )
    );
    // A change outside the revision (replicas, another Deployment) is not the cause.
    let other = DEPLOY
        .replace("replicas: 2", "replicas: 5")
        .replace("nginx:1.25", "nginx:1.26");
    assert_eq!(
        plan(&podinfo(), &[file("p.yaml", DEPLOY, &other, &other)]).unwrap(),
        Outcome::NotFound
    );
    // No Deployment in the files at all (a HelmRelease renders it).
    assert_eq!(
        plan(&podinfo(), &[file("c.yaml", CONFIG, CONFIG, CONFIG)]).unwrap(),
        Outcome::NotFound
    );
}

#[test]
fn secret_values_are_never_shown() {
    let secret = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\n  namespace: test\nstringData:\n  token: old-secret\n";
    let deploy = DEPLOY.replace(
        "configMapRef:\n                name: podinfo-config",
        "secretRef:\n                name: creds",
    );
    let failed = secret.replace("old-secret", "new-secret");
    let (files, changes) = reverted(
        plan(
            &podinfo(),
            &[
                file("d.yaml", &deploy, &deploy, &deploy),
                file("s.yaml", secret, &failed, &failed),
            ],
        )
        .unwrap(),
    );
    assert_eq!(
        (changes[0].failed.as_str(), changes[0].promoted.as_str()),
        ("***", "***")
    );
    assert_eq!(files, [("s.yaml".to_string(), secret.to_string())]);
    let msg = commit_message(
        "podinfo.test",
        "failed checks threshold reached 5",
        &changes,
        "abcdef0123456789",
        "f00",
    );
    assert!(!msg.contains("secret"), "{msg}");
    assert!(
        msg.starts_with(
            "Rollback podinfo.test to abcdef012345: failed checks threshold reached 5\n\n"
        ),
        "{msg}"
    );
}

#[test]
fn the_message_names_the_promoted_tag_and_ends_with_the_trailer() {
    let failed = DEPLOY.replace("podinfo:6.0.0", "podinfo:6.0.1");
    let (_, changes) =
        reverted(plan(&podinfo(), &[file("apps/p.yaml", DEPLOY, &failed, &failed)]).unwrap());
    let msg = commit_message(
        "podinfo.test",
        "failed checks threshold reached 5",
        &changes,
        "1111",
        "2222",
    );
    assert_eq!(
        msg,
        "Rollback podinfo.test to 6.0.0: failed checks threshold reached 5\n\n\
         - apps/p.yaml: Deployment/test/podinfo spec.template.spec.containers[podinfo].image: \
         ghcr.io/stefanprodan/podinfo:6.0.1 -> ghcr.io/stefanprodan/podinfo:6.0.0\n\n\
         Gitcanary-Failed-Commit: 2222\n"
    );
}

#[test]
fn a_file_that_does_not_parse_is_named() {
    let err = plan(&podinfo(), &[file("p.yaml", DEPLOY, "a: [", DEPLOY)]).unwrap_err();
    assert!(err.to_string().starts_with("p.yaml (failed): "), "{err}");
}

#[test]
fn a_failed_rollout_rejects_the_tags_it_moved_to_and_names_why() {
    use crate::history::note::{ImageChange, Rollout};
    let r = Rollout {
        canary: "test/podinfo".into(),
        reason: "Rolling back podinfo.test failed checks threshold reached 5".into(),
        images: vec![ImageChange {
            container: "podinfod".into(),
            from: "ghcr.io/stefanprodan/podinfo:6.0.0".into(),
            to: "ghcr.io/stefanprodan/podinfo:6.0.1".into(),
        }],
        end: 7.0,
        ..Default::default()
    };
    let tags = super::sink::rejections(&r, "c0ffee");
    assert_eq!(tags.len(), 1);
    assert_eq!(
        (tags[0].image.as_str(), tags[0].tag.as_str(), tags[0].at),
        ("ghcr.io/stefanprodan/podinfo", "6.0.1", 7.0)
    );
    assert_eq!(
        super::sink::why(&r.reason, "podinfo.test"),
        "failed checks threshold reached 5"
    );
    // Another wording stays whole.
    assert_eq!(
        super::sink::why("Canary failed! Scaling down podinfo.test", "podinfo.test"),
        "Canary failed! Scaling down podinfo.test"
    );
}
