#!/usr/bin/env bash
# fluxnb set-up: one command, safe to rerun.
#   ./runpod_setup.sh            set up, fetch the model, start JupyterLab (on a pod)
#   ./runpod_setup.sh --no-lab   set up only
#   ./runpod_setup.sh --dev      also install the test tools
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DEV=0
LAB=1
for arg in "$@"; do
  case "$arg" in
    --dev) DEV=1 ;;
    --no-lab) LAB=0 ;;
    -h|--help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "runpod_setup.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf '[fluxnb setup] %s\n' "$*"; }

PY="${PYTHON:-python3}"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "fluxnb needs Python 3.10 or newer" >&2; exit 1; }

VENV="$ROOT/.venv"
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"

if ! "$VPY" -c 'import torch' >/dev/null 2>&1; then
  say "installing ${FLUXNB_TORCH_SPEC:-torch==2.13.0}"
  "$VPY" -m pip install -q "${FLUXNB_TORCH_SPEC:-torch==2.13.0}"
fi

EXTRA=""
[ "$DEV" = 1 ] && EXTRA="[dev]"
STAMP="$VENV/.fluxnb-installed"
WANT="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)$EXTRA"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  say "installing fluxnb$EXTRA into $VENV"
  "$VPY" -m pip install -q -e "$ROOT$EXTRA"
  echo "$WANT" > "$STAMP"
fi

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi >/dev/null 2>&1; then
  if ! grep -qs '^FLUXNB_MODEL=' "$ROOT/config.env"; then
    echo "FLUXNB_MODEL=tiny" >> "$ROOT/config.env"
  fi
  say "no GPU: using the tiny random-weight test model (FLUXNB_MODEL=tiny in config.env); its images are noise"
fi
say "ready: $VENV/bin/fluxnb"
