#!/usr/bin/env bash
# A real, local Kubernetes control plane for tests and the demo: the pinned
# kube-apiserver with an embedded etcd (see tests/cluster/), no Docker needed.
#
#   scripts/cluster.sh up      build if needed, start (idempotent); prints the
#                              admin kubeconfig path as the last line of stdout
#   scripts/cluster.sh down    stop it and remove all of its state
#   scripts/cluster.sh env     print `export KUBECONFIG=...` / `export PATH=...`
#   scripts/cluster.sh status  say whether it runs and is ready (exit 0 if so)
#
# There is no kube-controller-manager, scheduler or kubelet: objects are stored
# and validated (CRDs, CEL, RBAC, admission, TokenRequest) but nothing
# reconciles them (no pods run, deleted namespaces stay Terminating, no
# ServiceAccount or token is created for you).
#
# Environment:
#   LITEMAAS_CLUSTER_DIR      state folder (etcd data, certs, pid, log, kubeconfig)
#                             default ${TMPDIR:-/tmp}/litemaas-cache-cluster
#   LITEMAAS_CLUSTER_PORT     apiserver port on 127.0.0.1 (default: first free from 6443)
#   LITEMAAS_CLUSTER_TIMEOUT  seconds to wait for /readyz (default 180)
#   LITEMAAS_CACHE_DIR        where tests/cluster/build.sh keeps binaries
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_sh="$repo_root/tests/cluster/build.sh"
state_dir="${LITEMAAS_CLUSTER_DIR:-${TMPDIR:-/tmp}/litemaas-cache-cluster}"
timeout_s="${LITEMAAS_CLUSTER_TIMEOUT:-180}"
kubeconfig="$state_dir/kubeconfig"
pid_file="$state_dir/apiserver.pid"
log_file="$state_dir/apiserver.log"
state_file="$state_dir/state.env"
pki="$state_dir/pki"

say() { echo "cluster.sh: $*" >&2; }

log_tail() { # the log's errors first (grpc reconnect noise drowns them), then its tail
    say "errors in $log_file:"
    grep -E '^[EF][0-9]{4} |command failed|litemaas-control-plane:|"level":"(error|fatal|panic)"' "$log_file" 2>/dev/null |
        grep -v 'embedded etcd ready' | tail -n 15 | cut -c1-600 >&2 || true
    say "last lines of $log_file:"
    grep -v 'grpc: addrConn.createTransport' "$log_file" 2>/dev/null | tail -n 20 | cut -c1-600 >&2 || true
}
die() { say "$*"; exit 1; }

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}

lock() { # serialise up/down against each other (e.g. parallel pytest workers)
    mkdir -p "$state_dir"
    exec 9>"$state_dir/.lock"
    flock -w 600 9 || die "timed out after 600s waiting for the lock on $state_dir/.lock"
}

load_state() { # sets port and bin_dir from a previous up, if any
    port="" bin_dir=""
    if [[ -f "$state_file" ]]; then
        # shellcheck disable=SC1090
        source "$state_file"
    fi
}

running_pid() { # prints the pid if our control plane is running
    [[ -f "$pid_file" ]] || return 1
    local pid
    pid="$(cat "$pid_file" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # guard against a recycled pid
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'litemaas-control-plane' || return 1
    echo "$pid"
}

is_ready() {
    [[ -n "${bin_dir:-}" && -x "$bin_dir/kubectl" && -f "$kubeconfig" ]] || return 1
    [[ "$("$bin_dir/kubectl" --kubeconfig "$kubeconfig" --request-timeout=5s get --raw /readyz 2>/dev/null)" == "ok" ]]
}

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

pick_port() {
    if [[ -n "${LITEMAAS_CLUSTER_PORT:-}" ]]; then
        port_in_use "$LITEMAAS_CLUSTER_PORT" && die "LITEMAAS_CLUSTER_PORT=$LITEMAAS_CLUSTER_PORT: something already listens on 127.0.0.1:$LITEMAAS_CLUSTER_PORT"
        echo "$LITEMAAS_CLUSTER_PORT"
        return
    fi
    local p
    for p in $(seq 6443 6543); do
        if ! port_in_use "$p"; then
            echo "$p"
            return
        fi
    done
    die "no free port in 127.0.0.1:6443-6543; set LITEMAAS_CLUSTER_PORT"
}

