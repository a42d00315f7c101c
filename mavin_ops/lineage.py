"""Walk a served model back to where it came from, and draw the chain.

    served Triton version -> registered model version (gate verdict, report) -> release
    pipeline run -> training stage runs (checkpoints) -> validation report -> dataset
    version (DVC digest, registry commit) -> code commit -> the foundation model the release
    fine-tuned (``mavin-base@<version>``) -> its own data, runs and commit

Everything is read from MLflow: the model version's lineage tags (mavin_ops/registry.py),
the release's parent run (tagged by its release id) and its nested step runs
(mavin_ops/tracking.py). Missing links are shown as missing, never invented.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mavin_ops.reader import NotFound, Reader, Run, Version, reader
from mavin_ops.errors import MavinError

__all__ = ["Link", "LineageError", "lineage", "render_html", "render_text"]


class LineageError(MavinError, LookupError):
    """The model reference cannot be resolved; names it and what to do."""


@dataclass
class Link:
    kind: str  # served | model | release | train | validation | dataset | code | base | step
    title: str
    facts: dict[str, str] = field(default_factory=dict)
    missing: bool = False


def _resolve(store: Reader, model_ref: str) -> Version:
    if "@" not in model_ref:
        raise LineageError(f"'{model_ref}' is not <model>@<alias|version>, e.g. mavin-tiny@champion or mavin-tiny@3")
    name, ref = model_ref.rsplit("@", 1)
    try:
        if ref.isdigit():
            return store.model_version(name, ref)
        return store.model_version_by_alias(name, ref)
    except NotFound:
        raise LineageError(f"no model version {model_ref}; see `mavin-ops history {name}`") from None


def lineage(model_ref: str, _depth: int = 0, *, mlflow: bool = False) -> list[Link]:
    """The chain for ``<model>@<alias|version>``, from the served version to the commit, then
    on through the foundation model the release fine-tuned to that model's own data
    (read without importing MLflow on the local store; ``mlflow``: through MLflow's client)."""
    c = reader(mlflow=mlflow)
    mv = _resolve(c, model_ref)
    tags = dict(mv.tags)
    from mavin_ops.foundation import BASE_MODEL

    if mv.name == BASE_MODEL and not tags.get("mavin.release_id") and _depth == 0:  # a shipped base: its card's facts
        return _base_links(c, f"{mv.name}@{mv.version}", tags.get("mavin.base_sha256", ""), mlflow)
    chain: list[Link] = []
    served = tags.get("mavin.triton_version")
    chain.append(
        Link(
            "served",
            f"Triton {tags.get('mavin.triton_model', mv.name)} version {served}" if served else "not published to Triton",
            {"store": tags.get("mavin.triton_store", "")} if served else {},
            missing=not served,
        )
    )
    chain.append(
        Link(
            "model",
            f"model {mv.name} v{mv.version}" + (f" [{', '.join(mv.aliases)}]" if mv.aliases else ""),
            {
                "gate": tags.get("mavin.gate", "unknown"),
                "gate report": tags.get("mavin.gate_report", ""),
                "source": mv.source,
                "checkpoint sha256": tags.get("mavin.checkpoint_sha256", ""),
            },
        )
    )
    release_id = tags.get("mavin.release_id")
    parent = None
    if release_id:
        found = c.find_runs({"mavin.release_id": release_id, "mavin.step": "pipeline"}, limit=1)
        parent = found[0] if found else None
    if parent is None:
        chain.append(Link("release", f"release {release_id or '?'} not found in MLflow", missing=True))
        return chain
    ptags = parent.tags
    chain.append(
        Link(
            "release",
            f"release {release_id} [{parent.status}]",
            {"MLflow run": parent.run_id, "KFP run": ptags.get("mavin.kfp_run_id", "")},
        )
    )
    by_step: dict[str, Run] = {}
    for run in c.find_runs({"mlflow.parentRunId": parent.run_id}):  # newest first
        by_step.setdefault(run.tags.get("mavin.step", run.name), run)
    # Walking back from the model: the last recipe stage first (joint, av, multishot, id).
    from mavin_ops.training.recipes import STAGES

    order = {f"train_{stage}": n for n, stage in enumerate(reversed(STAGES))}
    for step in sorted((s for s in by_step if s.startswith("train")), key=lambda s: (order.get(s, len(order)), s)):
        run = by_step[step]
        chain.append(
            Link(
                "train",
                f"{step} [{run.status}]",
                {
                    "MLflow run": run.run_id,
                    "checkpoint sha256": run.tags.get("mavin.checkpoint_sha256", ""),
                    "parent checkpoint": run.params.get("parent_checkpoint", ""),
                },
            )
        )
    val = by_step.get("validate_data")
    chain.append(
        Link(
            "validation",
            f"validation [{val.status}]" if val else "validation run not found",
            {"MLflow run": val.run_id, "report": f"{val.artifact_uri}/validation/validation.json"} if val else {},
            missing=val is None,
        )
    )
    digest = ptags.get("mavin.dataset_digest")
    chain.append(
        Link(
            "dataset",
            f"dataset {ptags.get('mavin.dataset_tag', '?')}" if digest else "dataset version not recorded",
            {"DVC digest": digest or "", "registry commit": ptags.get("mavin.dataset_commit", "")},
            missing=not digest,
        )
    )
    chain.append(
        Link(
            "code",
            f"code commit {ptags.get('mavin.git_commit', 'unknown')[:12]}",
            {"commit": ptags.get("mavin.git_commit", "unknown"), "dirty": ptags.get("mavin.git_dirty", "")},
            missing=ptags.get("mavin.git_commit", "unknown") == "unknown",
        )
    )
    if ptags.get("mavin.base") and _depth == 0:
        chain.extend(_base_links(c, ptags["mavin.base"], ptags.get("mavin.base_sha256", ""), mlflow))
    return chain


def _base_links(c: Reader, ref: str, sha: str, mlflow: bool = False) -> list[Link]:
    """The foundation model a release fine-tuned, and where it came from: the pretrain
    pipeline's runs and data when it made the base, else the shipped card's data and commit."""
    try:
        mv = _resolve(c, ref)
    except LineageError:
        return [Link("base", f"base {ref} not found in MLflow", {"sha256": sha}, missing=True)]
    tags = dict(mv.tags)
    links = [
        Link(
            "base",
            f"base {mv.name} v{mv.version}" + (f" [{', '.join(mv.aliases)}]" if mv.aliases else ""),
            {"sha256": tags.get("mavin.base_sha256", sha), "step": tags.get("mavin.base_step", ""), "source": mv.source,
             "reproduce": tags.get("mavin.command", "")},
            missing=bool(sha) and tags.get("mavin.base_sha256") != sha,
        )
    ]
    if tags.get("mavin.release_id"):  # made by `mavin-ops pretrain`: walk its pipeline run
        rest = lineage(f"{mv.name}@{mv.version}", _depth=1, mlflow=mlflow)[2:]
        for link in rest:
            link.kind, link.title = "base", f"base {link.title}"
        return links + rest
    links.append(
        Link(
            "base",
            f"base dataset {tags.get('mavin.dataset_digest', '')[:12] or 'not recorded'}",
            {"digest": tags.get("mavin.dataset_digest", ""), "world": tags.get("mavin.data", "")},
            missing=not tags.get("mavin.dataset_digest"),
        )
    )
    commit = tags.get("mavin.git_commit", "")
    links.append(Link("base", f"base code commit {commit[:12] or 'unknown'}", {"commit": commit}, missing=not commit))
    return links


def render_text(chain: list[Link]) -> str:
    lines = []
    for n, link in enumerate(chain):
        lines.append(("<- " if n else "") + link.title + ("  (missing)" if link.missing else ""))
        for key, value in link.facts.items():
            if value:
                lines.append(f"     {key}: {value}")
    return "\n".join(lines)


_COLOURS = {
    "served": "#1f77b4",
    "model": "#9467bd",
    "release": "#2ca02c",
    "train": "#ff7f0e",
    "validation": "#17becf",
    "dataset": "#8c564b",
    "code": "#7f7f7f",
    "base": "#e377c2",
}


_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{{ title }}</title>
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td{border:1px solid #ccc;padding:6px;vertical-align:top}</style>
</head><body><h1>{{ title }}</h1><p>Each box was read from MLflow; dashed boxes are links that are missing.</p>
<div style="display:flex;gap:2em"><div>
<svg xmlns="http://www.w3.org/2000/svg" width="{{ W + 2 * X }}" height="{{ chain|length * (H + GAP) }}" font-family="sans-serif">
<defs><marker id="a" markerWidth="10" markerHeight="10" refX="5" refY="5" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#444"/></marker></defs>
{% for link in chain %}{% set y = loop.index0 * (H + GAP) + 10 %}{% set colour = colours.get(link.kind, "#444") %}
<rect x="{{ X }}" y="{{ y }}" width="{{ W }}" height="{{ H }}" rx="8" fill="white" stroke="{{ colour }}" stroke-width="2"{% if link.missing %} stroke-dasharray="6,4"{% endif %}/>
<text x="{{ X + 12 }}" y="{{ y + 24 }}" font-size="12" fill="{{ colour }}">{{ link.kind|upper }}</text>
<text x="{{ X + 12 }}" y="{{ y + 46 }}" font-size="14">{{ link.title[:56] }}</text>
{% if not loop.first %}<line x1="{{ X + W / 2 }}" y1="{{ y }}" x2="{{ X + W / 2 }}" y2="{{ y - GAP + 4 }}" stroke="#444" marker-end="url(#a)"/>{% endif %}
{% endfor %}</svg></div>
<table>{% for link in chain %}<tr><td><b>{{ link.kind }}</b></td><td>{{ link.title }}</td><td>
{% for k, v in link.facts.items() if v %}{{ k }}: <code>{{ v }}</code>{% if not loop.last %}<br>{% endif %}{% endfor %}</td></tr>{% endfor %}</table>
</div></body></html>
"""


def render_html(chain: list[Link], path: str | Path, title: str = "mavin-ops lineage") -> Path:
    """A page with the chain drawn as an SVG graph (boxes joined by arrows, newest on top)
    and every fact beside its box (Jinja2, every value escaped)."""
    from jinja2 import Environment

    page = Environment(autoescape=True).from_string(_PAGE).render(
        chain=chain, title=title, colours=_COLOURS, W=420, H=64, GAP=40, X=20)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
