"""World v2's shapes: the point-sampled test of each shape in an object's own frame, and the
footprints of a batch's objects, from which the labels (the top-most object per pixel) and
each object's visible share follow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .v2_layout import Geometry
from .v2_spec import IMAGE_SIZE, RADIUS_PX, SHAPES, Codes

# Shapes reach at most SHAPE_EXTENT radii from their centre (a rotated square's corner:
# 0.8 * sqrt(2)); footprints are computed in a WINDOW x WINDOW box around the centre, which
# holds any shape of radius <= max RADIUS_PX (tested).
SHAPE_EXTENT = 1.15
WINDOW = 2 * int(np.ceil(SHAPE_EXTENT * max(hi for _, hi in RADIUS_PX.values()) + 2))


def in_shape(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Shape test in the object's frame: u right, v down, in radii (the shape spans ~[-1, 1])."""
    name = SHAPES[shape]
    if name == "circle":
        return u * u + v * v <= 1
    if name == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8
    if name == "triangle":  # equilateral, apex up, circumradius 1 around its centroid
        return (v <= 0.5) & (np.abs(u) <= 0.57735 * (v + 1))
    if name == "diamond":  # a tall rhombus: never a rotated square
        return np.abs(u) / 0.62 + np.abs(v) <= 1
    if name == "cross":
        return (np.minimum(np.abs(u), np.abs(v)) <= 0.3) & (np.maximum(np.abs(u), np.abs(v)) <= 0.95)
    if name == "star":  # 5 points, one up; inner radius 0.45
        rho = np.sqrt(u * u + v * v)
        phi = np.arctan2(u, -v)  # from straight up
        sector = 2 * np.pi / 5
        f = np.abs(np.mod(phi + sector / 2, sector) - sector / 2)
        qx, qy = rho * np.cos(f), rho * np.sin(f)
        bx, by = 0.45 * np.cos(sector / 2), 0.45 * np.sin(sector / 2)
        return (bx - 1) * qy - by * (qx - 1) >= 0  # on the centre's side of the edge (1, 0)-(bx, by)
    if name == "ring":
        r2 = u * u + v * v
        return (r2 <= 1) & (r2 >= 0.55**2)
    if name == "heart":
        x, y = u * 1.15, 0.15 - v * 1.15
        return (x * x + y * y - 1) ** 3 - x * x * y**3 <= 0
    raise AssertionError(name)


def _frame(
    geo: Geometry, image: np.ndarray, slot: np.ndarray, px: np.ndarray, py: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Object frame coordinates (u, v) in radii of the pixel centres (px, py), per object."""
    cos, sin = np.cos(geo.angle[image, slot]), np.sin(geo.angle[image, slot])
    r = geo.radius[image, slot]
    dx, dy = px - geo.x[image, slot], py - geo.y[image, slot]
    return (dx * cos + dy * sin) / r, (dy * cos - dx * sin) / r


@dataclass(frozen=True)
class Footprints:
    """The present objects of a batch, flattened (m objects), each with its footprint in a
    window of the canvas."""

    image: np.ndarray  # (m,) image index
    slot: np.ndarray  # (m,) slot in its scene
    rows: np.ndarray  # (m, WINDOW) canvas rows of the window
    cols: np.ndarray  # (m, WINDOW) canvas columns
    inside: np.ndarray  # (m, WINDOW, WINDOW) bool: the shape holds the pixel's centre

    @staticmethod
    def of(codes: Codes, geo: Geometry) -> Footprints:
        image, slot = np.nonzero(np.arange(codes.shape.shape[1])[None, :] < codes.n[:, None])
        offsets = np.arange(WINDOW)
        top = np.clip(np.floor(geo.y[image, slot]).astype(np.int64) - WINDOW // 2, 0, IMAGE_SIZE - WINDOW)
        left = np.clip(np.floor(geo.x[image, slot]).astype(np.int64) - WINDOW // 2, 0, IMAGE_SIZE - WINDOW)
        rows, cols = top[:, None] + offsets, left[:, None] + offsets  # (m, WINDOW)
        # float64: the shape test at a pixel centre must not depend on rounding (tested exactly)
        px = np.arange(IMAGE_SIZE) + 0.5
        u, v = _frame(geo, image[:, None, None], slot[:, None, None], px[cols][:, None, :], px[rows][:, :, None])
        shapes = codes.shape[image, slot]
        inside = np.zeros((len(image), WINDOW, WINDOW), bool)
        for h in np.unique(shapes):
            sel = np.flatnonzero(shapes == h)
            inside[sel] = in_shape(int(h), u[sel], v[sel])
        return Footprints(image, slot, rows, cols, inside)

    def _window(self, sel: np.ndarray) -> tuple[np.ndarray, ...]:
        """Index of the canvas windows of objects `sel`: (len(sel), WINDOW, WINDOW) each."""
        return self.image[sel, None, None], self.rows[sel, :, None], self.cols[sel, None, :]

    def labels(self, k: int) -> np.ndarray:
        """(k, H, W) int8: the top-most object's slot per pixel (later slots on top), -1 = background."""
        labels = np.full((k, IMAGE_SIZE, IMAGE_SIZE), -1, np.int8)
        for j in np.unique(self.slot):
            sel = np.flatnonzero(self.slot == j)  # at most one object of slot j per image
            at = self._window(sel)
            labels[at] = np.where(self.inside[sel], np.int8(j), labels[at])
        return labels

    def visible(self, codes: Codes, labels: np.ndarray) -> np.ndarray:
        """(k, MAX) share of each object's on-canvas footprint left visible; 1 for empty
        slots (0 for an object wholly off the canvas, which these cell ranges never give)."""
        out = np.ones(codes.shape.shape)
        area = self.inside.sum(axis=(1, 2))
        all_objects = np.arange(len(self.image))
        shown = (labels[self._window(all_objects)] == self.slot[:, None, None]).sum(axis=(1, 2))
        out[self.image, self.slot] = np.where(area > 0, shown / np.maximum(area, 1), 0.0)
        return out
