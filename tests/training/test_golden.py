"""The committed debug loss curve (training/golden/debug_losses.json) catches silent drift.

Regenerate on purpose with ``.venv/bin/python -m mavin_ops.training golden --write``."""

from __future__ import annotations

import copy

from mavin_ops.training import golden


def test_debug_recipe_reproduces_the_golden_losses(tmp_path):
    want = golden.load_golden()
    assert want["rtol"] <= 1e-5 and set(want["stages"]) == {"id", "multishot", "av", "joint"}
    got = golden.debug_losses(tmp_path)
    problems = golden.compare(got, want)
    assert not problems, "loss drift against training/golden/debug_losses.json (regenerate with `python -m mavin_ops.training golden --write` if intended):\n" + "\n".join(problems[:10])


def test_the_comparison_catches_a_drift_just_above_the_tolerance():
    want = golden.load_golden()
    same = copy.deepcopy(want["stages"])
    assert golden.compare(same, want) == []
    drifted = copy.deepcopy(want["stages"])
    drifted["av"][2]["audio"] *= 1 + 3 * golden.RTOL
    [line] = golden.compare(drifted, want)
    assert "stage av step 3 audio" in line
    shorter = copy.deepcopy(want["stages"])
    shorter["joint"].pop()
    assert golden.compare(shorter, want) == ["stage joint: 5 steps, golden has 6"]
