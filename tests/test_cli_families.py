"""Every command of the CLI on complete tiny pipelines of the five families, loaded from
folders written by `save_pretrained` (tests/full_pipelines.py), as a user's `--model FOLDER`.

Each family runs with guidance in its own layout: FLUX.1 and Qwen-Image with true CFG (two
transformer calls per step), FLUX.2 klein with its default guidance (two calls), SANA and
SD3 with their default concatenated [uncond, cond] batch (one call of twice the rows).
Every output must hold one entry per prompt x seed.
"""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from safetensors import safe_open

from ditlens.cli import main

from .full_pipelines import FAMILIES, NON_SQUARE, pipeline_folder

PROMPTS = ["a red cube", "a blue ball"]
SEEDS = ["0", "1"]
SAMPLES = len(PROMPTS) * len(SEEDS)
SIZE = (32, 32)
#: guidance that makes the family's two-branch layout (see the module docstring)
GUIDANCE = {
    "flux": ["--true-cfg", "2", "--negative-prompt", "a green ball"],
    "qwenimage": ["--true-cfg", "2", "--negative-prompt", "a green ball"],
    "flux2": [],  # klein's default guidance_scale 4: a conditional then an unconditional call
    "sana": [],  # default guidance 4.5: one call on [uncond, cond]
    "sd3": [],  # default guidance 7: one call on [uncond, cond]
}
#: families whose scheduler is no flow-matching Euler one: no ODE inversion (--reference-path renoise only)
NOT_INVERTIBLE = {"sana": "DPMSolverMultistepScheduler"}
#: rows per transformer call of one step, with 2 prompts, under GUIDANCE
ROWS_PER_CALL = {"flux": [2, 2], "qwenimage": [2, 2], "flux2": [2, 2], "sana": [4], "sd3": [4]}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def folder(tmp_path_factory, request):
    return pipeline_folder(tmp_path_factory, request.param)


def _run(argv: list[str]) -> None:
    assert main([*argv, "--quiet"]) == 0, argv


def _common(family: str, model, size=SIZE) -> list[str]:
    prompts = [arg for p in PROMPTS for arg in ("--prompt", p)]
    size_args = f"--steps 2 --height {size[0]} --width {size[1]}".split()
    return ["--model", str(model), *prompts, "--seeds", *SEEDS, *size_args, *GUIDANCE[family]]


def _transport_common(family: str, model) -> list[str]:
    settings = "--steps 2 --height 32 --width 32 --k 4".split()
    return ["--model", str(model), "--target", "a blue ball", *settings, *GUIDANCE[family]]


