"""The built-in-family model a bench runs on: the check of a model folder before anything
loads (`check_model_folder`), and what a report says about the model (`model_summary`,
`model_sentence`): the folder or the shipped model, its world and architecture, and the
settings it was trained with."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

#: the files `BuiltinPipeline.from_pretrained` reads (what `python -m ditlens.builtin.train` writes to OUT/model)
MODEL_FILES = (
    "model_index.json",
    "transformer/config.json",
    "transformer/diffusion_pytorch_model.safetensors",
    "text_encoder/config.json",
    "text_encoder/diffusion_pytorch_model.safetensors",
    "scheduler/scheduler_config.json",
)
TRAIN_SETTINGS = ("world", "size", "steps", "batch_size", "lr", "seed")  # the train_config.json fields a report names
_HINT = "give the model folder `python -m ditlens.builtin.train --out OUT` wrote (OUT/model)"


def check_model_folder(folder: str | Path) -> str:
    """The world ("v1" or "v2") of a built-in-family model folder, checked without loading
    any weight: it holds every file of MODEL_FILES and its model_index.json names
    BuiltinPipeline. Anything else is a ValueError or FileNotFoundError that names the folder."""
    from ..builtin.text_encoder import WORLDS

    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"Model folder {str(folder)!r} does not exist; {_HINT}.")
    if not (path / "model_index.json").is_file() and (path / "model" / "model_index.json").is_file():
        raise ValueError(f"{str(folder)!r} is a training run's folder; give its model: --model {path / 'model'}")
    missing = [name for name in MODEL_FILES if not (path / name).is_file()]
    if "model_index.json" in missing:
        raise ValueError(
            f"{str(folder)!r} is not a model folder (no model_index.json in it); give a diffusers pipeline "
            "folder, or for the built-in bench the model folder `python -m ditlens.builtin.train --out OUT` "
            "wrote (OUT/model)."
        )
    try:
        index, encoder = _read_configs(path, missing)
    except ValueError as err:
        raise ValueError(f"Cannot read the model folder {str(folder)!r}: {err}") from None
    name = index.get("_class_name") if isinstance(index, dict) else None
    if name != "BuiltinPipeline":
        raise ValueError(
            f"{str(folder)!r} holds a {name or 'non-pipeline'} folder, not a built-in-family model "
            f"(BuiltinPipeline); {_HINT}."
        )
    if missing:
        raise FileNotFoundError(
            f"The model folder {str(folder)!r} lacks {', '.join(missing)}; {_HINT} (a finished run: "
            "an interrupted one has OUT/checkpoint.pt and no OUT/model yet)."
        )
    world = index.get("world") or encoder.get("world") or "v1"  # folders written before worlds: v1
    if world not in WORLDS or (encoder.get("world") or "v1") != world:
        raise ValueError(
            f"The model folder {str(folder)!r} names world {world!r} in model_index.json and "
            f"{encoder.get('world') or 'v1'!r} in text_encoder/config.json; allowed: {', '.join(WORLDS)}, "
            "the same in both."
        )
    return world


def _read_configs(path: Path, missing: list[str]) -> tuple[Any, dict[str, Any]]:
    """model_index.json and, where it is there, text_encoder/config.json ({} where not); a
    file that is no JSON raises ValueError."""
    index = json.loads((path / "model_index.json").read_text())
    has_encoder = "text_encoder/config.json" not in missing
    encoder = json.loads((path / "text_encoder" / "config.json").read_text()) if has_encoder else {}
    return index, encoder


def model_summary(pipe: Any) -> dict[str, Any]:
    """What the bench ran on: the folder (or the shipped model), its world and architecture,
    and the settings of the train_config.json beside it (OUT/train_config.json for OUT/model)."""
    from ..builtin.pipeline import DEFAULT_WEIGHTS

    name = getattr(pipe.config, "_name_or_path", None)  # from_pretrained's folder; None: a pipeline never saved
    folder = Path(name) if name else None
    tc = pipe.transformer.config
    return {
        "folder": str(folder) if folder else None,
        "shipped": folder is not None and folder.resolve() == DEFAULT_WEIGHTS.resolve(),
        "world": getattr(pipe, "world", "v1"),
        "image_size": pipe.config.image_size,
        "hidden_size": tc.num_attention_heads * tc.attention_head_dim,
        "double_blocks": tc.num_layers,
        "single_blocks": tc.num_single_layers,
        "train_config": _train_config(folder) if folder else None,
    }


def _train_config(folder: Path) -> dict[str, Any] | None:
    """The TRAIN_SETTINGS of the first readable train_config.json in the folder or beside it,
    with the steps its train.log says ran (a time limit cuts `steps`); None where there is none."""
    for path in (folder / "train_config.json", folder.parent / "train_config.json"):
        if not path.is_file():
            continue
        try:
            values = json.loads(path.read_text())
        except ValueError:
            continue
        if not isinstance(values, dict):
            continue
        found: dict[str, Any] = {"path": str(path), **{k: values[k] for k in TRAIN_SETTINGS if k in values}}
        log = path.parent / "train.log"
        done = re.findall(r"^trained (\d+) steps", log.read_text(), flags=re.M) if log.is_file() else []
        if done:
            found["steps_trained"] = int(done[-1])
        return found
    return None


def model_sentence(m: dict[str, Any]) -> str:
    """A report's `Model: ...` sentence, from `model_summary`."""
    if m["shipped"]:
        name = "the shipped built-in model"
    else:
        name = f"`{m['folder']}`" if m["folder"] else "a pipeline never saved to a folder"
    arch = (
        f"{m['image_size']} px images, hidden size {m['hidden_size']}, "
        f"{m['double_blocks']} double + {m['single_blocks']} single blocks"
    )
    train = m["train_config"]
    if train is not None:
        settings = ", ".join(
            f"{k.replace('_', ' ')} {train[k]}" for k in TRAIN_SETTINGS[1:] if train.get(k) not in (None, "")
        )
        if train.get("steps_trained") not in (None, train.get("steps")):
            settings += f" ({train['steps_trained']} trained: train.log)"
        arch += f"; trained with {settings or 'the defaults'} (`{train['path']}`)"
    elif m["folder"] and not m["shipped"]:
        arch += "; no train_config.json beside it"
    return f"Model: {name} (world {m['world']}; {arch})"


def report_title(m: dict[str, Any]) -> str:
    """What a report's title says the model is, from `model_summary`."""
    return "built-in model" if m["shipped"] else f"built-in family, world {m['world']}"
