//! The web UI and its API through `gitcanary run`: the API's shapes equal
//! `gitcanary get -o json`, the token gate and the login form, actions with their CSRF
//! check and log line, masked Secrets, and the canary page in a real headless Chromium
//! during an analysis (DOM, screenshot, and no request leaving 127.0.0.1); and the same
//! API and pages over a real kube-apiserver (envtest) on the Kubernetes target.

#[path = "common/browser.rs"]
mod browser;
mod common;
#[path = "common/envtest.rs"]
mod envtest;
use common::*;
use std::time::Duration;

const IMAGES: &str = "    images:\n      example.com/podinfo: [\"gitcanary\", \"demo-app\", \"--port\", \"$(PORT)\"]\n";
const TOKEN: &str = "ui-token-0123456789abcdef";

/// The demo app, its Canary (stepWeight 10 up to 50 every `interval`, built-in metrics,
/// the load tester) and a Secret.
fn app(tag: &str, interval: &str) -> Vec<(&'static str, String)> {
    vec![
        ("ns.yaml", NAMESPACE.to_string()),
        ("podinfo/secret.yaml", "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: test\nstringData:\n  password: hunter2-do-not-show\n".to_string()),
        ("podinfo/deployment.yaml", format!("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: podinfo\n  namespace: test\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: podinfo\n  template:\n    metadata:\n      labels:\n        app: podinfo\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n        - name: podinfod\n          image: example.com/podinfo:{tag}\n          ports:\n            - name: http\n              containerPort: 9898\n          readinessProbe:\n            httpGet:\n              path: /readyz\n              port: http\n            periodSeconds: 1\n")),
        ("podinfo/canary.yaml", format!("apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata:\n  name: podinfo\n  namespace: test\nspec:\n  targetRef:\n    apiVersion: apps/v1\n    kind: Deployment\n    name: podinfo\n  progressDeadlineSeconds: 60\n  service:\n    port: 9898\n    targetPort: 9898\n  analysis:\n    interval: {interval}\n    threshold: 3\n    maxWeight: 50\n    stepWeight: 10\n    metrics:\n      - name: request-success-rate\n        thresholdRange:\n          min: 99\n        interval: 10s\n      - name: request-duration\n        thresholdRange:\n          max: 500\n        interval: 10s\n    webhooks:\n      - name: load-test\n        url: http://flagger-loadtester.test/\n        timeout: 5s\n        metadata:\n          cmd: \"hey -z 2m -q 20 -c 2 http://podinfo-canary.test:9898/\"\n")),
    ]
}

/// Pushes the app at `tag`; the new commit.
fn push(remote: &Remote, tag: &str, interval: &str) -> String {
    let files = app(tag, interval);
    let refs: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    remote.write(&refs).push(&format!("podinfo {tag}"))
}

/// A running `gitcanary run` over the app, its canary initialized.
fn started(
    interval: &str,
    server_extra: &str,
    env: &[(&str, &str)],
) -> (Remote, Setup, Running, String) {
    let remote = Remote::new();
    push(&remote, "1.0.0", interval);
    let setup = Setup::new(&remote.bare.display().to_string(), "  interval: 1h\n", "");
    setup.with_local_images(IMAGES);
    if !server_extra.is_empty() {
        setup.edit_config(
            "  listen: 127.0.0.1:0\n",
            &format!("  listen: 127.0.0.1:0\n{server_extra}"),
        );
    }
    let running = setup.spawn_run(env);
    let addr = setup.server_address();
    setup.wait_canary("podinfo", "Initialized", 60);
    (remote, setup, running, addr)
}

