"""CLIP score and CLIP-I in disrupt, transport, interpolate and sweeps (tiny random CLIP), the
segmenter's foreground masks (tiny random SegFormer), and the score tables' layout against
a hand computation."""

from __future__ import annotations

import json
import time

import pytest
import torch

from ditlens.cli import main
from ditlens.metrics.clip import ClipScorer
from ditlens.metrics.scores import score_curves
from ditlens.metrics.segmenter import Segmenter

from .tiny_scorers import save_tiny_clip, save_tiny_segmenter

PROMPT = "a large red circle on the left on a gray background"
TARGET = "a small blue square on the right on a black background"


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("clip"))


def _scored(clip_dir, out, *args: str) -> int:
    """`ditlens ARGS` for 2 steps, scored by the tiny CLIP at `clip_dir`, into `out`, quietly: its exit status."""
    return main([*args, "--steps", "2", "--clip", str(clip_dir), "--out", str(out), "--quiet"])


def test_disrupt_reports_clip_scores_as_computed_by_hand(clip_dir, tmp_path):
    out = tmp_path / "d"
    assert _scored(clip_dir, out, "disrupt", "--prompt", PROMPT, "--seeds", "0", "1", "--ks", "2", "--draws", "2") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    scores, scorer = metrics["scores"], ClipScorer.from_pretrained(clip_dir)
    import numpy as np
    from PIL import Image

    def load(name):
        return torch.from_numpy(np.array(Image.open(out / name))).permute(2, 0, 1).float()[None] / 255

    unedited, top = (torch.cat([load(f"{c}_{i:03d}.png") for i in range(2)]) for c in ("none", "top-2"))
    by_hand = scorer.clip_score(top, [PROMPT, PROMPT])  # from the PNGs: equal to 8-bit rounding
    assert scores["top-2"]["clip_score_per_image"] == pytest.approx(by_hand.tolist(), abs=0.5)
    cos = (scorer.image_features(top) * scorer.image_features(unedited)).sum(-1)
    assert scores["top-2"]["clip_i_to_unedited_per_image"] == pytest.approx(cos.tolist(), abs=0.01)
    assert scores["none"]["clip_i_to_unedited"] == pytest.approx(1.0, abs=1e-5)
    assert "full_object_accuracy" in scores["top-2"] and metrics["not_measured"] == []
    assert (out / "clip_score_over_k.png").is_file() and (out / "clip_i_to_unedited_over_k.png").is_file()


def test_score_curves_layout_by_hand():
    scores = {
        "none": {"rule": "none", "k": 0, "clip_score": 30.0},
        "top-1": {"rule": "top", "k": 1, "clip_score": 10.0},
        "top-4": {"rule": "top", "k": 4, "clip_score": 5.0},
        "random-1#0": {"rule": "random", "k": 1, "clip_score": 20.0},
        "random-1#1": {"rule": "random", "k": 1, "clip_score": 24.0},
    }
    curves = score_curves(scores, "clip_score", ["top", "bottom", "random"])
    assert curves["top"] == ([1, 4], [10.0, 5.0], None)
    ks, means, spreads = curves["random"]
    assert ks == [1] and means == [22.0] and spreads == pytest.approx([2**0.5 * 2])  # sample std of 20, 24
    assert "bottom" not in curves and score_curves(scores, "frechet_distance", ["top"]) == {}


@pytest.mark.parametrize("command", ["transport", "interpolate"])
def test_transport_and_interpolate_report_clip_t_and_clip_i(clip_dir, tmp_path, command):
    out = tmp_path / command
    extra = ["--alphas", "0", "1"] if command == "interpolate" else []
    assert _scored(clip_dir, out, command, "--source", PROMPT, "--target", TARGET, *extra) == 0
    rows = json.loads((out / "scores.json").read_text())["images"]
    assert list(rows)[0] == "target alone" and len(rows) == (3 if command == "interpolate" else 2)
    alone = rows["target alone"]
    assert alone["clip_i_to_target_alone"] == pytest.approx(1.0, abs=1e-5) and alone["psnr_to_target_alone"] == 100.0
    for row in rows.values():
        assert {"clip_t_to_source", "clip_t_to_target", "clip_i_to_source", "colour_from_source"} <= set(row)
    if command == "interpolate":  # alpha 0 moves nothing: the target alone, to the pixel
        assert rows["a=0"]["clip_i_to_target_alone"] == pytest.approx(1.0, abs=1e-5)


def test_reference_without_caption_has_no_clip_t_to_source(clip_dir, tmp_path):
    from PIL import Image

    from ditlens.builtin.scenes import parse_caption, render

    Image.fromarray(render(parse_caption(PROMPT)).image).save(tmp_path / "ref.png")
    out = tmp_path / "t"
    assert _scored(clip_dir, out, "transport", "--reference", str(tmp_path / "ref.png"), "--target", TARGET) == 0
    row = json.loads((out / "scores.json").read_text())["images"]["a=1"]
    assert "clip_t_to_source" not in row and "clip_t_to_target" in row and "colour_from_source" not in row


