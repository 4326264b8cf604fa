#!/usr/bin/env bash
# `make demo`: the whole product on this machine, from an empty state.
#   1. PostgreSQL and Redis (already started by `make demo`), schema migration, a synthetic LiteLLM dataset;
#   2. one analytics query cold (from LiteLLM's table), again from Redis, and the cache's stats;
#   3. the HTTP API (litemaas-cache api) answering LiteMaaS's POST /api/v1/admin/usage/analytics for a JWT the demo
#      mints with its JWT_SECRET, as LiteMaaS would (admin role);
#   4. the local kube-apiserver, the CRDs and samples, the operator; ends with the real `kubectl get cwp,cinv`.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

export REDIS_KEY_PREFIX="${REDIS_KEY_PREFIX:-litemaas-demo:}"
export JWT_SECRET="${JWT_SECRET:-demo-jwt-secret-for-this-machine-only-0123456789}"
pids=()
trap 'for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done' EXIT
today=$(date -u +%F)
start=$(date -u -d '-29 days' +%F)
previous_start=$(date -u -d '-59 days' +%F)  # the trends compare with the 30 days before

step "Schema and synthetic LiteLLM usage (60 days, 50 users, 5 models)"
litemaas-cache migrate
litemaas-cache seed --days 60 --users 50 --models 5 --seed 1

step "Analytics $start..$today, cold: purge it (and the period its trends compare with) from both tiers first"
litemaas-cache invalidate --start "$previous_start" --end "$today"
litemaas-cache analytics --start "$start" --end "$today"

step "The same query again, as JSON: a Redis hit (the tier and time go to stderr)"
litemaas-cache analytics --start "$start" --end "$today" --json | sed -n 1,12p; echo "  ..."
litemaas-cache stats

step "The HTTP API: POST /api/v1/admin/usage/analytics with a LiteMaaS JWT (role admin) signed with JWT_SECRET"
api_port=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
api_log=$(mktemp -t litemaas-api.XXXXXX.log)
litemaas-cache api --host 127.0.0.1 --port "$api_port" >"$api_log" 2>&1 &
pids+=($!)
token=$(python -c '
import os, time, jwt
now = int(time.time())
claims = {"userId": "00000000-0000-4000-8000-00000000d3e0", "username": "demo-admin", "email": "admin@example.com",
          "roles": ["admin"], "iat": now, "exp": now + 900}
print(jwt.encode(claims, os.environ["JWT_SECRET"], algorithm="HS256"))')
for _ in $(seq 100); do curl -fsS -o /dev/null "http://127.0.0.1:$api_port/healthz" 2>/dev/null && break; sleep 0.1; done
echo "curl -X POST http://127.0.0.1:$api_port/api/v1/admin/usage/analytics -H 'Authorization: Bearer <JWT>' \\"
echo "     --compressed -d '{\"startDate\": \"$start\", \"endDate\": \"$today\"}'"
curl -sS --compressed -D "$api_log.headers" -o "$api_log.json" -X POST "http://127.0.0.1:$api_port/api/v1/admin/usage/analytics" \
  -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
  -d "{\"startDate\": \"$start\", \"endDate\": \"$today\"}"
grep -iE '^(HTTP|content-encoding|x-cache-tier|x-ratelimit-remaining)' "$api_log.headers" | tr -d '\r'
python - "$api_log.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
excerpt = {k: doc[k] for k in ("period", "totalUsers", "activeUsers", "totalRequests", "totalTokens", "successRate")}
excerpt["totalCost"] = {"total": doc["totalCost"]["total"], "byProvider": doc["totalCost"]["byProvider"]}
excerpt["topMetrics"] = {"topModel": doc["topMetrics"]["topModel"]}
excerpt["trends"] = {"requestsTrend": doc["trends"]["requestsTrend"]}
print(json.dumps(excerpt, indent=2))
print(f"  ... and {len(doc['dailyUsage'])} dailyUsage days, {len(doc['topUsers'])} topUsers, {len(doc['topModels'])} topModels")
PY
kill "${pids[0]}" && wait "${pids[0]}" 2>/dev/null || true
rm -f "$api_log" "$api_log.headers" "$api_log.json"

step "Local Kubernetes control plane (built from Go modules on first use; later starts take seconds)"
kubeconfig=$(bash scripts/cluster.sh up | tail -n 1)
eval "$(bash scripts/cluster.sh env)"
export KUBECONFIG="$kubeconfig"
kubectl apply -f crds/
kubectl wait --for=condition=Established crd/cachewarmpolicies.cache.litemaas.io crd/cacheinvalidations.cache.litemaas.io
kubectl create namespace litemaas-cache --dry-run=client -o yaml | kubectl apply -f -
# A previous demo's samples still carry the operator's finalizers and no operator runs now to release them: clear
# them, so the old samples are really gone before the new ones are applied (else the apply lands on objects being
# deleted, and the operator started below deletes them).
for sample in $(kubectl get cwp,cinv -n litemaas-cache -o name); do
  kubectl patch "$sample" -n litemaas-cache --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null
done
kubectl delete -f manifests/samples/ --ignore-not-found --wait=true >/dev/null
kubectl apply -f manifests/samples/

step "The operator (litemaas-cache operator), until the samples are reconciled"
log=$(mktemp -t litemaas-operator.XXXXXX.log)
litemaas-cache operator --standalone --namespace litemaas-cache --liveness http://127.0.0.1:18080/healthz >"$log" 2>&1 &
operator_pid=$!
pids+=($operator_pid)
deadline=$((SECONDS + 120))
until [ "$(kubectl get cwp admin-dashboard -n litemaas-cache -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ] &&
      [ "$(kubectl get cinv -n litemaas-cache -o jsonpath='{.items[*].status.phase}')" = Succeeded ]; do
  if [ $SECONDS -ge $deadline ]; then
    echo "gave up after 120s waiting for the samples to be reconciled; operator log:" >&2; tail -n 40 "$log" >&2; exit 1
  fi
  if ! kill -0 $operator_pid 2>/dev/null; then echo "the operator exited; its log:" >&2; cat "$log" >&2; exit 1; fi
  sleep 1
done
for _ in $(seq 50); do curl -fsS -o /dev/null http://127.0.0.1:18080/healthz 2>/dev/null && break; sleep 0.2; done
echo "liveness probe: $(curl -sS -w ' (HTTP %{http_code})' http://127.0.0.1:18080/healthz)"

step "kubectl get cwp,cinv -n litemaas-cache"
kubectl get cwp,cinv -n litemaas-cache
