#!/bin/sh
# Builds the WASM test modules into tests/wasm/build/ with Debian's clang-14,
# lld-14 and wasi-libc (apt-get install -y clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32).
# Idempotent: a module is rebuilt only when its source is newer.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out="$here/build"
CC=${CC:-clang-14}
mkdir -p "$out"

build() { # name, extra flags...
    name=$1; shift
    src="$here/$name.c"; dst="$out/$name.wasm"
    if [ ! -e "$dst" ] || [ "$src" -nt "$dst" ] || [ "$0" -nt "$dst" ]; then
        "$CC" --target=wasm32-wasi -O2 -s -fuse-ld=lld "$@" -o "$dst.tmp" "$src"
        mv "$dst.tmp" "$dst"
    fi
}

for m in hello cat env write exitcode loop grow trap usehelper sleep; do
    build "$m"
done
# The import module: no libc, no entry, one export.
build helper -nostdlib -Wl,--no-entry
