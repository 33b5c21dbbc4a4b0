//! The local runtime with real processes: replicas and readiness, crash-loop backoff,
//! rolling updates that keep availability, and no orphans after `kill -9`.

mod common;
use common::*;
use std::time::{Duration, Instant};

const IMAGES: &str =
    "    images:\n      example.com/demo: [\"gitcanary\", \"demo-app\", \"--port\", \"$(PORT)\"]\n";

fn deployment(name: &str, replicas: u32, extra_env: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: test\nspec:\n  replicas: {replicas}\n  strategy:\n    rollingUpdate:\n      maxSurge: 1\n      maxUnavailable: 0\n  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    spec:\n      terminationGracePeriodSeconds: 5\n      containers:\n        - name: app\n          image: example.com/demo:1.2.3\n          ports:\n            - name: http\n              containerPort: 9898\n          env:\n            - name: GREETING\n              value: \"{extra_env}\"\n          readinessProbe:\n            httpGet:\n              path: /readyz\n              port: http\n            periodSeconds: 1\n"
    )
}

fn setup_with(files: &[(&str, &str)]) -> (Remote, Setup) {
    let remote = Remote::new();
    remote.write(files).push("seed");
    let setup = Setup::new(&remote.bare.display().to_string(), "  interval: 1h\n", "");
    setup.with_local_images(IMAGES);
    (remote, setup)
}

fn status(setup: &Setup, name: &str) -> serde_json::Value {
    std::fs::read(
        setup
            .state()
            .join(format!("status/apps/Deployment/test/{name}.json")),
    )
    .ok()
    .and_then(|b| serde_json::from_slice(&b).ok())
    .unwrap_or_default()
}

