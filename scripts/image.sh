#!/usr/bin/env bash
# The container image, built here with Debian's podman: no Docker engine and no registry needed.
#
#   scripts/image.sh build   install what is missing, make the base image if it is not cached, build the image from
#                            the Dockerfile; prints the image reference as the last line of stdout
#   scripts/image.sh env     print `export CONTAINERS_CONF=...` and `export LITEMAAS_IMAGE=...` for running it
#
# The base image (Debian bookworm minbase + Python 3.11 from Debian's packages, made with debootstrap against the
# apt mirror this machine already uses) is cached as a tarball outside the repo, under
#   ${LITEMAAS_CACHE_DIR:-$HOME/.cache/litemaas-cache-operator}/image-base/<key>.tar
# where <key> hashes what it contains (suite, mirror, packages, this recipe): a change makes a new one.
#
# podman runs with runc and cgroupfs (crun refuses a mixed cgroup v1/v2 hierarchy), explicit ulimits (podman's
# defaults are refused in some sandboxes) and the `file` events logger, set in a containers.conf this script writes
# and names with CONTAINERS_CONF. The host's CA bundle is mounted read-only into the build (never copied), so pip
# trusts the network path to PyPI.
#
# Environment:
#   LITEMAAS_IMAGE         the image reference to build (default localhost/litemaas-cache-operator:<version>)
#   LITEMAAS_PYTHON_IMAGE  a Python base image to build FROM instead of the debootstrapped one (e.g. python:3.11-slim,
#                          when a registry is reachable)
#   LITEMAAS_CACHE_DIR     where the base tarball and containers.conf live
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache_dir="${LITEMAAS_CACHE_DIR:-$HOME/.cache/litemaas-cache-operator}"
conf="$cache_dir/podman/containers.conf"
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo_root/pyproject.toml" | head -n 1)"
image="${LITEMAAS_IMAGE:-localhost/litemaas-cache-operator:$version}"
host_ca=/etc/ssl/certs/ca-certificates.crt
suite=bookworm
base_packages=(python3 python3-venv ca-certificates)
# podman's network stack, signature policy and uid maps are recommends of podman: named, as recommends are not installed
host_packages=(podman buildah runc debootstrap netavark aardvark-dns golang-github-containers-common uidmap)

say() { echo "image.sh: [${SECONDS}s] $*" >&2; }
die() { say "$*"; exit 1; }

apt_install() {
    [[ "$(id -u)" == 0 ]] || die "need root to install $*; install it yourself or run as root"
    if [[ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -n 1)" ]]; then
        apt-get update -qq
    fi
    say "installing $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=600 \
        "$@" >/dev/null
}

install_missing() {
    local missing=() pkg
    for pkg in "${host_packages[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
    if ((${#missing[@]})); then apt_install "${missing[@]}"; fi
}

write_conf() {
    mkdir -p "$(dirname "$conf")"
    local nofile
    nofile="$(ulimit -Hn)"
    [[ "$nofile" == unlimited ]] && nofile=1048576
    local tmp="$conf.tmp.$$"
    cat >"$tmp" <<EOF
# Written by scripts/image.sh; used through CONTAINERS_CONF.
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"

[network]
network_backend = "netavark"
EOF
    mv "$tmp" "$conf"
}

# The Debian mirror this machine's apt uses (deb822 .sources first, then one-line lists), for the suite's main archive.
apt_mirror() {
    local uri
    uri="$(awk -v suite="$suite" '
        /^URIs:/ { uris = $2 }
        /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) found = 1 }
        /^$/ { if (found && uris != "") { print uris; exit } found = 0; uris = "" }
        END { if (found && uris != "") print uris }
    ' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)"
    if [[ -z "$uri" ]]; then
        uri="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
            awk -v suite="$suite" '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { if ($(i + 1) == suite) { print $i; exit } } }')"
    fi
    [[ -n "$uri" ]] || die "found no apt source for $suite in /etc/apt/sources.list{,.d/}"
    echo "$uri"
}

# Debootstrap a minimal bookworm with Debian's Python 3.11, import it into podman; cache the tarball by content.
base_image() {
    local mirror key tarball ref
    mirror="$(apt_mirror)"
    key="$(printf '%s\n' "$suite" "$mirror" "${base_packages[*]}" "$(declare -f make_base_tarball)" | sha256sum | cut -c1-12)"
    tarball="$cache_dir/image-base/$suite-python3-$key.tar"
    ref="localhost/litemaas-python-base:$suite-$key"
    if podman image exists "$ref"; then
        echo "$ref"
        return
    fi
    [[ -f "$tarball" ]] || make_base_tarball "$mirror" "$tarball"
    say "importing $tarball as $ref"
    podman import --quiet \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        "$tarball" "$ref" >/dev/null
    echo "$ref"
}

make_base_tarball() {
    local mirror="$1" tarball="$2"
    mkdir -p "$(dirname "$tarball")"
    root="$(mktemp -d "$(dirname "$tarball")/rootfs.XXXXXX")"
    trap 'rm -rf "$root"' EXIT
    say "debootstrap --variant=minbase $suite from $mirror (about a minute)"
    debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$root.log" 2>&1 ||
        { tail -n 20 "$root.log" >&2; die "debootstrap failed (log: $root.log)"; }
    rm -f "$root.log"
    # Documentation, manual pages and translations: nothing in a container reads them (copyright files stay).
    cat >"$root/etc/dpkg/dpkg.cfg.d/excludes" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
    find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
    find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
    rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/*
    say "installing ${base_packages[*]} in the base"
    chroot "$root" /usr/bin/env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${base_packages[@]}" >/dev/null
    chroot "$root" ln -sf python3 /usr/bin/python # what python-is-python3 does, without its dependencies
    chroot "$root" apt-get clean
    # podman provides resolv.conf and hosts at run time; the host's must not stay in the image
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/* "$root"/tmp/* \
        "$root"/etc/resolv.conf "$root"/etc/hostname
    tar --numeric-owner --xattrs -C "$root" -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$root"
    find "$(dirname "$tarball")" -maxdepth 1 -name '*.tar' -not -name "$(basename "$tarball")" -delete # older recipes
}

cmd_build() {
    install_missing
    write_conf
    export CONTAINERS_CONF="$conf"
    mkdir -p "$cache_dir"
    exec 9>"$cache_dir/image.lock" # one build at a time (parallel test sessions share podman's storage)
    flock -w 1800 9 || die "timed out waiting for $cache_dir/image.lock"
    local python_image="${LITEMAAS_PYTHON_IMAGE:-}"
    [[ -n "$python_image" ]] || python_image="$(base_image)"
    say "podman build $image FROM $python_image"
    podman build --quiet \
        --network host \
        --volume "$host_ca:$host_ca:ro" \
        --build-arg "PYTHON_IMAGE=$python_image" \
        --tag "$image" \
        "$repo_root" >/dev/null
    say "built $image"
    echo "$image"
}

cmd_env() {
    printf 'export CONTAINERS_CONF=%q\n' "$conf"
    printf 'export LITEMAAS_IMAGE=%q\n' "$image"
}

case "${1:-}" in
build) cmd_build ;;
env) cmd_env ;;
*)
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
