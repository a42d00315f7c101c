"""The MTSS contract: parsing, grounding rules with located errors, JSON round trip, and the
compiler to MAVIN's hierarchical caption (eq. 2)."""

from __future__ import annotations

import copy
import json

import pytest

from mavin_ops.mtss import (
    ScriptError,
    TimeRange,
    check_script,
    compile_caption,
    file_issues,
    grounding_issues,
    load_script,
    parse_issues,
    parse_script,
    read_script_file,
    script_issues,
    union_spans,
)


def base_script() -> dict:
    return {
        "clip_id": "c1",
        "duration": 3.0,
        "reference": [
            {"id": "R1", "category": "person", "semantic_description": "a red sprite",
             "appearance_anchor": {"detail_description": "red square", "clothing": "striped"},
             "voice": "low warm voice", "reference_image": "refs/c1_R1.png", "reference_audio": "refs/c1_R1.wav"},
            {"id": "R2", "category": "person", "semantic_description": "a green sprite",
             "appearance_anchor": {"detail_description": "green disc"}, "voice": "high voice"},
            {"id": "R3", "category": "scene", "semantic_description": "a blue room",
             "appearance_anchor": {"detail_description": "blue checker"}},
        ],
        "shot": [
            {"id": "S1", "time_range": [0.0, 1.0], "visual_description": "R1 in the room", "camera": "wide",
             "references_in_shot": ["R1", "R3"], "active_events": ["E1"]},
            {"id": "S2", "time_range": [1.0, 2.0], "visual_description": "R2 in the room", "camera": "close",
             "references_in_shot": ["R2", "R3"], "active_events": ["E2"]},
            {"id": "S3", "time_range": [2.0, 3.0], "visual_description": "both", "camera": "wide",
             "references_in_shot": ["R1", "R2", "R3"], "active_events": ["E3"]},
        ],
        "event": [
            {"id": "E1", "type": "dialogue", "time_range": [0.2, 0.8], "speaker": "R1", "line": "hello"},
            {"id": "E2", "type": "dialogue", "time_range": [1.1, 1.5], "speaker": "R2", "line": "hi"},
            {"id": "E3", "type": "dialogue", "time_range": [2.3, 2.9], "speaker": "R1", "line": "bye"},
        ],
        "global": {"scene_description": "two sprites talk", "global_style": "flat", "global_audio": "hum"},
    }


def rules(d: dict) -> set[str]:
    return {i.rule for i in grounding_issues(parse_script(d))}


def test_valid_script_round_trips_through_json():
    s = parse_script(base_script())
    assert grounding_issues(s) == []
    again = parse_script(json.loads(s.to_json()))
    assert again == s
    assert [e.id for e in s.customized_roles()] == ["R1"]


