"""The papers' evaluation metrics as pure functions of cuts, intervals and feature vectors.

Nothing here looks at pixels or samples: detectors and feature extractors
(:mod:`mavin_ops.evaluation.detectors`) turn a generated clip into cut frames, speech
intervals and vectors, and these functions score them against the script. Every function is
closed-form, so the tests can check exact values.

Sources:

- "MAVIN: Multi-Shot Audio-Visual Generation with Customized Narrative Control", appendix
  C.3: TAMS (eq. S7), CISC / BISC (eq. S8), STA (eq. S9); VC / AC (the personalisation
  metrics of Table S5: cosine similarity of reference and generated identity features).
- "Script-a-Video: Multi-Stream Scene Script (MTSS)", evaluation suite: shot boundary
  deviation, the absolute frame offset between predicted and scripted shot boundaries.

Conventions:

- A *cut frame* ``k`` is the first frame of a new shot (frames ``k-1`` and ``k`` belong to
  different shots), so ``1 <= k <= F-1`` in a clip of ``F`` frames.
- Intervals are half-open ``[start, end)`` in seconds.
- A metric that is undefined for a clip (no pairs to compare, no customized role) is
  ``None`` together with a reason, never an invented number; aggregation leaves it out and
  reports how many clips contributed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

__all__ = [
    "DEFAULT_STA_DELTA_SECONDS",
    "METRICS",
    "MetricInfo",
    "CutMatch",
    "Interval",
    "PairScore",
    "aggregate",
    "cosine",
    "default_sta_delta",
    "intersection_length",
    "match_cuts",
    "mean_or_none",
    "pair_consistency",
    "script_cut_frames",
    "shot_boundary_deviation",
    "shot_frame_ranges",
    "sta",
    "tams",
    "union_intervals",
    "union_length",
]

Interval = tuple[float, float]

#: A cut matched farther than this many seconds is no match (see :func:`match_cuts`).
DEFAULT_STA_DELTA_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class MetricInfo:
    """What a metric name means: ``higher_is_better`` orients the gate's comparisons;
    ``per_clip`` metrics have a value per benchmark clip (bootstrap-able), the others are one
    number for the whole run (the training code's validation losses, the Fréchet distance)."""

    name: str
    higher_is_better: bool
    per_clip: bool
    description: str


#: Every metric name the runner writes and the gate accepts.
METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in (
        MetricInfo("sta", True, True, "Shot Transition Accuracy (MAVIN eq. S9)"),
        MetricInfo("shot_boundary_deviation", False, True, "mean |frame offset| of matched cuts (MTSS)"),
        MetricInfo("shot_boundary_unmatched", False, True, "missing plus extra cuts (MTSS)"),
        MetricInfo("tams", True, True, "Time Alignment Metric for Speech (MAVIN eq. S7)"),
        MetricInfo("cisc", True, True, "Character Inter-shot Consistency (MAVIN eq. S8)"),
        MetricInfo("bisc", True, True, "Background Inter-shot Consistency (MAVIN eq. S8)"),
        MetricInfo("vc", True, True, "Visual Consistency of customized roles to their reference image"),
        MetricInfo("ac", True, True, "Audio Consistency of customized roles to their reference voice"),
        MetricInfo("character_recall", True, True, "share of the scripted (shot, role) pairs whose character the world encoder sees drawn"),
        MetricInfo("character_precision", True, True, "share of the (shot, role) pairs the world encoder sees drawn that the script puts there"),
        MetricInfo("fidelity_fd", False, False, "Frechet distance of generated to benchmark frames in the world encoder's feature space"),
        MetricInfo("val_loss_video", False, False, "validation flow-matching loss, video tower"),
        MetricInfo("val_loss_audio", False, False, "validation flow-matching loss, audio tower"),
    )
}


def default_sta_delta(fps: float, seconds: float = DEFAULT_STA_DELTA_SECONDS) -> int:
    """The STA penalty / match window delta in frames: ``seconds`` of video, at least 1."""
    return max(1, int(round(seconds * fps)))


# --------------------------------------------------------------------------- cuts


@dataclass(frozen=True, slots=True)
class CutMatch:
    """A one-to-one matching of predicted and scripted cut frames.

    ``pairs`` holds ``(predicted, scripted)`` frame pairs; ``unmatched_predicted`` are extra
    cuts the script does not have, ``unmatched_scripted`` are scripted cuts the video misses.
    """

    pairs: tuple[tuple[int, int], ...]
    unmatched_predicted: tuple[int, ...]
    unmatched_scripted: tuple[int, ...]
    delta: float

    @property
    def n_unmatched(self) -> int:
        return len(self.unmatched_predicted) + len(self.unmatched_scripted)

    @property
    def total_offset(self) -> int:
        return int(sum(abs(p - g) for p, g in self.pairs))

    @property
    def cost(self) -> float:
        """The numerator of MAVIN eq. S9: summed offsets plus delta per unmatched cut."""
        return self.total_offset + self.delta * self.n_unmatched


