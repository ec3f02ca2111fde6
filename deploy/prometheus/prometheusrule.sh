#!/usr/bin/env bash
# Writes prometheusrule.yaml, the Prometheus Operator form of alerts.yaml: the same groups under
# `spec:`, so that the two can never say different things. Edit alerts.yaml, then run this script.
#   bash deploy/prometheus/prometheusrule.sh           rewrite prometheusrule.yaml
#   bash deploy/prometheus/prometheusrule.sh --check   exit 1 if it is not what alerts.yaml gives (CI)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

render() {
    cat <<'HEADER'
# GENERATED from alerts.yaml by prometheusrule.sh: do not edit here (CI checks the two are equal).
# For clusters with the Prometheus Operator (kube-prometheus-stack):
#   kubectl apply -n monitoring -f deploy/prometheus/prometheusrule.yaml
# Many installations only load rules whose labels match the Prometheus' ruleSelector (with
# kube-prometheus-stack: `release: <the Helm release name>`); then also run
#   kubectl label -n monitoring prometheusrule dify-usage-exporter release=<the Helm release name>
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: dify-usage-exporter
  labels:
    app.kubernetes.io/name: dify-usage-exporter
spec:
HEADER
    # alerts.yaml from its `groups:` line on, indented under `spec:` (blank lines stay blank).
    sed -n '/^groups:/,$p' alerts.yaml | sed 's/^\(.\)/  \1/'
}

if [[ "${1:-}" == "--check" ]]; then
    if ! diff -u prometheusrule.yaml <(render); then
        echo "deploy/prometheus/prometheusrule.yaml is not what alerts.yaml gives: run bash deploy/prometheus/prometheusrule.sh" >&2
        exit 1
    fi
    echo "prometheusrule.yaml carries the groups of alerts.yaml"
else
    render > prometheusrule.yaml
fi
