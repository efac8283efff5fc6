#!/usr/bin/env bash
# The set-up commands of the README:
#   bash run.sh demo [--quick]   explain a trained Flax CNN, write a report to ./jaxplain_demo
#   bash run.sh test [args]      run the test suite
#   bash run.sh docs [args]      build the documentation site into ./site (mkdocs --strict)
#   bash run.sh bench [args]     the benchmarks (needs: pip install -e ".[bench]")
# Each creates ./.venv on first use and installs what it needs into it. pip's output of
# the last install is kept in .venv/install.log (tests/test_packaging.py reads it).
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python3}"
VENV=.venv
cmd="${1:-test}"; shift || true
extras="test"
[ "$cmd" = docs ] && extras="test,docs"
stamp="$VENV/.installed-$extras-$(cat pyproject.toml | cksum | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
if [ ! -f "$stamp" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$VENV/bin/python" -m pip install -q -e ".[$extras]" 2>&1 | tee "$VENV/install.log" >&2
  touch "$stamp"
fi
case "$cmd" in
  test)
    exec "$VENV/bin/python" -m pytest -n 2 --dist loadfile "$@" ;;
  demo)
    exec "$VENV/bin/jaxplain" demo "$@" ;;
  docs)
    NO_MKDOCS_2_WARNING=1 exec "$VENV/bin/python" -m mkdocs build --strict "$@" ;;
  bench)
    exec "$VENV/bin/python" -m benchmarks "$@" ;;
  *)
    echo "usage: bash run.sh {demo|test|docs|bench} [args]" >&2; exit 2 ;;
esac
