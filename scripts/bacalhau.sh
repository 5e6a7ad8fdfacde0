#!/usr/bin/env bash
# Bacalhau v0.3.23 (Go) for the network tests: builds the binary once from the
# Go module proxy and starts/stops a requester on loopback by hand. Part of the
# test bed: `scripts/testbed.sh up` (so `make test`) runs `build` in the
# background while the other services come up and exports the binary as
# COMPUTENODE_TEST_BACALHAU_BIN. The tests start requesters of their own
# (tests/network/requester.py); `serve`/`stop` below are for hand use.
#
#   scripts/bacalhau.sh build              build (if missing) and print the binary path
#   scripts/bacalhau.sh bin                print the binary path (exit 1 if not built)
#   scripts/bacalhau.sh path               print where the binary is (built or not)
#   scripts/bacalhau.sh serve [DIR]        start a requester with BACALHAU_PATH=DIR/path
#                                          (default $STATE/requester), wait for its
#                                          peer ID, print `export` lines
#   scripts/bacalhau.sh stop [DIR]         stop the requester started with DIR
#   scripts/bacalhau.sh peer [DIR]         print /ip4/127.0.0.1/tcp/P/p2p/<id>
#
# Settings (environment):
#   COMPUTENODE_BACALHAU_SWARM_PORT  libp2p port of the requester   (default 11235)
#   COMPUTENODE_BACALHAU_API_PORT    REST API port of the requester (default 11234)
#   COMPUTENODE_BACALHAU_IPFS_API    kubo API multiaddr for --ipfs-connect; empty:
#                                    --private-internal-ipfs (an in-process IPFS)
#
# The build: Go 1.20 is needed (v0.3.23 does not build with newer Go). It is a
# module on the proxy, golang.org/toolchain@v0.0.1-go1.20.14.linux-amd64,
# downloaded with the system `go mod download -json`, unzipped under the cache
# and used with GOTOOLCHAIN=local. Bacalhau is downloaded the same way and built
# in an unzipped copy with GOWORK=off GOFLAGS=-mod=mod, with the version set by
# ldflags (pkg/version.GITVERSION=v0.3.23; without it the binary says
# v0.0.0-xxxxxxx). About 3 minutes cold on 2 cores (empty Go caches, 2026-11-30); the binary is cached.
set -euo pipefail

CACHE="${COMPUTENODE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/computenode}"
STATE="${COMPUTENODE_TESTBED_DIR:-/var/tmp/computenode-testbed}"
VERSION="v0.3.23"
GO_TOOLCHAIN_MOD="golang.org/toolchain@v0.0.1-go1.20.14.linux-amd64"
BIN="$CACHE/bin/bacalhau-$VERSION"
SWARM_PORT="${COMPUTENODE_BACALHAU_SWARM_PORT:-11235}"
API_PORT="${COMPUTENODE_BACALHAU_API_PORT:-11234}"
IPFS_API="${COMPUTENODE_BACALHAU_IPFS_API:-}"
WAIT_BUILD=2400
WAIT_SERVE=60

log() { printf '[bacalhau %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[bacalhau] ERROR: %s\n' "$*" >&2; exit 1; }
now() { date +%s; }

bin_ok() { [ -x "$BIN" ] && "$BIN" version --client 2>/dev/null | grep -q "$VERSION"; }

# mod_unzip MODULE@VERSION DEST: download with the proxy and unzip to DEST
# (a writable copy: the module cache is read-only and loses exec bits).
mod_unzip() {
    local mod=$1 dest=$2 zip
    [ -d "$dest" ] && return 0
    zip="$(cd "$CACHE" && GOFLAGS=-mod=mod go mod download -json "$mod" | sed -n 's/^\t"Zip": "\(.*\)",$/\1/p')"
    [ -f "$zip" ] || die "go mod download $mod gave no Zip"
    rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
    (cd "$dest.tmp" && unzip -q "$zip")
    # The zip holds one top directory named MODULE@VERSION.
    mv "$dest.tmp/$mod" "$dest"
    rm -rf "$dest.tmp"
}

