"""What the built-in bench draws from the model's world: held-out prompts and pairs, render
seeds, the subject's words, background groups, and which modules render and score them.

A built-in-family pipeline names its world (`pipe.world`, "v1" or "v2"). The world picks the
grammar (`scenes.py` or `scenes_v2.py`), the renders and their exact masks, the foreground
truth of generated images and the attribute classifier (`metrics/fidelity.py` or
`metrics/fidelity_v2.py`). Prompts, pairs and seeds start at BENCH_SEED: disjoint from the
demo's, and every caption is held out of training.
"""

from __future__ import annotations

from dataclasses import replace
from types import ModuleType
from typing import Any

import numpy as np
import torch

from ..builtin import scenes as scenes_v1
from ..metrics.classifier import TRAIN_COMMAND_V2, load_classifier

BENCH_SEED = 1234  # held-out prompts and generation seeds start here (the demo uses 0..)


def world_of(pipe: Any) -> ModuleType:
    """The scenes module of the pipeline's world (`pipe.world`; pipelines without one: v1)."""
    from ..builtin.text_encoder import scenes_of

    return scenes_of(getattr(pipe, "world", "v1"))


def metrics_of(world: ModuleType) -> ModuleType:
    """The world's scoring module: renders, their exact masks, the foreground truth of
    generated images, fidelity and transport scores (the same functions in both)."""
    if world is scenes_v1:
        from ..metrics import fidelity

        return fidelity
    from ..metrics import fidelity_v2

    return fidelity_v2


def render_seeds(n: int) -> list[int]:
    """The seeds of the held-out prompts' renders (world v2 draws a layout per seed; v1 ignores them)."""
    return [BENCH_SEED + i for i in range(n)]


def held_out_prompts(
    n: int, n_objects: int | None = None, seed: int = BENCH_SEED, world: ModuleType = scenes_v1
) -> list[str]:
    """n captions of the world's held-out split (never seen in training)."""
    return world.sample_batch(n, seed, split="heldout", n_objects=n_objects).captions


def subject_positions(prompt: str, world: ModuleType = scenes_v1) -> list[int]:
    """Text-token positions of the object words (size, texture in v2, colour, shape) in the
    built-in tokenisation `[CLS] w_1 ... w_n`: word i sits at position i + 1. Only words
    before the background phrase (`on a ... background`) count: v2's background has a
    texture word too."""
    words = prompt.split()
    end = max((i for i in range(len(words) - 1) if words[i : i + 2] == ["on", "a"]), default=len(words))
    subject = {*world.SIZES, *getattr(world, "TEXTURES", ()), *world.COLOURS, *world.SHAPES}
    return [i + 1 for i, w in enumerate(words[:end]) if w in subject]


def background_groups(prompts: list[str], world: ModuleType = scenes_v1) -> dict[str, list[int]]:
    """Prompt indices: all, and by background. v1: one colour, or split in two (which gives
    K = 2 a competing split: left against right). v2: plain, or textured (a pattern that
    K = 2 may split instead of the objects)."""
    scenes = [world.parse_caption(p) for p in prompts]
    if world is scenes_v1:
        single = [i for i, scene in enumerate(scenes) if len(scene.background) == 1]
        split = [i for i in range(len(prompts)) if i not in single]
        return {"all images": list(range(len(prompts))), "one-colour backgrounds": single, "split backgrounds": split}
    plain = [i for i, scene in enumerate(scenes) if scene.background_texture == "plain"]
    return {
        "all images": list(range(len(prompts))),
        "plain backgrounds": plain,
        "textured backgrounds": [i for i in range(len(prompts)) if i not in plain],
    }


def transport_pairs(
    n: int, seed: int = BENCH_SEED, second_object: bool = False, world: ModuleType = scenes_v1
) -> list[tuple[str, str]]:
    """(source, target) captions: one source object; the target's first object at the same
    position and size with another shape AND colour (world v2: and texture), each caption
    with its own background. second_object: the target also has a second object elsewhere
    (another position, shape and colour, v2: texture, than its first, both at least
    MIN_VISIBLE visible), which transport should leave alone. Both captions are held out of
    training."""
    rng = np.random.default_rng(seed)
    draw = _SceneDraw(world)
    pairs: list[tuple[str, str]] = []
    while len(pairs) < n:
        source, target = draw.pair(rng, second_object)
        if second_object and not draw.all_visible(target):
            continue
        if world.is_heldout(source) and world.is_heldout(target):  # 1 draw in 100: cheap rejection sampling
            pairs.append((world.caption(source), world.caption(target)))
    return pairs


