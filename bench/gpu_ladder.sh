#!/usr/bin/env bash
# A rung of the model ladder (docs/ladder.md) on the GPU machine: train it in chunks that each
# fit one device command, then run the same three measurements the CPU rungs have, and pack
# what the ladder table reads (never the weights) for the trip back.
#
#   bash bench/gpu_ladder.sh train RUNG LIMIT_S STOP_S [FLAGS]  # first chunk, or the next: resumes runs/RUNG
#   bash bench/gpu_ladder.sh bench RUNG                  # find + bench findings/transport --quick
#   bash bench/gpu_ladder.sh findings-full RUNG          # bench findings, full (64 captions)
#   bash bench/gpu_ladder.sh transport-full RUNG         # bench transport, full (32 pairs)
#
# RUNG: WORLD-SIZE (v1-m, v2-l, ...; a bare SIZE means v2-SIZE, as the first runs wrote it).
# train: `python -m ditlens.builtin.train --world WORLD --size SIZE --time-limit-s LIMIT_S` (the
# whole run's budget, from which the trainer picks its step count), stopping after STOP_S with
# a checkpoint; a later call with the same RUNG resumes it. FLAGS go to a fresh run's train
# command on top of the rung's settings (a trial: `--lr 6e-4 --steps 30000`); a resumed run keeps
# its own settings and refuses them. Copies train.log, train_config.json,
# the sample captions and the newest sample grid to $OUT/RUNG/, so that rungs trained side by
# side in one command keep their files apart.
# bench: writes $OUT/RUNG-results.tgz with RUNG-find/, RUNG-findings/ and RUNG-transport/, as
# docs/results/ladder/ holds them for the CPU rungs; findings-full and transport-full:
# $OUT/RUNG-findings-full.tgz, $OUT/RUNG-transport-full.tgz.
# The commit the reports name comes from DITLENS_COMMIT (the device's .git is a stale copy).
#
# Needs python3 with torch (CUDA) and diffusers 0.42.1 importable (CONTRIBUTING.md, "GPU benches").
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:-bench/out}"
mkdir -p "$OUT"
case "$2" in
*-*) world="${2%-*}" size="${2#*-}" ;;
*) world=v2 size="$2" ;;
esac
rung="$world-$size"
run="runs/$rung"
classifier=()  # world v1: the shipped classifier, the bench's default
if [ "$world" = v2 ]; then classifier=(--classifier ditlens/builtin/weights/classifier-v2); fi

case "$1" in
train)
  flags=("${@:5}")
  if [ -f "$run/checkpoint.pt" ] && [ ${#flags[@]} -gt 0 ]; then
    echo "gpu_ladder.sh: $run resumes with its own settings; drop the extra flags (${flags[*]})" >&2
    exit 2
  fi
  if [ -f "$run/checkpoint.pt" ]; then
    python3 -m ditlens.builtin.train --resume "$run" --num-workers 12 --stop-after-s "$4"
  else
    python3 -m ditlens.builtin.train --world "$world" --size "$size" --out "$run" --num-workers 12 \
      --time-limit-s "$3" --stop-after-s "$4" "${flags[@]}"
  fi 2>&1 | grep -v "it/s]" | tail -25
  mkdir -p "$OUT/$rung"
  cp "$run/train.log" "$run/train_config.json" "$run/samples/captions.txt" "$OUT/$rung/"
  last=$(ls "$run"/samples/step_*.png 2>/dev/null | tail -1 || true)  # the newest grid: the final one at the end
  if [ -n "$last" ]; then cp "$last" "$OUT/$rung/samples_$(basename "$last")"; fi
  ;;
bench)
  results="$OUT/work-$rung"
  mkdir -p "$results"
  mapfile -t prompts < <(python3 -c "
from ditlens.bench import held_out_prompts
from ditlens.builtin.text_encoder import scenes_of
print('\n'.join(held_out_prompts(4, world=scenes_of('$world'))))")
  args=()
  for p in "${prompts[@]}"; do args+=(--prompt "$p"); done
  python3 -m ditlens.cli find --model "$run/model" "${args[@]}" --device cuda --out "$results/$rung-find" --quiet
  rm -f "$results/$rung-find/stats.safetensors"  # MBs; channels.json holds what the table reads
  {
    printf 'ditlens find --model %q' "$run/model"
    printf ' --prompt %q' "${prompts[@]}"
    printf ' --device cuda --out %q --quiet\n\n' "$rung-find"
    printf '# run at commit %s on %s (torch %s), by `bash bench/gpu_ladder.sh bench %s`; the prompts are\n' \
      "${DITLENS_COMMIT:-unknown}" "$(python3 -c 'import torch; print(torch.cuda.get_device_name())')" \
      "$(python3 -c 'import torch; print(torch.__version__)')" "$rung"
    echo "# held_out_prompts(4, world=...) of ditlens.bench (held-out captions, never seen in training); its stats.safetensors is left out (MBs)"
  } > "$results/$rung-find/command.txt"
  for suite in findings transport; do
    python3 -m ditlens.cli bench "$suite" --model "$run/model" --quick "${classifier[@]}" --device cuda \
      --out "$results/$rung-$suite"
  done
  tar -czf "$OUT/$rung-results.tgz" -C "$results" .
  rm -rf "$results"
  ;;
findings-full | transport-full)
  suite="${1%-full}"
  results="$OUT/work-$rung-$1"
  mkdir -p "$results"
  python3 -m ditlens.cli bench "$suite" --model "$run/model" "${classifier[@]}" --device cuda \
    --out "$results/$rung-$1"
  tar -czf "$OUT/$rung-$1.tgz" -C "$results" .
  rm -rf "$results"
  ;;
*)
  echo "usage: bash bench/gpu_ladder.sh train RUNG LIMIT_S STOP_S [FLAGS] | bench RUNG | findings-full RUNG | transport-full RUNG" >&2
  exit 2
  ;;
esac
