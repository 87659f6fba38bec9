"""Train the built-in model from scratch on procedural scenes (rectified flow).

    python -m ditlens.builtin.train --out runs/builtin --steps 6000 --seed 0
    python -m ditlens.builtin.train --world v2 --size m --out runs/v2-m    # a rung of RUNGS
    python -m ditlens.builtin.train --world v2 --size l --out runs/v2-l --stop-after-s 540
    python -m ditlens.builtin.train --world v1 --size l --out runs/v1-l    # the same rung, world v1
    python -m ditlens.builtin.train --resume runs/v2-l                     # the next chunk

Writes `OUT/train.log` (ending with how far the loss was from its plateau), the loss curve
`OUT/loss.png`, sample grids `OUT/samples/step_NNNNNN.png` (+ their captions) and the
pipeline `OUT/model` (diffusers `save_pretrained`, safetensors, weights in `save_dtype`;
`model_index.json` records the world whose grammar prompts follow). Nothing is planted: any
massive activations come from training alone.

`--world v1` (the default, `scenes.py`) is the shipped model's world and the defaults
below are its shipped run; `--size` picks a rung of RUNGS instead (any flag given as well
overrides the rung), and `--world v2` (`scenes_v2.py`) needs one. `--stop-after-s` saves
`OUT/checkpoint.pt` and stops; `--resume OUT` continues from it with OUT's config and gives
the same weights as one uninterrupted run (same device).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.utils import logging as diffusers_logging
from tqdm import tqdm

from ..io.outputs import write_atomic
from ..reporting.plots import plot_loss_curves
from . import train_log
from .architecture import build_pipeline as build_pipeline  # re-exported: the architecture a run trains
from .architecture import rope_axes as rope_axes
from .pipeline import BuiltinPipeline, Conditioning, image_ids, patchify, predict_velocity
from .text_encoder import WORLDS, WordTokenizer, scenes_of
from .train_config import RUNGS, TrainConfig, load_config
from .train_config import rung_config as rung_config
from .train_samples import SampleGrids

CHECKPOINT = "checkpoint.pt"
_RATE_FROM, _RATE_TO = 200, 500  # steps between which the time limit measures the speed (after compiling)


# ---------------------------------------------------------------------------------------
# Data, samples, log
# ---------------------------------------------------------------------------------------


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


def _loader(config: TrainConfig, tokenizer: WordTokenizer, first_step: int, device: torch.device) -> Any:
    return torch.utils.data.DataLoader(
        _SceneBatches(config.steps, config.batch_size, config.seed, tokenizer, config.world, first=first_step),
        batch_size=None,
        shuffle=False,
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        prefetch_factor=4 if config.num_workers else None,
    )


class _Log:
    def __init__(self, path: Path):
        self.file = path.open("a")

    def __call__(self, message: str) -> None:
        tqdm.write(message)
        self.file.write(message + "\n")
        self.file.flush()


# ---------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------


def _lr_factor(step: int, total_steps: int, config: TrainConfig) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    decay_start = total_steps * (1 - config.decay_fraction)
    if step < decay_start:
        return 1.0
    return max(0.0, (total_steps - step) / max(1.0, total_steps - decay_start))


def _flow_pair(
    images: torch.Tensor, patch_size: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rectified flow: (x_t, t, target velocity) for clean images (B, 3, S, S) in [-1, 1],
    x_t on the straight path from the data (t = 0) to noise (t = 1)."""
    x0 = patchify(images, patch_size)  # (B, N, 3*p*p)
    noise = torch.randn(x0.shape, device=images.device, generator=gen)
    # t logit-normal(0, 1), as rectified-flow DiTs train: more steps mid-path than near its ends
    t = torch.sigmoid(torch.randn(len(images), device=images.device, generator=gen))
    xt = (1 - t[:, None, None]) * x0 + t[:, None, None] * noise
    return xt, t, noise - x0