def perfect_transfers(pairs: list[tuple[str, str]], world: ModuleType = scenes_v1) -> tuple[torch.Tensor, torch.Tensor]:
    """Transport's oracle on `pairs`: each target caption's render, and the same render with
    the source's object (its shape, colour and, v2, texture) drawn in place of the target's
    first object, at the same place, size and (v2) rotation: what a transfer that keeps the
    target's composition exactly would give. (targets, transfers), each (n, 3, H, W) in
    [0, 1]; v2 draws the layouts of render_seeds(n), v1 has one layout per caption."""
    targets, transfers = [], []
    for (source, target), seed in zip(pairs, render_seeds(len(pairs))):
        moved, scene = world.parse_caption(source).objects[0], world.parse_caption(target)
        attributes = {"shape": moved.shape, "colour": moved.colour}
        if hasattr(world, "TEXTURES"):
            attributes["texture"] = moved.texture
        swapped = replace(scene, objects=(replace(scene.objects[0], **attributes), *scene.objects[1:]))
        if hasattr(world, "draw"):  # v2: the target's layout, redrawn
            drawn = world.render(scene, seed)
            pair = (drawn, world.draw(swapped, drawn.layout))
        else:  # v1: a caption fixes its layout
            pair = (world.render(scene), world.render(swapped))
        targets.append(pair[0].image)
        transfers.append(pair[1].image)
    as_tensor = lambda images: torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255  # noqa: E731
    return as_tensor(targets), as_tensor(transfers)


class _SceneDraw:
    """One world's scenes drawn by index, for `transport_pairs`."""

    def __init__(self, world: ModuleType) -> None:
        self.world = world
        self.textures = getattr(world, "TEXTURES", None)  # v1 has none

    def thing(self, shape: int, colour: int, texture: int, size: str, position: str) -> Any:
        w = self.world
        extra = {"texture": self.textures[texture]} if self.textures else {}
        return w.SceneObject(shape=w.SHAPES[shape], colour=w.COLOURS[colour], size=size, position=position, **extra)

    def scene(self, objects: list[Any], background: int, texture: int) -> Any:
        if self.textures:
            return self.world.Scene(tuple(objects), self.world.BACKGROUNDS[background], self.textures[texture])
        return self.world.Scene(tuple(objects), (self.world.BACKGROUNDS[background],))

    def pair(self, rng: np.random.Generator, second_object: bool) -> tuple[Any, Any]:
        """A (source, target) scene pair, drawn from rng. v1 draws exactly these, in this order
        (its bench pairs stay what they were); v2 adds its textures after them."""
        w = self.world
        positions, sizes = w.POSITIONS, w.SIZES
        pos, size = positions[rng.integers(len(positions))], sizes[rng.integers(len(sizes))]
        s_shape, t_shape, o_shape = (int(i) for i in rng.choice(len(w.SHAPES), 3, replace=False))
        s_col, t_col, o_col = (int(i) for i in rng.choice(len(w.COLOURS), 3, replace=False))
        s_bg, t_bg = int(rng.integers(len(w.BACKGROUNDS))), int(rng.integers(len(w.BACKGROUNDS)))
        s_tex = t_tex = o_tex = s_bt = t_bt = 0
        if self.textures:
            s_tex, t_tex, o_tex = (int(i) for i in rng.choice(len(self.textures), 3, replace=False))
            s_bt, t_bt = int(rng.integers(len(self.textures))), int(rng.integers(len(self.textures)))
        source = self.scene([self.thing(s_shape, s_col, s_tex, size, pos)], s_bg, s_bt)
        objects = [self.thing(t_shape, t_col, t_tex, size, pos)]
        if second_object:
            other = [q for q in positions if q != pos][rng.integers(len(positions) - 1)]
            objects.append(self.thing(o_shape, o_col, o_tex, sizes[rng.integers(len(sizes))], other))
        return source, self.scene(objects, t_bg, t_bt)

    def all_visible(self, scene: Any) -> bool:
        """Every object of the scene shows at least MIN_VISIBLE of itself (v2 renders a layout per seed: seed 0)."""
        w = self.world
        rendered = w.render(scene) if w is scenes_v1 else w.render(scene, 0)
        return bool(rendered.visible.min() >= w.MIN_VISIBLE)


def classifier_for(pipe: Any, classifier: Any) -> Any:
    """The classifier a bench scores with: the given one, which must read the pipeline's world,
    else the world's default (the shipped one for v1; None for v2: given, never assumed)."""
    from ..metrics.classifier import AttributeClassifierV2

    world = getattr(pipe, "world", "v1")
    if classifier is None:
        return load_classifier(None, world)
    found = "v2" if isinstance(classifier, AttributeClassifierV2) else "v1"
    if found != world:
        raise ValueError(
            f"The classifier is for world {found}, but the model is of world {world}; give a world {world} classifier."
        )
    return classifier


def needs_classifier(what: str) -> str:
    """A "Not measured" entry: `what` needs a world v2 attribute classifier, and how to get one."""
    return (
        f"{what}: they need a world v2 attribute classifier (--classifier FOLDER, a folder written by "
        f"`{TRAIN_COMMAND_V2}`)"
    )
