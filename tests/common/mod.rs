//! Shared test harness: real Git remotes (bare repos, `git daemon`, `sshd`) on loopback,
//! and a driver for the real `gitcanary` binary.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_gitcanary")
}

/// The stdout of a command that must have succeeded; panics with its output otherwise.
pub fn stdout_of(out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs `git` with a fixed identity; panics with its output on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.com",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_SSH_COMMAND", "false")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A bare remote plus a working clone to commit and push from.
pub struct Remote {
    pub dir: tempfile::TempDir,
    pub bare: PathBuf,
    pub work: PathBuf,
}

impl Remote {
    pub fn new() -> Remote {
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("remote.git");
        let work = dir.path().join("work");
        git(
            dir.path(),
            &["init", "-q", "--bare", bare.to_str().unwrap()],
        );
        git(dir.path(), &["init", "-q", work.to_str().unwrap()]);
        git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        Remote { dir, bare, work }
    }

    /// Writes files (path, content) into the work tree.
    pub fn write(&self, files: &[(&str, &str)]) -> &Self {
        for (p, content) in files {
            let path = self.work.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        self
    }

    pub fn remove(&self, path: &str) -> &Self {
        git(&self.work, &["rm", "-rq", path]);
        self
    }

    /// Commits everything and pushes to `main`; returns the commit id.
    pub fn push(&self, message: &str) -> String {
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-qm", message, "--allow-empty"]);
        git(&self.work, &["push", "-q", "origin", "HEAD:main"]);
        git(&self.work, &["rev-parse", "HEAD"])
    }

    /// Fetches gitcanary's rollout notes into the work tree's repository.
    pub fn fetch_notes(&self) -> &Self {
        let spec = "refs/notes/gitcanary:refs/notes/gitcanary";
        git(&self.work, &["fetch", "-q", "origin", spec]);
        self
    }

    /// Copies a folder of this crate (e.g. examples-repo) into the work tree.
    pub fn copy_from(&self, src: &Path) -> &Self {
        copy_dir(src, &self.work);
        self
    }
}

pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), to).unwrap();
        }
    }
}

