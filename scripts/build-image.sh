#!/usr/bin/env bash
# Build the computenode container image without pulling anything from a registry.
#
#   scripts/build-image.sh [TAG]        default TAG: computenode:latest
#
# 1. A base image (Debian bookworm minbase + python3, python3-venv, tini,
#    ca-certificates) is made once with debootstrap from Debian's mirror and
#    `docker import`ed as computenode-base/debian-python:bookworm; later runs
#    reuse it (REBUILD_BASE=1 makes it again).
# 2. The project and its dependencies are built into wheels on the host, where
#    pip has its index (no network is needed inside `docker build`):
#    build/image/wheels (dependencies, reused while they satisfy pyproject.toml)
#    and build/image/project (this tree's wheel, rebuilt every time).
# 3. `docker build --network host` runs the multi-stage Dockerfile, which
#    installs only from those wheels (`pip install --no-index`).
#
# Environment: PYTHON (host Python 3.11 with pip; default .venv/bin/python, else
# python3), DEBIAN_MIRROR (default http://deb.debian.org/debian), BASE_IMAGE,
# REBUILD_BASE=1.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TAG=${1:-computenode:latest}
BASE_IMAGE=${BASE_IMAGE:-computenode-base/debian-python:bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CTX=$ROOT/build/image   # build/ is in .gitignore; .dockerignore lets only this dir in
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x $ROOT/.venv/bin/python ]]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
fi

log() { printf '[build-image +%ss] %s\n' "$SECONDS" "$*" >&2; }

make_base() {
    if [[ "${REBUILD_BASE:-0}" != 1 ]] && docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        log "base image $BASE_IMAGE exists"
        return
    fi
    if ! command -v debootstrap >/dev/null; then
        log "installing debootstrap"
        apt-get install -y debootstrap >/dev/null 2>&1 \
            || { apt-get update >/dev/null && apt-get install -y debootstrap >/dev/null; }
    fi
    rootfs=$(mktemp -d /tmp/computenode-rootfs.XXXXXX)   # global: the EXIT trap reads it
    trap 'rm -rf "$rootfs" "$rootfs.log"' EXIT
    log "debootstrap bookworm into $rootfs (takes a few minutes)"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,tini,passwd \
        bookworm "$rootfs" "$DEBIAN_MIRROR" >"$rootfs.log" 2>&1 \
        || { tail -n 30 "$rootfs.log" >&2; rm -f "$rootfs.log"; exit 1; }
    rm -f "$rootfs.log"
    # The image needs neither the downloaded .debs nor the package lists.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/tmp/*
    log "importing $BASE_IMAGE"
    tar -C "$rootfs" -c . | docker import \
        -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -c 'ENV LANG=C.UTF-8' \
        -c 'CMD ["/bin/bash"]' \
        -m "debootstrap --variant=minbase bookworm + python3 python3-venv ca-certificates tini passwd" \
        - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
}

check_python() {
    # The wheels must match the base image's CPython (bookworm: 3.11).
    local want have
    want=$(docker run --rm --network none "$BASE_IMAGE" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    have=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    if [[ "$want" != "$have" ]]; then
        log "host Python $have ($PYTHON) does not match the image's Python $want; set PYTHON"
        exit 1
    fi
}

make_wheels() {
    mkdir -p "$CTX/wheels" "$CTX/project"
    rm -rf "$CTX"/project/*.whl "$CTX/wheels.new"
    log "building the project wheel"
    # From a copy of the working tree, so setuptools leaves nothing in it (build/lib,
    # egg-info) and no stale module from an earlier build/lib slips into the wheel. A fixed
    # SOURCE_DATE_EPOCH makes the wheel byte-identical while the code is: Docker keeps
    # its install layer cached.
    local src=$CTX/src
    rm -rf "$src" && mkdir -p "$src"
    tar -C "$ROOT" -c --exclude=__pycache__ --exclude='*.pyc' pyproject.toml computenode \
        $(cd "$ROOT" && ls README* LICENSE* 2>/dev/null) | tar -C "$src" -x
    # Without build isolation when the host Python has setuptools (fast, offline).
    SOURCE_DATE_EPOCH=315532800 "$PYTHON" -m pip wheel -q --no-deps --no-build-isolation \
        -w "$CTX/project" "$src" 2>/dev/null \
        || SOURCE_DATE_EPOCH=315532800 "$PYTHON" -m pip wheel -q --no-deps -w "$CTX/project" "$src"
    rm -rf "$src"
    local whl
    whl=$(ls "$CTX"/project/computenode-*.whl)
    # Skip resolving while pyproject.toml is what the wheels were collected for.
    local stamp=$CTX/deps.sha256 sum
    sum=$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)
    if [[ -f $stamp && $(cat "$stamp") == "$sum" ]] && ls "$CTX"/wheels/*.whl >/dev/null 2>&1; then
        log "dependency wheels are current"
        return
    fi
    log "collecting dependency wheels"
    # Resolve into a fresh dir so it holds exactly one version of each dependency (the
    # Dockerfile installs them all). Offline first from the wheels of the last build;
    # the index only when something is missing.
    "$PYTHON" -m pip wheel -q --no-index --find-links "$CTX/wheels" -w "$CTX/wheels.new" "$whl" 2>/dev/null \
        || "$PYTHON" -m pip wheel -q --find-links "$CTX/wheels" -w "$CTX/wheels.new" "$whl"
    rm -f "$CTX"/wheels.new/computenode-*.whl
    rm -rf "$CTX/wheels"
    mv "$CTX/wheels.new" "$CTX/wheels"
    echo "$sum" >"$stamp"
}

stage_config() {
    # The image's /etc/computenode/computenode.yaml: the project's commented config when it
    # exists, else a minimal one (every key has a default; the image sets listen and data_dir
    # through COMPUTENODE_* variables).
    if [[ -f $ROOT/config/computenode.yaml ]]; then
        cp "$ROOT/config/computenode.yaml" "$CTX/computenode.yaml"
    else
        printf '%s\n' '# computenode in a container: every key not set here has its default.' \
            'node:' '  data_dir: /var/lib/computenode' 'api:' '  listen: 0.0.0.0:1234' >"$CTX/computenode.yaml"
    fi
}

make_base
check_python
make_wheels
stage_config
image_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true; }

build_image() {
    # Stage one gets its own tag: it is the layer cache of the next build, and an untagged
    # tip would be mistaken for garbage by `docker image prune`.
    local old_final old_stage id
    old_final=$(image_id "$TAG")
    old_stage=$(image_id "$STAGE_TAG")
    log "docker build -t $TAG"
    docker build --network host --build-arg "BASE=$BASE_IMAGE" --target build -t "$STAGE_TAG" \
        -f "$ROOT/Dockerfile" "$ROOT" >/dev/null
    docker build --network host --build-arg "BASE=$BASE_IMAGE" -t "$TAG" -f "$ROOT/Dockerfile" "$ROOT"
    # The images these tags pointed at before, when nothing else names them (a running
    # container keeps its image: rmi refuses, which is fine).
    for id in $old_final $old_stage; do
        if [[ $id != "$(image_id "$TAG")" && $id != "$(image_id "$STAGE_TAG")" \
              && $(docker image inspect -f '{{len .RepoTags}}' "$id" 2>/dev/null) == 0 ]]; then
            docker rmi "$id" >/dev/null 2>&1 || true
        fi
    done
}

[[ ${TAG##*/} == *:* ]] || TAG=$TAG:latest
STAGE_TAG=${TAG%:*}-build:${TAG##*:}   # computenode:test -> computenode-build:test
build_image
log "built $TAG"
