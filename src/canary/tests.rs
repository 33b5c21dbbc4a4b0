//! Pure `decide()` tests: every transition, driven tick by tick with a fake clock.

use super::decide::{
    decide, due, gates_due, step_gate, Action, Checks, Due, Manual, Observations, Plan,
};
use super::spec::HookType;
use super::spec::{parse, CanarySpec};
use super::state::{CanaryStatus, Phase};
use serde_json::json;

/// Builds Canary specs for tests.
struct CanaryFixture(serde_json::Value);

impl CanaryFixture {
    fn podinfo() -> Self {
        CanaryFixture(
            json!({"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {"targetRef": {"kind": "Deployment", "name": "podinfo"}, "service": {"port": 9898}, "progressDeadlineSeconds": 60,
                "analysis": {"interval": "10s", "threshold": 5, "maxWeight": 50, "stepWeight": 10}}}),
        )
    }
    fn set(mut self, path: &str, v: serde_json::Value) -> Self {
        let mut node = &mut self.0["spec"];
        let parts: Vec<&str> = path.split('.').collect();
        for p in &parts[..parts.len() - 1] {
            node = &mut node[*p];
        }
        node[parts[parts.len() - 1]] = v;
        self
    }
    fn with_step_weight(self, w: u32) -> Self {
        self.set("analysis.stepWeight", json!(w))
    }
    fn with_iterations(self, n: u32) -> Self {
        let s = self.set("analysis.iterations", json!(n));
        let mut s = s;
        s.0["spec"]["analysis"]
            .as_object_mut()
            .unwrap()
            .remove("stepWeight");
        s
    }
    /// Adds a webhook of `kind` (Flagger's type name).
    fn with_hook(mut self, kind: &str) -> Self {
        let hook = json!({"name": kind, "type": kind, "url": "http://gate.test/"});
        match self.0["spec"]["analysis"]["webhooks"].as_array_mut() {
            Some(hooks) => hooks.push(hook),
            None => self.0["spec"]["analysis"]["webhooks"] = json!([hook]),
        }
        self
    }
    fn build(self) -> CanarySpec {
        parse(&self.0).unwrap()
    }
}

fn ok_obs(rev: &str) -> Observations {
    Observations {
        revision: rev.into(),
        primary_exists: true,
        primary_ready: true,
        slot_available: true,
        ..Default::default()
    }
}

/// A canary already initialized on revision `r1`.
fn initialized(spec: &CanarySpec) -> CanaryStatus {
    let mut st = CanaryStatus::default();
    let p = decide(
        spec,
        &st,
        &Observations {
            primary_exists: false,
            ..ok_obs("r1")
        },
        0.0,
    );
    assert_eq!(p.actions, vec![Action::CreatePrimary]);
    st = p.status;
    let p = decide(spec, &st, &ok_obs("r1"), 1.0);
    assert_eq!(p.status.phase, Phase::Initialized);
    assert_eq!(p.events[0].message, "Initialization done! podinfo.test");
    assert!(p.actions.contains(&Action::ScaleCanaryDown));
    p.status
}

/// Drives the canary with `obs` (checks filled in when due) until `stop` or 100 ticks.
fn drive(
    spec: &CanarySpec,
    mut st: CanaryStatus,
    mut obs: impl FnMut(&CanaryStatus, Due) -> Observations,
    stop: impl Fn(&CanaryStatus) -> bool,
) -> (CanaryStatus, Vec<Plan>) {
    let mut now = 100.0;
    let mut plans = Vec::new();
    for _ in 0..100 {
        now += 10.0;
        let d = due(spec, &st, now);
        let p = decide(spec, &st, &obs(&st, d), now);
        st = p.status.clone();
        plans.push(p);
        if stop(&st) {
            break;
        }
    }
    (st, plans)
}

fn passing(rev: &'static str) -> impl FnMut(&CanaryStatus, Due) -> Observations {
    move |_, d| {
        let mut o = ok_obs(rev);
        match d {
            Due::PreRollout => o.pre_rollout = Some(Checks::default()),
            Due::Analysis => o.analysis = Some(Checks::default()),
            Due::Nothing => {}
        }
        o
    }
}

fn messages(plans: &[Plan]) -> Vec<String> {
    plans
        .iter()
        .flat_map(|p| p.events.iter().map(|e| e.message.clone()))
        .collect()
}

