#!/usr/bin/env bash
# fluxnb set-up: one command, safe to rerun at every pod start (a rerun takes seconds and
# changes nothing).
#
#   ./runpod_setup.sh             set up, fetch FLUX.1-dev (GPU + HF token), start JupyterLab
#   ./runpod_setup.sh --no-lab    everything but starting JupyterLab
#   ./runpod_setup.sh --dev       also install the test tools (pytest, nbval, shellcheck...) and Ray
#   ./runpod_setup.sh --ray       also install Ray, for --backend ray (fluxnb[ray]; README: Scale-out)
#   ./runpod_setup.sh --tiny      use the tiny random-weight test model; download nothing
#   ./runpod_setup.sh --model ID  fetch another hub model (default black-forest-labs/FLUX.1-dev)
#   ./runpod_setup.sh --port N    JupyterLab's port (default 8888, the one to expose on RunPod)
#   ./runpod_setup.sh --dry-run   print every path and command, do nothing (never prints a secret)
#   ./runpod_setup.sh --help
#
# On a pod (RUNPOD_POD_ID set, or /workspace present) everything lives on the volume:
# the Python environment (reusing the image's CUDA torch), the Hugging Face cache
# (HF_HOME=/workspace/.cache/huggingface), outputs, logs and fluxnb's cache (tiny model,
# enhancement cache, JupyterLab token). Off a pod: .venv/ here, the usual folders.
# HF_TOKEN comes from the environment, config.env, or the Hugging Face token file.
# With no GPU or no token the tiny test model is set up instead, and it says so.
#
# Environment: PYTHON (default python3), FLUXNB_TORCH_SPEC (torch to install when none is
# importable, default torch==2.13.0), FLUXNB_WORKSPACE (default /workspace),
# FLUXNB_CONFIG_ENV (default ./config.env).
# Exit status: 0 ready; 1 set-up failed; 3 the model download failed (the tiny model is set
# up instead and JupyterLab still starts).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DEV=0
RAY=0
LAB=1
DRY=0
FORCE_TINY=0
MODEL_ID="black-forest-labs/FLUX.1-dev"
PORT=8888

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --dev) DEV=1 ;;
    --ray) RAY=1 ;;
    --no-lab) LAB=0 ;;
    --dry-run) DRY=1 ;;
    --tiny) FORCE_TINY=1 ;;
    --model) [ $# -ge 2 ] || { echo "runpod_setup.sh: --model needs a hub id" >&2; exit 2; }; MODEL_ID="$2"; shift ;;
    --model=*) MODEL_ID="${1#--model=}" ;;
    --port) [ $# -ge 2 ] || { echo "runpod_setup.sh: --port needs a number" >&2; exit 2; }; PORT="$2"; shift ;;
    --port=*) PORT="${1#--port=}" ;;
    -h|--help) usage; exit 0 ;;
    *) echo "runpod_setup.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$PORT" in ''|*[!0-9]*) echo "runpod_setup.sh: --port $PORT: not a number" >&2; exit 2 ;; esac

say() { printf '[fluxnb setup] %s\n' "$*"; }
warn() { printf '[fluxnb setup] WARNING: %s\n' "$*" >&2; }
die() { printf '[fluxnb setup] ERROR: %s\n' "$*" >&2; exit 1; }
# run CMD...: do it, or with --dry-run only show it (commands never hold a secret).
run() {
  if [ "$DRY" = 1 ]; then printf '  would run: %s\n' "$*"; else "$@"; fi
}

# ---------------------------------------------------------------------------------------
# 1. Where we are: a pod or not, a GPU or not, and where everything goes.
# ---------------------------------------------------------------------------------------
WS="${FLUXNB_WORKSPACE:-/workspace}"
POD=0
if [ -n "${RUNPOD_POD_ID:-}" ] || [ -d "$WS" ]; then POD=1; fi
GPU=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then GPU=1; fi
PY="${PYTHON:-python3}"
command -v "$PY" >/dev/null 2>&1 || die "no $PY found: install Python 3.10 or newer (or set PYTHON=...)"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || die "fluxnb needs Python 3.10 or newer ($PY is $("$PY" -V 2>&1))"
CONFIG="${FLUXNB_CONFIG_ENV:-$ROOT/config.env}"
export FLUXNB_CONFIG_ENV="$CONFIG"   # fluxnb reads the same file

