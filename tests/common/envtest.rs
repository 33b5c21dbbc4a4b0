//! A real Kubernetes control plane for tests, in the envtest convention: `etcd` and
//! `kube-apiserver` (and `kube-controller-manager` when asked) from the folder named by
//! `KUBEBUILDER_ASSETS`, on 127.0.0.1 free ports, and with the controllers the
//! fake-kubelet.py that comes with them. One control plane per test binary,
//! started at first use and shared; each test takes its own namespace. The processes
//! die with the test binary: an `atexit` handler kills them and removes their folder,
//! and `PR_SET_PDEATHSIG` kills them even if the binary is killed. The API server writes
//! an audit log, so tests can count the requests gitcanary really sent.
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use gitcanary::config::KubeTarget;

/// The reason the kube tests are ignored by default.
pub const NEEDS: &str = "needs KUBEBUILDER_ASSETS";

/// A running etcd + kube-apiserver.
pub struct ControlPlane {
    /// Folder of the certificates, etcd data, logs and the kubeconfig.
    pub dir: PathBuf,
    /// A kubeconfig for the admin user (a `system:masters` token).
    pub kubeconfig: PathBuf,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The admin bearer token.
    pub token: String,
    /// The API server's audit log (JSON lines, level Metadata).
    pub audit_log: PathBuf,
}

static PLANE: OnceLock<ControlPlane> = OnceLock::new();
static PLANE_WITH_CONTROLLERS: OnceLock<ControlPlane> = OnceLock::new();
/// Pids and folders to clean up at exit.
static CLEANUP: Mutex<Vec<(Vec<u32>, PathBuf)>> = Mutex::new(Vec::new());

/// `$KUBEBUILDER_ASSETS`, if set.
pub fn assets() -> Option<PathBuf> {
    std::env::var_os("KUBEBUILDER_ASSETS")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The control plane of this test binary (etcd + kube-apiserver), started on first use.
pub fn shared() -> &'static ControlPlane {
    PLANE.get_or_init(|| start(false))
}

/// The same with `kube-controller-manager` (Deployments get ReplicaSets and Pods; GC)
/// and fake-kubelet.py (Pods are bound and become Ready, but those of
/// [`FAILING_IMAGE`]), so Deployments roll out as on a cluster.
pub fn shared_with_controllers() -> &'static ControlPlane {
    PLANE_WITH_CONTROLLERS.get_or_init(|| start(true))
}

