#!/usr/bin/env bash
# The two set-up commands of the README:
#   bash run.sh demo [--quick]   explain a trained Flax CNN, write a report to ./jaxplain_demo
#   bash run.sh test             run the test suite
# Both create ./.venv on first use and install what they need into it.
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python3}"
VENV=.venv
stamp="$VENV/.installed-$(cat pyproject.toml | cksum | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
if [ ! -f "$stamp" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$VENV/bin/python" -m pip install -q -e ".[test]"
  touch "$stamp"
fi
cmd="${1:-test}"; shift || true
case "$cmd" in
  test)
    exec "$VENV/bin/python" -m pytest -n 2 --dist loadfile "$@" ;;
  demo)
    exec "$VENV/bin/jaxplain" demo "$@" ;;
  bench)
    exec "$VENV/bin/python" -m benchmarks "$@" ;;
  *)
    echo "usage: bash run.sh {demo|test|bench} [args]" >&2; exit 2 ;;
esac
