"""`ditlens bench transport --model M --pairs FILE [--clip C]` on complete tiny pipelines (random
weights): the report's tables hold the numbers of findings.json, each baseline's ends are the
target alone and the source, and a bad pairs file is refused before any model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ditlens.bench import embedding_interpolation, interpolated_text, read_pairs
from ditlens.bench.real_transport import EMBEDDING, FORMATS, METHODS, PIXEL, RANDOM, TARGET_ALONE, TOP
from ditlens.cli import main
from ditlens.generation import GenerationSettings

from .full_pipelines import FAMILIES, build_pipeline, pipeline_folder
from .tiny_scorers import save_tiny_clip

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

PAIRS = "# source prompt | target prompt\na red cube | a blue ball\n\n  a green cube on the left | a cat  \n"
FAST = ["--k", "4", "--steps", "2", "--height", "32", "--width", "32", "--quiet"]


def bench_transport_argv(model: Path, pairs: Path, out: Path, *options: str) -> list[str]:
    """`ditlens bench transport` on a real model folder, with a pairs file, into `out`."""
    return ["bench", "transport", "--model", str(model), "--pairs", str(pairs), "--out", str(out), *options]


def _row(method: str, alpha: str, row: dict, keys: list[str]) -> str:
    """A table row as the report writes it from the summary: mean ± std (several samples)."""
    cells = [f"{row[k]:{FORMATS[k]}}" + (f" ± {row[f'{k}_std']:{FORMATS[k]}}" if row["n"] > 1 else "") for k in keys]
    return f"| {method} | {alpha} | " + " | ".join(cells) + " |"


def test_bench_transport_on_flux_reports_its_own_numbers(tmp_path_factory, tmp_path):
    model, clip = pipeline_folder(tmp_path_factory, "flux"), save_tiny_clip(tmp_path / "clip")
    (tmp_path / "pairs.txt").write_text(PAIRS)
    out = tmp_path / "bench"
    argv = bench_transport_argv(model, tmp_path / "pairs.txt", out, "--clip", str(clip), *FAST)
    argv += ["--alphas", "0", "1", "--seeds", "0", "1"]
    assert main(argv) == 0
    numbers, report = json.loads((out / "findings.json").read_text()), (out / "report.md").read_text()
    assert numbers["config"]["pairs"] == [["a red cube", "a blue ball"], ["a green cube on the left", "a cat"]]
    assert numbers["config"]["transport"]["k"] == 4 and numbers["config"]["alphas"] == [0.0, 1.0]
    scores, samples = numbers["scores"], numbers["samples"]
    assert set(scores) == {TARGET_ALONE, *METHODS} and len(samples) == 4  # 2 pairs x 2 seeds
    keys = list(FORMATS)  # with a CLIP: every score
    assert set(keys) <= set(scores[TARGET_ALONE])
    assert _row(TARGET_ALONE, "-", scores[TARGET_ALONE], keys) in report
    for method in METHODS:
        for alpha in ("0", "1"):
            assert _row(method, alpha, scores[method][f"a={alpha}"], keys) in report, (method, alpha)
    # the summary is the mean and standard deviation over the samples
    values = torch.tensor([s["scores"][RANDOM]["a=1"]["clip_t_to_source"] for s in samples], dtype=torch.float64)
    assert scores[RANDOM]["a=1"]["clip_t_to_source"] == pytest.approx(float(values.mean()))
    assert scores[RANDOM]["a=1"]["clip_t_to_source_std"] == pytest.approx(float(values.std()))
    for s in samples:
        alone, pix, emb, top = (s["scores"][m] for m in (TARGET_ALONE, PIXEL, EMBEDDING, TOP))
        # pixel blending at alpha 0 is the target alone, at alpha 1 the source image (by hand: lerp's ends)
        assert pix["a=0"]["psnr_to_target_alone"] == 100.0 and pix["a=0"]["clip_i_to_target_alone"] == pytest.approx(
            1.0, abs=1e-5
        )
        assert pix["a=0"]["clip_t_to_target"] == pytest.approx(alone["clip_t_to_target"], abs=1e-4)
        assert pix["a=1"]["psnr_to_source"] == 100.0 and pix["a=1"]["clip_i_to_source"] == pytest.approx(1.0, abs=1e-5)
        # text-embedding interpolation: the target's conditioning at 0, the source's at 1 (same seed: the source image)
        assert emb["a=0"]["psnr_to_target_alone"] >= 90 and emb["a=1"]["psnr_to_source"] >= 90
        assert emb["a=1"]["psnr_to_source"] > alone["psnr_to_source"]
        assert top["a=0"]["psnr_to_target_alone"] >= 90  # transport at strength 0 is no edit
    verdict = numbers["verdict"]
    assert verdict["headline"] in report and verdict["text"] in report
    assert f"{scores[TARGET_ALONE]['clip_t_to_source']:.2f} (target alone)" in verdict["text"]
    higher = sum(
        s["scores"][TOP]["a=1"]["clip_t_to_source"] > s["scores"][RANDOM]["a=1"]["clip_t_to_source"] for s in samples
    )
    assert verdict["top_beats_random"] == {"score": "clip_t_to_source", "alpha": 1.0, "higher": higher, "samples": 4}
    assert f"top-k is higher than random-k in {higher} of 4 samples" in verdict["text"]
    assert (
        "## Not measured" in report
        and "no CLIP model given" not in report
        and "built-in model's exact ground truth" in report
    )
    assert "commit " in report and f"--pairs {tmp_path / 'pairs.txt'}" in report and f"Model {model}" in report
    for name in (
        "transport_strips.png",
        "transport_clip_t_to_source.png",
        "transport_clip_i_to_target_alone.png",
        "transport_psnr_to_target_alone.png",
        "transport_psnr_to_source.png",
    ):
        assert (out / name).is_file(), name


def test_bench_transport_without_clip_holds_pixel_scores_only(tmp_path_factory, tmp_path):
    """SD3: pooled projections and one [uncond, cond] call per step (default guidance)."""
    model = pipeline_folder(tmp_path_factory, "sd3")
    (tmp_path / "pairs.txt").write_text("a red cube | a blue ball\n")
    out = tmp_path / "bench"
    assert main(bench_transport_argv(model, tmp_path / "pairs.txt", out, *FAST)) == 0
    numbers, report = json.loads((out / "findings.json").read_text()), (out / "report.md").read_text()
    assert numbers["config"]["alphas"] == [0.5, 1.0]  # the default strengths
    assert "| method | alpha | PSNR to target | PSNR to source |" in report
    assert not any(k.startswith("clip") for k in numbers["scores"][TOP]["a=1"])
    for method in METHODS:
        assert (
            _row(method, "0.5", numbers["scores"][method]["a=0.5"], ["psnr_to_target_alone", "psnr_to_source"])
            in report
        )
    assert numbers["scores"][PIXEL]["a=1"]["psnr_to_source"] == 100.0
    assert numbers["scores"][EMBEDDING]["a=1"]["psnr_to_source"] >= 90
    not_measured = report.split("## Not measured")[1]
    assert "CLIP-T" in not_measured and "CLIP-I" in not_measured and "no CLIP model given" in not_measured
    assert numbers["verdict"]["text"] in report and "PSNR to the source image" in numbers["verdict"]["text"]
    assert not (out / "transport_clip_t_to_source.png").exists() and (out / "transport_psnr_to_source.png").is_file()


@pytest.mark.parametrize("family", FAMILIES)
def test_embedding_interpolation_ends_are_the_target_and_the_source(family):
    """At weight 0 the target prompt's own image, at 1 the source prompt's (same seed), on every
    family: FLUX.1 and SD3 pooled projections, Qwen-Image and SANA text masks, guidance layouts."""
    pipe = build_pipeline(family)
    settings = GenerationSettings(num_inference_steps=2, height=32, width=32)
    source, target = "a red cube", "a large blue ball on the left"  # different lengths: the text masks differ
    images = embedding_interpolation(pipe, source, target, [0.0, 1.0], 3, settings)

    def alone(prompt: str) -> torch.Tensor:
        call = {"prompt": [prompt]}
        out = pipe(
            **call, generator=[torch.Generator().manual_seed(3)], output_type="pt", **settings.kwargs(pipe, 1, call)
        )
        return out.images.float().cpu()[0]

    torch.testing.assert_close(images[0], alone(target), atol=1e-5, rtol=0)
    torch.testing.assert_close(images[1], alone(source), atol=1e-5, rtol=0)
    assert not pipe.transformer._forward_pre_hooks


def test_interpolated_text_lerps_rows_in_groups_and_is_removed():
    seen = {}

    class Transformer(torch.nn.Module):
        def forward(
            self, hidden_states, encoder_hidden_states=None, pooled_projections=None, encoder_attention_mask=None
        ):
            seen.update(txt=encoder_hidden_states, vec=pooled_projections, mask=encoder_attention_mask)
            return hidden_states

    model = Transformer()
    txt = torch.arange(6.0).view(6, 1, 1).expand(6, 2, 1)  # two groups of 3 rows: [uncond x 3, cond x 3]
    mask = torch.tensor([[1, 0]] * 3 + [[1, 1], [1, 0], [1, 0]])
    with interpolated_text(model, [0.0, 0.5, 1.0]):
        model(torch.zeros(6), encoder_hidden_states=txt, pooled_projections=txt[:, 0], encoder_attention_mask=mask)
    assert seen["txt"][:, 0, 0].tolist() == [0, 0.5, 0, 3, 3.5, 3]  # row r towards the first row of its group
    assert seen["vec"][:, 0].tolist() == [0, 0.5, 0, 3, 3.5, 3]
    assert seen["mask"].tolist() == [[1, 0]] * 3 + [
        [1, 1],
        [1, 1],
        [1, 1],
    ]  # own at 0, union in between, the source's at 1
    assert not model._forward_pre_hooks
    with pytest.raises(RuntimeError, match="inside"), interpolated_text(model, [0.0, 1.0]):
        raise RuntimeError("inside")
    assert not model._forward_pre_hooks  # removed on an exception too
    with pytest.raises(ValueError, match="encoder_hidden_states"), interpolated_text(model, [0.0, 1.0]):
        model(torch.zeros(2))


def test_read_pairs_skips_comments_and_blank_lines(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("\ufeff# a comment\n\n a #1 car | a bike \n   # indented comment\na cat|a dog\n", encoding="utf-8")
    assert read_pairs(path) == [("a #1 car", "a bike"), ("a cat", "a dog")]


@pytest.mark.parametrize(
    "text, message",
    [
        ("a red cube | a blue ball\na red cube\n", "line 2 ('a red cube'): has no '|'"),
        ("# pairs\na | b | c\n", "line 2 ('a | b | c'): has 2 '|'"),
        ("a red cube | \n", "line 1 ('a red cube |'): the target prompt is empty"),
        ("\n | a cat\n", "line 2 ('| a cat'): the source prompt is empty"),
        ("a cat | a cat\n", "line 1 ('a cat | a cat'): source and target are the same prompt"),
        ("# only a comment\n\n", "holds no pairs"),
    ],
)
def test_bad_pairs_file_is_refused_before_the_model_loads(tmp_path, capsys, text, message):
    (tmp_path / "pairs.txt").write_text(text)
    out = tmp_path / "bench"
    argv = bench_transport_argv(tmp_path / "no-model", tmp_path / "pairs.txt", out)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "pairs.txt" in err
    assert not out.exists()


def test_bench_transport_refusals_name_what_is_wrong(tmp_path, capsys):
    model = str(tmp_path / "no-model")  # never loaded: every refusal comes first
    (tmp_path / "pairs.txt").write_text("a red cube | a blue ball\n")
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9 | a cat\n")
    pairs = ["--pairs", str(tmp_path / "pairs.txt")]
    cases = [
        (["bench", "transport", "--model", model], "bench transport on a real model needs --pairs FILE"),
        (["bench", "transport", "--model", model, "--pairs", str(tmp_path / "missing.txt")], "does not exist"),
        (["bench", "transport", "--model", model, "--pairs", str(tmp_path)], "is a folder"),
        (["bench", "transport", "--model", model, "--pairs", str(tmp_path / "latin1.txt")], "is not UTF-8 text"),
        (
            ["bench", "transport", "--model", model, *pairs, "--alphas", "0.5", "1.5"],
            "alphas must be within [0, 1]; got 1.5",
        ),
        (["bench", "transport", "--model", model, *pairs, "--alphas", "1", "1"], "alphas must differ"),
        (
            ["bench", "transport", "--model", model, *pairs, "--prompts", str(tmp_path / "pairs.txt")],
            "--prompts is not used by bench transport",
        ),
        (["bench", "findings", "--model", model, *pairs], "--pairs is for bench transport"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err, argv
