"""One page per release (``$MAVIN_HOME/releases/<id>/release.html``): what happened, in the
order it happened, for the people who run releases and the people who audit them.

The page is built from what the release left behind -- its MLflow runs (metrics, tags,
artifacts) and its step logs -- after the pipeline ends, and logged to the release's parent
run. It shows the steps with their durations and logs, the data version and its validation
(the quarantine reasons), one loss curve over the four training stages per tower (on the
global step), the benchmark metrics against the champion and the ground truth, the contact
sheets, the gate's verdict and reasons, export parity and the serving smoke test, and the
lineage as boxes that link to the files and name the MLflow runs.

It works offline: no script, no external asset. Images and reports are copied next to it
under ``assets/`` and every link is relative; MLflow runs are named by id
(``data-mlflow-run``) since the UI's address is not known to the page.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from mavin_ops import settings, tracking
from mavin_ops.training.recipes import STAGES as RELEASE_STAGES

__all__ = ["PAGE", "build_release_page"]

PAGE = "release.html"
STAGES = tuple(f"train_{stage}" for stage in RELEASE_STAGES)  # the steps' names
#: The lineage boxes, in pipeline order (the steps a release may run).
_FLOW = ("generate_data", "plan_ingest", "join_ingest", "resolve_data", "version_data", "validate_data", *STAGES,
         "sample_benchmark", "evaluate", "gate", "export_model", "publish_model", "serving_smoke_test", "register_model",
         "record_not_promoted")

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>release {{ r.release_id }}</title>
<style>
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#1d2330;max-width:1150px}
h1{font-size:1.5rem;margin:0 0 .25rem} h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #d9dde5}
.muted{color:#5b6475;font-size:.9rem} code{background:#f2f4f7;padding:0 .25rem;border-radius:3px}
.badge{display:inline-block;padding:.15rem .6rem;border-radius:4px;color:#fff;font-weight:600}
.ok{background:#1f7a3d} .bad{background:#b42318} .na{background:#8a93a6}
table{border-collapse:collapse;width:100%;font-size:.9rem;margin:.5rem 0}
th,td{border-bottom:1px solid #e3e6ec;padding:.3rem .5rem;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.flow{display:flex;flex-wrap:wrap;gap:.4rem;align-items:center}
.box{border:1px solid #c9ced8;border-radius:6px;padding:.35rem .6rem;font-size:.85rem;min-width:8rem}
.box.ok{background:#eef8f1;color:#1d2330} .box.bad{background:#fdeceb;color:#1d2330}
.arrow{color:#8a93a6} img{max-width:100%;border:1px solid #e3e6ec} .reasons li{color:#b42318}
</style></head><body>
<h1>Release <code>{{ r.release_id }}</code></h1>
<p><span class="badge {{ 'ok' if r.succeeded else 'bad' }}">{{ 'succeeded' if r.succeeded else 'failed' }}</span>
 <span class="badge {{ 'ok' if r.verdict == 'promoted' else 'bad' }}">{{ r.verdict or 'no verdict' }}</span>
 <span class="muted">{{ r.wall }} &middot; attempt {{ r.attempt }} &middot; code {{ r.commit }} &middot;
 MLflow parent run <code data-mlflow-run="{{ r.parent_run_id }}">{{ r.parent_run_id }}</code></span></p>
{% if r.error %}<p class="reasons"><b>Error:</b> {{ r.error }}</p>{% endif %}

<h2>Steps</h2>
<table><tr><th>step</th><th>status</th><th class="num">seconds</th><th>result</th><th>log</th></tr>
{% for s in r.steps %}<tr><td>{{ s.name }}</td><td>{{ s.status }}</td><td class="num">{{ '%.1f' % s.seconds }}</td>
<td>{{ s.headline }}{% if s.error %}<br><span class="muted">{{ s.error }}</span>{% endif %}</td>
<td>{% if s.log_href %}<a href="{{ s.log_href }}">{{ s.log_name }}</a>{% endif %}</td></tr>{% endfor %}
</table>

<h2>Data</h2>
<table>{% for k, v in r.data %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>{% endfor %}</table>
{% for label, href in r.validation_files %}<a href="{{ href }}">{{ label }}</a> {% endfor %}
{% if r.quarantine %}<p>Quarantined by rule:</p><ul>{% for rule, n in r.quarantine %}<li><code>{{ rule }}</code>: {{ n }}</li>{% endfor %}</ul>{% endif %}

<h2>Training</h2>
{% if r.loss_png %}<img src="{{ r.loss_png }}" alt="loss over the four stages, per tower">{% else %}<p class="muted">no training run recorded</p>{% endif %}

<h2>Benchmark metrics and the gate</h2>
<p><span class="badge {{ 'ok' if r.gate_passed else 'bad' }}">gate {{ 'pass' if r.gate_passed else 'fail' }}</span>
 {% if r.gate_html %}<a href="{{ r.gate_html }}">the gate's page</a> (intervals, floors){% endif %}
 {% if r.metrics_json %}&middot; <a href="{{ r.metrics_json }}">metrics.json</a>{% endif %}</p>
{% if r.reasons %}<ul class="reasons">{% for x in r.reasons %}<li>{{ x }}</li>{% endfor %}</ul>{% endif %}
<table><tr><th>metric</th><th class="num">this model</th><th class="num">champion</th><th>95% interval of the difference</th><th class="num">ground truth</th><th>floor</th><th>check</th></tr>
{% for m in r.metrics %}<tr><td>{{ m.name }}</td><td class="num">{{ m.value }}</td><td class="num">{{ m.champion }}</td><td>{{ m.ci }}</td>
<td class="num">{{ m.truth }}</td><td>{{ m.floor }}</td><td><span class="badge {{ m.cls }}">{{ m.check }}</span></td></tr>{% endfor %}
</table>
{% if r.sheets %}<h2>What the model made</h2>
<p class="muted">Contact sheets of the benchmark clips: reference images, ground truth and generated frames per shot, the waveform with the scripted dialogue.</p>
{% for href in r.sheets %}<p><a href="{{ href }}"><img src="{{ href }}" alt="contact sheet"></a></p>{% endfor %}{% endif %}

<h2>Export and serving</h2>
{% if r.serving %}<table>{% for step, k, v in r.serving %}<tr><td>{{ step }}</td><td>{{ k }}</td><td class="num">{{ v }}</td></tr>{% endfor %}</table>
{% else %}<p class="muted">not exported: the gate did not pass</p>{% endif %}

<h2>Lineage</h2>
<div class="flow">{% for b in r.flow %}{% if not loop.first %}<span class="arrow">&rarr;</span>{% endif %}
<div class="box {{ b.cls }}"><b>{{ b.name }}</b><br>{% if b.run_id %}run <code data-mlflow-run="{{ b.run_id }}">{{ b.run_id[:8] }}</code>{% endif %}
{% if b.log_href %}<br><a href="{{ b.log_href }}">log</a>{% endif %}{% for label, href in b.files %} &middot; <a href="{{ href }}">{{ label }}</a>{% endfor %}</div>{% endfor %}</div>
<p class="muted">Run ids are MLflow runs of experiment <code>{{ r.experiment }}</code>: <code>mlflow ui --backend-store-uri {{ r.tracking_uri }}</code>.</p>
</body></html>
"""


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (int, float)):
        return f"{v:.4g}"
    return "–" if v is None else str(v)


