"""The CLI end to end on a tiny real FluxPipeline saved to disk, and its bad-input errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from ditlens.cli import main
from ditlens.transport import TransportConfig

from .bad_inputs import cli_error
from .pipelines import flux_call_kwargs, tiny_flux_pipeline


@pytest.fixture(scope="module")
def flux_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_flux")
    tiny_flux_pipeline().save_pretrained(root / "pipe")
    kwargs = flux_call_kwargs(batch=2)
    save_file({k: kwargs[k] for k in ("prompt_embeds", "pooled_prompt_embeds")}, str(root / "embeds.safetensors"))
    return root


def common(flux_dir, out) -> list[str]:
    model, embeds = str(flux_dir / "pipe"), str(flux_dir / "embeds.safetensors")
    return ["--model", model, "--embeds", embeds, *"--steps 2 --height 32 --width 32 --quiet --out".split(), str(out)]


def test_find_writes_statistics_channels_and_plots(flux_dir, tmp_path):
    assert main(["find", *common(flux_dir, tmp_path), "--k", "2", "--seeds", "0", "1"]) == 0
    for name in (
        "stats.safetensors",
        "channels.json",
        "top_vs_median.png",
        "channel_atlas.png",
        "surface.png",
        "images.png",
    ):
        assert (tmp_path / name).is_file(), name
    summary = json.loads((tmp_path / "channels.json").read_text())
    assert len(summary["sites"]) == 4 and summary["layout"]["num_steps"] == 2


def test_disrupt_k0_equals_plain_generation_and_writes_grid(flux_dir, tmp_path):
    assert (
        main(["disrupt", *common(flux_dir, tmp_path), "--ks", "0", "2", "--rules", "top", "random", "--draws", "2"])
        == 0
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["scores"]["none"]["mse"] == 0.0 and "clip_score" not in metrics["scores"]["none"]
    assert metrics["scores"]["top-2"]["mse"] > 0 and metrics["not_measured"]
    assert (tmp_path / "grid.png").is_file() and (tmp_path / "random-2_draw1_000.png").is_file()


def test_segment_with_a_truth_folder(flux_dir, tmp_path):
    from PIL import Image

    truth = tmp_path / "truth"
    truth.mkdir()
    for i in range(2):
        m = torch.zeros(32, 32, dtype=torch.uint8)
        m[8:24, 8:24] = 255
        Image.fromarray(m.numpy()).save(truth / f"mask_{i}.png")
    out = tmp_path / "out"
    assert main(["segment", *common(flux_dir, out), "--k", "2", "--truth-dir", str(truth)]) == 0
    summary = json.loads((out / "segment.json").read_text())
    assert set(summary["miou_best"]) == {"top", "bottom", "random", "all"}
    assert (out / "overlays.png").is_file() and (out / "miou_per_site.png").is_file()


def test_transport_text_and_image_write_images_and_settings(flux_dir, tmp_path):
    from PIL import Image

    text = tmp_path / "text"
    assert (
        main(["transport", *common(flux_dir, text), "--k", "4", "--alpha", "0.5", "--source", "A", "--target", "B"])
        == 0
    )
    settings = json.loads((text / "settings.json").read_text())
    assert settings["k"] == 4 and settings["alphas"] == [0.5] and settings["mask"] == TransportConfig.mask
    assert settings["streams"] == TransportConfig.streams and settings["foreground"] == TransportConfig.foreground
    for name in ("source.png", "target.png", "transported_alpha0.50.png", "strip.png"):
        assert (text / name).is_file(), name
    reference = tmp_path / "reference.png"
    Image.fromarray((torch.rand(32, 32, 3, generator=torch.Generator().manual_seed(0)) * 255).byte().numpy()).save(
        reference
    )
    image = tmp_path / "image"
    argv = ["transport", *common(flux_dir, image), *"--k 4 --mask source --channels-from union --reference".split()]
    argv += [str(reference), "--target", "B"]
    assert main(argv) == 0
    settings = json.loads((image / "settings.json").read_text())
    assert (
        settings["mask"] == "source"
        and settings["channels_from"] == "union"
        and settings["reference_path"] == "renoise"
    )
    assert (image / "transported_alpha1.00.png").is_file()


def test_a_reference_of_another_size_is_resized_with_a_note(flux_dir, tmp_path, capsys):
    from PIL import Image

    reference = tmp_path / "small.png"
    Image.new("RGB", (20, 12), (200, 30, 30)).save(reference)
    argv = [
        "transport",
        *common(flux_dir, tmp_path / "out"),
        "--k",
        "4",
        "--reference",
        str(reference),
        "--target",
        "B",
    ]
    argv.remove("--quiet")
    assert main(argv) == 0
    assert f"resized {reference} from 12x20 to 32x32" in capsys.readouterr().out
    assert (tmp_path / "out" / "source.png").is_file()


@pytest.mark.parametrize(
    "over, values, frames",
    [
        (
            "alpha",
            ["--alphas", "0", "0.5", "1"],
            ["frame_000_alpha0.00.png", "frame_001_alpha0.50.png", "frame_002_alpha1.00.png"],
        ),
        ("k", ["--ks", "2", "8"], ["frame_000_k2.png", "frame_001_k8.png"]),
        ("window", ["--windows", "0:1", "1:2"], ["frame_000_window0-1.png", "frame_001_window1-2.png"]),
    ],
)
def test_interpolate_writes_a_strip_and_one_frame_per_value(flux_dir, tmp_path, over, values, frames):
    argv = ["interpolate", *common(flux_dir, tmp_path), *"--k 4 --source A --target B --over".split(), over, *values]
    assert main(argv) == 0
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == frames
    assert (tmp_path / "strip.png").is_file() and (tmp_path / "target.png").is_file()
    settings = json.loads((tmp_path / "settings.json").read_text())
    if over == "alpha":
        assert settings["alphas"] == [0.0, 0.5, 1.0]
    else:
        key = "k" if over == "k" else "step_window"
        assert [f[key] for f in settings["frames"]] == ([2, 8] if over == "k" else [[0, 1], [1, 2]])


def test_bad_inputs_exit_2_with_a_message(flux_dir, tmp_path, capsys):
    base = common(flux_dir, tmp_path / "x")
    assert "k must be an integer in 1..32" in cli_error(capsys, ["find", *base, "--k", "33"])
    assert "Unknown site 'nope'" in cli_error(capsys, ["find", *base, "--site", "nope"])
    assert "no such local folder" in cli_error(capsys, ["find", "--model", str(tmp_path / "missing"), "--prompt", "x"])
    assert "not a diffusers pipeline folder" in cli_error(capsys, ["find", "--model", str(tmp_path), "--prompt", "x"])
    assert "Unknown word 'dog'" in cli_error(
        capsys, ["generate", "--prompt", "a large red dog on the left on a gray background"]
    )
    assert "does not exist" in cli_error(capsys, ["find", *base, "--prompts-file", str(tmp_path / "none.txt")])
    truth = tmp_path / "one_mask"
    truth.mkdir()
    (truth / "a.png").write_bytes(b"not a png")
    assert "holds 1 mask images but there are 2" in cli_error(capsys, ["segment", *base, "--truth-dir", str(truth)])
    assert "k must be an integer in 0..32" in cli_error(capsys, ["disrupt", *base, "--ks", "64"])
    assert "Unknown channel rule 'best'" in cli_error(capsys, ["disrupt", *base, "--rules", "best"])
    assert "Step window [1, 5] is outside the schedule" in cli_error(
        capsys, ["disrupt", *base, "--ks", "1", "--rules", "top", "--window", "1", "5"]
    )
    pair = ["--k", "4", "--source", "A", "--target", "B"]
    assert "Step window [1, 3] is outside the schedule" in cli_error(
        capsys, ["interpolate", *base, *pair, "--over", "window", "--windows", "0:1", "1:3"]
    )
    assert "START:STOP with whole numbers" in cli_error(
        capsys, ["interpolate", *base, *pair, "--over", "window", "--windows", "0-1"]
    )
    assert "k must be an integer in 1..32" in cli_error(
        capsys, ["interpolate", *base, *pair, "--over", "k", "--ks", "2", "64"]
    )
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").glob("*.tmp"))


def test_every_help_example_parses_one_command_per_line():
    """Each `--help` example is a command the parser accepts; a long one continues on the next
    line after a visible backslash (a bare backslash in the source would join the lines)."""
    import shlex

    from ditlens.cli import EXAMPLES, build_parser

    parser = build_parser()
    n = 0
    for name, text in EXAMPLES.items():
        assert all(len(line) <= 120 for line in text.splitlines()), name
        for line in text.replace("\\\n", " ").splitlines():
            if line.strip().startswith("ditlens "):
                argv = shlex.split(line, comments=True)[1:]
                parser.parse_args(argv)  # SystemExit (a failure) on an unknown option or value
                n += 1
    assert n >= len(EXAMPLES)
