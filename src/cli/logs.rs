//! `gitcanary logs <deployment> [-f]`: prints each replica's stdout and stderr, kept
//! under `<stateDir>/logs/<namespace>/<pod>/<container>.log`, prefixed `[pod/container]`.

use crate::config::Config;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

fn log_files(cfg: &Config, ns: &str, name: &str) -> Vec<(String, PathBuf)> {
    let dir = cfg.state_dir().join("logs").join(ns);
    let mut out = Vec::new();
    for pod in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let pod_name = pod.file_name().to_string_lossy().into_owned();
        // Pods are named `<deployment>-<template hash>-<suffix>`.
        let Some(rest) = pod_name.strip_prefix(&format!("{name}-")) else {
            continue;
        };
        if rest.matches('-').count() != 1 {
            continue;
        }
        for f in std::fs::read_dir(pod.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let container = f
                .file_name()
                .to_string_lossy()
                .trim_end_matches(".log")
                .to_string();
            out.push((format!("{pod_name}/{container}"), f.path()));
        }
    }
    out.sort();
    out
}

/// Prints the logs, following them with `follow`.
pub fn logs(cfg: &Config, deployment: &str, follow: bool) -> anyhow::Result<ExitCode> {
    let (ns, name) = deployment
        .split_once('/')
        .unwrap_or(("default", deployment));
    let mut offsets: std::collections::HashMap<PathBuf, u64> = Default::default();
    loop {
        let files = log_files(cfg, ns, name);
        if files.is_empty() && !follow {
            anyhow::bail!(
                "no logs for deployment {ns}/{name} under {}",
                cfg.state_dir().join("logs").display()
            );
        }
        for (label, path) in files {
            let Ok(mut f) = std::fs::File::open(&path) else {
                continue;
            };
            let at = offsets.entry(path.clone()).or_insert(0);
            f.seek(SeekFrom::Start(*at))?;
            let mut text = String::new();
            let n = f.read_to_string(&mut text)?;
            *at += n as u64;
            for line in text.lines() {
                println!("[{label}] {line}");
            }
        }
        if !follow {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
