#!/usr/bin/env bash
# The GPU benchmark (benchmarks/bench_gpu.py) in one shot on a borrowed GPU machine that
# has torch but no diffusers, peft, piexif or torchao, and no network.
#
#   benchmarks/device_run.sh --prepare    download the missing wheels into .wheels/ (needs PyPI; < 40 MiB)
#   benchmarks/device_run.sh --print      print the one command to run there, with .wheels carried along
#   benchmarks/device_run.sh --rehearse   run that same command here on the CPU (--scale small, a short budget)
#   benchmarks/device_run.sh --help
#
# The command installs the wheels into a folder of its own (never over torch), puts that
# folder and the checkout on PYTHONPATH, runs the harness with a time budget that leaves a
# minute of the machine's limit spare (BENCH_LIMIT_S, default 540: run it with timeout_s
# 540, which leaves the session's 15 device minutes room for the start and one short call
# more), and writes bench_gpu.json (rewritten after every row), bench_gpu.log (the whole
# output) and install.log into $OUT, the folder that comes back from that machine.
# Environment: OUT (required where it runs), BENCH_LIMIT_S, BENCH_ARGS (more harness
# arguments, e.g. "--configs levers"), PYTHON (default python3). --rehearse writes into
# benchmarks/rehearsal/ (ignored) with PYTHON=.venv/bin/python unless set.
# Exit status: the harness's (124: stopped at the time limit, every finished row kept);
# 2 bad usage; 3 the wheels are missing or would not install.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHEELS="$ROOT/.wheels"
MAX_MIB=40
# What the machine lacks (its package list: /work/.library/device/KINDS.md). Versions: diffusers
# and piexif as constraints.txt pins them; torchao 0.17 is the release built for torch 2.11;
# peft for LoRAs. None of them brings a torch of its own (--no-deps).
EXTRA_WHEELS=("peft==0.21.2" "torchao==0.17.0")
PINNED=(diffusers piexif)

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
die() { printf 'device_run.sh: %s\n' "$*" >&2; exit "${2:-1}"; }

pin() {  # the version constraints.txt pins for $1
  local line
  line="$(grep -i "^$1==" "$ROOT/constraints.txt" | head -1)" || die "constraints.txt pins no $1"
  printf '%s\n' "$line"
}

prepare() {
  local specs=() name size f
  for name in "${PINNED[@]}"; do specs+=("$(pin "$name")"); done
  specs+=("${EXTRA_WHEELS[@]}")
  rm -rf "$WHEELS"
  mkdir -p "$WHEELS"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$WHEELS" "${specs[@]}" 2>&1 | grep -v "^WARNING: Location" || true
  for name in "${specs[@]}"; do
    ls "$WHEELS/${name%%==*}-${name#*==}-"*.whl >/dev/null 2>&1 || die "no wheel for $name was downloaded"
  done
  for f in "$WHEELS"/*.whl; do
    case "$(basename "$f")" in
      torch-*|torch_*|nvidia*|triton*) die "$(basename "$f") would replace the machine's torch" ;;
    esac
    printf '  %6d KiB  %s\n' "$(( $(stat -c %s "$f") / 1024 ))" "$(basename "$f")"
  done
  size="$(du -sm "$WHEELS" | cut -f1)"
  [ "$size" -lt "$MAX_MIB" ] || die ".wheels/ is ${size} MiB (at most $MAX_MIB: it travels with the working tree)"
  echo "${size} MiB in $WHEELS (carry .wheels; run the command --print shows)"
}

# The one command: a single line, under 2,000 characters, run from the checkout's root.
command_line() {
  cat <<'EOF' | tr '\n' ' ' | sed 's/  */ /g; s/ $//'
set -o pipefail; O="${OUT:?OUT is not set}"; L="${BENCH_LIMIT_S:-540}"; P="${PYTHON:-python3}";
S=/tmp/fluxnb-site; mkdir -p "$O";
ls .wheels/*.whl >/dev/null 2>&1 || { echo "no .wheels/: run benchmarks/device_run.sh --prepare and carry .wheels"; exit 3; };
"$P" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$S" .wheels/*.whl
>"$O/install.log" 2>&1 || { tail -5 "$O/install.log"; exit 3; };
export PYTHONPATH="$S:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 FLUXNB_CACHE_DIR="${FLUXNB_CACHE_DIR:-/tmp/fluxnb-cache}";
B=$((L - 60 - SECONDS)); [ "$B" -gt 0 ] || { echo "no time left (BENCH_LIMIT_S=$L)"; exit 3; };
timeout -k 10 $((B + 20)) "$P" benchmarks/bench_gpu.py --budget-s "$B" --json "$O/bench_gpu.json" ${BENCH_ARGS:-}
2>&1 | tee "$O/bench_gpu.log"
EOF
}

rehearse() {
  local out="$ROOT/benchmarks/rehearsal"
  [ -d "$WHEELS" ] || die "no .wheels/: run $0 --prepare first" 3
  rm -rf "$out"
  mkdir -p "$out"
  cd "$ROOT"
  OUT="$out" PYTHON="${PYTHON:-$ROOT/.venv/bin/python}" BENCH_LIMIT_S="${BENCH_LIMIT_S:-300}" \
    BENCH_ARGS="${BENCH_ARGS:---scale small --steps 4 --runs 2 --configs core,fuse-qkv,attn-flex,compile+autotune}" bash -c "$(command_line)"
}

case "${1:-}" in
  --prepare) prepare ;;
  --print) command_line; echo ;;
  --rehearse) rehearse ;;
  -h|--help) usage ;;
  *) usage >&2; exit 2 ;;
esac