def match_cuts(predicted: Iterable[int], scripted: Iterable[int], delta: float) -> CutMatch:
    """One-to-one matching of predicted and scripted cut frames with the least total cost.

    MAVIN eq. S9 matches the two sets one-to-one "to minimize the overall temporal
    deviation" and charges a fixed penalty ``delta`` for every unmatched transition. We solve
    that as one assignment problem (Hungarian algorithm, ``scipy.optimize.linear_sum_assignment``)
    over an augmented matrix in which each cut may also be left unmatched at cost ``delta``.

    Our choice for a pair farther apart than ``delta`` frames: it may not be matched. Both
    cuts then count as unmatched (cost ``2 * delta``), i.e. ``delta`` is also the match window:
    a cut more than ``delta`` frames from every scripted cut is a spurious cut, not a late one.
    A pair exactly ``delta`` apart may match. Every matched offset is therefore ``<= delta``
    and the returned matching minimises eq. S9's numerator under that window.
    """
    pred = sorted(int(p) for p in predicted)
    gt = sorted(int(g) for g in scripted)
    if delta <= 0:
        raise ValueError(f"STA delta must be positive, got {delta}")
    n, m = len(pred), len(gt)
    if n == 0 or m == 0:
        return CutMatch((), tuple(pred), tuple(gt), float(delta))
    from scipy.optimize import linear_sum_assignment

    p = np.asarray(pred, dtype=np.float64)
    g = np.asarray(gt, dtype=np.float64)
    offsets = np.abs(p[:, None] - g[None, :])  # (n, m)
    # Infeasible entries get a cost no optimal solution pays: every cut can always be left
    # unmatched for delta, so any full assignment costs at most (n + m) * delta.
    big = (n + m + 1) * float(delta) + float(offsets.max()) + 1.0
    size = n + m
    cost = np.full((size, size), big)
    cost[:n, :m] = np.where(offsets <= delta, offsets, big)  # predicted i <-> scripted j
    cost[:n, m:] = np.where(np.eye(n, dtype=bool), float(delta), big)  # predicted i unmatched
    cost[n:, :m] = np.where(np.eye(m, dtype=bool), float(delta), big)  # scripted j unmatched
    cost[n:, m:] = 0.0  # dummy <-> dummy
    rows, cols = linear_sum_assignment(cost)
    pairs = []
    matched_p: set[int] = set()
    matched_g: set[int] = set()
    for r, c in zip(rows.tolist(), cols.tolist()):
        if r < n and c < m:
            pairs.append((pred[r], gt[c]))
            matched_p.add(r)
            matched_g.add(c)
    pairs.sort(key=lambda pg: pg[1])
    return CutMatch(
        tuple(pairs),
        tuple(pred[i] for i in range(n) if i not in matched_p),
        tuple(gt[j] for j in range(m) if j not in matched_g),
        float(delta),
    )


def sta(predicted: Iterable[int], scripted: Iterable[int], total_frames: int, delta: float) -> float:
    """Shot Transition Accuracy, MAVIN eq. S9:
    ``exp(-(sum_{matched} |p - g| + delta * N_unmatched) / N_total)``.

    ``N_total`` is the clip's frame count. A clip with no cut scripted and none predicted
    scores exactly 1. See :func:`match_cuts` for the matching and the delta window.
    """
    if total_frames <= 0:
        raise ValueError(f"STA needs a positive frame count, got {total_frames}")
    match = match_cuts(predicted, scripted, delta)
    return math.exp(-match.cost / float(total_frames))


def shot_boundary_deviation(
    predicted: Iterable[int], scripted: Iterable[int], delta: float
) -> tuple[float | None, int]:
    """Shot boundary deviation (MTSS evaluation suite): the mean absolute frame offset of the
    matched cuts, and the number of unmatched cuts (predicted plus scripted).

    Uses the same matching as STA. The mean is ``None`` when nothing matched (no pairs to
    average); the unmatched count still says what went wrong.
    """
    match = match_cuts(predicted, scripted, delta)
    if not match.pairs:
        return None, match.n_unmatched
    return match.total_offset / len(match.pairs), match.n_unmatched


