"""The MTSS scene-script data contract and its compiler to MAVIN's hierarchical caption.

Sources: "Script-a-Video: Multi-Stream Scene Script (MTSS)" section 3 (the four streams and
their fields) and "MAVIN: Multi-Shot Audio-Visual Generation with Customized Narrative
Control" section 4.2, eq. 2 (the hierarchical caption C = {g, (s_i, T_i^s), (d_j^v, d_j^a,
T_j^r)}).

A script is JSON with four streams::

    {"clip_id": "c000001", "duration": 2.4,
     "reference": [{"id": "R1", "category": "person", "semantic_description": "...",
                    "appearance_anchor": {"detail_description": "...", "clothing": "...",
                                          "accessories": "...", "hairstyle": "..."},
                    "voice": "low warm voice", "reference_image": "refs/x.png",
                    "reference_audio": "refs/x.wav"}],
     "shot": [{"id": "S1", "time_range": [0.0, 1.2], "visual_description": "...",
               "camera": "static medium shot", "references_in_shot": ["R1"],
               "active_events": ["E1"]}],
     "event": [{"id": "E1", "type": "dialogue", "time_range": [0.2, 0.9], "speaker": "R1",
                "line": "hello", "description": "calm"}],
     "global": {"scene_description": "...", "global_style": "...", "global_audio": "..."}}

Times are seconds; a time range is half-open ``[start, end)``. A field the contract does not
define (a typo such as ``camra``) is refused with its path and the nearest known name.

One implementation, two ways to call it: :func:`parse_issues` (structure) and
:func:`script_issues` (structure, then grounding) return *every* located problem, so a
validator can quarantine a clip with all its reasons at once and ``mavin-ops script check``
can print them all; :func:`parse_script` and :func:`check_script` raise :class:`ScriptError`
with those same issues. :func:`read_script_file` decodes a script file (JSON, or YAML for
``.yaml`` / ``.yml``) and :func:`file_issues` checks a script file or a ``manifest.jsonl``.
"""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator
from mavin_ops.errors import MavinError

__all__ = [
    "CATEGORIES",
    "EVENT_TYPES",
    "TIME_EPS",
    "AppearanceAnchor",
    "Caption",
    "Entity",
    "Event",
    "GlobalStream",
    "HierarchicalCaption",
    "Issue",
    "RoleCaption",
    "Script",
    "ScriptError",
    "Shot",
    "TimeRange",
    "check_script",
    "compile_caption",
    "file_issues",
    "grounding_issues",
    "load_script",
    "parse_issues",
    "parse_script",
    "read_script_file",
    "script_issues",
    "union_spans",
]

CATEGORIES = ("person", "object", "animal", "scene")
EVENT_TYPES = ("dialogue", "sfx", "music")
#: Two times closer than this are equal (scripts carry decisecond or frame-rate times).
TIME_EPS = 1e-6

#: The fields each object of a script may carry; any other key is refused (rule ``unknown-key``).
SCRIPT_FIELDS = ("clip_id", "duration", "reference", "shot", "event", "global")
ENTITY_FIELDS = ("id", "category", "semantic_description", "appearance_anchor", "voice", "reference_image",
                 "reference_audio", "timestamp")
ANCHOR_FIELDS = ("detail_description", "clothing", "accessories", "hairstyle")
SHOT_FIELDS = ("id", "time_range", "visual_description", "camera", "references_in_shot", "active_events")
EVENT_FIELDS = ("id", "type", "time_range", "description", "speaker", "line")
GLOBAL_FIELDS = ("scene_description", "global_style", "global_audio")
_FIELD_SETS = {names: frozenset(names) for names in (SCRIPT_FIELDS, ENTITY_FIELDS, ANCHOR_FIELDS, SHOT_FIELDS,
                                                     EVENT_FIELDS, GLOBAL_FIELDS)}
