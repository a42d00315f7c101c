"""The README tells the truth: its two set-up commands come first, every make target and
`mavin-ops` example resolves, every repository path it names exists."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from mavin_ops.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
# Shell blocks only (a ```yaml block is a file's content, not commands).
BLOCKS = [body for lang, body in re.findall(r"```([a-z]*)\n(.*?)```", README, flags=re.S) if lang in ("", "sh", "bash")]
LINES = [line.split("  #")[0].strip() for block in BLOCKS for line in block.splitlines() if line.strip()]


def test_first_block_is_exactly_the_two_setup_commands():
    first = [line.split("#")[0].strip() for line in BLOCKS[0].splitlines() if line.strip()]
    assert first == ["make release", "make test"]
    assert README.index("make release") < README.index("## What the platform does")


def test_ci_runs_make_test_and_nothing_else():
    commands = [
        line for line in (REPO / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "set ", "cd "))
    ]
    assert commands == ["exec make test"]


def test_make_targets_exist():
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, flags=re.M))
    used = {line.split()[1] for line in LINES if line.startswith("make ")}
    used |= set(re.findall(r"`make ([a-z-]+)`", README))
    assert used and used <= targets, used - targets


@pytest.mark.parametrize("line", [line for line in LINES if line.startswith("mavin-ops ")])
def test_cli_examples_parse(line):
    argv = shlex.split(line)[1:]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits on an unknown command or option
        pytest.fail(f"README example does not parse: {line} (exit {exc.code})")
    assert callable(args.func)


def test_mlflow_ui_example_uses_real_options():
    line = next(line for line in LINES if line.startswith("mlflow ui"))
    mlflow = Path(sys.executable).parent / "mlflow"
    out = subprocess.run([str(mlflow), "ui", "--help"], capture_output=True, text=True, check=True).stdout
    for opt in re.findall(r"(--[a-z-]+)", line):
        assert opt in out, opt


def test_named_paths_exist():
    names = set(re.findall(r"`((?:[a-z_.]+/)+(?:[a-z_]+\.[a-z]+)?|[a-z_]+\.(?:py|md|yaml|lock|toml))`", README))
    runtime = {".mavin/", "datasets/debug"}
    names = {n for n in names if n not in runtime and not n.startswith(("<", "s3:"))}
    assert names, "no paths found: the regex is broken"
    missing = [n for n in sorted(names) if not (REPO / n.rstrip("/")).exists()]
    assert not missing, missing


def test_named_presets_exist():
    from mavin_ops.data import synth
    from mavin_ops.model.config import PRESETS as MODEL_PRESETS

    # Data presets (generate, release) or model presets (train, plan: paper is a model preset only);
    # each example's own command checks its choice (test_cli_examples_parse).
    for preset in re.findall(r"--preset ([a-z]+)", README):
        assert preset in synth.PRESETS or preset in MODEL_PRESETS, preset


def test_every_environment_variable_the_platform_reads_is_listed():
    """The README's Environment table names every variable the code reads (os.environ /
    getenv with a literal name, or a ``*_ENV = "NAME"`` constant)."""
    root = Path(__file__).resolve().parents[1]
    read: set[str] = set()
    for folder in ("mavin_ops", "data", "evaluation", "training", "model", "serving", "components", "pipelines"):
        for path in (root / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            read |= set(re.findall(r"""(?:environ(?:\.get)?\(|environ\[|getenv\()\s*["']([A-Z][A-Z0-9_]+)["']""", text))
            read |= set(re.findall(r"""^\s*[A-Z_]*ENV\s*=\s*["']([A-Z][A-Z0-9_]+)["']""", text, re.M))
    read -= {"LOCAL_RANK", "RANK", "WORLD_SIZE"}  # set by torch's launchers for the trainer, not by people
    table = README.split("## Environment", 1)[1]
    missing = sorted(v for v in read if f"`{v}`" not in table)
    assert read and not missing, missing