def _artifact(c: Any, run_id: str, path: str, dest: Path) -> Path | None:
    """A run's artifact downloaded under ``dest`` (None when it has none)."""
    try:
        return Path(c.download_artifacts(run_id, path, str(dest)))
    except Exception:  # noqa: BLE001 - a missing artifact is a missing section, not a failed page
        return None


def _local_artifact(artifact_uri: str, path: str) -> Path | None:
    """A run's artifact on this machine's disk (a local or ``mavin-home:`` store), else None."""
    from urllib.parse import urlparse

    if urlparse(artifact_uri or "").scheme not in ("file", "", settings.HOME_SCHEME):
        return None
    try:
        f = settings.local_path(artifact_uri) / path
    except ValueError:
        return None
    return f if f.is_file() else None


def _loss_plot(c: Any, runs: dict[str, Any], out: Path) -> bool:
    """One figure: the video and audio tower losses of the four stages on one global step axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 3.6), dpi=100)
    end, drawn = 0, False
    for stage in STAGES:
        run = runs.get(stage)
        if run is None:
            continue
        hists = {key: sorted(c.get_metric_history(run.info.run_id, key), key=lambda m: m.step) for key in ("loss_video", "loss_audio")}
        steps = [m.step for h in hists.values() for m in h]
        if not steps:
            continue
        # Stages log a global step; a run from before that counted from 1 is moved after the last.
        shift = end if min(steps) <= end else 0
        for (key, hist), colour in zip(hists.items(), ("#2f6fdf", "#d9822b")):
            if hist:
                ax.plot([shift + m.step for m in hist], [m.value for m in hist], color=colour, lw=1.2,
                        label=key.replace("loss_", "") + " tower" if not drawn else None)
        start = shift + min(steps) - 1
        ax.axvline(start, color="#c9ced8", lw=0.8)
        ax.text(start, 1.0, " " + stage, transform=ax.get_xaxis_transform(), va="top", fontsize=8, color="#5b6475")
        drawn = True
        end = shift + max(steps)
    if not drawn:
        plt.close(fig)
        return False
    ax.set_xlabel("global step (stages one after another)")
    ax.set_ylabel("flow-matching loss")
    ax.set_yscale("log")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return True


def build_release_page(release_id: str, folder: str | os.PathLike, step_lines: list[dict], *, succeeded: bool, error: str,
                       wall_s: float, attempt: int, parent_run_id: str) -> Path:
    """Write ``<folder>/release.html`` (and ``<folder>/assets/``) for the release and return its path."""
    from jinja2 import Environment

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no download bars in the terminal
    folder = Path(folder)
    assets = folder / "assets"
    if assets.exists():
        shutil.rmtree(assets)
    assets.mkdir(parents=True)
    c = tracking.client()
    parent = c.get_run(parent_run_id)
    kids = c.search_runs([parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
                         order_by=["attributes.start_time ASC"])
    runs: dict[str, Any] = {}
    for k in kids:  # the newest run of each step (a resumed release ran some twice)
        runs[k.data.tags.get("mavin.step", k.info.run_name)] = k
    tags = parent.data.tags

    def rel(p: Path) -> str:
        return Path(os.path.relpath(p, folder)).as_posix()

    steps = []
    for s in step_lines:
        log = Path(s.get("log") or "")
        steps.append({**s, "log_href": rel(log) if log.is_file() else "", "log_name": log.name})
    logs_of = {s["name"]: s["log_href"] for s in steps}

    data = [(label, tags[key]) for key, label in (("mavin.dataset_tag", "version"), ("mavin.dataset_digest", "digest"),
                                                  ("mavin.dataset_commit", "registry commit"), ("mavin.dataset_rev", "asked for"),
                                                  ("mavin.base", "fine-tuned base"), ("mavin.base_sha256", "base sha256"))
            if key in tags]
    quarantine: list[tuple[str, int]] = []
    files: dict[str, list[tuple[str, str]]] = {}
    if "validate_data" in runs:
        v = runs["validate_data"]
        data += [(k, _fmt(v.data.metrics[k])) for k in ("rows", "quarantined", "quarantined_share") if k in v.data.metrics]
        vj = _artifact(c, v.info.run_id, "validation/validation.json", assets / "validation")
        if vj is not None:
            doc = json.loads(vj.read_text(encoding="utf-8"))
            quarantine = sorted((doc.get("rule_counts") or {}).items(), key=lambda kv: -kv[1])
            files["validate_data"] = [("validation.json", rel(vj))]
        summary = _artifact(c, v.info.run_id, "validation/data_docs/summary.html", assets / "validation")
        if summary is not None:  # our own page of the validation (offline; the quarantine examples)
            files["validate_data"].insert(0, ("validation summary", rel(summary)))
        docs = _local_artifact(v.info.artifact_uri, "validation/data_docs/index.html")
        if docs is not None:  # Great Expectations' Data Docs where the run keeps them (made readable offline)
            files["validate_data"].append(("Data Docs", rel(docs)))

    loss_png = assets / "loss.png"
    has_loss = _loss_plot(c, runs, loss_png)

    gate_doc, metrics_doc, gate_html, metrics_json = None, None, "", ""
    if "gate" in runs:
        gdir = _artifact(c, runs["gate"].info.run_id, "gate", assets / "gate")
        if gdir is not None and (gdir / "gate.json").is_file():
            gate_doc = json.loads((gdir / "gate.json").read_text(encoding="utf-8"))
            gate_html = rel(gdir / "gate.html") if (gdir / "gate.html").is_file() else ""
            files["gate"] = [("gate.json", rel(gdir / "gate.json"))] + ([("gate.html", gate_html)] if gate_html else [])
    sheets: list[str] = []
    if "evaluate" in runs:
        edir = _artifact(c, runs["evaluate"].info.run_id, "evaluation", assets / "evaluate")
        if edir is not None and (edir / "metrics.json").is_file():
            metrics_doc = json.loads((edir / "metrics.json").read_text(encoding="utf-8"))
            metrics_json = rel(edir / "metrics.json")
            files["evaluate"] = [("metrics.json", metrics_json)]
            sheet_dir = edir / "sheets"
            if sheet_dir.is_dir():
                found = sorted(sheet_dir.glob("*.png"), key=lambda p: (p.name != "summary.png", p.name))
                sheets = [rel(p) for p in found[:5]]
    truth = ((metrics_doc or {}).get("references") or {}).get("ground_truth") or {}
    metrics = []
    for chk in (gate_doc or {}).get("checks", []):
        floor = " and ".join(x for x in (f"≥ {chk['floor_min']:.4g}" if chk.get("floor_min") is not None else "",
                                         f"≤ {chk['floor_max']:.4g}" if chk.get("floor_max") is not None else "") if x)
        if chk.get("floor_rule"):
            floor += f" ({chk['floor_rule']})"
        check, cls = ("pass", "ok") if chk.get("passed") else ("fail", "bad")
        if chk.get("not_measured"):
            check, cls = "not measured", "na"
        ci = "–"
        if chk.get("ci_low") is not None and chk.get("ci_high") is not None:
            ci = f"[{chk['ci_low']:+.4g}, {chk['ci_high']:+.4g}] (better is +; tolerance {_fmt(chk.get('tolerance'))})"
        metrics.append({"name": chk["name"], "value": _fmt(chk.get("challenger")), "champion": _fmt(chk.get("champion")), "ci": ci,
                        "truth": _fmt(truth.get(chk["name"])), "floor": floor or "–", "check": check, "cls": cls})
    # The worst first: what failed, then what was not measured, then what passed.
    metrics.sort(key=lambda m: {"bad": 0, "na": 1, "ok": 2}[m["cls"]])

    serving = []
    for step in ("export_model", "publish_model", "serving_smoke_test"):
        run = runs.get(step)
        if run is not None:
            serving += [(step, k, _fmt(v)) for k, v in sorted(run.data.metrics.items())]

    flow = []
    for name in _FLOW:
        run = runs.get(name)
        if run is None and name not in logs_of:
            continue
        status = (run.info.status if run is not None else "")
        line = next((s for s in step_lines if s["name"] == name), None)
        ok = (line is None or line.get("status") == "SUCCESS") and status in ("FINISHED", "")
        flow.append({"name": name, "run_id": run.info.run_id if run is not None else "", "log_href": logs_of.get(name, ""),
                     "files": files.get(name, []), "cls": "ok" if ok else "bad"})

    minutes, seconds = divmod(int(round(wall_s)), 60)
    page = Environment(autoescape=True).from_string(_TEMPLATE).render(r={
        "release_id": release_id, "succeeded": succeeded, "verdict": tags.get("mavin.verdict", ""), "error": error,
        "wall": f"{minutes} min {seconds} s", "attempt": attempt, "commit": tags.get("mavin.git_commit", "?")[:12],
        "parent_run_id": parent_run_id, "steps": steps, "data": data, "quarantine": quarantine,
        "loss_png": rel(loss_png) if has_loss else "", "gate_passed": bool((gate_doc or {}).get("passed")),
        "gate_html": gate_html, "metrics_json": metrics_json, "reasons": (gate_doc or {}).get("reasons", [])[:12],
        "metrics": metrics, "sheets": sheets, "serving": serving, "flow": flow, "validation_files": files.get("validate_data", []),
        "experiment": c.get_experiment(parent.info.experiment_id).name, "tracking_uri": _redacted_uri(),
    })
    out = folder / PAGE
    from mavin_ops.data.manifest import atomic_writer

    with atomic_writer(folder, PAGE) as fh:
        fh.write(page)
    return out


def _redacted_uri() -> str:
    from mavin_ops.safety import redact

    return redact(settings.tracking_uri())
