"""The release gate: absolute floors, and non-regression against the champion decided with a
paired bootstrap confidence interval over benchmark clips.

Policy file (YAML; the default is ``evaluation/gate_policy.yaml``)::

    version: 1
    bootstrap: {resamples: 2000, confidence: 0.95, seed: 0}
    metrics:
      sta:  {min: 0.80, tolerance: 0.02}     # higher is better: a floor
      shot_boundary_deviation: {max: 1.0, tolerance: 0.25}   # lower is better: a ceiling
      val_loss_video: {tolerance: 0.05}      # no floor, non-regression only
      shot_boundary_deviation: {max: 2.0, coverage: 0.5}    # values on half the clips suffice

For every metric in the policy:

1. Coverage: a per-clip metric must have a real number (not a boolean, not a string) on every
   benchmark clip it applies to, or on the share ``coverage`` (default 1.0) the policy sets
   explicitly. A clip is left out only when the runner marked the metric ``not_applicable``
   for it from the benchmark's script (no cut scripted, no two shots sharing a character,
   ...). The mean is recomputed from the clip values; an aggregate that disagrees with them,
   or is not a real number, fails. The challenger's aggregate value must exist and be finite,
   and no clip may be NaN.
2. Floor: ``mean >= min`` and / or ``mean <= max``. A floor can also be stated as a
   principle instead of a number: ``of_truth: f`` (higher-is-better metrics) puts the floor
   at ``f`` times what the benchmark's own ground truth scores on the same metric, and
   ``of_shuffled: f`` (lower-is-better metrics) puts the ceiling at ``f`` times what the
   ground truth with every frame's pixels shuffled scores (the right colours, nothing
   drawn); both reference scores come from the ``references`` section the evaluation writes
   on the same benchmark with the same detectors and encoder. With ``min`` too, the higher
   floor applies.
3. Non-regression (when a champion exists and the metric has a ``tolerance``): per clip,
   ``d = challenger - champion`` oriented so that positive is better (negated for
   lower-is-better metrics); ``B`` resamples of the clips with replacement (fixed seed) give
   the bootstrap distribution of the mean of ``d``; the gate passes when the lower bound of
   the ``confidence`` interval is ``>= -tolerance``. Clips where either side has no value
   (e.g. "no pairs") are left out of the pairing; zero paired clips fails. Run-level
   metrics (validation losses) have one value per run and are compared directly.

The whole gate fails with a reason when the challenger has no benchmark clips, or when the
champion was evaluated on a different benchmark (digest) or with another world encoder. With no champion (the ledger names
none) only the floors apply.

The champion is the one the platform's signed ledger names (:mod:`mavin_ops.ledger`), never
MLflow's alias; its per-clip metrics.json is the one its own gate judged, read from inside the
state folder and checked against the sha256 in the ledger. MLflow's :data:`METRICS_TAG` on a
version says where they are, for people.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from mavin_ops.bounded import shown
from mavin_ops.evaluation.metrics import METRICS
from mavin_ops.evaluation.results import MetricsFileError, parse_metrics, read_metrics, write_json
from mavin_ops.errors import MavinError

__all__ = [
    "DEFAULT_MODEL_NAME",
    "DEFAULT_POLICY",
    "GATE_HTML",
    "GATE_JSON",
    "METRICS_ARTIFACT",
    "METRICS_TAG",
    "Champion",
    "GateDecision",
    "GatePolicy",
    "MetricCheck",
    "MetricRule",
    "PolicyError",
    "decide",
    "load_champion",
    "load_policy",
    "paired_bootstrap_ci",
    "run_gate",
]

DEFAULT_POLICY = Path(__file__).with_name("gate_policy.yaml")
DEFAULT_MODEL_NAME = "mavin"
#: Model-version tag holding the location of that version's metrics.json.
METRICS_TAG = "mavin.metrics_json"
#: Where :func:`mavin_ops.evaluation.runner.evaluate_dir` logs metrics.json in its run.
METRICS_ARTIFACT = "evaluation/metrics.json"
GATE_JSON = "gate.json"
GATE_HTML = "gate.html"

_RULE_KEYS = ("min", "max", "tolerance", "coverage", "of_truth", "of_shuffled")
#: Where each principle-based floor's reference score is read in metrics.json ``references``.
_REFERENCE_OF = {"of_truth": "ground_truth", "of_shuffled": "shuffled"}
_BOOTSTRAP_KEYS = ("resamples", "confidence", "seed")
_PROFILES = ("synthetic", "footage")


class PolicyError(MavinError, ValueError):
    """A gate policy file that cannot be used: names the file, the field and the fix."""


# --------------------------------------------------------------------------- policy


@dataclass(frozen=True, slots=True)
class MetricRule:
    """One metric's rule: optional floor ``min`` / ceiling ``max`` on the aggregate mean,
    optional non-regression ``tolerance`` (in the metric's own units), and the share of the
    clips the metric applies to that must carry a value (``coverage``, None = all of them)."""

    name: str
    min: float | None = None
    max: float | None = None
    tolerance: float | None = None
    coverage: float | None = None
    of_truth: float | None = None
    of_shuffled: float | None = None

    @property
    def higher_is_better(self) -> bool:
        return METRICS[self.name].higher_is_better


@dataclass(frozen=True)
class GatePolicy:
    rules: tuple[MetricRule, ...]
    resamples: int = 2000
    confidence: float = 0.95
    seed: int = 0
    source: str = "<memory>"
    digest: str = ""
    #: Evaluation profile -> (metrics that profile cannot measure, why).
    profiles: Mapping[str, tuple[tuple[str, ...], str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "digest": self.digest,
            "bootstrap": {"resamples": self.resamples, "confidence": self.confidence, "seed": self.seed},
            "metrics": {r.name: {k: getattr(r, k) for k in _RULE_KEYS if getattr(r, k) is not None} for r in self.rules},
            "profiles": {k: {"not_measured": list(v[0]), "why": v[1]} for k, v in self.profiles.items()},
        }


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise PolicyError(f"{where}: expected a finite number, got {shown(value)}")
    return float(value)


def parse_policy(data: Any, source: str = "<memory>") -> GatePolicy:
    """Check a decoded policy and build a :class:`GatePolicy`; every error is one line that
    names the file and field."""
    if not isinstance(data, Mapping):
        raise PolicyError(f"{source}: a gate policy must be a mapping with a 'metrics' section")
    unknown_top = sorted(set(data) - {"version", "bootstrap", "metrics", "profiles"})
    if unknown_top:
        raise PolicyError(f"{source}: unknown section '{unknown_top[0]}'; allowed: version, bootstrap, metrics, profiles")
    if data.get("version", 1) != 1:
        raise PolicyError(f"{source}: version: {shown(data.get('version'))} is not supported; use version: 1")
    boot = data.get("bootstrap") or {}
    if not isinstance(boot, Mapping):
        raise PolicyError(f"{source}: bootstrap: expected a mapping with {', '.join(_BOOTSTRAP_KEYS)}")
    for key in boot:
        if key not in _BOOTSTRAP_KEYS:
            raise PolicyError(f"{source}: bootstrap.{key}: unknown key; allowed: {', '.join(_BOOTSTRAP_KEYS)}")
    resamples = boot.get("resamples", 2000)
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 100:
        raise PolicyError(f"{source}: bootstrap.resamples: expected an integer >= 100, got {shown(resamples)}")
    confidence = _number(boot.get("confidence", 0.95), f"{source}: bootstrap.confidence")
    if not 0.5 <= confidence < 1.0:
        raise PolicyError(f"{source}: bootstrap.confidence: expected a value in [0.5, 1), got {confidence}")
    seed = boot.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise PolicyError(f"{source}: bootstrap.seed: expected a non-negative integer, got {shown(seed)}")

    metrics = data.get("metrics")
    if not isinstance(metrics, Mapping) or not metrics:
        raise PolicyError(f"{source}: metrics: expected a non-empty mapping of metric name to rule")
    rules = []
    for name, rule in metrics.items():
        where = f"{source}: metrics.{name}"
        if name not in METRICS:
            raise PolicyError(f"{where}: unknown metric '{name}'; allowed names: {', '.join(METRICS)}")
        if not isinstance(rule, Mapping):
            raise PolicyError(f"{where}: expected a mapping with any of {', '.join(_RULE_KEYS)}")
        for key in rule:
            if key not in _RULE_KEYS:
                raise PolicyError(f"{where}.{key}: unknown key; allowed: {', '.join(_RULE_KEYS)}")
        vals = {k: (None if rule.get(k) is None else _number(rule[k], f"{where}.{k}")) for k in _RULE_KEYS}
        if all(vals[k] is None for k in ("min", "max", "tolerance", "of_truth", "of_shuffled")):
            raise PolicyError(f"{where}: the rule sets nothing; give a min, a max, an of_truth / of_shuffled or a tolerance")
        higher = METRICS[name].higher_is_better
        for key, wants_higher in (("of_truth", True), ("of_shuffled", False)):
            if vals[key] is None:
                continue
            if higher != wants_higher:
                raise PolicyError(
                    f"{where}.{key}: {name} is {'higher' if higher else 'lower'} is better; use "
                    f"{'of_truth (a floor)' if higher else 'of_shuffled (a ceiling)'} for it"
                )
            if not 0.0 < vals[key] <= 1.0:
                raise PolicyError(f"{where}.{key}: expected a fraction in (0, 1], got {vals[key]}")
        if vals["coverage"] is not None and not 0.0 < vals["coverage"] <= 1.0:
            raise PolicyError(f"{where}.coverage: expected a share in (0, 1], got {vals['coverage']}")
        if vals["tolerance"] is not None and vals["tolerance"] < 0:
            raise PolicyError(f"{where}.tolerance: must be >= 0, got {vals['tolerance']}")
        if vals["min"] is not None and vals["max"] is not None and vals["min"] > vals["max"]:
            raise PolicyError(f"{where}: min {vals['min']} is above max {vals['max']}")
        rules.append(MetricRule(str(name), **{k: vals[k] for k in _RULE_KEYS}))
    return GatePolicy(tuple(rules), int(resamples), float(confidence), int(seed), source,
                      profiles=_parse_profiles(data.get("profiles"), {r.name for r in rules}, source))


def _parse_profiles(data: Any, listed: set[str], source: str) -> dict[str, tuple[tuple[str, ...], str]]:
    """``profiles: {footage: {not_measured: [...], why: "..."}}``: metrics an evaluation
    profile has no detector for. Only metrics the policy lists, and a reason is required."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise PolicyError(f"{source}: profiles: expected a mapping of profile name to {{not_measured, why}}")
    out = {}
    for name, entry in data.items():
        where = f"{source}: profiles.{name}"
        if name not in _PROFILES:
            raise PolicyError(f"{where}: unknown profile; allowed: {', '.join(_PROFILES)}")
        if not isinstance(entry, Mapping) or set(entry) - {"not_measured", "why"}:
            raise PolicyError(f"{where}: expected a mapping with not_measured (a list of metrics) and why (a sentence)")
        names, why = entry.get("not_measured"), entry.get("why")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise PolicyError(f"{where}.not_measured: expected a non-empty list of metric names")
        for n in names:
            if n not in listed:
                raise PolicyError(f"{where}.not_measured: '{n}' has no rule under metrics; list only metrics the policy checks")
        if not isinstance(why, str) or not why.strip():
            raise PolicyError(f"{where}.why: say why the profile cannot measure these metrics")
        out[str(name)] = (tuple(names), why.strip())
    return out


def load_policy(path: str | os.PathLike | None = None) -> GatePolicy:
    """Read a YAML policy file (default :data:`DEFAULT_POLICY`)."""
    from mavin_ops.bounded import InputError, load_yaml, read_bytes

    path = Path(path) if path else DEFAULT_POLICY
    if not path.exists():
        raise PolicyError(f"{path}: no such gate policy file; pass an existing YAML file or omit it for the default")
    try:
        raw = read_bytes(path, "a gate policy (YAML)")
        data = load_yaml(raw, str(path))
    except (InputError, OSError) as exc:
        raise PolicyError(str(exc) if isinstance(exc, InputError) else f"{path}: cannot be read ({type(exc).__name__})") from None
    policy = parse_policy(data, str(path))
    return GatePolicy(policy.rules, policy.resamples, policy.confidence, policy.seed, str(path), hashlib.sha256(raw).hexdigest())


# --------------------------------------------------------------------------- statistics


def paired_bootstrap_ci(
    diffs: np.ndarray, resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of paired differences: resample the clips
    with replacement ``resamples`` times (``numpy.random.default_rng(seed)``), take each
    resample's mean, return the ``(1-c)/2`` and ``(1+c)/2`` quantiles."""
    d = np.asarray(diffs, dtype=np.float64).ravel()
    if d.size == 0:
        raise ValueError("a bootstrap needs at least one paired difference")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples, dtype=np.float64)
    chunk = max(1, 2_000_000 // d.size)
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        idx = rng.integers(0, d.size, size=(stop - start, d.size))
        means[start:stop] = d[idx].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


# --------------------------------------------------------------------------- champion


@dataclass
class Champion:
    """The model version behind the ``champion`` alias and its metrics (or why they could
    not be read)."""

    model_name: str
    version: str
    run_id: str | None
    source: str  # where its metrics.json came from
    metrics: dict[str, Any] | None
    error: str | None = None
    metrics_sha256: str = ""  # of the bytes compared (the ledger's gate record keeps it)

    def summary(self) -> dict[str, Any]:
        bench = (self.metrics or {}).get("benchmark", {})
        return {
            "model_name": self.model_name,
            "version": self.version,
            "run_id": self.run_id,
            "source": self.source,
            "benchmark": {"id": bench.get("id"), "digest": bench.get("digest")},
            "error": self.error,
            "metrics_sha256": self.metrics_sha256,
        }


def load_champion(model_name: str) -> Champion | None:
    """The champion of ``model_name`` as the platform's signed ledger names it, or ``None``
    when the ledger has none. Its metrics are the ones its own gate judged, read only from
    inside the state folder and checked against the sha256 the ledger holds
    (:func:`mavin_ops.registry.champion_metrics`, the one resolver); a champion whose metrics
    cannot be read that way comes back with ``error`` set (the gate then fails:
    non-regression cannot be checked)."""
    from mavin_ops import registry

    try:
        found = registry.champion_metrics(model_name)
    except registry.PromotionError as exc:
        return Champion(model_name, "-", None, "", None, f"cannot read the champion's metrics: {exc}")
    if found is None:
        return None
    version, where, data = found
    try:
        return Champion(model_name, version, None, where, parse_metrics(data, where), metrics_sha256=hashlib.sha256(data).hexdigest())
    except MetricsFileError as exc:
        return Champion(model_name, version, None, where, None, f"cannot read the metrics.json of champion {model_name} v{version}: {exc}")


# --------------------------------------------------------------------------- decision


@dataclass
class MetricCheck:
    """The verdict on one metric, with every number the report shows."""

    name: str
    higher_is_better: bool
    per_clip: bool
    floor_min: float | None
    floor_max: float | None
    tolerance: float | None
    floor_rule: str = ""  # how a principle-based floor was set, e.g. "0.7 x ground truth 0.96"
    challenger: float | None = None
    challenger_count: int = 0
    champion: float | None = None
    paired: int = 0
    diff_mean: float | None = None  # oriented: positive = challenger better
    ci_low: float | None = None
    ci_high: float | None = None
    floor_ok: bool | None = None
    regression_ok: bool | None = None  # None: not checked (no champion / no tolerance)
    passed: bool = False
    reasons: list[str] = field(default_factory=list)
    #: Set when the evaluation's profile cannot measure this metric and the policy says so
    #: (``profiles``): the check neither passes nor fails, and the page says why.
    not_measured: str = ""


@dataclass
class GateDecision:
    """The gate's answer. ``passed`` is the only thing the pipeline branches on; the rest
    explains it."""

    passed: bool
    reasons: list[str]
    checks: list[MetricCheck]
    benchmark: dict[str, Any]
    champion: dict[str, Any] | None
    policy: dict[str, Any]
    challenger_source: str = ""
    created_at: str = ""

    @property
    def verdict(self) -> str:
        return "pass" if self.passed else "fail"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["verdict"] = self.verdict
        return out

    def summary(self) -> str:
        """One line for logs: the verdict and the first reasons."""
        if self.passed:
            return f"gate: pass ({len(self.checks)} metrics checked)"
        shown = "; ".join(self.reasons[:3]) + (f" (+{len(self.reasons) - 3} more)" if len(self.reasons) > 3 else "")
        return f"gate: fail: {shown}"


def _clip_values(metrics: dict[str, Any], name: str) -> dict[str, Any]:
    return {c["id"]: c["metrics"].get(name) for c in metrics.get("clips", []) if name in c.get("metrics", {})}


def _is_nan(v: Any) -> bool:
    return isinstance(v, float) and not math.isfinite(v)


def _is_real(v: Any) -> bool:
    """A JSON number: int or float, never a boolean (``true`` is an int in Python)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


#: The metrics a benchmark clip's script can rule out (the runner's ``not_applicable``); a
#: metrics file that marks any other metric not applicable is not believed.
MAY_NOT_APPLY = frozenset({"shot_boundary_deviation", "cisc", "bisc", "vc", "ac", "character_recall", "character_precision"})


def _coverage(rule: MetricRule, chal: dict[str, Any]) -> tuple[list[str], dict[str, float], list[str]]:
    """(reasons, the real values by clip id, the ids the metric applies to) for a per-clip
    metric: every clip not marked ``not_applicable`` for it must carry a real number, or the
    policy's ``coverage`` share of them."""
    reasons: list[str] = []
    applies: list[str] = []
    values: dict[str, float] = {}
    wrong: list[str] = []
    for clip in chal.get("clips", []):
        if rule.name in MAY_NOT_APPLY and rule.name in (clip.get("not_applicable") or []):
            continue
        cid = str(clip.get("id"))
        applies.append(cid)
        v = (clip.get("metrics") or {}).get(rule.name)
        if _is_real(v):
            values[cid] = float(v)
        elif v is not None:
            wrong.append(cid)
    if wrong:
        reasons.append(f"{rule.name}: {len(wrong)} clip value(s) are not numbers ({', '.join(wrong[:5])}); re-run the evaluation")
    need = 1.0 if rule.coverage is None else rule.coverage
    if applies and len(values) < need * len(applies) - 1e-9:
        absent = [cid for cid in applies if cid not in values]
        reasons.append(
            f"{rule.name}: values on {len(values)} of the {len(applies)} benchmark clips it applies to "
            f"(missing: {', '.join(absent[:5])}{' ...' if len(absent) > 5 else ''}); the policy requires "
            f"{need:.0%} (set metrics.{rule.name}.coverage to accept less)"
        )
    return reasons, values, applies


def _check_metric(
    rule: MetricRule, policy: GatePolicy, chal: dict[str, Any], champ: dict[str, Any] | None
) -> MetricCheck:
    info = METRICS[rule.name]
    chk = MetricCheck(rule.name, info.higher_is_better, info.per_clip, rule.min, rule.max, rule.tolerance)
    sign = 1.0 if info.higher_is_better else -1.0
    agg = chal.get("metrics", {}).get(rule.name)
    if not isinstance(agg, dict):
        chk.reasons.append(f"{rule.name}: missing from the challenger's metrics.json")
        return chk
    chk.challenger = agg.get("mean")
    chk.challenger_count = int(agg["count"]) if _is_real(agg.get("count")) else 0
    if info.per_clip:
        cover_reasons, clip_values, applies = _coverage(rule, chal)
        chk.challenger_count = len(clip_values)
        chk.reasons.extend(cover_reasons)
        bad_clips = sorted(cid for cid, v in clip_values.items() if _is_nan(v))
        if bad_clips:
            chk.reasons.append(f"{rule.name}: NaN in {len(bad_clips)} clip(s) ({', '.join(bad_clips[:5])})")
        if not clip_values:
            chk.challenger = None  # no clip carries a value: an aggregate alone vouches for nothing
        if chk.challenger is not None and clip_values and not bad_clips and _is_real(chk.challenger) and math.isfinite(chk.challenger):
            recomputed = float(np.mean(list(clip_values.values())))
            if not math.isclose(recomputed, float(chk.challenger), rel_tol=1e-6, abs_tol=1e-9):
                chk.reasons.append(
                    f"{rule.name}: the aggregate mean {chk.challenger!r} disagrees with the clip values (mean {recomputed:.6g}); re-run the evaluation"
                )
    if chk.challenger is None:
        chk.reasons.append(f"{rule.name}: missing: no benchmark clip has a value")
    elif not _is_real(chk.challenger) or _is_nan(chk.challenger):
        chk.reasons.append(f"{rule.name}: challenger value is {chk.challenger!r}, not a finite number")
        chk.challenger = None
    if chk.reasons:
        return chk

    for key, ref_name in _REFERENCE_OF.items():
        fraction = getattr(rule, key)
        if fraction is None:
            continue
        ref = ((chal.get("references") or {}).get(ref_name) or {}).get(rule.name)
        if not _is_real(ref) or _is_nan(ref):
            chk.reasons.append(
                f"{rule.name}: the metrics.json has no {ref_name.replace('_', ' ')} reference score to set the floor "
                f"{key}: {fraction:g} from; re-run the evaluation against the benchmark"
            )
            return chk
        bound = fraction * float(ref)
        chk.floor_rule = f"{fraction:g} x {ref_name.replace('_', ' ')} {float(ref):.4g}"
        if key == "of_truth":
            chk.floor_min = bound if chk.floor_min is None else max(chk.floor_min, bound)
        else:
            chk.floor_max = bound if chk.floor_max is None else min(chk.floor_max, bound)

    value = float(chk.challenger)
    chk.floor_ok = True
    how = f" ({chk.floor_rule})" if chk.floor_rule else ""
    if chk.floor_min is not None and value < chk.floor_min:
        chk.floor_ok = False
        chk.reasons.append(f"{rule.name}: {value:.4g} is below the floor {chk.floor_min:.4g}{how}")
    if chk.floor_max is not None and value > chk.floor_max:
        chk.floor_ok = False
        chk.reasons.append(f"{rule.name}: {value:.4g} is above the ceiling {chk.floor_max:.4g}{how}")

    if champ is not None and rule.tolerance is not None:
        cagg = champ.get("metrics", {}).get(rule.name)
        cmean = cagg.get("mean") if isinstance(cagg, dict) else None
        chk.champion = cmean if _is_real(cmean) else None
        if cagg is None:
            chk.reasons.append(f"{rule.name}: the champion's metrics.json has no value, cannot check non-regression; re-evaluate the champion")
            chk.regression_ok = False
        elif info.per_clip:
            a, b = _clip_values(chal, rule.name), _clip_values(champ, rule.name)
            if any(_is_nan(v) for v in b.values()):
                chk.reasons.append(f"{rule.name}: the champion has NaN clip values; re-evaluate the champion")
                chk.regression_ok = False
            else:
                ids = sorted(cid for cid in a if cid in b and _is_real(a[cid]) and _is_real(b[cid]))
                chk.paired = len(ids)
                need = (1.0 if rule.coverage is None else rule.coverage) * len(applies)
                if rule.name in MAY_NOT_APPLY:
                    # Same benchmark, same scripts: both files must rule out the same clips.
                    def ruled_out(doc: dict[str, Any]) -> set[str] | None:
                        clips = doc.get("clips", [])
                        if not clips or any("not_applicable" not in c for c in clips):
                            return None  # written before the runner marked them: nothing to compare
                        return {str(c.get("id")) for c in clips if rule.name in (c.get("not_applicable") or [])}

                    mine, theirs = ruled_out(chal), ruled_out(champ)
                    if mine is not None and theirs is not None and mine != theirs:
                        chk.reasons.append(
                            f"{rule.name}: the challenger rules out other clips than the champion did on the same benchmark "
                            f"({', '.join(sorted(mine ^ theirs)[:5])}); re-run the evaluation"
                        )
                        chk.regression_ok = False
                if not ids:
                    chk.reasons.append(f"{rule.name}: no benchmark clip has a value for both challenger and champion")
                    chk.regression_ok = False
                elif len(ids) < need - 1e-9:
                    chk.reasons.append(
                        f"{rule.name}: only {len(ids)} of the {len(applies)} benchmark clips it applies to have a value from both "
                        "challenger and champion; re-evaluate the champion on this benchmark"
                    )
                    chk.regression_ok = False
                else:
                    d = sign * (np.array([a[i] for i in ids], dtype=np.float64) - np.array([b[i] for i in ids], dtype=np.float64))
                    chk.diff_mean = float(d.mean())
                    chk.ci_low, chk.ci_high = paired_bootstrap_ci(d, policy.resamples, policy.confidence, policy.seed)
                    chk.regression_ok = chk.ci_low >= -rule.tolerance - 1e-12
                    if not chk.regression_ok:
                        chk.reasons.append(
                            f"{rule.name}: regression vs champion: {int(policy.confidence * 100)}% CI of the paired "
                            f"difference [{chk.ci_low:.4g}, {chk.ci_high:.4g}] goes below -{rule.tolerance:.4g}"
                        )
        else:
            if chk.champion is None or _is_nan(chk.champion):
                chk.reasons.append(f"{rule.name}: the champion's value is {cmean!r}; re-evaluate the champion")
                chk.regression_ok = False
            else:
                diff = sign * (value - float(chk.champion))
                chk.diff_mean = chk.ci_low = chk.ci_high = diff
                chk.regression_ok = diff >= -rule.tolerance - 1e-12
                if not chk.regression_ok:
                    chk.reasons.append(f"{rule.name}: regression vs champion: {value:.4g} vs {chk.champion:.4g} is worse by more than {rule.tolerance:.4g}")
    chk.passed = not chk.reasons
    return chk


def decide(
    challenger: dict[str, Any],
    policy: GatePolicy,
    champion: Champion | None = None,
    challenger_source: str = "",
) -> GateDecision:
    """Apply ``policy`` to the challenger's metrics (a decoded metrics.json) and, when given,
    the champion's. Pure: no I/O."""
    reasons: list[str] = []
    bench = challenger.get("benchmark", {})
    n_clips = len(challenger.get("clips", []))
    if n_clips == 0:
        reasons.append("no benchmark clips in the challenger's metrics.json; evaluate on a non-empty benchmark")
    elif bench.get("n_clips") is not None and bench.get("n_clips") != n_clips:
        reasons.append(
            f"the challenger's metrics.json lists {n_clips} clips but its benchmark has {bench.get('n_clips')!r}; re-run the evaluation on the whole benchmark"
        )
    elif _is_real(bench.get("split_clips")) and n_clips < bench["split_clips"]:
        reasons.append(
            f"the challenger was scored on {n_clips} of the benchmark's {bench['split_clips']} clips (a limited "
            "evaluation, e.g. --sample-limit); a gate decision needs the whole benchmark"
        )
    champ_metrics = None
    if champion is not None:
        if champion.error:
            reasons.append(champion.error)
        else:
            champ_metrics = champion.metrics
            cb = (champ_metrics or {}).get("benchmark", {})
            if cb.get("digest") != bench.get("digest"):
                reasons.append(
                    f"benchmark mismatch: challenger evaluated on {bench.get('id')} ({str(bench.get('digest'))[:12]}), "
                    f"champion v{champion.version} on {cb.get('id')} ({str(cb.get('digest'))[:12]}); re-evaluate the champion on this benchmark"
                )
                champ_metrics = None
            elif (champ_metrics or {}).get("encoder", {}).get("sha256") != challenger.get("encoder", {}).get("sha256"):
                theirs_enc = str((champ_metrics or {}).get("encoder", {}).get("sha256") or "none")[:12]
                mine_enc = str(challenger.get("encoder", {}).get("sha256") or "none")[:12]
                reasons.append(
                    f"world encoder mismatch: challenger evaluated with encoder {mine_enc}, champion v{champion.version} with "
                    f"{theirs_enc}; re-evaluate the champion with this encoder"
                )
                champ_metrics = None
            else:
                mine = {str(c.get("id")) for c in challenger.get("clips", [])}
                theirs = {str(c.get("id")) for c in (champ_metrics or {}).get("clips", [])}
                if theirs and mine != theirs:
                    reasons.append(
                        f"the challenger was scored on {len(mine & theirs)} of the champion's {len(theirs)} benchmark clips "
                        f"(+{len(mine - theirs)} others); evaluate both on the same whole benchmark"
                    )
    profile = str((challenger.get("config") or {}).get("profile") or "synthetic")
    if champ_metrics is not None and str((champ_metrics.get("config") or {}).get("profile") or "synthetic") != profile:
        reasons.append(f"evaluation profile mismatch: challenger scored with the {profile} profile, champion v{champion.version} "
                       "with another; re-evaluate the champion on this benchmark")
        champ_metrics = None
    unmeasurable, why = policy.profiles.get(profile, ((), ""))
    checks = []
    for rule in policy.rules:
        if rule.name in unmeasurable and rule.name not in (challenger.get("metrics") or {}):
            # The profile has no detector for it (and the evaluation wrote no value): said, not failed.
            info = METRICS[rule.name]
            chk = MetricCheck(rule.name, info.higher_is_better, info.per_clip, rule.min, rule.max, rule.tolerance,
                              not_measured=f"not measured with the {profile} profile: {why}")
            chk.passed = True
            checks.append(chk)
        else:
            checks.append(_check_metric(rule, policy, challenger, champ_metrics))
    for chk in checks:
        reasons.extend(chk.reasons)
    return GateDecision(
        passed=not reasons,
        reasons=reasons,
        checks=checks,
        benchmark={"id": bench.get("id"), "digest": bench.get("digest"), "n_clips": n_clips},
        champion=champion.summary() if champion is not None else None,
        policy=policy.to_dict(),
        challenger_source=challenger_source,
        created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )


# --------------------------------------------------------------------------- entry point


def _summary_sheet(metrics_path: str | os.PathLike, metrics: dict[str, Any]) -> Path | None:
    """The evaluation's summary contact sheet named in metrics.json (``sheets.summary``,
    relative to the file's folder), or None; a name that leaves that folder is ignored."""
    from mavin_ops.safety import UnsafePath, safe_join

    sheets = metrics.get("sheets")
    if not isinstance(sheets, dict) or not isinstance(sheets.get("summary"), str):
        return None
    base = Path(metrics_path) if Path(metrics_path).is_dir() else Path(metrics_path).parent
    try:
        return safe_join(base, sheets["summary"], "contact sheet named in metrics.json")
    except UnsafePath:
        return None


def run_gate(
    metrics_path: str | os.PathLike,
    policy_path: str | os.PathLike | None = None,
    out_dir: str | os.PathLike = ".",
    *,
    model_name: str = DEFAULT_MODEL_NAME,
    tracking_uri: str | None = None,
    champion_metrics_path: str | os.PathLike | None = None,
    run_id: str | None = None,
) -> GateDecision:
    """Decide the gate for the metrics.json at ``metrics_path``; write ``gate.json`` and
    ``gate.html`` to ``out_dir``; log both (and ``gate/passed``) to MLflow when a run is
    active or ``run_id`` is given.

    The champion comes from ``champion_metrics_path`` when given (a file, no registry
    lookup), else from the registry's ``champion`` alias of ``model_name``. A metrics file
    or policy that cannot be read raises with a one-line message (the CLI shows it).
    """
    from mavin_ops.evaluation.report import render_gate_html

    policy = load_policy(policy_path)
    challenger = read_metrics(metrics_path)
    if champion_metrics_path is not None:
        try:
            champion: Champion | None = Champion(model_name, "file", None, str(champion_metrics_path), read_metrics(champion_metrics_path))
        except MetricsFileError as exc:
            champion = Champion(model_name, "file", None, str(champion_metrics_path), None, f"cannot read the champion's metrics: {exc}")
    else:
        champion = load_champion(model_name)
    decision = decide(challenger, policy, champion, challenger_source=str(metrics_path))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / GATE_JSON, decision.to_dict())
    from mavin_ops.data.manifest import atomic_writer

    sheet = _summary_sheet(metrics_path, challenger)
    with atomic_writer(out, GATE_HTML) as fh:
        fh.write(render_gate_html(decision, sheet))
    _log_gate(decision, out, run_id, tracking_uri)
    return decision


def _log_gate(decision: GateDecision, out: Path, run_id: str | None, tracking_uri: str | None) -> None:
    import sys

    # A run can be active in this process only if MLflow is loaded: the CLI's gate never imports it.
    if run_id is None and ("mlflow" not in sys.modules or sys.modules["mlflow"].active_run() is None):
        return
    import mlflow

    if run_id is not None:
        from mavin_ops import tracking

        client = tracking.client(tracking_uri)
        client.log_metric(run_id, "gate/passed", 1.0 if decision.passed else 0.0)
        client.set_tag(run_id, "mavin.gate", decision.verdict)
        client.log_artifact(run_id, str(out / GATE_JSON), "gate")
        client.log_artifact(run_id, str(out / GATE_HTML), "gate")
        return
    mlflow.log_metric("gate/passed", 1.0 if decision.passed else 0.0)
    mlflow.set_tag("mavin.gate", decision.verdict)
    mlflow.log_artifact(str(out / GATE_JSON), "gate")
    mlflow.log_artifact(str(out / GATE_HTML), "gate")
