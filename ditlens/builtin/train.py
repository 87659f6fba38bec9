"""Train the built-in model from scratch on procedural scenes (rectified flow).

    python -m ditlens.builtin.train --out runs/builtin --steps 6000 --seed 0
    python -m ditlens.builtin.train --world v2 --size m --out runs/v2-m    # a rung of RUNGS
    python -m ditlens.builtin.train --world v2 --size l --out runs/v2-l --stop-after-s 540
    python -m ditlens.builtin.train --resume runs/v2-l                     # the next chunk

Writes `OUT/train.log`, sample grids `OUT/samples/step_NNNNNN.png` (+ their captions) and
the pipeline `OUT/model` (diffusers `save_pretrained`, safetensors, weights in
`save_dtype`; `model_index.json` records the world whose grammar prompts follow). Nothing
is planted: any massive activations come from training alone.

`--world v1` (the default, `scenes.py`) is the shipped model's world and the defaults
below are its shipped run; `--world v2` (`scenes_v2.py`) needs `--size`, which picks a rung
of RUNGS (any flag given as well overrides the rung). `--stop-after-s` saves
`OUT/checkpoint.pt` and stops; `--resume OUT` continues from it with OUT's config and gives
the same weights as one uninterrupted run (same device).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
from diffusers.utils import logging as diffusers_logging
from PIL import Image
from tqdm import tqdm

from .pipeline import BuiltinPipeline, image_ids, patchify
from .text_encoder import WORLDS, BuiltinTextEncoder, WordTokenizer, scenes_of


@dataclass
class TrainConfig:
    out: Path = Path("runs/builtin")
    steps: int = 8509  # the shipped run: 450 s on one H200 at ~19 steps/s (compiled, bf16); loss had flattened
    batch_size: int = 512  # flow-matching loss is noisy in t; big batches smooth it and keep the GPU busy
    lr: float = 3e-4  # AdamW rate that trained the probe (hidden 384) stably
    warmup_steps: int = 300  # avoids early Adam blow-ups with adaLN-Zero layers
    decay_fraction: float = 0.2  # linear LR decay over the last 20% of steps: sharper final weights
    weight_decay: float = 0.0  # DiT/SD3 recipes use none; infinite procedural data, no overfitting
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
            raise ValueError(
                f"Unknown size {self.size!r} for world {self.world}; allowed: {', '.join(RUNGS.get(self.world, {})) or 'none'}"
            )
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


# The model ladder on world v2: one command per rung, `--world v2 --size s|m|l`. Every rung
# keeps 256 image tokens (64x64 px in 4x4 patches of 48 values; FLUX.1 packs 64 latent
# values per token) and the v2 grammar's 35 text positions. Measured on one H200 (bf16,
# compiled; docs/ladder.md), with s, m and the v2 classifier sharing the GPU at first:
#   s: 18.5 steps/s at steps 200-500 (shared); 6501 steps took 426 s with the ~60 s compile
#   m: 8.5 steps/s at steps 200-500 (shared), 17.5 alone in its 2nd chunk; 7663 steps took 708 s
#   l: not measured yet; ~7x s's per-token FLOPs (modulation layers left out): 2-3 chunks of --stop-after-s 540
_V2 = dict(patch_size=4, max_length=scenes_of("v2").MAX_CAPTION_WORDS + 1, text_layers=2, batch_size=256)
RUNGS: dict[str, dict[str, dict]] = {
    "v2": {
        # the shipped v1 architecture (12.5 M transformer parameters) on the richer world
        "s": dict(_V2, hidden_size=256, num_heads=4, num_double_blocks=3, num_single_blocks=5, steps=8000),
        # 40 M: the width and depth of issue 21's 3x probe
        "m": dict(_V2, hidden_size=384, num_heads=6, num_double_blocks=4, num_single_blocks=8, steps=10000),
        # 88 M; a lower rate and longer warm-up for the wider model
        "l": dict(
            _V2,
            hidden_size=512,
            num_heads=8,
            num_double_blocks=5,
            num_single_blocks=10,
            steps=6000,
            lr=2e-4,
            warmup_steps=500,
        ),
    },
}


def rung_config(world: str, size: str, **overrides) -> TrainConfig:
    """The TrainConfig of one rung of the ladder, with `overrides` on top."""
    if world not in RUNGS:
        raise ValueError(f"World {world!r} has no model ladder; worlds with one: {', '.join(RUNGS)}")
    if size not in RUNGS[world]:
        raise ValueError(f"Unknown size {size!r} for world {world}; allowed: {', '.join(RUNGS[world])}")
    return TrainConfig(**{**RUNGS[world][size], "world": world, "size": size, **overrides})


def rope_axes(head_dim: int) -> tuple[int, int, int]:
    """FLUX-style RoPE split of the head dim (FLUX.1: 128 -> (16, 56, 56)): a small axis 0,
    which stays unused (all ids 0), and equal row and column axes; each must be even."""
    axis0 = head_dim // 4
    rest = (head_dim - axis0) // 2
    if axis0 % 2 or rest % 2 or axis0 + 2 * rest != head_dim:
        raise ValueError(f"head dim {head_dim} does not split into even RoPE axes; use a multiple of 8")
    return (axis0, rest, rest)


def build_pipeline(config: TrainConfig) -> BuiltinPipeline:
    """A freshly initialised pipeline (adaLN-Zero: modulation and output layers start at 0)."""
    config.validate()
    head_dim = config.hidden_size // config.num_heads
    text_encoder = BuiltinTextEncoder(
        vocabulary=config.scenes.vocabulary(),
        max_length=config.max_length,
        hidden_size=config.hidden_size,
        num_layers=config.text_layers,
        num_heads=config.num_heads,
        world=config.world,
    )
    transformer = FluxTransformer2DModel(
        patch_size=1,  # the pipeline packs 2x2 pixel patches itself, as FLUX packs latents
        in_channels=3 * config.patch_size**2,
        out_channels=3 * config.patch_size**2,
        num_layers=config.num_double_blocks,
        num_single_layers=config.num_single_blocks,
        attention_head_dim=head_dim,
        num_attention_heads=config.num_heads,
        joint_attention_dim=config.hidden_size,
        pooled_projection_dim=config.hidden_size,
        guidance_embeds=False,
        axes_dims_rope=rope_axes(head_dim),
    )
    # adaLN-Zero (DiT): every block starts as the identity and the output as 0.
    for name, module in transformer.named_modules():
        if (
            name.endswith(("norm1.linear", "norm1_context.linear", "norm.linear", "norm_out.linear"))
            or name == "proj_out"
        ):
            torch.nn.init.zeros_(module.weight)
            torch.nn.init.zeros_(module.bias)
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    return BuiltinPipeline(
        transformer=transformer,
        text_encoder=text_encoder,
        scheduler=scheduler,
        image_size=config.scenes.IMAGE_SIZE,
        world=config.world,
    )


class _SceneBatches(torch.utils.data.Dataset):
    """Item `i` is the batch of step `first + i`: uint8 images `(B, 3, S, S)` and word ids
    `(B, L)`. Rendered on the fly (infinite data); a batch depends on (seed, step) only."""

    def __init__(
        self, steps: int, batch_size: int, seed: int, tokenizer: WordTokenizer, world: str = "v1", first: int = 0
    ):
        self.steps, self.batch_size, self.seed, self.tokenizer = steps, batch_size, seed, tokenizer
        self.world, self.first = world, first

    def __len__(self) -> int:
        return self.steps - self.first

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        step = self.first + i
        batch = scenes_of(self.world).sample_batch(self.batch_size, seed=self.seed * 1_000_003 + step, split="train")
        images = ((batch.images + 1) * 127.5).round().to(torch.uint8)  # exact: renders are uint8 pixels
        return images, self.tokenizer(batch.captions)


def _grid(images: np.ndarray, columns: int, scale: int = 4) -> Image.Image:
    """(N, H, W, 3) floats in [0, 1] -> one PNG-ready image, each tile upscaled `scale`x."""
    n, h, w, _ = images.shape
    rows = math.ceil(n / columns)
    canvas = np.ones((rows * (h + 1) + 1, columns * (w + 1) + 1, 3), np.float32)
    for i, img in enumerate(images):
        r, c = divmod(i, columns)
        canvas[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + c * (w + 1) : 1 + c * (w + 1) + w] = img
    pil = Image.fromarray((canvas * 255).round().astype(np.uint8))
    return pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)


class _Log:
    def __init__(self, path: Path):
        self.file = path.open("a")

    def __call__(self, message: str) -> None:
        tqdm.write(message)
        self.file.write(message + "\n")
        self.file.flush()


def _lr_factor(step: int, total_steps: int, config: TrainConfig) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    decay_start = total_steps * (1 - config.decay_fraction)
    if step < decay_start:
        return 1.0
    return max(0.0, (total_steps - step) / max(1.0, total_steps - decay_start))


_RATE_FROM, _RATE_TO = 200, 500  # steps between which the time limit measures the speed (after compiling)


CHECKPOINT = "checkpoint.pt"


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


def train(config: TrainConfig, *, resume: bool = False, stop_after_s: float = 0.0) -> BuiltinPipeline:
    """Train and save; returns the pipeline with the EMA weights (in float32).

    `stop_after_s > 0`: after that many seconds of this call, save `OUT/checkpoint.pt` (model,
    EMA, optimizer, noise generator, step) and return early, without writing `OUT/model`.
    `resume`: continue from that checkpoint; `config` must be the run's (see `load_config`).
    Batches depend on the step alone and the generator state is restored, so chunks give the
    weights of one uninterrupted run on the same device."""
    config.validate()
    if stop_after_s < 0:
        raise ValueError(f"stop_after_s must be >= 0, got {stop_after_s}")
    scenes = config.scenes
    out = Path(config.out)
    checkpoint_path = out / CHECKPOINT
    checkpoint = None
    if resume:
        if not checkpoint_path.is_file():
            raise FileNotFoundError(
                f"Nothing to resume at {out}: no {CHECKPOINT} (a run writes one when --stop-after-s stops it)"
            )
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        saved = dict(checkpoint["config"], out=str(out), num_workers=config.num_workers)
        now = json.loads(json.dumps(dict(dataclasses.asdict(config), out=str(out)), default=str))
        if saved != now:
            raise ValueError(
                f"{checkpoint_path} was written with another config; resume with `--resume {out}` "
                "(it reads OUT/train_config.json)"
            )
    (out / "samples").mkdir(parents=True, exist_ok=True)
    log = _Log(out / "train.log")
    log(f"config: {json.dumps(dataclasses.asdict(config), default=str)}")
    (out / "train_config.json").write_text(json.dumps(dataclasses.asdict(config), default=str, indent=2))

    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        # cuDNN attention's backward failed for this model on torch 2.11; flash/mem-efficient are fine.
        torch.backends.cuda.enable_cudnn_sdp(False)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        log(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    else:
        log(f"device: cpu, torch {torch.__version__}")

    pipe = build_pipeline(config)
    transformer, text_encoder = pipe.transformer.to(device), pipe.text_encoder.to(device)
    params = [p for m in (transformer, text_encoder) for p in m.parameters()]
    n_params = {
        name: sum(p.numel() for p in m.parameters())
        for name, m in (("transformer", transformer), ("text_encoder", text_encoder))
    }
    log(f"parameters: {n_params}")

    ema_transformer, ema_text_encoder = copy.deepcopy(transformer).eval(), copy.deepcopy(text_encoder).eval()
    ema_params = [p for m in (ema_transformer, ema_text_encoder) for p in m.parameters()]
    for p in ema_params:
        p.requires_grad_(False)
    ema_pipe = BuiltinPipeline(ema_transformer, ema_text_encoder, pipe.scheduler, image_size=scenes.IMAGE_SIZE)
    ema_pipe.set_progress_bar_config(disable=True)

    optimizer = torch.optim.AdamW(
        params, lr=config.lr, betas=(0.9, 0.99), weight_decay=config.weight_decay, fused=device.type == "cuda"
    )
    gen = torch.Generator(device).manual_seed(config.seed)
    first_step, total_steps, prior_s, rate_start_s = (
        0,
        config.steps,
        0.0,
        0.0,
    )  # total_steps may be cut once to fit `time_limit_s`
    if checkpoint is not None:
        for module, key in (
            (transformer, "transformer"),
            (text_encoder, "text_encoder"),
            (ema_transformer, "ema_transformer"),
            (ema_text_encoder, "ema_text_encoder"),
        ):
            module.load_state_dict(checkpoint[key])
        optimizer.load_state_dict(checkpoint["optimizer"])
        gen.set_state(checkpoint["generator"])
        first_step, total_steps = checkpoint["step"], checkpoint["total_steps"]
        prior_s, rate_start_s = checkpoint["elapsed_s"], checkpoint["rate_start_s"]
        log(f"resumed {checkpoint_path} at step {first_step} of {total_steps} ({prior_s:.0f} s trained before)")
    model = torch.compile(transformer) if config.compile and device.type == "cuda" else transformer

    tokenizer = text_encoder.tokenizer
    data = torch.utils.data.DataLoader(
        _SceneBatches(config.steps, config.batch_size, config.seed, tokenizer, config.world, first=first_step),
        batch_size=None,
        shuffle=False,
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        prefetch_factor=4 if config.num_workers else None,
    )
    empty_ids = tokenizer("").to(device)  # (1, L): the unconditional caption
    img_ids = image_ids(scenes.IMAGE_SIZE, scenes.IMAGE_SIZE, config.patch_size, device)  # (N, 3)
    txt_ids = torch.zeros(config.max_length, 3, device=device)  # (L, 3)
    grid_batch = scenes.sample_batch(16, seed=12345, split="heldout")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")

    def save_samples(step: int) -> None:
        g = torch.Generator(device).manual_seed(0)
        images = ema_pipe(
            grid_batch.captions * 2,
            num_inference_steps=config.sample_steps,
            guidance_scale=config.sample_guidance,
            generator=g,
            output_type="np",
        ).images
        truth = (grid_batch.images.permute(0, 2, 3, 1).numpy() + 1) / 2
        scale = max(1, 128 // scenes.IMAGE_SIZE)  # 4x for v1's 32 px tiles, 2x for 64 px
        _grid(np.concatenate([truth, images]), columns=16, scale=scale).save(out / "samples" / f"step_{step:06d}.png")

    (out / "samples" / "captions.txt").write_text(
        "rows: ground-truth renders, then 2 seeds of generated images (EMA, "
        f"{config.sample_steps} steps, guidance {config.sample_guidance}); held-out captions by column:\n"
        + "\n".join(f"{i}: {c}" for i, c in enumerate(grid_batch.captions))
        + "\n"
    )

    def save_checkpoint(step: int, elapsed_s: float) -> None:
        state = {
            "config": json.loads(
                json.dumps(dataclasses.asdict(config), default=str)
            ),  # plain types: weights_only loads
            "step": step,
            "total_steps": total_steps,
            "elapsed_s": elapsed_s,
            "rate_start_s": rate_start - start,
            "transformer": transformer.state_dict(),
            "text_encoder": text_encoder.state_dict(),
            "ema_transformer": ema_transformer.state_dict(),
            "ema_text_encoder": ema_text_encoder.state_dict(),
            "optimizer": optimizer.state_dict(),
            "generator": gen.get_state(),
        }
        partial = checkpoint_path.with_suffix(".partial")
        torch.save(state, partial)
        os.replace(partial, checkpoint_path)  # atomic: a crash leaves the previous checkpoint

    chunk_start = time.perf_counter()
    start = chunk_start - prior_s  # elapsed times count every chunk's training time
    rate_start = start + rate_start_s
    loss_sum, loss_n, last_step = 0.0, 0, first_step
    bar = tqdm(data, total=config.steps, initial=first_step, mininterval=15, file=sys.stderr, desc="train")
    for step, (images, ids) in enumerate(bar, start=first_step):
        images = images.to(device, non_blocking=True).float() / 127.5 - 1  # (B, 3, S, S)
        ids = ids.to(device, non_blocking=True)  # (B, L)
        b = images.shape[0]
        drop = torch.rand(b, device=device, generator=gen) < config.caption_dropout
        ids = torch.where(drop[:, None], empty_ids, ids)

        x0 = patchify(images, config.patch_size)  # (B, N, 3*p*p)
        noise = torch.randn(x0.shape, device=device, generator=gen)
        t = torch.sigmoid(torch.randn(b, device=device, generator=gen))  # logit-normal(0, 1), SD3's choice
        xt = (1 - t[:, None, None]) * x0 + t[:, None, None] * noise
        target = noise - x0  # velocity of the straight path from data (t=0) to noise (t=1)

        for group in optimizer.param_groups:
            group["lr"] = config.lr * _lr_factor(step, total_steps, config)
        with autocast:
            txt, vec = text_encoder(ids)
            pred = model(
                hidden_states=xt,
                encoder_hidden_states=txt,
                pooled_projections=vec,
                timestep=t,
                img_ids=img_ids,
                txt_ids=txt_ids,
                return_dict=False,
            )[0]
        loss = F.mse_loss(pred.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        with torch.no_grad():
            decay = min(config.ema_decay, (1 + step) / (10 + step))  # short warm-up of the average
            torch._foreach_lerp_(ema_params, params, 1 - decay)

        loss_sum += loss.detach()
        loss_n += 1
        last_step = step + 1
        if last_step % config.log_every == 0 or last_step in (20, 50):
            elapsed = time.perf_counter() - start
            log(
                f"step {last_step:6d}  loss {float(loss_sum) / loss_n:.4f}  lr {optimizer.param_groups[0]['lr']:.2e}  "
                f"{last_step / elapsed:.2f} steps/s  {elapsed:.0f} s"
            )
            loss_sum, loss_n = 0.0, 0
        if last_step % config.sample_every == 0:
            save_samples(last_step)
        if config.time_limit_s:
            now = time.perf_counter()
            if last_step == _RATE_FROM:
                rate_start = now
            elif last_step == _RATE_TO:
                rate = (_RATE_TO - _RATE_FROM) / (now - rate_start)
                fit = last_step + int(0.97 * rate * (config.time_limit_s - (now - start)))
                if fit < total_steps:
                    total_steps = max(fit, last_step)
                    log(
                        f"time limit {config.time_limit_s:.0f} s at {rate:.2f} steps/s: training {total_steps} steps "
                        f"instead of {config.steps} (reproduce with --steps {total_steps} and no time limit)"
                    )
            if now - start > config.time_limit_s * 1.05:  # safety net; the cut above should make this rare
                log(f"time limit {config.time_limit_s:.0f} s overrun at step {last_step}; stopping early")
                break
        if last_step >= total_steps:
            break
        if stop_after_s and time.perf_counter() - chunk_start > stop_after_s:
            bar.close()
            save_checkpoint(last_step, time.perf_counter() - start)
            log(
                f"stopped after {time.perf_counter() - chunk_start:.0f} s at step {last_step} of {total_steps}; "
                f"saved {checkpoint_path}; continue with `python -m ditlens.builtin.train --resume {out}`"
            )
            return ema_pipe
    bar.close()
    elapsed = time.perf_counter() - start
    log(f"trained {last_step} steps in {elapsed:.0f} s ({last_step / elapsed:.2f} steps/s)")
    if last_step % config.sample_every:
        save_samples(last_step)

    # Save the EMA weights; float32 in memory, `save_dtype` on disk.
    ema_pipe.to("cpu")
    save_dtype = getattr(torch, config.save_dtype)
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # the cast warns about fp32-only modules; these models have none
    try:
        to_save = BuiltinPipeline(
            copy.deepcopy(ema_transformer).to(save_dtype),
            copy.deepcopy(ema_text_encoder).to(save_dtype),
            pipe.scheduler,
            image_size=scenes.IMAGE_SIZE,
        )
    finally:
        diffusers_logging.set_verbosity(verbosity)
    to_save.save_pretrained(out / "model", safe_serialization=True)
    size = sum(f.stat().st_size for f in (out / "model").rglob("*") if f.is_file())
    log(f"saved {out / 'model'} ({size / 1e6:.1f} MB, {config.save_dtype})")
    checkpoint_path.unlink(missing_ok=True)  # the run is complete: OUT/model replaces it
    return ema_pipe


_RESUME_FLAGS = ("--stop-after-s", "--num-workers")  # what a resumed run may still set


def _parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, bool, float]:
    """(config, resume, stop_after_s) from the command line."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(
        prog="python -m ditlens.builtin.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--resume",
        type=Path,
        metavar="FOLDER",
        default=None,
        help="continue the run in FOLDER from its checkpoint.pt, with its train_config.json",
    )
    parser.add_argument(
        "--stop-after-s",
        type=float,
        default=0.0,
        help="save OUT/checkpoint.pt and stop after this many seconds (0: run to the end)",
    )
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        default = field.default
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        elif field.name == "out":
            parser.add_argument(flag, type=Path, default=None, help="run folder (required unless --resume)")
        elif field.name == "world":
            parser.add_argument(flag, choices=tuple(WORLDS), default=default, help=f"default: {default}")
        elif field.name == "size":
            parser.add_argument(
                flag,
                choices=sorted({s for r in RUNGS.values() for s in r}),
                default="",
                help="a rung of the model ladder (world v2: s, m, l); flags given too override it",
            )
        else:
            parser.add_argument(flag, type=type(default), default=default, help=f"default: {default}")
    given = {a.split("=")[0] for a in argv if a.startswith("--")}
    first, _ = parser.parse_known_args(argv)  # which world and rung, so the rung's values become the defaults
    if first.resume is not None:
        extra = sorted(given - {"--resume", *_RESUME_FLAGS})
        if extra:
            parser.error(
                f"--resume takes its settings from {first.resume / 'train_config.json'}; "
                f"only {', '.join(_RESUME_FLAGS)} may be given with it, got {', '.join(extra)}"
            )
        args = parser.parse_args(argv)
        config = load_config(args.resume)
        if "--num-workers" in given:
            config = dataclasses.replace(config, num_workers=args.num_workers)
        return config, True, args.stop_after_s
    if first.size:
        if first.world not in RUNGS:
            parser.error(f"--size needs a world with a model ladder ({', '.join(RUNGS)}); world {first.world} has none")
        parser.set_defaults(**RUNGS[first.world][first.size])
    elif first.world != "v1":
        parser.error(
            f"--world {first.world} needs --size ({', '.join(RUNGS[first.world])}): "
            "the other defaults are world v1's shipped model"
        )
    values = vars(parser.parse_args(argv))
    if values["out"] is None:
        parser.error("the following arguments are required: --out (or --resume FOLDER)")
    values.pop("resume")
    stop_after_s = values.pop("stop_after_s")
    return TrainConfig(**values), False, stop_after_s


if __name__ == "__main__":
    config, resume, stop_after_s = _parse_args()
    train(config, resume=resume, stop_after_s=stop_after_s)
