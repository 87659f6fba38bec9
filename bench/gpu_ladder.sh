#!/usr/bin/env bash
# A rung of the model ladder (docs/ladder.md) on the GPU machine: train it in chunks that each
# fit one device command, then run the same three measurements the CPU rungs have, and pack
# what the ladder table reads (never the weights) for the trip back.
#
#   bash bench/gpu_ladder.sh train SIZE LIMIT_S STOP_S   # first chunk, or the next: resumes runs/v2-SIZE
#   bash bench/gpu_ladder.sh bench SIZE                  # find + bench findings/transport --quick
#
# train: `python -m ditlens.builtin.train --world v2 --size SIZE --time-limit-s LIMIT_S` (the
# whole run's budget, from which the trainer picks its step count), stopping after STOP_S with
# a checkpoint; a later call with the same SIZE resumes it. Copies train.log, train_config.json,
# the sample captions and the newest sample grid to $OUT.
# bench: writes $OUT/v2-SIZE-results.tgz with v2-SIZE-find/, v2-SIZE-findings/ and
# v2-SIZE-transport/, as docs/results/ladder/ holds them for the CPU rungs. The commit the
# reports name comes from DITLENS_COMMIT (the device's .git is a stale copy).
#
# Needs python3 with torch (CUDA) and diffusers 0.42.1 importable (CONTRIBUTING.md, "GPU benches").
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:-bench/out}"
mkdir -p "$OUT"
size="$2"
run="runs/v2-$size"
classifier=ditlens/builtin/weights/classifier-v2

case "$1" in
train)
  if [ -f "$run/checkpoint.pt" ]; then
    python3 -m ditlens.builtin.train --resume "$run" --num-workers 12 --stop-after-s "$4"
  else
    python3 -m ditlens.builtin.train --world v2 --size "$size" --out "$run" --num-workers 12 \
      --time-limit-s "$3" --stop-after-s "$4"
  fi 2>&1 | grep -v "it/s]" | tail -25
  cp "$run/train.log" "$run/train_config.json" "$run/samples/captions.txt" "$OUT/"
  last=$(ls "$run"/samples/step_*.png 2>/dev/null | tail -1 || true)  # the newest grid: the final one at the end
  if [ -n "$last" ]; then cp "$last" "$OUT/samples_$(basename "$last")"; fi
  ;;
bench)
  results="$OUT/work"
  mkdir -p "$results"
  mapfile -t prompts < <(python3 -c "
from ditlens.bench import held_out_prompts
from ditlens.builtin import scenes_v2
print('\n'.join(held_out_prompts(4, world=scenes_v2)))")
  args=()
  for p in "${prompts[@]}"; do args+=(--prompt "$p"); done
  python3 -m ditlens.cli find --model "$run/model" "${args[@]}" --device cuda --out "$results/v2-$size-find" --quiet
  rm -f "$results/v2-$size-find/stats.safetensors"  # MBs; channels.json holds what the table reads
  for suite in findings transport; do
    python3 -m ditlens.cli bench "$suite" --model "$run/model" --quick --classifier "$classifier" --device cuda \
      --out "$results/v2-$size-$suite"
  done
  tar -czf "$OUT/v2-$size-results.tgz" -C "$results" .
  rm -rf "$results"
  ;;
*)
  echo "usage: bash bench/gpu_ladder.sh train SIZE LIMIT_S STOP_S | bench SIZE" >&2
  exit 2
  ;;
esac
