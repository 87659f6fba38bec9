"""`ditlens bench findings|transport --model FOLDER` on models `python -m ditlens.builtin.train`
wrote, of world v1 and v2, tiny: the report names the model and its world, its tables hold
the JSON's numbers, a v2 run without --classifier lists what it could not measure, and bad
input is refused before anything is computed or written."""

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest
import torch

from ditlens.bench import (
    check_model_folder,
    held_out_prompts,
    subject_positions,
    transport_pairs,
)
from ditlens.builtin import scenes_v2
from ditlens.cli import main

TINY: dict[str, Any] = {  # TrainConfig's fields, shrunk
    "steps": 4,
    "batch_size": 4,
    "hidden_size": 32,
    "num_heads": 2,
    "num_double_blocks": 1,
    "num_single_blocks": 1,
    "text_layers": 1,
    "num_workers": 0,
    "warmup_steps": 2,
    "log_every": 2,
    "sample_every": 1000,
    "sample_steps": 2,
}


@pytest.fixture(scope="module")
def models(tmp_path_factory, one_thread) -> dict[str, str]:
    """OUT/model of a tiny v1 run and of a tiny v2 run (rung s, shrunk), as the CPU smoke command trains them."""
    from ditlens.builtin.train import TrainConfig, rung_config, train

    root = tmp_path_factory.mktemp("runs")
    train(TrainConfig(out=root / "v1", **TINY))
    train(rung_config("v2", "s", out=root / "v2", **TINY))
    return {"v1": str(root / "v1" / "model"), "v2": str(root / "v2" / "model")}


@pytest.fixture(scope="module")
def classifier_v2(tmp_path_factory, one_thread) -> str:
    from ditlens.metrics import classifier as clf

    folder = tmp_path_factory.mktemp("clf") / "classifier-v2"
    model = clf.train_classifier_v2(
        steps=2, batch_size=8, config=clf.ClassifierV2Config(channels=(8, 16, 16), feature_dim=32), progress=False
    )
    model.save_pretrained(folder)
    return str(folder)


def bench(tmp_path_factory, *argv: str) -> tuple[str, dict]:
    out = tmp_path_factory.mktemp("bench")
    assert main(["bench", *argv, "--quick", "--n", "2", "--quiet", "--out", str(out)]) == 0
    name = "findings.json" if argv[0] == "findings" else "transport.json"
    return (out / "report.md").read_text(), json.loads((out / name).read_text())


@pytest.fixture(scope="module")
def findings_v1(models, tmp_path_factory, one_thread):
    return bench(tmp_path_factory, "findings", "--model", models["v1"])


@pytest.fixture(scope="module")
def findings_v2(models, tmp_path_factory, one_thread):
    return bench(tmp_path_factory, "findings", "--model", models["v2"])


@pytest.fixture(scope="module")
def findings_v2_scored(models, classifier_v2, tmp_path_factory, one_thread):
    return bench(tmp_path_factory, "findings", "--model", models["v2"], "--classifier", classifier_v2)


@pytest.fixture(scope="module")
def transport_v2_scored(models, classifier_v2, tmp_path_factory, one_thread):
    return bench(tmp_path_factory, "transport", "--model", models["v2"], "--classifier", classifier_v2)


@pytest.fixture(scope="module")
def transport_v2(models, tmp_path_factory, one_thread):
    return bench(tmp_path_factory, "transport", "--model", models["v2"])


def headings(report: str) -> list[str]:
    return [line[3:] for line in report.splitlines() if line.startswith("## ")]


def names_model(report: str, numbers: dict, folder: str, world: str, command: str) -> None:
    first = report.splitlines()[2]
    assert first.startswith(f"Command: `{command}") and " commit " in first
    assert f"Model: `{folder}` (world {world};" in first and "hidden size 32, 1 double + 1 single blocks" in first
    assert "trained with " in first and "steps 4, batch size 4" in first and "train_config.json" in first
    model = numbers["model"]
    assert (model["folder"], model["world"], model["shipped"], model["train_config"]["steps"]) == (
        folder,
        world,
        False,
        4,
    )


def test_the_band_rule_reads_exact_masks_on_textured_renders():
    from ditlens.metrics.fidelity_v2 import foreground_masks

    batch = scenes_v2.sample_batch(48, seed=3)
    assert sum(s.background_texture != "plain" for s in batch.scenes) >= 30
    assert torch.equal(foreground_masks((batch.images + 1) / 2), ~batch.background_masks)
    # so transport's layout and ghosting scores, which need no classifier, read a render as its own target
    from ditlens.metrics import fidelity_v2

    source, target = transport_pairs(1, world=scenes_v2)[0]
    image = fidelity_v2.renders([target], [5])
    assert fidelity_v2.transport_scores(image, source, target, image[0], None) == [
        {"mask_iou_with_target": 1.0, "ghosting": 0.0}
    ]


