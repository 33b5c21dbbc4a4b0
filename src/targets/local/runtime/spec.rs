//! Translates a stored Deployment into what the local runtime runs. Pure apart from one
//! read-only look at `PATH` ([`on_host`], to tell a host program from one inside the
//! image): it takes the object, a lookup for ConfigMaps and Secrets, and the config's
//! image mapping, and never touches a process. Per-replica values (ports, pod name) are
//! filled in by [`materialize`].

use crate::manifest::kustomize::split_image;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// A port named by number or by container port name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortRef {
    /// `port: 9898`
    Number(u16),
    /// `port: http`
    Name(String),
}

/// What a probe does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeAction {
    /// `httpGet`
    Http {
        /// Path.
        path: String,
        /// Port.
        port: PortRef,
    },
    /// `tcpSocket`
    Tcp {
        /// Port.
        port: PortRef,
    },
    /// `exec`
    Exec {
        /// Command.
        command: Vec<String>,
    },
    /// A `preStop` `sleep`.
    Sleep {
        /// How long.
        duration: Duration,
    },
}

/// A readiness or liveness probe with Kubernetes' defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// Action.
    pub action: ProbeAction,
    /// `initialDelaySeconds` (default 0).
    pub initial_delay: Duration,
    /// `periodSeconds` (default 10).
    pub period: Duration,
    /// `timeoutSeconds` (default 1).
    pub timeout: Duration,
    /// `failureThreshold` (default 3).
    pub failure_threshold: u32,
    /// `successThreshold` (default 1).
    pub success_threshold: u32,
}

/// A declared container port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortDecl {
    /// `name`, if any.
    pub name: Option<String>,
    /// `containerPort`.
    pub container_port: u16,
}

/// One container, before per-replica values.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerPlan {
    /// Name.
    pub name: String,
    /// Command and arguments, unexpanded; `gitcanary` as the first word means this binary.
    pub argv: Vec<String>,
    /// Env entries in order (envFrom, then env), values unexpanded.
    pub env: Vec<(String, String)>,
    /// `workingDir`.
    pub working_dir: Option<String>,
    /// Declared ports.
    pub ports: Vec<PortDecl>,
    /// Readiness probe.
    pub readiness: Option<Probe>,
    /// Liveness probe.
    pub liveness: Option<Probe>,
    /// `lifecycle.preStop` (`exec`, `httpGet` or `sleep`), run before SIGTERM.
    pub pre_stop: Option<ProbeAction>,
    /// The image's tag (`IMAGE_TAG`).
    pub image_tag: String,
    /// Values that came from Secrets, to redact from output shown in messages.
    pub secret_values: Vec<String>,
}

/// A pod template, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct PodPlan {
    /// Containers.
    pub containers: Vec<ContainerPlan>,
    /// `terminationGracePeriodSeconds` (default 30).
    pub grace: Duration,
    /// Pod labels.
    pub labels: BTreeMap<String, String>,
    /// sha256 of the template's canonical JSON: the revision of the pod template.
    pub template_hash: String,
}

/// Rollout settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// `RollingUpdate` with resolved absolute numbers.
    Rolling {
        /// Extra pods allowed above `replicas`.
        max_surge: u32,
        /// Pods allowed below `replicas`.
        max_unavailable: u32,
    },
    /// `Recreate`.
    Recreate,
}

/// A Deployment, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct DeploymentPlan {
    /// Desired replicas (default 1).
    pub replicas: u32,
    /// Rollout strategy.
    pub strategy: Strategy,
    /// `minReadySeconds`.
    pub min_ready: Duration,
    /// The pod template, or why it cannot run (shown on the Deployment's status).
    pub pod: Result<PodPlan, String>,
}

/// Looks up a ConfigMap or Secret: (kind, namespace, name).
pub type Lookup<'a> = &'a dyn Fn(&str, &str, &str) -> Option<Value>;

fn secs(v: &Value, default: u64) -> Duration {
    Duration::from_secs(v.as_u64().unwrap_or(default))
}

fn port_ref(v: &Value) -> Option<PortRef> {
    match v {
        Value::Number(n) => n.as_u64().map(|n| PortRef::Number(n as u16)),
        Value::String(s) => Some(
            s.parse::<u16>()
                .map(PortRef::Number)
                .unwrap_or_else(|_| PortRef::Name(s.clone())),
        ),
        _ => None,
    }
}

