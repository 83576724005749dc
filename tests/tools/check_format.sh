#!/usr/bin/env bash
# The format check (CI runs it; also `pre-commit run --all-files` does the same per file):
#   clang-format --dry-run --Werror   on the C++ / CUDA files (.clang-format)
#   ruff format --check; ruff check   on python/ tests/ examples/ cmake/ setup.py (pyproject.toml)
# with the versions pinned in pyproject.toml's test extra. Exits non-zero, listing the files, if
# anything is not formatted or a lint rule fails; `bash tests/tools/apply_format.sh` formats.
set -euo pipefail
# shellcheck source=tests/tools/format_common.sh
. "$(dirname "${BASH_SOURCE[0]}")/format_common.sh"
cd "$ROOT"
T0=$(date +%s)
ensure_formatters

status=0
n=$(cpp_files | tr -cd '\0' | wc -c)
echo "format: clang-format --dry-run --Werror on $n C++ / CUDA files"
if ! cpp_files | xargs -0 -r -n 40 -P 2 clang-format --dry-run --Werror --style=file; then
  echo "format: C++ files above are not formatted (bash tests/tools/apply_format.sh)" >&2
  status=1
fi
echo "format: ruff format --check ${PY_PATHS[*]}"
if ! ruff format --check "${PY_PATHS[@]}"; then
  echo "format: Python files above are not formatted (bash tests/tools/apply_format.sh)" >&2
  status=1
fi
echo "format: ruff check ${PY_PATHS[*]}"
if ! ruff check "${PY_PATHS[@]}"; then
  echo "format: lint findings above (import order: apply_format.sh fixes it; the rest by hand)" >&2
  status=1
fi
if [[ $status -eq 0 ]]; then
  echo "format: all formatted, lint clean ($(( $(date +%s) - T0 ))s)"
fi
exit $status