build() {
    bin_ok && { echo "$BIN"; return 0; }
    command -v go >/dev/null || die "a 'go' in PATH is needed to download the Go 1.20 toolchain module"
    command -v unzip >/dev/null || die "unzip is needed (apt-get install -y unzip)"
    mkdir -p "$CACHE/bin" "$CACHE/src"
    local logf="$CACHE/bacalhau-build.log"
    (
        flock -w "$WAIT_BUILD" 9 || die "build lock $CACHE/bacalhau-build.lock busy"
        bin_ok && exit 0
        local start; start=$(now)
        log "downloading $GO_TOOLCHAIN_MOD and bacalhau $VERSION (log $logf)"
        local gosrc="$CACHE/src/go1.20.14" src="$CACHE/src/bacalhau-$VERSION"
        mod_unzip "$GO_TOOLCHAIN_MOD" "$gosrc" >>"$logf" 2>&1
        chmod +x "$gosrc"/bin/* "$gosrc"/pkg/tool/*/* 2>/dev/null || true
        "$gosrc/bin/go" version | grep -q go1.20.14 || die "toolchain at $gosrc is not go1.20.14"
        mod_unzip "github.com/bacalhau-project/bacalhau@$VERSION" "$src" >>"$logf" 2>&1
        chmod -R u+w "$src"
        log "building bacalhau $VERSION with go1.20.14 (a few minutes cold; log $logf)"
        (cd "$src" && GOTOOLCHAIN=local GOROOT="$gosrc" GOWORK=off GOFLAGS=-mod=mod \
            "$gosrc/bin/go" build -trimpath \
            -ldflags "-X github.com/bacalhau-project/bacalhau/pkg/version.GITVERSION=$VERSION" \
            -o "$BIN.tmp" . ) </dev/null >>"$logf" 2>&1 \
            || { tail -n 30 "$logf" >&2; die "go build failed (log $logf)"; }
        mv "$BIN.tmp" "$BIN"
        log "built $BIN in $(( $(now) - start ))s"
    ) 9>"$CACHE/bacalhau-build.lock"
    bin_ok || die "$BIN does not report $VERSION"
    echo "$BIN"
}

dir_of() { echo "${1:-$STATE/requester}"; }

serve() {
    local dir; dir="$(dir_of "${1:-}")"
    bin_ok || die "not built: run scripts/bacalhau.sh build"
    mkdir -p "$dir/path"
    if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
        log "requester already running (pid $(cat "$dir/pid"))"
    else
        local ipfs=(--private-internal-ipfs)
        [ -n "$IPFS_API" ] && ipfs=(--ipfs-connect "$IPFS_API")
        : >"$dir/requester.log"
        BACALHAU_PATH="$dir/path" setsid "$BIN" serve --node-type requester --peer none \
            --host 127.0.0.1 --swarm-port "$SWARM_PORT" --api-port "$API_PORT" "${ipfs[@]}" \
            </dev/null >"$dir/requester.log" 2>&1 &
        echo $! >"$dir/pid"
        echo "$SWARM_PORT" >"$dir/swarm-port"
        echo "$API_PORT" >"$dir/api-port"
        log "requester starting (pid $!, swarm $SWARM_PORT, api $API_PORT, log $dir/requester.log)"
    fi
    local deadline=$(( $(now) + WAIT_SERVE ))
    until peer_id "$dir" >/dev/null 2>&1 \
          && curl -fsS "http://127.0.0.1:$(cat "$dir/api-port")/node_info" >/dev/null 2>&1; do
        kill -0 "$(cat "$dir/pid")" 2>/dev/null || { tail -n 30 "$dir/requester.log" >&2; die "requester exited"; }
        [ "$(now)" -lt "$deadline" ] || { tail -n 30 "$dir/requester.log" >&2; die "requester not ready after ${WAIT_SERVE}s"; }
        sleep 0.3
    done
    echo "export BACALHAU_PATH=$dir/path"
    echo "export COMPUTENODE_TEST_BACALHAU_BIN=$BIN"
    echo "export COMPUTENODE_TEST_REQUESTER=$(peer "$dir")"
    echo "export COMPUTENODE_TEST_REQUESTER_API=127.0.0.1:$(cat "$dir/api-port")"
}

# The log line: "started libp2p host [host-id:Qm…]" (zerolog console format).
peer_id() {
    local dir; dir="$(dir_of "${1:-}")"
    grep -o 'host-id:[A-Za-z0-9]*' "$dir/requester.log" 2>/dev/null | head -1 | cut -d: -f2 | grep .
}

peer() {
    local dir; dir="$(dir_of "${1:-}")"
    echo "/ip4/127.0.0.1/tcp/$(cat "$dir/swarm-port")/p2p/$(peer_id "$dir")"
}

stop() {
    local dir; dir="$(dir_of "${1:-}")"
    [ -f "$dir/pid" ] || { log "no requester pid in $dir"; return 0; }
    local pid; pid="$(cat "$dir/pid")"
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        local deadline=$(( $(now) + 10 ))
        while kill -0 "$pid" 2>/dev/null; do
            [ "$(now)" -lt "$deadline" ] || { kill -KILL "$pid" 2>/dev/null || true; break; }
            sleep 0.2
        done
        log "requester (pid $pid) stopped"
    fi
    rm -f "$dir/pid"
}

case "${1:-}" in
    build) build ;;
    bin) bin_ok && echo "$BIN" || { echo "not built: $BIN (scripts/bacalhau.sh build)" >&2; exit 1; } ;;
    path) echo "$BIN" ;;
    serve) serve "${2:-}" ;;
    stop) stop "${2:-}" ;;
    peer) peer "${2:-}" ;;
    *) sed -n '2,21p' "$0" >&2; exit 2 ;;
esac
