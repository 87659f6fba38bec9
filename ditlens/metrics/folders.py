"""Checks of the model folders a user points the scorers to (a CLIP, a segmenter), without
importing torch: a wrong path is answered before anything loads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CLIP_FILES = (
    "config.json (a CLIPModel config), model.safetensors or pytorch_model.bin, tokenizer files "
    "(vocab.json + merges.txt, or tokenizer.json) and preprocessor_config.json (image size, mean, std)"
)
SEGMENTER_FILES = (
    "config.json (a transformers semantic-segmentation model, e.g. SegFormer or UperNet), its weights "
    "and preprocessor_config.json"
)


def _config(path: Path, what: str, files: str) -> dict:
    if not path.is_dir() or not (path / "config.json").is_file():
        raise ValueError(f"No {what} at {str(path)!r}: expected a local folder with {files}.")
    try:
        return json.loads((path / "config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{str(path / 'config.json')!r} is not valid JSON ({error}).") from None


def _check_processor(path: Path, files: str) -> None:
    if not (path / "preprocessor_config.json").is_file():
        raise ValueError(f"No preprocessor_config.json in {str(path)!r}: expected a local folder with {files}.")


def check_clip_folder(path: str | Path) -> None:
    """A local CLIPModel folder (what `save_pretrained` of the model, tokenizer and image
    processor writes), or a ValueError naming the path and what it should hold."""
    path = Path(path)
    model_type = _config(path, "CLIP model", CLIP_FILES).get("model_type")
    if model_type != "clip":
        raise ValueError(
            f"{str(path)!r} holds a {model_type!r} model; ditlens needs a CLIPModel (model_type 'clip') here."
        )
    _check_processor(path, CLIP_FILES)


def check_segmenter_folder(path: str | Path) -> None:
    """A local transformers semantic-segmentation folder with labelled classes, or a ValueError."""
    path = Path(path)
    config = _config(path, "segmentation model", SEGMENTER_FILES)
    architectures = config.get("architectures") or []
    if not any("SemanticSegmentation" in a or a.startswith("UperNet") for a in architectures):
        raise ValueError(
            f"{str(path)!r} holds {architectures or 'no architectures'}; --segmenter needs a semantic-segmentation "
            "model (an AutoModelForSemanticSegmentation class such as SegformerForSemanticSegmentation)."
        )
    _check_processor(path, SEGMENTER_FILES)


def load_local(path: Path, what: str, files: str, *classes: Any) -> list[Any]:
    """`cls.from_pretrained(path, local_files_only=True)` for each of `classes` (a model and
    its tokenizer or processor), or a ValueError naming the folder and what it should hold."""
    try:
        return [cls.from_pretrained(path, local_files_only=True) for cls in classes]
    except (OSError, ValueError) as error:
        raise ValueError(f"Cannot load {what} from {str(path)!r} ({error}); expected {files}.") from error