def test_world_helpers_follow_the_world_and_keep_v1():
    # v1: the very prompts and pairs the committed reports were made from
    v1 = held_out_prompts(2)
    assert v1 == [
        "a large blue cross on the right and a small yellow diamond at the bottom on a navy background",
        "a small red circle at the bottom on a white background",
    ]
    assert [subject_positions(p) for p in v1] == [[2, 3, 4, 10, 11, 12], [2, 3, 4]]
    assert transport_pairs(2)[1] == (
        "a large orange circle at the top on a brown background",
        "a large yellow cross at the top on a black background",
    )
    assert transport_pairs(1, seed=1235, second_object=True) == [
        (
            "a small pink diamond on the right on a brown background",
            "a small blue cross on the right and a small orange square at the bottom on a olive background",
        )
    ]
    # v2: held-out captions of its grammar; the subject words stop before the background's texture
    prompt = "a large striped red star at the top left on a checked navy background"
    assert subject_positions(prompt, scenes_v2) == [2, 3, 4, 5]
    prompts = held_out_prompts(8, world=scenes_v2)
    assert all(scenes_v2.is_heldout(scenes_v2.parse_caption(p)) for p in prompts)
    for source, target in transport_pairs(3, world=scenes_v2) + transport_pairs(2, second_object=True, world=scenes_v2):
        s, t = scenes_v2.parse_caption(source).objects[0], scenes_v2.parse_caption(target).objects[0]
        assert (s.position, s.size) == (t.position, t.size)
        assert s.shape != t.shape and s.colour != t.colour and s.texture != t.texture


def test_each_model_names_its_world(models, tmp_path):
    """The shipped model (however named) and a trained folder name their world; no other model does."""
    from ditlens.models import builtin_world

    assert [builtin_world(m) for m in (None, "", "builtin")] == ["v1", "v1", "v1"]
    assert (builtin_world(models["v1"]), builtin_world(models["v2"])) == ("v1", "v2")
    assert builtin_world(str(tmp_path)) is None  # a folder with no model in it
    assert builtin_world("black-forest-labs/FLUX.1-schnell") is None  # a hub id, not in this cache


def test_findings_on_a_v1_folder(models, findings_v1):
    report, numbers = findings_v1
    names_model(report, numbers, models["v1"], "v1", f"ditlens bench findings --model {models['v1']} --quick")
    assert "# ditlens bench findings (built-in family, world v1)" in report and "Not measured" not in headings(report)
    none = numbers["finding1"]["none"]
    assert f"| none | 0 | {none['full_object_accuracy']:.3f} | {none['frechet_distance']:.1f} |" in report
    top = numbers["finding2"]["image_sets"]["generated"][numbers["finding2"]["headline_group"]]["top"]
    assert f"| {top['miou']:.3f} ({top['best_site']}) | {top['oracle']:.3f} |" in report
    assert set(numbers["finding1"]["none"]["accuracy"]) == {
        "position",
        "shape",
        "colour",
        "size",
        "full_object",
        "background",
    }


def test_findings_on_a_v2_folder_without_a_classifier_lists_what_it_could_not_measure(models, findings_v2):
    report, numbers = findings_v2
    names_model(report, numbers, models["v2"], "v2", f"ditlens bench findings --model {models['v2']} --quick")
    assert headings(report)[0] == "Finding 1 (functionally critical): not decided"
    assert headings(report)[-1] == "Not measured"
    missing = numbers["not_measured"]
    assert (
        len(missing) == 1
        and "prompt fidelity" in missing[0]
        and "Frechet distance" in missing[0]
        and "--classifier FOLDER" in missing[0]
    )
    assert missing[0] in report
    assert "verdict" not in numbers["finding1"]
    top16 = numbers["finding1"]["top-16"]["psnr_db_to_unedited"]
    assert f"| top | 16 | {top16:.1f} |" in report
    # Finding 2 runs: v2's groups, exact masks for renders, the band rule for generated images
    f2 = numbers["finding2"]
    assert f2["headline_group"] == "all images" and set(f2["image_sets"]["renders"]) <= {
        "all images",
        "plain backgrounds",
        "textured backgrounds",
    }
    top = f2["image_sets"]["renders"]["all images"]["top"]
    assert (
        f"| renders, all images (2) | top-2 | {top['miou']:.3f} ({top['best_site']}) | {top['oracle']:.3f} |" in report
    )
    assert f2["verdict"]["text"] in report and "nearest colour band" in report


def test_findings_on_a_v2_folder_with_a_v2_classifier(findings_v2_scored):
    report, numbers = findings_v2_scored
    assert "Not measured" not in headings(report) and "not_measured" not in numbers
    v1 = numbers["finding1"]["verdict"]
    assert headings(report)[0] == f"{v1['finding']}: {v1['status']}"
    none = numbers["finding1"]["none"]
    assert {"texture", "background_texture"} <= set(none["accuracy"])
    assert f"| none | 0 | {none['full_object_accuracy']:.3f} | {none['frechet_distance']:.1f} |" in report
    assert "--classifier" in report.splitlines()[2]


