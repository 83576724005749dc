# Shared by check_format.sh and apply_format.sh (sourced, not run): the files each formatter
# covers and the pinned formatter versions.
#
#   C++ / CUDA: the *.cc *.h *.cu *.cuh *.c *.cpp *.hpp files under cpp/ tests/ examples/ (with
#               git: tracked, and untracked ones not ignored), by clang-format (.clang-format).
#   Python:     python/ tests/ examples/ cmake/ setup.py, by ruff (pyproject.toml [tool.ruff]).
#
# The versions are the ones pinned in pyproject.toml's test extra (and .pre-commit-config.yaml):
# another version formats differently, so a wrong one is replaced by the pinned one (pip) first.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
  if command -v python3 >/dev/null 2>&1; then PYTHON=python3; else PYTHON=python; fi
fi
PY_PATHS=(python tests examples cmake setup.py)
CPP_DIRS=(cpp tests examples)

# The version pinned in pyproject.toml for a package ("clang-format==22.1.2" -> 22.1.2).
pinned_version() {
  sed -n "s/^ *\"$1==\([0-9.]*\)\".*/\1/p" "$ROOT/pyproject.toml" | head -n 1
}

# Makes clang-format and ruff on PATH the pinned versions (installs them with pip otherwise).
ensure_formatters() {
  local cf_want ruff_want cf_have="" ruff_have="" need=()
  cf_want=$(pinned_version clang-format)
  ruff_want=$(pinned_version ruff)
  if [[ -z "$cf_want" || -z "$ruff_want" ]]; then
    echo "format: no clang-format==X / ruff==X pin found in $ROOT/pyproject.toml" >&2
    return 2
  fi
  command -v clang-format >/dev/null 2>&1 &&
    cf_have=$(clang-format --version | sed -n 's/.*clang-format version \([0-9.]*\).*/\1/p')
  command -v ruff >/dev/null 2>&1 && ruff_have=$(ruff --version | awk '{print $2}')
  [[ "$cf_have" == "$cf_want" ]] || need+=("clang-format==$cf_want")
  [[ "$ruff_have" == "$ruff_want" ]] || need+=("ruff==$ruff_want")
  if [[ ${#need[@]} -gt 0 ]]; then
    echo "format: installing ${need[*]} into $("$PYTHON" -c 'import sys; print(sys.prefix)')" \
      "(found clang-format '${cf_have:-none}', ruff '${ruff_have:-none}')"
    "$PYTHON" -m pip install -q "${need[@]}"
    hash -r
  fi
  echo "format: clang-format $cf_want, ruff $ruff_want"
}

# NUL-separated C++ / CUDA files under cpp/ tests/ examples/, relative to $ROOT (a virtual
# environment or build folder elsewhere in the checkout holds third-party headers: not ours).
cpp_files() {
  local re='\.(cc|h|cu|cuh|c|cpp|hpp)$'
  if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard -- "${CPP_DIRS[@]}" |
      while IFS= read -r -d '' f; do
        if [[ "$f" =~ $re && -f "$f" ]]; then printf '%s\0' "$f"; fi
      done)
  else
    (cd "$ROOT" && find "${CPP_DIRS[@]}" -type f -regextype posix-extended -regex ".*$re" -print0 |
      sort -z)
  fi
}
