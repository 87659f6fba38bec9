"""Complete tiny pipelines (tests/full_pipelines.py) load through ditlens and generate from prompts."""

from __future__ import annotations

import pytest
import torch

from ditlens.models import load_pipeline

from .full_pipelines import (
    BATCHED_CFG,
    FAMILIES,
    FAMILY_CALL,
    NON_SQUARE,
    PIPELINE_CLASSES,
    PROMPTS,
    SD3_SKIP_LAYER_GUIDANCE,
    SIZE,
    STEPS,
    TWO_CALL_CFG,
    build_pipeline,
    pipeline_folder,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module", params=FAMILIES)
def loaded(request, tmp_path_factory):
    """(family, folder, pipeline loaded from the folder as `--model FOLDER` loads it)."""
    family = request.param
    folder = pipeline_folder(tmp_path_factory, family)
    pipe = load_pipeline(str(folder))
    pipe.set_progress_bar_config(disable=True)
    return family, folder, pipe


def generate(pipe, **kwargs) -> torch.Tensor:
    return pipe(prompt=PROMPTS, generator=torch.Generator().manual_seed(0), output_type="pt", **kwargs).images


def transformer_calls(pipe, **kwargs) -> list[list[int]]:
    """Generate, and return the batch rows of every transformer call, grouped by step (timestep)."""
    steps: dict[float, list[int]] = {}

    def record(module, args, kw):
        rows = (kw["hidden_states"] if "hidden_states" in kw else args[0]).shape[0]
        steps.setdefault(float(kw["timestep"].flatten()[0]), []).append(rows)

    handle = pipe.transformer.register_forward_pre_hook(record, with_kwargs=True)
    try:
        generate(pipe, **kwargs)
    finally:
        handle.remove()
    return list(steps.values())


def test_folder_loads_as_the_family_class(loaded):
    family, folder, pipe = loaded
    assert type(pipe) is PIPELINE_CLASSES[family]
    assert list(folder.rglob("*.safetensors")) and not list(folder.rglob("*.bin"))
    names = [n for n in pipe.components if n.startswith(("text_encoder", "tokenizer"))]
    assert names and all(pipe.components[n] is not None for n in names)
    assert all(p.dtype == torch.float32 for p in pipe.transformer.parameters())


def test_saved_tokenizers_load_back_unchanged(loaded):
    family, _, pipe = loaded
    built = build_pipeline(family)
    texts = [*PROMPTS, "Zebra! é 3", "<|im_start|>user\nhi<|im_end|>"]
    for name in [n for n in pipe.components if n.startswith("tokenizer")]:
        assert [getattr(pipe, name)(t).input_ids for t in texts] == [
            getattr(built, name)(t).input_ids for t in texts
        ], name


def test_two_prompts_make_two_finite_images(loaded):
    family, _, pipe = loaded
    images = generate(pipe, **FAMILY_CALL[family])
    assert images.shape == (2, 3, *SIZE)
    assert torch.isfinite(images).all()
    assert not torch.allclose(images[0], images[1])


def test_non_square_size(loaded):
    family, _, pipe = loaded
    height, width = NON_SQUARE[family]
    images = generate(pipe, **{**FAMILY_CALL[family], "height": height, "width": width})
    assert images.shape == (2, 3, height, width)
    assert torch.isfinite(images).all()


def test_guidance_calls_per_step(loaded):
    """TWO_CALL_CFG: two calls per step with B rows each; SANA/SD3 CFG: one call with 2B rows."""
    family, _, pipe = loaded
    if family in TWO_CALL_CFG:
        calls = transformer_calls(pipe, **FAMILY_CALL[family], **TWO_CALL_CFG[family])
        assert calls == [[2, 2]] * STEPS
    else:
        calls = transformer_calls(pipe, **FAMILY_CALL[family], **BATCHED_CFG[family])
        assert calls == [[4]] * STEPS
    if family in ("flux", "qwenimage"):  # without a negative prompt: no true CFG, one call per step
        assert transformer_calls(pipe, **FAMILY_CALL[family]) == [[2]] * STEPS


def test_sd3_skip_layer_guidance_adds_a_call(tmp_path_factory):
    pipe = load_pipeline(str(pipeline_folder(tmp_path_factory, "sd3")))
    pipe.set_progress_bar_config(disable=True)
    # uncond+cond batched, then in step 1 the cond rows again with layer 1 skipped
    assert transformer_calls(pipe, **FAMILY_CALL["sd3"], **SD3_SKIP_LAYER_GUIDANCE) == [[4], [4, 2]]
    # the default window (0.01, 0.2) of the steps holds no step of a 2-step run
    assert transformer_calls(pipe, **FAMILY_CALL["sd3"], skip_guidance_layers=[1]) == [[4], [4]]


def test_qwenimage_keeps_the_prompt_after_the_dropped_template(tmp_path_factory):
    pipe = load_pipeline(str(pipeline_folder(tmp_path_factory, "qwenimage")))
    embeds, mask = pipe.encode_prompt(PROMPTS)
    # "a red cube" is 3 tokens, then <|im_end|> \n <|im_start|> assistant \n
    assert embeds.shape[:2] == (2, 3 + 5) and mask is None


def test_sana_resolution_binning_generates_at_the_bin_size(tmp_path_factory):
    pipe = load_pipeline(str(pipeline_folder(tmp_path_factory, "sana")))
    pipe.set_progress_bar_config(disable=True)
    shapes = []
    pipe.transformer.register_forward_pre_hook(lambda m, args: shapes.append(tuple(args[0].shape)))
    images = generate(pipe, height=32, width=32, num_inference_steps=1)  # use_resolution_binning=True
    assert shapes == [(4, 4, 128, 128)]  # 512x512 (ASPECT_RATIO_512_BIN) through the 4x DC-AE
    assert images.shape == (2, 3, 32, 32)  # resized back
