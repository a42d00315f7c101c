"""Dataset validation: a Great Expectations suite over the manifest plus the relational checks
that need the whole MTSS script.

:func:`validate_dataset` reads ``<root>/manifest.jsonl`` and sorts every non-blank line into
exactly one of two files in ``out_dir`` (the dataset itself is never written):

- ``manifest.valid.jsonl``: the rows that pass, byte for byte as in the source;
- ``quarantine.jsonl``: every failing line as ``{"line", "id", "reasons", "row"}`` (or
  ``"text"`` for a line that is not a JSON object). A reason is one line,
  ``clip <id>: <field>: [<rule>] <what is wrong and what to do>`` (:class:`mtss.Issue`);

plus ``validation.json`` (counts, quarantined share, threshold, per-rule counts, passed) and
a Data Docs site (Great Expectations' HTML for the suite run, and ``summary.html``). The step
fails when the quarantined share passes ``max_quarantine_share``.

**Quarantine is enforced by the hand-off**: with ``validated_dir`` (the release pipeline's
validate_data step, the DVC ``validate`` stage) a run that passes also writes the *validated
dataset*: a dataset folder whose ``manifest.jsonl`` holds only the valid rows, with their
media (hard links where possible) and ``validated.json``, the record of what was left out
(quarantined ids and count, and the sha256 of the manifest it wrote). Every later step
(latent precompute, training, benchmark sampling, evaluation) reads that folder through
:func:`read_clips`, the one loader they share, which refuses a validated dataset whose
manifest no longer is the one validation wrote; :func:`quarantine_record` gives the
quarantined ids for the lineage of the runs that read it.

How it works, and why it is fast (see BENCHMARKS.md, "Manifest validation"):

1. **Scan**, in parallel over newline-aligned byte ranges of the manifest (one process per
   core): decode each line (orjson when present; anything it refuses goes through
   :func:`manifest.decode_line`, the rule :func:`manifest.read_manifest` uses), run the
   per-row relational checks (:func:`mtss.script_issues`: structure, unknown fields and
   grounding, the one implementation ``generate`` and ``mavin-ops script check`` use;
   script clip id and duration against the row, media paths inside the root and listed in
   ``sha256``; with ``check_media`` each file's existence and sha256) and emit one flat
   table row of the raw field values and a few derived numbers. Decoded rows are dropped at
   once: memory holds the flat table, not the manifest.
2. **Expectations**: one Great Expectations suite over the flat table (pandas): schema and
   types, split enum, clip-id format, 4k+1 frames, width/height divisible by the VAE stride
   times the patch size, duration and shot-count limits, fps / sample-rate ranges, unique
   ids. Failing rows come back as unexpected indices and are turned into located reasons.
3. **Cross-row checks** in pandas: of the rows the uniqueness expectation flags, every
   occurrence of an id but the first; sources shared by the train and eval splits (every
   such row, naming the clips on the other side).
4. **Write**, each file atomically (:func:`manifest.atomic_writer`): the valid manifest as
   kernel-side copies of the source's kept byte ranges (no per-line Python work), the
   quarantine with :func:`manifest.write_manifest`, ``validation.json``, the Data Docs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from . import manifest as _manifest
from mavin_ops import mtss
from mavin_ops.errors import MavinError

if TYPE_CHECKING:  # pandas and Great Expectations load only when a validation runs
    import pandas as pd

try:  # about twice as fast as json on manifest rows; installed with dvc. A line it refuses
    # is decoded again by manifest.decode_line, which decides what counts as malformed.
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - the pinned stack has it
    _fast_loads = json.loads

__all__ = [
    "DOCS_SITE",
    "QUARANTINE",
    "SUITE_NAME",
    "SUMMARY",
    "VALIDATED_RECORD",
    "VALID_MANIFEST",
    "DatasetError",
    "QuarantineRecord",
    "ValidationFailed",
    "ValidationLimits",
    "ValidationReport",
    "quarantine_record",
    "read_clips",
    "validate_dataset",
    "write_validated_dataset",
]

log = logging.getLogger(__name__)

VALID_MANIFEST = "manifest.valid.jsonl"
QUARANTINE = "quarantine.jsonl"
SUMMARY = "validation.json"
SUMMARY_PAGE = "summary.html"
#: In a validated dataset folder: what validation left out and which manifest it wrote.
VALIDATED_RECORD = "validated.json"
#: Great Expectations names: the suite, and the Data Docs site (``local_site`` is taken in an
#: ephemeral context).
SUITE_NAME = "mavin_manifest"
DOCS_SITE = "mavin_validation"

_HEX64 = re.compile(r"[0-9a-f]{64}")
_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_ID_RE = re.compile(_ID_PATTERN)
_STR_FIELDS = ("id", "split", "source", "video", "audio")
_INT_FIELDS = ("fps", "num_frames", "width", "height", "sample_rate")
_MAX_REASONS_SHOWN = 50


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class ValidationLimits:
    """The numeric rules of the suite. Defaults fit the synthetic 32x32, 8 fps world and the
    paper's clip structure (MAVIN section 3: 1-6 shots, at most 15 s)."""

    min_duration_s: float = 0.5
    max_duration_s: float = 15.0
    min_shots: int = 1
    max_shots: int = 6
    #: Temporal VAE stride: num_frames must be ``frame_stride * k + 1``.
    frame_stride: int = 4
    #: VAE spatial stride times the DiT patch size: width and height must be multiples of it.
    spatial_multiple: int = 8
    min_fps: int = 1
    max_fps: int = 240
    min_sample_rate: int = 1000
    max_sample_rate: int = 192_000
    #: How far the script's duration may sit from num_frames / fps, in frames.
    duration_tolerance_frames: float = 0.5

    def __post_init__(self) -> None:
        pairs = (
            ("min_duration_s", "max_duration_s"),
            ("min_shots", "max_shots"),
            ("min_fps", "max_fps"),
            ("min_sample_rate", "max_sample_rate"),
        )
        for lo, hi in pairs:
            a, b = getattr(self, lo), getattr(self, hi)
            if not (isinstance(a, (int, float)) and isinstance(b, (int, float)) and 0 <= a <= b):
                raise ValueError(f"ValidationLimits: need 0 <= {lo} <= {hi}, got {lo}={a!r}, {hi}={b!r}")
        for name in ("frame_stride", "spatial_multiple"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"ValidationLimits: {name} must be a positive integer, got {v!r}")
        if not self.duration_tolerance_frames >= 0:
            raise ValueError(
                f"ValidationLimits: duration_tolerance_frames must be >= 0, got {self.duration_tolerance_frames!r}"
            )