/// Whether `program` runs on this machine: `gitcanary` (this binary), an absolute path
/// that exists, or a bare name on `PATH`. A relative path (`./podinfo`) is taken to be
/// inside the image.
pub fn on_host(program: &str) -> bool {
    if program == "gitcanary" {
        return true;
    }
    if program.starts_with('/') {
        return std::path::Path::new(program).is_file();
    }
    if program.contains('/') || program.is_empty() {
        return false;
    }
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// Programs of well-known images gitcanary provides itself: podinfo's `podcli` (used by
/// the Flagger guides' exec probes) is `gitcanary podcli`.
pub fn builtin_tool(program: &str) -> Option<Vec<String>> {
    let base = program.rsplit('/').next().unwrap_or(program);
    (base == "podcli").then(|| vec!["gitcanary".to_string(), "podcli".to_string()])
}

/// Rewrites container port numbers in one argument to the replica's host ports: the
/// whole argument (`9898`), after `=` (`--port=9898`) or after `:` (`localhost:9898/x`),
/// so programs started with literal ports bind and reach the right host port.
pub fn rewrite_ports(arg: &str, ports: &HashMap<u16, u16>) -> String {
    if ports.iter().all(|(c, h)| c == h) {
        return arg.to_string();
    }
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re =
        RE.get_or_init(|| regex::Regex::new(r"(^|[=:])([0-9]{1,5})($|/)").expect("valid regex"));
    re.replace_all(arg, |c: &regex::Captures| {
        let port = c[2]
            .parse::<u16>()
            .ok()
            .and_then(|p| ports.get(&p))
            .map(u16::to_string)
            .unwrap_or_else(|| c[2].to_string());
        format!("{}{port}{}", &c[1], &c[3])
    })
    .into_owned()
}

/// A container's `lifecycle.preStop` handler.
fn pre_stop(v: &Value) -> Option<ProbeAction> {
    if let Some(secs) = v["sleep"]["seconds"].as_u64() {
        return Some(ProbeAction::Sleep {
            duration: Duration::from_secs(secs),
        });
    }
    if !v.is_object() {
        return None;
    }
    // The same handlers as a probe's, without the timings.
    probe(v).map(|p| p.action)
}

fn probe(v: &Value) -> Option<Probe> {
    if !v.is_object() {
        return None;
    }
    let action = if let Some(h) = v.get("httpGet") {
        ProbeAction::Http {
            path: h["path"].as_str().unwrap_or("/").to_string(),
            port: port_ref(&h["port"])?,
        }
    } else if let Some(t) = v.get("tcpSocket") {
        ProbeAction::Tcp {
            port: port_ref(&t["port"])?,
        }
    } else if let Some(e) = v.get("exec") {
        let mut command: Vec<String> = e["command"]
            .as_array()?
            .iter()
            .filter_map(|c| c.as_str().map(str::to_string))
            .collect();
        if let Some(tool) = command
            .first()
            .filter(|p| !on_host(p))
            .and_then(|p| builtin_tool(p))
        {
            command.splice(0..1, tool);
        }
        ProbeAction::Exec { command }
    } else {
        return None;
    };
    Some(Probe {
        action,
        initial_delay: secs(&v["initialDelaySeconds"], 0),
        period: secs(&v["periodSeconds"], 10).max(Duration::from_secs(1)),
        timeout: secs(&v["timeoutSeconds"], 1).max(Duration::from_secs(1)),
        failure_threshold: v["failureThreshold"].as_u64().unwrap_or(3).max(1) as u32,
        success_threshold: v["successThreshold"].as_u64().unwrap_or(1).max(1) as u32,
    })
}

/// Resolves an int-or-percent against `of` (Kubernetes rounds surge up, unavailable down).
pub fn int_or_percent(v: &Value, of: u32, default_pct: u32, round_up: bool) -> u32 {
    let pct = |p: f64| {
        let x = p * of as f64 / 100.0;
        (if round_up { x.ceil() } else { x.floor() }) as u32
    };
    match v {
        Value::Number(n) => n.as_u64().unwrap_or(0) as u32,
        Value::String(s) => s
            .strip_suffix('%')
            .and_then(|p| p.parse::<f64>().ok())
            .map(pct)
            .unwrap_or(0),
        _ => pct(default_pct as f64),
    }
}

/// The name of a command-line flag (`--port=1` and `--port` are `port`), if `arg` is one.
fn flag_name(arg: &str) -> Option<&str> {
    let name = arg.strip_prefix('-')?.trim_start_matches('-');
    Some(name.split_once('=').map_or(name, |(n, _)| n)).filter(|n| !n.is_empty())
}

/// A `target.local.images` entry without the flags the container sets itself, so
/// `[gitcanary, demo-app, --port, $(PORT)]` with a container's `--port=9898` runs
/// with one `--port`. In the entry, a flag's value is the next word when that is not
/// a flag itself.
fn without_overridden_flags(mapped: Vec<String>, given: &[String]) -> Vec<String> {
    let overridden =
        |a: &str| flag_name(a).is_some_and(|n| given.iter().any(|g| flag_name(g) == Some(n)));
    let mut out = Vec::with_capacity(mapped.len());
    let mut words = mapped.into_iter().peekable();
    while let Some(w) = words.next() {
        if overridden(&w) {
            if !w.contains('=') && words.peek().is_some_and(|v| flag_name(v).is_none()) {
                words.next();
            }
            continue;
        }
        out.push(w);
    }
    out
}

fn container_plan(
    c: &Value,
    ns: &str,
    lookup: Lookup,
    images: &BTreeMap<String, Vec<String>>,
) -> Result<ContainerPlan, String> {
    let name = c["name"].as_str().unwrap_or("container").to_string();
    // The name is the file name of the container's log, so it must be what
    // Kubernetes accepts (a DNS label), never `../../x`.
    if !crate::manifest::names::is_dns_label(&name) {
        return Err(format!(
            "container {name:?}: not a valid container name (lower-case letters, digits and '-', at most 63)"
        ));
    }
    let image = c["image"].as_str().unwrap_or_default();
    let (repo, tag, _) = split_image(image);
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    let args = strings(&c["args"]);
    let argv = match c.get("command").map(strings).filter(|c| !c.is_empty()) {
        Some(mut cmd) if !on_host(&cmd[0]) => {
            // A program inside the image (`./podinfo`): run the host program the
            // image maps to, with the container's flags.
            let host = builtin_tool(&cmd[0]).or_else(|| images.get(repo).cloned());
            let Some(host) = host else {
                return Err(format!(
                    "container {name:?}: command {:?} is a program inside image {repo:?}, not on this machine: map the image in target.local.images",
                    cmd[0]
                ));
            };
            let given: Vec<String> = cmd.drain(1..).chain(args).collect();
            without_overridden_flags(host, &given)
                .into_iter()
                .chain(given)
                .collect()
        }
        Some(mut cmd) => {
            cmd.extend(args);
            cmd
        }
        None => match images.get(repo) {
            Some(mapped) => without_overridden_flags(mapped.clone(), &args)
                .into_iter()
                .chain(args)
                .collect(),
            None => {
                return Err(format!(
                    "container {name:?}: image {repo:?} has no command and target.local.images has no entry for it"
                ))
            }
        },
    };
    let mut env = Vec::new();
    let mut secret_values = Vec::new();
    for (i, from) in c["envFrom"].as_array().into_iter().flatten().enumerate() {
        let prefix = from["prefix"].as_str().unwrap_or_default();
        let (kind, r) = if from.get("configMapRef").is_some() {
            ("ConfigMap", &from["configMapRef"])
        } else {
            ("Secret", &from["secretRef"])
        };
        let ref_name = r["name"].as_str().unwrap_or_default();
        match lookup(kind, ns, ref_name) {
            Some(obj) => {
                let data = crate::manifest::object::data_map(&obj, kind);
                if kind == "Secret" {
                    secret_values.extend(data.values().cloned());
                }
                env.extend(data.into_iter().map(|(k, v)| (format!("{prefix}{k}"), v)))
            }
            None if r["optional"].as_bool() == Some(true) => {}
            None => {
                return Err(format!(
                    "container {name:?}: envFrom[{i}]: {kind} {ns}/{ref_name} not found"
                ))
            }
        }
    }
    for e in c["env"].as_array().into_iter().flatten() {
        let Some(key) = e["name"].as_str() else {
            continue;
        };
        let value = if let Some(v) = e["value"].as_str() {
            v.to_string()
        } else if let Some(from) = e.get("valueFrom") {
            let (kind, r) = if from.get("configMapKeyRef").is_some() {
                ("ConfigMap", &from["configMapKeyRef"])
            } else if from.get("secretKeyRef").is_some() {
                ("Secret", &from["secretKeyRef"])
            } else {
                // The downward API fields a local process can have.
                let v = match from["fieldRef"]["fieldPath"].as_str() {
                    Some("metadata.namespace") => ns.to_string(),
                    Some("metadata.name") => "$(POD_NAME)".into(),
                    Some("status.podIP" | "status.hostIP") => "127.0.0.1".into(),
                    _ => String::new(),
                };
                env.push((key.to_string(), v));
                continue;
            };
            let ref_name = r["name"].as_str().unwrap_or_default();
            let item = r["key"].as_str().unwrap_or_default();
            match lookup(kind, ns, ref_name).map(|o| crate::manifest::object::data_map(&o, kind)).and_then(|d| d.get(item).cloned()) {
                Some(v) => {
                    if kind == "Secret" {
                        secret_values.push(v.clone());
                    }
                    v
                }
                None if r["optional"].as_bool() == Some(true) => continue,
                None => return Err(format!("container {name:?}: env {key}: key {item:?} of {kind} {ns}/{ref_name} not found")),
            }
        } else {
            String::new()
        };
        env.push((key.to_string(), value));
    }
    let ports = c["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some(PortDecl {
                name: p["name"].as_str().map(str::to_string),
                container_port: p["containerPort"].as_u64()? as u16,
            })
        })
        .collect();
    Ok(ContainerPlan {
        name,
        argv,
        env,
        working_dir: c["workingDir"].as_str().map(str::to_string),
        ports,
        readiness: probe(&c["readinessProbe"]),
        pre_stop: pre_stop(&c["lifecycle"]["preStop"]),
        liveness: probe(&c["livenessProbe"]),
        image_tag: tag.unwrap_or("latest").to_string(),
        secret_values,
    })
}

