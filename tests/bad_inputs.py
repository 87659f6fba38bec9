"""The bad-input catalogue's shared files and checks (tests/test_bad_inputs_*.py).

The files are written once a session by the `assets` fixture of tests/conftest.py (make_assets);
a case names one by its FILES key (`a.junk`). A bad CLI input must exit 2 with one line
`ditlens COMMAND: error: ...`, no traceback, and leave no output folder and no temporary file.
"""

from __future__ import annotations

import errno
import json
import os
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


def make_assets(root: Path) -> Assets:
    """Writes every file FILES names under root, an empty folder."""
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


def cli_error(capsys, argv: list[str]) -> str:
    """Runs the CLI on argv, which it must refuse (exit 2) without a traceback; returns its stderr."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err, err
    return err


def run_cli(capsys, argv: list[str]) -> str:
    """The one-line message of the CLI's refusal of argv."""
    return error_line(cli_error(capsys, argv), argv[0])


def gap(case_id, argv, says, reason: str):
    """A known gap: ditlens does not answer this input as it should yet (the reason says where)."""
    return pytest.param(case_id, argv, says, id=case_id, marks=pytest.mark.xfail(strict=True, reason=reason))


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
