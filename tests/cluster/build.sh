#!/usr/bin/env bash
# Build the local test control plane (kube-apiserver + embedded etcd), kubectl
# and helm from the Go module pinned in this folder (go.mod / go.sum).
#
# Binaries go OUTSIDE the repo, into
#   ${LITEMAAS_CACHE_DIR:-$HOME/.cache/litemaas-cache-operator}/bin/<tag>/
# where <tag> encodes the pinned versions plus a hash of this folder's inputs:
# a pin change rebuilds, an unchanged pin reuses. The Go build cache and module
# cache stay in their default places so rebuilds are quick.
#
# Prints the bin dir as the last line of stdout. Options:
#   --print-dir   only print the bin dir (no build)
#   --force       rebuild even if the bin dir is complete
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

if ! command -v go >/dev/null 2>&1; then
    if [[ -x /usr/local/go/bin/go ]]; then
        export PATH="/usr/local/go/bin:$PATH"
    else
        echo "build.sh: the Go toolchain (go >= 1.26) is not on PATH nor in /usr/local/go/bin" >&2
        exit 1
    fi
fi

# Never let go.mod's "go" line download another toolchain, never edit go.mod.
export GOTOOLCHAIN=local
export GOFLAGS="-mod=readonly"
export CGO_ENABLED=0

mod_version() { # module path -> version pinned in go.mod
    awk -v m="$1" '$1 == m && $2 ~ /^v/ { print $2; exit }' go.mod
}
k8s_version="$(mod_version k8s.io/kubernetes)"
etcd_version="$(mod_version go.etcd.io/etcd/server/v3)"
helm_version="$(mod_version helm.sh/helm/v3)"
go_version="$(go env GOVERSION)"
for v in k8s_version etcd_version helm_version; do
    if [[ -z "${!v}" ]]; then
        echo "build.sh: could not read ${v%_version}'s version from go.mod" >&2
        exit 1
    fi
done

inputs_hash="$(cat go.mod go.sum main.go build.sh | sha256sum | cut -c1-12)"
tag="k8s-${k8s_version}_etcd-${etcd_version}_helm-${helm_version}_${go_version}_${inputs_hash}"
cache_dir="${LITEMAAS_CACHE_DIR:-$HOME/.cache/litemaas-cache-operator}"
bin_dir="$cache_dir/bin/$tag"

if [[ "${1:-}" == "--print-dir" ]]; then
    echo "$bin_dir"
    exit 0
fi

if [[ "${1:-}" != "--force" && -f "$bin_dir/.complete" ]]; then
    echo "$bin_dir"
    exit 0
fi

mkdir -p "$cache_dir/bin"
tmp_dir="$(mktemp -d "$cache_dir/bin/.build.XXXXXX")"
trap 'rm -rf "$tmp_dir"' EXIT

k8s_minor="$(echo "$k8s_version" | cut -d. -f2)"
client_go_version="$(go list -m -f '{{.Version}}' k8s.io/client-go)"
client_go_minor="$(echo "$client_go_version" | cut -d. -f2)"
build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
ldflags=(
    -s -w
    # kube-apiserver and kubectl report the pinned release (not v0.0.0-master)
    -X "k8s.io/component-base/version.gitVersion=${k8s_version}"
    -X "k8s.io/component-base/version.gitMajor=1"
    -X "k8s.io/component-base/version.gitMinor=${k8s_minor}"
    -X "k8s.io/component-base/version.gitTreeState=clean"
    -X "k8s.io/component-base/version.buildDate=${build_date}"
    # the same -X flags helm's own Makefile sets
    -X "helm.sh/helm/v3/internal/version.version=${helm_version}"
    -X "helm.sh/helm/v3/internal/version.gitTreeState=clean"
    -X "helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1"
    -X "helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=${client_go_minor}"
    -X "helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1"
    -X "helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${client_go_minor}"
)

echo "build.sh: building Kubernetes ${k8s_version} control plane (etcd ${etcd_version}), kubectl and helm ${helm_version} into $bin_dir" >&2
start=$(date +%s)
go build -trimpath -ldflags "${ldflags[*]}" -o "$tmp_dir/litemaas-control-plane" .
go build -trimpath -ldflags "${ldflags[*]}" -o "$tmp_dir/kubectl" k8s.io/kubernetes/cmd/kubectl
go build -trimpath -ldflags "${ldflags[*]}" -o "$tmp_dir/helm" helm.sh/helm/v3/cmd/helm
cat >"$tmp_dir/VERSIONS" <<EOF
kubernetes=${k8s_version}
etcd=${etcd_version}
helm=${helm_version}
go=${go_version}
inputs=${inputs_hash}
EOF
chmod 755 "$tmp_dir"
touch "$tmp_dir/.complete"

rm -rf "$bin_dir"
mv "$tmp_dir" "$bin_dir"
trap - EXIT
echo "build.sh: built in $(( $(date +%s) - start ))s" >&2
# Binaries of earlier pins are ~240 MB each and nothing uses them any more.
for old in "$cache_dir"/bin/k8s-*; do
    if [ -d "$old" ] && [ "$old" != "$bin_dir" ]; then
        rm -rf "$old" && echo "build.sh: removed the binaries of an earlier pin: $old" >&2
    fi
done
echo "$bin_dir"