/// Resolves a stored Deployment object.
pub fn plan_deployment(
    obj: &Value,
    lookup: Lookup,
    images: &BTreeMap<String, Vec<String>>,
) -> DeploymentPlan {
    let spec = &obj["spec"];
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or("default");
    let replicas = spec["replicas"].as_u64().unwrap_or(1) as u32;
    let strategy = if spec["strategy"]["type"].as_str() == Some("Recreate") {
        Strategy::Recreate
    } else {
        let ru = &spec["strategy"]["rollingUpdate"];
        let mut max_surge = int_or_percent(&ru["maxSurge"], replicas, 25, true);
        let max_unavailable = int_or_percent(&ru["maxUnavailable"], replicas, 25, false);
        if max_surge == 0 && max_unavailable == 0 {
            max_surge = 1; // Kubernetes rejects 0/0; keep the rollout able to progress.
        }
        Strategy::Rolling {
            max_surge,
            max_unavailable,
        }
    };
    let template = &spec["template"];
    let pod = (|| {
        let containers = template["spec"]["containers"]
            .as_array()
            .ok_or("spec.template.spec.containers: missing")?
            .iter()
            .map(|c| container_plan(c, ns, lookup, images))
            .collect::<Result<Vec<_>, _>>()?;
        let labels = crate::manifest::object::string_map(&template["metadata"]["labels"]);
        Ok(PodPlan {
            containers,
            grace: secs(&template["spec"]["terminationGracePeriodSeconds"], 30),
            labels,
            template_hash: template_hash(template),
        })
    })();
    DeploymentPlan {
        replicas,
        strategy,
        min_ready: secs(&spec["minReadySeconds"], 0),
        pod,
    }
}

