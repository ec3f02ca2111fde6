#!/usr/bin/env bash
# Offline, strict checks of the deployment files in deploy/.
#
# - deploy/kubernetes/ is a kustomization: it is rendered (`kubectl kustomize` where kubectl is
#   installed, else the same concatenation of its `resources:` in Python; the kustomization uses
#   nothing else, which the renderer checks) and the result validated against the Kubernetes JSON
#   schemas with the PyPI package kubernetes-validate (--strict rejects unknown properties). The
#   rendered output must hold no Secret, every manifest in the directory must be one of its
#   resources, and the ServiceAccount must not mount an API token.
# - deploy/secret.example.yaml, kept outside that directory, is validated too.
# - deploy/prometheus/prometheusrule.yaml must be what prometheusrule.sh makes of alerts.yaml, and
#   hold the same groups.
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

rendered="$(mktemp --suffix=.yaml)"
trap 'rm -f "$rendered"' EXIT

if command -v kubectl >/dev/null; then
    echo "rendering deploy/kubernetes with kubectl kustomize"
    kubectl kustomize deploy/kubernetes > "$rendered"
else
    echo "rendering deploy/kubernetes from its resources (kubectl is not installed)"
fi
"$venv/bin/python" - "$rendered" <<'PY'
import pathlib, sys
import yaml

out = pathlib.Path(sys.argv[1])
base = pathlib.Path("deploy/kubernetes")
kustomization = yaml.safe_load((base / "kustomization.yaml").read_text())
extra = set(kustomization) - {"apiVersion", "kind", "resources"}
if extra:
    sys.exit(f"error: kustomization.yaml uses {sorted(extra)}; the offline renderer knows only resources")
resources = kustomization["resources"]
manifests = sorted(p.name for p in base.glob("*.y*ml") if p.name != "kustomization.yaml")
if sorted(resources) != manifests:
    sys.exit(f"error: kustomization.yaml lists {sorted(resources)}, the directory holds {manifests}: "
             "`kubectl apply -f` and `apply -k` would apply different things")
if out.stat().st_size == 0:
    out.write_text("---\n".join((base / name).read_text() for name in resources))
documents = [d for d in yaml.safe_load_all(out.read_text()) if d]
kinds = sorted(d["kind"] for d in documents)
print(f"kustomization renders {kinds}")
if kinds != ["CronJob", "NetworkPolicy", "PersistentVolumeClaim", "ServiceAccount"]:
    sys.exit("error: the kustomization must render the CronJob, PVC, ServiceAccount and NetworkPolicy, and no Secret")
account = next(d for d in documents if d["kind"] == "ServiceAccount")
if account.get("automountServiceAccountToken") is not False:
    sys.exit("error: the ServiceAccount must set automountServiceAccountToken: false")
job = next(d for d in documents if d["kind"] == "CronJob")
pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
if pod.get("serviceAccountName") != account["metadata"]["name"]:
    sys.exit("error: the CronJob's pods must run as the kustomization's ServiceAccount")

rules = pathlib.Path("deploy/prometheus")
plain = yaml.safe_load((rules / "alerts.yaml").read_text())
operator = yaml.safe_load((rules / "prometheusrule.yaml").read_text())
if operator["kind"] != "PrometheusRule" or operator["spec"]["groups"] != plain["groups"]:
    sys.exit("error: prometheusrule.yaml does not hold the groups of alerts.yaml")
print("prometheusrule.yaml holds the groups of alerts.yaml")
PY
bash deploy/prometheus/prometheusrule.sh --check

echo "kubernetes-validate ${KUBERNETES_VALIDATE_VERSION}, Kubernetes ${K8S_VERSION}, strict"
status=0
for manifest in "$rendered" deploy/secret.example.yaml; do
    if ! "$venv/bin/kubernetes-validate" --strict --kubernetes-version "$K8S_VERSION" "$manifest"; then
        status=1
    fi
done

if ((status != 0)); then
    echo "error: deploy manifest validation failed" >&2
else
    echo "the rendered kustomization and the Secret example are valid"
fi
exit "$status"
