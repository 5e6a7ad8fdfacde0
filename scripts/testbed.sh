#!/usr/bin/env bash
# The test bed: installs (when missing) and starts, on loopback only, every real
# service the tests talk to: the Docker engine, a local image registry, kubo
# (IPFS) and the WASI C toolchain with the test modules; it also builds the Go
# Bacalhau v0.3.23 binary the network tests run requesters with (the tests start
# their own requesters: tests/network/). Idempotent: what is installed is not
# installed again and what answers is reused.
#
#   scripts/testbed.sh up [SERVICE...] [--best-effort]
#                                 install + start (all services by default),
#                                 then print the path of the env file
#   scripts/testbed.sh env        print `export VAR=...` lines for the tests
#   scripts/testbed.sh status     say what answers (exit 1 if something does not)
#   scripts/testbed.sh down [SERVICE...]
#                                 stop what this script started
#   scripts/testbed.sh native-deps [PYTHON]
#                                 the system packages pip needs to build the
#                                 native parts of `.[network]` (gcc, libgmp-dev,
#                                 Python headers); run by `make deps`
#
# SERVICE is one of: docker registry ipfs wasm bacalhau. `up registry` also
# brings up docker (it pushes the test image). The two Go builds (kubo, and the
# bacalhau binary with scripts/bacalhau.sh build: about 3 min cold on 2 cores, beside kubo's)
# start first, in the background, while the rest comes up; `up` returns only
# once both are done. With --best-effort a service that cannot be had is
# reported and skipped, and `up` exits 0 (used by `make run`).
#
# Everything the script starts keeps its pid, log and data in the state dir
# ${COMPUTENODE_TESTBED_DIR:-/var/tmp/computenode-testbed}. Progress goes to
# stderr; stdout of `up` is only the env file path, so
#   set -a; . "$(scripts/testbed.sh up)"; set +a
# works. Each flag is explained where it is used below.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# ---------------------------------------------------------------- settings
STATE="${COMPUTENODE_TESTBED_DIR:-/var/tmp/computenode-testbed}"
CACHE="${COMPUTENODE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/computenode}"

DEFAULT_DOCKER_HOST="unix:///var/run/docker.sock"
DOCKER_HOST_URL="${COMPUTENODE_TEST_DOCKER_HOST:-$DEFAULT_DOCKER_HOST}"
REGISTRY="${COMPUTENODE_TEST_REGISTRY:-127.0.0.1:5000}"
IPFS_API="${COMPUTENODE_TEST_IPFS_API:-/ip4/127.0.0.1/tcp/5101}"
IPFS_GATEWAY="${COMPUTENODE_TEST_IPFS_GATEWAY:-http://127.0.0.1:5180}"
KUBO_VERSION="0.28.0"
IPFS_BIN="${COMPUTENODE_TEST_IPFS_BIN:-$CACHE/bin/ipfs}"
IPFS_REPO="$STATE/ipfs/repo"
WASM_DIR="${COMPUTENODE_TEST_WASM_DIR:-$ROOT/tests/wasm/build}"
BACALHAU_SH="$ROOT/scripts/bacalhau.sh"
BACALHAU_VERSION="v0.3.23"
BACALHAU_BIN="${COMPUTENODE_TEST_BACALHAU_BIN:-$("$BACALHAU_SH" path)}"
BUSYBOX_IMAGE="computenode-test/busybox:latest"
REGISTRY_IMAGE="$REGISTRY/busybox:1"

APT_DOCKER=(docker.io busybox-static)
APT_REGISTRY=(docker-registry)
APT_WASM=(clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32)
APT_TOOLS=(curl sqlite3 chromium systemd)  # chromium: the dashboard test; systemd: systemd-analyze verify
APT_BACALHAU=(unzip)      # scripts/bacalhau.sh unzips the Go toolchain and bacalhau modules
APT_NATIVE=(gcc libgmp-dev)  # pip builds fastecdsa (a libp2p dependency) from source

# Bounded waits (seconds).
WAIT_APT=1200       # someone else's apt-get/dpkg run
WAIT_KUBO_BUILD=2400 # someone else's `go install` of kubo
WAIT_BACALHAU_BUILD=2400 # the bacalhau build (scripts/bacalhau.sh waits on its own build lock as long)
WAIT_DOCKERD=900    # dockerd removes every stale network sandbox left by an unclean stop before it answers (~70 ms each)
WAIT_REGISTRY=30
WAIT_IPFS=60

export DEBIAN_FRONTEND=noninteractive

# ---------------------------------------------------------------- helpers
log() { printf '[testbed %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[testbed] ERROR: %s\n' "$*" >&2; exit 1; }