@dataclass(frozen=True)
class ValidationReport:
    """What a validation run found and where it wrote its files."""

    root: Path
    manifest_sha256: str
    rows: int
    valid: int
    quarantined: int
    quarantined_share: float
    max_quarantine_share: float
    passed: bool
    rule_counts: dict[str, int]  # rule -> number of quarantined rows that break it
    valid_manifest: Path
    quarantine: Path
    summary: Path  # validation.json
    docs_index: Path | None  # Great Expectations Data Docs index.html
    summary_page: Path | None  # our one-page summary beside it
    seconds: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for a log or a terminal."""
        verdict = "PASSED" if self.passed else "FAILED"
        return (
            f"validation {verdict}: {self.quarantined} of {self.rows} rows quarantined "
            f"({self.quarantined_share:.2%}, threshold {self.max_quarantine_share:.2%}) in {self.root}; "
            f"valid rows: {self.valid_manifest}; reasons: {self.quarantine}"
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for k, v in out.items():
            if isinstance(v, Path):
                out[k] = str(v)
        return out


class ValidationFailed(RuntimeError):
    """Raised by ``validate_dataset(..., raise_on_fail=True)`` when too many rows fail."""

    def __init__(self, report: ValidationReport):
        self.report = report
        if report.rows == 0:
            msg = f"manifest {report.root / _manifest.MANIFEST} has no rows; generate or restore the dataset"
        else:
            msg = (
                f"dataset {report.root}: {report.quarantined} of {report.rows} rows quarantined "
                f"({report.quarantined_share:.2%}), above the {report.max_quarantine_share:.2%} threshold; "
                f"read the reasons in {report.quarantine}, fix the data and validate again"
            )
        super().__init__(msg)


# --------------------------------------------------------------------------- scan (per row)


@dataclass(frozen=True)
class _ScanConfig:
    root: str
    limits: ValidationLimits
    max_customized_roles: int | None
    check_media: bool


class _Nested(tuple):
    """Stands in the flat table for a list/object found where a scalar belongs: a one-item
    tuple holding its JSON text, so it is hashable (uniqueness and set checks stay well
    defined), serialisable by Great Expectations, and never of the expected type."""

    __slots__ = ()

    def __new__(cls, value: Any) -> "_Nested":
        text = json.dumps(value, separators=(",", ":"))
        return super().__new__(cls, (text if len(text) <= 60 else text[:57] + "...",))

    def __repr__(self) -> str:
        return self[0]

    __str__ = __repr__


# Columns shipped from the scan, in order. Raw fields first (as found in the row), then the
# derived numbers the expectations check.
_COLUMNS = (
    "line",
    "offset",
    *_STR_FIELDS,
    *_INT_FIELDS,
    "sha256_json_type",
    "script_json_type",
    *(f"{f}_int" for f in _INT_FIELDS),
    "n_shots",
)


def _json_type(value: Any, present: bool) -> str:
    if not present:
        return "missing"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    return "number"


def _scalar(value: Any) -> Any:
    return _Nested(value) if isinstance(value, (dict, list)) else value


def _strict_int(value: Any) -> int | None:
    return value if type(value) is int else None


def _label(row: dict[str, Any], lineno: int) -> str:
    """How reasons name a row: its clip id, or its line when the id is unusable."""
    rid = row.get("id")
    if isinstance(rid, str) and _ID_RE.match(rid):
        return rid
    return f"? ({_manifest.MANIFEST} line {lineno})"


def _media_fields(row: dict[str, Any], script: Any) -> list[tuple[str, str]]:
    """(field, path) for every media path the row cites; the same paths as
    :func:`manifest.media_paths`, each with the field that cites it."""
    out = [(k, row[k]) for k in ("video", "audio") if isinstance(row.get(k), str)]
    if isinstance(script, dict) and isinstance(script.get("reference"), list):
        for ent in script["reference"]:
            if isinstance(ent, dict):
                for k in ("reference_image", "reference_audio"):
                    if isinstance(ent.get(k), str):
                        out.append((f"reference[{ent.get('id')}].{k}", ent[k]))
    return out


def _media_issues(row: dict[str, Any], label: str, script: Any, cfg: _ScanConfig, add: Callable[..., None]) -> None:
    """Every media path (the cited ones and the sha256 keys) stays inside the root; every cited
    path has a well-formed digest; with ``check_media`` each file exists and matches it."""
    sha = row.get("sha256")
    sha = sha if isinstance(sha, dict) else None
    paths: dict[str, str] = {}  # path -> the first field citing it
    for fld, path in _media_fields(row, script):
        paths.setdefault(path, fld)
    if sha is not None:
        for path in sha:
            paths.setdefault(path, f"sha256[{path}]")
    for path, fld in paths.items():
        problem = _manifest.media_path_problem(path)
        if problem is not None:
            add("media", fld, "media-path", f"{problem}; keep media inside the dataset folder")
            continue
        expected = sha.get(path) if sha is not None else None
        if sha is not None and path not in sha:
            add("media", fld, "sha256-listed", f"'{path}' has no entry in sha256; add sha256['{path}'] with the file's digest")
        elif sha is not None and not (isinstance(expected, str) and _HEX64.fullmatch(expected)):
            shown = repr(expected) if len(repr(expected)) <= 70 else repr(expected)[:67] + "..."
            add("media", f"sha256[{path}]", "sha256-format", f"expected 64 lowercase hex digits, got {shown}")
            expected = None
        if not cfg.check_media:
            continue
        try:
            target = _manifest.resolve_media(cfg.root, path)
        except ValueError as exc:
            add("media", fld, "media-path", f"{exc}; keep media inside the dataset folder")
            continue
        if not target.is_file():
            add("media", fld, "media-missing", f"'{path}' does not exist in the dataset; restore it (dvc pull) or regenerate the clip")
            continue
        if isinstance(expected, str):
            actual = _manifest.sha256_file(target)
            if actual != expected:
                add(
                    "media",
                    fld,
                    "sha256-mismatch",
                    f"'{path}' has sha256 {actual[:16]}..., the manifest says {expected[:16]}...; "
                    "the file changed since the manifest was written: restore it or regenerate the clip",
                )


def _check_row(row: dict[str, Any], lineno: int, cfg: _ScanConfig) -> tuple[tuple[Any, ...], list[str], list[str]]:
    """Flat table values of one decoded row, plus the reasons and rule names of every
    per-row relational problem."""
    label = _label(row, lineno)
    reasons: list[str] = []
    rules: list[str] = []

    def add(stream: str, fld: str, rule: str, message: str) -> None:
        reasons.append(str(mtss.Issue(label, stream, fld, rule, message)))
        rules.append(rule)

    def take(issues: Sequence[mtss.Issue]) -> None:
        for issue in issues:
            reasons.append(str(issue))
            rules.append(issue.rule)

    get = row.get
    for name in _INT_FIELDS:
        if isinstance(get(name), bool):
            add("manifest", name, "type", f"expected an integer, got {str(get(name)).lower()}")

    script = get("script")
    n_shots = None
    if isinstance(script, dict):
        shots = script.get("shot")
        n_shots = len(shots) if isinstance(shots, list) else None
        parsed, script_problems = mtss.script_issues(script, clip_id=label, max_customized_roles=cfg.max_customized_roles)
        take(script_problems)
        if parsed is not None:
            rid = get("id")
            if isinstance(rid, str) and script.get("clip_id") != rid:
                add("script", "script.clip_id", "clip-id", f"'{script.get('clip_id')}' differs from the row id '{rid}'; make them equal")
            frames, fps = _strict_int(get("num_frames")), _strict_int(get("fps"))
            if frames is not None and fps is not None and fps > 0:
                expected = frames / fps
                if abs(parsed.duration - expected) > cfg.limits.duration_tolerance_frames / fps + mtss.TIME_EPS:
                    add(
                        "script",
                        "script.duration",
                        "duration-matches-frames",
                        f"{parsed.duration} s, but num_frames/fps = {frames}/{fps} = {expected:g} s; "
                        "make the script's duration match the clip",
                    )
    _media_issues(row, label, script, cfg, add)
    # Footage ingest puts here where a human sidecar script disagrees with what the detectors
    # measured (data/ingest.py): such a clip is quarantined with those numbers.
    ingest_issues = get("ingest_issues")
    if ingest_issues is not None:
        if not isinstance(ingest_issues, list) or not all(isinstance(x, str) for x in ingest_issues):
            add("manifest", "ingest_issues", "type", f"expected a list of strings, got {ingest_issues!r}")
        for why in ingest_issues if isinstance(ingest_issues, list) else []:
            add("script", "script", "script-vs-footage", f"{why}; fix the sidecar script or the footage and ingest again")

    values = (
        *(_scalar(get(f)) for f in _STR_FIELDS),
        *(_scalar(get(f)) for f in _INT_FIELDS),
        _json_type(get("sha256"), "sha256" in row),
        _json_type(script, "script" in row),
        *(_strict_int(get(f)) for f in _INT_FIELDS),
        n_shots,
    )
    return values, reasons, rules


@dataclass
class _Chunk:
    """What the scan of one byte range sends back: flat-table columns for the decoded rows,
    the per-row reasons, and the lines that are not JSON objects."""

    columns: list[list[Any]]
    reasons: dict[int, list[str]]  # position among this chunk's rows -> reasons
    rules: dict[int, list[str]]
    bad_lines: list[tuple[int, int, str, str]]  # (line, offset, rule, reason)


def _scan_range(path: str, start: int, end: int, first_lineno: int, cfg: _ScanConfig) -> _Chunk:
    """Decode and check every line in ``[start, end)`` of the manifest; ``start`` is the
    first byte of line ``first_lineno``."""
    with open(path, "rb") as fh:
        fh.seek(start)
        data = fh.read(end - start)
    columns: list[list[Any]] = [[] for _ in _COLUMNS]
    append = [c.append for c in columns]
    reasons: dict[int, list[str]] = {}
    rules: dict[int, list[str]] = {}
    bad: list[tuple[int, int, str, str]] = []
    lineno, pos, n_rows = first_lineno - 1, start, 0
    where = _manifest.MANIFEST
    for raw in data.split(b"\n"):
        lineno += 1
        offset, pos = pos, pos + len(raw) + 1
        if len(raw) > _manifest.MAX_LINE_BYTES:
            msg = f"line {lineno} is longer than {_manifest.MAX_LINE_BYTES} bytes; a manifest line describes one clip: fix the line or remove it"
            bad.append((lineno, offset, "json", str(mtss.Issue(f"? ({where} line {lineno})", "manifest", where, "json", msg))))
            continue
        try:
            row = _fast_loads(raw)
        except ValueError:
            row = None
        if type(row) is not dict:  # blank, malformed, not UTF-8, or something orjson refuses
            if not raw.strip():
                continue
            label = f"? ({where} line {lineno})"
            try:
                decoded = _manifest.decode_line(lineno, raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                msg = f"line {lineno} is not valid UTF-8 (byte {exc.start}); re-encode it as UTF-8"
                bad.append((lineno, offset, "encoding", str(mtss.Issue(label, "manifest", where, "encoding", msg))))
                continue
            if decoded is None:
                continue
            if decoded.row is None:
                msg = f"line {lineno}: {decoded.error}; fix the line or remove it"
                bad.append((lineno, offset, "json", str(mtss.Issue(label, "manifest", where, "json", msg))))
                continue
            row = decoded.row
        values, row_reasons, row_rules = _check_row(row, lineno, cfg)
        append[0](lineno)
        append[1](offset)
        for a, v in zip(append[2:], values):
            a(v)
        if row_reasons:
            reasons[n_rows] = row_reasons
            rules[n_rows] = row_rules
        n_rows += 1
    return _Chunk(columns, reasons, rules, bad)


def _ranges(path: Path, chunk_bytes: int, digest: Any) -> Iterator[tuple[int, int, int]]:
    """(start, end, first_lineno) of newline-aligned byte ranges of about ``chunk_bytes``;
    every byte of the file goes through ``digest`` on the way (one read of the manifest)."""
    lineno, start = 1, 0
    with open(path, "rb") as fh:
        carry = b""
        while True:
            block = fh.read(chunk_bytes)
            if not block:
                break
            digest.update(block)
            block = carry + block
            cut = block.rfind(b"\n") + 1
            if cut == 0:  # one line longer than a block: keep reading
                carry = block
                continue
            yield start, start + cut, lineno
            lineno += block.count(b"\n", 0, cut)
            start += cut
            carry = block[cut:]
        if carry:
            yield start, start + len(carry), lineno


def _default_workers(size: int, chunk_bytes: int) -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, math.ceil(size / chunk_bytes)))


def _scan(path: Path, cfg: _ScanConfig, workers: int, chunk_bytes: int, digest: Any) -> list[_Chunk]:
    ranges = _ranges(path, chunk_bytes, digest)
    if workers <= 1:
        return [_scan_range(str(path), s, e, n, cfg) for s, e, n in ranges]
    import multiprocessing

    # fork: workers need only json, mtss and manifest, and a script without a __main__ guard
    # (a notebook, a KFP component) cannot be re-imported by spawn/forkserver children.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method)) as pool:
        futures = [pool.submit(_scan_range, str(path), s, e, n, cfg) for s, e, n in ranges]
        return [f.result() for f in futures]


# --------------------------------------------------------------------------- expectations


@dataclass(frozen=True)
class _Check:
    """One expectation of the suite and how its failing rows are explained."""

    expectation: Any
    field: str
    rule: str
    explain: Callable[[Any], str]  # the row's value -> what is wrong and what to do


def _fmt(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _suite_checks(limits: ValidationLimits) -> list[_Check]:
    import great_expectations.expectations as gxe

    L = limits
    m = L.spatial_multiple
    s = L.frame_stride
    what = {
        "id": "a unique clip id",
        "split": "'train' or 'eval'",
        "source": "the id of the source the clip was cut from",
        "video": "the video path relative to the dataset root",
        "audio": "the audio path relative to the dataset root",
        "fps": "the frame rate (an integer)",
        "num_frames": f"the frame count ({s}k+1)",
        "width": "the frame width in pixels",
        "height": "the frame height in pixels",
        "sample_rate": "the audio sample rate in Hz",
    }
    checks: list[_Check] = []

    def check(exp_cls: Any, fld: str, rule: str, explain: Callable[[Any], str], **kwargs: Any) -> None:
        exp = exp_cls(meta={"check": len(checks), "field": fld, "rule": rule}, **kwargs)
        checks.append(_Check(exp, fld, rule, explain))

    for f in (*_STR_FIELDS, *_INT_FIELDS):
        check(gxe.ExpectColumnValuesToNotBeNull, f, "required", lambda v, f=f: f"missing; add {what[f]}", column=f)
    for f in _STR_FIELDS:
        check(gxe.ExpectColumnValuesToBeOfType, f, "type", lambda v: f"expected a string, got {_fmt(v)}", column=f, type_="str")
    for f in _INT_FIELDS:
        check(gxe.ExpectColumnValuesToBeOfType, f, "type", lambda v: f"expected an integer, got {_fmt(v)}", column=f, type_="int")
    check(
        gxe.ExpectColumnValuesToMatchRegex, "id", "id-format",
        lambda v: f"{_fmt(v)} is not a usable clip id; use letters, digits, '_', '.' and '-' (it names files)",
        column="id", regex=_ID_PATTERN,
    )
    check(
        gxe.ExpectColumnValuesToBeInSet, "split", "enum",
        lambda v: f"{_fmt(v)} is not one of {', '.join(_manifest.SPLITS)}",
        column="split", value_set=list(_manifest.SPLITS),
    )
    for f in ("source", "video", "audio"):
        check(gxe.ExpectColumnValueLengthsToBeBetween, f, "required", lambda v, f=f: f"is empty; add {what[f]}", column=f, min_value=1)
    check(
        gxe.ExpectColumnValuesToBeInSet, "sha256", "sha256-object",
        lambda v: f"expected an object mapping every media path to its sha256, got {v}",
        column="sha256_json_type", value_set=["object"],
    )
    check(
        gxe.ExpectColumnValuesToBeInSet, "script", "script-object",
        lambda v: f"expected the clip's MTSS script object, got {v}",
        column="script_json_type", value_set=["object"],
    )
    check(
        gxe.ExpectColumnValuesToBeBetween, "fps", "fps-range",
        lambda v: f"{v:g} is outside [{L.min_fps}, {L.max_fps}]",
        column="fps_int", min_value=L.min_fps, max_value=L.max_fps,
    )
    check(
        gxe.ExpectColumnValuesToBeBetween, "sample_rate", "sample-rate-range",
        lambda v: f"{v:g} Hz is outside [{L.min_sample_rate}, {L.max_sample_rate}] Hz",
        column="sample_rate_int", min_value=L.min_sample_rate, max_value=L.max_sample_rate,
    )
    check(
        gxe.ExpectColumnValuesToBeInSet, "num_frames", "frames-4k+1",
        lambda v: f"frame count is not {s}k+1 (remainder {v:g} mod {s}); trim the clip to {s}k+1 frames",
        column="num_frames_mod", value_set=[1 % s],
    )
    for f in ("width", "height"):
        check(
            gxe.ExpectColumnValuesToBeBetween, f, "spatial-multiple",
            lambda v, f=f: f"{v:g} px is below one latent patch ({m} px)",
            column=f"{f}_int", min_value=m,
        )
        check(
            gxe.ExpectColumnValuesToBeInSet, f, "spatial-multiple",
            lambda v, f=f: f"is not a multiple of {m} (VAE spatial stride x patch size; remainder {v:g}); crop or resize the clip",
            column=f"{f}_mod", value_set=[0],
        )
    check(
        gxe.ExpectColumnValuesToBeBetween, "num_frames", "duration-limits",
        lambda v: f"the clip lasts {v:g} s (num_frames/fps), outside [{L.min_duration_s:g}, {L.max_duration_s:g}] s",
        column="duration_s", min_value=L.min_duration_s, max_value=L.max_duration_s,
    )
    check(
        gxe.ExpectColumnValuesToBeBetween, "script.shot", "shot-count",
        lambda v: f"{v:g} shots; a clip has {L.min_shots} to {L.max_shots}",
        column="n_shots", min_value=L.min_shots, max_value=L.max_shots,
    )
    check(gxe.ExpectColumnValuesToBeUnique, "id", "unique-id", lambda v: "", column="id")
    return checks


def _frame(chunks: list[_Chunk], limits: ValidationLimits) -> "pd.DataFrame":
    """The flat table. A raw field whose every value has the expected JSON type gets a typed
    column (int64 / string), which Great Expectations checks by dtype at once; a field with
    any other value stays an object column, so the type expectation looks at each value and
    names the failing rows. Derived numbers are float columns (NaN where the raw value is not
    an integer)."""
    import numpy as np
    import pandas as pd

    cols: dict[str, Any] = {}
    for i, name in enumerate(_COLUMNS):
        values = [v for c in chunks for v in c.columns[i]]
        if name in ("line", "offset"):
            cols[name] = np.asarray(values, dtype=np.int64)
        elif name.endswith("_int") or name == "n_shots":
            cols[name] = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
        elif name in _INT_FIELDS and all(type(v) is int for v in values):
            cols[name] = np.asarray(values, dtype=np.int64)
        elif name in _STR_FIELDS and all(type(v) is str for v in values):
            cols[name] = pd.Series(values, dtype="string")
        else:
            cols[name] = pd.Series(values, dtype=object)
    df = pd.DataFrame(cols)
    df["num_frames_mod"] = df["num_frames_int"] % limits.frame_stride
    df["width_mod"] = df["width_int"] % limits.spatial_multiple
    df["height_mod"] = df["height_int"] % limits.spatial_multiple
    fps = df["fps_int"].where(df["fps_int"] > 0)
    df["duration_s"] = df["num_frames_int"] / fps
    return df


def _ge_context(docs_dir: Path | None) -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    if docs_dir is not None:
        ctx.add_data_docs_site(
            site_name=DOCS_SITE,
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
    return ctx


def _run_suite(
    df: "pd.DataFrame", checks: list[_Check], run_name: str, docs_dir: Path | None
) -> tuple[dict[int, list[tuple[str, str]]], list[int], dict[str, Any], float]:
    """Run the suite. Returns row position -> [(rule, reason)], the positions of every row
    whose id occurs more than once (attributed later: the first occurrence stays), GE
    statistics, and the seconds spent building Data Docs."""
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    ctx = _ge_context(docs_dir)
    asset = ctx.data_sources.add_pandas("manifest").add_dataframe_asset("manifest_rows")
    batch = asset.add_batch_definition_whole_dataframe("all_rows")
    # All expectations at once: add_expectation() one by one rewrites the stored suite each time.
    suite = ctx.suites.add(
        gx.ExpectationSuite(
            name=SUITE_NAME,
            expectations=[c.expectation for c in checks],
            meta={"notes": "mavin-ops manifest validation: schema, types, limits, unique ids"},
        )
    )
    vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=f"{SUITE_NAME}_validation", data=batch, suite=suite))
    checkpoint = ctx.checkpoints.add(
        gx.Checkpoint(name="mavin_validate", validation_definitions=[vd], result_format={"result_format": "COMPLETE"})
    )
    result = checkpoint.run(batch_parameters={"dataframe": df}, run_id=RunIdentifier(run_name=run_name))
    (vr,) = result.run_results.values()

    found: dict[int, list[tuple[str, str]]] = {}
    duplicated: list[int] = []
    ids = df["id"]
    for r in vr.results:
        check = checks[r.expectation_config.meta["check"]]
        if r.exception_info and r.exception_info.get("raised_exception"):
            raise RuntimeError(
                f"expectation {r.expectation_config.type} on {check.field} raised: "
                f"{r.exception_info.get('exception_message')}"
            )
        if r.success:
            continue
        positions = r.result.get("unexpected_index_list") or []
        if check.rule == "unique-id":
            duplicated = sorted(int(p) for p in positions)
            continue
        values = df[r.expectation_config.kwargs["column"]]
        for pos in positions:
            found.setdefault(int(pos), []).append((check.rule, _reason(df, int(pos), ids, check, values.iloc[int(pos)])))
    stats = dict(vr.statistics)
    docs_seconds = 0.0
    if docs_dir is not None:
        t = time.perf_counter()
        ctx.build_data_docs(site_names=[DOCS_SITE])
        offline_data_docs(docs_dir)
        docs_seconds = time.perf_counter() - t
    return found, duplicated, {"success": bool(vr.success), **stats}, docs_seconds


_EXTERNAL_ASSET = re.compile(
    r"""<link\b[^>]*\bhref=["']https?://[^>]*>|<script\b[^>]*\bsrc=["']https?://[^>]*>\s*</script>|<img\b[^>]*\bsrc=["']https?://[^>]*>""", re.I)
