"""Complete tiny pipelines of the real diffusers classes (random weights), text encoders included.

Each family is a real diffusers pipeline with every component present: tokenizers built in
code (no download), tiny `transformers` text encoders, a tiny VAE of the family's class, a tiny
denoising transformer (every parameter re-drawn by `tests.tiny_models._randomise`, since
diffusers zero-initialises output and modulation layers) and the family's scheduler.
`save_pipeline` writes a folder that `ditlens.models.load_pipeline(str(folder))` loads back the
way a user's `--model FOLDER` is loaded, and the loaded pipeline generates from plain prompts.

Shared choices, so every family has the same token grid:
- the VAE downsamples 2x (SANA's DC-AE 4x, as SANA patchifies by 1) and the transformer packs or
  patchifies 2x2, so a 32x32 image is an 8x8 grid of 64 image tokens, 32x48 is 8x12 = 96;
- sizes: FLUX.1, FLUX.2 and Qwen-Image take any multiple of 4 (4x4 is the smallest; other sizes
  are rounded down with a warning); SD3 takes multiples of 4 up to 96 (its positional table) and
  raises on others; SANA takes only multiples of 32 (its check_inputs), so its non-square size
  is 32x64 (see `NON_SQUARE`), and by default it bins the size (see `_sana`); without
  height/width FLUX.1, FLUX.2 and Qwen-Image make 256x256 (default_sample_size 128 x 2), SD3
  32x32 (transformer sample_size 16 x 2), SANA 1024x1024;
- transformers are 2 heads x 16 dims (hidden size 32), text encoders 16-32 wide;
- tokenizers know the words of `full_tokenizers.WORDS` as whole tokens (a few hundred tokens in
  all) and split any other text into characters (bytes for the byte-level ones, unknown-token
  for CLIP and T5).
The tokenizers are built in tests/full_tokenizers.py, the shared pieces (seeding, text encoders,
VAEs, schedulers) in tests/full_components.py; this module puts each family together.
All of it is float32 on the CPU and deterministic (seeded). Run it with torch.set_num_threads(1):
on shared cores two threads make these tiny matmuls up to 100x slower.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKLFlux2,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    Flux2KleinPipeline,
    Flux2Transformer2DModel,
    FluxPipeline,
    FluxTransformer2DModel,
    QwenImagePipeline,
    QwenImageTransformer2DModel,
    SanaPipeline,
    SanaTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)
from transformers import (
    Gemma2Config,
    Gemma2Model,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from .full_components import (
    HEAD_DIM,
    HEADS,
    SEED,
    clip_text_encoder,
    dc_vae,
    decoder_dims,
    flow_scheduler,
    kl_vae,
    qwen_vae,
    seeded,
    t5_encoder,
    token_ids,
    transformer,
)
from .full_tokenizers import (
    QWEN_SPECIALS,
    QWEN_VL_SPECIALS,
    QWENIMAGE_TEMPLATE,
    clip_tokenizer,
    gemma_tokenizer,
    qwen_tokenizer,
    t5_tokenizer,
)

FAMILIES = ("flux", "flux2", "qwenimage", "sana", "sd3")
PIPELINE_CLASSES = {
    "flux": FluxPipeline,
    "flux2": Flux2KleinPipeline,
    "qwenimage": QwenImagePipeline,
    "sana": SanaPipeline,
    "sd3": StableDiffusion3Pipeline,
}
PROMPTS = ["a red cube", "a blue ball"]
# One negative prompt per prompt. FLUX.1 and Qwen-Image take a single string too, but then encode
# it once: the unconditional call gets a 1-row text stream against B image rows (broadcast).
NEGATIVE_PROMPTS = ["a green ball", "a green cube"]

SIZE = (32, 32)  # (height, width)
NON_SQUARE = {family: (32, 48) for family in FAMILIES} | {"sana": (32, 64)}  # SANA: multiples of 32 only
STEPS = 2

# A small run per family. SANA: see `_sana` for why binning is off.
FAMILY_CALL: dict[str, dict] = {
    family: {"height": SIZE[0], "width": SIZE[1], "num_inference_steps": STEPS} for family in FAMILIES
}
FAMILY_CALL["sana"]["use_resolution_binning"] = False

# Settings that make TWO transformer calls per step: the conditional call first, then the
# unconditional one, each with the batch of the prompts.
TRUE_CFG = {"true_cfg_scale": 2.0, "negative_prompt": NEGATIVE_PROMPTS}
TWO_CALL_CFG: dict[str, dict] = {
    "flux": dict(TRUE_CFG),  # guidance_scale is FLUX.1-dev's embedded guidance
    "qwenimage": dict(TRUE_CFG),  # the default true_cfg_scale=4 needs a negative prompt
    "flux2": {
        "guidance_scale": 4.0
    },  # the default: klein base (is_distilled=False) always runs CFG, negative prompt ""
}
# SANA and SD3 run classifier-free guidance by default (guidance_scale > 1) as ONE transformer
# call per step on 2B rows: torch.cat([uncond, cond]) (the unconditional half first).
BATCHED_CFG: dict[str, dict] = {"sana": {"guidance_scale": 4.5}, "sd3": {"guidance_scale": 7.0}}
# SD3 skip-layer guidance adds a third pass (B rows, cond only, `skip_layers`) in the steps i with
# start * num_inference_steps < i < stop * num_inference_steps. With the defaults (0.01, 0.2) that
# needs num_inference_steps >= 6 (then only step 1); these bounds give step 1 of a 2-step run.
SD3_SKIP_LAYER_GUIDANCE = {
    "skip_guidance_layers": [1],
    "skip_layer_guidance_start": 0.0,
    "skip_layer_guidance_stop": 1.0,
}


# Patch 1 on latents packed or patchified 2x2 (4 channels -> 16), 2 double + 2 single blocks
FLUX_BLOCKS = {"patch_size": 1, "in_channels": 16, "num_layers": 2, "num_single_layers": 2}


def _flux() -> FluxPipeline:
    """FLUX.1 [dev]: CLIP (16 wide, pooled -> `pooled_projections`) + T5 (32 wide, 512 tokens by
    default -> `encoder_hidden_states`), a 2x-down AutoencoderKL with 4 latent channels (packed 2x2
    into the transformer's 16 input channels), a 2+2-block FluxTransformer2DModel with guidance
    embedding (so `guidance_scale` is embedded, not CFG), FLUX's dynamic-shift flow-match scheduler."""
    tokenizer, tokenizer_2 = clip_tokenizer(), t5_tokenizer()
    return FluxPipeline(
        scheduler=flow_scheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15),
        vae=kl_vae(scaling_factor=0.3611, shift_factor=0.1159),
        text_encoder=clip_text_encoder(tokenizer, projection=False),
        tokenizer=tokenizer,
        text_encoder_2=t5_encoder(tokenizer_2),
        tokenizer_2=tokenizer_2,
        transformer=transformer(
            FluxTransformer2DModel,
            **FLUX_BLOCKS,
            joint_attention_dim=32,
            pooled_projection_dim=16,
            guidance_embeds=True,
            axes_dims_rope=(4, 6, 6),
        ),
    )


