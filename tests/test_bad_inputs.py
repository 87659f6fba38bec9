"""The catalogue of bad inputs: every one gets a clear answer, never a traceback or a half-written result.

CLI cases: exit code 2, one line `ditlens COMMAND: error: ...` that names the bad value and
what is allowed, no "Traceback" on stderr, no output folder and no temporary file left.
API cases: the documented exception type with the same kind of message.

Cases marked xfail(strict=True) are known gaps in ditlens, each with the file to fix; when
a fix lands the case passes, strict xfail fails, and the marker must go.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from ditlens.cli import main

from .pipelines import flux_call_kwargs, tiny_flux_pipeline

SITES = "transformer_blocks.0, transformer_blocks.1, single_transformer_blocks.0, single_transformer_blocks.1"


@dataclass(frozen=True)
class Assets:
    root: Path

    def __getattr__(self, name: str) -> str:
        return str(self.root / FILES[name])


FILES = {
    "pipe": "pipe",
    "nan_pipe": "nan_pipe",
    "unet_pipe": "unet_pipe",
    "not_a_pipe": "not_a_pipe",
    "embeds": "embeds.safetensors",
    "embeds_wrong_key": "wrong_key.safetensors",
    "junk": "junk.png",
    "small_mask": "small_mask.png",
    "one_mask": "one_mask",
    "small_masks": "small_masks",
    "a_file": "a_file",
    "missing": "missing/none.txt",
    "chroma_index": "chroma_index",
    "kontext_index": "kontext_index",
    "index_list": "index_list",
    "index_empty": "index_empty",
    "index_broken": "index_broken",
    "empty_prompts": "empty_prompts.txt",
    "latin1_prompts": "latin1_prompts.txt",
    "big_image": "big.png",
    "grey16": "grey16.png",
}
SCENE = "a large red square on the left on a gray background"
SCENE_2 = "a small blue circle on the right on a white background"


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Assets:
    root = tmp_path_factory.mktemp("bad_inputs")
    tiny_flux_pipeline().save_pretrained(root / "pipe")
    nan = tiny_flux_pipeline()
    with torch.no_grad():  # one NaN weight in the first block: NaN activations from step 0 on
        nan.transformer.transformer_blocks[0].ff.net[0].proj.weight[0, 0] = float("nan")
    nan.save_pretrained(root / "nan_pipe")
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    unet = UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(8, 16),
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(root / "unet_pipe")
    (root / "not_a_pipe").mkdir()
    # folders with a model_index.json and no weights at all: refused from the index alone, before loading
    for name, pipeline, transformer in [
        ("chroma_index", "ChromaPipeline", "ChromaTransformer2DModel"),
        ("kontext_index", "FluxKontextPipeline", "FluxTransformer2DModel"),
    ]:
        (root / name).mkdir()
        index = {
            "_class_name": pipeline,
            "_diffusers_version": "0.42.1",
            "transformer": ["diffusers", transformer],
            "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        }
        (root / name / "model_index.json").write_text(json.dumps(index))
    kwargs = flux_call_kwargs(batch=2)
    save_file({k: kwargs[k] for k in ("prompt_embeds", "pooled_prompt_embeds")}, str(root / "embeds.safetensors"))
    save_file({"foo": torch.zeros(2, 3)}, str(root / "wrong_key.safetensors"))
    (root / "junk.png").write_bytes(b"not an image")
    Image.new("L", (10, 10), 255).save(root / "small_mask.png")
    (root / "one_mask").mkdir()
    Image.new("L", (32, 32), 255).save(root / "one_mask" / "a.png")
    (root / "small_masks").mkdir()
    for i in range(2):
        Image.new("L", (16, 16), 255).save(root / "small_masks" / f"m{i}.png")
    (root / "a_file").write_text("a file, not a folder")
    for name, text in [
        ("index_list", "[]"),
        ("index_empty", "{}"),
        ("index_broken", '{"_class_name": "FluxPipeline",'),
    ]:
        (root / name).mkdir()
        (root / name / "model_index.json").write_text(text)
    (root / "empty_prompts.txt").write_text("\n  \n")
    (root / "latin1_prompts.txt").write_bytes(
        "a large red square on the left on a gray background caf\xe9\n".encode("latin-1")
    )
    Image.new("1", (15000, 15000)).save(root / "big.png")  # 225 million pixels, 27 kB on disk
    Image.fromarray(np.full((32, 32), 20000, dtype=np.uint16)).save(root / "grey16.png")  # a 16-bit grey, 31% bright
    return Assets(root)


def tiny(a: Assets, *, size: bool = True) -> list[str]:
    """The tiny FLUX pipeline with precomputed embeddings (2 prompts), 2 steps."""
    return ["--model", a.pipe, "--embeds", a.embeds, "--steps", "2", "--quiet"] + (
        ["--height", "32", "--width", "32"] if size else []
    )


def no_half_written(root: Path, out: Path | None) -> None:
    if out is not None:
        assert not out.exists() or not any(out.iterdir()), (
            f"partial output in {out}: {sorted(p.name for p in out.iterdir())}"
        )
    leftovers = [
        p for p in root.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".tmp-") or ".tmp." in p.name
    ]
    assert not leftovers, leftovers


def error_line(err: str, command: str) -> str:
    """The error message: one paragraph (a single line), the last thing on stderr."""
    assert "Traceback" not in err, err
    head = f"ditlens {command}: error: "
    assert err.count(head) == 1, err
    message = err[err.index(head) + len(head) :].strip()
    assert message and "\n" not in message, message
    return message


def run_cli(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    return error_line(err, argv[0])


# ---- the CLI catalogue ------------------------------------------------------------------------
# (id, argv builder (assets, out), what the message must say)


def gap(case_id, argv, says, reason: str):
    """A known gap: ditlens does not answer this input as it should yet (the reason says where)."""
    return pytest.param(case_id, argv, says, id=case_id, marks=pytest.mark.xfail(strict=True, reason=reason))


CLI_CASES = [
    # models
    (
        "model-path-missing",
        lambda a, o: ["find", "--model", f"{a.root}/no_such_model", "--prompt", "x", "--out", o],
        ["no such local folder", "no_such_model"],
    ),
    (
        "model-folder-not-a-pipeline",
        lambda a, o: ["find", "--model", a.not_a_pipe, "--prompt", "x", "--out", o],
        ["not a diffusers pipeline folder", "model_index.json"],
    ),
    (
        "unet-pipeline",
        lambda a, o: ["find", "--model", a.unet_pipe, "--prompt", "x", "--out", o],
        ["(DDPMPipeline) has a UNet", "Supported transformer classes: ", "FluxTransformer2DModel"],
    ),
    (
        "unsupported-transformer-from-its-index",
        lambda a, o: ["find", "--model", a.chroma_index, "--prompt", "x", "--out", o],
        ["Unsupported transformer class 'ChromaTransformer2DModel'", "Supported: ", "SanaTransformer2DModel"],
    ),
    (
        "edit-pipeline-with-reference-tokens",
        lambda a, o: ["segment", "--model", a.kontext_index, "--prompt", "x", "--out", o],
        ["Unsupported pipeline 'FluxKontextPipeline'", "reference image's tokens", "text-to-image pipeline"],
    ),
    (
        "hub-id-not-in-cache-offline",
        lambda a, o: ["find", "--model", "ditlens-tests/no-such-model", "--prompt", "x", "--out", o],
        ["'ditlens-tests/no-such-model'", "not in the local Hugging Face cache", "--allow-download"],
    ),
    (
        "unknown-dtype",
        lambda a, o: ["find", *tiny(a), "--dtype", "float8", "--out", o],
        ["'float8'", "float32, bfloat16, float16"],
    ),
    (
        "unknown-device",
        lambda a, o: ["find", "--model", a.pipe, "--prompt", "x", "--device", "tpu", "--out", o],
        ["'tpu'", "cpu, cuda"],
    ),
    (
        "builtin-unknown-word",
        lambda a, o: ["generate", "--prompt", "a large red dog on the left on a gray background", "--out", o],
        ["Unknown word 'dog'", "knows: "],
    ),
    (
        "transport-builtin-unknown-word",
        lambda a, o: [
            "transport",
            "--source",
            "a large red dog on the left on a gray background",
            "--target",
            "a large blue square on the left on a gray background",
            "--out",
            o,
        ],
        ["Unknown word 'dog'", "knows: "],
    ),
    # k, site, step, statistic, generation settings
    (
        "find-k-zero",
        lambda a, o: ["find", *tiny(a), "--k", "0", "--out", o],
        ["--k", "from 1 to the model's hidden size", "got 0"],
    ),
    ("disrupt-negative-k", lambda a, o: ["disrupt", *tiny(a), "--ks", "2", "-1", "--out", o], ["--ks", "got -1"]),
    ("find-k-above-hidden-size", lambda a, o: ["find", *tiny(a), "--k", "33", "--out", o], ["1..32", "got 33"]),
    ("find-unknown-site", lambda a, o: ["find", *tiny(a), "--site", "blocks.99", "--out", o], ["'blocks.99'", SITES]),
    (
        "find-negative-step",
        lambda a, o: ["find", *tiny(a), "--step", "-1", "--out", o],
        ["surface_step must be >= 0", "-1"],
    ),
    ("find-step-beyond-schedule", lambda a, o: ["find", *tiny(a), "--step", "9", "--out", o], ["9", "0..1"]),
    (
        "segment-step-beyond-schedule",
        lambda a, o: ["segment", *tiny(a), "--k", "2", "--step", "9", "--out", o],
        ["Step 9 is outside the schedule: 0..1"],
    ),
    (
        "segment-unknown-site",
        lambda a, o: ["segment", *tiny(a), "--k", "2", "--site", "nope", "--out", o],
        ["'nope'", SITES],
    ),
    ("disrupt-k-above-hidden-size", lambda a, o: ["disrupt", *tiny(a), "--ks", "64", "--out", o], ["0..32", "64"]),
    (
        "disrupt-window-beyond-schedule",
        lambda a, o: ["disrupt", *tiny(a), "--ks", "1", "--rules", "top", "--window", "1", "5", "--out", o],
        ["Step window [1, 5]", "0 <= start < stop <= 2"],
    ),
    (
        "transport-window-beyond-schedule",
        lambda a, o: [
            "transport",
            *tiny(a, size=False),
            "--k",
            "4",
            "--source",
            "x",
            "--target",
            "y",
            "--window",
            "1",
            "5",
            "--out",
            o,
        ],
        ["Step window [1, 5]", "0 <= start < stop <= 2"],
    ),
    (
        "disrupt-unknown-rule",
        lambda a, o: ["disrupt", *tiny(a), "--rules", "best", "--out", o],
        ["'best'", "top, bottom, random"],
    ),
    (
        "disrupt-factor-nan",
        lambda a, o: ["disrupt", *tiny(a), "--ks", "1", "--rules", "top", "--factor", "nan", "--out", o],
        ["factor", "nan"],
    ),
    (
        "unknown-statistic",
        lambda a, o: ["find", *tiny(a), "--statistic", "median", "--out", o],
        ["'median'", "abs_mean, mean_abs, max_abs"],
    ),
    ("zero-steps", lambda a, o: ["find", *tiny(a), "--steps", "0", "--out", o], ["--steps", "from 1 to 1000", "got 0"]),
    (
        "generate-zero-steps",
        lambda a, o: ["generate", "--steps", "0", "--out", o],
        ["--steps", "from 1 to 1000", "got 0"],
    ),
    ("negative-steps", lambda a, o: ["find", "--steps", "-4", "--out", o], ["--steps", "got -4"]),
    (
        "negative-height",
        lambda a, o: ["generate", "--height", "-32", "--out", o],
        ["--height", "from 1 to 8192", "got -32"],
    ),
    ("zero-height", lambda a, o: ["generate", "--height", "0", "--out", o], ["--height", "got 0", "leave it out"]),
    (
        "huge-size",
        lambda a, o: ["generate", "--height", "100000", "--width", "100000", "--out", o],
        ["--height", "8192", "100000"],
    ),
    (
        "disrupt-negative-guidance",
        lambda a, o: ["disrupt", *tiny(a), "--guidance", "-1", "--ks", "1", "--out", o],
        ["--guidance", "finite number >= 0", "-1"],
    ),
    ("find-negative-guidance", lambda a, o: ["find", *tiny(a), "--guidance", "-1", "--out", o], ["--guidance", ">= 0"]),
    ("guidance-infinite", lambda a, o: ["generate", "--guidance", "inf", "--out", o], ["--guidance", "finite", "inf"]),
    ("guidance-nan", lambda a, o: ["generate", "--guidance", "nan", "--out", o], ["--guidance", "nan"]),
    (
        "true-cfg-below-one",
        lambda a, o: ["find", *tiny(a), "--true-cfg", "0.5", "--out", o],
        ["--true-cfg", ">= 1", "0.5"],
    ),
    (
        "seed-beyond-64-bits",
        lambda a, o: ["generate", "--seeds", str(2**64), "--out", o],
        ["--seeds", "2**63 - 1", str(2**64)],
    ),
    ("negative-seed", lambda a, o: ["generate", "--seeds", "-1", "--out", o], ["--seeds", "from 0", "-1"]),
    (
        "duplicate-seeds",
        lambda a, o: ["generate", "--seeds", "0", "3", "0", "--out", o],
        ["--seeds", "seed 0 is given twice"],
    ),
    (
        "transport-negative-source-seed",
        lambda a, o: ["transport", "--source", SCENE, "--target", SCENE_2, "--source-seed", "-1", "--out", o],
        ["--source-seed", "-1"],
    ),
    (
        "mask-image-without-user-mask",
        lambda a, o: ["transport", "--source", SCENE, "--target", SCENE_2, "--mask-image", a.small_mask, "--out", o],
        ["--mask-image", "--mask user", "--mask source"],
    ),
    ("empty-prompt", lambda a, o: ["segment", "--prompt", "   ", "--out", o], ["--prompt is empty"]),
    (
        "segment-prompt-out-of-grammar",
        lambda a, o: ["segment", "--prompt", "red a square", "--out", o],
        ["'red a square'", "Grammar"],
    ),
    (
        "disrupt-prompt-out-of-grammar",
        lambda a, o: ["disrupt", "--prompt", "red a square", "--seeds", "0", "1", "--out", o],
        ["Grammar"],
    ),
    (
        "disrupt-builtin-one-image",
        lambda a, o: ["disrupt", "--prompt", SCENE, "--out", o],
        ["at least 2", "Add a prompt or a seed"],
    ),
    (
        "long-prompt-shortened",
        lambda a, o: ["generate", "--prompt", "dog " * 10000, "--out", o],
        ["Unknown word 'dog'", "(40,000 characters)"],
    ),
    (
        "prompts-file-empty",
        lambda a, o: ["find", "--prompts-file", a.empty_prompts, "--out", o],
        ["--prompts-file", "empty_prompts.txt", "holds no prompts"],
    ),
    (
        "prompts-file-not-utf8",
        lambda a, o: ["find", "--prompts-file", a.latin1_prompts, "--out", o],
        ["--prompts-file", "not UTF-8"],
    ),
    (
        "prompts-file-is-a-folder",
        lambda a, o: ["find", "--prompts-file", a.one_mask, "--out", o],
        ["--prompts-file", "is a folder"],
    ),
    (
        "model-index-a-list",
        lambda a, o: ["find", "--model", a.index_list, "--prompt", "x", "--out", o],
        ["no diffusers pipeline index", "[]"],
    ),
    (
        "model-index-empty",
        lambda a, o: ["find", "--model", a.index_empty, "--prompt", "x", "--out", o],
        ["no diffusers pipeline index", "{}"],
    ),
    (
        "model-index-broken",
        lambda a, o: ["find", "--model", a.index_broken, "--prompt", "x", "--out", o],
        ["Cannot read", "model_index.json"],
    ),
    (
        "reference-too-large",
        lambda a, o: ["transport", "--reference", a.big_image, "--target", SCENE_2, "--out", o],
        ["big.png", "15000x15000", "at most 67,108,864 pixels"],
    ),
    # transport: alpha, masks, images
    (
        "transport-alpha-above-1",
        lambda a, o: [
            "transport",
            *tiny(a, size=False),
            "--k",
            "4",
            "--source",
            "x",
            "--target",
            "y",
            "--alpha",
            "1.5",
            "--out",
            o,
        ],
        ["alpha must be within [0, 1]", "1.5"],
    ),
    (
        "transport-alpha-negative",
        lambda a, o: [
            "transport",
            *tiny(a, size=False),
            "--k",
            "4",
            "--source",
            "x",
            "--target",
            "y",
            "--alpha",
            "-0.5",
            "--out",
            o,
        ],
        ["[0, 1]", "-0.5"],
    ),
    (
        "interpolate-alpha-out-of-range",
        lambda a, o: [
            "interpolate",
            *tiny(a, size=False),
            "--k",
            "4",
            "--source",
            "x",
            "--target",
            "y",
            "--alphas",
            "0",
            "2",
            "--out",
            o,
        ],
        ["[0, 1]", "2.0"],
    ),
    (
        "transport-unknown-mask",
        lambda a, o: [
            "transport",
            *tiny(a, size=False),
            "--k",
            "4",
            "--source",
            "x",
            "--target",
            "y",
            "--mask",
            "blob",
            "--out",
            o,
        ],
        ["'blob'", "source, target, union, all, user"],
    ),
    (
        "transport-user-mask-without-image",
        lambda a, o: [
            "transport",
            *tiny(a, size=False),
            "--k",
            "4",
            "--source",
            "x",
            "--target",
            "y",
            "--mask",
            "user",
            "--out",
            o,
        ],
        ["mask='user' needs a mask image", "--mask-image"],
    ),
    (
        "transport-mask-image-wrong-size",
        lambda a, o: [
            "transport",
            *tiny(a, size=False),
            "--k",
            "4",
            "--source",
            "x",
            "--target",
            "y",
            "--mask",
            "user",
            "--mask-image",
            a.small_mask,
            "--out",
            o,
        ],
        ["small_mask.png", "10x10", "256x256"],
    ),
    (
        "transport-mask-image-unreadable",
        lambda a, o: [
            "transport",
            *tiny(a, size=False),
            "--k",
            "4",
            "--source",
            "x",
            "--target",
            "y",
            "--mask",
            "user",
            "--mask-image",
            a.junk,
            "--out",
            o,
        ],
        ["junk.png", "not a readable image"],
    ),
    (
        "transport-reference-missing",
        lambda a, o: [
            "transport",
            *tiny(a, size=False),
            "--k",
            "4",
            "--target",
            "y",
            "--reference",
            a.missing,
            "--out",
            o,
        ],
        ["none.txt", "does not exist"],
    ),
    (
        "transport-reference-unreadable",
        lambda a, o: [
            "transport",
            *tiny(a, size=False),
            "--k",
            "4",
            "--target",
            "y",
            "--reference",
            a.junk,
            "--out",
            o,
        ],
        ["junk.png", "not a readable image"],
    ),
    (
        "transport-no-source",
        lambda a, o: ["transport", *tiny(a, size=False), "--k", "4", "--target", "y", "--out", o],
        ["--source PROMPT", "--reference IMAGE"],
    ),
    # masks against prompts, prompt and embeddings files
    (
        "segment-truth-count-mismatch",
        lambda a, o: ["segment", *tiny(a), "--k", "2", "--truth-dir", a.one_mask, "--out", o],
        ["holds 1 mask images but there are 2 generated images"],
    ),
    (
        "segment-truth-wrong-size",
        lambda a, o: ["segment", *tiny(a), "--k", "2", "--truth-dir", a.small_masks, "--out", o],
        ["m0.png", "16x16", "32x32"],
    ),
    (
        "segment-truth-dir-missing",
        lambda a, o: ["segment", *tiny(a), "--k", "2", "--truth-dir", f"{a.root}/no_masks", "--out", o],
        ["no_masks", "does not exist"],
    ),
    (
        "prompts-file-missing",
        lambda a, o: ["find", *tiny(a), "--prompts-file", a.missing, "--out", o],
        ["none.txt", "does not exist"],
    ),
    (
        "embeds-missing",
        lambda a, o: ["find", "--model", a.pipe, "--embeds", a.missing, "--out", o],
        ["none.txt", "does not exist"],
    ),
    (
        "embeds-not-safetensors",
        lambda a, o: ["find", "--model", a.pipe, "--embeds", a.junk, "--out", o],
        ["junk.png", "not a readable safetensors"],
    ),
    (
        "embeds-without-prompt-embeds",
        lambda a, o: ["find", "--model", a.pipe, "--embeds", a.embeds_wrong_key, "--out", o],
        ["no 'prompt_embeds'", "foo"],
    ),
    # output folder
    ("out-under-a-file", lambda a, o: ["find", *tiny(a), "--out", a.a_file + "/out"], ["a_file/out"]),
    (
        "find-nan-activations",
        lambda a, o: [
            "find",
            "--model",
            a.nan_pipe,
            "--embeds",
            a.embeds,
            "--steps",
            "2",
            "--height",
            "32",
            "--width",
            "32",
            "--quiet",
            "--out",
            o,
        ],
        ["NaN", "transformer_blocks.0"],
    ),
]


@pytest.mark.parametrize(
    "case_id, argv, says", [c if hasattr(c, "marks") else pytest.param(*c, id=c[0]) for c in CLI_CASES]
)
def test_cli_bad_input(case_id, argv, says, assets, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # belt and braces: the hub case must not touch the network
    out = tmp_path / "out"
    message = run_cli(capsys, argv(assets, str(out)))
    for text in says:
        assert text in message, message
    no_half_written(tmp_path, out)
    no_half_written(assets.root, None)


def test_cli_argument_of_the_wrong_type(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["find", "--k", "four"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid int value: 'four'" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv, says",
    [
        (["segment", "--foreground", "biggest"], ["--foreground", "'biggest'", "'border', 'smaller', 'high', 'low'"]),
        (
            ["transport", "--target", "y", "--foreground", "up"],
            ["--foreground", "'up'", "'border', 'smaller', 'high', 'low'"],
        ),
        (["interpolate", "--target", "y", "--streams", "all"], ["--streams", "'all'", "'img', 'txt', 'both'"]),
    ],
)
def test_cli_unknown_choice_lists_the_allowed_values(argv, says, capsys, tmp_path):
    """Checked by the parser, before any model loads: exit 2, one line naming the value."""
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    message = error_line(err, argv[0])
    for text in says:
        assert text in message, message
    assert "Traceback" not in err and not (tmp_path / "out").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere: chmod cannot make a folder unwritable")
def test_cli_out_folder_not_writable(assets, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        message = run_cli(capsys, ["find", *tiny(assets), "--out", str(locked / "out")])
        assert "locked" in message
    finally:
        locked.chmod(0o700)
    no_half_written(tmp_path, locked / "out")


def test_cli_disk_full_leaves_nothing_half_written_find(assets, tmp_path, capsys, monkeypatch):
    disk_full_after(monkeypatch, 1)
    out = tmp_path / "out"
    message = run_cli(capsys, ["find", *tiny(assets), "--out", str(out)])
    assert "No space left on device" in message and str(out) in message
    no_half_written(tmp_path, out)


def disk_full_after(monkeypatch, n_images: int) -> None:
    """PIL image saves fail with ENOSPC after the first n_images."""
    original = Image.Image.save
    calls = {"n": 0}

    def save(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > n_images:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save)


# ---- sweeps -------------------------------------------------------------------------------------


def sweep_config(a: Assets, folder: Path, body: str, *, header: bool = True, name: str = "sweep.toml") -> str:
    """body (top-level keys first, then [[jobs]]) + the tiny pipeline's [model] and [generation] tables."""
    tables = f'\n[model]\nname = "{a.pipe}"\nembeds = "{a.embeds}"\n[generation]\nsteps = 2\nheight = 32\nwidth = 32\n'
    text = body + (tables if header else "")
    path = folder / name
    path.write_text(text)
    return str(path)