#: Structural rules that leave the parsed script intact (grounding can still run on it).
_LOSSLESS_RULES = frozenset({"unknown-key"})


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True, slots=True)
class Issue:
    """One broken rule, located: which clip, which stream and field, which rule, and why."""

    clip_id: str
    stream: str  # reference | shot | event | global | script | media | manifest
    field: str  # e.g. "shot[S2].time_range"
    rule: str  # short stable rule name, e.g. "shots-contiguous"
    message: str  # what is wrong and what to do

    def __str__(self) -> str:
        return f"clip {self.clip_id}: {self.field}: [{self.rule}] {self.message}"

    def to_dict(self) -> dict[str, str]:
        return {
            "clip_id": self.clip_id,
            "stream": self.stream,
            "field": self.field,
            "rule": self.rule,
            "message": self.message,
        }


class ScriptError(MavinError, ValueError):
    """A script that cannot be used. ``issues`` holds every located problem found."""

    def __init__(self, issues: Iterable[Issue]):
        self.issues = list(issues)
        first = self.issues[0]
        more = f" (+{len(self.issues) - 1} more)" if len(self.issues) > 1 else ""
        super().__init__(f"{first}{more}")


# --------------------------------------------------------------------------- streams


@dataclass(frozen=True, slots=True)
class TimeRange:
    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start

    def contains(self, t: float) -> bool:
        return self.start - TIME_EPS <= t < self.end - TIME_EPS

    def overlaps(self, other: "TimeRange") -> bool:
        return min(self.end, other.end) - max(self.start, other.start) > TIME_EPS

    def to_json(self) -> list[float]:
        return [self.start, self.end]


@dataclass(frozen=True, slots=True)
class AppearanceAnchor:
    detail_description: str
    clothing: str | None = None
    accessories: str | None = None
    hairstyle: str | None = None

    def text(self) -> str:
        parts = [self.detail_description]
        for name in ("clothing", "accessories", "hairstyle"):
            value = getattr(self, name)
            if value:
                parts.append(f"{name}: {value}")
        return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class Entity:
    """Reference stream entry: a persistent identity the other streams cite by id."""

    id: str
    category: str
    semantic_description: str
    appearance_anchor: AppearanceAnchor
    voice: str | None = None  # timbre description, speakers only
    reference_image: str | None = None  # path relative to the dataset root
    reference_audio: str | None = None
    timestamp: TimeRange | None = None

    @property
    def customized(self) -> bool:
        """A customized role carries reference media (MAVIN section 4.3)."""
        return self.reference_image is not None or self.reference_audio is not None


@dataclass(frozen=True, slots=True)
class Shot:
    id: str
    time_range: TimeRange
    visual_description: str
    camera: str = ""
    references_in_shot: tuple[str, ...] = ()
    active_events: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    type: str
    time_range: TimeRange
    description: str = ""
    speaker: str | None = None
    line: str | None = None


@dataclass(frozen=True, slots=True)
class GlobalStream:
    scene_description: str
    global_style: str = ""
    global_audio: str = ""


@dataclass(frozen=True, slots=True)
class Script:
    clip_id: str
    duration: float
    reference: tuple[Entity, ...]
    shot: tuple[Shot, ...]
    event: tuple[Event, ...]
    global_: GlobalStream

    def entity(self, entity_id: str) -> Entity:
        for e in self.reference:
            if e.id == entity_id:
                return e
        raise KeyError(entity_id)

    def customized_roles(self) -> list[Entity]:
        return [e for e in self.reference if e.customized]

    def to_dict(self) -> dict[str, Any]:
        def entity(e: Entity) -> dict[str, Any]:
            anchor = {"detail_description": e.appearance_anchor.detail_description}
            for name in ("clothing", "accessories", "hairstyle"):
                value = getattr(e.appearance_anchor, name)
                if value is not None:
                    anchor[name] = value
            out: dict[str, Any] = {
                "id": e.id,
                "category": e.category,
                "semantic_description": e.semantic_description,
                "appearance_anchor": anchor,
            }
            for name in ("voice", "reference_image", "reference_audio"):
                value = getattr(e, name)
                if value is not None:
                    out[name] = value
            if e.timestamp is not None:
                out["timestamp"] = e.timestamp.to_json()
            return out

        return {
            "clip_id": self.clip_id,
            "duration": self.duration,
            "reference": [entity(e) for e in self.reference],
            "shot": [
                {
                    "id": s.id,
                    "time_range": s.time_range.to_json(),
                    "visual_description": s.visual_description,
                    "camera": s.camera,
                    "references_in_shot": list(s.references_in_shot),
                    "active_events": list(s.active_events),
                }
                for s in self.shot
            ],
            "event": [
                {
                    k: v
                    for k, v in (
                        ("id", ev.id),
                        ("type", ev.type),
                        ("time_range", ev.time_range.to_json()),
                        ("speaker", ev.speaker),
                        ("line", ev.line),
                        ("description", ev.description),
                    )
                    if v is not None
                }
                for ev in self.event
            ],
            "global": {
                "scene_description": self.global_.scene_description,
                "global_style": self.global_.global_style,
                "global_audio": self.global_.global_audio,
            },
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)


