"""``mavin-ops plan``: the paper preset's stages on a cluster, from the model built on the meta
device and DeepSpeed's own memory estimator; a plan that does not fit is refused."""

from __future__ import annotations

import json

import pytest

from mavin_ops.cli import main
from mavin_ops.training.plan import GIB, gpu_memory_gb, plan


def test_the_paper_plan_on_4x8_h100_fits_and_counts_what_each_stage_trains(capsys):
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    stages = plan("paper", nodes=4, gpus_per_node=8, gpu_memory=80.0)
    by = {s.stage: s for s in stages}
    assert [s.stage for s in stages] == ["id", "multishot", "av", "joint"] and all(s.fits for s in stages)
    total = {s.trainable + s.frozen for s in stages}
    assert len(total) == 1  # the same model every stage
    assert by["id"].trainable < by["av"].trainable < by["joint"].trainable
    assert 10e9 < by["joint"].trainable < 12e9 and by["joint"].frozen > 5e9  # the 11B denoiser; UMT5 and the VAEs frozen
    want = estimate_zero2_model_states_mem_needs(by["joint"].trainable, 8, 4, cpu_offload=False)[1] / GIB
    assert by["joint"].model_states_gb == pytest.approx(want)  # DeepSpeed's number, not ours
    job = by["joint"].trainjob
    assert job["kind"] == "TrainJob" and job["spec"]["trainer"]["numNodes"] == 4 and job["spec"]["trainer"]["numProcPerNode"] == 8
    capsys.readouterr()
    assert main(["plan", "--json"]) == 0
    assert [s["stage"] for s in json.loads(capsys.readouterr().out)] == ["id", "multishot", "av", "joint"]


def test_a_plan_that_does_not_fit_is_a_one_line_error(capsys):
    assert main(["plan", "--nodes", "1", "--gpus-per-node", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("mavin-ops: error: stage av needs about") and "more than the GPU's 80 GB" in err


def test_the_gpu_memory_comes_from_the_profile():
    assert gpu_memory_gb({"type": "NVIDIA-H100-80GB-HBM3"}) == 80.0
    assert gpu_memory_gb({"type": "NVIDIA-H200", "memory_gb": 141}) == 141.0
    assert gpu_memory_gb({}, default=40.0) == 40.0