make_pki() {
    [[ -f "$pki/.complete" ]] && return
    command -v openssl >/dev/null || die "openssl is needed to make the cluster's certificates"
    rm -rf "$pki"
    mkdir -p "$pki"
    (
        cd "$pki"
        umask 077
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -sha256 \
            -keyout ca.key -out ca.crt -subj "/CN=litemaas-test-ca" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
        # serving certificate for the apiserver
        openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr \
            -subj "/CN=kube-apiserver" 2>/dev/null
        printf '%s\n' \
            "basicConstraints=CA:FALSE" \
            "keyUsage=critical,digitalSignature,keyEncipherment" \
            "extendedKeyUsage=serverAuth" \
            "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local" \
            >apiserver.ext
        openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
            -days 3650 -sha256 -extfile apiserver.ext -out apiserver.crt 2>/dev/null
        # admin identity: a client certificate in group system:masters
        openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr \
            -subj "/O=system:masters/CN=litemaas-admin" 2>/dev/null
        printf '%s\n' "basicConstraints=CA:FALSE" \
            "keyUsage=critical,digitalSignature,keyEncipherment" \
            "extendedKeyUsage=clientAuth" >admin.ext
        openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
            -days 3650 -sha256 -extfile admin.ext -out admin.crt 2>/dev/null
        # service-account token signing key pair
        openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key 2>/dev/null
        openssl pkey -in sa.key -pubout -out sa.pub 2>/dev/null
        rm -f ./*.csr ./*.ext ca.srl
    )
    touch "$pki/.complete"
}

write_kubeconfig() {
    local tmp="$kubeconfig.tmp"
    cat >"$tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: litemaas-test
  cluster:
    server: https://127.0.0.1:$port
    certificate-authority-data: $(base64 -w0 <"$pki/ca.crt")
users:
- name: litemaas-admin
  user:
    client-certificate-data: $(base64 -w0 <"$pki/admin.crt")
    client-key-data: $(base64 -w0 <"$pki/admin.key")
contexts:
- name: litemaas-test
  context:
    cluster: litemaas-test
    user: litemaas-admin
    namespace: default
current-context: litemaas-test
EOF
    chmod 600 "$tmp"
    mv "$tmp" "$kubeconfig"
}

wait_ready() {
    local pid="$1" deadline=$((SECONDS + timeout_s))
    until is_ready; do
        if ! kill -0 "$pid" 2>/dev/null; then
            say "the control plane (pid $pid) exited before /readyz said ok"
            log_tail
            rm -f "$pid_file"
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            say "gave up after ${timeout_s}s waiting for https://127.0.0.1:$port/readyz to say ok (pid $pid still runs; 'scripts/cluster.sh down' stops it)"
            log_tail
            "$bin_dir/kubectl" --kubeconfig "$kubeconfig" --request-timeout=5s get --raw '/readyz?verbose' >&2 2>&1 || true
            exit 1
        fi
        sleep 0.5
    done
}

cmd_up() {
    lock
    load_state
    local pid
    if pid="$(running_pid)"; then
        if ! is_ready; then
            say "control plane (pid $pid) is running; waiting for /readyz"
            wait_ready "$pid"
        fi
        echo "$kubeconfig"
        return
    fi

    bin_dir="$(bash "$build_sh" | tail -n 1)"
    [[ -x "$bin_dir/litemaas-control-plane" ]] || die "build did not produce $bin_dir/litemaas-control-plane"

    # keep the port of an earlier run of this state dir (its kubeconfig names it)
    if [[ -z "${port:-}" ]] || port_in_use "$port"; then
        port="$(pick_port)"
    fi
    make_pki
    # Not running (never started, or killed with its session): start from an
    # empty etcd so every start is the same; certs and port are kept so an
    # existing kubeconfig path stays valid.
    rm -rf "$state_dir/etcd" "$pid_file"
    mkdir -p "$state_dir/etcd"
    chmod 700 "$state_dir/etcd"
    printf 'port=%q\nbin_dir=%q\n' "$port" "$bin_dir" >"$state_file"
    write_kubeconfig

    # shellcheck disable=SC2054  # the commas belong to flag values
    local args=(
        --embedded-etcd-dir="$state_dir/etcd"
        --embedded-etcd-unsafe-no-fsync
        --bind-address=127.0.0.1
        --advertise-address=127.0.0.1
        --secure-port="$port"
        --tls-cert-file="$pki/apiserver.crt"
        --tls-private-key-file="$pki/apiserver.key"
        --client-ca-file="$pki/ca.crt"
        --authorization-mode=Node,RBAC
        --anonymous-auth=false
        --service-account-issuer=https://kubernetes.default.svc.cluster.local
        --service-account-key-file="$pki/sa.pub"
        --service-account-signing-key-file="$pki/sa.key"
        --service-cluster-ip-range=10.96.0.0/16
        # the lease reconciler refuses a loopback advertise address, and there are
        # no endpoints to publish for a loopback-only apiserver anyway
        --endpoint-reconciler-type=none
        # No controller-manager creates each namespace's "default" ServiceAccount,
        # so the ServiceAccount admission plugin would refuse every pod.
        --disable-admission-plugins=ServiceAccount
        --profiling=false
        --cert-dir="$state_dir/apiserver-certs"
    )
    say "starting Kubernetes control plane on https://127.0.0.1:$port (state in $state_dir)"
    # fd 9 (the lock) must not leak into the long-running child
    setsid "$bin_dir/litemaas-control-plane" "${args[@]}" </dev/null >"$log_file" 2>&1 9>&- &
    pid=$!
    echo "$pid" >"$pid_file"
    local start=$SECONDS
    wait_ready "$pid"
    say "ready after $((SECONDS - start))s (pid $pid); 'scripts/cluster.sh down' stops it"
    echo "$kubeconfig"
}

cmd_down() {
    lock
    local pid
    if pid="$(running_pid)"; then
        say "stopping control plane (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + 60))
        while kill -0 "$pid" 2>/dev/null; do
            if ((SECONDS >= deadline)); then
                say "pid $pid still running 60s after SIGTERM; sending SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
                break
            fi
            sleep 0.2
        done
    fi
    rm -rf "$state_dir"
    say "removed $state_dir"
}

cmd_env() {
    load_state
    if [[ -z "${bin_dir:-}" ]]; then
        bin_dir="$(bash "$build_sh" --print-dir)"
    fi
    printf 'export KUBECONFIG=%q\n' "$kubeconfig"
    # shellcheck disable=SC2016  # $PATH is for the shell that evals this
    printf 'export PATH=%q:"$PATH"\n' "$bin_dir"
}

cmd_status() {
    load_state
    local pid
    if ! pid="$(running_pid)"; then
        echo "stopped (state dir $state_dir)"
        return 1
    fi
    if is_ready; then
        echo "running and ready: pid $pid, https://127.0.0.1:$port, KUBECONFIG=$kubeconfig"
        return 0
    fi
    echo "running but not ready: pid $pid, https://127.0.0.1:$port, log $log_file"
    return 1
}

case "${1:-}" in
up) cmd_up ;;
down) cmd_down ;;
env) cmd_env ;;
status) cmd_status ;;
*) usage ;;
esac