# --------------------------------------------------------------------------- parsing


class _Parser:
    """Turns a JSON object into a :class:`Script`, collecting located type errors."""

    __slots__ = ("clip_id", "issues")

    def __init__(self, clip_id: str):
        self.clip_id = clip_id
        self.issues: list[Issue] = []

    def fail(self, stream: str, fld: str, rule: str, message: str) -> None:
        self.issues.append(Issue(self.clip_id, stream, fld, rule, message))

    def known(self, obj: dict, names: tuple[str, ...], stream: str, where: str) -> None:
        """Refuse every key of ``obj`` outside ``names``, suggesting the nearest known one."""
        if obj.keys() <= _FIELD_SETS[names]:  # the common case: one set comparison
            return
        for key in obj:
            if key in _FIELD_SETS[names]:
                continue
            name = key if isinstance(key, str) else repr(key)
            close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else f"remove it (known fields: {', '.join(names)})"
            self.fail(stream, f"{where}.{name}" if where else name, "unknown-key", f"unknown field '{name}'; {hint}")

    def text(self, obj: dict, key: str, stream: str, where: str, required: bool = True) -> str | None:
        value = obj.get(key)
        if value.__class__ is str:  # the common case first: validation parses millions of these
            return value
        if value is None:
            if required:
                self.fail(stream, f"{where}.{key}", "required", "missing; add a string")
                return ""
            return None
        if not isinstance(value, str):
            self.fail(stream, f"{where}.{key}", "type", f"expected a string, got {type(value).__name__}")
            return ""
        return value

    def time_range(self, obj: dict, key: str, stream: str, where: str, required: bool = True) -> TimeRange | None:
        value = obj.get(key)
        if value.__class__ is list and len(value) == 2:
            start, end = value
            if start.__class__ in (int, float) and end.__class__ in (int, float) and end - start > TIME_EPS:
                return TimeRange(float(start), float(end))
        if value is None:
            if required:
                self.fail(stream, f"{where}.{key}", "required", "missing; add [start, end] in seconds")
            return None
        if (
            not isinstance(value, (list, tuple))
            or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        ):
            self.fail(stream, f"{where}.{key}", "type", f"expected [start, end] in seconds, got {value!r}")
            return None
        start, end = float(value[0]), float(value[1])
        if start != start or end != end or not end - start > TIME_EPS:
            self.fail(stream, f"{where}.{key}", "time-order", f"end must be after start, got [{start}, {end}]")
            return None
        return TimeRange(start, end)

    def ids(self, obj: dict, key: str, stream: str, where: str) -> tuple[str, ...]:
        value = obj.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(stream, f"{where}.{key}", "type", f"expected a list of ids, got {value!r}")
            return ()
        return tuple(value)

    def items(self, data: dict, key: str) -> list[dict]:
        value = data.get(key)
        if value is None:
            self.fail(key, key, "required", f"missing stream '{key}'; add a list")
            return []
        if not isinstance(value, list):
            self.fail(key, key, "type", f"expected a list, got {type(value).__name__}")
            return []
        out = []
        for n, item in enumerate(value):
            if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
                self.fail(key, f"{key}[{n}].id", "required", "each entry needs an object with a string 'id'")
                continue
            out.append(item)
        return out

    def entity(self, d: dict) -> Entity:
        where = f"reference[{d['id']}]"
        self.known(d, ENTITY_FIELDS, "reference", where)
        category = self.text(d, "category", "reference", where)
        if category and category not in CATEGORIES:
            self.fail("reference", f"{where}.category", "enum", f"'{category}' is not one of {', '.join(CATEGORIES)}")
        anchor_raw = d.get("appearance_anchor")
        if not isinstance(anchor_raw, dict):
            self.fail("reference", f"{where}.appearance_anchor", "required", "missing; add an object with detail_description")
            anchor_raw = {}
        aw = f"{where}.appearance_anchor"
        self.known(anchor_raw, ANCHOR_FIELDS, "reference", aw)
        anchor = AppearanceAnchor(
            detail_description=self.text(anchor_raw, "detail_description", "reference", aw) or "",
            clothing=self.text(anchor_raw, "clothing", "reference", aw, required=False),
            accessories=self.text(anchor_raw, "accessories", "reference", aw, required=False),
            hairstyle=self.text(anchor_raw, "hairstyle", "reference", aw, required=False),
        )
        return Entity(
            id=d["id"],
            category=category or "",
            semantic_description=self.text(d, "semantic_description", "reference", where) or "",
            appearance_anchor=anchor,
            voice=self.text(d, "voice", "reference", where, required=False),
            reference_image=self.text(d, "reference_image", "reference", where, required=False),
            reference_audio=self.text(d, "reference_audio", "reference", where, required=False),
            timestamp=self.time_range(d, "timestamp", "reference", where, required=False),
        )

    def shot(self, d: dict) -> Shot | None:
        where = f"shot[{d['id']}]"
        self.known(d, SHOT_FIELDS, "shot", where)
        tr = self.time_range(d, "time_range", "shot", where)
        shot = Shot(
            id=d["id"],
            time_range=tr or TimeRange(0.0, 0.0),
            visual_description=self.text(d, "visual_description", "shot", where) or "",
            camera=self.text(d, "camera", "shot", where, required=False) or "",
            references_in_shot=self.ids(d, "references_in_shot", "shot", where),
            active_events=self.ids(d, "active_events", "shot", where),
        )
        return shot if tr is not None else None

    def event(self, d: dict) -> Event | None:
        where = f"event[{d['id']}]"
        self.known(d, EVENT_FIELDS, "event", where)
        etype = self.text(d, "type", "event", where)
        if etype and etype not in EVENT_TYPES:
            self.fail("event", f"{where}.type", "enum", f"'{etype}' is not one of {', '.join(EVENT_TYPES)}")
        tr = self.time_range(d, "time_range", "event", where)
        ev = Event(
            id=d["id"],
            type=etype or "",
            time_range=tr or TimeRange(0.0, 0.0),
            description=self.text(d, "description", "event", where, required=False) or "",
            speaker=self.text(d, "speaker", "event", where, required=False),
            line=self.text(d, "line", "event", where, required=False),
        )
        return ev if tr is not None else None


