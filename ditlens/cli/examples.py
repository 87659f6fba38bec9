"""The examples each subcommand's `--help` ends with (argparse epilogs)."""

EXAMPLES = {
    "generate": """examples:
  ditlens generate --prompt "a large red circle in the center on a gray background" --seeds 0 1 2 3
  ditlens generate --prompts-file prompts.txt --steps 24 --guidance 5 --out runs/gen

prompts.txt (one prompt per line):
  a large red circle in the center on a gray background
  a small blue square on the left and a large yellow triangle on the right on a black and white background""",
    "disrupt": """examples:
  ditlens disrupt                                   # built-in model: top/bottom/random-k, k = 1 2 4 8
  ditlens disrupt --ks 1 2 4 --rules top random --draws 5 --window 0 4
  ditlens disrupt --model ./flux-schnell --dtype bfloat16 --device cuda --prompt "a corgi" --steps 4""",
    "segment": """examples:
  ditlens segment                                   # built-in model, mIoU against exact ground truth
  ditlens segment --k 2 --site single_transformer_blocks.2 --step 4
  ditlens segment --model ./flux-dev --device cuda --dtype bfloat16 --prompts-file p.txt --truth-dir masks/""",
    "transport": """examples:
  ditlens transport --source "a large red circle in the center on a gray background" \\
                    --target "a large blue square in the center on a gray background"
  ditlens transport --source "a large red circle in the center on a gray background" \\
                    --target "a large blue square in the center on a gray background" \\
                    --alpha 0.5 --mask union --window 0 4
  ditlens transport --reference runs/transport/source.png --out runs/transport-image \\
                    --reference-prompt "a large red circle in the center on a gray background" \\
                    --target "a large blue square in the center on a black background"   # the first run's source
  ditlens transport --reference runs/transport/source.png --reference-path invert --out runs/transport-invert \\
                    --target "a large blue square in the center on a gray background"   # ODE inversion""",
    "interpolate": """examples:
  ditlens interpolate --source "a large red circle in the center on a gray background" \\
                      --target "a large blue square in the center on a gray background" --alphas 0 0.25 0.5 0.75 1
  ditlens interpolate --source "a large red circle in the center on a gray background" \\
                      --target "a large blue square in the center on a gray background" \\
                      --over k --ks 2 8 32 64   # at alpha 1
  ditlens interpolate --source "a large red circle in the center on a gray background" \\
                      --target "a large blue square in the center on a gray background" \\
                      --over window --windows 0:2 0:4 4:8""",
    "demo": """examples:
  ditlens demo                      # writes runs/demo/index.html (open it in a browser)
  ditlens demo --out /tmp/demo --seed 3""",
    "sweep": """examples:
  ditlens sweep study.toml                                  # one process; rerun to finish after a crash
  torchrun --nproc-per-node 4 -m ditlens.cli sweep study.toml   # 4 processes (GPUs with device = "cuda")
  ditlens sweep study.toml --merge                          # tables (CSV, JSON) and a figure in OUT/summary/

study.toml (TOML; every key in docs/scale.md):
  seeds = [0, 1]
  prompts = ["a large red circle in the center on a gray background"]
  [model]
  name = "builtin"
  [generation]
  steps = 8
  [[jobs]]
  command = "disrupt"
  rule = ["top", "random"]
  k = [1, 4]""",
    "bench": """examples:
  ditlens bench findings --quick          # findings 1 and 2 on the built-in model, < 10 min on a 2-core CPU
  ditlens bench transport --quick         # finding 3, both uses and the chosen defaults
  ditlens bench findings --device cuda    # the full run (GPU recommended)
  ditlens bench findings --quick --model runs/v2-s/model --classifier shipped
                                          # a model `python -m ditlens.builtin.train` wrote (world v1 or v2)
  ditlens bench findings --model ./flux-schnell --prompts prompts.txt --segmenter ./segformer --clip ./clip
                                          # the paper's protocol on a real pipeline (docs/scores.md)
  ditlens bench transport --model ./flux-schnell --pairs pairs.txt --clip ./clip --seeds 0 1
                                          # transport vs random-k, text-embedding interpolation, pixel blending

pairs.txt (one pair per line, source prompt | target prompt):
  a red sports car on a street | a bicycle on a street
  a corgi on a sofa | a cat on a sofa""",
    "app": """examples:
  ditlens app                                    # built-in model at http://127.0.0.1:7860
  ditlens app --port 8080
  ditlens app --model black-forest-labs/FLUX.1-schnell --dtype bfloat16 --device cuda""",
    "find": """examples:
  ditlens find                                   # built-in model, example prompts
  ditlens find --prompt "a large red circle on the left on a gray background" --seeds 0 1 2 --k 2
  ditlens find --model black-forest-labs/FLUX.1-schnell --dtype bfloat16 --device cuda \\
      --prompt "a photo of a corgi" --steps 4 --out runs/flux-find""",
}
