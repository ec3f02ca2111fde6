#!/usr/bin/env bash
# Offline, strict schema check of the Kubernetes manifests in deploy/kubernetes/.
#
# Uses the PyPI package kubernetes-validate, which ships the Kubernetes JSON schemas (no cluster, no network
# needed once installed). --strict rejects properties the schema does not know (typos, wrong nesting).
#
# Environment:
#   VENV_DIR     virtualenv to use/create (default .venv, relative to the repo root)
#   K8S_VERSION  Kubernetes version to validate against (default below; must be one the package ships)
#   PYTHON       interpreter used to create the venv (default python3)
set -euo pipefail

KUBERNETES_VALIDATE_VERSION="1.37.0"
K8S_VERSION="${K8S_VERSION:-1.37.0}"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

venv="${VENV_DIR:-.venv}"
if [[ ! -x "$venv/bin/python" ]]; then
    echo "creating virtualenv $venv"
    "${PYTHON:-python3}" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "kubernetes-validate==${KUBERNETES_VALIDATE_VERSION}"

shopt -s nullglob
manifests=(deploy/kubernetes/*.yaml)
if ((${#manifests[@]} == 0)); then
    echo "error: no manifests found in deploy/kubernetes/" >&2
    exit 1
fi

echo "kubernetes-validate ${KUBERNETES_VALIDATE_VERSION}, Kubernetes ${K8S_VERSION}, strict"
status=0
for manifest in "${manifests[@]}"; do
    if ! "$venv/bin/kubernetes-validate" --strict --kubernetes-version "$K8S_VERSION" "$manifest"; then
        status=1
    fi
done

if ((status != 0)); then
    echo "error: deploy manifest validation failed" >&2
else
    echo "all ${#manifests[@]} manifests valid"
fi
exit "$status"
