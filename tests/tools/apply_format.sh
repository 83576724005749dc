#!/usr/bin/env bash
# Formats exactly what tests/tools/check_format.sh checks, in place:
#   clang-format -i                   on the C++ / CUDA files
#   ruff check --fix --select I       (import order; the other lint findings are fixed by hand)
#   ruff format                       on python/ tests/ examples/ cmake/ setup.py
# with the pinned versions. Afterwards check_format.sh passes unless a lint finding needs a hand.
set -euo pipefail
# shellcheck source=tests/tools/format_common.sh
. "$(dirname "${BASH_SOURCE[0]}")/format_common.sh"
cd "$ROOT"
ensure_formatters
n=$(cpp_files | tr -cd '\0' | wc -c)
echo "format: clang-format -i on $n C++ / CUDA files"
cpp_files | xargs -0 -r -n 40 -P 2 clang-format -i --style=file
echo "format: ruff check --fix --select I ${PY_PATHS[*]}"
ruff check --fix --select I "${PY_PATHS[@]}"
echo "format: ruff format ${PY_PATHS[*]}"
ruff format "${PY_PATHS[@]}"
