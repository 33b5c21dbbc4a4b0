//! Process edge: spawn a container as a host process in its own process group, tied to
//! gitcanary's life (`PR_SET_PDEATHSIG`), with stdout and stderr appended to a log file;
//! signal its whole group; and reap groups a killed gitcanary left behind.

use super::spec::Exec;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The environment every program gitcanary starts begins with: `PATH` and `HOME`, so
/// programs are found and tools that want a home work. Nothing else of gitcanary's own
/// environment, which may hold its secrets (webhook secret, Git and registry tokens).
pub fn base_env() -> [(&'static str, String); 2] {
    [
        (
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
        ),
        ("HOME", std::env::var("HOME").unwrap_or_else(|_| "/".into())),
    ]
}

/// Starts `exec`, logging to `log`. Must be called from a thread that lives as long as
/// the runtime: the death signal fires when the spawning thread exits.
pub fn spawn(exec: &Exec, log: &Path, default_dir: &Path) -> std::io::Result<Child> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Workloads and hooks may print what they got from Secrets.
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(crate::util::atomic::PRIVATE_FILE)
        .open(log)?;
    let err = out.try_clone()?;
    let (program, args) = exec
        .argv
        .split_first()
        .ok_or_else(|| std::io::Error::other("empty command"))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        // Workloads get their own environment, never gitcanary's.
        .env_clear()
        .envs(base_env())
        .envs(exec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .current_dir(
            exec.working_dir
                .as_deref()
                .map(PathBuf::from)
                .unwrap_or_else(|| default_dir.to_path_buf()),
        );
    // SAFETY: only async-signal-safe calls (setsid, prctl) run between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            #[cfg(target_os = "linux")]
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Sends `sig` to the process group led by `pid`.
pub fn signal_group(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a negative pid signals that group; no memory is touched.
    unsafe {
        libc::kill(-(pid as i32), sig);
    }
}

/// The start time of `pid` (field 22 of /proc/pid/stat), to tell it from a reused pid.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// The process group (field 5) and start time (field 22) of `pid`.
fn group_and_start(pid: u32) -> Option<(u32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    Some((fields.get(2)?.parse().ok()?, fields.get(19)?.parse().ok()?))
}

/// Records of running process groups, so a restarted gitcanary can reap them.
pub struct PidRecords {
    dir: PathBuf,
}

impl PidRecords {
    /// Records under `state_dir/runtime/pids`.
    pub fn new(state_dir: &Path) -> Self {
        PidRecords {
            dir: state_dir.join("runtime").join("pids"),
        }
    }

    /// Remembers a started process.
    pub fn add(&self, key: &str, pid: u32) {
        let st = start_time(pid).unwrap_or(0);
        let _ = crate::util::atomic::write(
            &self.dir.join(format!("{key}.json")),
            format!("{{\"pid\":{pid},\"start\":{st}}}").as_bytes(),
        );
    }

    /// Forgets a process that exited.
    pub fn remove(&self, key: &str) {
        let _ = std::fs::remove_file(self.dir.join(format!("{key}.json")));
    }

    /// Kills every process still in a recorded group; returns how many were killed.
    /// The leader may be gone (it had the death signal) while its children live on,
    /// so members are found by process group; a member started before the leader
    /// cannot belong to it (that would be a reused id).
    pub fn reap_all(&self) -> usize {
        let mut groups: Vec<(u32, u64)> = Vec::new();
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if let Ok(v) = std::fs::read(&path)
                .map(|b| serde_json::from_slice::<serde_json::Value>(&b).unwrap_or_default())
            {
                if let (Some(pid), Some(st)) = (v["pid"].as_u64(), v["start"].as_u64()) {
                    groups.push((pid as u32, st));
                }
            }
            let _ = std::fs::remove_file(path);
        }
        if groups.is_empty() {
            return 0;
        }
        let mut reaped = 0;
        for proc_entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = proc_entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Some((pgrp, start)) = group_and_start(pid) else {
                continue;
            };
            if groups.iter().any(|(g, st)| *g == pgrp && start >= *st) {
                // SAFETY: kill(2) on a pid; no memory is touched.
                unsafe {
                    libc::kill(pid as i32, libc::SIGKILL);
                }
                reaped += 1;
            }
        }
        reaped
    }
}