_TABLE_SCRIPT = re.compile(r"""\$\(['"]#([\w-]+)['"]\)\.bootstrapTable\(\s*Object\.assign\(\s*\{\s*columns:\s*(\[.*?\]),\s*data:\s*(\[.*?\]),\s*toolbar""", re.S)
_OFFLINE_CSS = """<style>/* mavin-ops: Data Docs without their CDN assets */
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#1d2330;margin:1rem 2rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem} th,td{border-bottom:1px solid #d9dde5;padding:.3rem .5rem;text-align:left;vertical-align:top}
.cooltip .top,.d-none,.modal,.tooltip,.popover{display:none} .tab-pane{display:block;margin-bottom:1.5rem}
.text-success{color:#1f7a3d} .text-danger{color:#b42318} .fa-check-circle:before{content:"\\2714"} .fa-times:before{content:"\\2718"}
</style>"""


def offline_data_docs(root: str | os.PathLike) -> int:
    """Make a Great Expectations Data Docs site readable offline: drop the stylesheets and
    scripts it loads from CDNs, draw the tables its scripts would fill (the index's list of
    validations) as plain HTML, and add a small inline stylesheet. Returns the pages changed."""
    import ast
    import html as _html

    changed = 0
    for page in Path(root).rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        new = _EXTERNAL_ASSET.sub("", text)
        for m in _TABLE_SCRIPT.finditer(text):
            try:
                columns, rows = ast.literal_eval(m.group(2)), ast.literal_eval(m.group(3))
            except (ValueError, SyntaxError):
                continue
            head = "".join(f"<th>{_html.escape(str(c.get('title', '')))}</th>" for c in columns)
            body = []
            for row in rows:
                cells = "".join(f"<td>{row.get(c.get('field'), '')}</td>" for c in columns)  # GE's own cell HTML
                link = row.get("_table_row_link_path")
                if link:
                    cells += f'<td><a href="{_html.escape(str(link))}">open</a></td>'
                body.append(f"<tr>{cells}</tr>")
            static = f'<table id="{m.group(1)}-offline"><tr>{head}<th></th></tr>{"".join(body)}</table>'
            new = re.sub(rf'(<table\b[^>]*\bid="{re.escape(m.group(1))}"[^>]*>)', static + r"\1", new, count=1)
        new = re.sub(r"<script\b[^>]*>(?:(?!</script>).)*\$\((?:(?!</script>).)*</script>", "", new, flags=re.S)  # jQuery code
        if "mavin-ops: Data Docs without" not in new:
            new = new.replace("</head>", _OFFLINE_CSS + "</head>", 1)
        if new != text:
            page.write_text(new, encoding="utf-8")
            changed += 1
    return changed


