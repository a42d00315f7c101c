"""One error root: every error a user can act on derives from MavinError, which the command
line catches once (one line, exit 2); the few that mean a bug or an internal signal are named
here, so a new error class has to choose."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from mavin_ops.cli import main
from mavin_ops.errors import MavinError

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mavin_ops", "data", "model", "training", "serving", "evaluation", "components", "pipelines")
BUILTIN = {"Exception", "ValueError", "RuntimeError", "LookupError", "OSError", "KeyError", "TypeError"}

#: Error classes that are not the user's to act on: a lookup the caller answers, a signal
#: between parts, or a server's own reply.
INTERNAL = {
    "NotFound",  # reader: a lookup miss its callers turn into their own message
    "DecodeError",  # footage: one clip that cannot be decoded, recorded as a rejected line
    "ValidationFailed",  # validate: the report is the message; the command exits 1 with it
    "TrainJobError",  # k8s: a TrainJob that failed, reported by the train step
    "_BlsError",  # inside the Triton model: becomes an inference error response
    "RequestError",  # serving pipeline: becomes the server's 400 reply
}


def _error_classes() -> dict[str, bool]:
    """Every exception class defined in the code: name -> derives from MavinError."""
    bases: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef):
                    names = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases}
                    bases.setdefault(node.name, set()).update(names)

    def is_error(name: str, seen=()) -> bool:
        return name in BUILTIN or any(b not in seen and is_error(b, (*seen, b)) for b in bases.get(name, ()) if b in bases or b in BUILTIN)

    def rooted(name: str, seen=()) -> bool:
        return name == "MavinError" or any(b not in seen and rooted(b, (*seen, b)) for b in bases.get(name, ()))

    return {name: rooted(name) for name in bases if name != "MavinError" and is_error(name)}


def test_every_error_class_derives_from_the_root_or_is_named_internal():
    classes = _error_classes()
    assert len(classes) > 40  # the walk found them
    unrooted = {name for name, ok in classes.items() if not ok}
    assert unrooted == INTERNAL, f"derive these from mavin_ops.errors.MavinError, or name them in INTERNAL: {sorted(unrooted - INTERNAL)}"


def test_a_root_error_from_any_command_is_one_line_and_exit_2(monkeypatch, capsys):
    import mavin_ops.cli as cli
    from mavin_ops.training.checkpoint import CheckpointError

    def fails(args):
        raise CheckpointError("step-4 is missing model.safetensors\nsecond line never shown")

    monkeypatch.setattr(cli, "_history", fails)
    assert main(["history", "m"]) == 2
    assert capsys.readouterr().err == "mavin-ops: error: step-4 is missing model.safetensors\n"
    assert issubclass(CheckpointError, (MavinError, RuntimeError))


@pytest.mark.parametrize("kind", [ValueError, RuntimeError, KeyError])
def test_anything_else_keeps_its_traceback(monkeypatch, kind):
    import mavin_ops.cli as cli

    def buggy(args):
        raise kind("a bug")

    monkeypatch.setattr(cli, "_history", buggy)
    with pytest.raises(kind):
        main(["history", "m"])


def test_no_two_error_classes_share_a_name():
    """One name, one meaning: two ``PresetError`` classes once meant two things."""
    from collections import Counter

    names = Counter()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            names.update(node.name for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                         if isinstance(node, ast.ClassDef) and node.name.endswith("Error"))
    assert [name for name, n in names.items() if n > 1] == []
