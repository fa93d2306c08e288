#!/usr/bin/env bash
# Lints and renders charts/certshift with Helm's own engine (PyPI helm-python-sdk,
# installed once per machine into a virtualenv in the cache) into OUT_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-target/chart}"
CACHE="${CERTSHIFT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/certshift}"
VENV="$CACHE/helm-venv"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import helm_python" 2>/dev/null; then
  echo "chart.sh: installing helm-python-sdk into $VENV" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install -q "helm-python-sdk==0.2.2" >&2
fi
"$VENV/bin/python" hack/chart.py "$OUT" >&2
echo "$OUT/default.yaml"