def _row_label(df: "pd.DataFrame", pos: int, ids: "pd.Series") -> str:
    rid = ids.iloc[pos]
    if isinstance(rid, str) and _ID_RE.match(rid):
        return rid
    return f"? ({_manifest.MANIFEST} line {int(df['line'].iloc[pos])})"


def _reason(df: "pd.DataFrame", pos: int, ids: "pd.Series", check: _Check, value: Any) -> str:
    return str(mtss.Issue(_row_label(df, pos, ids), "manifest", check.field, check.rule, check.explain(value)))


def _cross_row_issues(df: "pd.DataFrame", duplicated: list[int]) -> dict[int, list[tuple[str, str]]]:
    """Later duplicates of a clip id (``duplicated``: the rows the uniqueness expectation
    flagged, every occurrence; the first one stays), and every row of a source found in both
    splits."""
    import pandas as pd

    found: dict[int, list[tuple[str, str]]] = {}
    if df.empty:
        return found
    ids = df["id"]  # the table has a RangeIndex: labels are positions
    lines = df["line"]
    first_line: dict[Any, int] = {}
    for pos in duplicated:
        rid = ids.iloc[pos]
        if rid not in first_line:
            first_line[rid] = int(lines.iloc[pos])
            continue
        msg = f"id {_fmt(rid)} is already used by the row on {_manifest.MANIFEST} line {first_line[rid]}; give each clip its own id"
        found.setdefault(pos, []).append(("unique-id", str(mtss.Issue(_row_label(df, pos, ids), "manifest", "id", "unique-id", msg))))

    source = df["source"]
    is_str = source.map(lambda v: isinstance(v, str)) if source.dtype == object else source.notna()
    sub = df.loc[is_str & df["split"].isin(list(_manifest.SPLITS)), ["source", "split"]]
    n_splits = sub.groupby("source", sort=False)["split"].nunique()
    leaky = n_splits.index[n_splits.to_numpy() > 1]
    if len(leaky):
        rows = sub[sub["source"].isin(pd.Index(leaky))]
        for source, group in rows.groupby("source", sort=False):
            by_split = {sp: list(g.index) for sp, g in group.groupby("split", sort=False)}
            for split, positions in by_split.items():
                others = [p for sp, ps in by_split.items() if sp != split for p in ps]
                other_split = next(sp for sp in by_split if sp != split)
                named = ", ".join(f"{_row_label(df, p, ids)} (line {int(lines.iloc[p])})" for p in others[:3])
                more = f" and {len(others) - 3} more" if len(others) > 3 else ""
                msg = (
                    f"source {_fmt(source)} is in split '{split}' here and in split '{other_split}' by clip {named}{more}; "
                    "keep every clip of a source in one split"
                )
                for pos in positions:
                    found.setdefault(int(pos), []).append(
                        ("source-split", str(mtss.Issue(_row_label(df, pos, ids), "manifest", "source", "source-split", msg)))
                    )
    return found