def script_cut_frames(shot_starts: Sequence[float], fps: float, total_frames: int) -> list[int]:
    """Scripted cut frames from the shots' start times: ``round(start * fps)`` for every shot
    after the first, kept inside ``[1, total_frames - 1]``."""
    cuts = []
    for start in list(shot_starts)[1:]:
        k = int(round(float(start) * fps))
        if 1 <= k <= total_frames - 1:
            cuts.append(k)
    return sorted(set(cuts))


def shot_frame_ranges(time_ranges: Sequence[Interval], fps: float, total_frames: int) -> list[tuple[int, int]]:
    """The frame range ``[first, stop)`` of each scripted shot, clipped to the clip."""
    out = []
    for start, end in time_ranges:
        a = min(max(int(round(start * fps)), 0), total_frames)
        b = min(max(int(round(end * fps)), 0), total_frames)
        out.append((a, b))
    return out


# --------------------------------------------------------------------------- intervals


def union_intervals(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted union of half-open intervals; empty or reversed ones are dropped, touching
    ones merged."""
    spans = sorted((float(a), float(b)) for a, b in intervals if float(b) > float(a))
    merged: list[Interval] = []
    for a, b in spans:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def union_length(intervals: Iterable[Interval]) -> float:
    """Total length of the union of ``intervals``."""
    return float(sum(b - a for a, b in union_intervals(intervals)))


def intersection_length(a: Iterable[Interval], b: Iterable[Interval]) -> float:
    """Length of (union of ``a``) intersected with (union of ``b``), by a merge of the two
    sorted unions."""
    ua, ub = union_intervals(a), union_intervals(b)
    i = j = 0
    total = 0.0
    while i < len(ua) and j < len(ub):
        lo = max(ua[i][0], ub[j][0])
        hi = min(ua[i][1], ub[j][1])
        if hi > lo:
            total += hi - lo
        if ua[i][1] <= ub[j][1]:
            i += 1
        else:
            j += 1
    return total


def tams(detected: Iterable[Interval], scripted: Iterable[Interval]) -> float:
    """Time Alignment Metric for Speech, MAVIN eq. S7: ``|G n P| / |G u P|``, the temporal IoU
    of the union of detected speech intervals P and the union of scripted dialogue intervals G.

    Our definition when both are empty (no dialogue scripted, no speech detected): 1, the
    clip does exactly what the script asks. When only one is empty the IoU is 0.
    """
    p = union_intervals(detected)
    g = union_intervals(scripted)
    inter = intersection_length(p, g)
    union = union_length(p) + union_length(g) - inter
    if union <= 0.0:
        return 1.0
    return inter / union


# --------------------------------------------------------------------------- features


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity ``a.b / (|a| |b|)``. NaN when a vector is zero or not finite: a
    feature extractor that returns such a vector is broken and the gate must see it."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"cosine of vectors of different sizes {a.shape[0]} and {b.shape[0]}")
    # Elementwise products and sums, not BLAS dot: on a shared machine a threaded BLAS call
    # leaves its threads spinning and slows whatever runs next (video decoding).
    na, nb = math.sqrt(float(np.sum(a * a))), math.sqrt(float(np.sum(b * b)))
    if not (na > 0.0 and nb > 0.0 and math.isfinite(na) and math.isfinite(nb)):
        return float("nan")
    return float(np.clip(float(np.sum(a * b)) / (na * nb), -1.0, 1.0))


@dataclass(frozen=True, slots=True)
class PairScore:
    """One compared pair: shots ``i`` and ``j`` (ids) sharing ``key`` (an entity id)."""

    i: str
    j: str
    key: str
    cosine: float


def pair_consistency(pairs: Sequence[PairScore]) -> float | None:
    """CISC / BISC, MAVIN eq. S8: the mean cosine over the annotated shot pairs, ``None``
    when there are no pairs (the caller reports "no pairs" and leaves the clip out)."""
    if not pairs:
        return None
    return float(np.mean([p.cosine for p in pairs]))


# --------------------------------------------------------------------------- aggregation


def mean_or_none(values: Iterable[float | None]) -> float | None:
    """Mean of the values that are not ``None``; ``None`` when there are none. A NaN value
    makes the mean NaN on purpose."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    return float(np.mean(vals))


def aggregate(per_clip: Sequence[dict[str, float | None]], names: Iterable[str]) -> dict[str, dict[str, float | int | None]]:
    """Per metric: ``{"mean": ..., "count": clips with a value, "missing": clips without}``."""
    out: dict[str, dict[str, float | int | None]] = {}
    for name in names:
        values = [m.get(name) for m in per_clip]
        present = [v for v in values if v is not None]
        out[name] = {"mean": mean_or_none(present), "count": len(present), "missing": len(values) - len(present)}
    return out
