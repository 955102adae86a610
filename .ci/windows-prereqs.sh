#!/usr/bin/env bash
# Host prerequisites of the Linux cross build of the .sys images
# (`cargo xtask windows`, docs/windows-build.md): Debian packages and the
# Rust standard library for x86_64-pc-windows-msvc. Idempotent.
set -euo pipefail

packages=(clang-14 llvm-14 libclang-14-dev mingw-w64-x86-64-dev)

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

rustup target add x86_64-pc-windows-msvc
