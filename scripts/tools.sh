#!/usr/bin/env bash
# Builds the real servers and tools the tests and the demo need, from the Go
# module proxy, into a cache outside the checkout so fresh clones reuse them.
#
#   scripts/tools.sh [all|promtool|prometheus|amtool|alertmanager|etcd|kube-apiserver|staticcheck|kustomize]...
#   scripts/tools.sh postgres_exporter  # optional, not in all: the peer bench/pgcompare compares against
#   scripts/tools.sh env      # print the environment variables that locate them
#
# WARDEN_TOOLS_DIR overrides the cache (default: ${XDG_CACHE_HOME:-$HOME/.cache}/warden/tools).
set -euo pipefail

PROMETHEUS_VERSION=v0.316.0
AMTOOL_VERSION=v0.35.0
ALERTMANAGER_VERSION=v0.31.1 # v0.35.0's cmd/alertmanager does not build from the module (missing embedded UI)
ETCD_VERSION=v3.7.3
KUBERNETES_VERSION=v1.37.2
KUBE_STAGING_VERSION=v0.37.2
STATICCHECK_VERSION=v0.8.2
KUSTOMIZE_VERSION=v5.8.2
POSTGRES_EXPORTER_VERSION=v0.17.1 # the newest the module proxy serves; only bench/pgcompare uses it

TOOLS_DIR=${WARDEN_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/warden/tools}
mkdir -p "$TOOLS_DIR"

log() { printf '[tools %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# with_progress runs a slow command, printing a line every 30 s so a cold
# build is visibly alive.
with_progress() {
	local what=$1; shift
	local start=$SECONDS last=$SECONDS
	"$@" &
	local pid=$!
	while kill -0 "$pid" 2>/dev/null; do
		sleep 2
		if (( SECONDS - last >= 30 )) && kill -0 "$pid" 2>/dev/null; then
			last=$SECONDS
			log "still building $what ($((SECONDS - start)) s)"
		fi
	done
	wait "$pid"
}

# go_install NAME VERSION PACKAGE@VERSION
go_install() {
	local name=$1 version=$2 pkg=$3
	local dir="$TOOLS_DIR/$name-$version"
	if [[ -x "$dir/$name" ]]; then return 0; fi
	log "building $name $version (first time only; cached in $dir)"
	mkdir -p "$dir.tmp"
	with_progress "$name" env GOBIN="$dir.tmp" GOFLAGS=-buildvcs=false go install "$pkg"
	rm -rf "$dir" && mv "$dir.tmp" "$dir"
	log "built $name"
}

build_etcd() {
	local dir="$TOOLS_DIR/etcd-$ETCD_VERSION"
	if [[ -x "$dir/etcd" ]]; then return 0; fi
	log "building etcd $ETCD_VERSION (about 3 min cold; cached in $dir)"
	local mod; mod=$(mktemp -d)
	(
		cd "$mod"
		go mod init warden.local/etcdtool >/dev/null 2>&1
		cat > tools.go <<GO
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
		go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null
		mkdir -p "$dir.tmp"
		with_progress etcd go build -o "$dir.tmp/etcd" go.etcd.io/etcd/server/v3
	)
	rm -rf "$mod" "$dir" && mv "$dir.tmp" "$dir"
	log "built etcd"
}

build_kube_apiserver() {
	local dir="$TOOLS_DIR/kube-apiserver-$KUBERNETES_VERSION"
	if [[ -x "$dir/kube-apiserver" ]]; then return 0; fi
	log "building kube-apiserver $KUBERNETES_VERSION (about 18 min cold on 2 cores; cached in $dir)"
	local mod; mod=$(mktemp -d)
	(
		cd "$mod"
		go mod init warden.local/apiservertool >/dev/null 2>&1
		cat > tools.go <<GO
//go:build tools

package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
GO
		# k8s.io/kubernetes replaces its staging modules with local paths;
		# point each at its published version instead.
		local kmod
		kmod=$(GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
		local replaces=()
		while read -r m; do
			replaces+=("-replace=$m=$m@$KUBE_STAGING_VERSION")
		done < <(grep -E '=> \./staging/' "$kmod" | awk '{print $1}' | grep -vE 'sample-cli-plugin|sample-controller' | sort -u)
		log "replacing ${#replaces[@]} staging modules with $KUBE_STAGING_VERSION"
		go mod edit "${replaces[@]}" "-require=k8s.io/kubernetes@$KUBERNETES_VERSION"
		GOFLAGS=-mod=mod go mod tidy >/dev/null 2>&1 || GOFLAGS=-mod=mod go get "k8s.io/kubernetes@$KUBERNETES_VERSION" >/dev/null
		mkdir -p "$dir.tmp"
		with_progress kube-apiserver go build -o "$dir.tmp/kube-apiserver" \
			-ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37" \
			k8s.io/kubernetes/cmd/kube-apiserver
	)
	rm -rf "$mod" "$dir" && mv "$dir.tmp" "$dir"
	log "built kube-apiserver"
}

# build_postgres_exporter builds inside the module's own source: `go install
# …@version` also asks the proxy for the module's version list (to look for
# a deprecation notice), which the proxy refuses for this module.
build_postgres_exporter() {
	local dir="$TOOLS_DIR/postgres_exporter-$POSTGRES_EXPORTER_VERSION"
	if [[ -x "$dir/postgres_exporter" ]]; then return 0; fi
	log "building postgres_exporter $POSTGRES_EXPORTER_VERSION (first time only; cached in $dir)"
	local src
	src=$(go mod download -json "github.com/prometheus-community/postgres_exporter@$POSTGRES_EXPORTER_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
	mkdir -p "$dir.tmp"
	(
		cd "$src"
		with_progress postgres_exporter env GOFLAGS=-buildvcs=false go build -o "$dir.tmp/postgres_exporter" \
			-ldflags "-X github.com/prometheus/common/version.Version=${POSTGRES_EXPORTER_VERSION#v}" ./cmd/postgres_exporter
	)
	rm -rf "$dir" && mv "$dir.tmp" "$dir"
	log "built postgres_exporter"
}

# kubebuilder_assets makes one folder holding etcd and kube-apiserver, as
# envtest's KUBEBUILDER_ASSETS expects.
kubebuilder_assets() {
	local dir="$TOOLS_DIR/kubebuilder-assets-$KUBERNETES_VERSION-$ETCD_VERSION"
	mkdir -p "$dir"
	ln -sf "$TOOLS_DIR/etcd-$ETCD_VERSION/etcd" "$dir/etcd"
	ln -sf "$TOOLS_DIR/kube-apiserver-$KUBERNETES_VERSION/kube-apiserver" "$dir/kube-apiserver"
	echo "$dir"
}

build() {
	case $1 in
	promtool) go_install promtool "$PROMETHEUS_VERSION" "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION" ;;
	prometheus) go_install prometheus "$PROMETHEUS_VERSION" "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_VERSION" ;;
	amtool) go_install amtool "$AMTOOL_VERSION" "github.com/prometheus/alertmanager/cmd/amtool@$AMTOOL_VERSION" ;;
	alertmanager) go_install alertmanager "$ALERTMANAGER_VERSION" "github.com/prometheus/alertmanager/cmd/alertmanager@$ALERTMANAGER_VERSION" ;;
	staticcheck) go_install staticcheck "$STATICCHECK_VERSION" "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION" ;;
	kustomize) go_install kustomize "$KUSTOMIZE_VERSION" "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION" ;;
	postgres_exporter) build_postgres_exporter ;;
	etcd) build_etcd ;;
	kube-apiserver) build_kube_apiserver ;;
	*) echo "unknown tool: $1" >&2; exit 2 ;;
	esac
}