FIND = '[[jobs]]\ncommand = "find"\nk = 2\n'

SWEEP_CASES = [
    ("config-missing", None, ["does not exist"]),
    ("bad-toml", "seeds = [0,\n[[jobs]]\n", ["not valid TOML", "line"]),
    ("bad-yaml", ("seeds: [0\njobs: {command: find}\n", "sweep.yaml"), ["not valid YAML"]),
    ("unknown-file-type", ("{}", "sweep.json"), ["'.json'", ".toml, .yaml, .yml"]),
    (
        "unknown-top-level-key",
        "prompt = ['x']\n" + FIND,
        ["unknown key 'prompt'", "out, seeds, model, prompts, generation, jobs"],
    ),
    ("no-jobs", "", ["no jobs", "find, disrupt, segment, transport"]),
    ("job-without-command", "[[jobs]]\nk = 2\n", ["jobs[0] has no 'command'", "find, disrupt, segment, transport"]),
    ("unknown-command", '[[jobs]]\ncommand = "paint"\n', ["'paint'", "find, disrupt, segment, transport"]),
    ("unknown-setting", '[[jobs]]\ncommand = "find"\nkk = 2\n', ["'kk'", "allowed: k, statistic, stats"]),
    ("transport-without-target", '[[jobs]]\ncommand = "transport"\n', ["missing 'target'"]),
    (
        "seeds-wrong-type",
        ("seeds = 'many'\n" + FIND, "sweep.toml"),
        ["'seeds' must be a non-empty list of integers", "'many'"],
    ),
    ("seeds-duplicated", ("seeds = [1, 1]\n" + FIND, "sweep.toml"), ["'seeds' lists a seed twice"]),
    ("setting-wrong-type", '[[jobs]]\ncommand = "find"\nk = "four"\n', ["'k' must be an integer", "'four'"]),
    (
        "alpha-out-of-range",
        '[[jobs]]\ncommand = "transport"\ntarget = 1\nalpha = [0.5, 2]\n',
        ["'alpha' must be within [0, 1]", "2.0"],
    ),
    ("unknown-rule", '[[jobs]]\ncommand = "disrupt"\nrule = ["top", "best"]\n', ["'best'", "top, bottom, random"]),
    (
        "unknown-foreground",
        '[[jobs]]\ncommand = "segment"\nforeground = "big"\n',
        ["'foreground'", "'big'", "border, smaller, high, low"],
    ),
    (
        "unknown-streams",
        '[[jobs]]\ncommand = "transport"\ntarget = "y"\nstreams = "all"\n',
        ["'streams'", "'all'", "img, txt, both"],
    ),
    ("k-above-hidden-size", '[[jobs]]\ncommand = "find"\nk = 64\n', ["jobs[0] (find)", "1..32", "64"]),
    (
        "unknown-site",
        '[[jobs]]\ncommand = "disrupt"\nk = 1\nrule = "top"\nsites = ["blocks.9"]\n',
        ["jobs[0] (disrupt)", "'blocks.9'", SITES],
    ),
    (
        "window-beyond-schedule",
        '[[jobs]]\ncommand = "disrupt"\nk = 1\nrule = "top"\nwindow = [0, 5]\n',
        ["[0, 5]", "stop <= 2"],
    ),
    ("embeds-rows-vs-prompts", 'prompts = ["a", "b", "c"]\n' + FIND, ["3 prompts but the embeddings file has 2 rows"]),
    ("target-row-out-of-range", '[[jobs]]\ncommand = "transport"\ntarget = 5\n', ["target 5", "0..1"]),
    (
        "builtin-unknown-word",
        ('prompts = ["a large red dog on the left on a gray background"]\n' + FIND, "sweep.toml"),
        ["Unknown word 'dog'"],
    ),
]


