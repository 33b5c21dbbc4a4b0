#!/usr/bin/env bash
# Builds the seed corpora under fuzz/corpus/ from examples-repo/ and tests/charts/
# (corpora are generated, not committed). Run from anywhere; safe to rerun.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
out="$here/corpus"
mkdir -p "$out"/{yaml_manifest,template,kustomize_patch,semver,webhook}
n=0
seed() { # target, then the parts joined by NUL
    local target=$1
    shift
    n=$((n + 1))
    local f="$out/$target/seed-$n"
    : >"$f"
    local first=1
    for part in "$@"; do
        [ $first = 1 ] || printf '\0' >>"$f"
        first=0
        cat "$part" >>"$f"
    done
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Every YAML file is a revision folder's file, and a patch target.
mapfile -t yamls < <(find "$repo/examples-repo" "$repo/tests/charts" -name '*.yaml' -o -name '*.yml' | sort)
for y in "${yamls[@]}"; do
    seed yaml_manifest "$y"
done

# Each chart template with its chart's helpers and values.
for chart in "$repo"/examples-repo/charts/* "$repo"/tests/charts/* "$repo"/tests/charts/*/charts/*; do
    [ -d "$chart/templates" ] || continue
    helpers="$chart/templates/_helpers.tpl"
    [ -f "$helpers" ] || helpers=/dev/null
    values="$chart/values.yaml"
    [ -f "$values" ] || values=/dev/null
    for t in "$chart"/templates/*.yaml "$chart"/templates/*/*.yaml; do
        [ -f "$t" ] && seed template "$t" "$helpers" "$values"
    done
done

# Patches of both kinds against the example objects.
printf 'apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: podinfo\nspec:\n  replicas: 3\n  template:\n    spec:\n      containers:\n        - name: podinfod\n          image: ghcr.io/stefanprodan/podinfo:6.5.0\n' >"$tmp/smp.yaml"
printf -- '- op: replace\n  path: /spec/replicas\n  value: 5\n- op: add\n  path: /metadata/labels\n  value: {a: b}\n- op: remove\n  path: /spec/template/spec/containers/0\n' >"$tmp/json6902.yaml"
printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: podinfo\n$patch: delete\n' >"$tmp/delete.yaml"
for y in "$repo"/examples-repo/apps/podinfo/*.yaml; do
    for p in "$tmp"/smp.yaml "$tmp"/json6902.yaml "$tmp"/delete.yaml; do
        seed kustomize_patch "$p" "$y"
    done
done
printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: prod\nresources:\n  - ../base\nimages:\n  - name: podinfo\n    newTag: 6.5.1\npatches:\n  - path: patch.yaml\n    target:\n      kind: Deployment\n' >"$tmp/kustomization.yaml"
seed kustomize_patch "$tmp/kustomization.yaml"

# Constraints and versions as ImagePolicies write them.
i=0
for pair in '>=1.0.0 <2.0.0|1.5.3' '^6.5|6.5.1' '~1.2.3|1.2.9' '1.x|1.4.0-rc.1' '>= 6.0.0-0|6.1.0-alpha.2+build.5' '*|v2.0.0' '!=1.0.0 || >3|3.1' '=1.2.3|1.2.3'; do
    i=$((i + 1))
    printf '%s' "${pair%%|*}" >"$tmp/c$i"
    printf '%s' "${pair#*|}" >"$tmp/v$i"
    seed semver "$tmp/c$i" "$tmp/v$i"
done

# A correctly signed push of each provider's kind.
printf '{"ref":"refs/heads/main","after":"0123456789abcdef0123456789abcdef01234567"}' >"$tmp/body"
printf 's3cret' >"$tmp/secret"
sig=$(openssl dgst -sha256 -hmac s3cret -r <"$tmp/body" | cut -d' ' -f1)
sig1=$(openssl dgst -sha1 -hmac s3cret -r <"$tmp/body" | cut -d' ' -f1)
for hv in "x-hub-signature-256|sha256=$sig" "x-gitea-signature|$sig" "x-hub-signature|sha1=$sig1" "x-gitlab-token|s3cret" "authorization|Bearer s3cret"; do
    printf '%s' "${hv%%|*}" >"$tmp/h"
    printf '%s' "${hv#*|}" >"$tmp/v"
    seed webhook "$tmp/secret" "$tmp/h" "$tmp/v" "$tmp/body"
done

for t in "$out"/*; do
    echo "$(basename "$t"): $(find "$t" -type f | wc -l) seeds"
done
