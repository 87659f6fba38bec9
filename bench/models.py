"""The models the bench scripts measure: the built-in transformer and pipeline (shipped
weights, else its architecture with random weights) and FLUX.1 at full size with random
weights (on the GPU only), with the forward inputs a FLUX pipeline would pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import common  # noqa: F401  (puts the repo root on sys.path, for ditlens and tests)
import torch


def randomise_(model: torch.nn.Module, std: float, seed: int = 0) -> torch.nn.Module:
    """Overwrite every parameter in place with N(0, std) (norm weights 1 + N(0, std)), on the
    parameters' own device: diffusers zero-initialises adaLN modulation and output layers,
    which would make every block the identity and every statistic trivial."""
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            is_norm = "Norm" in type(module).__name__
            for name, p in module.named_parameters(recurse=False):
                p.normal_(0.0, std, generator=gen)
                if is_norm and name == "weight":
                    p.add_(1.0)
    return model.eval()


@dataclass
class FluxShape:
    """Forward inputs of a `FluxTransformer2DModel`: batch rows, image grid and text length."""

    batch: int
    grid: int  # image tokens per side: N_img = grid**2
    n_txt: int

    @property
    def n_img(self) -> int:
        return self.grid * self.grid


def flux_inputs(transformer: torch.nn.Module, shape: FluxShape, seed: int = 0) -> dict[str, Any]:
    """The kwargs a FLUX pipeline passes to the transformer, sized from its config."""
    cfg = transformer.config
    param = next(transformer.parameters())
    device, dtype = param.device, param.dtype
    gen = torch.Generator(device=device).manual_seed(seed)
    img_ids = torch.zeros(shape.grid, shape.grid, 3, device=device)
    img_ids[..., 1] = torch.arange(shape.grid, device=device)[:, None]
    img_ids[..., 2] = torch.arange(shape.grid, device=device)[None, :]
    B = shape.batch
    inputs = {
        "hidden_states": torch.randn(B, shape.n_img, cfg.in_channels, generator=gen, device=device, dtype=dtype),
        "encoder_hidden_states": torch.randn(
            B, shape.n_txt, cfg.joint_attention_dim, generator=gen, device=device, dtype=dtype
        ),
        "pooled_projections": torch.randn(B, cfg.pooled_projection_dim, generator=gen, device=device, dtype=dtype),
        "timestep": torch.full((B,), 0.5, device=device, dtype=dtype),  # pipelines pass sigma = t / 1000
        "img_ids": img_ids.reshape(shape.n_img, 3).to(dtype),
        "txt_ids": torch.zeros(shape.n_txt, 3, device=device, dtype=dtype),
        "return_dict": False,
    }
    if cfg.guidance_embeds:
        inputs["guidance"] = torch.full((B,), 3.5, device=device, dtype=dtype)
    return inputs


def builtin_pipeline(seed: int = 0) -> tuple[Any, str]:
    """The built-in pipeline with its shipped weights, or, while none ship, the same
    architecture (`ditlens.builtin.train.TrainConfig` defaults) with random weights."""
    import diffusers

    from ditlens.builtin import load_builtin

    diffusers.utils.logging.set_verbosity_error()  # no accelerate hint or loading bars in bench output
    diffusers.utils.logging.disable_progress_bar()
    try:
        return load_builtin(), "built-in pipeline, shipped weights"
    except FileNotFoundError:
        from ditlens.builtin.train import TrainConfig, build_pipeline

        torch.manual_seed(seed)
        pipe = build_pipeline(TrainConfig())
        randomise_(pipe.transformer, std=0.02, seed=seed)
        pipe.set_progress_bar_config(disable=True)
        return pipe.eval() if hasattr(pipe, "eval") else pipe, (
            "built-in weights not shipped yet: built-in architecture (TrainConfig defaults) with random weights"
        )


def builtin_shape(pipe: Any, images: int = 8) -> FluxShape:
    """One CFG step of `images` images: 2 x images rows, the pipeline's token grid and text length."""
    grid = pipe.config.image_size // pipe.patch_size
    return FluxShape(batch=2 * images, grid=grid, n_txt=pipe.text_encoder.config.max_length)


