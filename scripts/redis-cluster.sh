#!/usr/bin/env bash
# A local 3-primary Redis Cluster on loopback, for tests and the bench (no replicas, no persistence).
#
#   scripts/redis-cluster.sh up     start the nodes and create the cluster (idempotent); prints the URL last
#   scripts/redis-cluster.sh down   stop the nodes this script started and remove their state
#   scripts/redis-cluster.sh url    print the URL a cluster client starts from (redis://127.0.0.1:<first port>)
#   scripts/redis-cluster.sh status exit 0 when every node reports cluster_state:ok
#
# Environment:
#   LITEMAAS_REDIS_CLUSTER_PORT     first port (default 7101; the nodes use PORT, PORT+1, PORT+2)
#   LITEMAAS_REDIS_CLUSTER_DIR      state folder (default ${TMPDIR:-/tmp}/litemaas-redis-cluster-<first port>)
#   LITEMAAS_REDIS_CLUSTER_TIMEOUT  seconds to wait for each step (default 30)
set -euo pipefail

first_port="${LITEMAAS_REDIS_CLUSTER_PORT:-7101}"
ports=("$first_port" "$((first_port + 1))" "$((first_port + 2))")
state_dir="${LITEMAAS_REDIS_CLUSTER_DIR:-${TMPDIR:-/tmp}/litemaas-redis-cluster-$first_port}"
timeout_s="${LITEMAAS_REDIS_CLUSTER_TIMEOUT:-30}"

say() { echo "redis-cluster.sh: $*" >&2; }
die() { say "$*"; exit 1; }

cli() { local port=$1; shift; redis-cli -h 127.0.0.1 -p "$port" "$@"; }
node_up() { [ "$(cli "$1" ping 2>/dev/null)" = PONG ]; }
node_ok() { cli "$1" cluster info 2>/dev/null | tr -d '\r' | grep -qx 'cluster_state:ok'; }
node_known() { cli "$1" cluster info 2>/dev/null | tr -d '\r' | sed -n 's/^cluster_known_nodes://p'; }
all_ok() { local p; for p in "${ports[@]}"; do node_ok "$p" || return 1; done; }
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # wait_for <what> <command...>: poll every 0.1 s for timeout_s seconds
    local what=$1; shift
    local deadline=$((SECONDS + timeout_s))
    while [ "$SECONDS" -lt "$deadline" ]; do "$@" && return 0; sleep 0.1; done
    say "gave up after ${timeout_s}s waiting for $what"
    for p in "${ports[@]}"; do
        [ -f "$state_dir/$p/redis.log" ] && { say "last lines of $state_dir/$p/redis.log:"; tail -n 5 "$state_dir/$p/redis.log" >&2; }
    done
    return 1
}

start_node() {
    local port=$1 dir="$state_dir/$1"
    if node_up "$port"; then
        cli "$port" info server 2>/dev/null | tr -d '\r' | grep -q '^redis_mode:cluster' ||
            die "port $port answers as a Redis that is not in cluster mode; set LITEMAAS_REDIS_CLUSTER_PORT"
        return 0
    fi
    port_busy "$port" && die "port $port is taken by something that is not Redis; set LITEMAAS_REDIS_CLUSTER_PORT"
    port_busy "$((port + 10000))" && die "cluster bus port $((port + 10000)) is taken; set LITEMAAS_REDIS_CLUSTER_PORT"
    mkdir -p "$dir"
    redis-server --bind 127.0.0.1 --port "$port" --daemonize yes --dir "$dir" \
        --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
        --save "" --appendonly no --protected-mode no \
        --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" ||
        die "redis-server failed to start on port $port (see $dir/redis.log)"
    wait_for "redis node on 127.0.0.1:$port to answer PING" node_up "$port"
}

up() {
    command -v redis-server >/dev/null || die "redis-server is not installed (apt-get install redis-server)"
    command -v redis-cli >/dev/null || die "redis-cli is not installed (apt-get install redis-tools)"
    if all_ok; then
        say "cluster already up on ports ${ports[*]}"
        url
        return 0
    fi
    mkdir -p "$state_dir"
    local p
    for p in "${ports[@]}"; do start_node "$p"; done
    # A node that already knows all three peers is part of our cluster and only needs time to converge.
    # Anything else (fresh nodes, a half-created cluster) is reset and the cluster created from scratch.
    local formed=1
    for p in "${ports[@]}"; do [ "$(node_known "$p")" = 3 ] || formed=0; done
    if [ "$formed" = 0 ]; then
        for p in "${ports[@]}"; do
            cli "$p" flushall >/dev/null 2>&1 || true
            cli "$p" cluster reset hard >/dev/null || die "CLUSTER RESET failed on port $p"
        done
        local addrs=()
        for p in "${ports[@]}"; do addrs+=("127.0.0.1:$p"); done
        redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes >"$state_dir/create.log" 2>&1 ||
            { cat "$state_dir/create.log" >&2; die "redis-cli --cluster create failed"; }
    fi
    wait_for "cluster_state:ok on ports ${ports[*]}" all_ok
    say "cluster ready on ports ${ports[*]} (state in $state_dir)"
    url
}

down() {
    local p pid
    for p in "${ports[@]}"; do
        if [ -f "$state_dir/$p/redis.pid" ]; then
            pid=$(cat "$state_dir/$p/redis.pid")
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
    done
    rm -rf "$state_dir"
    say "stopped the cluster nodes this script started on ports ${ports[*]}"
}

url() { echo "redis://127.0.0.1:$first_port"; }

case "${1:-up}" in
    up) up ;;
    down) down ;;
    url) url ;;
    status) all_ok ;;
    *) echo "usage: $0 up|down|url|status" >&2; exit 2 ;;
esac
