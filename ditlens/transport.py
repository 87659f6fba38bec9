"""Finding 3 and its two uses: move massive activations from a source trajectory into a target.

At the chosen sites and steps the target's image tokens become
`X_t + alpha * M * (X_s - X_t)`, `M = p m^T`, with `m` the top-k channels (of the source row)
and `p` a spatial mask (every token, a row's K = 2 foreground, or a user's). Source and target
run in ONE batch (with CFG, one batch of both halves), so a transported image costs about one
batch-2 generation.

Text-conditioned: the source row is prompt A's own trajectory. Image-conditioned: the
source row is a reference image, put after every step at that step's noise level (a
`callback_on_step_end` writes it into the latents): re-noised with fixed noise (default),
or taken from the reference's own inversion along the flow ODE (`reference_path="invert"`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .adapters import adapter_for
from .choices import MASK_ORIGINS as MASK_ORIGINS  # read from here by the sweep
from .choices import REFERENCE_PATHS
from .choices import STREAMS as STREAMS  # read from here by the app and the sweep
from .config import TransportConfig
from .core.channels import RandomK, TopK
from .core.hooks import HookContext, hooks
from .core.intervene import ReplaceFromRows, Scope, source_rows
from .core.masks import DEFAULT_FOREGROUND, check_foreground, foreground_tokens, token_grid
from .core.performance import DEFAULT_PERFORMANCE, PerformanceConfig
from .generation import GenerationSettings, image_size, to_pil
from .io.outputs import write_atomic

#: which k channels transport moves
RANDOM_CHANNELS_SEED = 0  # the random-k control's channels: one fixed draw, the same at every site and step


class SpatialMask:
    """The token mask `p` of transport, computed at each site and step on the current tokens."""

    graph_safe = True  # a function of img and ctx.grid (in the graph key), no host sync: may be captured

    def __init__(
        self,
        origin: str,
        k: int,
        statistic: str,
        group_size: int,
        source_of: dict[int, int],
        user_mask: torch.Tensor | None = None,
        image_size: tuple[int, int] | None = None,
        foreground: str = DEFAULT_FOREGROUND,
    ):
        if origin == "user" and (user_mask is None or image_size is None):
            raise ValueError("mask='user' needs a mask image (--mask-image) and the image size.")
        check_foreground(foreground)
        self.origin, self.selector, self.foreground = origin, TopK(k, statistic), foreground
        self.group_size, self.source_of = group_size, source_of
        self.user_mask, self.image_size = user_mask, image_size
        self._plans: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self._user_tokens: dict[tuple, torch.Tensor] = {}

    @property
    def graph_key(self) -> tuple | None:
        """What makes two masks equal, for sharing a captured edit (None for a user's mask)."""
        if self.origin == "user":
            return None
        return (
            self.origin,
            self.foreground,
            self.image_size,
            self.selector,
            self.group_size,
            tuple(sorted(self.source_of.items())),
        )

    def __call__(self, img: torch.Tensor, ctx: HookContext) -> torch.Tensor:
        B, N, _ = img.shape
        if self.origin == "all":
            return torch.ones(B, N, device=img.device)
        if self.origin == "user":
            assert self.user_mask is not None and self.image_size is not None  # checked in __init__
            if (N, img.device) not in self._user_tokens:  # once: no host-to-device copy per site
                self._user_tokens[(N, img.device)] = mask_image_to_tokens(self.user_mask, N, self.image_size).to(
                    img.device
                )
            return self._user_tokens[(N, img.device)].expand(B, N)
        targets, sources, which = self._plan(B, img.device)
        p = torch.zeros(B, N, device=img.device)
        if targets.numel() == 0:
            return p
        grid = getattr(ctx, "grid", None) or token_grid(
            N, *(self.image_size or (None, None))
        )  # the call's own grid first
        src = img[sources]
        fg = foreground_tokens(src, self.selector.channel_indices(src), self.foreground, grid)[which]  # (targets, N)
        if self.origin != "source":
            tgt = img[targets]
            fg_tgt = foreground_tokens(tgt, self.selector.channel_indices(tgt), self.foreground, grid)
            fg = fg_tgt if self.origin == "target" else fg | fg_tgt
        return p.index_copy(0, targets, fg.float())

    def _plan(self, batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(target rows, the distinct source rows, each target's position among them) on the
        device, made once per batch size. Only target rows use p, and many targets share one
        source row: each is clustered once. Made on the CPU: no host sync per site."""
        key = (batch_size, device)
        if key not in self._plans:
            rows = source_rows(batch_size, self.group_size, self.source_of)
            targets = (rows != torch.arange(batch_size)).nonzero().flatten()
            sources, which = rows[targets].unique(return_inverse=True)
            self._plans[key] = (targets.to(device), sources.to(device), which.to(device))
        return self._plans[key]


def mask_image_to_tokens(mask: torch.Tensor, n_tokens: int, image_size: tuple[int, int]) -> torch.Tensor:
    """(H, W) mask in [0, 1] -> (N,) token weights by area averaging onto the token grid."""
    if tuple(mask.shape) != tuple(image_size):
        raise ValueError(f"Mask image is {tuple(mask.shape)} (H, W) but generated images are {tuple(image_size)}.")
    grid = token_grid(n_tokens, *image_size)
    pooled = F.adaptive_avg_pool2d(mask.float()[None, None], grid)[0, 0]
    return (pooled > 0.5).float().flatten()


@dataclass
class TransportResult:
    source: torch.Tensor  # (3, H, W) in [0, 1]: the source (prompt A or the reference)
    target: torch.Tensor | None  # (3, H, W): the target prompt alone, same seed (None if not run)
    transported: torch.Tensor  # (n, 3, H, W): one image per alpha
    alphas: list[float]
    settings: dict[str, Any]

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {}
        named = [("source", self.source)] + ([("target", self.target)] if self.target is not None else [])
        named += [(f"transported_alpha{a:.2f}", img) for a, img in zip(self.alphas, self.transported)]
        for name, image in named:
            paths[name] = out / f"{name}.png"
            write_atomic(paths[name], to_pil(image[None])[0].save)
        paths["settings"] = write_atomic(out / "settings.json", json.dumps(self.settings, indent=1, default=str))
        return paths

    @property
    def source_label(self) -> str:
        """What the first image is: the source prompt's generation, or the reference image."""
        return "reference" if "reference_prompt" in self.settings else "source"

    def plot_strip(
        self, path: str | Path, frames: list[tuple[str, torch.Tensor]] | None = None, title: str = ""
    ) -> Path:
        """One row: the source (or reference), the target alone (where it ran), then the
        transported images, labelled a=ALPHA; `frames` replaces those with (label, image)
        pairs (`ditlens interpolate` over k or step windows: one result per frame)."""
        from .reporting.plots import plot_image_table

        frames = (
            frames if frames is not None else [(f"a={a:g}", image) for a, image in zip(self.alphas, self.transported)]
        )
        first = [(self.source_label, self.source)] + (
            [("target alone", self.target)] if self.target is not None else []
        )
        shown = first + frames
        return plot_image_table(
            [[image for _, image in shown]],
            path,
            [""],
            [label for label, _ in shown],
            title=title,
            cell_inches=1.8 if len(shown) <= 3 else 1.3,  # a short strip: larger pictures
        )


def _edits(
    config: TransportConfig,
    alphas: list[float],
    first_target: int,
    group_size: int,
    mask_image: torch.Tensor | None,
    image_size: tuple[int, int],
) -> list[ReplaceFromRows]:
    """The edits of one transport: prompt 0 is the source, prompts `first_target...` the
    targets, one per alpha (see `_edits_from`)."""
    targets = range(first_target, first_target + len(alphas))
    return _edits_from(
        config, dict.fromkeys(targets, 0), dict(zip(targets, alphas)), group_size, mask_image, image_size
    )


def _edits_from(
    config: TransportConfig,
    source_of: dict[int, int],
    alpha_of: dict[int, float],
    group_size: int,
    mask_image: torch.Tensor | None,
    image_size: tuple[int, int],
) -> list[ReplaceFromRows]:
    """The edits of one batch: the image stream's (under the spatial mask), the text stream's
    (its own top-k channels on every text token), or both (`config.streams`). source_of:
    target prompt -> its source prompt; alpha_of: target prompt -> its strength."""
    if config.mask == "user" and mask_image is None:
        raise ValueError("mask='user' needs a mask image (--mask-image).")
    if mask_image is not None and tuple(mask_image.shape) != tuple(image_size):
        raise ValueError(
            f"Mask image is {tuple(mask_image.shape)} (H, W) but generated images are {tuple(image_size)}."
        )
    edit = functools.partial(
        ReplaceFromRows,
        source_of=source_of,
        group_size=group_size,
        channels=TopK(config.k, config.statistic)
        if config.channels == "top"
        else RandomK(config.k, RANDOM_CHANNELS_SEED),
        alpha=1.0,
        alphas=alpha_of,
        channels_from=config.channels_from,
        scope=Scope(sites=config.sites, step_window=config.step_window),
    )
    edits = []
    if config.streams in ("img", "both"):
        # every token: no token mask at all (None), which spares the edit the mask's kernels
        tokens = None
        if config.mask != "all":
            tokens = SpatialMask(
                config.mask,
                config.k,
                config.statistic,
                group_size,
                source_of,
                mask_image,
                image_size,
                config.foreground,
            )
        edits.append(edit(tokens=tokens))
    if config.streams in ("txt", "both"):
        edits.append(edit(tokens=None, stream="txt"))
    return edits


def _images(output: Any) -> torch.Tensor:
    images = output.images
    if not isinstance(images, torch.Tensor):
        images = torch.from_numpy(images).permute(0, 3, 1, 2)
    from .core.checks import check_finite

    images = images.detach().float().cpu()
    check_finite(images, "the generated images")
    return images


def transport_text(
    pipe: Any,
    source_prompt: str,
    target_prompt: str,
    config: TransportConfig,
    *,
    alphas: list[float] | None = None,
    source_seed: int = 0,
    target_seed: int | None = None,
    include_target: bool = True,
    mask_image: torch.Tensor | None = None,
    prompt_embeds: dict[str, torch.Tensor] | None = None,
    performance: PerformanceConfig = DEFAULT_PERFORMANCE,
) -> TransportResult:
    """Prompt A's massive activations into prompt B's trajectory, in one batch.

    The batch is [source, (target alone), transported x len(alphas)], all targets sharing the
    target seed, so the strip and the plain target differ only by the edit.
    prompt_embeds: precomputed pipeline arguments (prompt_embeds, ...) for the whole batch,
    used instead of the prompts when the text encoders are not loaded. performance: the
    hooks' CUDA-graph and compile switches (`PerformanceConfig`); nothing they change is computed."""
    target_seed = source_seed if target_seed is None else target_seed
    (result,) = transport_text_pairs(
        pipe,
        [(source_prompt, target_prompt)],
        config,
        alphas=alphas,
        seeds=[(source_seed, target_seed)],
        include_target=include_target,
        mask_image=mask_image,
        prompt_embeds=prompt_embeds,
        performance=performance,
    )
    return result


def transport_text_pairs(
    pipe: Any,
    pairs: list[tuple[str, str]],
    config: TransportConfig,
    *,
    alphas: list[float] | None = None,
    seeds: list[tuple[int, int]] | None = None,
    include_target: bool = True,
    mask_image: torch.Tensor | None = None,
    prompt_embeds: dict[str, torch.Tensor] | None = None,
    performance: PerformanceConfig = DEFAULT_PERFORMANCE,
) -> list[TransportResult]:
    """`transport_text` for several (source, target) prompt pairs in one batch, one result per
    pair: each pair's rows are `transport_text`'s, and its targets take from its own source
    row only (every edit and mask acts per row), so a pair's images are the ones it gets
    alone, up to the float rounding of a larger batch. Fewer, larger calls keep a GPU busy.
    seeds: (source seed, target seed) per pair; default (0, 0) for each."""
    adapter = adapter_for(pipe)
    config.validate(adapter.hidden_size, [s.name for s in adapter.sites()])
    alphas = alphas if alphas is not None else [config.alpha]
    seeds = seeds if seeds is not None else [(0, 0)] * len(pairs)
    if not pairs or len(seeds) != len(pairs):
        raise ValueError(
            f"transport_text_pairs needs one (source, target) seed pair per prompt pair; got "
            f"{len(seeds)} seeds for {len(pairs)} pairs."
        )
    rows = 1 + int(include_target) + len(alphas)  # per pair: source, (target alone), transported
    prompts: list[str] = []
    generators: list[torch.Generator] = []
    source_of: dict[int, int] = {}
    alpha_of: dict[int, float] = {}
    for i, ((source, target), (source_seed, target_seed)) in enumerate(zip(pairs, seeds)):
        first = i * rows
        prompts += [source] + [target] * (rows - 1)
        generators += [torch.Generator().manual_seed(source_seed)]
        generators += [torch.Generator().manual_seed(target_seed) for _ in range(rows - 1)]
        for j, a in enumerate(alphas):
            source_of[first + 1 + int(include_target) + j] = first
            alpha_of[first + 1 + int(include_target) + j] = a
    edits = _edits_from(config, source_of, alpha_of, len(prompts), mask_image, image_size(pipe, config.generation))
    with hooks(pipe, edits=edits, performance=performance):
        prompt_args = prompt_embeds if prompt_embeds is not None else {"prompt": prompts}
        images = _images(
            pipe(
                **prompt_args,
                generator=generators,
                output_type="pt",
                **config.generation.kwargs(pipe, len(prompts), prompt_args),
            )
        )
    results = []
    for i, ((source, target), (source_seed, target_seed)) in enumerate(zip(pairs, seeds)):
        run: dict[str, Any] = {"source_prompt": source, "target_prompt": target}
        run |= {"source_seed": source_seed, "target_seed": target_seed}
        mine = images[i * rows : (i + 1) * rows]
        results.append(_result(mine[0], mine[1:], include_target, alphas, _settings(config, alphas) | run))
    return results


def transport_image(
    pipe: Any,
    reference: torch.Tensor,
    target_prompt: str,
    config: TransportConfig,
    *,
    reference_prompt: str = "",
    alphas: list[float] | None = None,
    seed: int = 0,
    include_target: bool = True,
    mask_image: torch.Tensor | None = None,
    prompt_embeds: dict[str, torch.Tensor] | None = None,
    reference_path: str = "renoise",
    performance: PerformanceConfig = DEFAULT_PERFORMANCE,
) -> TransportResult:
    """A reference image's massive activations into a new prompt's generation.

    reference: (3, H, W) in [0, 1], the size the pipeline generates. At each step the source
    row holds the reference at that step's noise level: mixed with fixed noise
    (`reference_path="renoise"`) or on its inverted ODE path (`"invert"`, see `invert`).
    performance: as in `transport_text`."""
    adapter = adapter_for(pipe)
    config.validate(adapter.hidden_size, [s.name for s in adapter.sites()])
    alphas = alphas if alphas is not None else [config.alpha]
    size = image_size(pipe, config.generation)
    if tuple(reference.shape[-2:]) != tuple(size):
        raise ValueError(
            f"Reference image is {tuple(reference.shape[-2:])} (H, W) but the pipeline generates {tuple(size)}; "
            "resize it first (ditlens transport --reference resizes with a note)."
        )
    if reference_path not in REFERENCE_PATHS:
        raise ValueError(f"Unknown reference path {reference_path!r}. Allowed: {', '.join(REFERENCE_PATHS)}.")
    x0 = adapter.image_to_latents(pipe, reference[None])  # (1, ...) in the pipeline's latent layout
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(x0.shape, generator=gen).to(x0)
    target_noise = torch.randn(x0.shape, generator=gen).to(x0)
    n_targets = int(include_target) + len(alphas)
    prompt_args = (
        prompt_embeds if prompt_embeds is not None else {"prompt": [reference_prompt] + [target_prompt] * n_targets}
    )
    levels = invert(pipe, x0, _first_row(prompt_args), config.generation) if reference_path == "invert" else None
    start = levels[0] if levels is not None else noise
    latents = torch.cat([start.to(x0), target_noise.expand(n_targets, *x0.shape[1:])])

    def renoise(pipeline: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        """After step i the latents sit at sigmas[i + 1]: put the reference there too."""
        current = kwargs["latents"]
        if levels is not None:
            current[:1] = levels[i + 1].to(current)
        else:
            sigma = float(pipeline.scheduler.sigmas[i + 1])
            current[:1] = ((1 - sigma) * x0 + sigma * noise).to(current)
        return {"latents": current}

    # flow matching starts from pure noise (sigma = 1): the source row starts as its fixed noise
    edits = _edits(config, alphas, 1 + int(include_target), 1 + n_targets, mask_image, size)
    with hooks(pipe, edits=edits, performance=performance):
        output = pipe(
            **prompt_args,
            latents=adapter.latents_argument(pipe, latents, *size),
            output_type="pt",
            callback_on_step_end=renoise,
            callback_on_step_end_tensor_inputs=["latents"],
            **config.generation.kwargs(pipe, 1 + n_targets, prompt_args),
        )
    run: dict[str, Any] = {"reference_prompt": reference_prompt, "target_prompt": target_prompt}
    run |= {"seed": seed, "reference_path": reference_path}
    images = _images(output)
    return _result(reference.float().cpu(), images[1:], include_target, alphas, _settings(config, alphas) | run)


def _result(
    source: torch.Tensor, rows: torch.Tensor, include_target: bool, alphas: list[float], settings: dict[str, Any]
) -> TransportResult:
    """The result from the source image and the generated rows after it: the target alone
    first where it ran, then one transported image per alpha."""
    return TransportResult(
        source=source,
        target=rows[0] if include_target else None,
        transported=rows[int(include_target) :],
        alphas=alphas,
        settings=settings,
    )


def check_invertible(scheduler_mro: list[str], pipeline: str) -> None:
    """Refuse `reference_path="invert"` for a scheduler that is no flow-matching Euler one
    (by class names: the CLI asks before the model loads)."""
    if "FlowMatchEulerDiscreteScheduler" not in scheduler_mro:
        raise ValueError(
            f"ODE inversion needs a FlowMatchEulerDiscreteScheduler; {pipeline} uses {scheduler_mro[0]}. "
            "Use reference_path='renoise' (--reference-path renoise)."
        )


def invert(
    pipe: Any, x0: torch.Tensor, prompt_args: dict[str, Any], settings: GenerationSettings
) -> list[torch.Tensor]:
    """Carry clean latents `x0` (1, ...) up the flow ODE: Euler steps over the generation's
    own sigmas in reverse order, the velocity taken at the start of each interval (the
    usual inversion of a flow-matching Euler sampler), conditioned on `prompt_args` (one row)
    with the same settings as the generation. Returns the latents at each sigma of the
    generation schedule, `levels[i]` at sigma_i, `levels[0]` the start (sigma_0, noise
    level 1) and `levels[-1] = x0`: what the sampler would have to pass through to land on
    x0. Runs the pipeline itself with its schedule flipped, so it needs a flow-matching Euler
    scheduler (`FlowMatchEulerDiscreteScheduler`)."""
    scheduler = pipe.scheduler
    check_invertible([c.__name__ for c in type(scheduler).__mro__], type(pipe).__name__)
    path = [x0.detach().cpu()]

    def keep(pipeline: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        path.append(kwargs["latents"].detach().cpu())
        return {}

    start = adapter_for(pipe).latents_argument(pipe, x0, *image_size(pipe, settings))  # FLUX.2 takes them unpacked
    with _reversed_schedule(scheduler):
        pipe(
            **prompt_args,
            latents=start,
            output_type="latent",
            callback_on_step_end=keep,
            callback_on_step_end_tensor_inputs=["latents"],
            **settings.kwargs(pipe, 1, prompt_args),
        )
    return path[::-1]


@contextmanager
def _reversed_schedule(scheduler: Any) -> Iterator[None]:
    """While inside, `scheduler.set_timesteps` makes its usual schedule and then flips it:
    sigmas 0 -> sigma_max, so each Euler step `x + (sigma_next - sigma) v` climbs the ODE."""
    original = scheduler.set_timesteps

    @functools.wraps(original)  # pipelines inspect its signature (`sigmas=` support)
    def flipped(*args: Any, **kwargs: Any) -> None:
        original(*args, **kwargs)
        sigmas = scheduler.sigmas.flip(0)
        scheduler.timesteps = (sigmas[:-1] * scheduler.config.num_train_timesteps).to(scheduler.timesteps)
        scheduler.sigmas = sigmas

    scheduler.set_timesteps = flipped
    try:
        yield
    finally:
        del scheduler.set_timesteps  # the class's method again


def _first_row(prompt_args: dict[str, Any]) -> dict[str, Any]:
    """The pipeline arguments of row 0 only (the reference's prompt or embeddings)."""
    return {
        name: value[:1] if isinstance(value, (torch.Tensor, list)) else value for name, value in prompt_args.items()
    }


def _settings(config: TransportConfig, alphas: list[float]) -> dict[str, Any]:
    s = asdict(config)
    s["alphas"] = alphas
    return s
