"""Facts declared once: the preset names (mavin_ops/presets.py) are exactly the presets each
layer builds, and the stage list (training/recipes.py) is the one the pipeline and the page use."""

from __future__ import annotations

from mavin_ops import presets


def test_each_layer_builds_exactly_the_declared_presets():
    from mavin_ops.data import synth
    from mavin_ops.model import config
    from mavin_ops.release_config import ReleaseConfig
    from mavin_ops.training import recipes

    assert tuple(synth.PRESETS) == presets.WORLD_PRESETS
    assert tuple(config.PRESETS) == presets.MODEL_PRESETS == recipes.PRESETS
    assert set(presets.RELEASE_PRESETS) == set(presets.WORLD_PRESETS) & set(presets.MODEL_PRESETS)
    assert ReleaseConfig.model_fields["preset"].annotation.__args__ == presets.RELEASE_PRESETS


def test_the_stage_list_is_the_recipes_one():
    from mavin_ops import release_page
    from mavin_ops.pipelines import release
    from mavin_ops.training.recipes import STAGES

    assert release.STAGES is STAGES
    assert release_page.STAGES == tuple(f"train_{s}" for s in STAGES)


def _imports() -> dict[str, set[str]]:
    """module -> the package modules it imports when it runs (at the top or inside a
    function; ``if TYPE_CHECKING:`` blocks never run and are left out)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    folders = {"mavin_ops": "mavin_ops", **{f: f"mavin_ops.{f}" for f in ("data", "model", "training", "serving", "evaluation", "components", "pipelines")}}
    files = {}
    for folder, package in folders.items():
        for path in (root / folder).rglob("*.py"):
            parts = path.relative_to(root / folder).with_suffix("").parts
            files[".".join([package, *(parts[:-1] if parts[-1] == "__init__" else parts)])] = path

    def walk(node):
        for child in ast.iter_child_nodes(node):
            if not (isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test)):
                yield child
                yield from walk(child)

    edges = {}
    for name, path in files.items():
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        out = set()
        for node in walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                out |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(here[: len(here) - node.level + 1] + [node.module or ""]).strip(".") if node.level else node.module or ""
                subs = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in files}
                out |= subs | ({base} if len(subs) < len(node.names) else set())
        edges[name] = {m for m in out if m in files and m != name}
    return edges


def test_no_import_circle():
    edges = _imports()
    assert len(edges) > 100 and "mavin_ops.registry" in edges["mavin_ops.cli"]

    def cycle_from(start: str) -> list[str] | None:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in edges[node]:
                if nxt == start:
                    return path + [start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
        return None

    circles = {" -> ".join(c) for m in edges if (c := cycle_from(m))}
    assert not circles, sorted(circles)[:5]


def test_the_model_imports_no_layer_above_it():
    """model/ is the network alone: the MTSS contract it reads is mavin_ops/mtss.py, shared
    with data/, never data/, training/, evaluation/, serving/ or the pipelines."""
    above = ("mavin_ops.data", "mavin_ops.training", "mavin_ops.evaluation", "mavin_ops.serving", "mavin_ops.pipelines", "mavin_ops.components")
    reach = {(m, t) for m, targets in _imports().items() if m.startswith("mavin_ops.model") for t in targets if t.startswith(above)}
    assert reach == set()