VENV="$ROOT/.venv"
VENV_LINK=""
if [ "$POD" = 1 ]; then
  case "$ROOT/" in
    "$WS"/*) ;;
    *) VENV="$WS/.venv-fluxnb"; VENV_LINK="$ROOT/.venv"
       warn "this checkout ($ROOT) is not under $WS: the container disk is wiped when the pod stops; clone into $WS" ;;
  esac
  HF_HOME="$WS/.cache/huggingface"
  OUT_DIR="$WS/outputs"
  LOG_DIR="$WS/logs"
  CACHE_DIR="$WS/.cache/fluxnb"
  LORA_DIR="$WS/loras"  # fluxnb's LoRA folder on a pod (FLUXNB_LORA_DIR overrides)
  export HF_HOME
else
  HF_HOME="${HF_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/huggingface}"
  OUT_DIR="" LOG_DIR="" CACHE_DIR=""
fi
VPY="$VENV/bin/python"
FLUXNB="$VENV/bin/fluxnb"

# ---------------------------------------------------------------------------------------
# 2. The Hugging Face token: environment, config.env, token file. Never printed.
# ---------------------------------------------------------------------------------------
conf_value() {  # conf_value NAME: NAME's value in config.env (last one wins), quotes stripped
  [ -f "$CONFIG" ] || return 0
  sed -n -E "s/^[[:space:]]*(export[[:space:]]+)?$1[[:space:]]*=[[:space:]]*//p" "$CONFIG" | tail -n 1 \
    | sed -E "s/[[:space:]]+\$//; s/^\"(.*)\"\$/\\1/; s/^'(.*)'\$/\\1/"
}
# The names are fluxnb's (fluxnb/model/hub.py TOKEN_NAMES); HUGGINGFACE_TOKEN is flux-generate.sh's.
# On a pod, also the token file where flux-generate.sh and `hf auth login` put it: ~/.cache/huggingface.
TOKEN_SOURCE=""
for name in HF_TOKEN HUGGING_FACE_HUB_TOKEN HUGGINGFACE_TOKEN; do
  if [ -n "${!name:-}" ]; then TOKEN_SOURCE="the environment ($name)"; break; fi
done
for name in HF_TOKEN HUGGING_FACE_HUB_TOKEN HUGGINGFACE_TOKEN; do
  if [ -z "$TOKEN_SOURCE" ] && [ -n "$(conf_value "$name")" ]; then TOKEN_SOURCE="config.env ($CONFIG)"; fi
done
for f in "${HF_TOKEN_PATH:-$HF_HOME/token}" "$([ "$POD" = 1 ] && echo "$HOME/.cache/huggingface/token")"; do
  if [ -z "$TOKEN_SOURCE" ] && [ -n "$f" ] && [ -s "$f" ]; then TOKEN_SOURCE="the token file ($f)"; fi
done

TINY_WHY=""
if [ "$FORCE_TINY" = 1 ]; then TINY_WHY="--tiny was given"
elif [ "$GPU" = 0 ]; then TINY_WHY="no GPU"
elif [ -z "$TOKEN_SOURCE" ]; then TINY_WHY="no Hugging Face token"
fi

say "checkout:     $ROOT"
say "mode:         $([ "$POD" = 1 ] && echo "RunPod pod (state under $WS)" || echo "local machine (not a pod)")"
say "GPU:          $([ "$GPU" = 1 ] && nvidia-smi -L 2>/dev/null | head -n 1 || echo none)"
say "python:       $("$PY" -V 2>&1) ($(command -v "$PY"))"
say "environment:  $VENV$([ -n "$VENV_LINK" ] && echo " (linked from $VENV_LINK)")"
say "config.env:   $CONFIG"
say "HF cache:     $HF_HOME"
if [ "$POD" = 1 ]; then
  say "outputs:      $OUT_DIR"
  say "logs:         $LOG_DIR"
  say "fluxnb cache: $CACHE_DIR (tiny model, enhancement cache, JupyterLab token)"
  say "LoRA folder:  ${FLUXNB_LORA_DIR:-$LORA_DIR} (NAME.safetensors for --lora NAME and <lora:NAME:WEIGHT>)"
fi
say "HF token:     $([ -n "$TOKEN_SOURCE" ] && echo "found in $TOKEN_SOURCE (not shown)" || echo "none")"
LAB_TOKEN="$CACHE_DIR"
[ -n "$LAB_TOKEN" ] || LAB_TOKEN="${FLUXNB_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fluxnb}"
LAB_TOKEN="$LAB_TOKEN/lab/token"
if [ -n "${JUPYTER_TOKEN:-}" ] || [ -n "$(conf_value JUPYTER_TOKEN)" ]; then LAB_TOKEN="JUPYTER_TOKEN (not shown)"
elif [ -n "${JUPYTER_PASSWORD:-}" ] || [ -n "$(conf_value JUPYTER_PASSWORD)" ]; then LAB_TOKEN="JUPYTER_PASSWORD (not shown)"
fi
if [ -n "${RUNPOD_POD_ID:-}" ]; then LAB_URL="https://$RUNPOD_POD_ID-$PORT.proxy.runpod.net/lab"; else LAB_URL="http://127.0.0.1:$PORT/lab"; fi
say "JupyterLab:   $([ "$LAB" = 1 ] && echo "$LAB_URL in $ROOT/notebooks, token: $LAB_TOKEN" || echo "not started (--no-lab)")"
say "model:        $([ -z "$TINY_WHY" ] && echo "$MODEL_ID" || echo "tiny ($TINY_WHY)")"
[ "$DRY" = 1 ] && say "dry run: nothing below is done"