# Print the last lines of a log file to stderr (for error messages).
tail_log() { [ -f "$1" ] && { echo "--- last lines of $1:" >&2; tail -n 20 "$1" >&2; echo "---" >&2; }; return 0; }

now() { date +%s; }

# wait_until SECONDS DESCRIPTION CMD...: poll CMD every 0.2 s.
wait_until() {
    local limit=$1 what=$2; shift 2
    local deadline=$(( $(now) + limit ))
    until "$@" >/dev/null 2>&1; do
        if [ "$(now)" -ge "$deadline" ]; then
            return 1
        fi
        sleep 0.2
    done
    log "$what: ready"
}

pid_alive() { # pidfile
    [ -f "$1" ] || return 1
    local pid; pid="$(cat "$1" 2>/dev/null || true)"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# stop_pidfile PIDFILE NAME TIMEOUT: TERM, then KILL after TIMEOUT seconds.
stop_pidfile() {
    local pidfile=$1 name=$2 limit=$3
    if ! pid_alive "$pidfile"; then
        rm -f "$pidfile"
        log "$name: not running (not started by this script)"
        return 0
    fi
    local pid; pid="$(cat "$pidfile")"
    log "$name: stopping pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$(( $(now) + limit ))
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$(now)" -ge "$deadline" ]; then
            log "$name: still running after ${limit}s, sending KILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
            break
        fi
        sleep 0.2
    done
    rm -f "$pidfile"
}

# host:port and path checks: everything stays on loopback.
is_loopback_hostport() { [[ "$1" =~ ^127\.[0-9]+\.[0-9]+\.[0-9]+:[0-9]+$ ]]; }

# Check every address once, before anything starts: loopback only.
# Sets IPFS_API_URL (http://127.0.0.1:5101) and IPFS_GATEWAY_MADDR.
validate_settings() {
    is_loopback_hostport "$REGISTRY" \
        || die "COMPUTENODE_TEST_REGISTRY=$REGISTRY: must be 127.x.x.x:PORT (loopback only)"
    [[ "$IPFS_API" =~ ^/ip4/(127\.[0-9]+\.[0-9]+\.[0-9]+)/tcp/([0-9]+)$ ]] \
        || die "COMPUTENODE_TEST_IPFS_API=$IPFS_API: must be /ip4/127.x.x.x/tcp/PORT (loopback only)"
    IPFS_API_URL="http://${BASH_REMATCH[1]}:${BASH_REMATCH[2]}"
    [[ "$IPFS_GATEWAY" =~ ^http://(127\.[0-9]+\.[0-9]+\.[0-9]+):([0-9]+)$ ]] \
        || die "COMPUTENODE_TEST_IPFS_GATEWAY=$IPFS_GATEWAY: must be http://127.x.x.x:PORT (loopback only)"
    IPFS_GATEWAY_MADDR="/ip4/${BASH_REMATCH[1]}/tcp/${BASH_REMATCH[2]}"
    case "$DOCKER_HOST_URL" in
        unix://*) ;;
        tcp://127.*) ;;
        *) die "COMPUTENODE_TEST_DOCKER_HOST=$DOCKER_HOST_URL: must be unix://... or tcp://127.x.x.x:PORT" ;;
    esac
}

docker_cli() { docker -H "$DOCKER_HOST_URL" "$@"; }

# ---------------------------------------------------------------- apt
pkg_installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]; }

apt_busy() { pgrep -x apt-get >/dev/null 2>&1 || pgrep -x apt >/dev/null 2>&1 || pgrep -x dpkg >/dev/null 2>&1; }

