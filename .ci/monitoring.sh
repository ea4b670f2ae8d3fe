#!/usr/bin/env bash
# CI: the monitoring examples are valid. promtool checks the alert rules' syntax and runs their
# unit tests (config/prometheus-alerts.test.yml); the Grafana dashboard must be JSON and every
# panel's query valid PromQL (checked by promtool as recording rules, $instance as ".*").
# promtool comes from Debian's `prometheus` package, unpacked rather than installed: installing
# it would start a Prometheus server. About 4 s (download 19 MB, extract) on 2026-12-03.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

promtool=$(command -v promtool || true)
if [[ -z "$promtool" ]]; then
    (cd "$work" && apt-get download prometheus >/dev/null 2>&1) \
        || { apt-get update >/dev/null && (cd "$work" && apt-get download prometheus >/dev/null 2>&1); }
    dpkg-deb --fsys-tarfile "$work"/prometheus_*.deb | tar -x -C "$work" ./usr/bin/promtool
    promtool="$work/usr/bin/promtool"
fi
"$promtool" --version | head -n 1

"$promtool" check rules config/prometheus-alerts.yml
"$promtool" test rules config/prometheus-alerts.test.yml

python3 -m json.tool config/grafana-dashboard.json >/dev/null
python3 - config/grafana-dashboard.json >"$work/dashboard-rules.yml" <<'PY'
import json, sys
dash = json.load(open(sys.argv[1]))
assert dash.get("schemaVersion", 0) >= 36, "schemaVersion too old"
assert any(i.get("name") == "DS_PROMETHEUS" for i in dash.get("__inputs", [])), "no DS_PROMETHEUS input"
print("groups:\n  - name: dashboard\n    rules:")
for panel in dash["panels"]:
    assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
    for n, target in enumerate(panel["targets"]):
        expr = target["expr"].replace("$instance", ".*")
        print(f"      - record: dashboard:panel{panel['id']}_{n}\n        expr: {json.dumps(expr)}")
PY
echo "dashboard: $(grep -c 'record:' "$work/dashboard-rules.yml") panel queries"
"$promtool" check rules "$work/dashboard-rules.yml"