def _config_json(config: TrainConfig) -> dict:
    """The config as plain types (what train_config.json holds and a checkpoint's weights_only load reads)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


class _Run:
    """A training run's state: the models and their EMA copies, the optimizer, the noise
    generator and the step counters; what a checkpoint saves and a resume restores."""

    def __init__(self, config: TrainConfig, device: torch.device, log: _Log):
        self.config, self.device = config, device
        pipe = build_pipeline(config)
        # (diffusers wraps ModelMixin.to in functools.wraps, whose stub loses the bound self)
        self.transformer = pipe.transformer.to(device)  # type: ignore[arg-type]
        self.text_encoder = pipe.text_encoder.to(device)  # type: ignore[arg-type]
        self.params = [p for m in (self.transformer, self.text_encoder) for p in m.parameters()]
        n_params = {
            name: sum(p.numel() for p in m.parameters())
            for name, m in (("transformer", self.transformer), ("text_encoder", self.text_encoder))
        }
        log(f"parameters: {n_params}")
        self.ema_transformer = copy.deepcopy(self.transformer).eval()
        self.ema_text_encoder = copy.deepcopy(self.text_encoder).eval()
        self.ema_params = [p for m in (self.ema_transformer, self.ema_text_encoder) for p in m.parameters()]
        for p in self.ema_params:
            p.requires_grad_(False)
        image_size = config.scenes.IMAGE_SIZE
        self.ema_pipe = BuiltinPipeline(self.ema_transformer, self.ema_text_encoder, pipe.scheduler, image_size)
        self.ema_pipe.set_progress_bar_config(disable=True)
        self.optimizer = torch.optim.AdamW(
            self.params, lr=config.lr, betas=(0.9, 0.99), weight_decay=config.weight_decay, fused=device.type == "cuda"
        )
        self.gen = torch.Generator(device).manual_seed(config.seed)
        # total_steps may be cut once to fit `time_limit_s`; the seconds count every chunk of the run
        self.first_step, self.total_steps, self.prior_s, self.rate_start_s = 0, config.steps, 0.0, 0.0
        self.model = torch.compile(self.transformer) if config.compile and device.type == "cuda" else self.transformer
        self.empty_ids = self.text_encoder.tokenizer("").to(device)  # (1, L): the unconditional caption
        self.img_ids = image_ids(image_size, image_size, config.patch_size, device)  # (N, 3)
        self.txt_ids = torch.zeros(config.max_length, 3, device=device)  # (L, 3)
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")

    def _modules(self) -> dict[str, Any]:
        return {
            "transformer": self.transformer,
            "text_encoder": self.text_encoder,
            "ema_transformer": self.ema_transformer,
            "ema_text_encoder": self.ema_text_encoder,
            "optimizer": self.optimizer,
        }

    def restore(self, checkpoint: dict) -> None:
        for key, module in self._modules().items():
            module.load_state_dict(checkpoint[key])
        self.gen.set_state(checkpoint["generator"])
        self.first_step, self.total_steps = checkpoint["step"], checkpoint["total_steps"]
        self.prior_s, self.rate_start_s = checkpoint["elapsed_s"], checkpoint["rate_start_s"]

    def save_checkpoint(self, path: Path, step: int, elapsed_s: float, rate_start_s: float) -> None:
        """Everything a resume needs, written whole or not at all (a crash keeps the previous one)."""
        state = {
            "config": _config_json(self.config),
            "step": step,
            "total_steps": self.total_steps,
            "elapsed_s": elapsed_s,
            "rate_start_s": rate_start_s,
            **{key: module.state_dict() for key, module in self._modules().items()},
            "generator": self.gen.get_state(),
        }
        write_atomic(path, lambda tmp: torch.save(state, tmp))

    def step(self, step: int, images: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """One optimizer step on a batch (uint8 images (B, 3, S, S), word ids (B, L)); returns the loss."""
        config, device = self.config, self.device
        images = images.to(device, non_blocking=True).float() / 127.5 - 1  # (B, 3, S, S)
        ids = ids.to(device, non_blocking=True)  # (B, L)
        drop = torch.rand(images.shape[0], device=device, generator=self.gen) < config.caption_dropout
        ids = torch.where(drop[:, None], self.empty_ids, ids)
        xt, t, target = _flow_pair(images, config.patch_size, self.gen)
        for group in self.optimizer.param_groups:
            group["lr"] = config.lr * _lr_factor(step, self.total_steps, config)
        with self.autocast:
            txt, vec = self.text_encoder(ids)
            pred = predict_velocity(self.model, xt, Conditioning(txt, vec, self.img_ids, self.txt_ids), t)
        loss = F.mse_loss(pred.float(), target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, config.grad_clip)
        self.optimizer.step()
        with torch.no_grad():
            decay = min(config.ema_decay, (1 + step) / (10 + step))  # short warm-up of the average
            torch._foreach_lerp_(self.ema_params, self.params, 1 - decay)
        return loss.detach()

    def save_model(self, folder: Path, log: _Log) -> None:
        """The EMA weights as a pipeline folder: float32 in memory, `save_dtype` on disk."""
        self.ema_pipe.to("cpu")
        save_dtype = getattr(torch, self.config.save_dtype)
        verbosity = diffusers_logging.get_verbosity()
        diffusers_logging.set_verbosity_error()  # the cast warns about fp32-only modules; these models have none
        try:
            to_save = BuiltinPipeline(
                copy.deepcopy(self.ema_transformer).to(save_dtype),
                copy.deepcopy(self.ema_text_encoder).to(save_dtype),
                self.ema_pipe.scheduler,
                image_size=self.config.scenes.IMAGE_SIZE,
            )
        finally:
            diffusers_logging.set_verbosity(verbosity)
        to_save.save_pretrained(folder, safe_serialization=True)
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        log(f"saved {folder} ({size / 1e6:.1f} MB, {self.config.save_dtype})")


@dataclass
class _Clock:
    """The run's seconds, counted over every chunk of it: `start` is when an uninterrupted
    run would have started, `rate_start` when the time limit began measuring the speed."""

    chunk_start: float
    start: float
    rate_start: float

    @staticmethod
    def resumed(prior_s: float, rate_start_s: float) -> _Clock:
        now = time.perf_counter()
        return _Clock(now, now - prior_s, now - prior_s + rate_start_s)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def _keep_time_limit(run: _Run, clock: _Clock, last_step: int, log: _Log) -> bool:
    """With `time_limit_s`: measure the speed between steps _RATE_FROM and _RATE_TO, then cut
    the run's steps to what fits (the LR decay follows); True = stop now (an overrun)."""
    config = run.config
    now = time.perf_counter()
    if last_step == _RATE_FROM:
        clock.rate_start = now
    elif last_step == _RATE_TO:
        rate = (_RATE_TO - _RATE_FROM) / (now - clock.rate_start)
        fit = last_step + int(0.97 * rate * (config.time_limit_s - (now - clock.start)))
        if fit < run.total_steps:
            run.total_steps = max(fit, last_step)
            log(
                f"time limit {config.time_limit_s:.0f} s at {rate:.2f} steps/s: training {run.total_steps} steps "
                f"instead of {config.steps} (reproduce with --steps {run.total_steps} and no time limit)"
            )
    if now - clock.start > config.time_limit_s * 1.05:  # safety net; the cut above should make this rare
        log(f"time limit {config.time_limit_s:.0f} s overrun at step {last_step}; stopping early")
        return True
    return False


