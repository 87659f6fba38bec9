"""Loading pipelines: the built-in model by default, any supported diffusers pipeline by path or id.

Offline by default: a hub id is only fetched when the caller allows downloads; otherwise it
must be in the local Hugging Face cache.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .adapters import Adapter, UnsupportedModelError, adapter_class, adapter_for

BUILTIN = "builtin"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")  # torch.load: a pickle, which can run code
SAFETENSORS_ONLY = (
    "ditlens loads only .safetensors weights (pickle weights such as .bin can run code when loaded). "
    "Convert them once where you trust the files: "
    "DiffusionPipeline.from_pretrained(folder).save_pretrained(new_folder) "
    "writes .safetensors."
)


def parse_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"Unknown dtype {name!r}. Allowed: {', '.join(DTYPES)}.")
    return DTYPES[name]


def check_device(device: str) -> str:
    try:
        torch.device(device)
    except RuntimeError:
        raise ValueError(f"Unknown device {device!r}. Examples: cpu, cuda, cuda:1, mps.") from None
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"Device {device!r} was asked for, but this torch build sees no CUDA GPU. Use --device cpu.")
    return device


def _skipped_components(model_index: Path, without_text_encoders: bool) -> dict[str, None]:
    """Components to pass as None: those saved as null, and text encoders when asked."""

    index = json.loads(model_index.read_text())
    skipped: dict[str, None] = {}
    for name, value in index.items():
        if name.startswith("_") or not isinstance(value, list):
            continue
        if value == [None, None] or (without_text_encoders and name.startswith(("text_encoder", "tokenizer"))):
            skipped[name] = None
    return skipped


def _check_safetensors(folder: Path, model_index: Path, skipped: dict[str, None]) -> None:
    """Refuse a component folder with pickle weights and no .safetensors ones, before loading anything.

    diffusers, asked for use_safetensors=True, would stop only at that component, with an
    OSError about a missing file name."""

    for name, value in json.loads(model_index.read_text()).items():
        component = folder / name
        if name.startswith("_") or name in skipped or not isinstance(value, list) or not component.is_dir():
            continue
        files = [p.name for p in component.iterdir() if p.is_file()]
        pickles = sorted(f for f in files if f.endswith(PICKLE_SUFFIXES))
        if pickles and not any(f.endswith(".safetensors") for f in files):
            raise ValueError(
                f"Model folder {str(folder)!r}: component {name!r} has only pickle weights ({', '.join(pickles)}). "
                f"{SAFETENSORS_ONLY}"
            )


def model_adapter(model: str | None) -> type[Adapter] | None:
    """The adapter class `model` will get, read from its model_index.json before any weight
    loads (in well under a second): unsupported pipelines and transformers are refused
    here, not after minutes of loading. None where that cannot be told without loading (a
    hub id not in the local cache: `load_pipeline` checks it once loaded)."""
    if is_builtin(model):  # its transformer is a FluxTransformer2DModel
        return adapter_class(["FluxTransformer2DModel"], "BuiltinPipeline")
    index = model_index(model)
    if index is None:
        return None
    pipeline_class = index.get("_class_name")
    component = index.get("transformer")
    if not isinstance(component, list) or len(component) != 2 or component[1] is None:
        denoiser = "a UNet" if isinstance(index.get("unet"), list) else "no transformer"
        raise UnsupportedModelError(
            f"Model {model!r} ({pipeline_class}) has {denoiser}: ditlens reads diffusion transformers. "
            f"Supported transformer classes: {', '.join(_supported())}."
        )
    return adapter_class(_class_and_bases(component), pipeline_class)


def is_builtin(model: str | None) -> bool:
    """The shipped built-in model: what `model` None (every default), "" or "builtin" names."""
    return model in (None, "", BUILTIN)


def is_builtin_family(model: str | None) -> bool:
    """The shipped built-in model, or a folder of a model of its family (what
    `python -m ditlens.builtin.train` writes): same vocabulary, scenes and scores."""
    if model is None or is_builtin(model):
        return True
    folder = Path(model)
    return (folder / "model_index.json").is_file() and (model_index(model) or {}).get(
        "_class_name"
    ) == "BuiltinPipeline"


def builtin_world(model: str | None) -> str | None:
    """The procedural world (`ditlens.builtin.text_encoder.WORLDS`) whose grammar a built-in-family
    model's prompts follow, read from its model_index.json: "v1" for the shipped model and for
    folders written before worlds existed; None for any other model."""
    if not is_builtin_family(model):
        return None
    if model is None or is_builtin(model):
        return "v1"
    world = (model_index(model) or {}).get("world")
    encoder = Path(model) / "text_encoder" / "config.json"
    if world is None and encoder.is_file():  # as bench.check_model_folder reads it
        try:
            world = json.loads(encoder.read_text()).get("world")
        except ValueError:
            world = None
    return world or "v1"


def model_index(model: str | None) -> dict | None:
    """`model`'s model_index.json (pipeline class and component classes), read without
    loading anything; None for the built-in model and for a hub id not in the local cache."""
    if model is None or is_builtin(model):
        return None
    index_path = Path(model) / "model_index.json"
    if not index_path.is_file():
        cached = _cached_model_index(model)
        if cached is None:
            return None
        index_path = cached
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(
            f"Cannot read {str(index_path)!r} ({err}); is {model!r} a diffusers pipeline folder?"
        ) from None
    if not isinstance(index, dict) or not isinstance(index.get("_class_name"), str):
        raise ValueError(
            f"{str(index_path)!r} is no diffusers pipeline index: it must be a JSON object naming the pipeline "
            f'("_class_name") and its components; it holds {shorten_json(index)}.'
        )
    return index


def shorten_json(value: Any, limit: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def scheduler_class(model: str | None) -> list[str] | None:
    """Names of `model`'s scheduler class and its bases, from its index (None: unknown)."""
    if is_builtin(model):
        return ["FlowMatchEulerDiscreteScheduler"]
    index = model_index(model)
    component = None if index is None else index.get("scheduler")
    if not isinstance(component, list) or len(component) != 2 or component[1] is None:
        return None
    return _class_and_bases(component)


