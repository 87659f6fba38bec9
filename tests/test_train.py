"""Training the built-in model (`ditlens.builtin.train`): a tiny world v2 model on the CPU
trains, writes a self-describing folder and resumes exactly; the command line's defaults."""

import dataclasses

import numpy as np
import pytest
import torch

from ditlens.builtin.scenes_v2 import IMAGE_SIZE, UnknownWordError

from .test_bench_folder import TINY  # TrainConfig's fields, shrunk: rung_config's keywords, the CLI's options

EXAMPLE = "a large striped red star at the top left on a checked navy background"


def _tiny(out, **overrides):
    from ditlens.builtin.train import rung_config

    return rung_config("v2", "s", out=out, **TINY, **overrides)


def _tiny_options() -> list[str]:
    """TINY as the command line gives it: `--batch-size 4` for batch_size=4."""
    return [arg for key, value in TINY.items() for arg in (f"--{key.replace('_', '-')}", str(value))]


def test_train_v2_end_to_end_and_resume(tmp_path, one_thread):
    """`python -m ditlens.builtin.train --world v2 --size s` with a tiny model: it trains, writes
    a self-describing folder that loads and generates 64x64 images, and chunks resume exactly."""
    from safetensors.torch import load_file

    from ditlens.builtin import load_builtin
    from ditlens.builtin.train import _parse_args, train

    config, resume, stop = _parse_args(
        ["--world", "v2", "--size", "s", "--out", str(tmp_path / "whole"), *_tiny_options()]
    )
    assert config == _tiny(tmp_path / "whole") and not resume and stop == 0
    train(config)
    # The same run in chunks: stop after every step, then resume.
    chunked = _tiny(tmp_path / "chunks")
    train(chunked, stop_after_s=1e-9)
    assert (tmp_path / "chunks" / "checkpoint.pt").is_file() and not (tmp_path / "chunks" / "model").exists()
    config, resume, stop = _parse_args(["--resume", str(tmp_path / "chunks"), "--stop-after-s", "1e-9"])
    assert config == chunked and resume and stop == 1e-9
    train(config, resume=True, stop_after_s=stop)
    train(config, resume=True)
    assert not (tmp_path / "chunks" / "checkpoint.pt").exists()
    for part in ("transformer", "text_encoder"):
        a = load_file(tmp_path / "whole" / "model" / part / "diffusion_pytorch_model.safetensors")
        b = load_file(tmp_path / "chunks" / "model" / part / "diffusion_pytorch_model.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    log = (tmp_path / "chunks" / "train.log").read_text()
    assert "resumed" in log and "trained 4 steps" in log
    # 4 steps have no constant-rate phase to read a plateau from; the loss curve is drawn anyway
    assert log.rstrip().splitlines()[-2] == "plateau: the constant-rate phase is too short to read"
    assert (tmp_path / "chunks" / "loss.png").is_file()

    pipe = load_builtin(weights=tmp_path / "whole" / "model")
    assert pipe.world == "v2" and pipe.config.image_size == IMAGE_SIZE and pipe.patch_size == 4
    image = pipe(EXAMPLE, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert image.shape == (1, IMAGE_SIZE, IMAGE_SIZE, 3) and np.isfinite(image).all()
    with pytest.raises(UnknownWordError, match="'olive'.*world v2.*knows"):
        pipe("a large plain red circle on the left on a plain olive background")
    assert (tmp_path / "whole" / "samples" / "step_000004.png").is_file()


def test_the_cli_checks_a_v2_models_prompts_against_the_v2_grammar(tmp_path, one_thread, capsys):
    """A v2 folder's world is read from its model_index.json: the CLI refuses a v1-only word
    (listing the v2 words) and runs a v2 caption; the shipped model stays v1."""
    from ditlens.builtin.train import train
    from ditlens.cli import main
    from ditlens.models import builtin_world

    train(_tiny(tmp_path / "run"))
    model = str(tmp_path / "run" / "model")
    assert builtin_world(model) == "v2" and builtin_world(None) == "v1" and builtin_world("builtin") == "v1"
    argv = ["find", "--model", model, "--steps", "2", "--out", str(tmp_path / "find"), "--quiet"]
    assert main(argv + ["--prompt", "a large red circle on the left on a olive background"]) == 2
    err = capsys.readouterr().err
    assert "Unknown word 'olive'" in err and "world v2" in err and "striped" in err and not (tmp_path / "find").exists()
    assert main(argv + ["--prompt", EXAMPLE]) == 0
    assert (tmp_path / "find" / "channels.json").is_file()
    # a v2-only word on the shipped (v1) model is refused by v1's grammar
    assert main(["find", "--prompt", EXAMPLE, "--out", str(tmp_path / "v1")]) == 2
    assert "Unknown word" in capsys.readouterr().err


def test_train_cli_keeps_v1_defaults_and_refuses_bad_combinations(tmp_path):
    from ditlens.builtin.train import RUNGS, TrainConfig, _parse_args

    config, _, _ = _parse_args(["--out", str(tmp_path)])
    assert config == TrainConfig(out=tmp_path) and config.world == "v1" and config.size == ""
    assert (config.steps, config.batch_size, config.hidden_size, config.patch_size) == (8509, 512, 256, 2)
    for size in ("s", "m", "l"):
        rung, _, _ = _parse_args(["--world", "v2", "--size", size, "--out", str(tmp_path)])
        assert rung.world == "v2" and rung.size == size and rung.patch_size == 4
        assert rung.hidden_size == RUNGS["v2"][size]["hidden_size"]
        rung.validate()
        # the v1 rung of a size has the v2 rung's width, depth and schedule, on v1's 32 px in 2x2 patches
        same, _, _ = _parse_args(["--world", "v1", "--size", size, "--out", str(tmp_path)])
        assert same.world == "v1" and same.size == size and same.patch_size == 2
        shared = ("hidden_size", "num_double_blocks", "num_single_blocks", "lr", "warmup_steps", "batch_size")
        if size != "s":  # v1's s is the shipped run (batch 512); v2's s took its architecture, not its batch
            assert [getattr(same, f) for f in (*shared, "steps")] == [getattr(rung, f) for f in (*shared, "steps")]
        same.validate()
    shipped_rung, _, _ = _parse_args(["--world", "v1", "--size", "s", "--out", str(tmp_path)])
    assert shipped_rung == dataclasses.replace(config, size="s")
    with pytest.raises(SystemExit):
        _parse_args(["--world", "v2", "--out", str(tmp_path)])  # a v2 run names its rung
    with pytest.raises(SystemExit):
        _parse_args(["--resume", str(tmp_path), "--steps", "5"])
    with pytest.raises(ValueError, match="max_length"):
        TrainConfig(world="v2", patch_size=4).validate()