# ---------------------------------------------------------------------------------------
# 3. The Python environment (on a pod it sees the image's CUDA torch; torch is never replaced).
# ---------------------------------------------------------------------------------------
PY_ID="$("$PY" -c 'import sys; print(sys.version.split()[0], sys.executable)')"
BROKEN=""
if [ -e "$VPY" ] && ! "$VPY" -c 'import sys' >/dev/null 2>&1; then
  BROKEN=1
  warn "$VENV is broken (its Python is gone, e.g. a new image): making it again"
  run rm -rf "$VENV"
fi
if [ ! -x "$VPY" ] || [ -n "$BROKEN" ]; then
  say "creating $VENV"
  if [ "$POD" = 1 ]; then
    run "$PY" -m venv --system-site-packages "$VENV"
  else
    run "$PY" -m venv "$VENV"
  fi
fi
if [ -n "$VENV_LINK" ] && [ ! -e "$VENV_LINK" ]; then run ln -s "$VENV" "$VENV_LINK"; fi

has_torch() { [ -x "$VPY" ] && "$VPY" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("torch") is None)' 2>/dev/null; }
if ! has_torch; then
  [ "$POD" = 1 ] && warn "the image has no torch: a RunPod PyTorch template brings a CUDA build; installing one"
  say "installing ${FLUXNB_TORCH_SPEC:-torch==2.13.0}"
  run "$VPY" -m pip install -q "${FLUXNB_TORCH_SPEC:-torch==2.13.0}"
fi

EXTRA=""
KIND=base
[ "$RAY" = 1 ] && EXTRA="[ray]" && KIND=ray
[ "$DEV" = 1 ] && EXTRA="[dev,ray]" && KIND=dev   # the tests run the Ray backend too
STAMP="$VENV/.fluxnb-installed"
PIN="$VENV/.fluxnb-torch-pin.txt"
TORCH_V=""
[ -x "$VPY" ] && TORCH_V="$("$VPY" -c 'from importlib.metadata import version; print(version("torch"))' 2>/dev/null || true)"
WANT="$(cat "$ROOT/pyproject.toml" "$ROOT/constraints.txt" 2>/dev/null | sha256sum | cut -d' ' -f1) $PY_ID torch=$TORCH_V"
HAVE="$(cat "$STAMP" 2>/dev/null || true)"
# Installed with [dev] covers every run; with [ray], a run without extras.
if [ "$HAVE" = "$WANT dev" ] || [ "$HAVE" = "$WANT $KIND" ] || { [ "$KIND" = base ] && [ "$HAVE" = "$WANT ray" ]; }; then
  say "fluxnb$EXTRA is installed and up to date in $VENV"
else
  say "installing fluxnb$EXTRA into $VENV (pinned: constraints.txt; torch stays ${TORCH_V:-as installed})"
  if [ "$DRY" = 0 ]; then echo "torch==$TORCH_V" > "$PIN"; fi
  if ! run "$VPY" -m pip install -q -c "$ROOT/constraints.txt" -c "$PIN" -e "$ROOT$EXTRA"; then
    warn "the pinned install failed (another Python version, or a dependency that conflicts with a pin):" \
         "installing from pyproject.toml's ranges instead"
    run "$VPY" -m pip install -q -c "$PIN" -e "$ROOT$EXTRA" || die "pip could not install fluxnb (see above)"
  fi
  if [ "$DRY" = 0 ]; then echo "$WANT $KIND" > "$STAMP"; fi
fi