def _truth(tmp_path, n: int, size=SIZE):
    folder = tmp_path / "truth"
    folder.mkdir()
    for i in range(n):
        mask = Image.new("L", (size[1], size[0]), 0)
        mask.paste(255, (size[1] // 4, size[0] // 4, 3 * size[1] // 4, 3 * size[0] // 4))
        mask.save(folder / f"mask_{i:03d}.png")
    return folder


families = pytest.mark.parametrize("folder", FAMILIES, indirect=True, ids=FAMILIES)


@families
def test_find(folder, tmp_path, request):
    family = request.node.callspec.id
    out = tmp_path / "find"
    _run(["find", *_common(family, folder), "--k", "2", "--out", str(out)])
    summary = json.loads((out / "channels.json").read_text())
    layout = summary["layout"]
    assert layout["rows_per_call"] == ROWS_PER_CALL[family] and layout["runs"] == 2
    assert len(layout["summary_rows"]) == SAMPLES
    roles = [label["role"] for label in layout["row_labels"]]
    assert roles.count("cond") == SAMPLES and roles.count("uncond") == SAMPLES
    assert sorted(p.name for p in out.glob("image_*.png")) == [f"image_{i:03d}.png" for i in range(SAMPLES)]
    for info in summary["sites"].values():
        assert len(info["top_channels"]) == 2
        assert all(channels is not None for channels in info["top_k_per_step_first_sample"])
    for plot in ("top_vs_median.png", "channel_atlas.png", "surface.png"):
        assert (out / plot).is_file()


@families
def test_disrupt(folder, tmp_path, request):
    family = request.node.callspec.id
    out = tmp_path / "disrupt"
    _run(["disrupt", *_common(family, folder), *"--ks 1 --rules top random --draws 1 --out".split(), str(out)])
    report = json.loads((out / "disrupt.json").read_text())
    assert (out / "grid.png").is_file() and (out / "metrics.json").is_file()
    labels = [c["label"].replace("#", "_draw") for c in report["conditions"]]
    assert labels == ["none", "top-1", "random-1_draw0"]
    for label in labels:  # one image per prompt x seed and condition
        assert sorted(p.name for p in out.glob(f"{label}_*.png")) == [f"{label}_{i:03d}.png" for i in range(SAMPLES)]


@pytest.mark.parametrize(
    "folder, size",
    [(f, s) for f in FAMILIES for s in (SIZE, NON_SQUARE[f])],
    indirect=["folder"],
    ids=[f"{f}-{s[0]}x{s[1]}" for f in FAMILIES for s in (SIZE, NON_SQUARE[f])],
)
def test_segment_with_a_truth_folder(folder, size, tmp_path, request):
    family = request.node.callspec.id.split("-")[0]
    out = tmp_path / "segment"
    truth = _truth(tmp_path, SAMPLES, size)
    _run(["segment", *_common(family, folder, size), "--k", "2", "--truth-dir", str(truth), "--out", str(out)])
    summary = json.loads((out / "segment.json").read_text())
    assert tuple(summary["image_size"]) == size
    rows, cols = summary["grid"]  # the latent's own grid: its aspect is the image's
    assert rows * size[1] == cols * size[0] and rows >= 1
    assert set(summary["scores"]) >= {"top", "bottom", "random", "all"}
    assert [(s["seed"], s["prompt"]) for s in summary["meta"]["samples"]] == [
        (int(seed), p) for seed in SEEDS for p in PROMPTS
    ]
    with safe_open(str(out / "masks.safetensors"), "pt") as f:
        top = f.get_tensor("top")
    assert top.shape[2] == SAMPLES  # (steps, sites, samples, N): no unconditional masks among the samples
    assert top.shape[3] == summary["grid"][0] * summary["grid"][1]


@families
def test_transport_text_and_reference(folder, tmp_path, request):
    family = request.node.callspec.id
    out = tmp_path / "text"
    _run(["transport", *_transport_common(family, folder), "--source", "a red cube", "--out", str(out)])
    assert (out / "transported_alpha1.00.png").is_file() and (out / "source.png").is_file()
    reference = tmp_path / "reference.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(reference)
    from_reference = ["transport", *_transport_common(family, folder), "--reference", str(reference)]
    paths = ["renoise"] if family in NOT_INVERTIBLE else ["renoise", "invert"]
    for path in paths:
        out = tmp_path / f"reference-{path}"
        _run([*from_reference, "--reference-path", path, "--out", str(out)])
        settings = json.loads((out / "settings.json").read_text())
        assert settings["reference_path"] == path
        image = Image.open(out / "transported_alpha1.00.png")
        assert image.size == (32, 32)
    if family in NOT_INVERTIBLE:  # refused from the folder's model_index.json, before loading, with the way out
        import time

        start = time.perf_counter()
        argv = [*from_reference, "--reference-path", "invert", "--out", str(tmp_path / "refused"), "--quiet"]
        assert main(argv) == 2
        assert time.perf_counter() - start < 1.0
        assert not (tmp_path / "refused").exists()


@families
def test_interpolate(folder, tmp_path, request):
    family = request.node.callspec.id
    out = tmp_path / "interpolate"
    from_text = ["interpolate", *_transport_common(family, folder), "--source", "a red cube"]
    _run([*from_text, "--alphas", "0", "1", "--out", str(out)])
    assert (out / "strip.png").is_file()
    assert len(list((out / "frames").glob("*.png"))) == 2


@pytest.mark.parametrize("folder", ["flux", "qwenimage", "flux2"], indirect=True, ids=["flux", "qwenimage", "flux2"])
def test_the_first_of_two_calls_is_the_conditional_one(folder, request):
    """Step 0's conditional call sees the same inputs with and without the unconditional
    call beside it: the rows `ditlens.core.rows` names conditional must equal a run without
    guidance, at step 0, to float tolerance. (Were the calls the other way round, they
    would be the negative prompt's.)"""
    from ditlens.config import GenerationSettings
    from ditlens.find import FindConfig, find_channels
    from ditlens.models import load_pipeline

    family = request.node.callspec.id
    pipe = load_pipeline(str(folder))
    common = dict(num_inference_steps=2, height=32, width=32)
    if family == "flux2":
        with_cfg_settings = GenerationSettings(**common, guidance_scale=4.0)
        without_settings = GenerationSettings(**common, guidance_scale=1.0)
    else:
        with_cfg_settings = GenerationSettings(**common, true_cfg_scale=2.0, negative_prompt="a green ball")
        without_settings = GenerationSettings(**common)
    with_cfg = find_channels(pipe, FindConfig(PROMPTS, seeds=[0], k=2, generation=with_cfg_settings))
    without = find_channels(pipe, FindConfig(PROMPTS, seeds=[0], k=2, generation=without_settings))
    assert with_cfg.stats.meta["rows_per_call"] == [2, 2] and without.stats.meta["rows_per_call"] == [2]
    got, want = with_cfg.samples.img["abs_mean"][0], without.samples.img["abs_mean"][0]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(
        with_cfg.stats.img["abs_mean"][0, :, 2:], want, rtol=1e-4, atol=1e-6
    )  # the negative rows differ