fn endpoints(setup: &Setup) -> Vec<serde_json::Value> {
    std::fs::read(setup.state().join("status/endpoints.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Vec<serde_json::Value>>(&b).ok())
        .unwrap_or_default()
}

fn get(port: u64, path: &str) -> Option<(u16, String)> {
    let (code, _, body) = std::panic::catch_unwind(|| {
        http_request(&format!("127.0.0.1:{port}"), "GET", path, &[], b"")
    })
    .ok()?;
    Some((code, String::from_utf8_lossy(&body).into_owned()))
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

fn pids_of(setup: &Setup) -> Vec<u32> {
    std::fs::read_dir(setup.state().join("runtime/pids"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            serde_json::from_slice::<serde_json::Value>(&std::fs::read(e.path()).ok()?).ok()?["pid"]
                .as_u64()
                .map(|p| p as u32)
        })
        .collect()
}

#[test]
fn replicas_run_become_ready_and_serve_their_version() {
    let (_remote, setup) = setup_with(&[("web.yaml", &deployment("web", 2, "hi"))]);
    // A secret in gitcanary's environment, as a Git token would be.
    let running = setup.spawn_run(&[("GITCANARY_TEST_GIT_TOKEN", "s3cr3t")]);
    wait_for(Duration::from_secs(30), || {
        (status(&setup, "web")["readyReplicas"] == 2).then_some(())
    })
    .expect("2 ready replicas");
    let st = status(&setup, "web");
    assert_eq!(
        (
            st["replicas"].as_u64(),
            st["updatedReplicas"].as_u64(),
            st["availableReplicas"].as_u64()
        ),
        (Some(2), Some(2), Some(2))
    );
    assert_eq!(st["observedGeneration"], 1);
    let eps = endpoints(&setup);
    assert_eq!(eps.len(), 2);
    let mut ports = Vec::new();
    for ep in &eps {
        let port = ep["ports"][0][2].as_u64().unwrap();
        assert_ne!(port, 9898, "each replica gets its own loopback port");
        let (code, body) = get(port, "/version").expect("replica answers");
        assert_eq!(code, 200);
        assert!(
            body.contains("\"version\":\"1.2.3\""),
            "IMAGE_TAG is the image's tag: {body}"
        );
        let (_, env) = get(port, "/env").expect("replica answers");
        assert!(
            env.contains("\"GREETING=hi\"") && env.contains("\"PATH="),
            "{env}"
        );
        assert!(
            !env.contains("s3cr3t"),
            "replicas get their spec's env, never gitcanary's: {env}"
        );
        ports.push(port);
    }
    assert_ne!(ports[0], ports[1]);
    let out = setup.cmd(&["logs", "test/web"]);
    assert!(out.status.success());
    running.stop();
    for port in ports {
        assert!(
            get(port, "/healthz").is_none(),
            "replicas stop with gitcanary"
        );
    }
}

#[test]
fn a_crashing_container_restarts_with_backoff_and_status_shows_it() {
    let crash = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: crash\n  namespace: test\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: crash}\n  template:\n    metadata:\n      labels: {app: crash}\n    spec:\n      containers:\n        - name: app\n          image: busybox:1\n          command: [\"sh\", \"-c\", \"echo starting; exit 3\"]\n";
    let (_remote, setup) = setup_with(&[("crash.yaml", crash)]);
    let running = setup.spawn_run(&[]);
    let started = Instant::now();
    let st = wait_for(Duration::from_secs(20), || {
        let st = status(&setup, "crash");
        (st["restarts"].as_u64()? >= 3).then_some(st)
    })
    .expect("restarts");
    // Backoff 1s, 2s, 4s: three restarts take at least 3s, not a busy loop.
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "restarted too fast: {:?}",
        started.elapsed()
    );
    let failure = st["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "ReplicaFailure")
        .cloned()
        .unwrap_or_default();
    assert_eq!(failure["reason"], "CrashLoopBackOff", "{st}");
    assert!(
        failure["message"]
            .as_str()
            .unwrap()
            .contains("exit status: 3"),
        "{failure}"
    );
    assert_eq!(st["readyReplicas"], 0);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        status(&setup, "crash")["restarts"].as_u64().unwrap() <= 4,
        "backoff keeps restarts slow"
    );
    let out = setup.cmd(&["logs", "test/crash"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("] starting"),
        "logs are kept"
    );
    running.stop();
}

#[test]
fn a_template_change_rolls_over_without_losing_availability() {
    let (remote, setup) = setup_with(&[("web.yaml", &deployment("roll", 2, "v1"))]);
    let running = setup.spawn_run(&[]);
    wait_for(Duration::from_secs(30), || {
        (status(&setup, "roll")["availableReplicas"] == 2).then_some(())
    })
    .expect("ready");
    let first: Vec<String> = endpoints(&setup)
        .iter()
        .map(|e| e["pod"].as_str().unwrap().to_string())
        .collect();
    remote
        .write(&[("web.yaml", &deployment("roll", 2, "v2"))])
        .push("change template");
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut min_available = u64::MAX;
    loop {
        let st = status(&setup, "roll");
        if let Some(a) = st["availableReplicas"].as_u64() {
            min_available = min_available.min(a);
        }
        let eps = endpoints(&setup);
        let rolled = st["observedGeneration"] == 2
            && st["updatedReplicas"] == 2
            && st["availableReplicas"] == 2
            && eps.len() == 2
            && eps
                .iter()
                .all(|e| !first.contains(&e["pod"].as_str().unwrap().to_string()));
        if rolled {
            break;
        }
        assert!(Instant::now() < deadline, "rollout did not finish: {st}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        min_available >= 2,
        "maxUnavailable 0 kept 2 available throughout (saw {min_available})"
    );
    running.stop();
}

#[test]
fn sigkill_leaves_no_orphans_and_the_next_start_restarts_them() {
    let (_remote, setup) = setup_with(&[("web.yaml", &deployment("web", 2, "hi"))]);
    let mut running = setup.spawn_run(&[]);
    wait_for(Duration::from_secs(30), || {
        (status(&setup, "web")["readyReplicas"] == 2).then_some(())
    })
    .expect("ready");
    let pids = pids_of(&setup);
    assert_eq!(pids.len(), 2);
    running.child.kill().unwrap(); // SIGKILL
    running.child.wait().unwrap();
    wait_for(Duration::from_secs(5), || {
        pids.iter().all(|p| !alive(*p)).then_some(())
    })
    .expect("children die with gitcanary");

    let running = setup.spawn_run(&[]);
    wait_for(Duration::from_secs(30), || {
        let now = pids_of(&setup);
        (now.len() == 2 && now.iter().all(|p| !pids.contains(p) && alive(*p))).then_some(())
    })
    .expect("the next start runs them again");
    running.stop();
}

fn pgrp(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rfind(')')
        .and_then(|i| stat[i + 2..].split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(0)
}

fn processes_with_cmdline(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            alive(*pid)
                && std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| {
                        String::from_utf8_lossy(&c)
                            .replace('\0', " ")
                            .contains(needle)
                    })
                    .unwrap_or(false)
        })
        .collect()
}

#[test]
fn grandchildren_left_by_a_sigkill_are_reaped_on_the_next_start() {
    // `sleep 7777` is a grandchild: the death signal reaches only the direct child.
    let forker = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: forker\n  namespace: test\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: forker}\n  template:\n    metadata:\n      labels: {app: forker}\n    spec:\n      containers:\n        - name: app\n          image: busybox:1\n          command: [\"sh\", \"-c\", \"sleep 7777 & exec sleep 7778\"]\n";
    let (_remote, setup) = setup_with(&[("forker.yaml", forker)]);
    let mut running = setup.spawn_run(&[]);
    // Only this run's processes count (another test run may be going on beside it):
    // those in the process groups this gitcanary recorded.
    let ours = |leaders: &[u32]| -> Vec<u32> {
        processes_with_cmdline("sleep 7777")
            .into_iter()
            .filter(|p| leaders.contains(&pgrp(*p)))
            .collect()
    };
    let leaders = wait_for(Duration::from_secs(20), || {
        let leaders = pids_of(&setup);
        (!ours(&leaders).is_empty()).then_some(leaders)
    })
    .expect("grandchild runs");
    running.child.kill().unwrap();
    running.child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let orphans = ours(&leaders);
    assert!(
        !orphans.is_empty(),
        "the grandchild outlives a SIGKILLed gitcanary (the case reaping exists for)"
    );
    let running = setup.spawn_run(&[]);
    wait_for(Duration::from_secs(10), || {
        orphans.iter().all(|p| !alive(*p)).then_some(())
    })
    .expect("the next start reaps the orphan");
    let new_leaders = wait_for(Duration::from_secs(20), || {
        let l = pids_of(&setup);
        (!l.is_empty() && !ours(&l).is_empty()).then_some(l)
    })
    .expect("restarted");
    running.stop();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        ours(&new_leaders).is_empty(),
        "graceful stop kills the whole group"
    );
}

#[test]
fn a_service_balances_across_ready_replicas() {
    let svc = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: test\nspec:\n  selector:\n    app: web\n  ports:\n    - name: http\n      port: 80\n      targetPort: http\n";
    let (_remote, setup) =
        setup_with(&[("web.yaml", &deployment("web", 2, "hi")), ("svc.yaml", svc)]);
    let running = setup.spawn_run(&[]);
    wait_for(Duration::from_secs(30), || {
        (status(&setup, "web")["readyReplicas"] == 2).then_some(())
    })
    .expect("ready");
    let out = setup.cmd(&["get", "services", "-o", "json"]);
    let services: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let svc = services
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "web")
        .cloned()
        .expect("service listed");
    assert_eq!(svc["readyEndpoints"], 2);
    let addr = svc["address"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .to_string();
    let mut hosts = std::collections::HashMap::new();
    for _ in 0..100 {
        let (code, _, body) = http_request(&addr, "GET", "/", &[], b"");
        assert_eq!(code, 200);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        *hosts
            .entry(v["hostname"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    assert_eq!(hosts.len(), 2, "both replicas serve: {hosts:?}");
    // As podinfo in a pod, each replica reports its pod's name.
    assert!(
        hosts.keys().all(|h| h.starts_with("web-")),
        "pod names: {hosts:?}"
    );
    assert!(hosts.values().all(|n| *n >= 40), "balanced: {hosts:?}");
    let metrics_addr = setup.server_address();
    let (_, _, body) = http_request(&metrics_addr, "GET", "/metrics", &[], b"");
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("response_total{direction=\"inbound\",namespace=\"test\",deployment=\"web\",classification=\"success\",status_code=\"200\"} 100"), "{text}");
    running.stop();
}

#[test]
fn a_rollover_under_steady_load_fails_no_request() {
    let svc = "apiVersion: v1\nkind: Service\nmetadata:\n  name: steady\n  namespace: test\nspec:\n  selector:\n    app: steady\n  ports:\n    - name: http\n      port: 80\n      targetPort: http\n";
    let (remote, setup) = setup_with(&[
        ("web.yaml", &deployment("steady", 2, "v1")),
        ("svc.yaml", svc),
    ]);
    let running = setup.spawn_run(&[]);
    wait_for(Duration::from_secs(30), || {
        (status(&setup, "steady")["availableReplicas"] == 2).then_some(())
    })
    .expect("ready");
    let out = setup.cmd(&["get", "services", "-o", "json"]);
    let services: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let addr = services
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "steady")
        .unwrap()["address"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .to_string();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, addr) = (stop.clone(), addr.clone());
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (code, _, body) = http_request(&addr, "GET", "/", &[], b"");
                if code == 200 {
                    ok += 1;
                } else {
                    failed.push(format!("{code}: {}", String::from_utf8_lossy(&body)));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (ok, failed)
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    remote
        .write(&[("web.yaml", &deployment("steady", 2, "v2"))])
        .push("roll");
    wait_for(Duration::from_secs(40), || {
        let st = status(&setup, "steady");
        (st["observedGeneration"] == 2
            && st["updatedReplicas"] == 2
            && st["availableReplicas"] == 2
            && st["replicas"] == 2)
            .then_some(())
    })
    .expect("rolled over");
    std::thread::sleep(Duration::from_millis(2500)); // old pods drain and stop under load
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = load.join().unwrap();
    assert!(ok > 100, "the load ran: {ok}");
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the rollover: {:?}",
        failed.len(),
        ok as usize + failed.len(),
        &failed[..failed.len().min(5)]
    );
    running.stop();
}

#[test]
fn an_image_without_command_or_mapping_is_an_error_on_the_status() {
    let unmapped = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: unmapped\n  namespace: test\nspec:\n  selector:\n    matchLabels: {app: unmapped}\n  template:\n    metadata:\n      labels: {app: unmapped}\n    spec:\n      containers:\n        - name: app\n          image: registry.example/unknown:1.0\n";
    let (_remote, setup) = setup_with(&[("u.yaml", unmapped)]);
    let running = setup.spawn_run(&[]);
    let st = wait_for(Duration::from_secs(20), || {
        let st = status(&setup, "unmapped");
        st["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Progressing" && c["reason"] == "InvalidPodTemplate")
            .map(|_| st.clone())
    })
    .expect("status names the problem");
    let msg = st["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Progressing")
        .unwrap()["message"]
        .clone();
    assert_eq!(msg, "container \"app\": image \"registry.example/unknown\" has no command and target.local.images has no entry for it");
    assert_eq!(st["replicas"], 0);
    running.stop();
}

/// The Flagger guides' podinfo Deployment, unchanged: `./podinfo` inside the image with
/// literal ports, three declared ports, and `podcli` exec probes.
const GUIDE_PODINFO: &str = r##"apiVersion: apps/v1
kind: Deployment
metadata:
  name: podinfo
  namespace: test
  labels:
    app: podinfo
spec:
  replicas: 2
  minReadySeconds: 5
  revisionHistoryLimit: 5
  progressDeadlineSeconds: 60
  strategy:
    rollingUpdate:
      maxUnavailable: 1
    type: RollingUpdate
  selector:
    matchLabels:
      app: podinfo
  template:
    metadata:
      annotations:
        prometheus.io/scrape: "true"
        prometheus.io/port: "9797"
      labels:
        app: podinfo
    spec:
      containers:
      - name: podinfod
        image: ghcr.io/stefanprodan/podinfo:6.0.0
        imagePullPolicy: IfNotPresent
        ports:
        - name: http
          containerPort: 9898
          protocol: TCP
        - name: http-metrics
          containerPort: 9797
          protocol: TCP
        - name: grpc
          containerPort: 9999
          protocol: TCP
        command:
        - ./podinfo
        - --port=9898
        - --port-metrics=9797
        - --grpc-port=9999
        - --grpc-service-name=podinfo
        - --level=info
        - --random-delay=false
        - --random-error=false
        env:
        - name: PODINFO_UI_COLOR
          value: "#34577c"
        livenessProbe:
          exec:
            command:
            - podcli
            - check
            - http
            - localhost:9898/healthz
          initialDelaySeconds: 5
          timeoutSeconds: 5
        readinessProbe:
          exec:
            command:
            - podcli
            - check
            - http
            - localhost:9898/readyz
          initialDelaySeconds: 1
          timeoutSeconds: 5
        resources:
          limits:
            cpu: 2000m
            memory: 512Mi
          requests:
            cpu: 100m
            memory: 64Mi
"##;

#[test]
fn the_flagger_guides_podinfo_runs_unchanged() {
    let (_remote, setup) = seeded(
        &[("podinfo.yaml", GUIDE_PODINFO)],
        "seed",
        "  interval: 1h\n",
    );
    setup.with_local_images(
        "    images:\n      ghcr.io/stefanprodan/podinfo: [\"gitcanary\", \"demo-app\"]\n",
    );
    let running = setup.spawn_run(&[]);
    wait_for(Duration::from_secs(40), || {
        (status(&setup, "podinfo")["readyReplicas"] == 2).then_some(())
    })
    .unwrap_or_else(|| panic!("2 ready replicas: {}", status(&setup, "podinfo")));
    let eps = endpoints(&setup);
    assert_eq!(eps.len(), 2);
    for ep in &eps {
        // Every declared port got a host port and the literal flags were rewritten to
        // them: the app answers on its http and http-metrics ports.
        let ports: Vec<(String, u64)> = ep["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p[0].as_str().unwrap_or_default().to_string(),
                    p[2].as_u64().unwrap(),
                )
            })
            .collect();
        let port = |name: &str| ports.iter().find(|(n, _)| n == name).unwrap().1;
        assert_ne!(port("http"), 9898);
        let (code, body) = get(port("http"), "/version").expect("replica answers");
        assert_eq!(code, 200);
        assert!(body.contains("\"version\":\"6.0.0\""), "{body}");
        assert_eq!(
            get(port("http-metrics"), "/metrics").map(|r| r.0),
            Some(200)
        );
    }
    running.stop();
}