def describe_transformer(t: torch.nn.Module) -> str:
    c = t.config
    params = sum(p.numel() for p in t.parameters())
    p = next(t.parameters())
    return (
        f"FluxTransformer2DModel: {c.num_layers} double + {c.num_single_layers} single blocks, "
        f"hidden {c.num_attention_heads * c.attention_head_dim} ({c.num_attention_heads} heads x "
        f"{c.attention_head_dim}), in_channels {c.in_channels}, {params / 1e6:.1f} M parameters, {p.dtype}, {p.device}"
    )


#: FLUX.1 [dev] transformer config (black-forest-labs/FLUX.1-dev, transformer/config.json)
FLUX1_CONFIG: dict[str, Any] = {
    "patch_size": 1,
    "in_channels": 64,
    "num_layers": 19,
    "num_single_layers": 38,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "pooled_projection_dim": 768,
    "guidance_embeds": True,
    "axes_dims_rope": (16, 56, 56),
}
#: 1024 x 1024 images: 128 x 128 latents packed 2 x 2 -> 64 x 64 tokens; T5 at 512 tokens
FLUX1_SHAPE = FluxShape(batch=1, grid=64, n_txt=512)


def flux_full_transformer(
    device: torch.device, dtype: torch.dtype = torch.bfloat16, seed: int = 0, **overrides: Any
) -> torch.nn.Module:
    """The real FLUX.1 transformer size with random weights, built directly on `device`
    in `dtype` (no fp32 copy on the host: 12 B parameters would take minutes there).
    `overrides` change the config, e.g. `num_layers=1, num_single_layers=1` for one block of each kind."""
    from diffusers import FluxTransformer2DModel

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = FluxTransformer2DModel(**(FLUX1_CONFIG | overrides))
    finally:
        torch.set_default_dtype(previous)
    return randomise_(model, std=0.02, seed=seed)


def flux_full_pipeline(device: torch.device, seed: int = 0, **overrides: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """A real `FluxPipeline` around `flux_full_transformer` (bf16, on `device`) with a small
    random VAE of FLUX's latent layout (16 channels, 8x down) and no text encoders, plus
    random T5/CLIP-sized prompt embeddings for 2 prompts (512 tokens): the pipeline's own
    denoising loop at FLUX.1 size, where the transformer is nearly all of the cost."""
    from tests.pipelines import flux_pipeline, tiny_vae

    torch.manual_seed(seed)
    vae = tiny_vae(widths=(8, 8, 8, 8), latent_channels=16).to(device, torch.bfloat16)  # FLUX's 8x down, 16 channels
    transformer = flux_full_transformer(device, torch.bfloat16, seed, **overrides)
    pipe = flux_pipeline(transformer, vae)
    pipe.set_progress_bar_config(disable=True)
    return pipe, prompt_embeddings(transformer, FLUX1_SHAPE.n_txt, 100 + seed)


def tiny_flux_pipeline(seed: int = 0) -> tuple[Any, dict[str, torch.Tensor]]:
    """The tiny random FluxPipeline of tests/pipelines.py and random embeddings for 2 prompts (8 tokens)."""
    from tests.pipelines import tiny_flux_pipeline

    pipe = tiny_flux_pipeline(seed)
    pipe.set_progress_bar_config(disable=True)
    return pipe, prompt_embeddings(pipe.transformer, 8, 100 + seed)


def prompt_embeddings(transformer: torch.nn.Module, n_txt: int, seed: int) -> dict[str, torch.Tensor]:
    """Random `prompt_embeds` (T5's, `n_txt` tokens) and `pooled_prompt_embeds` (CLIP's) for
    2 prompts, sized from the transformer's config, on its device and in its dtype: they stand
    in for the text encoders, which the bench pipelines are built without."""
    cfg, param = transformer.config, next(transformer.parameters())
    gen = torch.Generator(device=param.device).manual_seed(seed)
    like = dict(generator=gen, device=param.device, dtype=param.dtype)
    return {
        "prompt_embeds": torch.randn(2, n_txt, cfg.joint_attention_dim, **like),
        "pooled_prompt_embeds": torch.randn(2, cfg.pooled_projection_dim, **like),
    }


def require_cuda(device: torch.device, what: str) -> None:
    if device.type != "cuda":
        raise SystemExit(f"{what} needs a CUDA GPU (FLUX.1 size: 12 B parameters in bf16); see bench/gpu_all.sh.")