# --------------------------------------------------------------------------- outputs


def _line_spans(path: Path, offsets: list[int]) -> list[tuple[int, int]]:
    """[start, end) byte span (newline included) of the line starting at each offset."""
    spans = []
    with open(path, "rb") as fh:
        for offset in offsets:
            fh.seek(offset)
            spans.append((offset, offset + len(fh.readline())))
    return spans


def _copy_except(path: Path, dst: Any, holes: list[tuple[int, int]]) -> None:
    """Copy the source file into ``dst`` except the sorted byte spans ``holes``: every kept
    line byte for byte, by kernel-side copies (no per-line Python work)."""
    size = path.stat().st_size
    keep, pos = [], 0
    for a, b in holes:
        if a > pos:
            keep.append((pos, a))
        pos = max(pos, b)
    if pos < size:
        keep.append((pos, size))
    dst.flush()
    last = b"\n"
    with open(path, "rb") as src:
        for a, b in keep:
            while a < b:
                try:
                    n = os.sendfile(dst.fileno(), src.fileno(), a, b - a)
                except (AttributeError, OSError):  # no sendfile here: plain copy
                    src.seek(a)
                    block = src.read(min(b - a, 1 << 24))
                    dst.write(block)
                    dst.flush()
                    n = len(block)
                if n == 0:
                    raise OSError(f"{path} shrank while it was being copied; validate again")
                a += n
            src.seek(b - 1)
            last = src.read(1)
    if last != b"\n":  # the source's last line had no newline
        os.write(dst.fileno(), b"\n")