def _read_checkpoint(config: TrainConfig) -> dict:
    """The checkpoint of the run in `config.out`, which must have been written with `config`."""
    out = Path(config.out)
    path = out / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(
            f"Nothing to resume at {out}: no {CHECKPOINT} (a run writes one when --stop-after-s stops it)"
        )
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    saved = dict(checkpoint["config"], out=str(out), num_workers=config.num_workers)
    if saved != dict(_config_json(config), out=str(out)):
        raise ValueError(
            f"{path} was written with another config; resume with `--resume {out}` (it reads OUT/train_config.json)"
        )
    return checkpoint


def _device(log: _Log) -> torch.device:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        # cuDNN attention's backward failed for this model on torch 2.11; flash/mem-efficient are fine.
        torch.backends.cuda.enable_cudnn_sdp(False)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        log(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    else:
        log(f"device: cpu, torch {torch.__version__}")
    return device


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
    out = Path(config.out)
    checkpoint = _read_checkpoint(config) if resume else None
    (out / "samples").mkdir(parents=True, exist_ok=True)
    log = _Log(out / "train.log")
    log(f"config: {json.dumps(dataclasses.asdict(config), default=str)}")
    (out / "train_config.json").write_text(json.dumps(dataclasses.asdict(config), default=str, indent=2))

    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    device = _device(log)
    run = _Run(config, device, log)
    if checkpoint is not None:
        run.restore(checkpoint)
        log(
            f"resumed {out / CHECKPOINT} at step {run.first_step} of {run.total_steps} "
            f"({run.prior_s:.0f} s trained before)"
        )
    data = _loader(config, run.text_encoder.tokenizer, run.first_step, device)
    samples = SampleGrids(config, run.ema_pipe, out / "samples", device)

    clock = _Clock.resumed(run.prior_s, run.rate_start_s)
    loss_sum: torch.Tensor | float = 0.0
    loss_n, last_step = 0, run.first_step
    bar = tqdm(data, total=config.steps, initial=run.first_step, mininterval=15, file=sys.stderr, desc="train")
    for step, (images, ids) in enumerate(bar, start=run.first_step):
        loss_sum += run.step(step, images, ids)
        loss_n += 1
        last_step = step + 1
        if last_step % config.log_every == 0 or last_step in (20, 50):
            elapsed = clock.elapsed()
            log(
                f"step {last_step:6d}  loss {float(loss_sum) / loss_n:.4f}  "
                f"lr {run.optimizer.param_groups[0]['lr']:.2e}  {last_step / elapsed:.2f} steps/s  {elapsed:.0f} s"
            )
            loss_sum, loss_n = 0.0, 0
        if last_step % config.sample_every == 0:
            samples.save(last_step)
        if config.time_limit_s and _keep_time_limit(run, clock, last_step, log):
            break
        if last_step >= run.total_steps:
            break
        if stop_after_s and time.perf_counter() - clock.chunk_start > stop_after_s:
            bar.close()
            run.save_checkpoint(out / CHECKPOINT, last_step, clock.elapsed(), clock.rate_start - clock.start)
            log(
                f"stopped after {time.perf_counter() - clock.chunk_start:.0f} s at step {last_step} of "
                f"{run.total_steps}; saved {out / CHECKPOINT}; continue with "
                f"`python -m ditlens.builtin.train --resume {out}`"
            )
            return run.ema_pipe
    bar.close()
    elapsed = clock.elapsed()
    log(f"trained {last_step} steps in {elapsed:.0f} s ({last_step / elapsed:.2f} steps/s)")
    _log_plateau(out, config, log)
    if last_step % config.sample_every:
        samples.save(last_step)
    run.save_model(out / "model", log)
    (out / CHECKPOINT).unlink(missing_ok=True)  # the run is complete: OUT/model replaces it
    return run.ema_pipe


def _log_plateau(out: Path, config: TrainConfig, log: _Log) -> None:
    """How far the loss was from flat at the peak rate (`train_log`'s two readings), as a log
    line, and the run's loss curve as OUT/loss.png (log-log: a power law is a straight line)."""
    losses = train_log.logged_losses((out / "train.log").read_text())
    window = train_log.window_change(losses, config.warmup_steps)
    doubling = train_log.doubling_change(losses, config.warmup_steps)
    if window is None or doubling is None:
        log("plateau: the constant-rate phase is too short to read")
    else:
        log(
            f"plateau: at the peak rate the loss changed {window.relative:+.1%} over steps {window.first_step:,}-"
            f"{window.last_step:,} and {doubling.relative:+.1%} per doubling of steps over {doubling.first_step:,}-"
            f"{doubling.last_step:,}: "
            + ("at" if train_log.at_plateau(doubling) else "not at")
            + f" its plateau (within {train_log.PLATEAU_PER_DOUBLING:.0%} per doubling)"
        )
    flat = {line.step for line in train_log.constant_rate(losses, config.warmup_steps)}
    curve = ([line.step for line in losses], [line.loss for line in losses], [line.step in flat for line in losses])
    plot_loss_curves({f"{out.name} (world {config.world})": {out.name: curve}}, out / "loss.png")


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------

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
                help="a rung of the model ladder (s, m, l; v1 s is the shipped run); flags given too override it",
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