@pytest.mark.parametrize("case_id, body, says", [pytest.param(*c, id=c[0]) for c in SWEEP_CASES])
def test_sweep_bad_config(case_id, body, says, assets, tmp_path, capsys):
    if body is None:
        config = str(tmp_path / "none.toml")
    elif isinstance(body, tuple):  # its own header (or none)
        text, name = body
        config = sweep_config(assets, tmp_path, text, header=False, name=name)
    else:
        config = sweep_config(assets, tmp_path, body)
    out = tmp_path / "out"
    message = run_cli(capsys, ["sweep", config, "--out", str(out), "--quiet"])
    for text in says:
        assert text in message, message
    no_half_written(tmp_path, out)


def test_sweep_out_under_a_file(assets, tmp_path, capsys):
    config = sweep_config(assets, tmp_path, FIND)
    message = run_cli(capsys, ["sweep", config, "--out", assets.a_file + "/out", "--quiet"])
    assert "a_file" in message and "is a file, not a folder" in message


def test_sweep_merge_before_any_result(assets, tmp_path, capsys):
    config = sweep_config(assets, tmp_path, FIND)
    out = tmp_path / "out"
    message = run_cli(capsys, ["sweep", config, "--out", str(out), "--merge"])
    assert "No finished items" in message and "run `ditlens sweep" in message
    no_half_written(tmp_path, out)


