//! `kill -9` at random moments of a large sync, repeatedly: the store stays consistent
//! (every object file whole, every object file in the inventory), concurrent readers
//! never see a torn object, and the next sync converges exactly.

mod common;
use common::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn generate(remote: &Remote, variant: usize, files: usize) {
    let _ = std::fs::remove_dir_all(remote.work.join("apps"));
    // Each variant drops a different tenth of the files and changes every value.
    for f in 0..files {
        if f % 10 == variant % 10 {
            continue;
        }
        let mut text = String::new();
        for i in 0..10 {
            text.push_str(&format!(
                "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{f}-{i}\n  namespace: ns-{}\ndata:\n  v: \"{variant}\"\n  pad: \"{}\"\n",
                f % 7,
                "x".repeat(200)
            ));
        }
        remote.write(&[(&format!("apps/f{f}.yaml"), &text)]);
    }
}

fn object_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                object_files(&p, out);
            } else if !e.file_name().to_string_lossy().starts_with(".tmp-") {
                out.push(p);
            }
        }
    }
}

fn check_consistent(state: &Path) -> usize {
    let inv: serde_json::Value = match std::fs::read(state.join("inventory.json")) {
        Ok(b) => serde_json::from_slice(&b).expect("inventory is whole JSON"),
        Err(_) => serde_json::json!({"objects": []}),
    };
    let listed: BTreeSet<String> = inv["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            format!(
                "{}/{}/{}",
                o["kind"].as_str().unwrap(),
                o["namespace"].as_str().unwrap(),
                o["name"].as_str().unwrap()
            )
        })
        .collect();
    let mut files = Vec::new();
    object_files(&state.join("objects"), &mut files);
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{} torn: {e}", f.display()));
        let key = format!(
            "{}/{}/{}",
            v["kind"].as_str().unwrap(),
            v["metadata"]["namespace"].as_str().unwrap(),
            v["metadata"]["name"].as_str().unwrap()
        );
        assert!(
            listed.contains(&key),
            "{key} is on disk but not in the inventory: it could never be pruned"
        );
    }
    files.len()
}

#[test]
fn kill_9_mid_sync_leaves_a_consistent_store() {
    let files = 300;
    let remote = Remote::new();
    generate(&remote, 0, files);
    remote.push("v0");
    let setup = Setup::new(&format!("file://{}", remote.bare.display()), "", "");
    let t = Instant::now();
    let (ok, out) = setup.sync();
    assert!(ok, "{out}");
    let full = t.elapsed();
    check_consistent(&setup.state());

    // A reader that keeps parsing every object while the writer is killed.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (stop, reads, objects) = (stop.clone(), reads.clone(), setup.state().join("objects"));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let mut fs = Vec::new();
                object_files(&objects, &mut fs);
                for f in fs {
                    if let Ok(b) = std::fs::read(&f) {
                        serde_json::from_slice::<serde_json::Value>(&b)
                            .unwrap_or_else(|e| panic!("reader saw a torn {}: {e}", f.display()));
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };

    let mut seed = Instant::now().elapsed().subsec_nanos() as u64 | 1;
    let mut killed_mid_write = 0;
    for round in 1..=12 {
        generate(&remote, round, files);
        remote.push(&format!("v{round}"));
        // xorshift for a spread of kill points across the whole sync
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_micros(seed % (full.as_micros() as u64 + 1));
        let mut child = Command::new(bin())
            .arg("--config")
            .arg(&setup.config)
            .args(["sync", "--once"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let finished = child.try_wait().unwrap().is_some();
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let _ = child.wait();
        if !finished {
            killed_mid_write += 1;
        }
        check_consistent(&setup.state());
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().expect("reader never saw a torn object");
    assert!(
        killed_mid_write >= 6,
        "most rounds must be killed mid-sync ({killed_mid_write})"
    );
    assert!(reads.load(Ordering::Relaxed) > 0);

    // The next sync converges to exactly the last revision.
    let (ok, out) = setup.sync();
    assert!(ok, "{out}");
    let n = check_consistent(&setup.state());
    assert_eq!(n, (files - files / 10) * 10);
    let cm = setup.object("core", "ConfigMap", "ns-1", "cm-1-0").unwrap();
    assert_eq!(cm["data"]["v"], "12");
    assert!(
        setup
            .object("core", "ConfigMap", "ns-2", "cm-2-0")
            .is_none(),
        "file 2 is dropped in round 12"
    );
}
