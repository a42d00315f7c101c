"""The gate's page for people: one self-contained HTML file (no scripts, no external assets).

It shows the verdict and its reasons, then a table with one row per metric (challenger vs
champion, the floor, the paired bootstrap interval of the difference, the tolerance, the
verdict) and an inline SVG chart of the intervals. Every interval is drawn in units of its
own tolerance so metrics with different scales share one axis: the dashed line at -1 is
the tolerance; an interval whose left end stays right of it passes non-regression.
"""

from __future__ import annotations

import html
from pathlib import Path
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from mavin_ops.evaluation.gate import GateDecision, MetricCheck

__all__ = ["interval_chart_svg", "render_gate_html"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#1d2330;max-width:1100px}
h1{font-size:1.5rem;margin:0 0 .25rem} .muted{color:#5b6475;font-size:.9rem}
.verdict{display:inline-block;padding:.2rem .7rem;border-radius:4px;color:#fff;font-weight:600}
.pass{background:#1f7a3d} .fail{background:#b42318} .na{color:#5b6475}
table{border-collapse:collapse;width:100%;margin:1rem 0;font-size:.9rem}
th,td{border-bottom:1px solid #d9dde5;padding:.35rem .5rem;text-align:right}
th:first-child,td:first-child,td.reason{text-align:left} td.reason{color:#b42318;font-size:.85rem}
code{background:#f2f4f7;padding:0 .25rem;border-radius:3px}
"""

_AXIS = 3.0  # the chart shows differences in [-3, +3] tolerances; longer bars get an arrow


def _fmt(v: float | int | None, digits: int = 4) -> str:
    if v is None:
        return "&ndash;"
    if isinstance(v, float) and not math.isfinite(v):
        return html.escape(str(v))
    if isinstance(v, int):
        return str(v)
    return f"{v:.{digits}g}"


def _floor_text(chk: "MetricCheck") -> str:
    parts = []
    if chk.floor_min is not None:
        parts.append(f"&ge; {_fmt(chk.floor_min)}")
    if chk.floor_max is not None:
        parts.append(f"&le; {_fmt(chk.floor_max)}")
    text = " and ".join(parts) or "&ndash;"
    if getattr(chk, "floor_rule", ""):
        text += f"<br><small>{html.escape(chk.floor_rule)}</small>"
    return text


def interval_chart_svg(checks: list["MetricCheck"]) -> str:
    """An inline SVG: one row per metric compared with the champion, the bootstrap interval
    of the oriented difference (positive = better) in units of the metric's tolerance."""
    rows = [c for c in checks if c.ci_low is not None and c.ci_high is not None and c.tolerance is not None]
    width, left, right, row_h, top = 720, 190, 30, 28, 30
    height = top + row_h * max(len(rows), 1) + 30
    plot_w = width - left - right

    def x(v: float) -> float:
        return left + (max(-_AXIS, min(_AXIS, v)) + _AXIS) / (2 * _AXIS) * plot_w

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'role="img" aria-label="paired bootstrap intervals, challenger minus champion, in tolerances">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
    ]
    for tick in range(-int(_AXIS), int(_AXIS) + 1):
        tx = x(tick)
        out.append(f'<line x1="{tx:.1f}" y1="{top - 8}" x2="{tx:.1f}" y2="{height - 24}" stroke="#eef0f4"/>')
        out.append(f'<text x="{tx:.1f}" y="{height - 8}" font-size="11" text-anchor="middle" fill="#5b6475">{tick:+d}</text>')
    out.append(f'<line x1="{x(0):.1f}" y1="{top - 8}" x2="{x(0):.1f}" y2="{height - 24}" stroke="#5b6475"/>')
    out.append(
        f'<line x1="{x(-1):.1f}" y1="{top - 8}" x2="{x(-1):.1f}" y2="{height - 24}" stroke="#b42318" stroke-dasharray="4 3"/>'
    )
    out.append(f'<text x="{x(-1) - 4:.1f}" y="{top - 14}" font-size="11" text-anchor="end" fill="#b42318">&#8722;tolerance</text>')
    out.append(f'<text x="{x(_AXIS):.1f}" y="{top - 14}" font-size="11" text-anchor="end" fill="#5b6475">better &#8594;</text>')
    if not rows:
        out.append(f'<text x="{left}" y="{top + 16}" font-size="12" fill="#5b6475">no comparison with a champion</text>')
    for n, chk in enumerate(rows):
        y = top + row_h * n + row_h / 2
        tol = chk.tolerance if chk.tolerance and chk.tolerance > 0 else None
        scale = (lambda v: v / tol) if tol else (lambda v: 0.0 if v == 0 else math.copysign(_AXIS, v))
        lo, hi, mid = scale(chk.ci_low), scale(chk.ci_high), scale(chk.diff_mean or 0.0)
        colour = "#1f7a3d" if chk.regression_ok else "#b42318"
        out.append(f'<text x="{left - 10}" y="{y + 4:.1f}" font-size="12" text-anchor="end">{html.escape(chk.name)}</text>')
        out.append(f'<line x1="{x(lo):.1f}" y1="{y:.1f}" x2="{x(hi):.1f}" y2="{y:.1f}" stroke="{colour}" stroke-width="3"/>')
        for end, sign in ((lo, -1), (hi, 1)):
            if abs(end) > _AXIS:
                ex = x(end)
                out.append(
                    f'<path d="M{ex:.1f},{y:.1f} l{-6 * sign},-5 l0,10 z" fill="{colour}"/>'
                )
        out.append(f'<circle cx="{x(mid):.1f}" cy="{y:.1f}" r="4" fill="{colour}"/>')
    out.append("</svg>")
    return "\n".join(out)


def _sheet_html(sheet: Path | None) -> str:
    """The evaluation's summary contact sheet, embedded (the page stays one offline file)."""
    if sheet is None or not sheet.is_file():
        return ""
    import base64

    data = base64.b64encode(sheet.read_bytes()).decode("ascii")
    return (
        "<h2>What the model drew</h2><p class=\"muted\">Middle frame of every benchmark clip, truth above generated; "
        f"one sheet per clip (references, frames per shot, waveforms) sits next to it in <code>{html.escape(str(sheet.parent))}</code>.</p>"
        f'<img alt="benchmark contact sheet" style="max-width:100%;image-rendering:pixelated" src="data:image/png;base64,{data}">'
    )


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Release gate: {{ d.verdict }}</title><style>{{ css }}</style></head>
<body>
<h1>Release gate <span class="verdict {{ d.verdict }}">{{ d.verdict|upper }}</span></h1>
<p class="muted">benchmark <code>{{ bench.get('id') }}</code> digest <code>{{ (bench.get('digest')|string)[:16] }}</code>,
{{ bench.get('n_clips', 0) }} clips &middot;
{% if champ is none %}no champion yet: floors only{% else %}champion <code>{{ champ.get('model_name') }}</code> version
<code>{{ champ.get('version') }}</code> (run {{ champ.get('run_id') }}, metrics from {{ champ.get('source') }}){% endif %}<br>
policy <code>{{ policy.get('source') }}</code> &middot; paired bootstrap: {{ boot.get('resamples') }} resamples,
{{ boot.get('confidence') }} confidence, seed {{ boot.get('seed') }} &middot; decided {{ d.created_at }}</p>
{% if general %}<h2>Why the gate failed</h2><ul>{% for r in general %}<li>{{ r }}</li>{% endfor %}</ul>{% endif %}
<h2>Metrics</h2>
<p class="muted">Difference = challenger &minus; champion per clip, sign flipped for lower-is-better metrics so that
positive always means better. Non-regression passes when the interval's lower end is &ge; &minus;tolerance.</p>
<table>
<tr><th>metric</th><th>better</th><th>challenger</th><th>clips</th><th>champion</th><th>floor</th>
<th>mean diff</th><th>interval</th><th>paired</th><th>tolerance</th><th>verdict</th></tr>
{% for c in d.checks %}{% set na = c.not_measured|default('') %}
<tr><td>{{ c.name }}</td><td>{{ 'higher' if c.higher_is_better else 'lower' }}</td>
<td>{{ fmt(c.challenger) }}</td><td>{{ c.challenger_count }}</td><td>{{ fmt(c.champion) }}</td><td>{{ floor(c) }}</td>
<td>{{ fmt(c.diff_mean) }}</td>
<td>{% if c.regression_ok is none %}<span class="na">not compared</span>{% elif c.ci_low is none %}&ndash;{% else %}[{{ fmt(c.ci_low) }}, {{ fmt(c.ci_high) }}]{% endif %}</td>
<td>{{ c.paired }}</td><td>{{ fmt(c.tolerance) }}</td>
<td><span class="verdict {{ 'na' if na else ('pass' if c.passed else 'fail') }}">{{ 'not measured' if na else ('pass' if c.passed else 'fail') }}</span></td></tr>
{% if na %}<tr><td class="reason" colspan="11">{{ na }}</td></tr>{% endif %}
{% if c.reasons %}<tr><td class="reason" colspan="11">{% for r in c.reasons %}{{ r }}{% if not loop.last %}<br>{% endif %}{% endfor %}</td></tr>{% endif %}
{% endfor %}
</table>
<h2>Intervals, in tolerances</h2>
{{ chart }}
{{ sheet }}
</body></html>
"""


def render_gate_html(decision: "GateDecision", sheet: Path | None = None) -> str:
    """The whole page as a string (Jinja2, every value escaped); ``sheet``: the evaluation's
    summary contact sheet, shown under the metrics when it exists."""
    from jinja2 import Environment
    from markupsafe import Markup

    general = [r for r in decision.reasons if not any(r in c.reasons for c in decision.checks)]
    policy = decision.policy
    return Environment(autoescape=True).from_string(_PAGE).render(
        d=decision, champ=decision.champion, bench=decision.benchmark, policy=policy, boot=policy.get("bootstrap", {}),
        general=general, fmt=lambda v: Markup(_fmt(v)), floor=lambda c: Markup(_floor_text(c)), css=Markup(_CSS),
        chart=Markup(interval_chart_svg(decision.checks)), sheet=Markup(_sheet_html(sheet)),
    )