print_env() {
	echo "export PROMTOOL=$TOOLS_DIR/promtool-$PROMETHEUS_VERSION/promtool"
	echo "export PROMETHEUS=$TOOLS_DIR/prometheus-$PROMETHEUS_VERSION/prometheus"
	echo "export AMTOOL=$TOOLS_DIR/amtool-$AMTOOL_VERSION/amtool"
	echo "export ALERTMANAGER=$TOOLS_DIR/alertmanager-$ALERTMANAGER_VERSION/alertmanager"
	echo "export STATICCHECK=$TOOLS_DIR/staticcheck-$STATICCHECK_VERSION/staticcheck"
	echo "export KUSTOMIZE=$TOOLS_DIR/kustomize-$KUSTOMIZE_VERSION/kustomize"
	echo "export KUBEBUILDER_ASSETS=$(kubebuilder_assets)"
	# Optional (scripts/tools.sh postgres_exporter): exported only once built.
	local pe="$TOOLS_DIR/postgres_exporter-$POSTGRES_EXPORTER_VERSION/postgres_exporter"
	if [[ -x $pe ]]; then echo "export POSTGRES_EXPORTER=$pe"; fi
}

if [[ $# -eq 0 || $1 == all ]]; then
	set -- promtool prometheus amtool alertmanager staticcheck kustomize etcd kube-apiserver
fi
if [[ $1 == env ]]; then print_env; exit 0; fi
for t in "$@"; do build "$t"; done
