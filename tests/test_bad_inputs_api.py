"""The catalogue of bad inputs to the Python API: the documented exception type with a
message that names the bad value; and how models, images and statistics files are read
(the hub only when allowed, no pickles, images of any mode and depth, the same bytes).
The shared files are tests/bad_inputs.py's."""

from __future__ import annotations

import errno
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from ditlens.cli import main

from .bad_inputs import SCENE
from .pipelines import flux_call_kwargs, tiny_flux_pipeline


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


# ---- images of any depth, the trainer's folders, statistics files ---------------------------------


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
