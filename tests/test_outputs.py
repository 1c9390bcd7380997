"""Outputs that cannot be written, and the atomic writer: every file whole or not at all, the old one kept,
no temporary left, one line naming the file and the fix (disk faults are simulated with OSError)."""

from __future__ import annotations

import errno
import os
import subprocess
import tempfile

import pytest
from matplotlib.figure import Figure

import moonxp
from moonxp.outputs import write_figure, write_json

from helpers import cli, strict_json


# ---------------------------------------------------------------- outputs that cannot be written

def raise_oserror(code: int):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))
    return fail


def test_cli_unwritable_out_directory_fails_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "TemporaryFile", raise_oserror(errno.EACCES))  # what a read-only dir does
    monkeypatch.setattr(moonxp.app.job, "execute", lambda *a, **k: pytest.fail("trained before checking --out"))
    code, out, err = cli("--no-plot", "--out", str(tmp_path / "out"))
    assert code == 2 and out == ""
    assert err == f"moonxp: error: cannot write into {str(tmp_path / 'out')!r}: Permission denied; " \
                  f"choose another --out\n"


def refuse_temporaries(code: int, real=os.open):
    """os.open that fails for the writer's temporary files only."""
    def open_(path, *args, **kwargs):
        if str(path).endswith(".tmp"):
            raise OSError(code, os.strerror(code))
        return real(path, *args, **kwargs)
    return open_


@pytest.mark.parametrize("call, code, phrase", [
    ("fsync", errno.ENOSPC, "No space left on device; it was left as it was; free disk space or choose another --out"),
    ("replace", errno.EACCES, "Permission denied; it was left as it was; choose another --out"),
    ("open", errno.EACCES, "Permission denied; it was left as it was"),
    ("open", errno.ENOSPC, "No space left on device"),
])
def test_cli_output_write_fails_whole(tmp_path, monkeypatch, call, code, phrase):
    monkeypatch.setattr(os, call, refuse_temporaries(code) if call == "open" else raise_oserror(code))
    exit_code, out, err = cli("--iters", "2", "--no-plot", "--out", str(tmp_path))
    assert exit_code == 2 and phrase in err and err.count("\n") == 1 and "Traceback" not in err
    assert os.listdir(tmp_path) == []                              # no metrics.json, no half file, no .tmp


def test_cli_directory_in_the_way_of_an_output_file(tmp_path):
    (tmp_path / "metrics.json").mkdir()
    code, out, err = cli("--iters", "2", "--no-plot", "--out", str(tmp_path))
    assert code == 2 and "cannot write" in err and "metrics.json" in err and err.count("\n") == 1
    assert os.listdir(tmp_path) == ["metrics.json"] and (tmp_path / "metrics.json").is_dir()


def test_write_json_disk_full_raises_output_error(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", raise_oserror(errno.ENOSPC))
    with pytest.raises(moonxp.OutputError, match="No space left on device") as info:
        write_json(tmp_path / "m.json", {"a": 1})
    assert isinstance(info.value, OSError)
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- atomic replacement

def test_existing_output_is_replaced_atomically(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("old\n")
    with open(path) as reader:                                     # a reader of the old file ...
        write_json(path, {"new": True})
        assert reader.read() == "old\n"                            # ... still sees it whole
    assert strict_json(path) == {"new": True}
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert os.listdir(tmp_path) == ["metrics.json"]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EXDEV, errno.EACCES])
def test_failed_replacement_keeps_the_old_file(tmp_path, monkeypatch, code):
    path = tmp_path / "metrics.json"
    path.write_text("old\n")
    monkeypatch.setattr(os, "replace", raise_oserror(code))
    with pytest.raises(moonxp.OutputError, match="it was left as it was"):
        write_json(path, {"new": True})
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["metrics.json"]


