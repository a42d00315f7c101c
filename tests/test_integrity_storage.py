"""Release integrity of files and folders on disk: atomic file writes fsync their
folder and leave nothing behind on error; folder replacement never leaves the final name
missing (renameat2 RENAME_EXCHANGE, with the two-rename fallback only where it is missing)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat

import pytest

from mavin_ops.data.manifest import atomic_writer
from mavin_ops.evaluation.results import write_json


def _record_fsyncs(monkeypatch, watch):
    """Record every os.fsync: (is a directory, inode, what ``watch()`` returns at that moment)."""
    calls = []
    real = os.fsync

    def spy(fd):
        st = os.fstat(fd)
        calls.append((stat.S_ISDIR(st.st_mode), st.st_ino, watch()))
        return real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return calls


# --------------------------------------------------------------------------- 13a: atomic file writes


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_write_json_error_mid_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, monkeypatch, failing):
    path = tmp_path / "metrics.json"
    write_json(path, {"schema": "old", "x": 1})
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError(errno.EIO, "disk gone")

    monkeypatch.setattr(os, failing, boom)
    with pytest.raises(OSError, match="disk gone"):
        write_json(path, {"schema": "new", "x": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


@pytest.mark.parametrize("writer", ["write_json", "atomic_writer"])
def test_the_folder_is_fsynced_after_the_rename(tmp_path, monkeypatch, writer):
    path = tmp_path / "out.json"
    calls = _record_fsyncs(monkeypatch, lambda: path.read_text() if path.exists() else None)
    if writer == "write_json":
        write_json(path, {"v": 1})
    else:
        with atomic_writer(tmp_path, "out.json") as fh:
            fh.write(json.dumps({"v": 1}))
    folder = os.stat(tmp_path).st_ino
    dir_syncs = [seen for is_dir, ino, seen in calls if is_dir and ino == folder]
    assert dir_syncs, "the containing folder was never fsynced"
    assert json.loads(dir_syncs[-1]) == {"v": 1}  # after the rename: the new file is in place
    assert any(not is_dir for is_dir, _, _ in calls)  # the file itself too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_two_writers_in_one_process_do_not_share_a_temp_file(tmp_path):
    with atomic_writer(tmp_path, "m.jsonl") as outer:
        outer.write("outer\n")
        with atomic_writer(tmp_path, "m.jsonl") as inner:
            inner.write("inner\n")
        assert (tmp_path / "m.jsonl").read_text() == "inner\n"
        outer.write("more\n")
    assert (tmp_path / "m.jsonl").read_text() == "outer\nmore\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl"]


def test_atomic_writer_error_in_the_block_keeps_the_old_file(tmp_path):
    (tmp_path / "m.jsonl").write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_writer(tmp_path, "m.jsonl") as fh:
            fh.write("half")
            raise RuntimeError("writer died")
    assert (tmp_path / "m.jsonl").read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl"]


# --------------------------------------------------------------------------- 13b: folder replacement


def _tree(root, files):
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def _content(root):
    return {p.relative_to(root).as_posix(): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def watch_final_name(monkeypatch, final):
    """Wrap every rename and delete a folder swap may use; record any moment, before or after
    one of them, at which ``final`` does not exist."""
    gaps = []

    def wrap(mod, name):
        real = getattr(mod, name)

        def spy(*args, **kwargs):
            if not os.path.lexists(final):
                gaps.append(f"before {name}{args}")
            out = real(*args, **kwargs)
            if not os.path.lexists(final):
                gaps.append(f"after {name}{args}")
            return out

        monkeypatch.setattr(mod, name, spy)

    for name in ("rename", "replace"):
        wrap(os, name)
    wrap(shutil, "rmtree")
    return gaps


def _replace_dir_under_test(where):
    if where == "fsutil":
        from mavin_ops.fsutil import replace_dir
    else:
        from mavin_ops.serving.export import replace_dir
    return replace_dir


@pytest.mark.parametrize("where", ["fsutil", "serving.export"])
def test_replace_dir_never_leaves_the_final_name_missing(tmp_path, monkeypatch, where):
    replace_dir = _replace_dir_under_test(where)
    out = _tree(tmp_path / "repository", {"a.txt": "old", "old-only/b.txt": "old"})
    stage = _tree(tmp_path / ".repository.partial-1234", {"a.txt": "new", "new-only/c.txt": "new"})
    gaps = watch_final_name(monkeypatch, out)
    replace_dir(stage, out)
    monkeypatch.undo()
    assert gaps == []
    assert _content(out) == {"a.txt": "new", "new-only/c.txt": "new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repository"]  # no .old-* or staging leftovers


def test_replace_dir_uses_the_atomic_exchange_on_linux(tmp_path, monkeypatch):
    from mavin_ops import fsutil

    if not os.uname().sysname == "Linux":  # pragma: no cover
        pytest.skip("renameat2 is Linux-only")
    calls = []
    real = fsutil.exchange
    monkeypatch.setattr(fsutil, "exchange", lambda a, b: (calls.append((a, b)), real(a, b))[1])
    out = _tree(tmp_path / "out", {"f": "old"})
    stage = _tree(tmp_path / ".out.stage", {"f": "new"})
    fsutil.replace_dir(stage, out)
    assert calls == [(stage, out)]
    assert _content(out) == {"f": "new"} and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    # a first publication (nothing at the final name yet) is a plain rename
    fsutil.replace_dir(_tree(tmp_path / ".fresh.stage", {"g": "1"}), tmp_path / "fresh")
    assert len(calls) == 1 and _content(tmp_path / "fresh") == {"g": "1"}


@pytest.mark.parametrize("code", [errno.ENOSYS, errno.EINVAL])
def test_replace_dir_falls_back_to_two_renames_only_without_renameat2(tmp_path, monkeypatch, code):
    from mavin_ops import fsutil

    def unavailable(a, b):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(fsutil, "exchange", unavailable)
    out = _tree(tmp_path / "out", {"f": "old"})
    fsutil.replace_dir(_tree(tmp_path / ".out.stage", {"f": "new"}), out)
    assert _content(out) == {"f": "new"} and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_replace_dir_other_errors_leave_the_old_folder(tmp_path, monkeypatch):
    from mavin_ops import fsutil

    def denied(a, b):
        raise OSError(errno.EACCES, "permission denied")

    monkeypatch.setattr(fsutil, "exchange", denied)
    out = _tree(tmp_path / "out", {"f": "old"})
    stage = _tree(tmp_path / ".out.stage", {"f": "new"})
    with pytest.raises(PermissionError):
        fsutil.replace_dir(stage, out)
    assert _content(out) == {"f": "old"} and _content(stage) == {"f": "new"}


def test_exchange_swaps_two_folders(tmp_path):
    from mavin_ops import fsutil

    if fsutil._libc_renameat2() is None:  # pragma: no cover
        pytest.skip("no renameat2 in this libc")
    a, b = _tree(tmp_path / "a", {"x": "A"}), _tree(tmp_path / "b", {"y": "B"})
    fsutil.exchange(a, b)
    assert _content(a) == {"y": "B"} and _content(b) == {"x": "A"}
    with pytest.raises(FileNotFoundError):
        fsutil.exchange(a, tmp_path / "missing")