def _flux2() -> Flux2KleinPipeline:
    """FLUX.2 [klein] base (is_distilled=False, so the default guidance_scale=4 runs CFG as a
    second transformer call with the prompt ""). The text encoder is a Qwen3ForCausalLM 16 wide
    but 27 layers deep: the pipeline stacks hidden_states[9], [18] and [27] (its default
    `text_encoder_out_layers`), so the transformer's joint_attention_dim is 3 x 16 = 48; prompts
    go through the chat template and are padded to 512 tokens. AutoencoderKLFlux2 2x down with 4
    latent channels, patchified 2x2 to 16 channels and normalised by its BatchNorm running stats
    (set to random, non-trivial values here); a 2+2-block Flux2Transformer2DModel."""
    tokenizer = qwen_tokenizer()
    config = Qwen3Config(
        **decoder_dims(tokenizer, width=16, layers=27, positions=1024),
        head_dim=8,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
    )
    vae = kl_vae(AutoencoderKLFlux2, patch_size=(2, 2))
    g = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        vae.bn.running_mean.copy_(0.1 * torch.randn(vae.bn.running_mean.shape, generator=g))
        vae.bn.running_var.copy_(0.5 + torch.rand(vae.bn.running_var.shape, generator=g))
    return Flux2KleinPipeline(
        scheduler=flow_scheduler(shift=3.0, use_dynamic_shifting=True, time_shift_type="exponential"),
        vae=vae,
        text_encoder=seeded(lambda: Qwen3ForCausalLM(config)),
        tokenizer=tokenizer,
        transformer=transformer(
            Flux2Transformer2DModel,
            **FLUX_BLOCKS,
            joint_attention_dim=3 * 16,
            timestep_guidance_channels=32,
            mlp_ratio=3.0,
            axes_dims_rope=(4, 4, 4, 4),
            guidance_embeds=False,
        ),
        is_distilled=False,
    )