def test_transport_on_a_v2_folder_moves_colour_shape_and_texture(models, transport_v2_scored):
    report, numbers = transport_v2_scored
    names_model(report, numbers, models["v2"], "v2", f"ditlens bench transport --model {models['v2']} --quick")
    verdict = numbers["verdict"]
    assert headings(report)[0] == f"{verdict['finding']}: {verdict['status']}"
    curve = numbers["strength_curve"]["transport"]["1.0"]
    assert {"colour_from_source", "shape_from_source", "texture_from_source", "others_kept"} - set(curve) == {
        "others_kept"
    }
    row = (
        f"| massive-channel transport | 1 | {curve['both_from_source']:.3f} | {curve['colour_from_source']:.3f} | "
        f"{curve['shape_from_source']:.3f} | {curve['texture_from_source']:.3f} | {curve['mask_iou_with_target']:.3f} |"
    )
    assert row in report
    assert "texture_from_source" in numbers["two_object_targets"]["pixel blending"]["1.0"]
    assert numbers["chosen"]["by_measurement"] is True


def test_transport_on_a_v2_folder_without_a_classifier_keeps_layout_and_ghosting(transport_v2):
    report, numbers = transport_v2
    assert headings(report)[0] == "Finding 3 (transferable): not decided" and headings(report)[-1] == "Not measured"
    assert "verdict" not in numbers and numbers["chosen"]["by_measurement"] is False
    assert "texture" in numbers["not_measured"][0] and numbers["not_measured"][0] in report
    m = numbers["defaults_sweep"]["k=2"]
    assert set(m) == {"mask_iou_with_target", "ghosting"}
    assert f"| k=2 | — | — | — | — | {m['mask_iou_with_target']:.3f} | — | {m['ghosting']:.3f} | — |" in report


def run_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


def test_bad_folders_and_classifiers_are_refused_before_anything_runs(models, classifier_v2, tmp_path, capsys):
    from ditlens.metrics.classifier import DEFAULT_WEIGHTS

    out = tmp_path / "out"
    base = ["bench", "findings", "--quick", "--out", str(out)]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "is not a model folder (no model_index.json" in run_error(capsys, [*base, "--model", str(empty)])
    run_folder = str(models["v2"])[: -len("/model")]
    assert f"give its model: --model {models['v2']}" in run_error(capsys, [*base, "--model", run_folder])
    broken = tmp_path / "broken"
    shutil.copytree(models["v2"], broken)
    (broken / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
    assert "lacks transformer/diffusion_pytorch_model.safetensors" in run_error(capsys, [*base, "--model", str(broken)])
    err = run_error(capsys, [*base, "--model", models["v2"], "--classifier", str(DEFAULT_WEIGHTS)])
    assert "is for world v1, but the model is of world v2" in err
    err = run_error(
        capsys, ["bench", "transport", "--out", str(out), "--model", models["v1"], "--classifier", classifier_v2]
    )
    assert "is for world v2, but the model is of world v1" in err
    assert "No classifier at" in run_error(capsys, [*base, "--model", models["v2"], "--classifier", str(empty)])
    real = tmp_path / "real"
    real.mkdir()
    (real / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    assert "--classifier is for a built-in-family model" in run_error(
        capsys, [*base, "--model", str(real), "--classifier", classifier_v2]
    )
    assert not out.exists()  # nothing was written
    assert check_model_folder(models["v1"]) == "v1" and check_model_folder(models["v2"]) == "v2"


@pytest.mark.parametrize("world_name", ["v1", "v2"])
def test_the_perfect_transfer_is_the_targets_layout_with_the_sources_object(world_name):
    """Transport's oracle: the target's render (v2: at its render seed's layout) and the same
    layout with the source's object drawn in; the classifier reads the source's attributes off
    it, the background stays, and its layout IoU is the overlap of the two shapes alone."""
    from ditlens.bench.transport import perfect_transfer_scores
    from ditlens.bench.worlds import metrics_of, perfect_transfers, render_seeds
    from ditlens.builtin.text_encoder import scenes_of
    from ditlens.metrics.classifier import load_classifier

    world = scenes_of(world_name)
    pairs = transport_pairs(4, world=world)
    targets, transfers = perfect_transfers(pairs, world)
    seeds = render_seeds(4)
    for (_source, target), alone, moved, seed in zip(pairs, targets, transfers, seeds):
        drawn = world.render(world.parse_caption(target), *([seed] if world_name == "v2" else []))
        assert torch.equal(alone, torch.from_numpy(drawn.image).permute(2, 0, 1).float() / 255)
        background = torch.from_numpy(drawn.background_mask)
        assert not torch.equal(alone, moved)
        # the target's background is left as it was, wherever neither object lies
        outside = background & ~metrics_of(world).foreground_masks(moved[None], [target])[0]
        assert outside.sum() > 0.5 * background.sum() and torch.equal(alone[:, outside], moved[:, outside])
    # the same pair with the target's own object: the transfer is the target itself
    target = pairs[0][1]
    same = perfect_transfers([(target, target)], world)
    assert torch.equal(same[0], same[1])
    path = "shipped" if world_name == "v2" else None
    oracle = perfect_transfer_scores(pairs, world, load_classifier(path, world_name))
    assert oracle["colour_from_source"] == oracle["shape_from_source"] == oracle["background_kept"] == 1.0
    assert oracle["ghosting"] == 0.0 and 0.3 < oracle["mask_iou_with_target"] < 1.0