def _quarantine_records(path: Path, entries: list[tuple[int, int, Any, list[str]]]) -> Iterator[dict[str, Any]]:
    """One record per quarantined line: line number, clip id, reasons and the original row
    (or the raw text when the line is not a JSON object)."""
    with open(path, "rb") as fh:
        for lineno, offset, rid, reasons in entries:
            fh.seek(offset)
            raw = fh.readline(_manifest.MAX_LINE_BYTES + 1)
            record: dict[str, Any] = {"line": lineno, "id": rid if isinstance(rid, str) else None, "reasons": reasons}
            decoded = _manifest.decode_line(lineno, raw.decode("utf-8", errors="replace")) if len(raw) <= _manifest.MAX_LINE_BYTES else None
            if decoded is not None and decoded.row is not None:
                record["row"] = decoded.row
            else:  # malformed JSON, not UTF-8, too deep or too long: the start of its text
                record["text"] = raw[:2000].decode("utf-8", errors="replace").rstrip("\r\n")
            yield record


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with _manifest.atomic_writer(path.parent, path.name) as fh:
        fh.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


_SUMMARY_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Manifest validation: {{ s.dataset }}</title>
<style>body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}</style></head>
<body><h1>Manifest validation <span style="color:{{ '#1a7f37' if s.passed else '#cf222e' }}">{{ 'PASSED' if s.passed else 'FAILED' }}</span></h1>
<p>Dataset <code>{{ s.dataset }}</code>, manifest sha256 <code>{{ s.manifest_sha256 }}</code>.</p>
<p>{{ s.rows }} rows: {{ s.valid }} valid, {{ s.quarantined }} quarantined
({{ '%.2f%%' % (100 * s.quarantined_share) }}; threshold {{ '%.2f%%' % (100 * s.max_quarantine_share) }}).</p>
{% if docs %}<p><a href="{{ docs }}">Great Expectations Data Docs (suite {{ suite }})</a></p>{% endif %}
<h2>Quarantined rows per rule</h2><table><tr><th>rule</th><th>rows</th></tr>
{% for rule, n in s.rule_counts.items() %}<tr><td>{{ rule }}</td><td>{{ n }}</td></tr>{% endfor %}</table>
<h2>First {{ examples|length }} quarantined lines</h2><table><tr><th>line</th><th>reasons</th></tr>
{% for line, reasons in examples %}<tr><td>{{ line }}</td><td>{% for r in reasons %}{{ r }}{% if not loop.last %}<br>{% endif %}{% endfor %}</td></tr>{% endfor %}</table>
<p>All reasons: <code>{{ s.files.quarantine }}</code></p>
</body></html>
"""


def _summary_html(summary: dict[str, Any], examples: list[tuple[int, list[str]]], docs_index: Path | None) -> str:
    """The validation's summary page (Jinja2, every value escaped)."""
    from jinja2 import Environment

    return Environment(autoescape=True).from_string(_SUMMARY_PAGE).render(
        s=summary, examples=examples, docs=docs_index.name if docs_index else "", suite=SUITE_NAME)


def _inside(path: Path, root: Path) -> bool:
    path, root = path.resolve(), root.resolve()
    return path == root or root in path.parents


# --------------------------------------------------------------------------- entry point


