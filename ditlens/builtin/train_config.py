"""The settings of a training run of the built-in model: `TrainConfig` (its defaults are the
shipped model's run, with the reason for each), the model ladder on both worlds (`RUNGS`) and
reading a run's settings back from its folder."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from .text_encoder import WORLDS, scenes_of


@dataclass
class TrainConfig:
    out: Path = Path("runs/builtin")
    steps: int = 8509  # the shipped run: 450 s on one H200 at ~19 steps/s (compiled, bf16); loss had flattened
    batch_size: int = 512  # flow-matching loss is noisy in t; big batches smooth it and keep the GPU busy
    lr: float = 3e-4  # AdamW rate that trained the probe (hidden 384) stably
    warmup_steps: int = 300  # avoids early Adam blow-ups with adaLN-Zero layers
    decay_fraction: float = 0.2  # linear LR decay over the last 20% of steps: sharper final weights
    weight_decay: float = 0.0  # DiT recipes use none; infinite procedural data, no overfitting
    grad_clip: float = 1.0  # guards against rare loss spikes at t near 0/1
    ema_decay: float = 0.999  # ~1000-step horizon: right for a run of a few thousand steps
    caption_dropout: float = 0.1  # share of empty captions, for classifier-free guidance
    # Model: sized so 8 images x 16 steps with CFG take well under 20 s on a 2-core CPU.
    hidden_size: int = 256  # 4 heads of 64; width 384 was ~2x slower on CPU
    num_heads: int = 4  # head dim 64 = axes_dims_rope (16, 24, 24)
    num_double_blocks: int = 3  # dual-stream blocks: text and image keep separate weights
    num_single_blocks: int = 5  # single-stream blocks: joint sequence
    text_layers: int = 2  # captions come from a tiny grammar; 2 layers bind words to objects
    max_length: int = 32  # [CLS] + the longest caption (29 words, 3 objects and a split background)
    patch_size: int = 2  # 32x32 RGB -> 256 tokens of 12 values
    seed: int = 0  # model init, data order, noise
    num_workers: int = 8  # scene rendering in worker processes keeps up with the GPU (batches depend on step only)
    log_every: int = 250  # steps between loss lines in the log
    sample_every: int = 2000  # steps between sample grids (EMA weights)
    sample_steps: int = 8  # Euler steps for the grids (the pipeline's default)
    sample_guidance: float = 4.0  # CFG scale for the grids (the pipeline's default)
    compile: bool = True  # CUDA only: ~3x the eager speed on an H200 (launch-bound model), ~1 min to compile
    time_limit_s: float = 0.0  # >0: after step 500 cut `steps` to what fits in this many seconds (LR decay kept)
    save_dtype: str = "float16"  # keeps the shipped folder under 50 MB; fp16 has more mantissa than bf16
    world: str = "v1"  # procedural world (text_encoder.WORLDS): v1 = scenes.py (the shipped model's), v2 = scenes_v2.py
    size: str = ""  # the rung of RUNGS[world] these settings came from ("" = none); recorded, not read by train()

    @property
    def scenes(self) -> ModuleType:
        """The world's scenes module (grammar, image size, sampler)."""
        return scenes_of(self.world)

    def validate(self) -> None:
        if self.world not in WORLDS:
            raise ValueError(f"Unknown world {self.world!r}; allowed: {', '.join(WORLDS)}")
        if self.size and self.size not in RUNGS.get(self.world, {}):
            allowed = ", ".join(RUNGS.get(self.world, {})) or "none"
            raise ValueError(f"Unknown size {self.size!r} for world {self.world}; allowed: {allowed}")
        scenes = self.scenes
        longest = getattr(scenes, "MAX_CAPTION_WORDS", 0)
        if self.max_length < longest + 1:
            raise ValueError(
                f"max_length {self.max_length} is too short for world {self.world}: its longest caption "
                f"has {longest} words, so at least {longest + 1} positions ([CLS] + words) are needed"
            )
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads}")
        if (self.hidden_size // self.num_heads) % 8:
            raise ValueError(f"head dim {self.hidden_size // self.num_heads} must be a multiple of 8 (RoPE axes)")
        if scenes.IMAGE_SIZE % self.patch_size:
            raise ValueError(
                f"patch_size {self.patch_size} must divide the image size {scenes.IMAGE_SIZE} of world {self.world}"
            )
        if not 0 <= self.caption_dropout < 1:
            raise ValueError(f"caption_dropout must be in [0, 1), got {self.caption_dropout}")
        if self.save_dtype not in ("float32", "float16", "bfloat16"):
            raise ValueError(f"save_dtype {self.save_dtype!r}; allowed: float32, float16, bfloat16")
        for name in ("steps", "batch_size", "max_length"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


# The model ladder: one command per rung, `--world v1|v2 --size s|m|l`. Every rung keeps 256
# image tokens (v1: 32x32 px in 2x2 patches of 12 values; v2: 64x64 px in 4x4 patches of 48
# values; FLUX.1 packs 64 latent values per token). A v2 rung and the v1 rung of its size share
# width, depth and schedule, so that the two worlds' rows differ by their data alone.
# Measured on one H200 (bf16, compiled; docs/ladder.md), with s, m and the v2 classifier sharing
# the GPU at first:
#   v2 s: 18.5 steps/s at steps 200-500 (shared); 6501 steps took 426 s with the ~60 s compile
#   v2 m: 8.5 steps/s at steps 200-500 (shared), 17.5 alone in its 2nd chunk; 7663 steps took 708 s
#   v2 l: 11.3 steps/s alone after the compile; 6000 steps took 624 s in 2 chunks; on the 12,000-step
#         schedule, 11024 steps took 1076 s in one chunk (the time limit's cut at 10.9 steps/s) at peak
#         rate 2e-4, and 12000 steps 1148 s at 6e-4 (docs/results/ladder/v2-l-trials/ and v2-l/)
_M = dict(hidden_size=384, num_heads=6, num_double_blocks=4, num_single_blocks=8, steps=10000, batch_size=256)
_L = dict(
    hidden_size=512,
    num_heads=8,
    num_double_blocks=5,
    num_single_blocks=10,
    steps=12000,  # v2 l: 6,000 steps still fell 8 % per 1,000 at the peak rate; ~19 min alone on one H200
    batch_size=256,
    lr=6e-4,  # v2 l at 2e-4 -> 6e-4: loss 0.0216 -> 0.0201, per doubling of steps -22 % -> -16 % (docs/ladder.md)
    warmup_steps=500,
)
_V2 = dict(patch_size=4, max_length=scenes_of("v2").MAX_CAPTION_WORDS + 1, text_layers=2, batch_size=256)
RUNGS: dict[str, dict[str, dict]] = {
    "v1": {
        "s": {},  # the shipped model's run: TrainConfig's defaults (batch 512)
        "m": _M,  # 40 M: the width and depth of issue 21's 3x probe
        "l": _L,  # 88 M
    },
    "v2": {
        # the shipped v1 architecture (12.5 M transformer parameters) on the richer world
        "s": dict(_V2, hidden_size=256, num_heads=4, num_double_blocks=3, num_single_blocks=5, steps=8000),
        "m": dict(_V2, **_M),
        "l": dict(_V2, **_L),
    },
}


def rung_config(world: str, size: str, **overrides) -> TrainConfig:
    """The TrainConfig of one rung of the ladder, with `overrides` on top."""
    if world not in RUNGS:
        raise ValueError(f"World {world!r} has no model ladder; worlds with one: {', '.join(RUNGS)}")
    if size not in RUNGS[world]:
        raise ValueError(f"Unknown size {size!r} for world {world}; allowed: {', '.join(RUNGS[world])}")
    return TrainConfig(**{**RUNGS[world][size], "world": world, "size": size, **overrides})


def load_config(folder: str | Path) -> TrainConfig:
    """The TrainConfig a run wrote to `folder/train_config.json`, with `out` = `folder`."""
    path = Path(folder) / "train_config.json"
    if not path.is_file():
        raise FileNotFoundError(f"No training run at {folder} (needs train_config.json, written by train())")
    values = json.loads(path.read_text())
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"{path} has settings this version does not know: {sorted(unknown)}")
    values["out"] = Path(folder)
    return TrainConfig(**values)
