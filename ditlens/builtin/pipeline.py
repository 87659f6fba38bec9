"""The built-in text-to-image pipeline: pixel-space flow matching with a small FLUX transformer.

Images are 32x32 RGB in [-1, 1], cut into 2x2 patches: 256 image tokens of 12 values,
the same packed-token layout FLUX.1 uses for its latents (so diffusers' FLUX transformer
runs unchanged, and ditlens' adapter for it serves both; `architecture.py`). There is no VAE: the "latents"
of this pipeline are noisy pixels in token form, `(B, 256, 12)`. Models of world v2
(`scenes_v2.py`) take 64x64 images in 4x4 patches: 256 tokens of 48 values. The image size
is in the pipeline's config, the patch size follows from the transformer's `in_channels`,
and the world (whose grammar prompts follow) from the text encoder's config; `pipe.world`.

    >>> pipe = load_builtin()
    >>> images = pipe("a large red circle on the left on a gray background").images
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from diffusers.image_processor import VaeImageProcessor
from diffusers.models.modeling_utils import ModelMixin
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.schedulers.scheduling_flow_match_euler_discrete import FlowMatchEulerDiscreteScheduler
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from .text_encoder import BuiltinTextEncoder

DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "model"
OUTPUT_TYPES = ("pil", "np", "pt", "latent")


@dataclass
class BuiltinPipelineOutput(BaseOutput):
    """`images`: list of PIL images, `(B, H, W, 3)` array or `(B, 3, H, W)` tensor in
    [0, 1], or the final `(B, N, C*p*p)` tokens for `output_type="latent"`."""

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/p * W/p, C*p*p), row-major over patches (FLUX's packing)."""
    b, c, h, w = images.shape
    if h % patch_size or w % patch_size:
        raise ValueError(f"Image size {h}x{w} must be divisible by the patch size {patch_size}")
    x = images.reshape(b, c, h // patch_size, patch_size, w // patch_size, patch_size)
    x = x.permute(0, 2, 4, 1, 3, 5)  # (B, H/p, W/p, C, p, p)
    return x.reshape(b, (h // patch_size) * (w // patch_size), c * patch_size * patch_size)


def unpatchify(tokens: torch.Tensor, height: int, width: int, patch_size: int) -> torch.Tensor:
    """Inverse of `patchify`: (B, N, C*p*p) -> (B, C, H, W)."""
    b, n, d = tokens.shape
    hp, wp = height // patch_size, width // patch_size
    if n != hp * wp:
        raise ValueError(f"{n} tokens do not tile a {height}x{width} image with patch {patch_size}")
    c = d // (patch_size * patch_size)
    x = tokens.reshape(b, hp, wp, c, patch_size, patch_size)
    x = x.permute(0, 3, 1, 4, 2, 5)  # (B, C, H/p, p, W/p, p)
    return x.reshape(b, c, height, width)


def image_ids(height: int, width: int, patch_size: int, device=None, dtype=None) -> torch.Tensor:
    """(N, 3) RoPE positions of the image tokens: (0, row, col), as FLUX.1 (axis 0 is the
    FLUX text/image axis and stays 0; text ids are all zeros)."""
    hp, wp = height // patch_size, width // patch_size
    ids = torch.zeros(hp, wp, 3)
    ids[..., 1] = torch.arange(hp)[:, None]
    ids[..., 2] = torch.arange(wp)[None, :]
    return ids.reshape(hp * wp, 3).to(device=device, dtype=dtype)


@dataclass(frozen=True)
class Conditioning:
    """What every transformer call of one generation (or training step) shares."""

    txt: torch.Tensor  # (B, L, D) prompt embeddings
    vec: torch.Tensor  # (B, D) pooled prompt embeddings
    img_ids: torch.Tensor  # (N, 3) RoPE positions of the image tokens
    txt_ids: torch.Tensor  # (L, 3) zeros
    joint_attention_kwargs: dict | None = None


def predict_velocity(
    transformer: Callable, img: torch.Tensor, cond: Conditioning, timestep: torch.Tensor
) -> torch.Tensor:
    """One transformer call: the velocity (B, N, C*p*p) of the noisy image tokens `img` at
    `timestep` (B,) (sigma in [0, 1]), as the pipeline and training make it."""
    return transformer(
        hidden_states=img,
        encoder_hidden_states=cond.txt,
        pooled_projections=cond.vec,
        timestep=timestep,
        img_ids=cond.img_ids,
        txt_ids=cond.txt_ids,
        joint_attention_kwargs=cond.joint_attention_kwargs,
        return_dict=False,
    )[0]


class BuiltinPipeline(DiffusionPipeline):
    r"""Text-to-image with ditlens' built-in model.

    Components: `transformer` (the FLUX-architecture transformer of `architecture.py`,
    pixel tokens in and velocity out), `text_encoder` (`BuiltinTextEncoder`, which also tokenises), `scheduler`
    (`FlowMatchEulerDiscreteScheduler`).

    Classifier-free guidance: when `guidance_scale > 1` each step makes ONE transformer
    call on the batch `[unconditional rows..., conditional rows...]`, i.e. rows `0..B-1`
    are the negative (default: empty) prompts and rows `B..2B-1` the prompts, in the same
    order, so hooks on the transformer see both halves of one call. With
    `guidance_scale <= 1` only the conditional rows are run.
    """

    model_cpu_offload_seq = "text_encoder->transformer"  # type: ignore[assignment]  # diffusers declares None
    _callback_tensor_inputs = ["latents", "prompt_embeds"]
    # the text stream is `[CLS] w_1 ... w_n [PAD]...`: word i sits at position i + 1, which is how
    # the FLUX adapter finds a word's text positions (`adapters.text_positions.word_positions`)
    words_are_tokens = True
    # the components, as register_modules sets them
    transformer: ModelMixin
    text_encoder: BuiltinTextEncoder
    scheduler: FlowMatchEulerDiscreteScheduler

    def __init__(
        self,
        transformer: ModelMixin,
        text_encoder: BuiltinTextEncoder,
        scheduler: FlowMatchEulerDiscreteScheduler,
        image_size: int = 32,
        world: str | None = None,
    ):
        super().__init__()
        # The text encoder knows its grammar's world; `world` (recorded in model_index.json so a
        # loader can read it without loading weights) must agree. Folders from before worlds: v1.
        encoder_world = text_encoder.config.get("world", "v1") if text_encoder is not None else None
        world = world if world is not None else encoder_world or "v1"
        if encoder_world is not None and world != encoder_world:
            raise ValueError(f"Pipeline world {world!r} differs from its text encoder's world {encoder_world!r}")
        self.register_modules(transformer=transformer, text_encoder=text_encoder, scheduler=scheduler)
        self.register_to_config(image_size=image_size, world=world)
        # Pixel space: the processor only maps [-1, 1] to [0, 1] and converts types.
        self.image_processor = VaeImageProcessor(vae_scale_factor=1, do_resize=False)

    @property
    def world(self) -> str:
        """The procedural world the model was trained on ("v1" or "v2"): prompts follow the
        grammar of `text_encoder.scenes_of(pipe.world)`."""
        return self.config["world"]

    @property
    def patch_size(self) -> int:
        # The transformer sees C*p*p values per token; the images are RGB.
        return math.isqrt(self.transformer.config.in_channels // 3)

    # ------------------------------------------------------------------ prompts

    def encode_prompt(
        self,
        prompt: str | list[str],
        device: torch.device | None = None,
        num_images_per_prompt: int = 1,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`(prompt_embeds (B*n, L, D), pooled_prompt_embeds (B*n, D))`; "" is the
        unconditional prompt. Unknown words raise `scenes.UnknownWordError`."""
        device = device or self._execution_device
        ids = self.text_encoder.tokenize(prompt).to(device)  # (B, L)
        embeds, pooled = self.text_encoder(ids)
        dtype = self.transformer.dtype
        embeds = embeds.to(dtype).repeat_interleave(num_images_per_prompt, dim=0)
        pooled = pooled.to(dtype).repeat_interleave(num_images_per_prompt, dim=0)
        return embeds, pooled

    # ------------------------------------------------------------------ latents

    def prepare_latents(
        self,
        batch_size: int,
        height: int,
        width: int,
        dtype: torch.dtype,
        device: torch.device,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Start noise as tokens `(B, N, C*p*p)`; given `latents` may be tokens or an
        image-shaped `(B, 3, H, W)` tensor."""
        p = self.patch_size
        if latents is None:
            noise = randn_tensor((batch_size, 3, height, width), generator=generator, device=device, dtype=dtype)
            return patchify(noise, p)
        if latents.ndim == 4:
            latents = patchify(latents, p)
        expected = (batch_size, (height // p) * (width // p), 3 * p * p)
        if tuple(latents.shape) != expected:
            raise ValueError(f"latents have shape {tuple(latents.shape)}, expected {expected} (or (B, 3, H, W))")
        return latents.to(device=device, dtype=dtype)

    def image_to_latents(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images in [0, 1] -> the clean latents this pipeline denoises:
        pixel-space tokens (B, N, 3*p*p) in [-1, 1] (used by image-conditioned transport)."""
        x = images.to(device=self._execution_device, dtype=self.transformer.dtype) * 2 - 1
        return patchify(x, self.patch_size)

    # ------------------------------------------------------------------ sampling

    def check_inputs(self, prompt, prompt_embeds, pooled_prompt_embeds, height, width, output_type, tensor_inputs):
        if (prompt is None) == (prompt_embeds is None):
            raise ValueError("Pass exactly one of `prompt` and `prompt_embeds`")
        if prompt is not None and not (
            isinstance(prompt, str) or (isinstance(prompt, list) and all(isinstance(p, str) for p in prompt))
        ):
            raise ValueError(f"`prompt` must be a str or a list of str, got {type(prompt).__name__}")
        if prompt_embeds is not None and pooled_prompt_embeds is None:
            raise ValueError("`prompt_embeds` needs `pooled_prompt_embeds` too")
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(f"height {height} and width {width} must be divisible by the patch size {p}")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"Unknown output_type {output_type!r}; allowed: {', '.join(OUTPUT_TYPES)}")
        bad = [k for k in tensor_inputs if k not in self._callback_tensor_inputs]
        if bad:
            raise ValueError(
                f"callback_on_step_end_tensor_inputs {bad} not allowed; allowed: {self._callback_tensor_inputs}"
            )

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 8,
        guidance_scale: float = 4.0,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        negative_pooled_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        joint_attention_kwargs: dict | None = None,
        callback_on_step_end: Callable[[DiffusionPipeline, int, torch.Tensor, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],  # noqa: B006 (diffusers' signature)
    ) -> BuiltinPipelineOutput | tuple:
        r"""Generate images. The defaults (8 Euler steps, guidance 4) are the settings whose
        fidelity and CPU time docs/builtin-model.md reports: 8 steps scored as well as 12-16
        on held-out captions at 2/3 of the CPU time of 12 (6 steps lost background accuracy).

        `negative_prompt` defaults to the empty (unconditional) prompt. `latents`: start
        noise, tokens `(B, N, 12)` or pixels `(B, 3, H, W)`. `callback_on_step_end(pipe,
        step, timestep, tensors)` may return replacements for `latents`.
        """
        height = height or self.config["image_size"]
        width = width or self.config["image_size"]
        self.check_inputs(
            prompt, prompt_embeds, pooled_prompt_embeds, height, width, output_type, callback_on_step_end_tensor_inputs
        )
        device = self._execution_device
        dtype = self.transformer.dtype

        # 1. Prompts: rows [unconditional..., conditional...] with guidance, one transformer call per step
        prompt_embeds, pooled_prompt_embeds = self._embeddings(
            prompt, prompt_embeds, pooled_prompt_embeds, num_images_per_prompt, device
        )
        batch_size = prompt_embeds.shape[0]  # already times num_images_per_prompt
        txt, vec = prompt_embeds, pooled_prompt_embeds
        if guidance_scale > 1.0:
            negative, negative_pooled = self._negative_embeddings(
                negative_prompt,
                negative_prompt_embeds,
                negative_pooled_prompt_embeds,
                batch_size // num_images_per_prompt,
                num_images_per_prompt,
                device,
            )
            txt, vec = torch.cat([negative, txt]), torch.cat([negative_pooled, vec])  # (2B, L, D), (2B, D)
        txt, vec = txt.to(device, dtype), vec.to(device, dtype)

        # 2. Noise and positions
        latents = self.prepare_latents(batch_size, height, width, dtype, device, generator, latents)  # (B, N, 12)
        img_ids = image_ids(height, width, self.patch_size, device, dtype)  # (N, 3)
        txt_ids = torch.zeros(txt.shape[1], 3, device=device, dtype=dtype)  # (L, 3)

        # 3. Euler steps
        latents = self._denoise(
            latents,
            Conditioning(txt, vec, img_ids, txt_ids, joint_attention_kwargs),
            self._timesteps(num_inference_steps, device),
            guidance_scale,
            callback_on_step_end,
            {"prompt_embeds": prompt_embeds},
            callback_on_step_end_tensor_inputs,
        )

        # 4. Pixels
        images = latents if output_type == "latent" else self._to_images(latents, height, width, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return BuiltinPipelineOutput(images=images)

    def _embeddings(
        self,
        prompt: str | list[str] | None,
        prompt_embeds: torch.Tensor | None,
        pooled_prompt_embeds: torch.Tensor | None,
        num_images_per_prompt: int,
        device: torch.device,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The prompts' (embeds (B*n, L, D), pooled (B*n, D)), or the given ones repeated per image."""
        if prompt_embeds is None:
            assert prompt is not None  # check_inputs: exactly one of them
            return self.encode_prompt(prompt, device, num_images_per_prompt)
        assert pooled_prompt_embeds is not None  # check_inputs: embeds come with pooled embeds
        return (
            prompt_embeds.repeat_interleave(num_images_per_prompt, dim=0),
            pooled_prompt_embeds.repeat_interleave(num_images_per_prompt, dim=0),
        )

    def _negative_embeddings(
        self,
        negative_prompt: str | list[str] | None,
        negative_prompt_embeds: torch.Tensor | None,
        negative_pooled_prompt_embeds: torch.Tensor | None,
        n_prompts: int,
        num_images_per_prompt: int,
        device: torch.device,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The unconditional rows of classifier-free guidance: the negative prompts (default:
        the empty prompt), or the given negative embeddings, repeated per image."""
        if negative_prompt_embeds is None:
            negative = negative_prompt if negative_prompt is not None else ""
            if isinstance(negative, str):
                negative = [negative] * n_prompts
            if len(negative) != n_prompts:
                raise ValueError(f"negative_prompt has {len(negative)} entries for {n_prompts} prompts")
            return self.encode_prompt(negative, device, num_images_per_prompt)
        if negative_pooled_prompt_embeds is None:
            raise ValueError("`negative_prompt_embeds` needs `negative_pooled_prompt_embeds` too")
        return self._embeddings(
            None, negative_prompt_embeds, negative_pooled_prompt_embeds, num_images_per_prompt, device
        )

    def _timesteps(self, num_inference_steps: int, device: torch.device) -> torch.Tensor:
        """Sigma from 1 (noise) down to 1/steps, then the last step lands on 0."""
        sigmas = np.linspace(1.0, 1.0 / num_inference_steps, num_inference_steps).tolist()
        self.scheduler.set_timesteps(sigmas=sigmas, device=device)
        self._num_timesteps = len(self.scheduler.timesteps)
        return self.scheduler.timesteps

    def _denoise(
        self,
        latents: torch.Tensor,
        cond: Conditioning,
        timesteps: torch.Tensor,
        guidance_scale: float,
        callback_on_step_end: Callable[[DiffusionPipeline, int, torch.Tensor, dict], dict] | None,
        callback_values: dict[str, torch.Tensor],
        callback_on_step_end_tensor_inputs: list[str],
    ) -> torch.Tensor:
        """Euler steps of the velocity from `latents` (B, N, C*p*p) at t = 1 to t = 0; with
        guidance each step makes one transformer call on both halves."""
        do_cfg, dtype = guidance_scale > 1.0, self.transformer.dtype
        with self.progress_bar(total=len(timesteps)) as progress_bar:
            for i, t in enumerate(timesteps):
                img = torch.cat([latents, latents]) if do_cfg else latents
                # The transformer multiplies by 1000 itself (FLUX's convention): pass sigma.
                velocity = predict_velocity(self.transformer, img, cond, (t / 1000).expand(img.shape[0]).to(dtype))
                if do_cfg:
                    uncond, conditional = velocity.chunk(2)
                    velocity = uncond + guidance_scale * (conditional - uncond)
                # (diffusers annotates torch.FloatTensor, the legacy name of any float tensor)
                step = self.scheduler.step(velocity, t, latents, return_dict=False)  # type: ignore[arg-type]
                latents = step[0].to(dtype)

                if callback_on_step_end is not None:
                    local = {"latents": latents, **callback_values}
                    outputs = callback_on_step_end(
                        self, i, t, {k: local[k] for k in callback_on_step_end_tensor_inputs}
                    )
                    latents = outputs.pop("latents", latents)
                progress_bar.update()
        return latents

    def _to_images(
        self, latents: torch.Tensor, height: int, width: int, output_type: str
    ) -> list[PIL.Image.Image] | np.ndarray | torch.Tensor:
        pixels = unpatchify(latents, height, width, self.patch_size).float().clamp(-1, 1)
        return self.image_processor.postprocess(pixels, output_type=output_type)


def load_builtin(
    device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, weights: str | Path | None = None
) -> BuiltinPipeline:
    """The built-in model on `device` in `dtype`: the shipped one (`DEFAULT_WEIGHTS`), or a
    folder of its family that `python -m ditlens.builtin.train` wrote (`weights`)."""
    folder = Path(weights) if weights is not None else DEFAULT_WEIGHTS
    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(
            f"No built-in weights at {folder}; train them with "
            "`python -m ditlens.builtin.train --out DIR` and copy DIR/model there"
        )
    pipe = BuiltinPipeline.from_pretrained(folder, dtype=dtype, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