def test_sweep_nan_activations_stop_with_the_site_and_step(assets, tmp_path, capsys):
    config = sweep_config(
        assets,
        tmp_path,
        f'seeds = [0]\nprompts = ["a", "b"]\n[model]\nname = "{assets.nan_pipe}"\n'
        f'embeds = "{assets.embeds}"\n[generation]\nsteps = 2\nheight = 32\nwidth = 32\n'
        '[[jobs]]\ncommand = "disrupt"\nrule = "top"\nk = 1\n',
        header=False,
    )
    out = tmp_path / "out"
    message = run_cli(capsys, ["sweep", config, "--out", str(out), "--quiet"])
    assert (
        "NaN" in message
        and "site transformer_blocks.0, step 0" in message
        and "Only finite values are allowed" in message
    )
    assert not [p for p in (out / "items").iterdir()]  # no item, complete or not


@pytest.mark.parametrize("where", ["result-record", "image"])
def test_sweep_disk_full_keeps_nothing_half_written(where, assets, tmp_path, capsys, monkeypatch):
    import ditlens.sweep.store as sweep  # where items are written: _write_file, RESULT

    if where == "image":
        disk_full_after(monkeypatch, 0)
    else:
        original = sweep._write_file

        def write_file(path: Path, data: bytes) -> None:
            if path.name == sweep.RESULT:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            original(path, data)

        monkeypatch.setattr(sweep, "_write_file", write_file)
    config = sweep_config(assets, tmp_path, FIND)
    out = tmp_path / "out"
    message = run_cli(capsys, ["sweep", config, "--out", str(out), "--quiet"])
    assert "No space left on device" in message and "nothing of that item was kept" in message and "rerun" in message
    assert not list((out / "items").iterdir())
    no_half_written(tmp_path, None)


