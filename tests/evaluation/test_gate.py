"""The release gate: policy parsing, the paired bootstrap, every verdict the issue names,
the champion from a real MLflow registry (SQLite, no server), and the report."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from mavin_ops.evaluation import gate as G
from mavin_ops.evaluation.results import read_metrics

N = 20  # benchmark clips in the hand-made metrics files


def policy(metrics: dict, resamples: int = 1000) -> G.GatePolicy:
    return G.parse_policy({"bootstrap": {"resamples": resamples, "confidence": 0.95, "seed": 0}, "metrics": metrics}, "test-policy")


def champion_of(doc: dict) -> G.Champion:
    return G.Champion("mavin", "1", None, "test", doc)


# --------------------------------------------------------------------------- policy


def test_default_policy_file_loads():
    p = G.load_policy()
    assert p.source.endswith("gate_policy.yaml") and len(p.digest) == 64
    assert {r.name for r in p.rules} >= {"sta", "tams", "cisc", "bisc"}
    assert p.resamples >= 1000 and 0.5 <= p.confidence < 1


def test_shipped_floors_agree_with_the_recorded_benchmark_and_fail_the_bad_models():
    """The default policy against the recorded tiny benchmark (bench/results/learn.json, written
    by bench/learn.py, the table in BENCHMARKS.md): re-decided from each model's recorded clip
    values and ground-truth references, the verdict is the one the table shows; the
    ground truth passes, and the untrained model and the model trained without reference
    anchors fail on identity."""
    from pathlib import Path

    learn = json.loads((Path(__file__).resolve().parents[2] / "bench" / "results" / "learn.json").read_text())
    policy = G.load_policy()
    n = learn["eval_clips"]

    def verdict(row: dict) -> G.GateDecision:
        means = {k: v for k, v in row.items() if not k.startswith("_") and k != "gate"}
        doc = {
            "benchmark": {"id": "learn-bench", "digest": "d", "n_clips": n},
            "clips": row["_clips"],
            "metrics": {k: {"mean": v, "count": n} for k, v in means.items()},
            "references": row["_references"],
        }
        return G.decide(doc, policy)

    scores = learn["scores"]
    for name, row in scores.items():
        d = verdict(row)
        recorded = row["gate"]
        assert d.passed == (recorded == "pass"), (name, d.reasons, recorded)
        if not d.passed:
            assert set(recorded.removeprefix("fail: ").split(", ")) == {c.name for c in d.checks if not c.passed}, name
    assert verdict(scores["ground truth clips (evaluator ceiling)"]).passed
    for bad in ("untrained (seeded init)", "w/o reference anchors"):
        failed = {c.name for c in verdict(scores[bad]).checks if not c.passed}
        assert {"vc", "character_recall"} & failed, (bad, failed)


def test_policy_with_unknown_metric_names_it_and_the_allowed_names(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("metrics:\n  sta: {min: 0.5}\n  fvd: {max: 300}\n")
    with pytest.raises(G.PolicyError) as err:
        G.load_policy(path)
    msg = str(err.value)
    assert f"{path}: metrics.fvd: unknown metric 'fvd'" in msg
    assert "allowed names: sta, shot_boundary_deviation" in msg and "val_loss_audio" in msg and "\n" not in msg


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("metrics:\n  sta: {floor: 0.5}\n", r"metrics\.sta\.floor: unknown key; allowed: min, max, tolerance"),
        ("metrics:\n  sta: {tolerance: -0.1}\n", r"metrics\.sta\.tolerance: must be >= 0"),
        ("metrics:\n  sta: {min: 0.9, max: 0.5}\n", "min 0.9 is above max 0.5"),
        ("metrics:\n  sta: {min: high}\n", r"metrics\.sta\.min: expected a finite number"),
        ("metrics:\n  sta: {}\n", "the rule sets nothing"),
        ("metrics: {}\n", "non-empty mapping"),
        ("bootstrap: {resamples: 10}\nmetrics:\n  sta: {min: 0.5}\n", r"bootstrap\.resamples"),
        ("bootstrap: {confidence: 1.5}\nmetrics:\n  sta: {min: 0.5}\n", r"bootstrap\.confidence"),
        ("thresholds: {}\nmetrics:\n  sta: {min: 0.5}\n", "unknown section 'thresholds'"),
        ("metrics: [sta\n", "not valid YAML"),
    ],
)
def test_bad_policies_are_rejected_with_one_line(tmp_path, text, match):
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(G.PolicyError, match=match) as err:
        G.load_policy(path)
    assert "\n" not in str(err.value)


def test_missing_policy_file(tmp_path):
    with pytest.raises(G.PolicyError, match="no such gate policy file"):
        G.load_policy(tmp_path / "absent.yaml")


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_of_constant_differences_is_that_constant():
    assert G.paired_bootstrap_ci(np.full(7, -0.25), 500) == (pytest.approx(-0.25), pytest.approx(-0.25))


def test_bootstrap_is_seeded_and_brackets_the_mean():
    d = np.random.default_rng(1).normal(0.1, 0.2, 40)
    a = G.paired_bootstrap_ci(d, 2000, 0.95, seed=0)
    assert a == G.paired_bootstrap_ci(d, 2000, 0.95, seed=0)
    assert a != G.paired_bootstrap_ci(d, 2000, 0.95, seed=1)
    assert a[0] < d.mean() < a[1]
    # about mean +- 1.96 standard errors
    se = d.std(ddof=1) / math.sqrt(len(d))
    assert a[0] == pytest.approx(d.mean() - 1.96 * se, abs=0.02)
    narrow = G.paired_bootstrap_ci(d, 2000, 0.5, seed=0)
    assert a[0] < narrow[0] < narrow[1] < a[1]
    with pytest.raises(ValueError):
        G.paired_bootstrap_ci(np.zeros(0))


# --------------------------------------------------------------------------- decisions


def test_floors_only_without_champion(kit):
    doc = kit.metrics_doc({"sta": [0.9] * N, "tams": [0.4] * N})
    d = G.decide(doc, policy({"sta": {"min": 0.8, "tolerance": 0.02}, "tams": {"min": 0.5}}))
    assert not d.passed and d.champion is None
    sta, tams = d.checks
    assert sta.passed and sta.regression_ok is None and sta.floor_ok
    assert not tams.passed and tams.reasons == ["tams: 0.4 is below the floor 0.5"]
    assert G.decide(doc, policy({"sta": {"min": 0.8}})).passed


def test_regression_beyond_tolerance_is_blocked(kit):
    champ = kit.metrics_doc({"sta": [0.95] * N})
    chal = kit.metrics_doc({"sta": [0.90] * N})
    d = G.decide(chal, policy({"sta": {"min": 0.5, "tolerance": 0.02}}), champion_of(champ))
    assert not d.passed
    chk = d.checks[0]
    assert chk.ci_low == pytest.approx(-0.05) and chk.paired == N and chk.regression_ok is False
    assert "regression vs champion" in d.reasons[0] and "-0.02" in d.reasons[0]


def test_improvement_passes(kit):
    rng = np.random.default_rng(0)
    base = rng.uniform(0.6, 0.9, N)
    champ = kit.metrics_doc({"sta": list(base), "tams": list(base)})
    chal = kit.metrics_doc({"sta": list(base + rng.uniform(0.0, 0.1, N)), "tams": list(base + 0.05)})
    d = G.decide(chal, policy({"sta": {"tolerance": 0.0}, "tams": {"min": 0.5, "tolerance": 0.01}}), champion_of(champ))
    assert d.passed, d.reasons
    assert all(c.diff_mean > 0 and c.ci_low >= 0 for c in d.checks)


def test_tie_within_tolerance_passes(kit):
    base = list(np.linspace(0.7, 0.9, N))
    champ = kit.metrics_doc({"cisc": base})
    exact = G.decide(kit.metrics_doc({"cisc": base}), policy({"cisc": {"tolerance": 0.0}}), champion_of(champ))
    assert exact.passed and exact.checks[0].ci_low == 0.0
    slightly_worse = kit.metrics_doc({"cisc": [v - 0.01 for v in base]})
    assert G.decide(slightly_worse, policy({"cisc": {"tolerance": 0.02}}), champion_of(champ)).passed
    assert not G.decide(slightly_worse, policy({"cisc": {"tolerance": 0.005}}), champion_of(champ)).passed


def test_noisy_regression_decided_by_the_interval(kit):
    rng = np.random.default_rng(3)
    base = rng.uniform(0.5, 0.9, N)
    noise = rng.normal(0.0, 0.05, N)
    champ = kit.metrics_doc({"tams": list(base)})
    chal = kit.metrics_doc({"tams": list(base + noise - 0.03)})
    # the gate pairs clips in sorted id order
    order = sorted(range(N), key=lambda i: f"c{i}")
    diffs = np.array([chal["clips"][i]["metrics"]["tams"] - base[i] for i in order])
    lo, hi = G.paired_bootstrap_ci(diffs, 1000, 0.95, 0)
    got = G.decide(chal, policy({"tams": {"tolerance": 0.02}}), champion_of(champ)).checks[0]
    assert (got.ci_low, got.ci_high) == (pytest.approx(lo), pytest.approx(hi))
    assert got.regression_ok == (lo >= -0.02)


def test_lower_is_better_metric_is_oriented(kit):
    champ = kit.metrics_doc({"shot_boundary_deviation": [0.5] * N})
    worse = kit.metrics_doc({"shot_boundary_deviation": [1.0] * N})
    better = kit.metrics_doc({"shot_boundary_deviation": [0.2] * N})
    rule = {"shot_boundary_deviation": {"max": 2.0, "tolerance": 0.25}}
    d = G.decide(worse, policy(rule), champion_of(champ))
    assert not d.passed and d.checks[0].diff_mean == pytest.approx(-0.5)
    assert G.decide(better, policy(rule), champion_of(champ)).passed
    assert not G.decide(kit.metrics_doc({"shot_boundary_deviation": [2.5] * N}), policy(rule)).passed


def test_nan_in_a_clip_is_blocked(kit):
    vals = [0.9] * N
    vals[3] = float("nan")
    d = G.decide(kit.metrics_doc({"sta": vals}), policy({"sta": {"min": 0.1}}))
    assert not d.passed and "sta: NaN in 1 clip(s) (c3)" in d.reasons


def test_nan_survives_the_metrics_file(kit, tmp_path):
    vals = [0.9] * N
    vals[0] = float("nan")
    path = kit.write_doc(tmp_path / "metrics.json", kit.metrics_doc({"sta": vals}))
    assert '"NaN"' in path.read_text()  # strict JSON on disk
    doc = read_metrics(path)
    assert math.isnan(doc["clips"][0]["metrics"]["sta"]) and math.isnan(doc["metrics"]["sta"]["mean"])
    assert not G.decide(doc, policy({"sta": {"min": 0.1}})).passed


def test_missing_metric_is_blocked(kit):
    doc = kit.metrics_doc({"sta": [1.0] * N})
    d = G.decide(doc, policy({"sta": {"min": 0.5}, "tams": {"min": 0.5}}))
    assert not d.passed and d.reasons == ["tams: missing from the challenger's metrics.json"]
    undefined = kit.metrics_doc({"cisc": [None] * N})
    d = G.decide(undefined, policy({"cisc": {"min": 0.5}}))
    assert not d.passed and d.reasons == ["cisc: missing: no benchmark clip has a value"]


def _coverage_attack(kit, n_with_value: int) -> dict:
    """A challenger with a value on only some benchmark clips: the others carry no value and
    are not marked not-applicable (the attack the release-integrity review found)."""
    doc = kit.metrics_doc({"sta": [0.99] * N})
    for clip in doc["clips"][n_with_value:]:
        del clip["metrics"]["sta"]
    doc["metrics"]["sta"] = {"mean": 0.99, "count": n_with_value, "missing": N - n_with_value}
    return doc


def test_a_metric_on_one_clip_fails_the_gate_with_and_without_champion(kit):
    chal = _coverage_attack(kit, 1)
    rule = policy({"sta": {"min": 0.5, "tolerance": 0.02}})
    alone = G.decide(chal, rule)
    assert not alone.passed
    assert any(r.startswith(f"sta: values on 1 of the {N} benchmark clips it applies to") for r in alone.reasons), alone.reasons
    champ = kit.metrics_doc({"sta": [0.9] * N})
    against = G.decide(chal, rule, champion_of(champ))
    assert not against.passed and any("values on 1 of the" in r for r in against.reasons)


def test_a_policy_coverage_share_is_honoured(kit):
    doc = _coverage_attack(kit, N // 2)
    assert not G.decide(doc, policy({"sta": {"min": 0.5}})).passed
    assert G.decide(doc, policy({"sta": {"min": 0.5, "coverage": 0.5}})).passed
    assert not G.decide(doc, policy({"sta": {"min": 0.5, "coverage": 0.6}})).passed
    with pytest.raises(G.PolicyError, match=r"metrics\.sta\.coverage: expected a share in \(0, 1\]"):
        policy({"sta": {"min": 0.5, "coverage": 1.5}})


@pytest.mark.parametrize("fake", [True, "0.99", [0.99]])
def test_values_must_be_real_numbers(kit, fake):
    doc = kit.metrics_doc({"sta": [0.99] * N})
    doc["metrics"]["sta"]["mean"] = fake
    d = G.decide(doc, policy({"sta": {"min": 0.5}}))
    assert not d.passed and any("not a finite number" in r for r in d.reasons), d.reasons
    clip_fake = kit.metrics_doc({"sta": [0.99] * N})
    clip_fake["clips"][4]["metrics"]["sta"] = fake
    d = G.decide(clip_fake, policy({"sta": {"min": 0.5}}))
    assert not d.passed and any("sta: 1 clip value(s) are not numbers (c4)" in r for r in d.reasons), d.reasons


def test_an_aggregate_that_disagrees_with_its_clips_fails(kit):
    doc = kit.metrics_doc({"sta": [0.5] * N})
    doc["metrics"]["sta"]["mean"] = 0.99
    d = G.decide(doc, policy({"sta": {"min": 0.9}}))
    assert not d.passed and any("disagrees with the clip values" in r for r in d.reasons)


def test_a_clip_list_shorter_than_the_benchmark_fails(kit):
    doc = kit.metrics_doc({"sta": [0.99] * N})
    doc["clips"] = doc["clips"][:1]
    doc["metrics"]["sta"] = {"mean": 0.99, "count": 1, "missing": 0}
    d = G.decide(doc, policy({"sta": {"min": 0.5}}))
    assert not d.passed and any(f"lists 1 clips but its benchmark has {N}" in r for r in d.reasons)
    doc["benchmark"].pop("n_clips")
    champ = kit.metrics_doc({"sta": [0.9] * N})
    d = G.decide(doc, policy({"sta": {"min": 0.5, "tolerance": 0.1}}), champion_of(champ))
    assert not d.passed and any(f"scored on 1 of the champion's {N} benchmark clips" in r for r in d.reasons)


def test_undefined_clips_are_left_out_of_the_pairing(kit):
    champ = kit.metrics_doc({"cisc": [0.9] * 5 + [None] * 5})
    chal = kit.metrics_doc({"cisc": [0.9] * 5 + [None] * 5})
    d = G.decide(chal, policy({"cisc": {"tolerance": 0.0}}), champion_of(champ))
    assert d.passed and d.checks[0].paired == 5 and d.checks[0].challenger_count == 5


def test_mismatched_benchmark_is_blocked(kit):
    champ = kit.metrics_doc({"sta": [0.5] * N}, digest="a" * 64, bench_id="old/eval")
    chal = kit.metrics_doc({"sta": [0.9] * N}, digest="b" * 64, bench_id="new/eval")
    d = G.decide(chal, policy({"sta": {"min": 0.1, "tolerance": 0.0}}), champion_of(champ))
    assert not d.passed and d.reasons[0].startswith("benchmark mismatch: challenger evaluated on new/eval (bbbbbbbbbbbb)")
    assert d.checks[0].regression_ok is None  # no comparison against another benchmark


def test_no_benchmark_clips_is_blocked(kit):
    d = G.decide(kit.metrics_doc({}), policy({"sta": {"min": 0.1}}))
    assert not d.passed and any("no benchmark clips" in r for r in d.reasons)


def test_run_level_validation_loss_compared_directly(kit):
    champ = kit.metrics_doc({"sta": [1.0] * N}, run_level={"val_loss_video": 0.40})
    rule = {"val_loss_video": {"max": 1.0, "tolerance": 0.05}}
    ok = G.decide(kit.metrics_doc({"sta": [1.0] * N}, run_level={"val_loss_video": 0.44}), policy(rule), champion_of(champ))
    assert ok.passed and ok.checks[0].diff_mean == pytest.approx(-0.04)
    bad = G.decide(kit.metrics_doc({"sta": [1.0] * N}, run_level={"val_loss_video": 0.50}), policy(rule), champion_of(champ))
    assert not bad.passed and "val_loss_video: regression vs champion" in bad.reasons[0]
    absent = G.decide(kit.metrics_doc({"sta": [1.0] * N}), policy(rule), champion_of(champ))
    assert not absent.passed


def test_champion_without_the_metric_cannot_vouch_for_it(kit):
    champ = kit.metrics_doc({"sta": [1.0] * N})
    d = G.decide(kit.metrics_doc({"sta": [1.0] * N, "tams": [1.0] * N}), policy({"tams": {"tolerance": 0.1}}), champion_of(champ))
    assert not d.passed and "champion's metrics.json has no value" in d.reasons[0]


# --------------------------------------------------------------------------- registry


def _register_champion(doc: dict, tmp_path, model_name: str) -> str:
    """A champion whose gate judged ``doc``, as a release leaves it (the signed ledger)."""
    from ledger_support import gated_version

    from mavin_ops import registry

    version = gated_version(model_name, metrics=doc)
    registry.promote(model_name, version, reason="champion for the test")
    return version


@pytest.fixture
def policy_file(tmp_path, mlflow_uri):
    path = tmp_path / "policy.yaml"
    path.write_text("bootstrap: {resamples: 500, seed: 0}\nmetrics:\n  sta: {min: 0.5, tolerance: 0.02}\n  tams: {min: 0.5, tolerance: 0.02}\n")
    return path


def test_no_registered_model_means_floors_only(kit, tmp_path, policy_file, model_name):
    metrics = kit.write_doc(tmp_path / "m.json", kit.metrics_doc({"sta": [0.9] * N, "tams": [0.9] * N}))
    d = G.run_gate(metrics, policy_file, tmp_path / "gate", model_name=model_name)
    assert d.passed and d.champion is None
    saved = json.loads((tmp_path / "gate" / G.GATE_JSON).read_text())
    assert saved["verdict"] == "pass" and saved["champion"] is None and saved["policy"]["source"] == str(policy_file)


def test_registered_model_without_alias_means_floors_only(kit, tmp_path, policy_file, model_name):
    from mlflow.tracking import MlflowClient

    from mavin_ops import settings

    MlflowClient(settings.tracking_uri()).create_registered_model(model_name)
    assert G.load_champion(model_name) is None


def test_champion_from_registry_blocks_a_regression(kit, tmp_path, policy_file, model_name):
    version = _register_champion(kit.metrics_doc({"sta": [0.95] * N, "tams": [0.9] * N}), tmp_path, model_name)
    metrics = kit.write_doc(tmp_path / "m.json", kit.metrics_doc({"sta": [0.90] * N, "tams": [0.9] * N}))
    d = G.run_gate(metrics, policy_file, tmp_path / "gate", model_name=model_name)
    assert not d.passed and d.champion["version"] == version
    assert d.champion["source"] == f"mavin-home:/ledger/metrics/{d.champion['metrics_sha256']}.json"
    assert [c.name for c in d.checks if not c.passed] == ["sta"]


def test_champion_from_registry_lets_an_improvement_pass(kit, tmp_path, policy_file, model_name):
    _register_champion(kit.metrics_doc({"sta": [0.80] * N, "tams": [0.8] * N}), tmp_path, model_name)
    metrics = kit.write_doc(tmp_path / "m.json", kit.metrics_doc({"sta": [0.90] * N, "tams": [0.8] * N}))
    d = G.run_gate(metrics, policy_file, tmp_path / "gate", model_name=model_name)
    assert d.passed and d.checks[0].diff_mean == pytest.approx(0.1)


def test_unreadable_champion_metrics_fail_the_gate(kit, tmp_path, policy_file, model_name):
    from mavin_ops import settings

    version = _register_champion(kit.metrics_doc({"sta": [0.9] * N, "tams": [0.9] * N}), tmp_path, model_name)
    champ = G.load_champion(model_name)
    settings.local_path(champ.source).unlink()
    metrics = kit.write_doc(tmp_path / "m.json", kit.metrics_doc({"sta": [0.9] * N, "tams": [0.9] * N}))
    d = G.run_gate(metrics, policy_file, tmp_path / "gate", model_name=model_name)
    assert not d.passed and d.reasons[0].startswith(f"cannot read the champion's metrics: champion {model_name} v{version}: cannot read its metrics")


def test_gate_report_and_mlflow_logging(kit, tmp_path, policy_file, model_name):
    import mlflow
    from mlflow.tracking import MlflowClient

    from mavin_ops import settings

    _register_champion(kit.metrics_doc({"sta": [0.95] * N, "tams": [0.8] * N}), tmp_path, model_name)
    metrics = kit.write_doc(tmp_path / "m.json", kit.metrics_doc({"sta": [0.90] * N, "tams": [0.85] * N}))
    with mlflow.start_run() as run:
        d = G.run_gate(metrics, policy_file, tmp_path / "gate", model_name=model_name)
    assert not d.passed
    page = (tmp_path / "gate" / G.GATE_HTML).read_text()
    assert "Release gate" in page and "FAIL" in page and "regression vs champion" in page
    svg = page[page.index("<svg") : page.index("</svg>") + 6]
    root = ET.fromstring(svg)  # well-formed inline SVG
    labels = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "sta" in labels and "tams" in labels
    client = MlflowClient(settings.tracking_uri())
    logged = client.get_run(run.info.run_id)
    assert logged.data.metrics["gate/passed"] == 0.0 and logged.data.tags["mavin.gate"] == "fail"
    assert sorted(a.path for a in client.list_artifacts(run.info.run_id, "gate")) == ["gate/gate.html", "gate/gate.json"]


def test_report_escapes_text(kit):
    doc = kit.metrics_doc({"sta": [0.9] * 3}, bench_id="<script>alert(1)</script>")
    from mavin_ops.evaluation.report import render_gate_html

    page = render_gate_html(G.decide(doc, policy({"sta": {"min": 0.95}})))
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_run_gate_with_a_champion_file(kit, tmp_path, policy_file):
    champ = kit.write_doc(tmp_path / "champ.json", kit.metrics_doc({"sta": [0.9] * N, "tams": [0.9] * N}))
    metrics = kit.write_doc(tmp_path / "m.json", kit.metrics_doc({"sta": [0.9] * N, "tams": [0.9] * N}))
    d = G.run_gate(metrics, policy_file, tmp_path / "gate", champion_metrics_path=champ)
    assert d.passed and d.champion["source"] == str(champ)
    assert all(c.regression_ok for c in d.checks)


def test_unreadable_challenger_metrics_raise(tmp_path, policy_file):
    from mavin_ops.evaluation.results import MetricsFileError

    bad = tmp_path / "metrics.json"
    bad.write_text("{}")
    with pytest.raises(MetricsFileError, match="schema"):
        G.run_gate(bad, policy_file, tmp_path / "gate")


def test_not_applicable_is_believed_only_for_metrics_a_script_can_rule_out(kit):
    doc = kit.metrics_doc({"sta": [0.99] * (N - 2) + [0.1, 0.1]})
    for clip in doc["clips"][-2:]:
        clip["not_applicable"] = ["sta"]  # a file that hides its two bad clips
    doc["metrics"]["sta"]["mean"] = 0.99
    d = G.decide(doc, policy({"sta": {"min": 0.9}}))
    assert not d.passed, d.reasons
    everything_na = kit.metrics_doc({"cisc": [None] * N})
    everything_na["metrics"]["cisc"] = {"mean": 0.99, "count": N, "missing": 0}
    d = G.decide(everything_na, policy({"cisc": {"min": 0.5}}))
    assert not d.passed and "cisc: missing: no benchmark clip has a value" in d.reasons


def test_a_champion_with_values_on_few_clips_cannot_vouch_for_non_regression(kit):
    chal = kit.metrics_doc({"sta": [0.95] * N})
    champ = kit.metrics_doc({"sta": [0.99] + [0.5] * (N - 1)})
    for clip in champ["clips"][1:]:
        clip["metrics"]["sta"] = "0.5"  # not numbers: only one clip pairs
    champ["metrics"]["sta"]["mean"] = 0.99
    d = G.decide(chal, policy({"sta": {"min": 0.5, "tolerance": 0.05}}), champion_of(champ))
    assert not d.passed and any(f"only 1 of the {N} benchmark clips it applies to" in r for r in d.reasons), d.reasons


def test_challenger_and_champion_must_rule_out_the_same_clips(kit):
    champ = kit.metrics_doc({"cisc": [0.9] * N})
    chal = kit.metrics_doc({"cisc": [0.9] * (N - 1) + [None]})  # hides its last clip as "not applicable"
    d = G.decide(chal, policy({"cisc": {"tolerance": 0.05}}), champion_of(champ))
    assert not d.passed and any("rules out other clips than the champion" in r for r in d.reasons), d.reasons


def test_a_limited_evaluation_cannot_pass_the_gate(kit):
    """`release --sample-limit 1` scores one clip of the benchmark: the gate says so and fails."""
    doc = kit.metrics_doc({"sta": [0.99]})
    doc["benchmark"]["split_clips"] = 32
    d = G.decide(doc, policy({"sta": {"min": 0.5}}))
    assert not d.passed and any("scored on 1 of the benchmark's 32 clips" in r for r in d.reasons)
    doc["benchmark"]["split_clips"] = 1
    assert G.decide(doc, policy({"sta": {"min": 0.5}})).passed


# --------------------------------------------------------------------------- evaluation profiles


def _footage_policy(extra: dict | None = None) -> G.GatePolicy:
    return G.parse_policy({"metrics": {"sta": {"min": 0.5}, "fidelity_fd": {"max": 10.0}, "character_recall": {"min": 0.5}},
                           "profiles": {"footage": {"not_measured": ["fidelity_fd", "character_recall"],
                                                    "why": "no world encoder for real footage"}, **(extra or {})}}, "test-policy")


def test_a_metric_the_footage_profile_cannot_measure_is_said_not_failed_and_only_there(kit):
    from mavin_ops.evaluation.report import render_gate_html

    doc = kit.metrics_doc({"sta": [1.0] * N})
    doc["config"] = {"profile": "footage"}
    d = G.decide(doc, _footage_policy())
    assert d.passed, d.reasons
    notes = {c.name: c.not_measured for c in d.checks}
    assert notes["fidelity_fd"].startswith("not measured with the footage profile: no world encoder") and notes["sta"] == ""
    assert "not measured" in render_gate_html(d)
    # The same numbers from a synthetic evaluation: the metrics are missing, which fails.
    doc["config"] = {"profile": "synthetic"}
    d = G.decide(doc, _footage_policy())
    assert not d.passed and "fidelity_fd: missing from the challenger's metrics.json" in d.reasons
    # A value the footage evaluation did write is checked as usual.
    doc = kit.metrics_doc({"sta": [1.0] * N, "character_recall": [0.1] * N})
    doc["config"] = {"profile": "footage"}
    d = G.decide(doc, _footage_policy())
    assert not d.passed and any(r.startswith("character_recall: 0.1 is below the floor 0.5") for r in d.reasons), d.reasons


def test_a_champion_scored_with_another_profile_is_not_compared(kit):
    doc = kit.metrics_doc({"sta": [1.0] * N})
    doc["config"] = {"profile": "footage"}
    champ = kit.metrics_doc({"sta": [1.0] * N})
    d = G.decide(doc, _footage_policy(), champion_of(champ))
    assert not d.passed and any(r.startswith("evaluation profile mismatch") for r in d.reasons), d.reasons


@pytest.mark.parametrize(
    "profiles, match",
    [
        ({"studio": {"not_measured": ["sta"], "why": "x"}}, r"profiles\.studio: unknown profile"),
        ({"footage": {"not_measured": ["vc"], "why": "x"}}, r"'vc' has no rule under metrics"),
        ({"footage": {"not_measured": ["sta"]}}, r"profiles\.footage\.why"),
        ({"footage": {"not_measured": [], "why": "x"}}, r"non-empty list"),
        ({"footage": ["sta"]}, r"expected a mapping with not_measured"),
    ],
)
def test_bad_profile_sections_are_one_line_errors(profiles, match):
    with pytest.raises(G.PolicyError, match=match) as err:
        G.parse_policy({"metrics": {"sta": {"min": 0.5}}, "profiles": profiles}, "p.yaml")
    assert "\n" not in str(err.value)
