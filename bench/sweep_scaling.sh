#!/usr/bin/env bash
# Scaling of `ditlens sweep` over GPUs: the same sweep on 1 and on N GPUs (torchrun, NCCL),
# each into a fresh folder, then the efficiency T1 / (N * TN).
#
#   bash bench/sweep_scaling.sh            # 1 and 2 GPUs
#   bash bench/sweep_scaling.sh 1 2 4      # 1, 2 and 4 GPUs
#
# Run from the repository root on a machine with CUDA GPUs. Needs python3 with torch (CUDA)
# and diffusers importable (e.g. PYTHONPATH=.:/tmp/site); ditlens itself is taken from the
# working tree. Writes to $OUT (default: runs/sweep-scaling): sweep_scaling.json (the
# numbers), sweep_scaling.log (everything the runs printed) and summary.png (the merged
# N-GPU sweep).
#
# Two times per run. "wall": the whole torchrun command. "items": wall minus the fixed cost
# (start-up, imports, model load, planning), measured by rerunning the finished sweep, which
# skips every item. Efficiency is given for both; the items figure is the sharding itself.
# The 1-GPU and N-GPU results are also compared file by file: same device type, same
# settings, so they must be identical.
set -euo pipefail

GPUS=("$@")
[ ${#GPUS[@]} -gt 0 ] || GPUS=(1 2)
OUT=${OUT:-runs/sweep-scaling}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}   # DEVICE=cpu SEEDS=1 runs a smoke test on CPU processes (gloo)
SEEDS=${SEEDS:-8}
STEPS=${STEPS:-16}       # the built-in model's default
# One CPU thread per process in every run (torchrun sets this only for 2+ processes): the
# work is on the GPUs, and CPU results are bitwise equal only for equal thread counts.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/sweep-scaling.XXXXXX)
LOG="$OUT/sweep_scaling.log"
: >"$LOG"

if [ "$DEVICE" = cpu ]; then AVAILABLE=$(nproc); else AVAILABLE=$($PY -c "import torch; print(torch.cuda.device_count())"); fi
echo "GPUs visible: $AVAILABLE; asked: ${GPUS[*]}" | tee -a "$LOG"
$PY -c "import torch; print(torch.__version__, [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])" | tee -a "$LOG"

# The built-in model at its default 16 steps: 4 prompts x 8 seeds x 11 settings = 352 items.
cat >"$WORK/scaling.toml" <<EOF
seeds = {from = 0, count = $SEEDS}

[model]
name = "builtin"
device = "$DEVICE"      # cuda: each torchrun rank takes cuda:LOCAL_RANK

[generation]
steps = $STEPS

[prompts]
list = [
  "a large red circle in the center on a gray background",
  "a large blue square on the left and a small yellow triangle on the right on a black background",
  "a large green diamond at the top on a white and navy background",
  "a small pink cross at the bottom and a large orange circle at the top on a brown background",
]

[[jobs]]
command = "find"
k = 4

[[jobs]]
command = "disrupt"
rule = ["top", "random"]
k = [1, 4]
draws = 2

[[jobs]]
command = "segment"
k = 4

[[jobs]]
command = "transport"
target = "a large blue square in the center on a gray background"
alpha = [0.5, 1.0]
EOF

seconds() { $PY -c 'import time; print(f"{time.monotonic():.3f}")'; }

declare -A WALL FIXED
for n in "${GPUS[@]}"; do
  if [ "$n" -gt "$AVAILABLE" ]; then
    echo "skip $n GPUs: only $AVAILABLE visible" | tee -a "$LOG"
    continue
  fi
  folder="$WORK/run-$n"
  for pass in items fixed; do  # the second pass finds every item done: the fixed cost
    start=$(seconds)
    $PY -m torch.distributed.run --standalone --nproc-per-node "$n" -m ditlens.cli sweep "$WORK/scaling.toml" \
        --out "$folder" --quiet >>"$LOG" 2>&1
    end=$(seconds)
    t=$($PY -c "print(round($end - $start, 3))")
    echo "$n GPU(s), $pass pass: $t s" | tee -a "$LOG"
    if [ "$pass" = items ]; then WALL[$n]=$t; else FIXED[$n]=$t; fi
  done
done

# results, efficiency and the 1-vs-N comparison
$PY - "$WORK" "$OUT" "${GPUS[@]}" <<'EOF' | tee -a "$LOG"
import json, sys
from pathlib import Path

work, out, gpus = Path(sys.argv[1]), Path(sys.argv[2]), [int(g) for g in sys.argv[3:]]
times = {}
for line in (out / "sweep_scaling.log").read_text().splitlines():
    if " GPU(s), " in line and line.endswith(" s"):
        n, rest = line.split(" GPU(s), ")
        times.setdefault(int(n), {})[rest.split(" pass")[0]] = float(rest.split(": ")[1][:-2])
ran = [n for n in gpus if n in times]
items = json.loads((work / f"run-{ran[0]}" / "manifest.json").read_text())["n_items"]
report = {"items": items, "runs": {}}
base = ran[0]
for n in ran:
    wall, fixed = times[n]["items"], times[n]["fixed"]
    report["runs"][n] = {"wall_s": wall, "fixed_s": fixed, "items_s": round(wall - fixed, 3),
                         "items_per_s": round(items / max(wall - fixed, 1e-9), 2)}
for n in ran:
    r, b = report["runs"][n], report["runs"][base]
    scale = n / base
    r["efficiency_wall"] = round(b["wall_s"] / (scale * r["wall_s"]), 3)
    r["efficiency_items"] = round(b["items_s"] / (scale * r["items_s"]), 3)

# same device type and settings: every file of every item must be identical
reference = work / f"run-{base}" / "items"
for n in ran[1:]:
    other = work / f"run-{n}" / "items"
    differ = [p.name for p in sorted(reference.iterdir())
              if (p / "result.json").read_bytes() != (other / p.name / "result.json").read_bytes()]
    report["runs"][n]["items_differing_from_%d_gpu" % base] = len(differ)
(out / "sweep_scaling.json").write_text(json.dumps(report, indent=1) + "\n")
print(json.dumps(report, indent=1))
for n in ran[1:]:
    r = report["runs"][n]
    print(f"{n} GPUs vs {base}: efficiency {r['efficiency_items']:.2f} (items only), {r['efficiency_wall']:.2f} (wall)")
EOF

last=$(for n in "${GPUS[@]}"; do [ "$n" -le "$AVAILABLE" ] && echo "$n"; done | tail -1)
$PY -m ditlens.cli sweep "$WORK/scaling.toml" --out "$WORK/run-$last" --merge >>"$LOG" 2>&1 \
  && cp "$WORK/run-$last/summary/summary.png" "$OUT/summary.png"
echo "wrote $OUT/sweep_scaling.json, $OUT/sweep_scaling.log, $OUT/summary.png"
