"""What every item's result depends on besides its own prompt, seed and settings: the content
of the model's files, the ditlens version, the dtype, the device type, the embeddings file and
the generation settings. It goes into every item's id, so a result is never kept for another
model; and when it changes, `why_changed` says what changed, in words."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from .config import ModelOptions, SweepConfig
from .hashes import FileHashes

# Part of every item's hash: bump when an item's outputs change meaning. 2: the hash covers
# the model's weights and the ditlens version (format 1 hashed the model's name only).
FORMAT_VERSION = 2
# The files of a model folder that make its results: weights, configs (model_index, each
# component's, the scheduler's) and tokenizer vocabularies (merges.txt, spiece.model). Not
# pickle weights (ditlens loads .safetensors only), docs or images.
MODEL_FILES = (".safetensors", ".json", ".txt", ".model")
# The built-in model's shipped files: model/ (builtin.pipeline.DEFAULT_WEIGHTS) and classifier/
# (metrics.classifier.DEFAULT_WEIGHTS), named here so that a plan does not import diffusers.
BUILTIN_WEIGHTS = Path(__file__).parents[1] / "builtin" / "weights"


@dataclass(frozen=True)
class Fingerprint:
    """The content of a model's files, as a sweep read them."""

    sha256: str  # over the sorted (name, SHA-256) pairs of `files`: part of every item's id
    files: dict[str, str]  # name (relative to its folder; `model/`, `classifier/` for the built-in) -> SHA-256


def _model_folders(model: ModelOptions) -> dict[str, Path]:
    """Where the files that make `model`'s results are, by the prefix their names get."""
    if model.is_builtin:
        return {"model/": BUILTIN_WEIGHTS / "model", "classifier/": BUILTIN_WEIGHTS / "classifier"}
    if model.folder is not None:
        return {"": model.folder}
    from huggingface_hub import snapshot_download

    try:  # the snapshot load_pipeline loaded: the cached revision of the default branch
        return {"": Path(snapshot_download(model.name, local_files_only=True))}
    except Exception:  # not a repo id, or not in the cache (several types)
        raise ValueError(
            f"Model {model.name!r} is neither a local folder nor in the local Hugging Face cache, so its "
            "weights cannot be fingerprinted for the items' ids; run the sweep with --allow-download "
            "(or allow_download = true) to fetch it."
        ) from None


def model_fingerprint(model: ModelOptions, hashes: FileHashes | None = None) -> Fingerprint:
    """A content hash of the files that make `model`'s results, part of every item's id: an
    item changes when the weights change in place (retrained into the same folder, a new hub
    revision), not only when the model's name does, so a resume never keeps a result of
    other weights.

    Covers, in the model's folder (the built-in model's shipped folder, a local diffusers
    folder, or a hub id's snapshot in the local Hugging Face cache), every file ending in
    MODEL_FILES: the .safetensors weights, the configs, the tokenizer files. Leaves out hidden
    files (download metadata that changes by itself) and, with model.embeds, the text encoders
    and tokenizers, which are not loaded (the embeddings file's own hash stands in for them).
    For the built-in model it also covers the attribute classifier, whose scores are part of
    its disrupt and transport results. Files are read through `hashes` (once per change)."""
    hashes = hashes or FileHashes()
    folders = _model_folders(model)
    files = {}
    for prefix, folder in folders.items():
        for file in sorted(folder.rglob("*")):
            name = file.relative_to(folder).as_posix()
            hidden = any(part.startswith(".") for part in name.split("/"))
            if not file.is_file() or not name.endswith(MODEL_FILES) or hidden:
                continue
            if model.embeds is not None and name.startswith(("text_encoder", "tokenizer")):
                continue
            files[prefix + name] = hashes(file)
    if not files:
        raise ValueError(
            f"Model {model.name!r}: no model files ({', '.join(MODEL_FILES)}) in "
            f"{', '.join(str(f) for f in folders.values())}."
        )
    lines = "".join(f"{name}\0{sha}\n" for name, sha in sorted(files.items()))
    return Fingerprint(hashlib.sha256(lines.encode()).hexdigest(), files)


def _folder_sha256(folder: Path, hashes: FileHashes) -> str:
    """A content hash of a scorer's folder (its MODEL_FILES), as the model's weights are hashed."""
    files = sorted(f for f in folder.rglob("*") if f.is_file() and f.name.endswith(MODEL_FILES))
    lines = "".join(f"{f.relative_to(folder).as_posix()}\0{hashes(f)}\n" for f in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def identity_of(config: SweepConfig, fingerprint: Fingerprint, hashes: FileHashes | None = None) -> dict[str, Any]:
    """What every item's result depends on besides its own prompt, seed and settings.
    The device *type* only: cuda:0 and cuda:1 give the same images, so shards may move.
    The torch and diffusers versions are not in it (an upgrade would redo every item of a long
    study); the manifest records them (`versions`)."""
    hashes = hashes or FileHashes()
    m = config.model
    found = {
        "format": FORMAT_VERSION,
        "ditlens": __version__,
        "model": m.name,
        "weights": fingerprint.sha256,
        "dtype": m.dtype,
        "device": torch.device(m.device).type if m.device else "cpu",
        "embeds_sha256": hashes(m.embeds) if m.embeds else None,
        "generation": {k: config.generation[k] for k in sorted(config.generation)},
    }
    if config.clip:  # without a scorer the key is absent: ids as before scorers were hashed
        found["clip"] = _folder_sha256(config.clip, hashes)
    return found


def versions() -> dict[str, str]:
    """Recorded in the manifest, not part of the items' ids (see `identity_of`)."""
    import diffusers

    return {"ditlens": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__}


def why_changed(
    before: dict[str, Any], now: dict[str, Any], files_before: dict[str, str], files_now: dict[str, str]
) -> str:
    """What changed between two identities, in words: 'the model's weights changed (vae/...)'."""
    parts = []
    for key in sorted(set(before) | set(now)):
        old, new = before.get(key), now.get(key)
        if old == new:
            continue
        if key == "weights":
            changed = sorted(n for n in set(files_before) | set(files_now) if files_before.get(n) != files_now.get(n))
            named = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
            parts.append("the model's weights changed" + (f" ({named})" if named else ""))
        elif key == "embeds_sha256":
            parts.append("the embeddings file (model.embeds) changed")
        elif key == "ditlens":
            parts.append(f"ditlens changed ({old} -> {new})")
        elif key == "generation":
            parts.append(f"the generation settings changed ({old} -> {new})")
        else:
            parts.append(f"model.{key} changed ({old!r} -> {new!r})")
    return ", ".join(parts)