/// Starts the processes from a thread that lives as long as the test binary: the
/// parent-death signal fires when the *thread* that forked a child ends, and libtest
/// ends each test's thread.
fn start(controllers: bool) -> ControlPlane {
    let assets = assets().unwrap_or_else(|| {
        panic!("{NEEDS}: set it to a folder with etcd and kube-apiserver (../shared/envtest/bin here; setup-envtest elsewhere)")
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("envtest".into())
        .spawn(move || {
            let result = std::panic::catch_unwind(|| launch(&assets, controllers));
            let _ = tx.send(result);
            loop {
                std::thread::park();
            }
        })
        .unwrap();
    match rx.recv().unwrap() {
        Ok(plane) => plane,
        Err(e) => std::panic::resume_unwind(e),
    }
}

fn launch(assets: &Path, controllers: bool) -> ControlPlane {
    let dir = tempfile::Builder::new()
        .prefix("envtest-")
        .tempdir()
        .unwrap()
        .keep();
    register_cleanup(Vec::new(), dir.clone());
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let sa_key = certs.join("sa.key");
    let sa_pub = certs.join("sa.pub");
    run(Command::new("openssl")
        .arg("genrsa")
        .arg("-out")
        .arg(&sa_key)
        .arg("2048"));
    run(Command::new("openssl")
        .args(["rsa", "-pubout", "-in"])
        .arg(&sa_key)
        .arg("-out")
        .arg(&sa_pub));
    let token = random_hex(16);
    std::fs::write(
        certs.join("tokens.csv"),
        format!("{token},admin,admin,system:masters\n"),
    )
    .unwrap();
    let policy = dir.join("audit-policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n",
    )
    .unwrap();
    let audit_log = dir.join("audit.log");

    let (etcd_port, peer_port, api_port) = (free_port(), free_port(), free_port());
    let etcd = spawn(
        Command::new(assets.join("etcd"))
            .arg("--data-dir")
            .arg(dir.join("etcd"))
            .args(["--name", "envtest"])
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{etcd_port}"),
            ])
            .args([
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{etcd_port}"),
            ])
            .args([
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{peer_port}"),
            ])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer_port}"),
            ])
            .args([
                "--initial-cluster",
                &format!("envtest=http://127.0.0.1:{peer_port}"),
            ]),
        &dir.join("etcd.log"),
    );
    register_cleanup(vec![etcd], PathBuf::new());
    let apiserver = spawn(
        Command::new(assets.join("kube-apiserver"))
            .args(["--etcd-servers", &format!("http://127.0.0.1:{etcd_port}")])
            .args([
                "--bind-address",
                "127.0.0.1",
                "--advertise-address",
                "127.0.0.1",
            ])
            .args(["--secure-port", &api_port.to_string()])
            .arg("--cert-dir")
            .arg(&certs)
            .arg("--token-auth-file")
            .arg(certs.join("tokens.csv"))
            .args(["--authorization-mode", "RBAC"])
            .arg("--service-account-key-file")
            .arg(&sa_pub)
            .arg("--service-account-signing-key-file")
            .arg(&sa_key)
            .args(["--service-account-issuer", "https://kubernetes.default.svc"])
            .args(["--service-cluster-ip-range", "10.96.0.0/16"])
            .arg("--allow-privileged=true")
            .args(["--disable-admission-plugins", "ServiceAccount"])
            .arg("--audit-policy-file")
            .arg(&policy)
            .arg("--audit-log-path")
            .arg(&audit_log)
            .args(["--audit-log-mode", "blocking"]),
        &dir.join("apiserver.log"),
    );
    register_cleanup(vec![apiserver], PathBuf::new());

    let url = format!("https://127.0.0.1:{api_port}");
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: envtest\n  cluster:\n    server: {url}\n    insecure-skip-tls-verify: true\nusers:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: envtest\n  context: {{cluster: envtest, user: admin}}\ncurrent-context: envtest\n"
        ),
    )
    .unwrap();
    let plane = ControlPlane {
        dir: dir.clone(),
        kubeconfig,
        url,
        token,
        audit_log,
    };
    plane.wait_ready(Duration::from_secs(60));
    if controllers {
        let cm = spawn(
            Command::new(assets.join("kube-controller-manager"))
                .arg("--kubeconfig")
                .arg(&plane.kubeconfig)
                .args(["--leader-elect=false", "--bind-address", "127.0.0.1"])
                .args(["--secure-port", "0", "--port", "0"])
                .arg("--service-account-private-key-file")
                .arg(&sa_key)
                .arg("--use-service-account-credentials=false")
                .args(["--controllers", "*,-serviceaccount-token"]),
            &dir.join("controller-manager.log"),
        );
        register_cleanup(vec![cm], PathBuf::new());
        // Registered last, so killed first: it would log errors once the API server went.
        let kubelet = spawn(
            Command::new("python3")
                .arg(fake_kubelet(assets))
                .arg(&plane.kubeconfig)
                .args(["--fail", FAILING_IMAGE]),
            &dir.join("fake-kubelet.log"),
        );
        register_cleanup(vec![kubelet], PathBuf::new());
    }
    plane
}

/// Pods whose image contains this never become Ready on a control plane with
/// controllers (fake-kubelet's `--fail`): `podinfo:bad` rolls out nowhere.
pub const FAILING_IMAGE: &str = ":bad";