def test_bad_clip_folder_is_refused_before_loading(tmp_path, capsys):
    started = time.perf_counter()
    out = tmp_path / "d"
    assert main(["disrupt", "--prompt", PROMPT, "--clip", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "No CLIP model at" in capsys.readouterr().err and not out.exists()
    (tmp_path / "t5").mkdir()
    (tmp_path / "t5" / "config.json").write_text(json.dumps({"model_type": "t5"}))
    assert (
        main(["transport", "--source", PROMPT, "--target", TARGET, "--clip", str(tmp_path / "t5"), "--out", str(out)])
        == 2
    )
    assert "'t5' model; ditlens needs a CLIPModel" in capsys.readouterr().err
    assert time.perf_counter() - started < 5  # no model was loaded


def test_sweep_items_get_clip_scores_and_merge_clip_i(clip_dir, tmp_path):
    config = tmp_path / "sweep.toml"
    config.write_text(f"""
prompts = ["{PROMPT}"]
seeds = [0]
clip = "{clip_dir}"
[generation]
steps = 2
[[jobs]]
command = "disrupt"
rule = ["top"]
k = [2]
[[jobs]]
command = "transport"
target = ["{TARGET}"]
k = [8]
""")
    out = tmp_path / "s"
    assert main(["sweep", str(config), "--out", str(out), "--quiet"]) == 0
    results = [json.loads(p.read_text()) for p in out.glob("items/*/result.json")]
    disrupts = [r for r in results if r["command"] == "disrupt"]
    assert len(disrupts) == 2 and all("clip_score" in r["metrics"] for r in disrupts)
    assert any("clip_t_to_source" in r["metrics"] for r in results if r["command"] == "transport")
    assert main(["sweep", str(config), "--out", str(out), "--merge", "--quiet"]) == 0
    summary = json.loads(next((out / "summary").glob("*.json")).read_text())
    assert "clip_i_to_unedited" in json.dumps(summary)


def test_segmenter_foreground_and_its_refusals(tmp_path):
    path = save_tiny_segmenter(tmp_path / "seg")
    segmenter = Segmenter.from_pretrained(path)
    images = torch.rand(3, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    masks = segmenter.foreground(images)
    assert masks.shape == (3, 32, 48) and masks.dtype == torch.bool
    logits = segmenter.model(
        pixel_values=segmenter.processor(
            images=[(i.permute(1, 2, 0).numpy() * 255).round().astype("uint8") for i in images], return_tensors="pt"
        )["pixel_values"]
    ).logits
    by_hand = torch.nn.functional.interpolate(logits, size=(32, 48), mode="bilinear").argmax(1) != 0
    assert torch.equal(masks, by_hand)
    with pytest.raises(ValueError, match=r"\['sky'\] are not classes .* its classes: background, object"):
        Segmenter.from_pretrained(path, background=["sky"])
    with pytest.raises(ValueError, match="Every class"):
        Segmenter.from_pretrained(path, background=["background", "object"])
    with pytest.raises(ValueError, match="No segmentation model at"):
        Segmenter.from_pretrained(tmp_path / "none")


def test_segment_with_a_segmenter_scores_as_a_truth_folder_of_its_masks(tmp_path):
    """--segmenter PATH gives the same segment.json scores as --truth-dir holding the
    segmenter's own masks of the same images."""
    from PIL import Image

    path = save_tiny_segmenter(tmp_path / "seg")
    common = ["segment", "--prompt", PROMPT, "--seeds", "0", "1", "--steps", "2", "--k", "2", "--quiet"]
    assert main([*common, "--segmenter", str(path), "--out", str(tmp_path / "a")]) == 0
    from ditlens.generation import GenerationSettings, generate
    from ditlens.models import load_pipeline

    # the same images again (generation is deterministic per seed): the segmenter's masks of them
    images = generate(load_pipeline(None), [PROMPT], [0, 1], GenerationSettings(num_inference_steps=2))
    masks = Segmenter.from_pretrained(path).foreground(images)
    (tmp_path / "truth").mkdir()
    for i, m in enumerate(masks):
        Image.fromarray((m.numpy() * 255).astype("uint8")).save(tmp_path / "truth" / f"m_{i}.png")
    assert main([*common, "--truth-dir", str(tmp_path / "truth"), "--out", str(tmp_path / "b")]) == 0
    a, b = (json.loads((tmp_path / n / "segment.json").read_text()) for n in "ab")
    assert a["miou_best"] == b["miou_best"] and set(a["miou_best"]) == {"top", "bottom", "random", "all"}
    with pytest.raises(SystemExit) as refused:  # one truth at a time: argparse refuses both
        main([*common, "--segmenter", str(path), "--truth-dir", str(tmp_path / "truth"), "--out", str(tmp_path / "c")])
    assert refused.value.code == 2