def parse_issues(data: Any, clip_id: str | None = None) -> tuple[Script | None, list[Issue]]:
    """Every structural problem of decoded JSON (missing field, wrong type, unknown field,
    unknown enum value, reversed time range), located, and the :class:`Script` when the
    structure is usable: ``None`` when a problem lost data (grounding it would report
    follow-on noise), the script itself when the only problems are unknown fields.
    ``clip_id`` names the clip in the issues (default: the script's own ``clip_id``)."""
    cid = clip_id or (data.get("clip_id") if isinstance(data, dict) else None) or "?"
    p = _Parser(str(cid))
    if not isinstance(data, dict):
        p.fail("script", "script", "type", f"expected a JSON object, got {type(data).__name__}")
        return None, p.issues
    p.known(data, SCRIPT_FIELDS, "script", "")
    if not isinstance(data.get("clip_id"), str) or not data["clip_id"]:
        p.fail("script", "clip_id", "required", "missing; add a non-empty string clip_id")
    duration = data.get("duration")
    if not isinstance(duration, (int, float)) or isinstance(duration, bool) or not duration > 0:
        p.fail("script", "duration", "type", f"expected a positive number of seconds, got {duration!r}")
        duration = 0.0
    reference = tuple(p.entity(d) for d in p.items(data, "reference"))
    shots = tuple(s for s in (p.shot(d) for d in p.items(data, "shot")) if s is not None)
    events = tuple(e for e in (p.event(d) for d in p.items(data, "event")) if e is not None)
    g = data.get("global")
    if not isinstance(g, dict):
        p.fail("global", "global", "required", "missing stream 'global'; add an object with scene_description")
        g = {}
    p.known(g, GLOBAL_FIELDS, "global", "global")
    global_ = GlobalStream(
        scene_description=p.text(g, "scene_description", "global", "global") or "",
        global_style=p.text(g, "global_style", "global", "global", required=False) or "",
        global_audio=p.text(g, "global_audio", "global", "global", required=False) or "",
    )
    if any(i.rule not in _LOSSLESS_RULES for i in p.issues):
        return None, p.issues
    return Script(p.clip_id, float(duration), reference, shots, events, global_), p.issues