# apt_ensure PKG...: install the packages that are missing (one apt-get run).
apt_ensure() {
    local missing=() p
    for p in "$@"; do pkg_installed "$p" || missing+=("$p"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    if apt_busy; then
        log "apt: another apt-get/dpkg is running; waiting for it (up to ${WAIT_APT}s)"
        local deadline=$(( $(now) + WAIT_APT ))
        while apt_busy; do
            [ "$(now)" -lt "$deadline" ] || die "apt: another apt-get/dpkg still runs after ${WAIT_APT}s (see pgrep -a apt-get)"
            sleep 2
        done
        missing=()
        for p in "$@"; do pkg_installed "$p" || missing+=("$p"); done
        [ ${#missing[@]} -eq 0 ] && return 0
    fi
    [ "$(id -u)" -eq 0 ] || die "apt: missing packages ${missing[*]} and not root: run as root or install them"
    mkdir -p "$STATE/logs"
    local aptlog="$STATE/logs/apt.log"
    log "apt: installing ${missing[*]} (log $aptlog)"
    {
        apt-get -o DPkg::Lock::Timeout=600 update &&
        apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${missing[@]}"
    } </dev/null >>"$aptlog" 2>&1 || { tail_log "$aptlog"; die "apt: installing ${missing[*]} failed"; }
    for p in "${missing[@]}"; do pkg_installed "$p" || die "apt: $p still not installed (see $aptlog)"; done
}

# ---------------------------------------------------------------- docker
docker_ping() {
    local sock
    case "$DOCKER_HOST_URL" in
        unix://*) sock="${DOCKER_HOST_URL#unix://}"
                  [ -S "$sock" ] && curl -fsS --max-time 2 --unix-socket "$sock" http://docker/_ping 2>/dev/null | grep -qx OK ;;
        tcp://*)  curl -fsS --max-time 2 "http://${DOCKER_HOST_URL#tcp://}/_ping" 2>/dev/null | grep -qx OK ;;
        *) return 1 ;;
    esac
}

docker_up() {
    [ "${DOCKER_READY:-0}" = 1 ] && return 0
    apt_ensure "${APT_DOCKER[@]}"
    command -v docker >/dev/null || die "docker: no docker CLI found (apt-get install docker.io)"
    mkdir -p "$STATE/docker"
    local pidfile="$STATE/docker/dockerd.pid" logf="$STATE/docker/dockerd.log"
    if docker_ping && docker_cli info >/dev/null 2>&1; then
        log "docker: engine answers at $DOCKER_HOST_URL (reused)"
        DOCKER_READY=1
        return 0
    fi
    [ "$DOCKER_HOST_URL" = "$DEFAULT_DOCKER_HOST" ] \
        || die "docker: nothing answers at COMPUTENODE_TEST_DOCKER_HOST=$DOCKER_HOST_URL and this script only starts the engine at $DEFAULT_DOCKER_HOST"
    local pf
    for pf in "$pidfile" /var/run/docker.pid; do
        if pid_alive "$pf"; then
            # A dockerd (ours, or one started by hand) runs but does not answer yet.
            log "docker: dockerd pid $(cat "$pf") exists; waiting for it to answer"
            wait_dockerd "$(cat "$pf")" "$logf" && docker_cli info >/dev/null 2>&1 && return 0
            tail_log "$logf"
            die "docker: dockerd pid $(cat "$pf") does not answer at $DOCKER_HOST_URL after ${WAIT_DOCKERD}s"
        fi
    done
    [ "$(id -u)" -eq 0 ] || die "docker: the engine must be started as root"
    log "docker: starting dockerd (log $logf)"
    # --bridge=none/--iptables=false: no docker0, no private-range addresses;
    # containers get only lo unless they ask for the host network.
    setsid dockerd --host "$DEFAULT_DOCKER_HOST" --bridge=none --iptables=false \
        --pidfile "$pidfile" </dev/null >>"$logf" 2>&1 8>&- 9>&- &
    if ! wait_dockerd "$!" "$logf"; then
        tail_log "$logf"
        die "docker: dockerd did not answer at $DOCKER_HOST_URL within ${WAIT_DOCKERD}s"
    fi
    wait_until "$WAIT_DOCKERD" "docker info" docker_cli info || die "docker: 'docker info' fails"
    DOCKER_READY=1
}

# wait_dockerd PID LOGFILE: wait for the engine to answer while its process
# lives. After an unclean stop (a killed session), dockerd first removes every
# stale network sandbox, one per container it ever ran, before it opens its
# socket: that can take minutes, so say how far it got instead of giving up.
wait_dockerd() {
    local pid=$1 logf=$2 start; start=$(now)
    local deadline=$(( start + WAIT_DOCKERD )) next=$(( start + 30 ))
    local base; base=$(grep -c 'Removing stale sandbox' "$logf" 2>/dev/null || true)
    until docker_ping >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "docker: dockerd exited before it answered"
            return 1
        fi
        [ "$(now)" -ge "$deadline" ] && return 1
        if [ "$(now)" -ge "$next" ]; then
            local n; n=$(grep -c 'Removing stale sandbox' "$logf" 2>/dev/null || true)
            log "docker: dockerd not answering yet after $(( $(now) - start ))s; stale sandboxes removed so far: $(( ${n:-0} - ${base:-0} ))"
            next=$(( next + 30 ))
        fi
        sleep 0.2
    done
    log "docker: ready"
}

# Build computenode-test/busybox:latest from Debian's static busybox.
busybox_image_up() {
    [ "${IMAGE_READY:-0}" = 1 ] && return 0
    if docker_cli image inspect "$BUSYBOX_IMAGE" >/dev/null 2>&1; then
        log "image: $BUSYBOX_IMAGE present"
        IMAGE_READY=1
        return 0
    fi
    local bb; bb="$(command -v busybox || true)"
    [ -n "$bb" ] || die "image: no busybox binary (apt-get install busybox-static)"
    bb="$(readlink -f "$bb")"
    if ldd "$bb" >/dev/null 2>&1; then
        die "image: $bb is dynamically linked; install busybox-static"
    fi
    log "image: building $BUSYBOX_IMAGE from $bb"
    local tmp; tmp="$(mktemp -d "$STATE/busybox-rootfs.XXXXXX")"
    mkdir -p "$tmp/rootfs/bin" "$tmp/rootfs/usr/bin" "$tmp/rootfs/etc" "$tmp/rootfs/tmp" \
             "$tmp/rootfs/root" "$tmp/rootfs/inputs" "$tmp/rootfs/outputs"
    chmod 1777 "$tmp/rootfs/tmp"
    cp "$bb" "$tmp/rootfs/bin/busybox"
    # Every applet, so that tests can use any of them (sh echo cat ls wc
    # sha256sum sleep date head tr env pwd id ... awk printf test expr kill).
    local applet
    for applet in $("$bb" --list); do
        [ "$applet" = busybox ] || ln -sf busybox "$tmp/rootfs/bin/$applet"
    done
    ln -sf ../../bin/busybox "$tmp/rootfs/usr/bin/env"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$tmp/rootfs/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$tmp/rootfs/etc/group"
    tar --numeric-owner --owner=0 --group=0 -C "$tmp/rootfs" -c . \
        | docker_cli import \
            --change 'ENV PATH=/bin:/usr/bin' \
            --change 'CMD ["/bin/sh"]' \
            --change 'LABEL org.computenode.test=busybox' \
            - "$BUSYBOX_IMAGE" >/dev/null
    rm -rf "$tmp"
    mkdir -p "$STATE/registry"
    touch "$STATE/registry/.push-needed"   # the registry copy is now stale
    IMAGE_READY=1
}

# ---------------------------------------------------------------- registry
registry_ping() { curl -fsS --max-time 2 -o /dev/null "http://$REGISTRY/v2/" 2>/dev/null; }

registry_up() {
    apt_ensure "${APT_REGISTRY[@]}"
    local dir="$STATE/registry"
    local pidfile="$dir/registry.pid" logf="$dir/registry.log" conf="$dir/config.yml"
    mkdir -p "$dir/data"
    if registry_ping; then
        log "registry: answers at http://$REGISTRY/v2/ (reused)"
    else
        if pid_alive "$pidfile"; then
            log "registry: pid $(cat "$pidfile") runs but does not answer; restarting it"
            stop_pidfile "$pidfile" registry 10
        fi
        cat >"$conf" <<EOF
# Written by scripts/testbed.sh: a loopback-only registry for the tests.
version: 0.1
log:
  level: info
  fields:
    service: computenode-testbed-registry
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: $REGISTRY
  headers:
    X-Content-Type-Options: [nosniff]
EOF
        log "registry: starting docker-registry on $REGISTRY (log $logf)"
        setsid docker-registry serve "$conf" </dev/null >>"$logf" 2>&1 8>&- 9>&- &
        echo $! >"$pidfile"
        if ! wait_until "$WAIT_REGISTRY" registry registry_ping; then
            tail_log "$logf"
            die "registry: nothing answers at http://$REGISTRY/v2/ within ${WAIT_REGISTRY}s"
        fi
    fi
}

# Push the busybox image as $REGISTRY/busybox:1 (when the registry lacks it or
# the image was just rebuilt).
registry_image_up() {
    docker_cli tag "$BUSYBOX_IMAGE" "$REGISTRY_IMAGE"
    local code
    code="$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' \
        -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
        "http://$REGISTRY/v2/busybox/manifests/1" || true)"
    if [ "$code" = 200 ] && [ ! -e "$STATE/registry/.push-needed" ]; then
        log "registry: $REGISTRY_IMAGE present"
        return 0
    fi
    log "registry: pushing $REGISTRY_IMAGE"
    local logf="$STATE/registry/push.log"
    docker_cli push "$REGISTRY_IMAGE" </dev/null >"$logf" 2>&1 || { tail_log "$logf"; die "registry: docker push $REGISTRY_IMAGE failed"; }
    rm -f "$STATE/registry/.push-needed"
}

# ---------------------------------------------------------------- kubo
kubo_ok() { [ -x "$IPFS_BIN" ] && "$IPFS_BIN" version 2>/dev/null | grep -qx "ipfs version $KUBO_VERSION"; }

# The kubo build runs in the background (kubo_build_start) while the other
# services come up; kubo_build_wait waits for it. The body runs in a subshell
# of its own, where `set -e` and `die` hold.
kubo_build_body() {
    # Someone (a developer, by hand) may be building it right now.
    if pgrep -f "go install github.com/ipfs/kubo" >/dev/null 2>&1; then
        log "kubo: a 'go install github.com/ipfs/kubo' is running; waiting for it (up to ${WAIT_KUBO_BUILD}s)"
        local deadline=$(( $(now) + WAIT_KUBO_BUILD ))
        while pgrep -f "go install github.com/ipfs/kubo" >/dev/null 2>&1; do
            [ "$(now)" -lt "$deadline" ] || die "kubo: the other build still runs after ${WAIT_KUBO_BUILD}s"
            sleep 5
        done
        kubo_ok && return 0
    fi
    mkdir -p "$CACHE/bin"
    local logf="$CACHE/kubo-build.log"
    (
        # One build at a time on this machine (two `make test` at once).
        flock -w "$WAIT_KUBO_BUILD" 9 || { echo "kubo: build lock $CACHE/kubo-build.lock busy" >&2; exit 1; }
        kubo_ok && exit 0
        log "kubo: building kubo v$KUBO_VERSION with the Go module proxy (several minutes the first time; log $logf)"
        local start; start="$(now)"
        echo "== $(date -u +%FT%TZ) build start ($(go version))" >>"$logf"
        # `go install pkg@version` needs the proxy's version list for kubo
        # (deprecation check); when the proxy refuses it (seen: 403), build
        # the same version from its module zip, with kubo's own go.mod/go.sum.
        if ! GOBIN="$CACHE/bin" GOFLAGS=-buildvcs=false go install "github.com/ipfs/kubo/cmd/ipfs@v$KUBO_VERSION" </dev/null >>"$logf" 2>&1; then
            echo "== go install failed; building from the module zip instead" >>"$logf"
            local moddir src="$CACHE/src/kubo-v$KUBO_VERSION"
            moddir="$(go mod download -json "github.com/ipfs/kubo@v$KUBO_VERSION" 2>>"$logf" \
                | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
            [ -n "$moddir" ] && [ -d "$moddir" ]
            rm -rf "$src"; mkdir -p "$CACHE/src"
            cp -r "$moddir" "$src"; chmod -R u+w "$src"
            (cd "$src" && GOFLAGS="-mod=readonly -buildvcs=false" go build -trimpath -o "$CACHE/bin/ipfs.tmp" ./cmd/ipfs) </dev/null >>"$logf" 2>&1
            mv -f "$CACHE/bin/ipfs.tmp" "$CACHE/bin/ipfs"
        fi
        echo "== $(date -u +%FT%TZ) build done in $(( $(now) - start ))s" >>"$logf"
        log "kubo: built in $(( $(now) - start ))s"
    ) 9>"$CACHE/kubo-build.lock"
}

KUBO_BUILD_PID=""; KUBO_BUILD_RC=0; KUBO_BUILD_ERR=""
kubo_build_start() {
    kubo_ok && return 0
    [ -z "$KUBO_BUILD_PID" ] || return 0
    if [ "$IPFS_BIN" != "$CACHE/bin/ipfs" ]; then
        KUBO_BUILD_ERR="kubo: COMPUTENODE_TEST_IPFS_BIN=$IPFS_BIN is not kubo $KUBO_VERSION (unset it to let this script build one into $CACHE/bin)"
        return 0
    fi
    if ! command -v go >/dev/null; then
        KUBO_BUILD_ERR="kubo: Go is needed to build kubo $KUBO_VERSION (no 'go' in PATH)"
        return 0
    fi
    log "kubo: not built yet; building it in the background"
    ( kubo_build_body ) </dev/null 8>&- &
    KUBO_BUILD_PID=$!
}

# Wait in the shell that started the build (a subshell cannot wait for it).
kubo_build_wait() {
    [ -n "$KUBO_BUILD_PID" ] || return 0
    log "kubo: waiting for the build (pid $KUBO_BUILD_PID)"
    wait "$KUBO_BUILD_PID" || KUBO_BUILD_RC=$?
    KUBO_BUILD_PID=""
}

# kubo is there, or why not (after kubo_build_wait).
kubo_build() {
    kubo_ok && return 0
    [ -z "$KUBO_BUILD_ERR" ] || die "$KUBO_BUILD_ERR"
    local logf="$CACHE/kubo-build.log"
    [ "$KUBO_BUILD_RC" = 0 ] || { tail_log "$logf"; die "kubo: building v$KUBO_VERSION failed"; }
    kubo_ok || { tail_log "$logf"; die "kubo: $IPFS_BIN does not say 'ipfs version $KUBO_VERSION'"; }
}

ipfs_ping() { curl -fsS --max-time 2 -X POST -o /dev/null "$IPFS_API_URL/api/v0/version" 2>/dev/null; }

ipfs_configure() {
    local ipfs=("$IPFS_BIN")
    export IPFS_PATH="$IPFS_REPO"
    if [ ! -f "$IPFS_REPO/config" ]; then
        log "ipfs: init repo $IPFS_REPO (profile test)"
        mkdir -p "$IPFS_REPO"
        "${ipfs[@]}" init --profile test </dev/null >>"$STATE/ipfs/init.log" 2>&1 \
            || { tail_log "$STATE/ipfs/init.log"; die "ipfs: 'ipfs init --profile test' failed"; }
    fi
    # Loopback only, no peers, no discovery: applied at every start.
    "${ipfs[@]}" config Addresses.API "$IPFS_API"
    "${ipfs[@]}" config Addresses.Gateway "$IPFS_GATEWAY_MADDR"
    "${ipfs[@]}" config --json Addresses.Swarm '["/ip4/127.0.0.1/tcp/0"]'
    "${ipfs[@]}" config --json Addresses.Announce '[]'
    "${ipfs[@]}" config --json Addresses.NoAnnounce '[]'
    "${ipfs[@]}" config --json Bootstrap '[]'
    "${ipfs[@]}" config --json Discovery.MDNS.Enabled false
    "${ipfs[@]}" config --json Gateway.NoFetch true
    "${ipfs[@]}" config --json AutoNAT '{"ServiceMode": "disabled"}'
    "${ipfs[@]}" config Routing.Type none
}

ipfs_up() {
    kubo_build
    local dir="$STATE/ipfs"
    local pidfile="$dir/daemon.pid" logf="$dir/daemon.log"
    mkdir -p "$dir"
    if ipfs_ping; then
        log "ipfs: kubo API answers at $IPFS_API (reused)"
        return 0
    fi
    if pid_alive "$pidfile"; then
        # Starting, stuck, or configured for another address: give it a moment.
        log "ipfs: daemon pid $(cat "$pidfile") runs but does not answer at $IPFS_API; waiting"
        if wait_until 15 ipfs ipfs_ping; then return 0; fi
        stop_pidfile "$pidfile" ipfs 10
    fi
    ipfs_configure
    log "ipfs: starting kubo daemon --offline, API $IPFS_API, gateway $IPFS_GATEWAY (log $logf)"
    IPFS_PATH="$IPFS_REPO" setsid "$IPFS_BIN" daemon --offline </dev/null >>"$logf" 2>&1 8>&- 9>&- &
    echo $! >"$pidfile"
    if ! wait_until "$WAIT_IPFS" ipfs ipfs_ping; then
        tail_log "$logf"
        die "ipfs: kubo API did not answer at $IPFS_API within ${WAIT_IPFS}s"
    fi
}

# ---------------------------------------------------------------- wasm
wasm_up() {
    apt_ensure "${APT_WASM[@]}"
    local build="$ROOT/tests/wasm/build.sh"
    if [ -x "$build" ]; then
        local logf="$STATE/logs/wasm-build.log"
        mkdir -p "$STATE/logs"
        log "wasm: running tests/wasm/build.sh (log $logf)"
        (cd "$ROOT" && "$build") </dev/null >"$logf" 2>&1 || { tail_log "$logf"; die "wasm: tests/wasm/build.sh failed"; }
    elif [ -e "$build" ]; then
        log "wasm: tests/wasm/build.sh is not executable; not run"
    else
        log "wasm: no tests/wasm/build.sh yet; toolchain only"
    fi
}

# ---------------------------------------------------------------- bacalhau
# The Go Bacalhau v0.3.23 binary (scripts/bacalhau.sh build). Only built here:
# each network test starts requesters of its own with it (tests/network/).
bacalhau_ok() { [ -x "$BACALHAU_BIN" ] && "$BACALHAU_BIN" version --client 2>/dev/null | grep -q "$BACALHAU_VERSION"; }

BACALHAU_BUILD_PID=""; BACALHAU_BUILD_RC=0; BACALHAU_BUILD_ERR=""
BACALHAU_BUILD_LOG="$STATE/logs/bacalhau-build.log"
bacalhau_build_start() {
    bacalhau_ok && return 0
    [ -z "$BACALHAU_BUILD_PID" ] || return 0
    if [ "$BACALHAU_BIN" != "$("$BACALHAU_SH" path)" ]; then
        BACALHAU_BUILD_ERR="bacalhau: COMPUTENODE_TEST_BACALHAU_BIN=$BACALHAU_BIN is not bacalhau $BACALHAU_VERSION (unset it to let this script build one)"
        return 0
    fi
    local rc=0
    ( apt_ensure "${APT_BACALHAU[@]}" ) || rc=$?
    if [ "$rc" != 0 ]; then
        BACALHAU_BUILD_ERR="bacalhau: cannot install ${APT_BACALHAU[*]}"
        return 0
    fi
    if ! command -v go >/dev/null; then
        BACALHAU_BUILD_ERR="bacalhau: a 'go' in PATH is needed to download the Go 1.20 toolchain module"
        return 0
    fi
    mkdir -p "$STATE/logs"
    log "bacalhau: building $BACALHAU_VERSION in the background (a few minutes cold; log $BACALHAU_BUILD_LOG)"
    "$BACALHAU_SH" build </dev/null >"$BACALHAU_BUILD_LOG" 2>&1 8>&- &
    BACALHAU_BUILD_PID=$!
}

bacalhau_build_wait() {
    [ -n "$BACALHAU_BUILD_PID" ] || return 0
    log "bacalhau: waiting for the build (pid $BACALHAU_BUILD_PID)"
    local start; start=$(now)
    wait "$BACALHAU_BUILD_PID" || BACALHAU_BUILD_RC=$?
    BACALHAU_BUILD_PID=""
    log "bacalhau: build finished (waited $(( $(now) - start ))s)"
}

bacalhau_up() {
    if bacalhau_ok; then
        log "bacalhau: $BACALHAU_BIN ($BACALHAU_VERSION)"
        return 0
    fi
    [ -z "$BACALHAU_BUILD_ERR" ] || die "$BACALHAU_BUILD_ERR"
    [ "$BACALHAU_BUILD_RC" = 0 ] || { tail_log "$BACALHAU_BUILD_LOG"; die "bacalhau: scripts/bacalhau.sh build failed"; }
    tail_log "$BACALHAU_BUILD_LOG"
    die "bacalhau: $BACALHAU_BIN does not report $BACALHAU_VERSION"
}

# ---------------------------------------------------------------- native deps
# What pip needs to build `.[network]` (fastecdsa is an sdist with a C part that
# links GMP): gcc, libgmp-dev and the headers of the Python that builds it.
native_deps() {
    local py="${1:-python3}" pkgs=("${APT_NATIVE[@]}") inc
    inc="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])' 2>/dev/null || true)"
    if [ -n "$inc" ] && [ ! -f "$inc/Python.h" ]; then
        case "$inc" in
            /usr/include/*) pkgs+=(python3-dev) ;;
            *) die "native-deps: $py has no Python.h under $inc (not a Debian python: install its headers)" ;;
        esac
    fi
    apt_ensure "${pkgs[@]}"
}

# ---------------------------------------------------------------- env
print_env() {
    local kv
    for kv in \
        "COMPUTENODE_TESTBED_DIR=$STATE" \
        "COMPUTENODE_TEST_DOCKER_HOST=$DOCKER_HOST_URL" \
        "COMPUTENODE_TEST_REGISTRY=$REGISTRY" \
        "COMPUTENODE_TEST_IPFS_API=$IPFS_API" \
        "COMPUTENODE_TEST_IPFS_GATEWAY=$IPFS_GATEWAY" \
        "COMPUTENODE_TEST_IPFS_BIN=$IPFS_BIN" \
        "IPFS_PATH=$IPFS_REPO" \
        "COMPUTENODE_TEST_WASM_DIR=$WASM_DIR" \
        "COMPUTENODE_TEST_BACALHAU_BIN=$BACALHAU_BIN" \
        "COMPUTENODE_TEST_BUSYBOX_IMAGE=$BUSYBOX_IMAGE" \
        "COMPUTENODE_TEST_REGISTRY_IMAGE=$REGISTRY_IMAGE"; do
        printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}"
    done
}

write_env_file() {
    mkdir -p "$STATE"
    print_env >"$STATE/env.tmp" && mv -f "$STATE/env.tmp" "$STATE/env"
    echo "$STATE/env"
}

# ---------------------------------------------------------------- commands
ALL_SERVICES=(docker registry ipfs wasm bacalhau)

parse_services() { # sets SERVICES and BEST_EFFORT from the arguments
    SERVICES=(); BEST_EFFORT=0
    local a
    for a in "$@"; do
        case "$a" in
            --best-effort) BEST_EFFORT=1 ;;
            docker|registry|ipfs|wasm|bacalhau) SERVICES+=("$a") ;;
            *) die "unknown service '$a' (one of: ${ALL_SERVICES[*]}, --best-effort)" ;;
        esac
    done
    [ ${#SERVICES[@]} -gt 0 ] || SERVICES=("${ALL_SERVICES[@]}")
}

# Run one service's bring-up; with --best-effort a failure is reported only.
bring_up() {
    local svc=$1
    shift
    if [ "$BEST_EFFORT" = 1 ]; then
        # background + wait: `set -e` would be ignored inside `if ! (...)`
        local rc=0
        ( "$@" ) &
        wait $! || rc=$?
        [ "$rc" = 0 ] || log "$svc: not available (best effort: going on without it)"
    else
        "$@"
    fi
}

# When `up` stops on an error, a Go build it started goes on (it is not
# killed half-way); say so. The next `up` waits for it on its build lock.
report_running_builds() {
    local p
    for p in "$KUBO_BUILD_PID" "$BACALHAU_BUILD_PID"; do
        if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then
            log "up: stopped early; the build pid $p goes on in the background (the next 'up' waits for it)"
        fi
    done
    return 0
}

up_docker_and_image() { docker_up; busybox_image_up; }
up_registry() { docker_up; busybox_image_up; registry_up; registry_image_up; }

cmd_up() {
    parse_services "$@"
    mkdir -p "$STATE/logs"
    local start; start="$(now)"
    (
        flock -w 3000 8 || die "another 'testbed.sh up/down' holds $STATE/.lock"
        trap report_running_builds EXIT
        bring_up tools apt_ensure "${APT_TOOLS[@]}"
        # The Go builds first, in the background; waited for below, so `up`
        # never returns (and pytest never starts) while one still compiles.
        local svc
        for svc in "${SERVICES[@]}"; do
            case "$svc" in
                ipfs) kubo_build_start ;;
                bacalhau) bacalhau_build_start ;;
            esac
        done
        for svc in "${SERVICES[@]}"; do
            case "$svc" in
                docker) bring_up docker up_docker_and_image ;;
                registry) bring_up registry up_registry ;;
                ipfs) kubo_build_wait; bring_up ipfs ipfs_up ;;
                wasm) bring_up wasm wasm_up ;;
                bacalhau) bacalhau_build_wait; bring_up bacalhau bacalhau_up ;;
            esac
        done
    ) 8>"$STATE/.lock"
    log "up: ${SERVICES[*]} ready in $(( $(now) - start ))s"
    write_env_file
}

cmd_down() {
    parse_services "$@"
    mkdir -p "$STATE"
    (
        flock -w 300 8 || die "another 'testbed.sh up/down' holds $STATE/.lock"
        local svc i
        for (( i=${#SERVICES[@]}-1; i>=0; i-- )); do   # reverse order
            svc="${SERVICES[$i]}"
            case "$svc" in
                ipfs) stop_pidfile "$STATE/ipfs/daemon.pid" ipfs 20 ;;
                registry) stop_pidfile "$STATE/registry/registry.pid" registry 10 ;;
                docker) stop_pidfile "$STATE/docker/dockerd.pid" dockerd 60 ;;
                wasm|bacalhau) : ;;
            esac
        done
    ) 8>"$STATE/.lock"
}

cmd_status() {
    local bad=0
    if docker_ping; then echo "docker:   up    $DOCKER_HOST_URL"; else echo "docker:   DOWN  $DOCKER_HOST_URL"; bad=1; fi
    if docker_ping && docker_cli image inspect "$BUSYBOX_IMAGE" >/dev/null 2>&1; then
        echo "image:    up    $BUSYBOX_IMAGE"
    else echo "image:    MISSING $BUSYBOX_IMAGE"; bad=1; fi
    if registry_ping; then echo "registry: up    http://$REGISTRY/v2/"; else echo "registry: DOWN  http://$REGISTRY/v2/"; bad=1; fi
    if kubo_ok; then echo "kubo bin: ok    $IPFS_BIN ($KUBO_VERSION)"; else echo "kubo bin: MISSING $IPFS_BIN ($KUBO_VERSION)"; bad=1; fi
    if ipfs_ping; then echo "ipfs:     up    $IPFS_API (IPFS_PATH=$IPFS_REPO)"; else echo "ipfs:     DOWN  $IPFS_API"; bad=1; fi
    local p wasm_ok=1
    for p in "${APT_WASM[@]}"; do pkg_installed "$p" || wasm_ok=0; done
    if [ "$wasm_ok" = 1 ]; then echo "wasi:     ok    ${APT_WASM[*]}"; else echo "wasi:     MISSING toolchain"; bad=1; fi
    if [ -d "$WASM_DIR" ]; then echo "wasm:     ok    $WASM_DIR"; else echo "wasm:     MISSING $WASM_DIR"; bad=1; fi
    if bacalhau_ok; then echo "bacalhau: ok    $BACALHAU_BIN ($BACALHAU_VERSION)"
    else echo "bacalhau: MISSING $BACALHAU_BIN ($BACALHAU_VERSION; scripts/bacalhau.sh build)"; bad=1; fi
    echo "state:    $STATE"
    return $bad
}

usage() { sed -n '2,32p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

main() {
    local cmd="${1:-}"; [ $# -gt 0 ] && shift
    case "$cmd" in
        up) validate_settings; cmd_up "$@" ;;
        down) cmd_down "$@" ;;
        status) validate_settings; cmd_status ;;
        env) print_env ;;
        native-deps) native_deps "$@" ;;
        envfile) echo "$STATE/env" ;;
        *) usage ;;
    esac
}

main "$@"
