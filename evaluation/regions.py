"""Where things are in a shot: the pixels of each character and of the background.

CISC and VC compare *characters*, BISC compares *backgrounds* ("MAVIN", appendix C.3, eq.
S8: shot pairs annotated to share a character / a background). MAVIN feeds whole shots to
ViCLIP; we localise when we can, so that a character's feature is not dominated by the
room it stands in and a background's feature is not changed by who stands in front of it.

Localisation uses the benchmark's layout (the ``world`` truth of the *script*: where each
character is meant to stand, as a box on the shot's first frame), never anything about the
generated clip itself:

1. each character's box is widened by the drift a sprite can make over the shot (one pixel
   per three frames) plus one pixel;
2. the *backdrop colours* are the frequent colours (bins holding at least ``min_share``,
   each represented by its mean) of the shot's first frame outside the boxes, where the
   boxes are exact;
3. a character's mask is its widened box (pixels where two boxes overlap go to the nearer
   box centre) minus pixels within the tolerance of a backdrop colour: ``tol``, widened
   when needed so that ``coverage`` of the known background pixels fall within it (a noisy
   or blurred generated frame brings its own noise level; exact frames keep ``tol``);
4. the background mask is the wall: the top ``wall_fraction`` of rows outside every box
   (the synthetic scenes are a textured wall above a floor).

Without a layout (real data, no world truth) nothing is localised: a character's and a
background's feature is the whole shot's, as in the paper, and the runner says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

__all__ = [
    "ShotLayout",
    "ShotRegions",
    "colour_codes",
    "foreground_mask",
    "layouts_from_world",
    "locate",
    "near_colours",
    "palette_colours",
]

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive), pixels


@dataclass(frozen=True)
class ShotLayout:
    """Where the script's world puts each character in a shot (box on its first frame)."""

    shot_id: str
    boxes: dict[str, Box] = field(default_factory=dict)


@dataclass
class ShotRegions:
    """Masks (N, H, W) bool for the frames of one shot. ``localised`` is False when the
    masks are whole frames because no layout was known."""

    background: np.ndarray
    characters: dict[str, np.ndarray]
    localised: bool


def layouts_from_world(world: Mapping[str, Any] | None) -> dict[str, ShotLayout]:
    """Shot layouts from a manifest row's ``world`` dict (data/synth.py layout:
    ``world["shots"][i] = {"id", "chars": [{"id", "box": [x0, y0, x1, y1]}, ...]}``).
    Empty when the row has no usable world truth."""
    out: dict[str, ShotLayout] = {}
    if not isinstance(world, Mapping):
        return out
    for shot in world.get("shots") or []:
        if not isinstance(shot, Mapping) or not isinstance(shot.get("id"), str):
            continue
        boxes: dict[str, Box] = {}
        for ch in shot.get("chars") or []:
            box = ch.get("box") if isinstance(ch, Mapping) else None
            if isinstance(ch.get("id"), str) and isinstance(box, (list, tuple)) and len(box) == 4:
                x0, y0, x1, y1 = (int(v) for v in box)
                if x1 > x0 and y1 > y0:
                    boxes[ch["id"]] = (x0, y0, x1, y1)
        out[shot["id"]] = ShotLayout(shot["id"], boxes)
    return out


def colour_codes(pixels: np.ndarray, bins: int) -> np.ndarray:
    """Joint colour-bin index of uint8 RGB pixels (..., 3) with ``bins`` levels per channel."""
    q = pixels.astype(np.int32) * bins // 256
    return (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]


def palette_colours(pixels: np.ndarray, *, bins: int = 8, min_share: float = 0.05) -> np.ndarray:
    """The frequent colours of ``pixels`` (M, 3): the mean RGB of every colour bin holding at
    least ``min_share`` of them. (K, 3) float."""
    px = np.asarray(pixels).reshape(-1, 3)
    if px.size == 0:
        return np.zeros((0, 3))
    codes = colour_codes(px, bins)
    counts = np.bincount(codes, minlength=bins**3)
    keep = np.flatnonzero(counts >= min_share * len(px))
    return np.array([px[codes == b].astype(np.float64).mean(axis=0) for b in keep]).reshape(-1, 3)


def near_colours(frames: np.ndarray, colours: np.ndarray, tol: float) -> np.ndarray:
    """Pixels (..., 3) within ``tol`` (per channel) of any of ``colours`` (K, 3)."""
    out = np.zeros(frames.shape[:-1], dtype=bool)
    f = frames.astype(np.float64)
    for c in colours:
        out |= np.abs(f - c).max(axis=-1) <= tol
    return out