def script_issues(
    data: Any, clip_id: str | None = None, max_customized_roles: int | None = 3
) -> tuple[Script | None, list[Issue]]:
    """Every problem of a script, structural then relational (:func:`parse_issues`, then
    :func:`grounding_issues` whenever the structure is usable), and the parsed script
    (``None`` when its structure is not usable). What validation, ``generate`` and
    ``mavin-ops script check`` apply: the one implementation of the contract."""
    script, issues = parse_issues(data, clip_id)
    if script is not None:
        issues = issues + grounding_issues(script, max_customized_roles)
    return script, issues


def parse_script(data: Any, clip_id: str | None = None) -> Script:
    """Build a :class:`Script` from decoded JSON. Raises :class:`ScriptError` naming every
    structural problem :func:`parse_issues` finds."""
    script, issues = parse_issues(data, clip_id)
    if issues or script is None:
        raise ScriptError(issues)
    return script


def read_script_file(path: str | os.PathLike) -> Any:
    """Decode one script file: YAML for ``.yaml`` / ``.yml``, JSON otherwise. Raises
    :class:`ScriptError` (rule ``json`` or ``yaml``) naming the file and the position when
    the text does not decode; ``FileNotFoundError`` / ``IsADirectoryError`` as ``open``."""
    path = str(path)
    is_yaml = path.lower().endswith((".yaml", ".yml"))
    kind = "YAML" if is_yaml else "JSON"

    def bad(message: str) -> ScriptError:
        return ScriptError([Issue("?", "script", path, kind.lower(), f"not valid {kind}: {message}")])

    from mavin_ops.bounded import InputError, load_json, load_yaml, read_bytes

    try:
        raw = read_bytes(path, f"an MTSS script ({kind})")
    except InputError as exc:
        raise ScriptError([Issue("?", "script", path, "file", str(exc).removeprefix(f"{path} ").removeprefix(f"{path}: "))]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad(f"byte {exc.start} is not UTF-8 text") from None
    try:
        return load_yaml(text, path) if is_yaml else load_json(text, path)
    except InputError as exc:  # "<path>: not valid JSON at ..." -> the message after the path
        raise ScriptError([Issue("?", "script", path, kind.lower(), str(exc).removeprefix(f"{path}: "))]) from None


def load_script(path: str) -> Script:
    """Read a script file (JSON, or YAML for .yaml / .yml); errors name the file."""
    return parse_script(read_script_file(path))


#: The manifest a dataset folder holds (data/manifest.py ``MANIFEST``).
_MANIFEST_NAME = "manifest.jsonl"


def file_issues(path: str | os.PathLike, max_customized_roles: int | None = 3) -> Iterator[Issue]:
    """Every problem of the scripts in one file, as :func:`script_issues` finds them.

    ``path`` is one script (JSON, or YAML for ``.yaml`` / ``.yml``), a ``*.jsonl`` manifest
    (one clip a line; its ``script`` field is checked and its ``id`` names the clip), or a
    dataset folder holding ``manifest.jsonl``. A manifest line that is not a JSON object
    with a ``script`` object is an issue of that line (rule ``manifest-line`` / ``script-object``).

    Raises, before yielding anything, ``FileNotFoundError`` when ``path`` does not exist or
    is a folder without a manifest, and :class:`ScriptError` (rule ``json`` / ``yaml``) when
    a single-script file does not decode: mistakes about *which* file, not about a script.
    """
    p = Path(path)
    if p.is_dir():
        if not (p / _MANIFEST_NAME).is_file():
            raise FileNotFoundError(f"{p} is a folder without {_MANIFEST_NAME}; pass a script file, a manifest or a dataset folder")
        p = p / _MANIFEST_NAME
    elif not p.exists():
        raise FileNotFoundError(f"{p} does not exist; pass an MTSS script (JSON or YAML), a manifest.jsonl or a dataset folder")
    if p.suffix.lower() != ".jsonl":
        data = read_script_file(p)
        yield from script_issues(data, max_customized_roles=max_customized_roles)[1]
        return
    yield from _manifest_issues(p, max_customized_roles)


def _manifest_issues(path: Path, max_customized_roles: int | None) -> Iterator[Issue]:
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            where = f"? ({path.name} line {lineno})"
            try:
                row = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                what = "is not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else f"is not valid JSON ({exc.msg})"
                yield Issue(where, "manifest", "line", "manifest-line", f"the line {what}; write one JSON object a line")
                continue
            if not isinstance(row, dict):
                yield Issue(where, "manifest", "line", "manifest-line", f"expected a JSON object, got {type(row).__name__}")
                continue
            rid = row.get("id")
            label = rid if isinstance(rid, str) and rid else where
            script = row.get("script")
            if not isinstance(script, dict):
                got = "no 'script' field" if script is None else f"a {type(script).__name__}"
                yield Issue(label, "manifest", "script", "script-object", f"the row has {got}; add the clip's MTSS script object")
                continue
            yield from script_issues(script, clip_id=label, max_customized_roles=max_customized_roles)[1]


# --------------------------------------------------------------------------- grounding


def grounding_issues(script: Script, max_customized_roles: int | None = 3) -> list[Issue]:
    """Every relational-grounding problem of a parsed script (MTSS section 3): unique ids,
    cited ids declared, speakers are persons, dialogue has a speaker and a line, shots
    ordered, contiguous and covering the clip, events inside the clip, every event cited by
    at least one shot (the compiler places an event in the captions of the shots citing it:
    an uncited event would vanish from the caption), events cited by a shot overlap it, and
    at most ``max_customized_roles`` customized roles."""
    cid = script.clip_id
    out: list[Issue] = []
    add = out.append
    T = script.duration

    def unique(stream: str, ids: list[str]) -> set[str]:
        seen: set[str] = set()
        for i in ids:
            if i in seen:
                add(Issue(cid, stream, f"{stream}[{i}].id", "unique-id", f"id '{i}' is declared twice; give each entry its own id"))
            seen.add(i)
        return seen

    entities = unique("reference", [e.id for e in script.reference])
    events = unique("event", [e.id for e in script.event])
    unique("shot", [s.id for s in script.shot])
    categories = {e.id: e.category for e in script.reference}
    event_by_id = {e.id: e for e in script.event}

    # Shots: ordered, contiguous, covering [0, T].
    if not script.shot:
        add(Issue(cid, "shot", "shot", "shots-cover", "the clip has no shots; add at least one"))
    prev_end = 0.0
    for n, s in enumerate(script.shot):
        where = f"shot[{s.id}].time_range"
        tr = s.time_range
        if n == 0 and abs(tr.start) > TIME_EPS:
            add(Issue(cid, "shot", where, "shots-cover", f"first shot starts at {tr.start} s; it must start at 0"))
        elif n > 0 and tr.start < prev_end - TIME_EPS:
            add(Issue(cid, "shot", where, "shots-overlap", f"starts at {tr.start} s, before the previous shot ends at {prev_end} s"))
        elif n > 0 and tr.start > prev_end + TIME_EPS:
            add(Issue(cid, "shot", where, "shots-gap", f"starts at {tr.start} s, leaving a gap after the previous shot ends at {prev_end} s"))
        if tr.end > T + TIME_EPS:
            add(Issue(cid, "shot", where, "inside-clip", f"ends at {tr.end} s, after the clip ends at {T} s"))
        prev_end = tr.end
        for rid in s.references_in_shot:
            if rid not in entities:
                add(Issue(cid, "shot", f"shot[{s.id}].references_in_shot", "cited-id", f"cites entity '{rid}' which the reference stream does not declare"))
        for eid in s.active_events:
            ev = event_by_id.get(eid)
            if eid not in events:
                add(Issue(cid, "shot", f"shot[{s.id}].active_events", "cited-id", f"cites event '{eid}' which the event stream does not declare"))
            elif ev is not None and not ev.time_range.overlaps(tr):
                add(Issue(cid, "shot", f"shot[{s.id}].active_events", "event-overlaps-shot", f"event '{eid}' {ev.time_range.to_json()} does not overlap the shot {tr.to_json()}"))
    if script.shot and abs(prev_end - T) > TIME_EPS and prev_end < T:
        add(Issue(cid, "shot", f"shot[{script.shot[-1].id}].time_range", "shots-cover", f"last shot ends at {prev_end} s but the clip lasts {T} s"))

    # Events: cited by a shot, inside the clip; dialogue has a person speaker and a line.
    cited = {eid for s in script.shot for eid in s.active_events}
    for ev in script.event:
        where = f"event[{ev.id}]"
        if ev.id not in cited:
            overlapping = [s.id for s in script.shot if s.time_range.overlaps(ev.time_range)]
            fix = f"add '{ev.id}' to active_events of shot {', '.join(overlapping)}" if overlapping else "cite it in the shot it happens in"
            add(Issue(cid, "event", f"{where}.id", "event-cited-by-shot", f"no shot cites event '{ev.id}' in active_events, so the caption would drop it; {fix} or remove the event"))
        if ev.time_range.start < -TIME_EPS or ev.time_range.end > T + TIME_EPS:
            add(Issue(cid, "event", f"{where}.time_range", "inside-clip", f"{ev.time_range.to_json()} is outside the clip [0, {T}]"))
        if ev.speaker is not None and ev.speaker not in entities:
            add(Issue(cid, "event", f"{where}.speaker", "cited-id", f"speaker '{ev.speaker}' is not declared in the reference stream"))
        if ev.type == "dialogue":
            if ev.speaker is None:
                add(Issue(cid, "event", f"{where}.speaker", "dialogue-speaker", "a dialogue event needs a speaker; add the speaking entity's id"))
            elif ev.speaker in entities and categories[ev.speaker] != "person":
                add(Issue(cid, "event", f"{where}.speaker", "speaker-is-person", f"speaker '{ev.speaker}' is a {categories[ev.speaker]}, not a person"))
            if not ev.line:
                add(Issue(cid, "event", f"{where}.line", "dialogue-line", "a dialogue event needs the verbatim line"))

    if max_customized_roles is not None:
        custom = script.customized_roles()
        if len(custom) > max_customized_roles:
            add(Issue(cid, "reference", "reference", "max-customized-roles", f"{len(custom)} customized roles ({', '.join(e.id for e in custom)}); at most {max_customized_roles} are allowed"))
    return out


def check_script(script: Script, max_customized_roles: int | None = 3) -> Script:
    """Raise :class:`ScriptError` when the script breaks a grounding rule; return it otherwise."""
    issues = grounding_issues(script, max_customized_roles)
    if issues:
        raise ScriptError(issues)
    return script


# --------------------------------------------------------------------------- compiler


def union_spans(spans: Iterable[TimeRange]) -> tuple[TimeRange, ...]:
    """Sorted union of time ranges, touching ranges merged."""
    merged: list[TimeRange] = []
    for tr in sorted(spans, key=lambda r: (r.start, r.end)):
        if merged and tr.start <= merged[-1].end + TIME_EPS:
            last = merged[-1]
            merged[-1] = TimeRange(last.start, max(last.end, tr.end))
        else:
            merged.append(tr)
    return tuple(merged)


@dataclass(frozen=True, slots=True)
class Caption:
    """One caption of the hierarchy and the time spans where latent tokens may see it."""

    level: str  # global | shot | role_visual | role_audio
    key: str  # "" for global, the shot id, or the role id
    text: str
    spans: tuple[TimeRange, ...]
    shots: tuple[str, ...] = ()  # role_visual: the shots the role is in


@dataclass(frozen=True, slots=True)
class RoleCaption:
    role_id: str
    visual: Caption  # d_j^v, visible inside the shots where role j appears
    audio: Caption | None  # d_j^a, visible inside role j's dialogue intervals T_j^r
    customized: bool


@dataclass(frozen=True, slots=True)
class HierarchicalCaption:
    """MAVIN eq. 2: C = {{g}, {(s_i, T_i^s)}_i, {(d_j^v, d_j^a, T_j^r)}_j}."""

    clip_id: str
    duration: float
    global_: Caption
    shots: tuple[Caption, ...]
    roles: tuple[RoleCaption, ...] = field(default=())

    def captions(self) -> list[Caption]:
        """All captions in a fixed order: global, shots, then per role visual and audio."""
        out = [self.global_, *self.shots]
        for r in self.roles:
            out.append(r.visual)
            if r.audio is not None:
                out.append(r.audio)
        return out


def compile_caption(script: Script) -> HierarchicalCaption:
    """Compile a grounded script into MAVIN's hierarchical caption with time spans.

    - global g: scene description, style and ambient audio; visible over [0, T].
    - shot i: visual description, camera, and the events active in it; visible over T_i^s.
    - role j visual d_j^v: description and appearance anchor; visible in the shots citing j.
    - role j audio d_j^a: voice/timbre; visible over T_j^r, the union of j's dialogue intervals.
    """
    T = script.duration
    g = script.global_
    global_text = " | ".join(x for x in (g.scene_description, g.global_style, g.global_audio) if x)
    events = {e.id: e for e in script.event}
    shots = []
    for s in script.shot:
        parts = [s.visual_description]
        if s.camera:
            parts.append(f"camera: {s.camera}")
        for eid in s.active_events:
            ev = events.get(eid)
            if ev is None:
                continue
            if ev.type == "dialogue":
                parts.append(f"{ev.speaker} says \"{ev.line}\"" + (f" ({ev.description})" if ev.description else ""))
            else:
                parts.append(f"{ev.type}: {ev.description}")
        shots.append(Caption("shot", s.id, " | ".join(parts), (s.time_range,)))
    roles = []
    for e in script.reference:
        in_shots = [s for s in script.shot if e.id in s.references_in_shot]
        dialogue = [ev.time_range for ev in script.event if ev.type == "dialogue" and ev.speaker == e.id]
        visual = Caption(
            "role_visual",
            e.id,
            f"{e.id} ({e.category}): {e.semantic_description} | {e.appearance_anchor.text()}",
            union_spans(s.time_range for s in in_shots),
            tuple(s.id for s in in_shots),
        )
        audio = None
        if e.voice is not None or dialogue:
            audio = Caption("role_audio", e.id, f"{e.id} voice: {e.voice or ''}", union_spans(dialogue))
        roles.append(RoleCaption(e.id, visual, audio, e.customized))
    return HierarchicalCaption(
        script.clip_id, T, Caption("global", "", global_text, (TimeRange(0.0, T),)), tuple(shots), tuple(roles)
    )