# Qwen-Image's scheduler: exponential dynamic shifting between these sequence lengths, stretched to a terminal sigma
QWENIMAGE_SCHEDULER = {
    "shift": 1.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 0.9,
    "base_image_seq_len": 256,
    "max_image_seq_len": 8192,
    "shift_terminal": 0.02,
    "time_shift_type": "exponential",
}


def _qwenimage() -> QwenImagePipeline:
    """Qwen-Image: Qwen2.5-VL (text 32 wide, 2 layers; a 1-block vision tower that text-only
    prompts never use) reading the last hidden state. The pipeline wraps the prompt in its system
    template and drops the first 34 tokens (`prompt_template_encode_start_idx`): the tokenizer
    makes the template's system part exactly 34 tokens as Qwen's does, so what remains is the
    prompt plus `<|im_end|>\\n<|im_start|>assistant\\n` (5 tokens). AutoencoderKLQwenImage 2x down
    (one spatial downsample), z_dim 4, packed 2x2 to 16 channels; a 2-block transformer.

    The scheduler has Qwen-Image's terminal shift (`shift_terminal=0.02`, exponential dynamic
    shifting): with num_inference_steps=1 its only sigma is NaN (0/0 in the stretch) and the
    image is NaN; 2 steps give sigmas (1, 0.02, 0)."""
    tokenizer = qwen_tokenizer(extra_texts=(QWENIMAGE_TEMPLATE.format(""),), vision_tokens=True)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIALS + QWEN_VL_SPECIALS}
    text = decoder_dims(tokenizer, width=32, layers=2, positions=2048) | {
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    vision = {"depth": 1, "hidden_size": 16, "intermediate_size": 32, "num_heads": 2, "out_hidden_size": 32}
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision | {"fullatt_block_indexes": [0]},  # its one block with full attention
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    text_encoder = seeded(lambda: Qwen2_5_VLForConditionalGeneration(config))
    g = torch.Generator().manual_seed(SEED)
    latents_mean = (0.1 * torch.randn(4, generator=g)).tolist()
    vae = qwen_vae(latents_mean, latents_std=(1.0 + torch.rand(4, generator=g)).tolist())
    return QwenImagePipeline(
        scheduler=flow_scheduler(**QWENIMAGE_SCHEDULER),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer(
            QwenImageTransformer2DModel,
            patch_size=2,
            in_channels=16,
            out_channels=4,
            num_layers=2,
            joint_attention_dim=32,
            axes_dims_rope=(4, 6, 6),
        ),
    )


def _sana() -> SanaPipeline:
    """SANA: Gemma2Model (32 wide, 2 layers) whose last hidden state feeds the transformer
    (caption_channels 32); by default the pipeline prepends its long `complex_human_instruction`
    and keeps the first token plus the last 299 of them. AutoencoderDC 4x down (3 stages, the last
    an EfficientViT attention block), 4 latent channels; a 2-block SanaTransformer2DModel with
    patch 1; SANA's flow DPM-Solver++ scheduler (flow_shift 3).

    Resolution binning (`use_resolution_binning=True`, the default) maps the request to the
    nearest aspect-ratio bin of a table chosen by the transformer's `sample_size` (only 16, 32,
    64 and 128 are allowed; anything else raises "Invalid sample size"), generates there and
    resizes the image back. `sample_size=16` selects the smallest table (ASPECT_RATIO_512_BIN):
    a 32x32 request is generated at 512x512 (128x128 latents, 16384 image tokens here) and a 32x48
    one at 416x608, then resized to the request (so with binning 32x48 is accepted; without it
    the size must be a multiple of 32). Small runs need `use_resolution_binning=False` (in
    FAMILY_CALL). Without `height`/`width` SANA makes 1024x1024 (its signature's default)."""
    tokenizer = gemma_tokenizer()
    config = Gemma2Config(
        **decoder_dims(tokenizer, width=32, layers=2, positions=8192),
        head_dim=16,
        query_pre_attn_scalar=16,
        sliding_window=4096,
        **token_ids(tokenizer, "pad", "eos", "bos"),
    )
    sana_transformer = transformer(
        SanaTransformer2DModel,
        in_channels=4,
        out_channels=4,
        num_layers=2,
        num_cross_attention_heads=HEADS,
        cross_attention_head_dim=HEAD_DIM,
        cross_attention_dim=HEADS * HEAD_DIM,
        caption_channels=32,
        mlp_ratio=2.5,
        sample_size=16,
        patch_size=1,
    )
    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=1000,
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=3.0,
        solver_order=2,
        algorithm_type="dpmsolver++",
        final_sigmas_type="zero",
    )
    return SanaPipeline(
        tokenizer=tokenizer,
        text_encoder=seeded(lambda: Gemma2Model(config)),
        vae=dc_vae((8, 16, 32), attention_head_dim=8, scaling_factor=0.41407),
        transformer=sana_transformer,
        scheduler=scheduler,
    )