#[test]
fn promotion_steps_weights_in_flagger_order() {
    let spec = CanaryFixture::podinfo().with_step_weight(10).build();
    let st = initialized(&spec);
    let (st, plans) = drive(&spec, st, passing("r2"), |s| s.phase == Phase::Succeeded);
    assert_eq!(st.phase, Phase::Succeeded);
    assert_eq!(st.last_promoted_spec, "r2");
    assert_eq!(
        messages(&plans),
        vec![
            "New revision detected! Scaling up podinfo.test",
            "Starting canary analysis for podinfo.test",
            "Advance podinfo.test canary weight 10",
            "Advance podinfo.test canary weight 20",
            "Advance podinfo.test canary weight 30",
            "Advance podinfo.test canary weight 40",
            "Advance podinfo.test canary weight 50",
            "Copying podinfo.test template spec to podinfo-primary.test",
            "Routing all traffic to primary",
            "Promotion completed! Scaling down podinfo.test",
        ]
    );
    let routes: Vec<(u32, u32)> = plans
        .iter()
        .flat_map(|p| p.actions.iter())
        .filter_map(|a| match a {
            Action::Route {
                primary, canary, ..
            } => Some((*primary, *canary)),
            _ => None,
        })
        .collect();
    assert_eq!(
        routes,
        vec![(90, 10), (80, 20), (70, 30), (60, 40), (50, 50), (100, 0)]
    );
}

#[test]
fn rollback_at_threshold_with_flagger_messages() {
    let spec = CanaryFixture::podinfo().build();
    let st = initialized(&spec);
    let (st, plans) = drive(&spec, st, failing("r2"), |s| s.phase == Phase::Failed);
    assert_eq!(
        (st.phase, st.canary_weight, st.failed_checks),
        (Phase::Failed, 0, 5)
    );
    let msgs = messages(&plans);
    assert_eq!(
        msgs.iter()
            .filter(|m| m.starts_with("Halt podinfo.test advancement success rate 50.00% < 99%"))
            .count(),
        5
    );
    assert_eq!(
        &msgs[msgs.len() - 2..],
        [
            "Rolling back podinfo.test failed checks threshold reached 5",
            "Canary failed! Scaling down podinfo.test"
        ]
    );
    let last = plans.last().unwrap();
    assert!(last.actions.contains(&Action::Route {
        primary: 100,
        canary: 0,
        mirror: false,
        ab: false
    }));
    assert!(last.actions.contains(&Action::ScaleCanaryDown));
    // The same revision starts nothing again; `retry` does.
    let p = decide(&spec, &st, &ok_obs("r2"), 9999.0);
    assert!(p.actions.is_empty() && p.status.phase == Phase::Failed);
    let p = decide(
        &spec,
        &st,
        &Observations {
            manual: Some(Manual::Retry),
            ..ok_obs("r2")
        },
        9999.0,
    );
    assert_eq!(p.status.phase, Phase::Progressing);
}

#[test]
fn progress_deadline_and_rollback_webhook() {
    let spec = CanaryFixture::podinfo().build();
    let st = initialized(&spec);
    let p = decide(&spec, &st, &ok_obs("r2"), 100.0);
    let st = p.status;
    // The canary lost availability at 105 (progressDeadlineSeconds: 60).
    let not_ready = Observations {
        canary_not_ready: Some("canary deployment podinfo.test not ready".into()),
        canary_unavailable_since: Some(105.0),
        ..ok_obs("r2")
    };
    assert_eq!(
        decide(&spec, &st, &not_ready, 160.0).status.phase,
        Phase::Progressing,
        "within the deadline: wait"
    );
    let p = decide(&spec, &st, &not_ready, 170.0);
    assert_eq!(p.status.phase, Phase::Failed);
    assert_eq!(p.events[0].message, "Rolling back podinfo.test progress deadline exceeded canary deployment podinfo.test not ready");
    let p = decide(
        &spec,
        &st,
        &Observations {
            rollback_requested: true,
            ..ok_obs("r2")
        },
        120.0,
    );
    assert_eq!(p.status.phase, Phase::Failed);
    assert_eq!(
        p.events[0].message,
        "Rolling back podinfo.test manual webhook invoked"
    );
}

