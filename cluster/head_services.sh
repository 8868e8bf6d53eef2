#!/usr/bin/env bash
# The head node's services in cluster mode, next to Ray:
#   MLflow tracking server (runs + model registry; artifacts proxied to the shared filesystem or S3),
#   Redis (the online feature store shared by every node),
#   Prometheus (scrapes every Ray node's metrics agent and the Serve app's /metrics; mlinfra alerts).
# MLflow and Redis bind the head's private IP (worker nodes reach them; the security group admits only
# cluster members); Prometheus binds 127.0.0.1 (reach it through `ray attach cluster.yaml -p 9090`).
#
#   cluster/head_services.sh start|stop|status|env  (cluster.yaml runs `start` on the head, and
#   `eval "$(cluster/head_services.sh env)"` before `ray start` so job drivers get the URLs)
# Settings: cluster/cluster.env, or the file named by MLINFRA_CLUSTER_ENV (tests point it elsewhere).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
# shellcheck source=cluster.env
source "${MLINFRA_CLUSTER_ENV:-$HERE/cluster.env}"
STATE="${MLINFRA_STATE:-$HOME/mlinfra_services}"
HEAD_IP="${MLINFRA_HEAD_IP:-$(hostname -I | awk '{print $1}')}"
RAY_TEMP="${RAY_TEMP_DIR:-/tmp/ray}"
BIN="${MLINFRA_BIN:-$REPO/.venv/bin}"
SERVICES=(mlflow redis prometheus)

prometheus_config() {
  cat <<YAML
# Written by cluster/head_services.sh; edit that script, not this file.
global: {scrape_interval: 15s, evaluation_interval: 15s}
rule_files: ["$REPO/mlinfra_ray/monitoring/alerts.yml"]
scrape_configs:
  - job_name: ray            # every node's metrics agent, from the file Ray keeps up to date
    file_sd_configs: [{files: ["$RAY_TEMP/prom_metrics_service_discovery.json"]}]
  - job_name: mlinfra        # the Serve app's /metrics (the alert rules select job="mlinfra")
    metrics_path: /metrics
    static_configs: [{targets: ["127.0.0.1:$MLINFRA_SERVE_PORT"]}]
YAML
}

launch() {  # name, command...: own process group (stop kills the whole group), log and pid in STATE
  local name=$1; shift
  if running "$name"; then echo "$name already running"; return; fi
  setsid "$@" >"$STATE/$name.log" 2>&1 < /dev/null &
  echo $! > "$STATE/$name.pid"
}

running() { [[ -f "$STATE/$1.pid" ]] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

start() {
  mkdir -p "$STATE/redis" "$STATE/prometheus"
  prometheus_config > "$STATE/prometheus.yml"
  launch mlflow "$BIN/mlflow" server --host "$HEAD_IP" --port "$MLINFRA_MLFLOW_PORT" \
    --backend-store-uri "$MLINFRA_MLFLOW_BACKEND" --artifacts-destination "$MLINFRA_MLFLOW_ARTIFACTS" \
    --allowed-hosts "$HEAD_IP:$MLINFRA_MLFLOW_PORT,$HEAD_IP,localhost:$MLINFRA_MLFLOW_PORT" --workers "${MLINFRA_MLFLOW_WORKERS:-1}"
  # Redis: no persistence beyond RDB snapshots in STATE (the store is rebuilt by jobs/materialize.py).
  launch redis redis-server --bind "$HEAD_IP" --port "$MLINFRA_REDIS_PORT" --protected-mode yes \
    --dir "$STATE/redis" --appendonly no
  launch prometheus prometheus --config.file="$STATE/prometheus.yml" \
    --web.listen-address="127.0.0.1:$MLINFRA_PROMETHEUS_PORT" --storage.tsdb.path="$STATE/prometheus"
  status
}

stop() {
  for name in "${SERVICES[@]}"; do
    if running "$name"; then
      kill -TERM -- "-$(cat "$STATE/$name.pid")" 2>/dev/null || true
      for _ in $(seq 50); do running "$name" || break; sleep 0.2; done
      running "$name" && kill -KILL -- "-$(cat "$STATE/$name.pid")" 2>/dev/null || true
    fi
    rm -f "$STATE/$name.pid"
  done
}

status() {
  for name in "${SERVICES[@]}"; do
    if running "$name"; then echo "$name running (pid $(cat "$STATE/$name.pid"))"; else echo "$name stopped"; fi
  done
  env
}

env() {  # what jobs on this cluster read (conf/tracking/server.yaml, the online store)
  echo "export MLINFRA_MLFLOW_URI=http://$HEAD_IP:$MLINFRA_MLFLOW_PORT"
  echo "export MLINFRA_REDIS_URL=redis://$HEAD_IP:$MLINFRA_REDIS_PORT/0"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) env ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
