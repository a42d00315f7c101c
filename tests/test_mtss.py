"""The MTSS contract: parsing, grounding rules with located errors, JSON round trip, and the
compiler to MAVIN's hierarchical caption (eq. 2)."""

from __future__ import annotations

import copy
import json

import pytest

from mavin_ops.data.mtss import (
    ScriptError,
    TimeRange,
    check_script,
    compile_caption,
    grounding_issues,
    load_script,
    parse_script,
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