#[test]
fn the_progress_deadline_counts_from_the_loss_of_availability_not_the_phase_start() {
    let spec = CanaryFixture::podinfo().build();
    let (st, _) = drive(&spec, initialized(&spec), passing("r2"), |s| {
        s.canary_weight == 30
    });
    assert_eq!(st.phase, Phase::Progressing);
    // Long after the phase began, a hiccup: unavailable for 5 s of a 60 s deadline.
    let now = st.last_transition_time + 3_600.0;
    let hiccup = Observations {
        canary_not_ready: Some("canary deployment podinfo.test not ready".into()),
        canary_unavailable_since: Some(now - 5.0),
        ..ok_obs("r2")
    };
    let p = decide(&spec, &st, &hiccup, now);
    assert_eq!(p.status.phase, Phase::Progressing, "{:?}", p.events);
    assert!(p.actions.is_empty());
    // Not ready, but its availability is unknown (no condition yet): wait, as Flagger
    // treats it as retriable.
    let unknown = Observations {
        canary_unavailable_since: None,
        ..hiccup.clone()
    };
    assert_eq!(
        decide(&spec, &st, &unknown, now).status.phase,
        Phase::Progressing
    );
    // Still unavailable past the deadline: roll back.
    let p = decide(&spec, &st, &hiccup, now + 56.0);
    assert_eq!(p.status.phase, Phase::Failed);
}

#[test]
fn gates_run_once_per_interval() {
    let spec = CanaryFixture::podinfo()
        .with_hook("confirm-rollout")
        .build();
    let st = initialized(&spec);
    assert!(gates_due(&spec, &st, 100.0));
    let asked = Observations {
        confirm_rollout: Some(false),
        gates_checked: true,
        ..ok_obs("r2")
    };
    let p = decide(&spec, &st, &asked, 100.0);
    assert_eq!(p.status.phase, Phase::Waiting);
    assert_eq!(p.status.last_gate_time, 100.0);
    let st = p.status;
    // The next engine tick, half a second later: the gate is not due (interval 10s),
    // and a gate that was not asked holds the canary.
    assert!(!gates_due(&spec, &st, 100.5));
    assert!(gates_due(&spec, &st, 110.0));
    let p = decide(&spec, &st, &ok_obs("r2"), 100.5);
    assert_eq!(
        p.status, st,
        "nothing changes until the gate is asked again"
    );
    let p = decide(
        &spec,
        &st,
        &Observations {
            confirm_rollout: Some(true),
            gates_checked: true,
            ..ok_obs("r2")
        },
        110.0,
    );
    assert_eq!(p.status.phase, Phase::Progressing);
}

#[test]
fn each_step_asks_only_the_gate_it_needs() {
    let spec = CanaryFixture::podinfo().build();
    let mut st = initialized(&spec);
    st.phase = Phase::Progressing;
    assert_eq!(
        step_gate(&spec, &st),
        Some(HookType::ConfirmTrafficIncrease)
    );
    st.canary_weight = 50;
    assert_eq!(step_gate(&spec, &st), Some(HookType::ConfirmPromotion));
    let bg = CanaryFixture::podinfo().with_iterations(3).build();
    let mut st = initialized(&bg);
    st.iterations = 2;
    assert_eq!(step_gate(&bg, &st), None);
    st.iterations = 3;
    assert_eq!(step_gate(&bg, &st), Some(HookType::ConfirmPromotion));
}

#[test]
fn a_promote_command_stays_pending_until_a_step_uses_it() {
    let spec = CanaryFixture::podinfo()
        .with_hook("confirm-traffic-increase")
        .build();
    let (mut st, _) = drive(
        &spec,
        initialized(&spec),
        |s, d| {
            let mut o = passing("r2")(s, d);
            o.confirm_traffic_increase = Some(false);
            o
        },
        |s| s.phase == Phase::Progressing && s.last_step_time > s.last_transition_time,
    );
    // Held at the closed gate (the first step asked it and kept the weight).
    assert_eq!(st.canary_weight, 0);
    st.last_step_time = 1_000.0;
    let promote = Observations {
        manual: Some(Manual::Promote),
        ..ok_obs("r2")
    };
    // Between steps: nothing happens, and the command stays.
    let p = decide(&spec, &st, &promote, 1_001.0);
    assert_eq!(p.status.canary_weight, 0);
    assert!(p.manual_pending, "the promote is kept for the next step");
    // The next step: the gate is still closed, the promote opens it once.
    let step = Observations {
        analysis: Some(Checks::default()),
        confirm_traffic_increase: Some(false),
        ..promote.clone()
    };
    let p = decide(&spec, &st, &step, 1_010.0);
    assert_eq!(p.status.canary_weight, 10);
    assert!(!p.manual_pending, "used");
    // Without the promote, the closed gate holds.
    let p = decide(
        &spec,
        &st,
        &Observations {
            manual: None,
            ..step
        },
        1_010.0,
    );
    assert_eq!(p.status.canary_weight, 0);
    // Nothing to promote: the command is dropped, not kept for a later analysis.
    let nothing_new = Observations {
        revision: "r1".into(),
        ..promote.clone()
    };
    let p = decide(&spec, &initialized(&spec), &nothing_new, 1_001.0);
    assert!(!p.manual_pending);
    let abort = Observations {
        manual: Some(Manual::Abort),
        ..ok_obs("r1")
    };
    assert!(!decide(&spec, &initialized(&spec), &abort, 1_001.0).manual_pending);
}

