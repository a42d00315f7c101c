"""Contact sheets: what a person looks at before believing a metric.

One PNG per benchmark clip, one row per shot: the reference images of the customized roles
the shot cites, then frames of the ground truth and the generated clip side by side (the
first, middle and last frame of the shot), and a last row with both waveforms and the
scripted dialogue spans shaded (cuts drawn as lines). A summary sheet shows every clip's
middle frame, truth above generated, with the clip's STA / VC / AC under it.

Drawn with matplotlib (Agg backend, no display); frames are shown with nearest-neighbour
scaling so a 32x32 clip stays readable.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["SHEETS_DIR", "SUMMARY", "clip_sheet", "summary_sheet"]

SHEETS_DIR = "sheets"
SUMMARY = "summary.png"
FRAMES_PER_SHOT = 3


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _shot_frames(n_frames: int, fps: float, start: float, end: float) -> list[int]:
    """The first, middle and last frame index of a shot's time range (clamped to the clip)."""
    a = min(max(int(math.floor(start * fps + 1e-6)), 0), n_frames - 1)
    b = min(max(int(math.ceil(end * fps - 1e-6)) - 1, a), n_frames - 1)
    picks = sorted({a, (a + b) // 2, b})
    return picks[:FRAMES_PER_SHOT]


def _save(fig, out: Path) -> Path:
    from mavin_ops.data.manifest import atomic_writer

    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(out.parent, out.name, "wb") as fh:
        fig.savefig(fh, format="png", dpi=80)
    _plt().close(fig)
    return out


def clip_sheet(
    out: str | os.PathLike,
    *,
    clip_id: str,
    script: Any,
    truth: np.ndarray | None,
    generated: np.ndarray,
    fps: float,
    truth_audio: np.ndarray | None,
    generated_audio: np.ndarray,
    sample_rate: int,
    ref_images: Mapping[str, np.ndarray],
    metrics: Mapping[str, Any] | None = None,
    presence: Mapping[str, float] | None = None,
    label: str = "generated",
) -> Path:
    """Draw one clip's contact sheet to ``out`` (PNG). ``truth`` / ``generated`` are uint8
    (F, H, W, 3) frames; ``script`` a parsed MTSS script (mavin_ops/mtss.py). Without ``truth``
    (a served clip has none) only the generated frames and waveform are drawn. ``presence``
    (the evaluation's ``details.presence``: ``"<shot>/<role>"`` -> probability that the world
    encoder sees the role drawn) labels each shot with what the encoder saw in the generated
    frames. ``label`` names the frames drawn (``footage`` for an ingested clip)."""
    plt = _plt()
    shots = list(script.shot)
    customized = [e.id for e in script.customized_roles() if e.id in ref_images]
    n_ref = max(1, len(customized))
    sides = [(label, generated)] if truth is None else [("truth", truth), (label, generated)]
    cols = n_ref + len(sides) * FRAMES_PER_SHOT
    rows = len(shots) + 1
    fig = plt.figure(figsize=(1.1 * cols + 1.5, 1.25 * rows + 0.6))
    grid = fig.add_gridspec(rows, cols, height_ratios=[1] * len(shots) + [1.2])
    names = {"character_recall": "recall"}
    shown = {k: metrics.get(k) for k in ("sta", "tams", "vc", "ac", "character_recall", "cisc", "bisc")} if metrics else {}
    label = "  ".join(f"{names.get(k, k.upper())} {v:.2f}" for k, v in shown.items() if isinstance(v, (int, float)))
    fig.suptitle(f"{clip_id}   {label}", fontsize=9)
    for r, shot in enumerate(shots):
        for c in range(n_ref):
            ax = fig.add_subplot(grid[r, c])
            ax.set_xticks([]), ax.set_yticks([])
            rid = customized[c] if c < len(customized) else None
            if rid is not None and rid in shot.references_in_shot:
                ax.imshow(ref_images[rid], interpolation="nearest")
                ax.set_title(f"ref {rid}", fontsize=6)
            else:
                ax.axis("off")
        picks = _shot_frames(len(generated), fps, shot.time_range.start, shot.time_range.end)
        for i, f in enumerate(picks):
            for side, (name, frames) in enumerate(sides):
                ax = fig.add_subplot(grid[r, n_ref + side * FRAMES_PER_SHOT + i])
                ax.imshow(frames[min(f, len(frames) - 1)], interpolation="nearest")
                ax.set_xticks([]), ax.set_yticks([])
                if side == 0 and i == 0:
                    ax.set_ylabel(shot.id, fontsize=7)
                if side == len(sides) - 1 and i == len(picks) - 1 and presence:
                    seen = [
                        f"{rid} {'drawn' if presence[f'{shot.id}/{rid}'] >= 0.5 else 'absent'}"
                        + ("" if rid in shot.references_in_shot else " (not scripted)")
                        for rid in customized
                        if f"{shot.id}/{rid}" in presence and (rid in shot.references_in_shot or presence[f"{shot.id}/{rid}"] >= 0.5)
                    ]
                    if seen:
                        ax.yaxis.set_label_position("right")
                        ax.set_ylabel("\n".join(seen), fontsize=5, rotation=0, ha="left", va="center")
                ax.set_title(f"{name} f{f}" if r == 0 else f"f{f}", fontsize=6 if r == 0 else 5)
    ax = fig.add_subplot(grid[rows - 1, :])
    t_gen = np.arange(len(generated_audio)) / float(sample_rate)
    if truth_audio is not None:
        ax.plot(np.arange(len(truth_audio)) / float(sample_rate), truth_audio, lw=0.4, color="0.55", label="truth")
    ax.plot(t_gen, generated_audio, lw=0.4, color="tab:blue", alpha=0.8, label=label)
    for ev in script.event:
        if ev.type == "dialogue":
            ax.axvspan(ev.time_range.start, ev.time_range.end, color="tab:orange", alpha=0.25)
            ax.text(ev.time_range.start, 0.92, ev.speaker or "", transform=ax.get_xaxis_transform(), fontsize=6)
    for shot in shots[1:]:
        ax.axvline(shot.time_range.start, color="k", lw=0.6, ls="--")
    ax.set_xlim(0, max(len(generated) / float(fps), t_gen[-1] if len(t_gen) else 0.0))
    ax.set_yticks([])
    ax.set_xlabel("seconds (orange: scripted dialogue; dashed: scripted cuts)", fontsize=6)
    ax.tick_params(labelsize=6)
    ax.legend(fontsize=6, loc="upper right")
    return _save(fig, Path(out))


def summary_sheet(out: str | os.PathLike, entries: Sequence[Mapping[str, Any]], columns: int = 8) -> Path:
    """Every clip's middle frame, truth above generated, with its STA / VC / AC. ``entries``:
    ``{"id", "truth", "generated", "metrics"}`` with one uint8 (H, W, 3) frame each."""
    plt = _plt()
    n = max(1, len(entries))
    columns = min(columns, n)
    rows = math.ceil(n / columns)
    fig, axes = plt.subplots(2 * rows, columns, figsize=(1.3 * columns, 2.5 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, entry in enumerate(entries):
        r, c = divmod(k, columns)
        m = entry.get("metrics") or {}
        top, bottom = axes[2 * r, c], axes[2 * r + 1, c]
        top.imshow(entry["truth"], interpolation="nearest")
        top.set_title(f"{entry['id']} truth", fontsize=6)
        bottom.imshow(entry["generated"], interpolation="nearest")
        bits = [f"{key.upper()} {m[key]:.2f}" for key in ("sta", "vc", "ac") if isinstance(m.get(key), (int, float))]
        bottom.set_title("generated\n" + " ".join(bits), fontsize=5)
    fig.suptitle("benchmark contact sheet: truth (top) vs generated (bottom), middle frame of each clip", fontsize=8)
    fig.tight_layout()
    return _save(fig, Path(out))