/// fake-kubelet.py, which plays kubelet and scheduler beside the controllers: from
/// `ENVTEST_FAKE_KUBELET`, else beside or inside `KUBEBUILDER_ASSETS`
/// (`../shared/envtest/` here).
fn fake_kubelet(assets: &Path) -> PathBuf {
    let candidates = [
        std::env::var_os("ENVTEST_FAKE_KUBELET").map(PathBuf::from),
        assets.parent().map(|p| p.join("fake-kubelet.py")),
        Some(assets.join("fake-kubelet.py")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "fake-kubelet.py not found beside {}: set ENVTEST_FAKE_KUBELET",
                assets.display()
            )
        })
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts a child that receives SIGKILL when the spawning thread (and so this test
/// binary) dies; its output goes to `log`.
fn spawn(cmd: &mut Command, log: &Path) -> u32 {
    let out = std::fs::File::create(log).unwrap();
    let err = out.try_clone().unwrap();
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
        .id()
}

fn register_cleanup(pids: Vec<u32>, dir: PathBuf) {
    static REGISTERED: OnceLock<()> = OnceLock::new();
    REGISTERED.get_or_init(|| unsafe {
        libc::atexit(cleanup);
    });
    CLEANUP.lock().unwrap().push((pids, dir));
}

extern "C" fn cleanup() {
    let Ok(mut all) = CLEANUP.lock() else { return };
    // Children first (controller-manager, apiserver, etcd), then the folders.
    for (pids, _) in all.iter().rev() {
        for &pid in pids {
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
                libc::waitpid(pid as i32, std::ptr::null_mut(), 0);
            }
        }
    }
    for (_, dir) in all.drain(..) {
        if !dir.as_os_str().is_empty() && std::env::var_os("ENVTEST_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn random_hex(bytes: usize) -> String {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut buf)
        .unwrap();
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A runtime for the blocking helpers below.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs `f` to completion on a throwaway runtime (the tests are synchronous).
pub fn block<F: std::future::Future>(f: F) -> F::Output {
    runtime().block_on(f)
}

impl ControlPlane {
    fn wait_ready(&self, limit: Duration) {
        let rt = runtime();
        let start = Instant::now();
        let mut last = String::new();
        rt.block_on(async {
            let client = self.client().await;
            while start.elapsed() < limit {
                let req = hyper::Request::get("/readyz").body(Vec::new()).unwrap();
                match client.request_text(req).await {
                    Ok(_) => return,
                    Err(e) => last = e.to_string(),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let log = std::fs::read_to_string(self.dir.join("apiserver.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            panic!(
                "kube-apiserver not ready after {limit:?}: {last}\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        })
    }

    /// `target.kubernetes` for a gitcanary config, keeping its inventory in `namespace`.
    pub fn target(&self, namespace: &str) -> KubeTarget {
        KubeTarget {
            kubeconfig: Some(self.kubeconfig.clone()),
            context: None,
            field_manager: "gitcanary".into(),
            namespace: namespace.into(),
            force: false,
            state_dir: None,
        }
    }

    /// The same as YAML lines of a config file (`target:` block).
    pub fn target_yaml(&self, namespace: &str) -> String {
        format!(
            "target:\n  kubernetes:\n    kubeconfig: {}\n    namespace: {namespace}\n",
            self.kubeconfig.display()
        )
    }

    /// A gitcanary config that follows `remote` into this control plane, keeping its
    /// inventory (and lease) in `ns`, its state in `./state`.
    pub fn setup(
        &self,
        remote: &super::common::Remote,
        ns: &str,
        source_extra: &str,
        rest: &str,
    ) -> super::common::Setup {
        let setup =
            super::common::Setup::new(&remote.bare.display().to_string(), source_extra, rest);
        setup.edit_config(
            "target:\n  local:\n    stateDir: ./state\n",
            &format!("{}    stateDir: ./state\n", self.target_yaml(ns)),
        );
        setup
    }

    /// A client through gitcanary's own client construction (kubeconfig with
    /// `insecure-skip-tls-verify`, token auth); it belongs to the caller's runtime.
    pub async fn client(&self) -> kube::Client {
        gitcanary::targets::kube::client::connect(&self.target("default"), &self.dir)
            .await
            .expect("client for the envtest kubeconfig")
    }

    /// Creates a fresh namespace named after `prefix` (made a DNS label).
    pub async fn namespace(&self, client: &kube::Client, prefix: &str) -> String {
        use k8s_openapi::api::core::v1::Namespace;
        static N: AtomicUsize = AtomicUsize::new(0);
        let mut base: String = prefix
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        base.truncate(40);
        let name = format!(
            "{}-{}-{}",
            base.trim_matches('-'),
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let ns: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
        kube::Api::<Namespace>::all(client.clone())
            .create(&Default::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
        name
    }

    /// `namespace` without an async caller: creates it on a throwaway runtime.
    pub fn namespace_blocking(&self, prefix: &str) -> String {
        runtime().block_on(async {
            let client = self.client().await;
            self.namespace(&client, prefix).await
        })
    }

    /// The fatal error the API server died of, if it crashed.
    pub fn crashed(&self) -> Option<String> {
        let log = std::fs::read_to_string(self.dir.join("apiserver.log")).ok()?;
        let at = log.find("fatal error")?;
        Some(log[at..].lines().take(40).collect::<Vec<_>>().join("\n"))
    }

    /// The audit events so far (one JSON object per request that completed).
    pub fn audit_events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Write requests (create, update, patch, delete) sent with gitcanary's user agent,
    /// as `verb resource/namespace/name`, from audit events after the first `skip`.
    pub fn gitcanary_writes(&self, skip: usize) -> Vec<String> {
        self.audit_events()
            .into_iter()
            .skip(skip)
            .filter(|e| {
                e["userAgent"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("gitcanary/"))
            })
            .filter(|e| {
                matches!(
                    e["verb"].as_str(),
                    Some("create" | "update" | "patch" | "delete" | "deletecollection")
                )
            })
            .filter(|e| !e["requestURI"].as_str().unwrap_or("").contains("dryRun"))
            .map(|e| {
                let r = &e["objectRef"];
                format!(
                    "{} {}/{}/{}",
                    e["verb"].as_str().unwrap_or(""),
                    r["resource"].as_str().unwrap_or(""),
                    r["namespace"].as_str().unwrap_or(""),
                    r["name"].as_str().unwrap_or("")
                )
            })
            .collect()
    }
}