fn get_json(addr: &str, path: &str, headers: &[(&str, &str)]) -> serde_json::Value {
    let (code, _, body) = http_request(addr, "GET", path, headers, b"");
    assert_eq!(code, 200, "{path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn the_api_returns_the_shapes_of_get_json() {
    let (_remote, setup, running, addr) = started("10s", "", &[]);
    for (what, path) in [
        ("sources", "/api/v1/sources"),
        ("objects", "/api/v1/objects"),
        ("canaries", "/api/v1/canaries"),
        ("images", "/api/v1/images"),
    ] {
        // A Deployment can still turn ready between two reads: compare once settled.
        let same = wait_for(Duration::from_secs(20), || {
            let before = get_json(&addr, path, &[]);
            let out = setup.cmd(&["get", what, "-o", "json"]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let cli: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let after = get_json(&addr, path, &[]);
            (before == after).then_some((cli, after))
        })
        .unwrap_or_else(|| panic!("{path} never settled"));
        assert_eq!(same.0, same.1, "get {what} -o json and {path} differ");
    }
    // The source says how long its last sync took.
    let sources = get_json(&addr, "/api/v1/sources", &[]);
    let took = sources[0]["lastSyncDuration"].as_f64();
    assert!(took.is_some_and(|s| s > 0.0 && s < 60.0), "{sources}");
    let canaries = get_json(&addr, "/api/v1/canaries", &[]);
    assert_eq!(canaries[0]["name"], "podinfo");
    assert_eq!(canaries[0]["status"], "Initialized");
    let objects = get_json(&addr, "/api/v1/objects", &[]);
    assert!(objects
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o["kind"] == "Secret"));
    // Secret data never reaches the API.
    let (code, _, body) = http_request(
        &addr,
        "GET",
        "/api/v1/objects/core/Secret/test/db",
        &[],
        b"",
    );
    let yaml = String::from_utf8_lossy(&body);
    assert_eq!(code, 200, "{yaml}");
    assert!(
        yaml.contains("password") && !yaml.contains("hunter2"),
        "{yaml}"
    );
    let (code, _, _) = http_request(
        &addr,
        "GET",
        "/api/v1/objects/core/Secret/test/absent",
        &[],
        b"",
    );
    assert_eq!(code, 404);
    // The history reads Git notes; none are recorded yet.
    assert_eq!(
        get_json(&addr, "/api/v1/history", &[]),
        serde_json::json!([])
    );
    // Pages carry a strict CSP; without a token actions are off.
    let (code, h, body) = http_request(&addr, "GET", "/ui/", &[], b"");
    assert_eq!(code, 200);
    let csp = header(&h, "content-security-policy").unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(String::from_utf8_lossy(&body).contains("/ui/assets/app.js"));
    let (code, _, _) = http_request(
        &addr,
        "POST",
        "/api/v1/canaries/test/podinfo/promote",
        &[],
        b"",
    );
    assert_eq!(code, 403, "no actions without a token");
    running.stop();
}

#[test]
fn with_a_token_the_ui_needs_a_login_and_actions_a_csrf_token() {
    let (_remote, setup, running, addr) = started(
        "10s",
        "  uiTokenEnv: GITCANARY_UI_TOKEN\n",
        &[("GITCANARY_UI_TOKEN", TOKEN)],
    );
    let (code, _, _) = http_request(&addr, "GET", "/api/v1/canaries", &[], b"");
    assert_eq!(code, 401);
    let bearer = format!("Bearer {TOKEN}");
    get_json(&addr, "/api/v1/canaries", &[("Authorization", &bearer)]);
    let (code, h, _) = http_request(&addr, "GET", "/ui/", &[], b"");
    assert_eq!((code, header(&h, "location")), (303, Some("/ui/login")));
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let (code, _, _) = http_request(&addr, "POST", "/ui/login", &form, b"token=wrong&who=alice");
    assert_eq!(code, 401);
    let body = format!("token={TOKEN}&who=alice");
    let (code, h, _) = http_request(&addr, "POST", "/ui/login", &form, body.as_bytes());
    assert_eq!(code, 303);
    let set = header(&h, "set-cookie").unwrap().to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert!(!set.contains(TOKEN));
    let cookie = set.split(';').next().unwrap().to_string();
    let session = get_json(&addr, "/api/v1/session", &[("Cookie", &cookie)]);
    assert_eq!(session["who"], "alice");
    let csrf = session["csrf"].as_str().unwrap().to_string();
    let path = "/api/v1/canaries/test/podinfo/suspend";
    let (code, _, _) = http_request(&addr, "POST", path, &[("Cookie", &cookie)], b"");
    assert_eq!(code, 403, "no CSRF token");
    let cross = [
        ("Cookie", cookie.as_str()),
        ("x-gitcanary-csrf", &csrf),
        ("Origin", "http://evil.example"),
    ];
    let (code, _, _) = http_request(&addr, "POST", path, &cross, b"");
    assert_eq!(code, 403, "another origin");
    let ok = [("Cookie", cookie.as_str()), ("x-gitcanary-csrf", &csrf)];
    let (code, _, body) = http_request(&addr, "POST", path, &ok, b"");
    assert_eq!(code, 202, "{}", String::from_utf8_lossy(&body));
    let detail = get_json(
        &addr,
        "/api/v1/canaries/test/podinfo",
        &[("Cookie", &cookie)],
    );
    assert_eq!(detail["suspended"], true);
    let (_, log) = running.stop();
    assert!(
        log.contains("UI action: suspend canary podinfo.test by alice"),
        "{log}"
    );
    assert!(!log.contains(TOKEN), "the token is never logged");
    // A short token is refused at start.
    let short = setup.run_refused(&[("GITCANARY_UI_TOKEN", "short")]);
    assert!(short.contains("server.uiTokenEnv"), "{short}");
}

/// Every URL the page requested stays on 127.0.0.1 (or is inline data).
fn assert_local(requests: &[String]) {
    assert!(
        !requests.is_empty(),
        "the network log recorded the page's requests"
    );
    for u in requests {
        assert!(
            u.starts_with("http://127.0.0.1:") || u.starts_with("data:") || u == "about:blank",
            "a request left 127.0.0.1: {u}"
        );
    }
}

#[test]
fn the_canary_page_in_a_browser_during_an_analysis() {
    let (remote, setup, running, addr) = started("3s", "", &[]);
    let commit = push(&remote, "1.0.1", "3s");
    wait_for(Duration::from_secs(90), || {
        let c = setup.canary("podinfo");
        (c["phase"] == "Progressing" && c["canaryWeight"].as_u64()? >= 20).then_some(())
    })
    .unwrap_or_else(|| panic!("no analysis under way: {}", setup.canary("podinfo")));
    let mut b = browser::Browser::start();
    b.goto(&format!("http://{addr}/ui/#/canary/test/podinfo"));
    b.wait("document.body.dataset.loaded === 'canary' && document.querySelectorAll('#metric-request-success-rate circle.pt').length > 0", 30);
    // One snapshot of the DOM: the page re-renders whole, so its parts agree, unless
    // it read between the engine's samples and status writes: then the next does.
    let snapshot = "JSON.stringify({phase: document.querySelector('#phase').dataset.phase, \
          weight: Number(document.querySelector('#weight').dataset.weight), \
          points: [...document.querySelectorAll('#weight-chart circle.pt')].map(c => Number(c.dataset.v)), \
          thresholds: document.querySelectorAll('#metric-request-success-rate .threshold').length})";
    let mut seen = serde_json::Value::Null;
    for _ in 0..10 {
        seen = serde_json::from_str(b.eval(snapshot).as_str().unwrap()).unwrap();
        if seen["points"].as_array().and_then(|p| p.last()) == Some(&seen["weight"]) {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(seen["phase"], "Progressing", "{seen}");
    let weight = seen["weight"].as_u64().unwrap();
    assert!(weight >= 20, "{seen}");
    let expected: Vec<u64> = (1..=weight / 10).map(|s| s * 10).collect();
    assert_eq!(
        seen["points"],
        serde_json::json!(expected),
        "one point per step so far"
    );
    assert_eq!(
        seen["thresholds"], 1,
        "the success-rate chart shows its min"
    );
    // Live: the page follows the analysis without a reload.
    b.wait(
        &format!("Number(document.querySelector('#weight').dataset.weight) > {weight}"),
        30,
    );
    assert_eq!(
        b.eval("document.querySelector('#live').textContent"),
        "live"
    );
    let png = b.screenshot();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let shot = setup.dir.path().join("ui-canary.png");
    std::fs::write(&shot, &png).unwrap();
    if let Ok(copy) = std::env::var("GITCANARY_UI_SCREENSHOT") {
        std::fs::write(copy, &png).unwrap();
    }
    // The overview and the objects page render too.
    b.goto(&format!("http://{addr}/ui/#/"));
    b.wait(
        "document.querySelector('tr[data-canary=\"test/podinfo\"] svg.spark')",
        20,
    );
    let took = b.eval("document.querySelector('#sync-duration').textContent");
    assert!(
        took.as_str()
            .is_some_and(|t| t.ends_with(" ms") || t.ends_with(" s")),
        "the source card shows the last sync's duration: {took}"
    );
    // After the promotion, the history page lists it, from the note the engine had
    // the single writer record on the commit that brought 1.0.1.
    setup.wait_canary("podinfo", "Succeeded", 120);
    wait_for(Duration::from_secs(30), || {
        let notes = git(&remote.bare, &["notes", "--ref=gitcanary", "list"]);
        notes.contains(&commit).then_some(())
    })
    .unwrap_or_else(|| panic!("no rollout note on {commit}"));
    b.goto(&format!("http://{addr}/ui/#/history"));
    let listed = b.wait(
        "document.body.dataset.loaded === 'history' && document.querySelector('#history .card') && document.querySelector('#history').innerText",
        20,
    );
    let listed = listed.as_str().unwrap();
    assert!(
        listed.contains("test/podinfo")
            && listed.contains("1.0.0 → 1.0.1")
            && listed.contains("Succeeded")
            && listed.contains(&commit[..7]),
        "{listed}"
    );
    assert_local(&b.requests.lock().unwrap());
    running.stop();
}

#[test]
fn with_a_token_the_browser_gets_the_login_form_and_an_httponly_cookie() {
    let (_remote, _setup, running, addr) = started(
        "10s",
        "  uiTokenEnv: GITCANARY_UI_TOKEN\n",
        &[("GITCANARY_UI_TOKEN", TOKEN)],
    );
    let mut b = browser::Browser::start();
    b.goto(&format!("http://{addr}/ui/"));
    b.wait("document.querySelector('form#login input[name=token]')", 20);
    b.eval(&format!(
        "document.querySelector('input[name=token]').value = '{TOKEN}'; \
         document.querySelector('input[name=who]').value = 'alice'; \
         document.querySelector('form#login').submit(); true"
    ));
    b.wait(
        "document.body.dataset.loaded === 'overview' && document.querySelector('#canaries')",
        20,
    );
    assert_eq!(
        b.eval("document.querySelector('#who').textContent"),
        "alice"
    );
    assert_eq!(
        b.eval("document.cookie"),
        "",
        "scripts cannot read the session"
    );
    let cookies = b.cookies();
    let c = cookies
        .iter()
        .find(|c| c["name"] == "gitcanary_ui")
        .expect("session cookie");
    assert_eq!(c["httpOnly"], true);
    assert_eq!(c["sameSite"], "Strict");
    assert!(
        b.eval("!!document.querySelector('#source button[data-action]')") == true,
        "actions shown with a session"
    );
    assert_local(&b.requests.lock().unwrap());
    running.stop();
}

/// A Prometheus API on 127.0.0.1 answering the n-th instant query with `values[n]`
/// (the last one after that); its address.
fn prometheus_answering(values: &'static [f64]) -> String {
    use std::io::{BufReader, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", l.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut n = 0;
        for stream in l.incoming().flatten() {
            let mut r = BufReader::new(stream);
            let Some((line, _)) = read_request(&mut r) else {
                continue;
            };
            let body = if line.starts_with("GET /api/v1/query?") {
                let v = values[n.min(values.len() - 1)];
                n += 1;
                format!(
                    r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[1,"{v}"]}}]}}}}"#
                )
            } else {
                r#"{"status":"error","error":"not a query"}"#.to_string()
            };
            let _ = write!(
                r.get_mut(),
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

#[test]
fn a_metric_templates_values_are_sampled_and_charted_with_their_failed_checks() {
    let (remote, _setup, running, addr) = started("3s", "", &[]);
    // The second check's value is out of range: one failed check, below the threshold.
    let prometheus = prometheus_answering(&[7.0, 12.0, 7.0]);
    let template = format!("apiVersion: flagger.app/v1beta1\nkind: MetricTemplate\nmetadata:\n  name: errors\n  namespace: test\nspec:\n  provider:\n    type: prometheus\n    address: {prometheus}\n  query: sum(rate(errors_total{{namespace=\"{{{{ namespace }}}}\"}}[{{{{ interval }}}}]))\n");
    let mut files = app("1.0.1", "3s");
    for (path, text) in files.iter_mut() {
        if *path == "podinfo/canary.yaml" {
            *text = text.replace(
                "    metrics:\n",
                "    metrics:\n      - name: errors\n        templateRef:\n          name: errors\n        thresholdRange:\n          max: 10\n        interval: 1m\n",
            );
        }
    }
    files.push(("podinfo/errors.yaml", template));
    let refs: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    remote
        .write(&refs)
        .push("podinfo 1.0.1 with an errors template");
    let path = "/api/v1/canaries/test/podinfo";
    let series = |c: &serde_json::Value| {
        c["samples"]["current"]["metrics"]
            .as_array()?
            .iter()
            .find(|m| m["name"] == "errors")
            .cloned()
    };
    let (detail, errors) = wait_for(Duration::from_secs(90), || {
        let c = get_json(&addr, path, &[]);
        let s = series(&c)?;
        (s["points"].as_array()?.len() >= 3).then_some((c, s))
    })
    .unwrap_or_else(|| panic!("no samples of the template: {}", get_json(&addr, path, &[])));
    let points = errors["points"].as_array().unwrap();
    let values: Vec<f64> = points[..3].iter().map(|p| p[1].as_f64().unwrap()).collect();
    assert_eq!(values, vec![7.0, 12.0, 7.0], "{errors}");
    assert_eq!(errors["max"], 10.0);
    assert_eq!(
        errors["failed"],
        serde_json::json!([points[1][0]]),
        "the check over the threshold is marked failed: {errors}"
    );
    let last = detail["lastMetrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "errors")
        .cloned()
        .unwrap_or_default();
    assert!(last["value"].is_number() && last["max"] == 10.0, "{last}");
    let mut b = browser::Browser::start();
    b.goto(&format!("http://{addr}/ui/#/canary/test/podinfo"));
    b.wait(
        "document.body.dataset.loaded === 'canary' && document.querySelectorAll('#metric-errors circle.pt').length >= 3",
        30,
    );
    assert_eq!(
        b.eval("document.querySelectorAll('#metric-errors circle.pt.fail').length"),
        1,
        "one failed check marked on the chart"
    );
    assert_eq!(
        b.eval("document.querySelectorAll('#metric-errors .threshold').length"),
        1,
        "the chart shows the template's max"
    );
    running.stop();
}

#[test]
#[ignore = "needs KUBEBUILDER_ASSETS"]
fn on_kubernetes_the_ui_lists_what_was_applied_to_the_cluster() {
    let plane = envtest::shared();
    let ns = plane.namespace_blocking("ui");
    let remote = Remote::new();
    let files = [
        ("cm.yaml", format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: {ns}\ndata:\n  k: v\n")),
        ("secret.yaml", format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: {ns}\nstringData:\n  password: hunter2-do-not-show\n")),
        ("deploy.yaml", format!("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: {ns}\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n        - name: web\n          image: example.com/web:1.0.0\n")),
    ];
    let refs: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    let commit = remote.write(&refs).push("web");
    let url = format!("file://{}", remote.bare.display());
    let setup = Setup::new(&url, "", "");
    let target = plane
        .target_yaml(&ns)
        .replace("kubernetes:\n", "kubernetes:\n    stateDir: ./state\n");
    std::fs::write(
        &setup.config,
        format!("source:\n  url: {url}\n  interval: 1h\n{target}server:\n  listen: 127.0.0.1:0\n"),
    )
    .unwrap();
    let running = setup.spawn_run(&[]);
    let addr = setup.server_address();
    let revision = format!("main@sha1:{commit}");
    wait_for(Duration::from_secs(60), || {
        let s = get_json(&addr, "/api/v1/sources", &[]);
        (s[0]["appliedRevision"] == revision.as_str()).then_some(())
    })
    .unwrap_or_else(|| panic!("never applied: {}", get_json(&addr, "/api/v1/sources", &[])));
    assert!(
        setup.state().join("status/source.json").exists(),
        "the state dir is where the config says"
    );
    assert!(
        !setup.state().join("inventory.json").exists(),
        "the inventory lives in the cluster, not in the state dir"
    );
    let objects = get_json(&addr, "/api/v1/objects", &[]);
    let row = |kind: &str, name: &str| {
        objects
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["kind"] == kind && o["name"] == name && o["namespace"] == ns.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("{kind} {name} not listed: {objects}"))
    };
    let cm = row("ConfigMap", "settings");
    assert_eq!(cm["revision"], commit.as_str(), "{cm}");
    assert_eq!(cm["source"], "cm.yaml", "{cm}");
    assert_eq!(cm["health"], "Current", "{cm}");
    row("Secret", "db");
    // No controller runs its Pods: kstatus over the live Deployment says so.
    let web = row("Deployment", "web");
    assert_eq!(web["health"], "InProgress", "{web}");
    // `get objects -o json` reads the cluster through the same shapes.
    let out = setup.cmd(&["get", "objects", "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        cli, objects,
        "get objects -o json and /api/v1/objects differ"
    );
    // The YAML is the live object's, Secret data masked, without field managers.
    let (code, _, body) = http_request(
        &addr,
        "GET",
        &format!("/api/v1/objects/core/Secret/{ns}/db"),
        &[],
        b"",
    );
    let yaml = String::from_utf8_lossy(&body);
    assert_eq!(code, 200, "{yaml}");
    assert!(yaml.contains("password") && yaml.contains("uid:"), "{yaml}");
    assert!(
        !yaml.contains("hunter2")
            && !yaml.contains("aHVudGVyMi1kby1ub3Qtc2hvdw")
            && !yaml.contains("managedFields"),
        "{yaml}"
    );
    assert_eq!(
        get_json(&addr, "/api/v1/canaries", &[]),
        serde_json::json!([])
    );
    // The pages show the same.
    let mut b = browser::Browser::start();
    b.goto(&format!("http://{addr}/ui/#/objects"));
    let listed = b.wait(
        "document.body.dataset.loaded === 'objects' && document.querySelector('#main').innerText",
        20,
    );
    let listed = listed.as_str().unwrap();
    assert!(
        listed.contains(&ns)
            && listed.contains("settings")
            && listed.contains("web")
            && listed.contains(&commit[..12]),
        "{listed}"
    );
    b.goto(&format!("http://{addr}/ui/#/"));
    let source = b.wait(
        "document.body.dataset.loaded === 'overview' && document.querySelector('#source').innerText",
        20,
    );
    let source = source.as_str().unwrap();
    assert!(
        source.contains(&revision[..revision.len() - 28]),
        "{source}"
    );
    assert_local(&b.requests.lock().unwrap());
    running.stop();
}

#[test]
fn the_images_table_shows_rejected_tags_and_follows_images_allow() {
    let reg = Registry::start(None);
    reg.push_tag("team/live", "1.0.0", "2024-01-01T00:00:00Z");
    let remote = Remote::new();
    let deploy = automated_deployment(&reg.addr, "live", "semver:^1.0", "1.0.0");
    remote
        .write(&[("ns.yaml", NAMESPACE), ("live.yaml", &deploy)])
        .push("seed");
    let setup = Setup::scanning_images(&remote);
    let running = setup.spawn_run(&[]);
    let addr = setup.server_address();
    wait_for(Duration::from_secs(30), || {
        let v = get_json(&addr, "/api/v1/images", &[]);
        (v["rows"][0]["current"] == "1.0.0").then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "no automation row: {}",
            get_json(&addr, "/api/v1/images", &[])
        )
    });
    // A failed canary's rollback records its tag so (the engine writes this cache of
    // the rejections kept in the Git notes).
    let image = format!("{}/team/live", reg.addr);
    let rejection = serde_json::json!({"tags": [{"image": image, "tag": "1.0.1", "canary": "live.test",
        "commit": "0123456789abcdef0123456789abcdef01234567", "at": 1.0}]});
    std::fs::write(
        setup.state().join("status/rejected-tags.json"),
        rejection.to_string(),
    )
    .unwrap();
    let images = get_json(&addr, "/api/v1/images", &[]);
    assert_eq!(
        images["rows"][0]["rejected"],
        serde_json::json!(["1.0.1"]),
        "{images}"
    );
    let out = setup.cmd(&["get", "images", "-o", "json"]);
    let cli: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cli, images, "get images -o json and /api/v1/images differ");
    let mut b = browser::Browser::start();
    b.goto(&format!("http://{addr}/ui/#/"));
    let shown = b.wait(
        "document.body.dataset.loaded === 'overview' && document.querySelector('#images td.rejected') && document.querySelector('#images td.rejected').textContent",
        20,
    );
    assert_eq!(shown, "1.0.1");
    // `images allow` clears it, and the open page follows.
    let out = setup.cmd(&["images", "allow", &format!("{image}:1.0.1")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    b.wait(
        "document.querySelector('#images td.rejected').textContent === '-'",
        20,
    );
    assert_local(&b.requests.lock().unwrap());
    running.stop();
}