def test_sweep_refuses_a_second_sweep_on_the_same_folder(assets, tmp_path, capsys):
    config = sweep_config(assets, tmp_path, FIND)
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        message = run_cli(capsys, ["sweep", config, "--out", str(out), "--quiet"])
    assert "Another sweep is writing" in message
    assert not list((out / "items").iterdir())


def test_the_real_entry_point_exits_2_without_traceback(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("seeds = [0,\n")
    done = subprocess.run(
        [sys.executable, "-m", "ditlens.cli", "sweep", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"PYTHONPATH": str(Path(__file__).parents[1])},
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert error_line(done.stderr, "sweep").startswith(f"Sweep config {str(config)!r}: not valid TOML")


# ---- the Python API ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipe():
    return tiny_flux_pipeline()


def api_cases():
    from ditlens import ScaleChannels, Scope, TopK, ZeroChannels, adapter_for, hooks
    from ditlens.builtin.scenes import check_words
    from ditlens.core.checks import FiniteCheck, NonFiniteError, check_finite
    from ditlens.find import FindConfig, find_channels
    from ditlens.io.images import load_image, load_mask, load_mask_folder
    from ditlens.models import load_pipeline
    from ditlens.sweep import SweepConfigError, load_config
    from ditlens.transport import TransportConfig, mask_image_to_tokens

    def nested_hooks(p, a):
        with hooks(p):
            with hooks(p):
                pass

    def nan_edit(p, a):
        kwargs = flux_call_kwargs(batch=1, steps=2)
        with hooks(p, edits=[ScaleChannels(TopK(2), float("nan"))], observers=[FiniteCheck()]):
            p(**kwargs)

    return [
        (
            "load-hub-id-offline",
            lambda p, a: load_pipeline("ditlens-tests/no-such-model"),
            ValueError,
            "--allow-download",
        ),
        (
            "load-unknown-dtype",
            lambda p, a: load_pipeline(a.pipe, dtype="int8"),
            ValueError,
            "float32, bfloat16, float16",
        ),
        ("load-unknown-device", lambda p, a: load_pipeline(a.pipe, device="tpu"), ValueError, "Unknown device 'tpu'"),
        ("unsupported-architecture", lambda p, a: adapter_for(torch.nn.Linear(2, 2)), ValueError, "Supported: "),
        (
            "find-k-zero",
            lambda p, a: find_channels(p, FindConfig(prompts=["x"], k=0), prompt_kwargs={}),
            ValueError,
            "1..32",
        ),
        ("transport-alpha", lambda p, a: TransportConfig(k=4, alpha=2.0).validate(32, ["s"]), ValueError, "[0, 1]"),
        ("scope-steps", lambda p, a: Scope(step_window=(0, 9)).validate(["s"], 4), ValueError, "stop <= 4"),
        (
            "edit-k-above-hidden-size",
            lambda p, a: hooks(p, edits=[ZeroChannels(TopK(999))]).__enter__(),
            ValueError,
            "1..32",
        ),
        ("hooked-twice", nested_hooks, RuntimeError, "Already hooked"),
        ("image-missing", lambda p, a: load_image(a.missing), FileNotFoundError, "does not exist"),
        ("image-unreadable", lambda p, a: load_image(a.junk), ValueError, "not a readable image"),
        ("mask-wrong-size", lambda p, a: load_mask(a.small_mask, (32, 32)), ValueError, "10x10"),
        (
            "mask-folder-count",
            lambda p, a: load_mask_folder(a.one_mask, 3, (32, 32)),
            ValueError,
            "holds 1 mask images",
        ),
        (
            "mask-tokens-wrong-size",
            lambda p, a: mask_image_to_tokens(torch.ones(8, 8), 16, (32, 32)),
            ValueError,
            "(8, 8)",
        ),
        ("unknown-word", lambda p, a: check_words("a large red dog"), ValueError, "Unknown word 'dog'"),
        (
            "nan-tensor",
            lambda p, a: check_finite(torch.tensor([1.0, float("nan"), float("inf")]), "the test tensor"),
            NonFiniteError,
            "The test tensor holds 1 NaN and 1 infinite values of 3",
        ),
        ("nan-from-an-edit", nan_edit, NonFiniteError, "site transformer_blocks.0, step 0"),
        ("sweep-config", lambda p, a: load_config(a.junk), SweepConfigError, "'.png'"),
    ]


@pytest.mark.parametrize("index", range(len(api_cases())), ids=[c[0] for c in api_cases()])
def test_api_bad_input(index, pipe, assets):
    _, call, error, text = api_cases()[index]
    with pytest.raises(error) as info:
        call(pipe, assets)
    assert text in str(info.value)


def test_no_hook_survives_an_api_error(pipe):
    from ditlens import ScaleChannels, TopK, hooks
    from ditlens.core.checks import FiniteCheck, NonFiniteError

    with pytest.raises(NonFiniteError):
        with hooks(pipe, edits=[ScaleChannels(TopK(2), float("inf"))], observers=[FiniteCheck()]):
            pipe(**flux_call_kwargs(batch=1, steps=2))
    assert not getattr(pipe.transformer, "_ditlens_hooked", False)
    assert not pipe.transformer._forward_hooks and not pipe.transformer._forward_pre_hooks


def test_hub_access_only_when_allowed(monkeypatch):
    """Without --allow-download no socket is opened, even for a hub id that is not cached."""
    import socket

    from ditlens.models import load_pipeline

    attempts = []

    def connect(self, address):
        attempts.append(address)
        raise OSError(errno.ENETUNREACH, "network disabled in this test")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket.socket, "connect", connect)
    with pytest.raises(ValueError, match="--allow-download"):
        load_pipeline("ditlens-tests/no-such-model")
    assert attempts == []


def test_pickle_only_weights_are_refused(tmp_path):
    from ditlens.models import load_pipeline

    tiny_flux_pipeline().save_pretrained(tmp_path / "pipe", safe_serialization=False)
    with pytest.raises(ValueError, match="safetensors"):
        load_pipeline(str(tmp_path / "pipe"), without_text_encoders=True)


def test_an_unsupported_model_is_refused_from_its_index_in_under_a_second(assets, capsys):
    """The folders hold a model_index.json and no weights: had anything loaded, the error would be another."""
    import time

    for folder in (assets.chroma_index, assets.kontext_index):
        start = time.perf_counter()
        message = run_cli(capsys, ["find", "--model", folder, "--prompt", "x", "--out", str(Path(folder) / "out")])
        assert time.perf_counter() - start < 1.0
        assert "Unsupported" in message


# ---- beyond the catalogue: interrupts, full disks, images of any depth, the trainer's folders ------


def test_ctrl_c_exits_130_with_one_line(capsys, monkeypatch, tmp_path):
    import ditlens.cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(ditlens.cli.run, "load", interrupted)
    assert main(["find", "--prompt", SCENE, "--steps", "1", "--out", str(tmp_path / "out")]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1
    assert "interrupted (Ctrl+C)" in err and "nothing of this run was written" in err
    assert not (tmp_path / "out").exists()


def test_a_full_disk_while_saving_statistics_is_an_os_error(assets, tmp_path, capsys, monkeypatch):
    """safetensors reports a full disk as its own SafetensorError: it must read as the disk's error."""
    from safetensors import SafetensorError

    import ditlens.core.record

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(ditlens.core.record, "save_file", full)
    out = tmp_path / "out"
    message = run_cli(capsys, ["find", *tiny(assets), "--out", str(out)])
    assert "No space left on device" in message and str(out) in message
    no_half_written(tmp_path, out)


def test_a_16_bit_reference_is_read_at_its_brightness(assets):
    """PIL's own convert("RGB") clips 16-bit values to 255: the image turned white."""
    from ditlens.io.images import load_image, load_mask

    image, _ = load_image(assets.grey16)
    assert torch.allclose(image, torch.full_like(image, round(20000 / 65535 * 255) / 255), atol=1 / 255)
    assert not load_mask(assets.grey16, (32, 32)).any()  # 31% bright: below the mask's half


@pytest.mark.parametrize("mode", ["P", "CMYK", "RGBA", "LA", "I;16"])
def test_images_of_every_mode_are_read_as_a_viewer_shows_them(mode, tmp_path):
    from ditlens.io.images import load_image

    red = {"P": None, "CMYK": (0, 255, 255, 0), "RGBA": (255, 0, 0, 255), "LA": (76, 255), "I;16": None}[mode]
    if mode == "P":
        image = Image.new("P", (8, 8))
        image.putpalette([255, 0, 0] * 256)
        want = (1.0, 0.0, 0.0)
    elif mode == "I;16":
        image = Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16))
        want = (1.0, 1.0, 1.0)
    else:
        image = Image.new(mode, (8, 8), red)
        want = (76 / 255,) * 3 if mode == "LA" else (1.0, 0.0, 0.0)
    path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    image.save(path)
    loaded, _ = load_image(path)
    assert torch.allclose(loaded[:, 0, 0], torch.tensor(want), atol=2 / 255), (mode, loaded[:, 0, 0])
    transparent = tmp_path / "clear.png"
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(transparent)
    assert torch.equal(load_image(transparent)[0][:, 0, 0], torch.ones(3))  # over white, as a viewer shows it