def test_figure_that_fails_half_way_keeps_the_old_png(tmp_path):
    path = tmp_path / "curve.png"
    path.write_bytes(b"old png")
    figure = Figure()

    def half_then_full(f, **kwargs):
        f.write(b"\x89PNG half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    figure.savefig = half_then_full
    with pytest.raises(moonxp.OutputError, match="No space left on device"):
        write_figure(path, figure)
    assert path.read_bytes() == b"old png" and os.listdir(tmp_path) == ["curve.png"]


def test_non_os_error_while_writing_leaves_no_temporary(tmp_path):
    figure = Figure()
    figure.savefig = lambda f, **kwargs: (f.write(b"partial"), 1 / 0)
    with pytest.raises(ZeroDivisionError):
        write_figure(tmp_path / "boundaries.png", figure)
    assert os.listdir(tmp_path) == []


def test_cli_rerun_replaces_outputs_whole(tmp_path):
    assert cli("--iters", "3", "--grid", "8", "--out", str(tmp_path))[0] == 0
    first = strict_json(tmp_path / "metrics.json")
    assert cli("--iters", "4", "--grid", "8", "--out", str(tmp_path))[0] == 0
    second = strict_json(tmp_path / "metrics.json")
    assert first["config"]["iters"] == 3 and second["config"]["iters"] == 4
    assert sorted(os.listdir(tmp_path)) == ["boundaries.png", "curve.png", "metrics.json"]
    for png in ("boundaries.png", "curve.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_out_of_memory_inside_a_compiled_program_is_exit_2(tmp_path, monkeypatch):
    class XlaRuntimeError(RuntimeError):
        pass

    def exhausted(*args, **kwargs):
        raise XlaRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 4.0GiB.\ndetails")
    monkeypatch.setattr(moonxp.app.job, "train", exhausted)
    code, _, err = cli("--out", str(tmp_path), "--no-plot")
    assert code == 2
    assert err.count("\n") == 1 and "out of device memory (RESOURCE_EXHAUSTED" in err


# ---------------------------------------------------------------- the atomic writer's own failures

def test_cleanup_failure_never_masks_the_first_error(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EPERM, "Operation not permitted")
    monkeypatch.setattr(os, "replace", refuse)
    monkeypatch.setattr(os, "unlink", lambda *a, **k: (_ for _ in ()).throw(PermissionError(errno.EPERM, "unlink")))
    with pytest.raises(moonxp.OutputError) as info:
        write_json(tmp_path / "metrics.json", {"a": 1})
    assert str(info.value) == f"cannot write {str(tmp_path / 'metrics.json')!r}: Operation not permitted; it was " \
                              f"left as it was; choose another --out"
    assert info.value.__context__ is None or not isinstance(info.value.__context__, PermissionError) or \
        "unlink" not in str(info.value.__context__)


@pytest.fixture
def append_only(tmp_path):
    directory = tmp_path / "append-only"
    directory.mkdir()
    if subprocess.run(["chattr", "+a", str(directory)], capture_output=True).returncode != 0:
        pytest.skip("chattr +a is not available here")
    yield directory
    subprocess.run(["chattr", "-a", str(directory)], check=True)


def test_append_only_directory_is_refused_before_training(append_only, monkeypatch):
    monkeypatch.setattr(moonxp.app.job, "execute", lambda *a, **k: pytest.fail("trained before checking --out"))
    code, out, err = cli("--iters", "2", "--out", str(append_only))
    assert code == 2 and err.count("\n") == 1 and "append-only or immutable" in err and "--out" in err
    with pytest.raises(moonxp.OutputError, match="append-only"):
        write_json(append_only / "metrics.json", {"a": 1})
    assert os.listdir(append_only) == []                           # no temporary that could never be removed


@pytest.mark.parametrize("umask, mode", [(0o077, 0o600), (0o022, 0o644), (0o002, 0o664)])
def test_new_files_respect_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        write_json(tmp_path / "metrics.json", {"a": 1})
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "metrics.json").st_mode & 0o777 == mode