#[test]
fn a_replica_change_reaches_the_primary_unless_an_autoscaler_owns_it() {
    let spec = CanaryFixture::podinfo().build();
    let st = initialized(&spec);
    let obs = Observations {
        target_replicas: 3,
        primary_replicas: Some(2),
        ..ok_obs("r1")
    };
    let p = decide(&spec, &st, &obs, 100.0);
    assert_eq!(p.actions, vec![Action::ScalePrimary(3)]);
    assert_eq!(p.status, st, "no new revision, no analysis");
    let same = Observations {
        primary_replicas: Some(3),
        ..obs.clone()
    };
    assert!(decide(&spec, &st, &same, 100.0).actions.is_empty());
    let hpa = CanaryFixture::podinfo()
        .set("autoscalerRef", json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "name": "podinfo"}))
        .build();
    assert!(decide(&hpa, &initialized(&hpa), &obs, 100.0)
        .actions
        .is_empty());
}

#[test]
fn confirm_gates_wait_and_manual_promote_opens_them() {
    let spec = CanaryFixture::podinfo()
        .with_hook("confirm-rollout")
        .with_hook("confirm-promotion")
        .build();
    let st = initialized(&spec);
    let closed = Observations {
        confirm_rollout: Some(false),
        ..ok_obs("r2")
    };
    let p = decide(&spec, &st, &closed, 100.0);
    assert_eq!(p.status.phase, Phase::Waiting);
    assert!(p.actions.is_empty());
    let p = decide(
        &spec,
        &p.status,
        &Observations {
            confirm_rollout: Some(true),
            ..ok_obs("r2")
        },
        110.0,
    );
    assert_eq!(p.status.phase, Phase::Progressing);
    // At max weight, a closed promotion gate holds in WaitingPromotion.
    let mut st = p.status;
    st.canary_weight = 50;
    st.last_step_time = 0.0;
    let o = Observations {
        analysis: Some(Checks::default()),
        confirm_promotion: Some(false),
        ..ok_obs("r2")
    };
    let mut st2 = st.clone();
    st2.iterations = 1;
    let p = decide(&spec, &st2, &o, 500.0);
    assert_eq!(p.status.phase, Phase::WaitingPromotion);
    let p = decide(
        &spec,
        &p.status,
        &Observations {
            manual: Some(Manual::Promote),
            ..o
        },
        510.0,
    );
    assert_eq!(p.status.phase, Phase::Promoting);
}

#[test]
fn blue_green_ab_and_mirror() {
    let spec = CanaryFixture::podinfo().with_iterations(3).build();
    let st = initialized(&spec);
    let (st, plans) = drive(&spec, st, passing("r2"), |s| s.phase == Phase::Succeeded);
    assert_eq!(st.phase, Phase::Succeeded);
    let msgs = messages(&plans);
    assert!(
        msgs.contains(&"Advance podinfo.test canary iteration 3/3".to_string()),
        "{msgs:?}"
    );
    assert!(msgs.contains(&"Routing all traffic to canary".to_string()));

    let ab = CanaryFixture::podinfo()
        .with_iterations(2)
        .set(
            "analysis.match",
            json!([{"headers": {"x-canary": {"exact": "insider"}}}]),
        )
        .build();
    let st = initialized(&ab);
    let (st, plans) = drive(&ab, st, passing("r2"), |s| s.phase == Phase::Succeeded);
    assert_eq!(st.phase, Phase::Succeeded);
    assert!(plans.iter().flat_map(|p| &p.actions).any(|a| *a
        == Action::Route {
            primary: 100,
            canary: 0,
            mirror: false,
            ab: true
        }));
    assert!(
        !messages(&plans).contains(&"Routing all traffic to canary".to_string()),
        "A/B promotes without a full switch"
    );

    let mirror = CanaryFixture::podinfo()
        .with_iterations(2)
        .set("analysis.mirror", json!(true))
        .build();
    let st = initialized(&mirror);
    let (_, plans) = drive(&mirror, st, passing("r2"), |s| s.phase == Phase::Succeeded);
    assert!(plans.iter().flat_map(|p| &p.actions).any(|a| *a
        == Action::Route {
            primary: 100,
            canary: 0,
            mirror: true,
            ab: false
        }));
    assert!(messages(&plans)
        .contains(&"Stop traffic mirroring and route all traffic to canary".to_string()));
}