def test_load_script_names_file_on_bad_json(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('{"clip_id": "c1",\n "duration": }')
    with pytest.raises(ScriptError) as err:
        load_script(str(p))
    assert str(p) in str(err.value) and "line 2" in str(err.value)


@pytest.mark.parametrize(
    "mutate, rule, field",
    [
        (lambda d: d["shot"][0]["references_in_shot"].append("R9"), "cited-id", "shot[S1].references_in_shot"),
        (lambda d: d["shot"][0]["active_events"].append("E9"), "cited-id", "shot[S1].active_events"),
        (lambda d: d["shot"][1].__setitem__("time_range", [1.2, 2.0]), "shots-gap", "shot[S2].time_range"),
        (lambda d: d["shot"][1].__setitem__("time_range", [0.8, 2.0]), "shots-overlap", "shot[S2].time_range"),
        (lambda d: d["shot"][2].__setitem__("time_range", [2.0, 2.5]), "shots-cover", "shot[S3].time_range"),
        (lambda d: d["event"][0].pop("speaker"), "dialogue-speaker", "event[E1].speaker"),
        (lambda d: d["event"][0].__setitem__("speaker", "R3"), "speaker-is-person", "event[E1].speaker"),
        (lambda d: d["event"][0].__setitem__("speaker", "R7"), "cited-id", "event[E1].speaker"),
        (lambda d: d["event"][0].__setitem__("time_range", [2.5, 3.5]), "inside-clip", "event[E1].time_range"),
        (lambda d: d["shot"][0].__setitem__("active_events", ["E2"]), "event-overlaps-shot", "shot[S1].active_events"),
        (lambda d: d["reference"].append(copy.deepcopy(d["reference"][1])), "unique-id", "reference[R2].id"),
    ],
)
def test_each_grounding_rule_is_located(mutate, rule, field):
    d = base_script()
    mutate(d)
    issues = grounding_issues(parse_script(d))
    hits = [i for i in issues if i.rule == rule]
    assert hits, f"expected rule {rule}, got {[str(i) for i in issues]}"
    assert hits[0].field == field and hits[0].clip_id == "c1"
    assert str(hits[0]).startswith(f"clip c1: {field}: [{rule}]")


def test_customized_role_limit_is_config():
    d = base_script()
    for e in d["reference"][1:]:
        e["reference_image"] = f"refs/{e['id']}.png"
    s = parse_script(d)
    assert "max-customized-roles" in {i.rule for i in grounding_issues(s, max_customized_roles=2)}
    assert grounding_issues(s, max_customized_roles=3) == []
    with pytest.raises(ScriptError, match="at most 2"):
        check_script(s, max_customized_roles=2)


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda d: d.pop("shot"), "shot: [required]"),
        (lambda d: d["shot"][0].__setitem__("time_range", [1.0, 0.5]), "shot[S1].time_range: [time-order]"),
        (lambda d: d["event"][0].__setitem__("type", "song"), "event[E1].type: [enum]"),
        (lambda d: d["reference"][0].__setitem__("category", "robot"), "reference[R1].category: [enum]"),
        (lambda d: d.__setitem__("duration", "long"), "duration: [type]"),
        (lambda d: d["shot"][0].__setitem__("references_in_shot", "R1"), "shot[S1].references_in_shot: [type]"),
    ],
)
def test_structural_errors_name_clip_and_field(mutate, needle):
    d = base_script()
    mutate(d)
    with pytest.raises(ScriptError) as err:
        parse_script(d)
    assert any(needle in str(i) for i in err.value.issues), [str(i) for i in err.value.issues]
    assert str(err.value).startswith("clip c1: ")


def test_compiler_spans_follow_eq2():
    cap = compile_caption(parse_script(base_script()))
    assert cap.global_.spans == (TimeRange(0.0, 3.0),)
    assert [c.key for c in cap.shots] == ["S1", "S2", "S3"]
    assert cap.shots[1].spans == (TimeRange(1.0, 2.0),)
    assert 'R2 says "hi"' in cap.shots[1].text and "camera: close" in cap.shots[1].text
    roles = {r.role_id: r for r in cap.roles}
    # R1 visual: shots S1 and S3 (not contiguous), so two spans.
    assert roles["R1"].visual.shots == ("S1", "S3")
    assert roles["R1"].visual.spans == (TimeRange(0.0, 1.0), TimeRange(2.0, 3.0))
    # R1 audio: the union of its dialogue intervals T_j^r.
    assert roles["R1"].audio.spans == (TimeRange(0.2, 0.8), TimeRange(2.3, 2.9))
    assert roles["R1"].customized and not roles["R2"].customized
    # R3 is a scene: visible in every shot (merged into one span), no audio descriptor.
    assert roles["R3"].visual.spans == (TimeRange(0.0, 3.0),) and roles["R3"].audio is None
    assert "striped" in roles["R1"].visual.text and "low warm voice" in roles["R1"].audio.text
    levels = [c.level for c in cap.captions()]
    assert levels[:4] == ["global", "shot", "shot", "shot"] and levels.count("role_audio") == 2


def test_union_spans_merges_touching_and_overlapping():
    spans = [TimeRange(2, 3), TimeRange(0, 1), TimeRange(1, 1.5), TimeRange(2.5, 4)]
    assert union_spans(spans) == (TimeRange(0, 1.5), TimeRange(2, 4))


# --------------------------------------------------------------------------- events every shot must cite


def test_event_no_shot_cites_is_refused_not_dropped():
    """An event outside every shot's active_events would vanish from the compiled caption:
    grounding refuses it with its own rule, naming the shot to cite it in."""
    d = base_script()
    d["shot"][2]["active_events"] = []  # E3 [2.3, 2.9] is inside S3 but no shot cites it
    issues = [i for i in grounding_issues(parse_script(d)) if i.rule == "event-cited-by-shot"]
    assert [str(i) for i in issues] and issues[0].field == "event[E3].id" and issues[0].stream == "event"
    assert str(issues[0]).startswith("clip c1: event[E3].id: [event-cited-by-shot] ")
    assert "active_events of shot S3" in issues[0].message and "\n" not in str(issues[0])
    with pytest.raises(ScriptError, match=r"event-cited-by-shot"):
        check_script(parse_script(d))


