#!/usr/bin/env bash
# Every GPU measurement of issues 5 and 6 in one unattended go, in under 10 minutes, on one CUDA GPU
# (written for an H100 80 GB: two full-size FLUX.1 transformers in bf16, 48 GB, must fit).
# Everything goes to $OUT/gpu_bench.log (bench/out/gpu_bench.log where OUT is unset).
#
#   bash bench/gpu_all.sh                 # from the repo root; ditlens imports from the tree
#
# Needs python3 with torch (CUDA) and diffusers 0.42.1 importable. On a machine without
# diffusers, install wheels first (e.g. into /tmp/site, then PYTHONPATH=/tmp/site; this script
# prepends the repo root and keeps what PYTHONPATH already holds). diffusers 0.42.1 needs
# importlib_metadata, filelock, huggingface-hub>=1.32, numpy, regex, requests, safetensors>=0.8
# and Pillow (the device image's python had most of them in 2026-11; check with pip there).
# nnsight is optional (bench/nnsight_compare.py then compares ditlens with naive hooks only);
# to include it, carry nnsight 0.8.1 and those of its needs the device lacks (greenlet,
# pydantic with pydantic-core, annotated-types and typing-inspection, websocket-client,
# zstandard; the device image had the rest in 2026-11). bench/offload.py needs accelerate.
#
# Order: cheap and independent first, torch.compile last, each step under `timeout` against
# what is left of the budget, so one slow step cannot cost the others their figures.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/out}"
mkdir -p "$OUT"
LOG="$OUT/gpu_bench.log"
PY="${PYTHON:-python3}"
BUDGET_S="${BUDGET_S:-470}"  # the whole script; under 8 minutes with Python start-up and slack
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
start=$SECONDS

step() {  # step LIMIT_S SCRIPT ARGS...: run one bench script within LIMIT_S and the budget left
  local limit=$1 left
  shift
  left=$((BUDGET_S - (SECONDS - start)))
  ((limit > left)) && limit=$left
  echo "================================================================================"
  if ((limit < 20)); then
    echo "SKIPPED (budget spent, ${left} s left): $*"
    return
  fi
  echo "\$ $PY $* (limit ${limit} s, ${left} s of the budget left)"
  timeout --signal=INT --kill-after=15 "$limit" "$PY" "$@"
  local rc=$?
  ((rc == 124)) && echo "TIMED OUT after ${limit} s: $*"
  ((rc != 0 && rc != 124)) && echo "FAILED with exit code $rc: $*"
  echo "(step took $((SECONDS - start)) s into the run)"
}

{
  echo "# ditlens GPU benchmarks (issue 6), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  if commit=$(git rev-parse --short HEAD 2>/dev/null); then
    git diff --quiet HEAD -- 2>/dev/null || commit="$commit (with uncommitted changes)"
  else
    commit="unknown (no git checkout)"
  fi
  echo "commit: $commit"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>&1
  "$PY" -c "import torch, diffusers; print('torch', torch.__version__, 'cuda', torch.version.cuda, '| diffusers', diffusers.__version__, '| gpu', torch.cuda.get_device_name())" || {
    echo "FATAL: python3 cannot import torch with CUDA and diffusers (see the header of this script)"
    exit 1
  }
  "$PY" -c "import nnsight; print('nnsight', nnsight.__version__)" 2>/dev/null || echo "nnsight: not installed (optional)"
  step 90 -m pytest -q -p no:cacheprovider tests/test_masks.py tests/test_cuda_graphs.py  # CUDA graphs equal the eager kernels
  step 80 bench/mask_cost.py --size flux-full
  step 80 bench/recording_overhead.py --model flux-full --repeats 10
  step 110 bench/transport_cost.py --pipeline flux-full
  step 120 bench/offload.py --modes model
  step 100 bench/nnsight_compare.py --model flux-full --repeats 10
  step 60 bench/transport_cost.py --device cuda
  step 60 bench/transport_parts.py --device cuda --repeats 15
  # compile: FLUX.1 width at reduced depth first (compiles in a fraction of the time), then
  # the whole model if the budget allows; the per-block overhead is what counts
  step 200 bench/recording_overhead.py --model flux-full --blocks 4,8 --compile --repeats 10
  step 400 bench/recording_overhead.py --model flux-full --compile --repeats 10
  echo "================================================================================"
  echo "total $((SECONDS - start)) s"
} 2>&1 | tee "$LOG"