/// Resolves the containers of a pod spec (a Pod's `spec`, a Job's
/// `spec.template.spec`): init containers, then containers.
pub fn plan_pod_spec(
    spec: &Value,
    ns: &str,
    lookup: Lookup,
    images: &BTreeMap<String, Vec<String>>,
) -> Result<(Vec<ContainerPlan>, Vec<ContainerPlan>), String> {
    let plan = |field: &str| -> Result<Vec<ContainerPlan>, String> {
        spec[field]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| container_plan(c, ns, lookup, images))
            .collect()
    };
    let containers = plan("containers")?;
    if containers.is_empty() {
        return Err("spec.containers: missing".into());
    }
    Ok((plan("initContainers")?, containers))
}

/// The label every pod carries with its template revision, as Kubernetes' ReplicaSets
/// set it; the proxy counts requests per revision by it.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// The `pod-template-hash` value (and pod name part) of a full template hash.
pub fn pod_template_hash(template_hash: &str) -> &str {
    &template_hash[..template_hash.len().min(10)]
}

/// The pod-template revision: sha256 of its canonical JSON. Stable across gitcanary
/// versions because it depends only on the template's content (see flagger #1799).
pub fn template_hash(template: &Value) -> String {
    crate::manifest::object::sha256_hex(&crate::manifest::object::canonical_json(template))
}