def validate_dataset(
    root: str | os.PathLike,
    *,
    max_quarantine_share: float = 0.05,
    max_customized_roles: int | None = 3,
    limits: ValidationLimits = ValidationLimits(),
    check_media: bool = True,
    docs_dir: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    build_docs: bool = True,
    raise_on_fail: bool = False,
    workers: int | None = None,
    chunk_bytes: int = 8 << 20,
    validated_dir: str | os.PathLike | None = None,
) -> ValidationReport:
    """Validate the dataset version at ``root`` and write the results to ``out_dir``.

    Args:
        root: the dataset directory holding ``manifest.jsonl``; never modified.
        max_quarantine_share: the run fails when more than this share of rows is quarantined.
        max_customized_roles: most roles with reference media per clip (MAVIN: 3); None = any.
        limits: duration, shot count, 4k+1 stride, spatial multiple, fps and sample-rate rules.
        check_media: also check that each media file exists and matches its sha256 (path
            safety is checked either way).
        docs_dir: where the Data Docs site goes (default ``<out_dir>/data_docs``).
        out_dir: where the outputs go (default ``$MAVIN_HOME/validation/<root name>``); must
            be outside ``root``.
        build_docs: write the Data Docs site and ``summary.html``.
        raise_on_fail: raise :class:`ValidationFailed` (after writing every output) when the
            run fails.
        workers: processes for the scan (default: one per core for large manifests).
        chunk_bytes: size of the manifest byte ranges the scan hands out.
        validated_dir: when the run passes, write the validated dataset there (only the valid
            rows and their media, see :func:`write_validated_dataset`): what every later
            step reads. Must be outside ``root``. Not written when the run fails.
    """
    t_start = time.perf_counter()
    root = Path(root)
    path = root / _manifest.MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no {_manifest.MANIFEST} in {root}; point at a dataset folder (mavin-ops data generate writes one)")
    if not (isinstance(max_quarantine_share, (int, float)) and 0.0 <= max_quarantine_share <= 1.0):
        raise DatasetError(f"max_quarantine_share (--max-quarantine-share) must be between 0 and 1, got {max_quarantine_share!r}")
    if max_customized_roles is not None and (not isinstance(max_customized_roles, int) or max_customized_roles < 0):
        raise DatasetError(f"max_customized_roles (--max-customized-roles) must be a non-negative integer, got {max_customized_roles!r}")
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes!r}")
    if out_dir is None:
        from mavin_ops import settings

        out_dir = settings.home() / "validation" / root.resolve().name
    out = Path(out_dir)
    docs = Path(docs_dir) if docs_dir is not None else out / "data_docs"
    targets = [("out_dir", out), ("docs_dir", docs)]
    if validated_dir is not None:
        targets.append(("validated_dir", Path(validated_dir)))
    for name, p in targets:
        if _inside(p, root):
            raise DatasetError(f"{name} {p} is inside the dataset root {root}; choose a folder outside it so the dataset stays unchanged")
    out.mkdir(parents=True, exist_ok=True)
    size = path.stat().st_size
    n_workers = _default_workers(size, chunk_bytes) if workers is None else max(1, int(workers))
    seconds: dict[str, float] = {}

    # 1. Scan: decode + per-row relational checks, in parallel over byte ranges.
    t = time.perf_counter()
    cfg = _ScanConfig(str(root.resolve()), limits, max_customized_roles, check_media)
    digest = hashlib.sha256()
    chunks = _scan(path, cfg, n_workers, chunk_bytes, digest)
    seconds["scan"] = time.perf_counter() - t
    log.info("scanned %s (%d bytes) with %d worker(s) in %.1f s", path, size, n_workers, seconds["scan"])

    # 2. Expectations over the flat table.
    t = time.perf_counter()
    df = _frame(chunks, limits)
    row_reasons: dict[int, list[tuple[str, str]]] = {}
    base = 0
    for c in chunks:
        for i, rs in c.reasons.items():
            row_reasons[base + i] = list(zip(c.rules[i], rs))
        base += len(c.columns[0])
    seconds["table"] = time.perf_counter() - t
    t = time.perf_counter()
    checks = _suite_checks(limits)
    ge_found, duplicated, ge_stats, docs_seconds = _run_suite(df, checks, root.resolve().name, docs if build_docs else None)
    seconds["expectations"] = time.perf_counter() - t - docs_seconds
    seconds["data_docs"] = docs_seconds

    # 3. Cross-row checks.
    t = time.perf_counter()
    for found in (ge_found, _cross_row_issues(df, duplicated)):
        for pos, items in found.items():
            row_reasons.setdefault(pos, []).extend(items)
    seconds["cross_row"] = time.perf_counter() - t

    # 4. Outputs.
    t = time.perf_counter()
    lines = df["line"].to_numpy()
    offsets = df["offset"].to_numpy()
    ids = df["id"]
    entries: list[tuple[int, int, Any, list[str]]] = []
    rule_counts: Counter[str] = Counter()
    for pos, items in row_reasons.items():
        entries.append((int(lines[pos]), int(offsets[pos]), ids.iloc[pos], [r for _, r in items]))
        rule_counts.update({rule for rule, _ in items})
    for c in chunks:
        for lineno, offset, rule, reason in c.bad_lines:
            entries.append((lineno, offset, None, [reason]))
            rule_counts[rule] += 1
    entries.sort(key=lambda e: e[0])
    n_rows = len(df) + sum(len(c.bad_lines) for c in chunks)
    with _manifest.atomic_writer(out, VALID_MANIFEST, "wb") as fh:
        _copy_except(path, fh, _line_spans(path, [e[1] for e in entries]))
    valid_path = out / VALID_MANIFEST
    quarantine_path = _manifest.write_manifest(out, _quarantine_records(path, entries), name=QUARANTINE)
    seconds["write"] = time.perf_counter() - t

    share = len(entries) / n_rows if n_rows else 1.0
    passed = n_rows > 0 and share <= max_quarantine_share
    summary_path = out / SUMMARY
    docs_index = docs / "index.html" if build_docs else None
    page = docs / SUMMARY_PAGE if build_docs else None
    seconds["total"] = time.perf_counter() - t_start
    import mavin_ops

    summary: dict[str, Any] = {
        "dataset": str(root.resolve()),
        "manifest": str(path.resolve()),
        "manifest_bytes": size,
        "manifest_sha256": digest.hexdigest(),
        "rows": n_rows,
        "valid": n_rows - len(entries),
        "quarantined": len(entries),
        "quarantined_share": share,
        "max_quarantine_share": max_quarantine_share,
        "passed": passed,
        "rule_counts": dict(sorted(rule_counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        "expectation_suite": SUITE_NAME,
        "expectations": ge_stats,
        "limits": asdict(limits),
        "max_customized_roles": max_customized_roles,
        "check_media": check_media,
        "workers": n_workers,
        "files": {
            "valid_manifest": str(valid_path),
            "quarantine": str(quarantine_path),
            "data_docs": str(docs_index) if docs_index else None,
            "summary_page": str(page) if page else None,
        },
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "mavin_ops_version": mavin_ops.__version__,
    }
    if page is not None:
        examples = [(e[0], e[3]) for e in entries[:_MAX_REASONS_SHOWN]]
        with _manifest.atomic_writer(page.parent, page.name) as fh:
            fh.write(_summary_html(summary, examples, docs_index))
    _write_json(summary_path, summary)
    report = ValidationReport(
        root=root,
        manifest_sha256=summary["manifest_sha256"],
        rows=n_rows,
        valid=summary["valid"],
        quarantined=len(entries),
        quarantined_share=share,
        max_quarantine_share=max_quarantine_share,
        passed=passed,
        rule_counts=summary["rule_counts"],
        valid_manifest=valid_path,
        quarantine=quarantine_path,
        summary=summary_path,
        docs_index=docs_index,
        summary_page=page,
        seconds=summary["seconds"],
    )
    log.info(report.describe())
    if validated_dir is not None and passed:
        write_validated_dataset(report, validated_dir)
    if raise_on_fail and not passed:
        raise ValidationFailed(report)
    return report


# --------------------------------------------------------------------------- the validated dataset


class DatasetError(MavinError, ValueError):
    """A dataset folder cannot be read as clips: the message names the file and what to do."""


@dataclass(frozen=True)
class QuarantineRecord:
    """What validation left out of a validated dataset: for the lineage of the runs reading it."""

    count: int  # quarantined lines (a line that is not JSON has no id but counts)
    ids: tuple[str, ...]  # clip ids of the quarantined rows, in manifest order
    source: str  # the dataset folder that was validated
    source_manifest_sha256: str

    def ids_text(self, limit: int = 4000) -> str:
        """The ids comma-separated, cut to ``limit`` characters (an MLflow tag holds 5000)."""
        text = ",".join(self.ids)
        if len(text) <= limit:
            return text
        cut = text[:limit].rsplit(",", 1)[0]
        return f"{cut},...(+{len(self.ids) - cut.count(',') - 1} more; see {QUARANTINE})"


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed: copy
        import shutil

        shutil.copyfile(src, dst)


def write_validated_dataset(report: ValidationReport, dest: str | os.PathLike) -> Path:
    """Write the validated dataset of ``report`` to ``dest``: ``manifest.jsonl`` = the valid
    rows byte for byte, the media those rows cite (hard links where possible, else copies),
    the source's other top-level files (``mavinset.json``), the quarantine reasons
    (``quarantine.jsonl``) and :data:`VALIDATED_RECORD`. Built in a sibling folder and renamed
    into place, so a reader never sees half of it. Returns ``dest``."""
    import shutil

    from mavin_ops.safety import safe_join

    root = Path(report.root)
    dest = Path(dest)
    if _inside(dest, root):
        raise DatasetError(f"validated_dir {dest} is inside the dataset root {root}; choose a folder outside it so the dataset stays unchanged")
    dest.parent.mkdir(parents=True, exist_ok=True)
    import uuid

    from mavin_ops.fsutil import fsync_dir, replace_dir

    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        shutil.copyfile(report.valid_manifest, tmp / _manifest.MANIFEST)
        shutil.copyfile(report.quarantine, tmp / QUARANTINE)
        for item in root.iterdir():  # dataset metadata such as mavinset.json
            if item.is_file() and not item.is_symlink() and item.name not in (_manifest.MANIFEST, QUARANTINE, VALIDATED_RECORD):
                shutil.copyfile(item, tmp / item.name)
        for line in _manifest.read_manifest(tmp):
            row = line.row or {}
            sha = row.get("sha256") if isinstance(row.get("sha256"), dict) else {}
            for rel in dict.fromkeys([*_manifest.media_paths(row), *sha]):
                src = _manifest.resolve_media(root, rel)  # the media path rule; valid rows pass it
                dst = safe_join(tmp, rel, f"media path of clip {row.get('id')}")
                if src.is_file() and not dst.exists():
                    _link_or_copy(src, dst)
        ids: list[str] = []
        with open(report.quarantine, encoding="utf-8") as fh:
            for text in fh:
                if text.strip():
                    rid = json.loads(text).get("id")
                    if isinstance(rid, str):
                        ids.append(rid)
        record = {
            "source": str(root.resolve()),
            "source_manifest_sha256": report.manifest_sha256,
            "manifest_sha256": _manifest.sha256_file(tmp / _manifest.MANIFEST),
            "rows": report.rows,
            "valid": report.valid,
            "quarantined": report.quarantined,
            "quarantined_ids": ids,
            "max_quarantine_share": report.max_quarantine_share,
        }
        _write_json(tmp / VALIDATED_RECORD, record)
        for folder in sorted({p.parent for p in tmp.rglob("*") if p.is_file()} | {tmp}):
            fsync_dir(folder)
        replace_dir(tmp, dest)  # an atomic swap: readers see the old validated dataset or the new one
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _record(root: Path) -> dict[str, Any] | None:
    path = root / VALIDATED_RECORD
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("manifest_sha256"), str) or not isinstance(data.get("quarantined_ids"), list):
        raise DatasetError(f"{path} is not a validation record; validate the source dataset again")
    return data


def quarantine_record(root: str | os.PathLike) -> QuarantineRecord | None:
    """What validation left out of the validated dataset at ``root``; None for a folder that
    did not come out of validation."""
    data = _record(Path(root))
    if data is None:
        return None
    return QuarantineRecord(
        count=int(data.get("quarantined", len(data["quarantined_ids"]))),
        ids=tuple(str(i) for i in data["quarantined_ids"]),
        source=str(data.get("source", "")),
        source_manifest_sha256=str(data.get("source_manifest_sha256", "")),
    )


def read_clips(root: str | os.PathLike, *, split: str | None = None, what: str = "dataset") -> list[dict[str, Any]]:
    """The rows of ``<root>/manifest.jsonl`` (of ``split`` when given), in file order: the one
    loader of every step after validation (latent precompute, training, benchmark sampling,
    evaluation).

    In a validated dataset (one holding :data:`VALIDATED_RECORD`) the manifest must be the
    exact one validation wrote, so no quarantined clip can be read: a manifest swapped or
    edited afterwards (the full source manifest copied back, say) is refused. A line that is
    not a JSON object is refused too. Raises :class:`DatasetError` with a one-line message."""
    root = Path(root)
    path = root / _manifest.MANIFEST
    if not path.is_file():
        raise DatasetError(f"{path}: no manifest; the {what} directory must be in the dataset layout (manifest.jsonl + media)")
    record = _record(root)
    if record is not None and _manifest.sha256_file(path) != record["manifest_sha256"]:
        raise DatasetError(
            f"{path} is not the manifest validation wrote (see {root / VALIDATED_RECORD}): it may hold quarantined clips; "
            "validate the source dataset again and read the validated output"
        )
    rows: list[dict[str, Any]] = []
    for line in _manifest.read_manifest(root):
        if line.row is None:
            raise DatasetError(f"{path}:{line.lineno}: {line.error}; validate the {what} and read the validated output")
        if split is None or line.row.get("split") == split:
            rows.append(line.row)
    return rows