def _supported() -> list[str]:
    from .adapters import supported_classes

    return supported_classes()


def _class_and_bases(component: list) -> list[str]:
    """Names of a model_index component's class and its bases, where its library defines it."""
    library, name = component
    import importlib

    try:
        cls = getattr(importlib.import_module(library), name)
    except (ImportError, AttributeError):  # a class of a custom library: known by its own name only
        return [name]
    return [c.__name__ for c in cls.__mro__]


def _cached_model_index(model: str) -> Path | None:
    """model_index.json of a hub id, where it is in the local Hugging Face cache."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model, "model_index.json")
    except Exception:  # not a repo id at all, or no cache
        return None
    return Path(found) if isinstance(found, str) else None


def load_pipeline(
    model: str | None = None,
    *,
    dtype: str = "float32",
    device: str = "cpu",
    allow_download: bool = False,
    cpu_offload: bool = False,
    without_text_encoders: bool = False,
) -> Any:
    """The pipeline for `model`: None or "builtin" (the shipped model), a local diffusers
    folder (with model_index.json), or a hub id (from the cache; downloaded only if allowed).

    without_text_encoders: skip loading text encoders and tokenizers (the caller passes
    precomputed prompt embeddings), which saves their memory and load time."""
    torch_dtype = parse_dtype(dtype)
    check_device(device)
    folder = None if model is None or is_builtin(model) else Path(model)
    if folder is not None and folder.exists() and not (folder / "model_index.json").is_file():
        raise ValueError(
            f"{model!r} is not a diffusers pipeline folder (no model_index.json in it). "
            "Give a folder written by save_pretrained, a hub id, or leave --model out for the built-in model."
        )
    model_adapter(model)  # refuse an unsupported model before any weight loads
    if model is None or is_builtin_family(model):
        from .builtin import load_builtin

        return load_builtin(device=device, dtype=torch_dtype, weights=None if is_builtin(model) else model)

    from diffusers import DiffusionPipeline

    path = Path(model)
    if path.exists():
        skipped = _skipped_components(path / "model_index.json", without_text_encoders)
        _check_safetensors(path, path / "model_index.json", skipped)
        pipe = DiffusionPipeline.from_pretrained(
            str(path), dtype=torch_dtype, local_files_only=True, use_safetensors=True, **skipped
        )
    else:
        try:
            pipe = DiffusionPipeline.from_pretrained(
                model, dtype=torch_dtype, local_files_only=not allow_download, use_safetensors=True
            )
        except Exception as err:  # diffusers raises several types for a missing model
            if "safetensors" in str(err):  # diffusers: "Could not find the necessary `safetensors` weights in ..."
                raise ValueError(f"Model {model!r} has no .safetensors weights. {SAFETENSORS_ONLY}") from None
            hint = (
                ""
                if allow_download
                else " It is not in the local Hugging Face cache; pass --allow-download to fetch it."
            )
            raise ValueError(
                f"Cannot load model {model!r}: no such local folder, and loading it as a hub id failed "
                f"({type(err).__name__}).{hint}"
            ) from None
    adapter_for(pipe)  # fail early, listing the supported classes
    if cpu_offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    return pipe