#[test]
fn skip_analysis_suspend_and_revisions() {
    let spec = CanaryFixture::podinfo()
        .set("skipAnalysis", json!(true))
        .build();
    let st = initialized(&spec);
    let p = decide(&spec, &st, &ok_obs("r2"), 100.0);
    let p = decide(&spec, &p.status, &ok_obs("r2"), 110.0);
    assert_eq!(p.status.phase, Phase::Succeeded);
    assert_eq!(
        p.events.last().unwrap().message,
        "Promotion completed! Canary analysis was skipped for podinfo.test"
    );

    let suspended = CanaryFixture::podinfo().set("suspend", json!(true)).build();
    let st = initialized(&CanaryFixture::podinfo().build());
    assert_eq!(
        decide(&suspended, &st, &ok_obs("r9"), 100.0).status,
        st,
        "suspend changes nothing"
    );

    // A revision change mid-analysis restarts it.
    let spec = CanaryFixture::podinfo().build();
    let (st, _) = drive(&spec, initialized(&spec), passing("r2"), |s| {
        s.canary_weight == 20
    });
    let p = decide(&spec, &st, &ok_obs("r3"), 10_000.0);
    assert_eq!(
        (
            p.status.phase,
            p.status.canary_weight,
            p.status.last_applied_spec.as_str()
        ),
        (Phase::Progressing, 0, "r3")
    );
    assert_eq!(
        p.events[0].message,
        "New revision detected! Restarting analysis for podinfo.test"
    );

    // Going back to the promoted revision starts nothing.
    let st = initialized(&spec);
    let p = decide(&spec, &st, &ok_obs("r1"), 100.0);
    assert!(p.actions.is_empty() && p.events.is_empty());
}

#[test]
fn never_routes_to_a_primary_that_is_not_ready() {
    let spec = CanaryFixture::podinfo().build();
    let mut st = initialized(&spec);
    st.phase = Phase::Promoting;
    st.canary_weight = 50;
    let p = decide(
        &spec,
        &st,
        &Observations {
            primary_ready: false,
            ..ok_obs("r1")
        },
        100.0,
    );
    assert!(
        p.actions.is_empty(),
        "no route change while the primary is not ready"
    );
    assert_eq!(p.status.phase, Phase::Promoting);
    let p = decide(&spec, &st, &ok_obs("r1"), 110.0);
    assert_eq!(p.status.phase, Phase::Finalising);
    assert!(p.actions.contains(&Action::Route {
        primary: 100,
        canary: 0,
        mirror: false,
        ab: false
    }));
}

#[test]
fn step_weights_and_slots() {
    let spec = CanaryFixture::podinfo()
        .set("analysis.stepWeights", json!([1, 5, 25, 60]))
        .build();
    let (_, plans) = drive(&spec, initialized(&spec), passing("r2"), |s| {
        s.phase == Phase::Succeeded
    });
    let weights: Vec<String> = messages(&plans)
        .into_iter()
        .filter(|m| m.contains("canary weight"))
        .collect();
    assert_eq!(
        weights,
        [
            "Advance podinfo.test canary weight 1",
            "Advance podinfo.test canary weight 5",
            "Advance podinfo.test canary weight 25",
            "Advance podinfo.test canary weight 60"
        ]
    );
    let st = initialized(&spec);
    let p = decide(
        &spec,
        &st,
        &Observations {
            slot_available: false,
            ..ok_obs("r2")
        },
        100.0,
    );
    assert_eq!(p.status.phase, Phase::Waiting);
}

