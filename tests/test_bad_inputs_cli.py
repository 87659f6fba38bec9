"""The catalogue of bad inputs on the command line: every one gets a clear answer, never a
traceback or a half-written result.

Each case: exit code 2, one line `ditlens COMMAND: error: ...` that names the bad value and
what is allowed, no "Traceback" on stderr, no output folder and no temporary file left.
Sweeps are in tests/test_bad_inputs_sweep.py, the Python API in tests/test_bad_inputs_api.py,
Ctrl+C and full disks in tests/test_bad_inputs_disk.py, the shared files and checks in
tests/bad_inputs.py.

Cases marked xfail(strict=True) (bad_inputs.gap) are known gaps in ditlens, each with the file
to fix; when a fix lands the case passes, strict xfail fails, and the marker must go.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ditlens.cli import main

from .bad_inputs import SCENE, SCENE_2, SITES, Assets, error_line, no_half_written, run_cli, tiny


def k4(a: Assets, command: str = "transport") -> list[str]:
    """COMMAND on the tiny pipeline at its own size, with 4 channels."""
    return [command, *tiny(a, size=False), "--k", "4"]


def on_model(model: str, out: str, command: str = "find") -> list[str]:
    """COMMAND with this model (a folder or a hub id) on one prompt."""
    return [command, "--model", model, "--prompt", "x", "--out", out]


XY = ["--source", "x", "--target", "y"]  # the prompts of the transport cases on the tiny pipeline

# ---- the CLI catalogue ------------------------------------------------------------------------
# (id, argv builder (assets, out), what the message must say)

CLI_CASES = [
    # models
    (
        "model-path-missing",
        lambda a, o: on_model(f"{a.root}/no_such_model", o),
        ["no such local folder", "no_such_model"],
    ),
    (
        "model-folder-not-a-pipeline",
        lambda a, o: on_model(a.not_a_pipe, o),
        ["not a diffusers pipeline folder", "model_index.json"],
    ),
    (
        "unet-pipeline",
        lambda a, o: on_model(a.unet_pipe, o),
        ["(DDPMPipeline) has a UNet", "Supported transformer classes: ", "FluxTransformer2DModel"],
    ),
    (
        "unsupported-transformer-from-its-index",
        lambda a, o: on_model(a.chroma_index, o),
        ["Unsupported transformer class 'ChromaTransformer2DModel'", "Supported: ", "SanaTransformer2DModel"],
    ),
    (
        "edit-pipeline-with-reference-tokens",
        lambda a, o: on_model(a.kontext_index, o, "segment"),
        ["Unsupported pipeline 'FluxKontextPipeline'", "reference image's tokens", "text-to-image pipeline"],
    ),
    (
        "hub-id-not-in-cache-offline",
        lambda a, o: on_model("ditlens-tests/no-such-model", o),
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
        lambda a, o: (
            ["transport", "--source", "a large red dog on the left on a gray background"]
            + ["--target", "a large blue square on the left on a gray background", "--out", o]
        ),
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
        lambda a, o: ["segment", *tiny(a), *"--k 2 --step 9 --out".split(), o],
        ["Step 9 is outside the schedule: 0..1"],
    ),
    (
        "segment-unknown-site",
        lambda a, o: ["segment", *tiny(a), *"--k 2 --site nope --out".split(), o],
        ["'nope'", SITES],
    ),
    ("disrupt-k-above-hidden-size", lambda a, o: ["disrupt", *tiny(a), "--ks", "64", "--out", o], ["0..32", "64"]),
    (
        "disrupt-window-beyond-schedule",
        lambda a, o: ["disrupt", *tiny(a), *"--ks 1 --rules top --window 1 5 --out".split(), o],
        ["Step window [1, 5]", "0 <= start < stop <= 2"],
    ),
    (
        "transport-window-beyond-schedule",
        lambda a, o: [*k4(a), *XY, "--window", "1", "5", "--out", o],
        ["Step window [1, 5]", "0 <= start < stop <= 2"],
    ),
    (
        "disrupt-unknown-rule",
        lambda a, o: ["disrupt", *tiny(a), "--rules", "best", "--out", o],
        ["'best'", "top, bottom, random"],
    ),
    (
        "disrupt-factor-nan",
        lambda a, o: ["disrupt", *tiny(a), *"--ks 1 --rules top --factor nan --out".split(), o],
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
        lambda a, o: ["generate", *"--height 100000 --width 100000 --out".split(), o],
        ["--height", "8192", "100000"],
    ),
    (
        "disrupt-negative-guidance",
        lambda a, o: ["disrupt", *tiny(a), *"--guidance -1 --ks 1 --out".split(), o],
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
        lambda a, o: ["generate", *"--seeds 0 3 0 --out".split(), o],
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
        lambda a, o: ["disrupt", "--prompt", "red a square", *"--seeds 0 1 --out".split(), o],
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
    ("model-index-a-list", lambda a, o: on_model(a.index_list, o), ["no diffusers pipeline index", "[]"]),
    ("model-index-empty", lambda a, o: on_model(a.index_empty, o), ["no diffusers pipeline index", "{}"]),
    ("model-index-broken", lambda a, o: on_model(a.index_broken, o), ["Cannot read", "model_index.json"]),
    (
        "reference-too-large",
        lambda a, o: ["transport", "--reference", a.big_image, "--target", SCENE_2, "--out", o],
        ["big.png", "15000x15000", "at most 67,108,864 pixels"],
    ),
    # transport: alpha, masks, images
    (
        "transport-alpha-above-1",
        lambda a, o: [*k4(a), *XY, "--alpha", "1.5", "--out", o],
        ["alpha must be within [0, 1]", "1.5"],
    ),
    ("transport-alpha-negative", lambda a, o: [*k4(a), *XY, "--alpha", "-0.5", "--out", o], ["[0, 1]", "-0.5"]),
    (
        "interpolate-alpha-out-of-range",
        lambda a, o: [*k4(a, "interpolate"), *XY, "--alphas", "0", "2", "--out", o],
        ["[0, 1]", "2.0"],
    ),
    (
        "transport-unknown-mask",
        lambda a, o: [*k4(a), *XY, "--mask", "blob", "--out", o],
        ["'blob'", "source, target, union, all, user"],
    ),
    (
        "transport-user-mask-without-image",
        lambda a, o: [*k4(a), *XY, "--mask", "user", "--out", o],
        ["mask='user' needs a mask image", "--mask-image"],
    ),
    (
        "transport-mask-image-wrong-size",
        lambda a, o: [*k4(a), *XY, "--mask", "user", "--mask-image", a.small_mask, "--out", o],
        ["small_mask.png", "10x10", "256x256"],
    ),
    (
        "transport-mask-image-unreadable",
        lambda a, o: [*k4(a), *XY, "--mask", "user", "--mask-image", a.junk, "--out", o],
        ["junk.png", "not a readable image"],
    ),
    (
        "transport-reference-missing",
        lambda a, o: [*k4(a), "--target", "y", "--reference", a.missing, "--out", o],
        ["none.txt", "does not exist"],
    ),
    (
        "transport-reference-unreadable",
        lambda a, o: [*k4(a), "--target", "y", "--reference", a.junk, "--out", o],
        ["junk.png", "not a readable image"],
    ),
    (
        "transport-no-source",
        lambda a, o: [*k4(a), "--target", "y", "--out", o],
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
        lambda a, o: (
            ["find", "--model", a.nan_pipe, "--embeds", a.embeds]
            + [*"--steps 2 --height 32 --width 32 --quiet --out".split(), o]
        ),
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
            lambda a, o: (
                ["transport", "--source", SCENE, "--target", SCENE_2]
                + ["--mask", "user", "--mask-image", a.junk, "--out", o]
            ),
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


def test_an_unsupported_model_is_refused_from_its_index_in_under_a_second(assets, capsys):
    """The folders hold a model_index.json and no weights: had anything loaded, the error would be another."""
    import time

    for folder in (assets.chroma_index, assets.kontext_index):
        start = time.perf_counter()
        message = run_cli(capsys, ["find", "--model", folder, "--prompt", "x", "--out", str(Path(folder) / "out")])
        assert time.perf_counter() - start < 1.0
        assert "Unsupported" in message