/// A folder with a config file for the binary.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Setup {
    /// `source_extra` is appended inside `source:` (indented two spaces per line).
    pub fn new(url: &str, source_extra: &str, rest: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("gitcanary.yaml");
        let text = format!(
            "source:\n  url: {url}\n{source_extra}target:\n  local:\n    stateDir: ./state\nserver:\n  listen: 127.0.0.1:0\n{rest}"
        );
        std::fs::write(&config, text).unwrap();
        Setup { dir, config }
    }

    /// A config following `remote` hourly (only the first sync happens in a test) that
    /// scans registries every second: image automation's tests.
    pub fn scanning_images(remote: &Remote) -> Setup {
        Setup::new(
            &remote.bare.display().to_string(),
            "  interval: 1h\n",
            "images:\n  interval: 1s\n",
        )
    }

    /// Edits the config file: replaces `from` with `to` (which must be there).
    pub fn edit_config(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        assert!(text.contains(from), "config has no {from:?}");
        std::fs::write(&self.config, text.replace(from, to)).unwrap();
    }

    /// Adds `target.local.images` entries (YAML lines indented four spaces).
    pub fn with_local_images(&self, images: &str) {
        self.edit_config(
            "    stateDir: ./state\n",
            &format!("    stateDir: ./state\n{images}"),
        );
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn cmd(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs `sync --once` and returns (success, stdout+stderr).
    pub fn sync(&self) -> (bool, String) {
        let out = self.cmd(&["sync", "--once"]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// The status of Canary `test/<name>` (null before its first step).
    #[allow(dead_code)]
    pub fn canary(&self, name: &str) -> serde_json::Value {
        std::fs::read(
            self.state()
                .join(format!("status/flagger.app/Canary/test/{name}.json")),
        )
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
    }

    /// Waits up to `secs` for Canary `test/<name>` to reach `phase`; its status.
    #[allow(dead_code)]
    pub fn wait_canary(&self, name: &str, phase: &str, secs: u64) -> serde_json::Value {
        wait_for(Duration::from_secs(secs), || {
            let c = self.canary(name);
            (c["phase"] == phase).then_some(c)
        })
        .unwrap_or_else(|| panic!("canary never reached {phase}: {}", self.canary(name)))
    }

    /// Runs `sync --once`, which must fail; returns its output.
    #[allow(dead_code)]
    pub fn sync_fails(&self) -> String {
        let (ok, out) = self.sync();
        assert!(!ok, "the sync should have failed: {out}");
        out
    }

    /// The stored object, if present.
    pub fn object(
        &self,
        group: &str,
        kind: &str,
        ns: &str,
        name: &str,
    ) -> Option<serde_json::Value> {
        let path = self
            .state()
            .join("objects")
            .join(group)
            .join(kind)
            .join(ns)
            .join(format!("{name}.json"));
        std::fs::read(path)
            .ok()
            .map(|b| serde_json::from_slice(&b).unwrap())
    }

    pub fn status(&self) -> serde_json::Value {
        std::fs::read(self.state().join("status/source.json"))
            .map(|b| serde_json::from_slice(&b).unwrap())
            .unwrap_or(serde_json::Value::Null)
    }

    /// Starts `gitcanary run` in the background.
    pub fn spawn_run(&self, extra_env: &[(&str, &str)]) -> Running {
        let mut cmd = Command::new(bin());
        cmd.arg("--config")
            .arg(&self.config)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        Running {
            child: cmd.spawn().unwrap(),
        }
    }

    /// Runs `gitcanary run`, which must refuse to start; its stderr.
    pub fn run_refused(&self, extra_env: &[(&str, &str)]) -> String {
        use std::io::Read;
        let mut running = self.spawn_run(extra_env);
        let status = wait_for(Duration::from_secs(20), || {
            running.child.try_wait().unwrap()
        })
        .expect("run should have refused to start");
        let mut stderr = String::new();
        running
            .child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert!(!status.success(), "run started: {stderr}");
        stderr
    }

    /// The address `run` is serving on, once it has written it.
    pub fn server_address(&self) -> String {
        wait_for(Duration::from_secs(20), || {
            let b = std::fs::read(self.state().join("status/server.json")).ok()?;
            let v: serde_json::Value = serde_json::from_slice(&b).ok()?;
            v["address"].as_str().map(str::to_string)
        })
        .expect("run writes its address")
    }
}

/// A child process killed on drop.
pub struct Running {
    pub child: Child,
}

impl Running {
    /// Sends SIGTERM and waits; returns the exit status and stderr.
    pub fn stop(mut self) -> (std::process::ExitStatus, String) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let out = std::mem::replace(&mut self.child, Command::new("true").spawn().unwrap())
            .wait_with_output()
            .unwrap();
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` until it returns Some or the deadline passes.
/// Asserts that a revision whose health check failed with `message` is reported as
/// README's Health section says: not ready, the message as status and last error, and
/// `get sources` shows it.
pub fn assert_health_failure_reported(
    rec: &gitcanary::sync::reconcile::Reconciler,
    setup: &Setup,
    message: &str,
) {
    let st = rec.status();
    assert!(!st.ready, "{st:?}");
    assert_eq!(st.message, message);
    assert_eq!(st.last_error.as_deref(), Some(message));
    let out = setup.cmd(&["get", "sources"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("False") && table.contains("health check failed"),
        "{table}"
    );
}

pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(port: u16) {
    wait_for(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    })
    .unwrap_or_else(|| panic!("nothing listens on {port}"));
}

/// Starts a server quietly and waits until it listens on `port`; stopped on drop.
pub fn start_server(cmd: &mut Command, port: u16, what: &str) -> Running {
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let running = Running { child };
    wait_listening(port);
    running
}

/// `git daemon` serving `base` on a loopback port, with receive-pack enabled.
pub struct GitDaemon {
    pub port: u16,
    _child: Running,
}

impl GitDaemon {
    pub fn start(base: &Path, port: u16) -> GitDaemon {
        // Run git-daemon itself: `git daemon` is a wrapper whose child would survive a kill.
        let exec_path = Command::new("git").arg("--exec-path").output().unwrap();
        let daemon =
            PathBuf::from(String::from_utf8_lossy(&exec_path.stdout).trim()).join("git-daemon");
        let child = start_server(
            Command::new(daemon)
                .args([
                    "--reuseaddr",
                    "--export-all",
                    "--enable=receive-pack",
                    "--listen=127.0.0.1",
                ])
                .arg(format!("--port={port}"))
                .arg(format!("--base-path={}", base.display()))
                .arg(base),
            port,
            "git daemon starts",
        );
        GitDaemon {
            port,
            _child: child,
        }
    }

    pub fn url(&self, repo: &str) -> String {
        format!("git://127.0.0.1:{}/{repo}", self.port)
    }
}

/// A real `sshd` on a loopback port with a generated host key, accepting `client_keys`.
pub struct Sshd {
    // Stopped before its folder goes (fields drop in order).
    _child: Running,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

pub fn keygen(path: &Path, ty: &str) {
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-t", ty, "-N", "", "-f"]).arg(path);
    if ty == "rsa" {
        cmd.args(["-b", "2048"]);
    }
    assert!(cmd.status().unwrap().success());
}

pub fn sshd_path() -> Option<PathBuf> {
    ["/usr/sbin/sshd", "/usr/bin/sshd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

impl Sshd {
    pub fn start(client_pubkeys: &[PathBuf]) -> Sshd {
        let sshd = sshd_path().expect("openssh-server is installed (.ci/run installs it)");
        let dir = tempfile::tempdir().unwrap();
        keygen(&dir.path().join("host_ed25519"), "ed25519");
        let mut auth = String::new();
        for k in client_pubkeys {
            auth.push_str(&std::fs::read_to_string(k).unwrap());
        }
        std::fs::write(dir.path().join("authorized_keys"), auth).unwrap();
        let _ = std::fs::create_dir_all("/run/sshd");
        let user = whoami();
        let port = free_port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_ed25519\nPidFile {d}/sshd.pid\nAuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\nUsePAM no\nAllowUsers {user}\nSetEnv PATH=/usr/local/bin:/usr/bin:/bin\n",
            d = dir.path().display()
        );
        std::fs::write(dir.path().join("sshd_config"), config).unwrap();
        let child = start_server(
            Command::new(sshd)
                .args(["-D", "-e", "-f"])
                .arg(dir.path().join("sshd_config")),
            port,
            "sshd starts",
        );
        Sshd {
            port,
            dir,
            _child: child,
        }
    }

    /// A known_hosts line for this server's real host key.
    pub fn known_hosts_line(&self) -> String {
        let pubkey = std::fs::read_to_string(self.dir.path().join("host_ed25519.pub")).unwrap();
        let mut parts = pubkey.split_whitespace();
        format!(
            "[127.0.0.1]:{} {} {}\n",
            self.port,
            parts.next().unwrap(),
            parts.next().unwrap()
        )
    }
}

pub fn whoami() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub const NAMESPACE: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: test\n";

pub fn configmap(name: &str, value: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: test\ndata:\n  key: \"{value}\"\n")
}

/// A minimal HTTP/1.1 client for tests: returns (status, headers, body).
/// [`http_request`] with a text body in and out: the status and the body.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let (code, _, body) = http_request(addr, method, path, headers, body.as_bytes());
    (code, String::from_utf8_lossy(&body).into_owned())
}

pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response has headers")
        + 4;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let hdrs: Vec<(String, String)> = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect();
    let mut body = raw[split..].to_vec();
    if hdrs
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size =
                usize::from_str_radix(String::from_utf8_lossy(&rest[..nl]).trim(), 16).unwrap();
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[nl + 2..nl + 2 + size]);
            rest = &rest[nl + 2 + size + 2..];
        }
        body = out;
    }
    (status, hdrs, body)
}

/// Debian's `docker-registry` (the CNCF distribution registry) on a loopback port.
pub struct Registry {
    // Stopped before its folder goes (fields drop in order).
    _child: Running,
    pub addr: String,
    pub dir: tempfile::TempDir,
    auth: Option<String>,
}

impl Registry {
    /// Starts a registry; with `basic`, it requires that user and password (htpasswd).
    pub fn start(basic: Option<(&str, &str)>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}/data\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().display()
        );
        let mut auth = None;
        if let Some((u, p)) = basic {
            let ht = dir.path().join("htpasswd");
            let ok = Command::new("htpasswd")
                .args(["-Bbc"])
                .arg(&ht)
                .args([u, p])
                .stdout(Stdio::null())
                // It reports `Adding password for user ...` on stderr.
                .stderr(Stdio::null())
                .status()
                .expect("htpasswd (apache2-utils) is installed");
            assert!(ok.success());
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: test-registry\n    path: {}\n",
                ht.display()
            ));
            use base64::Engine;
            auth = Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            ));
        }
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let child = start_server(
            Command::new("docker-registry")
                .arg("serve")
                .arg(dir.path().join("config.yml")),
            port,
            "docker-registry is installed (tests/run.sh installs it)",
        );
        Registry {
            addr: format!("127.0.0.1:{port}"),
            dir,
            auth,
            _child: child,
        }
    }

    fn headers<'a>(&'a self, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut h = extra.to_vec();
        if let Some(a) = &self.auth {
            h.push(("Authorization", a.as_str()));
        }
        h
    }

    fn upload_blob(&self, repo: &str, content: &[u8]) -> String {
        use sha2::Digest;
        let digest = format!(
            "sha256:{}",
            gitcanary::manifest::object::hex(&sha2::Sha256::digest(content))
        );
        let (status, hdrs, _) = http_request(
            &self.addr,
            "POST",
            &format!("/v2/{repo}/blobs/uploads/"),
            &self.headers(&[]),
            b"",
        );
        assert_eq!(status, 202, "start upload");
        let loc = hdrs
            .iter()
            .find(|(k, _)| k == "location")
            .unwrap()
            .1
            .clone();
        let loc = loc
            .split_once(&self.addr)
            .map(|(_, p)| p.to_string())
            .unwrap_or(loc);
        let sep = if loc.contains('?') { '&' } else { '?' };
        let (status, _, body) = http_request(
            &self.addr,
            "PUT",
            &format!("{loc}{sep}digest={digest}"),
            &self.headers(&[("Content-Type", "application/octet-stream")]),
            content,
        );
        assert_eq!(
            status,
            201,
            "blob upload: {}",
            String::from_utf8_lossy(&body)
        );
        digest
    }

    /// Pushes a Helm chart archive as the OCI artifact `repo:tag`, as `helm push` does.
    #[allow(dead_code)]
    pub fn push_chart(&self, repo: &str, tag: &str, tgz: &[u8]) {
        let config = br#"{"name":"chart"}"#;
        let cfg_digest = self.upload_blob(repo, config);
        let layer_digest = self.upload_blob(repo, tgz);
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.cncf.helm.config.v1+json","size":{},"digest":"{cfg_digest}"}},"layers":[{{"mediaType":"application/vnd.cncf.helm.chart.content.v1.tar+gzip","size":{},"digest":"{layer_digest}"}}]}}"#,
            config.len(),
            tgz.len()
        );
        let (status, _, body) = http_request(
            &self.addr,
            "PUT",
            &format!("/v2/{repo}/manifests/{tag}"),
            &self.headers(&[("Content-Type", "application/vnd.oci.image.manifest.v1+json")]),
            manifest.as_bytes(),
        );
        assert_eq!(
            status,
            201,
            "manifest PUT: {}",
            String::from_utf8_lossy(&body)
        );
    }

    /// Creates `repo:tag` with an image config whose `created` time is `created`.
    pub fn push_tag(&self, repo: &str, tag: &str, created: &str) {
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","created":"{created}","rootfs":{{"type":"layers","diff_ids":[]}},"config":{{}}}}"#
        );
        let cfg_digest = self.upload_blob(repo, config.as_bytes());
        let layer = format!("layer of {repo}:{tag}");
        let layer_digest = self.upload_blob(repo, layer.as_bytes());
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":{},"digest":"{cfg_digest}"}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":{},"digest":"{layer_digest}"}}]}}"#,
            config.len(),
            layer.len()
        );
        let (status, _, body) = http_request(
            &self.addr,
            "PUT",
            &format!("/v2/{repo}/manifests/{tag}"),
            &self.headers(&[(
                "Content-Type",
                "application/vnd.docker.distribution.manifest.v2+json",
            )]),
            manifest.as_bytes(),
        );
        assert_eq!(
            status,
            201,
            "manifest PUT: {}",
            String::from_utf8_lossy(&body)
        );
    }
}

/// A smart-HTTP Git server on 127.0.0.1:0: `git http-backend` (CGI) behind basic auth
/// that accepts any user name with `password` (a token), or `password` as a bearer token.
pub struct GitHttp {
    pub url_base: String,
    pub requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

#[allow(dead_code)]
impl GitHttp {
    pub fn start(root: &Path, password: &str) -> GitHttp {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url_base = format!("http://{}", listener.local_addr().unwrap());
        let requests: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let log = requests.clone();
        let root = root.to_path_buf();
        let password = password.to_string();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let (method, target) = (
                    parts.next().unwrap_or("GET").to_string(),
                    parts.next().unwrap_or("/").to_string(),
                );
                let mut headers = Vec::new();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.trim_end().split_once(':') {
                        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                    }
                }
                let header = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                let mut body = Vec::new();
                if let Some(n) = header("content-length").and_then(|n| n.parse::<usize>().ok()) {
                    body.resize(n, 0);
                    let _ = reader.read_exact(&mut body);
                } else if header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
                    loop {
                        let mut size = String::new();
                        let _ = reader.read_line(&mut size);
                        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                        let mut chunk = vec![0; n + 2];
                        let _ = reader.read_exact(&mut chunk);
                        if n == 0 {
                            break;
                        }
                        body.extend_from_slice(&chunk[..n]);
                    }
                }
                let authorized = header("authorization")
                    .and_then(|a| a.strip_prefix("Basic ").map(str::to_string))
                    .and_then(|b| {
                        use base64::Engine;
                        base64::engine::general_purpose::STANDARD.decode(b).ok()
                    })
                    .map(|d| String::from_utf8_lossy(&d).to_string())
                    .is_some_and(|up| up.split_once(':').is_some_and(|(_, p)| p == password))
                    || header("authorization") == Some(format!("Bearer {password}"));
                log.lock().unwrap().push(format!(
                    "{method} {target} {}",
                    if authorized {
                        "authorized"
                    } else {
                        "anonymous"
                    }
                ));
                let mut out = conn;
                if !authorized {
                    let _ = write!(out, "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    continue;
                }
                let (path, query) = target.split_once('?').unwrap_or((&target, ""));
                let mut child = Command::new("git")
                    .arg("http-backend")
                    .env("GIT_PROJECT_ROOT", &root)
                    .env("GIT_HTTP_EXPORT_ALL", "1")
                    .env("PATH_INFO", path)
                    .env("QUERY_STRING", query)
                    .env("REQUEST_METHOD", &method)
                    .env("CONTENT_TYPE", header("content-type").unwrap_or_default())
                    .env("CONTENT_LENGTH", body.len().to_string())
                    .env("REMOTE_USER", "git")
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                let mut stdin = child.stdin.take().unwrap();
                let feed = std::thread::spawn(move || {
                    let _ = stdin.write_all(&body);
                });
                let cgi = child.wait_with_output().unwrap().stdout;
                let _ = feed.join();
                let split = cgi
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .map(|i| (i, 4))
                    .or_else(|| cgi.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)))
                    .unwrap_or((cgi.len(), 0));
                let head = String::from_utf8_lossy(&cgi[..split.0]).to_string();
                let payload = &cgi[(split.0 + split.1).min(cgi.len())..];
                let mut status = "200 OK".to_string();
                let mut resp = String::new();
                for l in head.lines() {
                    match l.split_once(':') {
                        Some((k, v)) if k.eq_ignore_ascii_case("status") => {
                            status = v.trim().into()
                        }
                        Some(_) => resp.push_str(&format!("{l}\r\n")),
                        None => {}
                    }
                }
                let _ = write!(
                    out,
                    "HTTP/1.1 {status}\r\n{resp}Content-Length: {}\r\nConnection: close\r\n\r\n",
                    payload.len()
                );
                let _ = out.write_all(payload);
            }
        });
        GitHttp { url_base, requests }
    }
}

/// A remote with `files` committed as `message`, and a config following it
/// (`source_extra` as in [`Setup::new`]).
#[allow(dead_code)]
pub fn seeded(files: &[(&str, &str)], message: &str, source_extra: &str) -> (Remote, Setup) {
    let remote = Remote::new();
    remote.write(files).push(message);
    let setup = Setup::new(&remote.bare.display().to_string(), source_extra, "");
    (remote, setup)
}

/// The event messages of a Canary status.
#[allow(dead_code)]
pub fn canary_events(c: &serde_json::Value) -> Vec<String> {
    c["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect()
}

/// Runs a shell script in `dir`; it must succeed.
#[allow(dead_code)]
pub fn sh(dir: &Path, script: &str) {
    let out = Command::new("sh")
        .args(["-c", script])
        .current_dir(dir)
        .output()
        .unwrap();
    if !out.status.success() {
        panic!("{script}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// A tiny HTTP receiver recording request bodies (an alert provider's endpoint).
pub fn receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufReader, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/alerts", l.local_addr().unwrap());
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for stream in l.incoming().flatten() {
            let mut r = BufReader::new(stream);
            let body = read_request(&mut r).map(|(_, b)| b).unwrap_or_default();
            g.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&body).into_owned());
            let _ = r
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, got)
}

/// Reads one HTTP/1.1 request from a test receiver's client: its request line and body.
pub fn read_request(r: &mut impl std::io::BufRead) -> Option<(String, Vec<u8>)> {
    let mut first = String::new();
    if r.read_line(&mut first).ok()? == 0 {
        return None;
    }
    let mut len = 0;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; len];
    let _ = r.read_exact(&mut body);
    Some((first, body))
}

/// An HTTP server on 127.0.0.1 that answers every request with `status` and a chunked
/// body that never ends (stopping at 2 GiB, so a client without a cap still finishes);
/// its address.
pub fn endless_body_server(status: u16) -> String {
    use std::io::Write;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
                if read_request(&mut reader).is_none() {
                    return;
                }
                let head = format!("HTTP/1.1 {status} Endless\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n");
                if conn.write_all(head.as_bytes()).is_err() {
                    return;
                }
                let mut chunk = format!("{:x}\r\n", 64 << 10).into_bytes();
                chunk.extend(std::iter::repeat_n(b' ', 64 << 10));
                chunk.extend_from_slice(b"\r\n");
                let mut sent = 0usize;
                while sent < 2 << 30 && conn.write_all(&chunk).is_ok() {
                    sent += 64 << 10;
                }
            });
        }
    });
    addr
}

/// A Deployment in `test` whose `app` container image `{registry}/team/{name}:{tag}` is
/// automated by Flux v1 annotations with `policy` (e.g. `semver:^1.0`).
pub fn automated_deployment(registry: &str, name: &str, policy: &str, tag: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: test\n  annotations:\n    fluxcd.io/automated: \"true\"\n    fluxcd.io/tag.app: {policy}\nspec:\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      containers:\n        - name: app\n          image: {registry}/team/{name}:{tag}\n"
    )
}