#[test]
fn pre_stop_handlers_run_before_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("prestop");
    let with_hook = |greeting: &str| {
        deployment("web", 1, greeting).replace(
            "          readinessProbe:\n",
            &format!(
                "          lifecycle:\n            preStop:\n              exec:\n                command: [\"sh\", \"-c\", \"echo $GREETING > {} && sleep 3\"]\n          readinessProbe:\n",
                marker.display()
            ),
        )
    };
    let (remote, setup) = setup_with(&[("web.yaml", &with_hook("one"))]);
    let running = setup.spawn_run(&[]);
    let port = wait_for(Duration::from_secs(30), || {
        let eps = endpoints(&setup);
        (eps.len() == 1 && eps[0]["ready"] == true).then(|| eps[0]["ports"][0][2].as_u64().unwrap())
    })
    .expect("one ready replica");
    remote.write(&[("web.yaml", &with_hook("two"))]).push("two");
    // The old replica's preStop runs (with its own environment)...
    wait_for(Duration::from_secs(30), || {
        (std::fs::read_to_string(&marker).ok()?.trim() == "one").then_some(())
    })
    .expect("preStop ran");
    // ...and until it finishes, the process gets no SIGTERM: it still answers.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(get(port, "/healthz").map(|r| r.0), Some(200));
    // Then it stops.
    wait_for(Duration::from_secs(20), || {
        get(port, "/healthz").is_none().then_some(())
    })
    .expect("the old replica stops after its preStop");
    running.stop();
}