/// Kubernetes `$(VAR)` expansion: `$$` is a literal `$`; unknown variables stay as written.
pub fn expand(s: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(a) = after.strip_prefix('$') {
            out.push('$');
            rest = a;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(j) if vars.contains_key(&inner[..j]) => {
                    out.push_str(&vars[&inner[..j]]);
                    rest = &inner[j + 1..];
                }
                _ => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// A container ready to exec: argv, environment and working dir.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exec {
    /// argv, `gitcanary` already replaced by `self_exe`.
    pub argv: Vec<String>,
    /// Environment.
    pub env: Vec<(String, String)>,
    /// Working dir.
    pub working_dir: Option<String>,
}

/// Fills in per-replica values: `ports` maps containerPort to the host port given.
pub fn materialize(
    c: &ContainerPlan,
    pod_name: &str,
    ports: &HashMap<u16, u16>,
    self_exe: &str,
) -> Exec {
    let mut vars: HashMap<String, String> = HashMap::new();
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |k: String,
               v: String,
               vars: &mut HashMap<String, String>,
               env: &mut Vec<(String, String)>| {
        vars.insert(k.clone(), v.clone());
        env.retain(|(e, _)| e != &k);
        env.push((k, v));
    };
    set("IMAGE_TAG".into(), c.image_tag.clone(), &mut vars, &mut env);
    set("POD_NAME".into(), pod_name.to_string(), &mut vars, &mut env);
    // Kubernetes sets a container's HOSTNAME to its pod's name; podinfo reports it.
    set("HOSTNAME".into(), pod_name.to_string(), &mut vars, &mut env);
    if let Some(first) = c.ports.first() {
        set(
            "PORT".into(),
            ports
                .get(&first.container_port)
                .copied()
                .unwrap_or(first.container_port)
                .to_string(),
            &mut vars,
            &mut env,
        );
    }
    for p in &c.ports {
        if let Some(n) = &p.name {
            let key = format!("PORT_{}", n.to_ascii_uppercase().replace('-', "_"));
            set(
                key,
                ports
                    .get(&p.container_port)
                    .copied()
                    .unwrap_or(p.container_port)
                    .to_string(),
                &mut vars,
                &mut env,
            );
        }
    }
    for (k, v) in &c.env {
        let v = expand(v, &vars);
        set(k.clone(), v, &mut vars, &mut env);
    }
    let mut argv: Vec<String> = c
        .argv
        .iter()
        .map(|a| rewrite_ports(&expand(a, &vars), ports))
        .collect();
    if argv.first().map(String::as_str) == Some("gitcanary") {
        argv[0] = self_exe.to_string();
    }
    Exec {
        argv,
        env,
        working_dir: c.working_dir.clone(),
    }
}

/// The host port a probe or Service `targetPort` means for one replica.
pub fn resolve_port(r: &PortRef, c: &ContainerPlan, ports: &HashMap<u16, u16>) -> Option<u16> {
    let container_port = match r {
        PortRef::Number(n) => *n,
        PortRef::Name(name) => {
            c.ports
                .iter()
                .find(|p| p.name.as_deref() == Some(name))?
                .container_port
        }
    };
    Some(
        ports
            .get(&container_port)
            .copied()
            .unwrap_or(container_port),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Value {
        json!({
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {
                "replicas": 4,
                "strategy": {"rollingUpdate": {"maxUnavailable": 0}},
                "template": {
                    "metadata": {"labels": {"app": "podinfo"}},
                    "spec": {"containers": [{
                        "name": "podinfod",
                        "image": "ghcr.io/stefanprodan/podinfo:6.0.1",
                        "args": ["--level=$(LEVEL)"],
                        "ports": [{"name": "http", "containerPort": 9898}],
                        "envFrom": [{"configMapRef": {"name": "podinfo-config"}}],
                        "env": [{"name": "LEVEL", "value": "info"}, {"name": "URL", "value": "http://127.0.0.1:$(PORT)/$$(x)"},
                                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}}],
                        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 2}
                    }]}
                }
            }
        })
    }

    #[test]
    fn programs_inside_the_image_run_as_the_mapped_host_program() {
        let images: BTreeMap<String, Vec<String>> = [(
            "ghcr.io/stefanprodan/podinfo".to_string(),
            vec!["gitcanary".to_string(), "demo-app".to_string()],
        )]
        .into();
        let c = serde_json::json!({"name": "podinfod", "image": "ghcr.io/stefanprodan/podinfo:6.0.0",
            "command": ["./podinfo", "--port=9898"], "args": ["--level=info"],
            "ports": [{"containerPort": 9898}],
            "readinessProbe": {"exec": {"command": ["podcli", "check", "http", "localhost:9898/readyz"]}}});
        let p = container_plan(&c, "test", &lookup, &images).unwrap();
        assert_eq!(
            p.argv,
            ["gitcanary", "demo-app", "--port=9898", "--level=info"]
        );
        assert_eq!(
            p.readiness.unwrap().action,
            ProbeAction::Exec {
                command: [
                    "gitcanary",
                    "podcli",
                    "check",
                    "http",
                    "localhost:9898/readyz"
                ]
                .map(String::from)
                .to_vec()
            }
        );
        // The container's own flags replace the entry's, so none is repeated.
        let with_port: BTreeMap<String, Vec<String>> = [(
            "ghcr.io/stefanprodan/podinfo".to_string(),
            ["gitcanary", "demo-app", "--port", "$(PORT)", "-v"]
                .map(String::from)
                .to_vec(),
        )]
        .into();
        let p = container_plan(&c, "test", &lookup, &with_port).unwrap();
        assert_eq!(
            p.argv,
            ["gitcanary", "demo-app", "-v", "--port=9898", "--level=info"]
        );
        let no_cmd = serde_json::json!({"name": "podinfod", "image": "ghcr.io/stefanprodan/podinfo:6.0.0",
            "args": ["--port", "9000"]});
        let p = container_plan(&no_cmd, "test", &lookup, &with_port).unwrap();
        assert_eq!(p.argv, ["gitcanary", "demo-app", "-v", "--port", "9000"]);
        let p = container_plan(
            &serde_json::json!({"name": "p", "image": "ghcr.io/stefanprodan/podinfo:6.0.0"}),
            "test",
            &lookup,
            &with_port,
        )
        .unwrap();
        assert_eq!(p.argv, ["gitcanary", "demo-app", "--port", "$(PORT)", "-v"]);
        // Host programs run as written; an unmapped image's program is a clear error.
        let sh =
            serde_json::json!({"name": "t", "image": "busybox", "command": ["sh", "-c", "true"]});
        assert_eq!(
            container_plan(&sh, "test", &lookup, &images).unwrap().argv,
            ["sh", "-c", "true"]
        );
        let e = container_plan(
            &serde_json::json!({"name": "a", "image": "example.com/x:1", "command": ["./x"]}),
            "test",
            &lookup,
            &images,
        )
        .unwrap_err();
        assert!(
            e.contains("\"./x\" is a program inside image \"example.com/x\""),
            "{e}"
        );
        // Literal container ports become the replica's host ports.
        let ports: HashMap<u16, u16> = [(9898, 41000), (9797, 41001)].into();
        let ex = materialize(
            &p_with(&[
                "x",
                "--port=9898",
                "9797",
                "localhost:9898/readyz",
                "--replicas=2",
                "19898",
            ]),
            "pod",
            &ports,
            "/bin/gitcanary",
        );
        assert_eq!(
            ex.argv,
            [
                "x",
                "--port=41000",
                "41001",
                "localhost:41000/readyz",
                "--replicas=2",
                "19898"
            ]
        );
    }

    fn p_with(argv: &[&str]) -> ContainerPlan {
        ContainerPlan {
            name: "c".into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec![],
            working_dir: None,
            ports: vec![],
            readiness: None,
            liveness: None,
            pre_stop: None,
            image_tag: "1".into(),
            secret_values: vec![],
        }
    }

    fn lookup(kind: &str, _ns: &str, name: &str) -> Option<Value> {
        match (kind, name) {
            ("ConfigMap", "podinfo-config") => Some(json!({"data": {"FAULT_ERROR_RATE": "0.5"}})),
            ("Secret", "s") => Some(json!({"data": {"token": "czNjcjN0"}})),
            _ => None,
        }
    }

    #[test]
    fn resolves_command_env_ports_and_probes() {
        let images: BTreeMap<String, Vec<String>> = [(
            "ghcr.io/stefanprodan/podinfo".to_string(),
            vec![
                "gitcanary".into(),
                "demo-app".into(),
                "--port".into(),
                "$(PORT)".into(),
            ],
        )]
        .into();
        let plan = plan_deployment(&deployment(), &lookup, &images);
        assert_eq!(plan.replicas, 4);
        assert_eq!(
            plan.strategy,
            Strategy::Rolling {
                max_surge: 1,
                max_unavailable: 0
            }
        );
        let pod = plan.pod.unwrap();
        let c = &pod.containers[0];
        assert_eq!(c.image_tag, "6.0.1");
        let ports: HashMap<u16, u16> = [(9898, 41000)].into();
        let exec = materialize(c, "podinfo-abc", &ports, "/usr/bin/gitcanary");
        assert_eq!(
            exec.argv,
            [
                "/usr/bin/gitcanary",
                "demo-app",
                "--port",
                "41000",
                "--level=info"
            ]
        );
        let env: HashMap<_, _> = exec.env.into_iter().collect();
        assert_eq!(env["PORT"], "41000");
        assert_eq!(env["PORT_HTTP"], "41000");
        assert_eq!(env["IMAGE_TAG"], "6.0.1");
        assert_eq!(env["HOSTNAME"], "podinfo-abc");
        assert_eq!(env["FAULT_ERROR_RATE"], "0.5");
        assert_eq!(env["URL"], "http://127.0.0.1:41000/$(x)");
        assert_eq!(env["TOKEN"], "s3cr3t");
        let probe = c.readiness.as_ref().unwrap();
        assert_eq!(probe.period, Duration::from_secs(2));
        let ProbeAction::Http { port, .. } = &probe.action else {
            panic!()
        };
        assert_eq!(resolve_port(port, c, &ports), Some(41000));
    }

    #[test]
    fn missing_mapping_and_config_are_errors() {
        let plan = plan_deployment(&deployment(), &lookup, &BTreeMap::new());
        assert!(plan
            .pod
            .unwrap_err()
            .contains("target.local.images has no entry"));
        let plan = plan_deployment(
            &deployment(),
            &|_, _, _| None,
            &[("ghcr.io/stefanprodan/podinfo".to_string(), vec!["x".into()])].into(),
        );
        assert_eq!(
            plan.pod.unwrap_err(),
            "container \"podinfod\": envFrom[0]: ConfigMap test/podinfo-config not found"
        );
    }

    #[test]
    fn container_names_that_would_leave_the_log_folder_are_refused() {
        let mut d = deployment();
        d["spec"]["template"]["spec"]["containers"][0]["name"] = "../../../../tmp/x".into();
        let images = [("ghcr.io/stefanprodan/podinfo".to_string(), vec!["x".into()])].into();
        let err = plan_deployment(&d, &lookup, &images).pod.unwrap_err();
        assert!(err.contains("not a valid container name"), "{err}");
    }

    #[test]
    fn expansion_rules() {
        let vars: HashMap<String, String> = [("A".to_string(), "1".to_string())].into();
        assert_eq!(expand("$(A)-$(B)-$$(A)-$", &vars), "1-$(B)-$(A)-$");
        assert_eq!(int_or_percent(&json!("25%"), 4, 25, true), 1);
        assert_eq!(int_or_percent(&Value::Null, 10, 25, true), 3);
        assert_eq!(int_or_percent(&Value::Null, 10, 25, false), 2);
    }
}