#[test]
fn manual_promote_between_steps_is_not_lost() {
    let spec = CanaryFixture::podinfo().build();
    let mut st = initialized(&spec);
    st.phase = Phase::WaitingPromotion;
    st.canary_weight = 50;
    st.last_applied_spec = "r2".into();
    st.last_step_time = 1_000.0;
    // Not due (the interval has not passed), yet the command promotes.
    let p = decide(
        &spec,
        &st,
        &Observations {
            manual: Some(Manual::Promote),
            ..ok_obs("r2")
        },
        1_001.0,
    );
    assert_eq!(p.status.phase, Phase::Promoting);
    assert_eq!(
        p.events[0].message,
        "Copying podinfo.test template spec to podinfo-primary.test"
    );
}

/// Every check of revision `rev` fails.
fn failing(rev: &'static str) -> impl FnMut(&CanaryStatus, Due) -> Observations {
    move |_, d| {
        let mut o = ok_obs(rev);
        match d {
            Due::PreRollout => o.pre_rollout = Some(Checks::default()),
            Due::Analysis => {
                o.analysis = Some(Checks {
                    failures: vec!["Halt podinfo.test advancement success rate 50.00% < 99%".into()],
                })
            }
            Due::Nothing => {}
        }
        o
    }
}

#[test]
fn the_load_starts_with_the_analysis_and_the_first_check_may_wait_for_it() {
    let spec = CanaryFixture::podinfo()
        .set(
            "analysis.webhooks",
            json!([{"name": "load-test", "url": "http://flagger-loadtester.test/", "metadata": {"cmd": "hey -z 1m http://podinfo-canary.test:9898/"}}]),
        )
        .build();
    let (st, plans) = drive(&spec, initialized(&spec), passing("r2"), |s| {
        s.canary_weight == 10
    });
    let start = plans.last().unwrap();
    assert_eq!(
        start.events[0].message,
        "Starting canary analysis for podinfo.test"
    );
    assert!(
        start.actions.contains(&Action::RunHooks(HookType::Rollout)),
        "{:?}",
        start.actions
    );
    assert_eq!(st.analysis_start, start.events[0].at);
    assert_eq!(
        st.message,
        "New revision detected, progressing canary analysis."
    );
    // The first check may wait for traffic, for at most one more interval (10s here)...
    let t0 = st.analysis_start;
    assert_eq!(due(&spec, &st, t0 + 10.0), Due::Analysis);
    assert!(super::decide::first_check_may_wait(&spec, &st, t0 + 10.0));
    assert!(super::decide::first_check_may_wait(&spec, &st, t0 + 19.9));
    assert!(!super::decide::first_check_may_wait(&spec, &st, t0 + 20.0));
    // ...and later checks never do.
    let p = decide(
        &spec,
        &st,
        &Observations {
            analysis: Some(Checks::default()),
            ..ok_obs("r2")
        },
        t0 + 10.0,
    );
    assert_eq!(p.status.canary_weight, 20);
    assert!(!p.actions.contains(&Action::RunHooks(HookType::Rollout)));
    assert!(!super::decide::first_check_may_wait(
        &spec,
        &p.status,
        t0 + 11.0
    ));
}

#[test]
fn reverting_git_after_a_rollback_says_the_primary_serves_the_promoted_revision() {
    let spec = CanaryFixture::podinfo().build();
    let (st, _) = drive(&spec, initialized(&spec), failing("r2"), |s| {
        s.phase == Phase::Failed
    });
    assert_eq!(
        st.message,
        "Canary analysis failed, Deployment scaled to zero."
    );
    let p = decide(&spec, &st, &ok_obs("r1"), 5000.0);
    assert!(p.actions.is_empty(), "nothing starts: {:?}", p.actions);
    assert_eq!(p.status.phase, Phase::Failed);
    assert_eq!(
        p.events.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(),
        ["podinfo.test revision r1 equals the promoted revision; podinfo-primary.test serves it, nothing to analyse"]
    );
    assert_eq!(
        p.status.message,
        "podinfo-primary.test serves the promoted revision r1; Git no longer holds the rolled-back revision r2"
    );
    // Said once: the next tick is quiet.
    let again = decide(&spec, &p.status, &ok_obs("r1"), 5001.0);
    assert!(again.events.is_empty() && again.status == p.status);
}