def test_a_folder_the_trainer_wrote_loads_as_the_builtin_family(tmp_path):
    """`python -m ditlens.builtin.train --out DIR` writes DIR/model: a BuiltinPipeline folder."""
    from ditlens.builtin.pipeline import DEFAULT_WEIGHTS

    out = tmp_path / "out"
    assert (
        main(["find", "--model", str(DEFAULT_WEIGHTS), "--prompt", SCENE, "--steps", "1", "--quiet", "--out", str(out)])
        == 0
    )
    assert (out / "channels.json").is_file()


def test_statistics_files_are_the_same_bytes_in_another_process(tmp_path):
    """safetensors writes several metadata entries in an order that varies by process."""
    import hashlib

    code = (
        "import torch, sys\n"
        "from ditlens.core.record import ChannelStats\n"
        "ChannelStats(sites=['a', 'b'], img={'abs_mean': torch.ones(1, 2, 1, 3)}, txt_sites=['a'],\n"
        "             meta={'x': 1, 'y': [1, 2], 'z': 'q'}).save(sys.argv[1])\n"
    )
    digests = set()
    for i in range(2):
        path = tmp_path / f"s{i}.safetensors"
        subprocess.run([sys.executable, "-c", code, str(path)], check=True)
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
    assert len(digests) == 1
    from ditlens.core.record import ChannelStats

    loaded = ChannelStats.load(tmp_path / "s0.safetensors")
    assert loaded.sites == ["a", "b"] and loaded.txt_sites == ["a"] and loaded.meta == {"x": 1, "y": [1, 2], "z": "q"}