def locate(
    frames: np.ndarray,
    layout: ShotLayout | None,
    *,
    wall_fraction: float = 0.6,
    min_share: float = 0.02,
    bins: int = 8,
    tol: float = 4.0,
    coverage: float = 0.9,
) -> ShotRegions:
    """Masks of the background and of each character in the frames (N, H, W, 3) of a shot."""
    n, h, w, _ = frames.shape
    full = np.ones((n, h, w), dtype=bool)
    if layout is None:
        return ShotRegions(full, {}, localised=False)
    mx, my = 1 + (n - 1) // 3, 1
    yy, xx = np.mgrid[0:h, 0:w]
    widened: dict[str, np.ndarray] = {}
    centres: dict[str, tuple[float, float]] = {}
    for rid, (x0, y0, x1, y1) in layout.boxes.items():
        m = (xx >= x0 - mx) & (xx < x1 + mx) & (yy >= y0 - my) & (yy < y1 + my)
        widened[rid] = m
        centres[rid] = ((x0 + x1) / 2.0, (y0 + y1) / 2.0)
    outside = np.ones((h, w), dtype=bool)
    for m in widened.values():
        outside &= ~m
    # The boxes are exact on the shot's first frame: its pixels outside them (one pixel of
    # margin) are background only, floor included.
    first_out = np.ones((h, w), dtype=bool)
    for x0, y0, x1, y1 in layout.boxes.values():
        first_out &= ~((xx >= x0 - 1) & (xx < x1 + 1) & (yy >= y0 - 1) & (yy < y1 + 1))
    ref = first_out if first_out.any() else _border(h, w)
    known = frames[0][ref]
    backdrop = palette_colours(known, bins=bins, min_share=min_share)
    tol = _adaptive_tol(known, backdrop, tol, coverage)
    not_bg = ~near_colours(frames, backdrop, tol)  # (N, H, W)

    # Overlapping boxes: each pixel to the nearest box centre.
    owner = None
    if len(widened) > 1:
        ids = list(widened)
        dist = np.stack([(xx + 0.5 - centres[r][0]) ** 2 + (yy + 0.5 - centres[r][1]) ** 2 for r in ids])
        nearest = np.argmin(dist, axis=0)
        owner = {r: nearest == k for k, r in enumerate(ids)}
    chars = {}
    for rid, m in widened.items():
        region = m & owner[rid] if owner is not None else m
        chars[rid] = not_bg & region[None]
    wall = outside.copy()
    wall[int(round(wall_fraction * h)) :, :] = False
    if not wall.any():
        wall = outside if outside.any() else _border(h, w)
    background = np.broadcast_to(wall, (n, h, w)).copy()
    return ShotRegions(background, chars, localised=True)


def _adaptive_tol(known: np.ndarray, backdrop: np.ndarray, tol: float, coverage: float) -> float:
    """The colour tolerance: at least ``tol``, and wide enough that ``coverage`` of the
    pixels known to be background fall within it of a backdrop colour. Exact frames keep
    ``tol``; a noisy or blurred generated frame widens it to its own noise level."""
    if backdrop.size == 0 or known.size == 0:
        return tol
    px = known.reshape(-1, 3).astype(np.float64)
    dist = np.min(np.stack([np.abs(px - c).max(axis=-1) for c in backdrop]), axis=0)
    return max(tol, float(np.quantile(dist, coverage)))


def _border(h: int, w: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[0, :] = m[-1, :] = m[:, 0] = m[:, -1] = True
    return m


def foreground_mask(
    image: np.ndarray, *, min_share: float = 0.05, bins: int = 8, tol: float = 4.0, coverage: float = 0.9
) -> np.ndarray:
    """Pixels of a reference image that are not its backdrop: the backdrop colours are the
    frequent colours of its border (the synthetic references are a sprite on a plain grey),
    the tolerance as in :func:`locate`. (H, W) bool; all True if nothing is left."""
    img = np.asarray(image)
    border = img[_border(*img.shape[:2])]
    backdrop = palette_colours(border, bins=bins, min_share=min_share)
    fg = ~near_colours(img, backdrop, _adaptive_tol(border, backdrop, tol, coverage))
    return fg if fg.any() else np.ones(img.shape[:2], dtype=bool)
