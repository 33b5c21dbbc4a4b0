#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine: installs the real parts the tests
# start on 127.0.0.1 (git, git-daemon, sshd, docker-registry, htpasswd, prometheus, curl for
# the Helm test hooks, openssl for a TLS chart repository, and chromium for the web UI's
# browser tests, driven headless over the DevTools protocol),
# then `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
need=()
command -v git >/dev/null || need+=(git)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v htpasswd >/dev/null || need+=(apache2-utils)
command -v prometheus >/dev/null || need+=(prometheus)
command -v curl >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)
command -v chromium >/dev/null || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo test --all-targets "$@"

# Tests against a real kube-apiserver and etcd (the envtest convention): ignored by
# default, run when KUBEBUILDER_ASSETS names a folder holding the binaries.
if [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/kube-apiserver" ]; then
  # Every test file that holds one, found by the ignore reason they share.
  for t in $(grep -l 'needs KUBEBUILDER_ASSETS' tests/*.rs); do
    cargo test --test "$(basename "$t" .rs)" "$@" -- --ignored
  done
fi
