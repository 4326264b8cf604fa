#!/usr/bin/env bash
# Make sure PostgreSQL and Redis run on loopback for tests and the demo.
# Reuses servers that already answer; otherwise installs Debian's packages and starts them.
# Usage: scripts/services.sh up | down | env
set -euo pipefail

PG_PORT="${LITEMAAS_PG_PORT:-5432}"
PG_USER="${LITEMAAS_PG_USER:-litemaas}"
PG_PASSWORD="${LITEMAAS_PG_PASSWORD:-litemaas}"
PG_DB="${LITEMAAS_PG_DB:-litemaas}"
REDIS_PORT="${LITEMAAS_REDIS_PORT:-6379}"
STATE_DIR="${LITEMAAS_SERVICES_DIR:-${TMPDIR:-/tmp}/litemaas-cache-services}"

log() { echo "[services] $*" >&2; }

apt_install() {
  if [ "$(id -u)" != 0 ]; then
    log "need root to install $*; install it yourself or run as root"; exit 1
  fi
  if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -1)" ]; then
    apt-get update -qq
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

pg_ready() { pg_isready -h 127.0.0.1 -p "$PG_PORT" -q 2>/dev/null; }
redis_ready() { [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; }

wait_for() { # wait_for <what> <seconds> <command...>
  local what=$1 secs=$2; shift 2
  for _ in $(seq $((secs * 10))); do "$@" && return 0; sleep 0.1; done
  log "gave up waiting ${secs}s for $what"; return 1
}

postgres_up() {
  command -v pg_ctlcluster >/dev/null && ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || apt_install postgresql
  if ! pg_ready; then
    local ver
    ver=$(ls /usr/lib/postgresql | sort -V | tail -1)
    pg_lsclusters -h | awk '{print $1" "$2}' | grep -q "^$ver main$" || pg_createcluster "$ver" main -p "$PG_PORT" >/dev/null
    pg_ctlcluster "$ver" main start
    wait_for "PostgreSQL on 127.0.0.1:$PG_PORT" 30 pg_ready
  fi
  # Role and database for the project (idempotent). The role may create databases: tests make their own.
  if [ "$(id -u)" = 0 ]; then
    su postgres -c "psql -p $PG_PORT -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='$PG_USER'\"" | grep -q 1 ||
      su postgres -c "psql -p $PG_PORT -qc \"CREATE ROLE $PG_USER LOGIN CREATEDB PASSWORD '$PG_PASSWORD'\""
    su postgres -c "psql -p $PG_PORT -qtAc \"SELECT 1 FROM pg_database WHERE datname='$PG_DB'\"" | grep -q 1 ||
      su postgres -c "createdb -p $PG_PORT -O $PG_USER $PG_DB"
    # pg_stat_statements counts the statements and rows each bench peer costs PostgreSQL (bench/); loading it needs
    # one restart, on the first start only.
    if ! su postgres -c "psql -p $PG_PORT -qtAc 'SHOW shared_preload_libraries'" | grep -q pg_stat_statements; then
      su postgres -c "psql -p $PG_PORT -qc \"ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'\""
      pg_ctlcluster "$(ls /usr/lib/postgresql | sort -V | tail -1)" main restart
      wait_for "PostgreSQL on 127.0.0.1:$PG_PORT" 30 pg_ready
    fi
    su postgres -c "psql -p $PG_PORT -d $PG_DB -qc 'CREATE EXTENSION IF NOT EXISTS pg_stat_statements'" 2>/dev/null
  fi
  log "PostgreSQL ready on 127.0.0.1:$PG_PORT"
}

redis_up() {
  command -v redis-server >/dev/null || apt_install redis-server redis-tools
  if ! redis_ready; then
    mkdir -p "$STATE_DIR/redis-$REDIS_PORT"
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes \
      --dir "$STATE_DIR/redis-$REDIS_PORT" --save "" --appendonly no \
      --maxmemory-policy volatile-lru \
      --pidfile "$STATE_DIR/redis-$REDIS_PORT.pid" --logfile "$STATE_DIR/redis-$REDIS_PORT.log"
    wait_for "Redis on 127.0.0.1:$REDIS_PORT" 20 redis_ready
  fi
  log "Redis ready on 127.0.0.1:$REDIS_PORT"
}

case "${1:-up}" in
  up) postgres_up; redis_up ;;
  down)
    [ -f "$STATE_DIR/redis-$REDIS_PORT.pid" ] && kill "$(cat "$STATE_DIR/redis-$REDIS_PORT.pid")" 2>/dev/null || true
    log "stopped the Redis this script started (PostgreSQL is left to the system)" ;;
  env)
    echo "export DATABASE_URL=postgresql://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB"
    echo "export REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0" ;;
  *) echo "usage: $0 up|down|env" >&2; exit 2 ;;
esac
