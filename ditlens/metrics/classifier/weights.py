"""Where the attribute classifiers' weights live, and how a weights folder is written and
read back: `config.json` (the classifier's config, its vocabulary included) beside
`model.safetensors`. A folder trained for another vocabulary fails loudly on load instead
of mislabelling."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from safetensors.torch import load_file, save_file
from torch import nn

_WEIGHTS = Path(__file__).resolve().parents[2] / "builtin" / "weights"
DEFAULT_WEIGHTS = _WEIGHTS / "classifier"  # the shipped world v1 classifier
# the shipped world v2 classifier (docs/world-v2.md): used only when asked for, `--classifier shipped`
SHIPPED_V2 = _WEIGHTS / "classifier-v2"
TRAIN_COMMAND = "python -m ditlens.metrics.classifier --train"
TRAIN_COMMAND_V2 = "python -m ditlens.metrics.classifier --train --world v2 --out FOLDER"


def check_folder(path: Path, how_to_train: str) -> None:
    """A FileNotFoundError unless `path` holds config.json and model.safetensors."""
    if not ((path / "config.json").is_file() and (path / "model.safetensors").is_file()):
        raise FileNotFoundError(
            f"No classifier at {path} (needs config.json and model.safetensors); train one with {how_to_train}"
        )


def read_config(path: Path, train_command: str) -> dict[str, Any]:
    """The config.json of the classifier folder at `path`."""
    check_folder(path, f"`{train_command}`")
    return json.loads((path / "config.json").read_text())


def check_vocabulary(
    path: Path, config: Any, expected: Any, names: tuple[str, ...], world_module: str, train_command: str
) -> None:
    """Each vocabulary field in `names` of the folder's `config` is the world's (`expected`)."""
    for name in names:
        if getattr(config, name) != getattr(expected, name):
            raise ValueError(
                f"Classifier at {path} was trained for {name} {getattr(config, name)}, but "
                f"{world_module} has {getattr(expected, name)}; retrain with `{train_command}`"
            )


Model = TypeVar("Model", bound=nn.Module)


def load_model(cls: Callable[[Any], Model], config: Any, path: Path) -> Model:
    """`cls(config)` with the weights of the folder `path`, in eval mode."""
    model = cls(config)
    model.load_state_dict(load_file(path / "model.safetensors"))
    return model.eval()


def save_folder(model: nn.Module, config: Any, path: str | Path) -> None:
    """Write `model`'s weights and its (dataclass) `config` to the folder `path`."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, path / "model.safetensors")
    (path / "config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