def test_a_real_full_disk_during_find(tmp_path, capsys):
    """find on the built-in model into a 1 MB tmpfs: its statistics do not fit."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        out = disk / "out"
        message = run_cli(
            capsys,
            [
                "find",
                "--prompt",
                SCENE,
                "--prompt",
                SCENE_2,
                "--seeds",
                "0",
                "1",
                "2",
                "3",
                "--steps",
                "8",
                "--quiet",
                "--out",
                str(out),
            ],
        )
        assert "No space left on device" in message and str(out) in message
        no_half_written(disk, out)
    finally:
        subprocess.run(["umount", str(disk)], check=False)


@pytest.mark.parametrize(
    "argv, says",
    [
        (
            lambda a, o: ["segment", "--prompt", SCENE, "--prompt", SCENE_2, "--truth-dir", a.one_mask, "--out", o],
            "holds 1 mask images but there are 2 generated images",
        ),
        (lambda a, o: ["transport", "--reference", a.junk, "--target", SCENE_2, "--out", o], "not a readable image"),
        (lambda a, o: ["transport", "--reference", a.missing, "--target", SCENE_2, "--out", o], "does not exist"),
        (
            lambda a, o: [
                "transport",
                "--source",
                SCENE,
                "--target",
                SCENE_2,
                "--mask",
                "user",
                "--mask-image",
                a.junk,
                "--out",
                o,
            ],
            "not a readable image",
        ),
    ],
    ids=["truth-count", "reference-corrupt", "reference-missing", "mask-image-corrupt"],
)
def test_input_files_are_checked_before_the_model_loads(argv, says, assets, tmp_path, capsys, monkeypatch):
    import ditlens.cli

    def no_model(args):
        raise AssertionError("the model was loaded before the input files were checked")

    monkeypatch.setattr(ditlens.cli.run, "load", no_model)
    assert says in run_cli(capsys, argv(assets, str(tmp_path / "out")))