def _sd3() -> StableDiffusion3Pipeline:
    """SD3.5-style: two CLIPTextModelWithProjection (16 wide each; the penultimate hidden states
    are concatenated to 32 and zero-padded to T5's width, the projections concatenated to the 32
    `pooled_projections`) and T5 (32 wide, 256 tokens by default), so the transformer sees
    77 + 256 text tokens. A 2x-down AutoencoderKL with 4 latent channels; a 3-block
    SD3Transformer2DModel (patch 2, block 0 with dual attention, RMS qk-norm), positional
    embeddings up to 24 patches a side (96 pixels); SD3's flow-match scheduler (shift 3)."""
    tokenizer, tokenizer_3 = clip_tokenizer(), t5_tokenizer()
    sd3_transformer = transformer(
        SD3Transformer2DModel,
        sample_size=16,
        patch_size=2,
        in_channels=4,
        num_layers=3,
        joint_attention_dim=32,
        caption_projection_dim=HEADS * HEAD_DIM,
        pooled_projection_dim=32,
        out_channels=4,
        pos_embed_max_size=24,
        dual_attention_layers=(0,),
        qk_norm="rms_norm",
    )
    return StableDiffusion3Pipeline(
        transformer=sd3_transformer,
        scheduler=flow_scheduler(shift=3.0),
        vae=kl_vae(scaling_factor=1.5305, shift_factor=0.0609),
        text_encoder=clip_text_encoder(tokenizer, projection=True, seed=SEED),
        tokenizer=tokenizer,
        text_encoder_2=clip_text_encoder(tokenizer, projection=True, seed=SEED + 1),
        tokenizer_2=clip_tokenizer(),
        text_encoder_3=t5_encoder(tokenizer_3),
        tokenizer_3=tokenizer_3,
    )


_BUILDERS = {"flux": _flux, "flux2": _flux2, "qwenimage": _qwenimage, "sana": _sana, "sd3": _sd3}


def build_pipeline(family: str) -> DiffusionPipeline:
    """The complete tiny pipeline of `family` in memory (float32, CPU, progress bar off)."""
    if family not in _BUILDERS:
        raise ValueError(f"Unknown family {family!r}. Known: {', '.join(FAMILIES)}.")
    pipe = _BUILDERS[family]()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_pipeline(family: str, folder: str | Path) -> Path:
    """Write `family`'s pipeline to `folder` (save_pretrained, .safetensors weights)."""
    folder = Path(folder)
    build_pipeline(family).save_pretrained(folder, safe_serialization=True)
    return folder


_FOLDERS: dict[str, Path] = {}


def pipeline_folder(tmp_path_factory, family: str) -> Path:
    """`family`'s saved pipeline folder, built and saved once per test session."""
    if family not in _FOLDERS:
        _FOLDERS[family] = save_pipeline(family, tmp_path_factory.mktemp(f"pipeline_{family}"))
    return _FOLDERS[family]
