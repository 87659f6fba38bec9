"""World v2's layouts: the continuous draws of an image (where each object lies, how large
and turned it is, how its texture and shading fall), from its seed.

`Layout` is one image's, per object; `Geometry` a batch's, as arrays (k, MAX) per object
field and (k,) per background field, the form the renderer works on.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from .batches import ArrayRows
from .seeded import hash_keys, uniform
from .v2_spec import (
    BACKGROUND_PERIOD,
    CELL_CENTRES,
    CELL_JITTER,
    MAX_ROTATION,
    OBJECT_PERIOD,
    POSITIONS,
    RADIUS_PX,
    SHADE_RANGE,
    SIZES,
    Codes,
)


@dataclass(frozen=True, eq=False)  # arrays: compare fields with np.array_equal
class Layout:
    """The continuous draws of one image, per object (arrays of shape (n_obj,)) and for the
    background (floats). `draw(scene, layout)` renders exactly these; `render(scene, seed)`
    draws them from the seed first."""

    x: np.ndarray  # object centre, px from the left edge
    y: np.ndarray  # object centre, px from the top edge
    radius: np.ndarray  # px
    angle: np.ndarray  # rotation, radians (clockwise on screen)
    period: np.ndarray  # texture period (px); the noise cell for mottled
    texture_angle: np.ndarray  # texture orientation relative to the object, radians
    phase_x: np.ndarray  # texture phase, in periods
    phase_y: np.ndarray
    key: np.ndarray  # int64 noise key (mottled)
    light_angle: np.ndarray  # direction the soft light comes from, radians
    shade: np.ndarray  # share of the band the shading takes at the far side
    background_period: float
    background_angle: float
    background_phase_x: float
    background_phase_y: float
    background_key: int
    attempt: int = 0  # which placement of the seed met MIN_VISIBLE (render) or was taken

    def __post_init__(self) -> None:
        for f in OBJECT_FIELDS:
            object.__setattr__(self, f, np.asarray(getattr(self, f), np.int64 if f == "key" else np.float64))


OBJECT_FIELDS = (
    "x",
    "y",
    "radius",
    "angle",
    "period",
    "texture_angle",
    "phase_x",
    "phase_y",
    "key",
    "light_angle",
    "shade",
)
BACKGROUND_FIELDS = (
    "background_period",
    "background_angle",
    "background_phase_x",
    "background_phase_y",
    "background_key",
)


@dataclass(frozen=True)
class Geometry(ArrayRows):
    """Layouts of a batch: object fields (k, MAX), background fields (k,)."""

    x: np.ndarray
    y: np.ndarray
    radius: np.ndarray
    angle: np.ndarray
    period: np.ndarray
    texture_angle: np.ndarray
    phase_x: np.ndarray
    phase_y: np.ndarray
    key: np.ndarray
    light_angle: np.ndarray
    shade: np.ndarray
    background_period: np.ndarray
    background_angle: np.ndarray
    background_phase_x: np.ndarray
    background_phase_y: np.ndarray
    background_key: np.ndarray
    attempt: np.ndarray  # (k,)

    def layout(self, i: int, n: int) -> Layout:
        return Layout(
            **{f: getattr(self, f)[i, :n].copy() for f in OBJECT_FIELDS},
            **{f: getattr(self, f)[i].item() for f in BACKGROUND_FIELDS},
            attempt=int(self.attempt[i]),
        )

    def with_rows(self, index: np.ndarray, part: Geometry) -> Geometry:
        """A copy whose rows `index` are `part`'s."""
        out = {}
        for f in fields(Geometry):
            a = getattr(self, f.name).copy()
            a[index] = getattr(part, f.name)
            out[f.name] = a
        return Geometry(**out)

    @staticmethod
    def from_layouts(layouts: list[Layout]) -> Geometry:
        m = max([len(lay.x) for lay in layouts] + [1])

        def pad(a: np.ndarray) -> np.ndarray:
            return np.pad(a, (0, m - len(a)), constant_values=1)  # 1: a harmless radius for empty slots

        return Geometry(
            **{f: np.stack([pad(getattr(lay, f)) for lay in layouts]) for f in OBJECT_FIELDS},
            **{f: np.array([getattr(lay, f) for lay in layouts]) for f in BACKGROUND_FIELDS},
            attempt=np.array([lay.attempt for lay in layouts], np.int64),
        )


def _between(u: np.ndarray, lo: np.ndarray | float, hi: np.ndarray | float) -> np.ndarray:
    return lo + u * (np.asarray(hi) - lo)


_RADIUS_LO = np.array([RADIUS_PX[s][0] for s in SIZES])
_RADIUS_HI = np.array([RADIUS_PX[s][1] for s in SIZES])
_CELL_X = np.array([CELL_CENTRES[i % 3] for i in range(len(POSITIONS))])
_CELL_Y = np.array([CELL_CENTRES[i // 3] for i in range(len(POSITIONS))])


def geometry(codes: Codes, seeds: np.ndarray, attempt: np.ndarray) -> Geometry:
    """Draws of each image from (its seed, attempt, object slot, field): (k, MAX) per field."""
    k, m = codes.shape.shape
    s, a = seeds[:, None], attempt[:, None]
    slot = np.arange(m)[None, :]

    def u(field: int) -> np.ndarray:  # (k, MAX)
        return uniform(s, a, slot, field).reshape(k, m)

    def ub(field: int) -> np.ndarray:  # (k,): the background uses slot -1
        return uniform(seeds, attempt, -1, field).reshape(k)

    radius = _between(u(2), _RADIUS_LO[codes.size], _RADIUS_HI[codes.size])
    return Geometry(
        x=_CELL_X[codes.position] + _between(u(0), -CELL_JITTER, CELL_JITTER),
        y=_CELL_Y[codes.position] + _between(u(1), -CELL_JITTER, CELL_JITTER),
        radius=radius,
        angle=_between(u(3), -MAX_ROTATION, MAX_ROTATION),
        period=_between(u(4), *OBJECT_PERIOD) * radius,
        texture_angle=_between(u(5), 0, np.pi),
        phase_x=u(6),
        phase_y=u(7),
        key=hash_keys(s, a, slot, 8).reshape(k, m).view(np.int64),
        light_angle=_between(u(9), 0, 2 * np.pi),
        shade=_between(u(10), *SHADE_RANGE),
        background_period=_between(ub(0), *BACKGROUND_PERIOD),
        background_angle=_between(ub(1), 0, np.pi),
        background_phase_x=ub(2),
        background_phase_y=ub(3),
        background_key=hash_keys(seeds, attempt, -1, 4).view(np.int64),
        attempt=attempt.copy(),
    )
