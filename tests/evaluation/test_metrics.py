"""Closed-form checks of the metric definitions (MAVIN eq. S7-S9, MTSS shot boundary
deviation) on hand-made cut lists, intervals and vectors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mavin_ops.evaluation import metrics as M


def test_sta_perfect_and_single_shot_score_one():
    assert M.sta([8, 16], [8, 16], total_frames=25, delta=4) == 1.0
    # a single-shot clip: nothing scripted, nothing predicted
    assert M.sta([], [], total_frames=17, delta=4) == 1.0


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_sta_cuts_shifted_by_k_frames(k):
    scripted = [8, 16]
    predicted = [c + k for c in scripted]
    # both cuts match (k <= delta): numerator = 2k
    assert M.sta(predicted, scripted, 25, delta=4) == pytest.approx(math.exp(-2 * k / 25))
    dev, unmatched = M.shot_boundary_deviation(predicted, scripted, delta=4)
    assert dev == k and unmatched == 0


def test_sta_missing_and_extra_cut_cost_delta_each():
    assert M.sta([8], [8, 16], 25, delta=4) == pytest.approx(math.exp(-4 / 25))
    assert M.sta([8, 12, 16], [8, 16], 25, delta=4) == pytest.approx(math.exp(-4 / 25))
    assert M.shot_boundary_deviation([8], [8, 16], 4) == (0.0, 1)
    assert M.shot_boundary_deviation([8, 12, 16], [8, 16], 4) == (0.0, 1)


def test_match_farther_than_delta_is_two_unmatched_cuts():
    # 10 frames apart with delta 4: a spurious cut and a missed one, 2 * delta
    m = M.match_cuts([20], [10], delta=4)
    assert m.pairs == () and m.unmatched_predicted == (20,) and m.unmatched_scripted == (10,)
    assert M.sta([20], [10], 33, delta=4) == pytest.approx(math.exp(-8 / 33))
    # exactly delta apart still matches (cost delta, not 2 delta)
    assert M.match_cuts([14], [10], delta=4).pairs == ((14, 10),)
    assert M.shot_boundary_deviation([20], [10], 4) == (None, 2)


def test_matching_is_optimal_not_greedy():
    # scripted {6, 10}, predicted {9, 13}, delta 3. A greedy pass takes the closest pair
    # first, (9, 10) at 1, then 13 and 6 are 7 apart (> delta): cost 1 + 2 * 3 = 7. The
    # assignment pairs (9, 6) and (13, 10) at 3 each: cost 6.
    m = M.match_cuts([9, 13], [6, 10], delta=3)
    assert m.cost == 6 and set(m.pairs) == {(9, 6), (13, 10)}
    assert M.sta([9, 13], [6, 10], 21, delta=3) == pytest.approx(math.exp(-6 / 21))


def test_match_cuts_rejects_bad_delta():
    with pytest.raises(ValueError, match="delta"):
        M.match_cuts([1], [1], delta=0)
    with pytest.raises(ValueError, match="frame count"):
        M.sta([1], [1], total_frames=0, delta=1)


def test_script_cut_frames_and_shot_ranges():
    assert M.script_cut_frames([0.0, 1.0, 2.0], fps=8, total_frames=25) == [8, 16]
    assert M.script_cut_frames([0.0], fps=8, total_frames=17) == []
    assert M.shot_frame_ranges([(0.0, 1.0), (1.0, 3.125)], 8, 25) == [(0, 8), (8, 25)]
    assert M.default_sta_delta(8) == 4 and M.default_sta_delta(24) == 12 and M.default_sta_delta(1) == 1


def test_tams_closed_forms():
    assert M.tams([(0.5, 1.5)], [(0.5, 1.5)]) == 1.0
    # shifted by s inside a length-L interval: (L - s) / (L + s)
    assert M.tams([(0.7, 1.7)], [(0.5, 1.5)]) == pytest.approx(0.8 / 1.2)
    # cut short by c: (L - c) / L
    assert M.tams([(0.5, 1.2)], [(0.5, 1.5)]) == pytest.approx(0.7)
    # the union over intervals, overlapping detections merged
    assert M.tams([(0.0, 1.0), (0.5, 2.0), (3.0, 4.0)], [(0.0, 2.0), (3.0, 3.5)]) == pytest.approx(2.5 / 3.0)
    # definitions at the edges: both empty -> 1, one empty -> 0
    assert M.tams([], []) == 1.0
    assert M.tams([(0.0, 1.0)], []) == 0.0
    assert M.tams([], [(0.0, 1.0)]) == 0.0


def test_interval_helpers():
    assert M.union_intervals([(2, 3), (0, 1), (1, 1.5), (5, 4)]) == [(0.0, 1.5), (2.0, 3.0)]
    assert M.intersection_length([(0, 2), (3, 5)], [(1, 4)]) == pytest.approx(2.0)
    assert M.union_length([(0, 1), (0.5, 2)]) == pytest.approx(2.0)


def test_cosine_and_pair_consistency():
    assert M.cosine(np.array([1.0, 0.0]), np.array([1.0, 1.0])) == pytest.approx(1 / math.sqrt(2))
    assert math.isnan(M.cosine(np.zeros(3), np.ones(3)))
    assert math.isnan(M.cosine(np.array([np.nan, 1.0]), np.ones(2)))
    with pytest.raises(ValueError, match="sizes"):
        M.cosine(np.ones(2), np.ones(3))
    pairs = [M.PairScore("S1", "S2", "R1", 1.0), M.PairScore("S1", "S3", "R1", 0.4)]
    assert M.pair_consistency(pairs) == pytest.approx(0.7)
    assert M.pair_consistency([]) is None


def test_aggregate_leaves_out_undefined_and_keeps_nan():
    agg = M.aggregate([{"cisc": 0.5, "sta": 1.0}, {"cisc": None, "sta": 0.5}, {"cisc": 1.0, "sta": 0.0}], ["cisc", "sta"])
    assert agg["cisc"] == {"mean": 0.75, "count": 2, "missing": 1}
    assert agg["sta"] == {"mean": 0.5, "count": 3, "missing": 0}
    assert math.isnan(M.aggregate([{"x": float("nan")}, {"x": 1.0}], ["x"])["x"]["mean"])
    assert M.aggregate([{"x": None}], ["x"])["x"]["mean"] is None


def test_metric_catalogue_orients_every_metric():
    assert set(M.METRICS) >= {"sta", "tams", "cisc", "bisc", "vc", "ac", "shot_boundary_deviation", "val_loss_video", "val_loss_audio"}
    assert M.METRICS["sta"].higher_is_better and not M.METRICS["shot_boundary_deviation"].higher_is_better
    assert not M.METRICS["val_loss_video"].per_clip and M.METRICS["cisc"].per_clip