# ---------------------------------------------------------------------------------------
# 4. config.env: a managed block at the top (rewritten only when it changes); your own
#    lines below it win. It tells every fluxnb process, kernels included, where things are.
# ---------------------------------------------------------------------------------------
BEGIN_MARK="# >>> runpod_setup.sh: managed, rewritten by every run; your own lines below win >>>"
END_MARK="# <<< runpod_setup.sh <<<"
write_config() {  # write_config LINE...: the managed block's lines (none: no block)
  local tmp rest
  rest="$(if [ -f "$CONFIG" ]; then awk -v b="$BEGIN_MARK" -v e="$END_MARK" \
      '$0==b{skip=1;next} $0==e{skip=0;next} !skip' "$CONFIG"; fi)"
  if [ "$DRY" = 1 ]; then
    if [ $# -gt 0 ]; then printf '  would write into %s:\n' "$CONFIG"; printf '    %s\n' "$@"; fi
    return 0
  fi
  [ $# -eq 0 ] && [ ! -f "$CONFIG" ] && return 0
  tmp="$(dirname "$CONFIG")/.config.env.$$.tmp"
  (
    umask 077
    { if [ $# -gt 0 ]; then printf '%s\n' "$BEGIN_MARK" "$@" "$END_MARK"; fi
      if [ -n "$rest" ]; then printf '%s\n' "$rest"; fi; } > "$tmp"
  )
  if [ -f "$CONFIG" ] && cmp -s "$tmp" "$CONFIG"; then rm -f "$tmp"; return 0; fi
  mv "$tmp" "$CONFIG"
  chmod 600 "$CONFIG"
  say "updated $CONFIG"
}
config_lines() {  # config_lines MODEL: the managed lines for this machine
  if [ "$POD" = 1 ]; then
    printf '%s\n' "HF_HOME=$HF_HOME" "FLUXNB_OUTPUT_DIR=$OUT_DIR" "FLUXNB_LOG_DIR=$LOG_DIR" "FLUXNB_CACHE_DIR=$CACHE_DIR"
  fi
  if [ "$1" != "black-forest-labs/FLUX.1-dev" ]; then printf '%s\n' "FLUXNB_MODEL=$1"; fi
}
apply_config() {  # apply_config MODEL
  local lines=()
  mapfile -t lines < <(config_lines "$1")
  write_config "${lines[@]+"${lines[@]}"}"
}
if [ "$POD" = 1 ]; then
  for d in "$OUT_DIR" "$LOG_DIR" "$CACHE_DIR" "$HF_HOME" "${FLUXNB_LORA_DIR:-$LORA_DIR}"; do [ -d "$d" ] || run mkdir -p "$d"; done
  export FLUXNB_OUTPUT_DIR="$OUT_DIR" FLUXNB_LOG_DIR="$LOG_DIR" FLUXNB_CACHE_DIR="$CACHE_DIR"
fi

# ---------------------------------------------------------------------------------------
# 5. The model: FLUX.1-dev with a GPU and a token (checks, resume and verification live in
#    `fluxnb model fetch`), else the tiny test model.
# ---------------------------------------------------------------------------------------
STATUS=0
MODEL="tiny"
if [ -z "$TINY_WHY" ]; then
  say "fetching $MODEL_ID into $HF_HOME (first time 10-15 min for FLUX.1-dev's ~32 GB; resumes if interrupted)"
  say "  token from $TOKEN_SOURCE, passed in the environment"
  if [ "$DRY" = 1 ]; then
    run "$FLUXNB" model fetch "$MODEL_ID"
    MODEL="$MODEL_ID"
  elif HF_HUB_OFFLINE=0 "$FLUXNB" model fetch "$MODEL_ID"; then
    MODEL="$MODEL_ID"
  else
    STATUS=3
    TINY_WHY="the download of $MODEL_ID failed (the message above says why and what to do)"
    warn "$TINY_WHY; setting up the tiny test model instead so everything else works"
  fi
fi
if [ "$MODEL" = "tiny" ]; then
  say "model: the tiny random-weight test model, because: $TINY_WHY."
  say "  Its images are noise: it is there to test the code. For real images: a GPU pod and HF_TOKEN"
  say "  (in the environment or config.env, or hf auth login; a read token from"
  say "  https://huggingface.co/settings/tokens after accepting the licence at"
  say "  https://huggingface.co/black-forest-labs/FLUX.1-dev), then rerun this script."
  run "$FLUXNB" -q model fetch tiny
fi
apply_config "$MODEL"

# ---------------------------------------------------------------------------------------
# 6. JupyterLab, always behind a token (fluxnb lab; already running: it says so).
# ---------------------------------------------------------------------------------------
if [ "$LAB" = 1 ]; then
  say "starting JupyterLab on port $PORT in $ROOT/notebooks"
  LAB_ARGS=(--background --port "$PORT")
  if [ "$POD" = 1 ]; then LAB_ARGS+=(--ip 0.0.0.0); fi   # the pod's proxy connects from outside
  run "$FLUXNB" lab "${LAB_ARGS[@]}" || die "JupyterLab did not start (see the message above)"
  if [ "$POD" = 1 ] && [ -z "${RUNPOD_POD_ID:-}" ]; then
    warn "RUNPOD_POD_ID is not set: open port $PORT through your provider's proxy or an SSH tunnel"
  fi
fi

say "ready: $FLUXNB (model: $MODEL)"
say "check everything with: $FLUXNB doctor"
exit "$STATUS"