@pytest.mark.parametrize(
    "mutate, field, suggestion",
    [
        (lambda d: d.__setitem__("duraton", 3.0), "duraton", "duration"),
        (lambda d: d["reference"][0].__setitem__("semantic_descripton", "x"), "reference[R1].semantic_descripton", "semantic_description"),
        (lambda d: d["reference"][0]["appearance_anchor"].__setitem__("clothes", "x"), "reference[R1].appearance_anchor.clothes", "clothing"),
        (lambda d: d["shot"][1].__setitem__("camra", "wide"), "shot[S2].camra", "camera"),
        (lambda d: d["event"][0].__setitem__("speeker", "R1"), "event[E1].speeker", "speaker"),
        (lambda d: d["global"].__setitem__("global_styl", "flat"), "global.global_styl", "global_style"),
    ],
)
def test_unknown_field_is_refused_with_path_and_suggestion(mutate, field, suggestion):
    d = base_script()
    mutate(d)
    with pytest.raises(ScriptError) as err:
        parse_script(d)
    hits = [i for i in err.value.issues if i.rule == "unknown-key"]
    assert len(hits) == 1, [str(i) for i in err.value.issues]
    assert hits[0].field == field and f"did you mean '{suggestion}'?" in hits[0].message
    assert str(hits[0]).startswith(f"clip c1: {field}: [unknown-key] unknown field ")


def test_unknown_field_without_a_close_name_lists_the_known_ones():
    d = base_script()
    d["shot"][0]["zzz"] = 1
    with pytest.raises(ScriptError) as err:
        parse_script(d)
    (issue,) = err.value.issues
    assert issue.field == "shot[S1].zzz" and "remove it" in issue.message and "active_events" in issue.message


def test_script_issues_collects_every_problem_in_one_pass():
    """One implementation: script_issues returns the structural and the grounding problems
    together; parse_script / check_script raise with those same issues."""
    d = base_script()
    d["shot"][0]["camra"] = "wide"  # structural, but loses nothing: grounding still runs
    d["event"][0]["speaker"] = "R3"  # grounding: a scene cannot speak
    d["shot"][2]["active_events"] = []  # grounding: E3 cited by no shot
    script, issues = script_issues(d)
    assert script is not None
    assert [i.rule for i in issues] == ["unknown-key", "speaker-is-person", "event-cited-by-shot"]
    parsed, structural = parse_issues(d)
    with pytest.raises(ScriptError) as err:
        parse_script(d)
    assert err.value.issues == structural == issues[:1]
    del d["shot"][0]["camra"]
    assert script_issues(d)[1] == grounding_issues(parse_script(d))


def test_lossy_structure_stops_before_grounding():
    d = base_script()
    d["shot"][1]["time_range"] = [2.0, 1.0]  # dropped shot: grounding would report a gap too
    script, issues = script_issues(d)
    assert script is None and [i.rule for i in issues] == ["time-order"]


def test_read_script_file_yaml_and_errors(tmp_path):
    yaml = pytest.importorskip("yaml")
    p = tmp_path / "scene.yaml"
    p.write_text(yaml.safe_dump(base_script()))
    assert load_script(str(p)) == parse_script(base_script())
    bad = tmp_path / "bad.yml"
    bad.write_text("clip_id: c1\nshot: [\n")
    with pytest.raises(ScriptError) as err:
        read_script_file(bad)
    assert str(bad) in str(err.value) and "not valid YAML at line" in str(err.value)


def test_file_issues_reads_a_manifest(tmp_path):
    good, typo = base_script(), base_script()
    typo["clip_id"] = "c2"
    typo["event"][1]["lines"] = "hi"
    rows = [{"id": "c1", "script": good}, {"id": "c2", "script": typo}, {"id": "c3"}]
    path = tmp_path / "manifest.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{oops\n")
    got = [(i.clip_id, i.field, i.rule) for i in file_issues(path)]
    assert got == [
        ("c2", "event[E2].lines", "unknown-key"),
        ("c3", "script", "script-object"),
        ("? (manifest.jsonl line 4)", "line", "manifest-line"),
    ]
    assert list(file_issues(tmp_path)) == list(file_issues(path))  # a dataset folder: its manifest
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list(file_issues(tmp_path / "missing.json"))
