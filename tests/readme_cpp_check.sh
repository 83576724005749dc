#!/usr/bin/env bash
# CI: the README's C++ build commands ("C++ embedding"), as written, in a clean environment: the
# prerequisites from Debian's packages (the README names them), no Python environment on PATH,
# a fresh build folder and install prefix. Needs root (apt-get) or the packages already there.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PKGS=(g++ cmake make libopenblas-dev nlohmann-json3-dev)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [[ ${#missing[@]} -gt 0 ]]; then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The README's two lines, with build -> $work/build and /opt/fastattention -> $work/prefix.
env -i HOME="$HOME" PATH=/usr/sbin:/usr/bin:/sbin:/bin bash -ec "
  cd '$ROOT'
  cmake -S . -B '$work/build' -DFASTATTN_BUILD_TESTS=OFF && cmake --build '$work/build' --target fastattn -j$(nproc)
  cmake --install '$work/build' --prefix '$work/prefix'
"
test -f "$work/prefix/include/fastattn/fastattn.h"
ls "$work/prefix/lib/cmake/FastAttention/FastAttentionConfig.cmake" >/dev/null
echo "README C++ commands: built and installed with Debian's packages (${PKGS[*]})"
