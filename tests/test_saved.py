"""save_params / load_params: any namespace in, the chosen backend out; one clear error for a bad file; no pickles."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

import moonxp
from helpers import assert_on_case
from moonxp import Params
from moonxp.app.cli import main


def _ensemble():
    _, _, params = moonxp.make_ensemble(0, networks=3, hidden=7)
    return params


def test_round_trip_from_every_backend_to_every_backend(case, tmp_path):
    params = _ensemble()
    on_case = Params(*(case.asarray(p) for p in params))
    moonxp.save_params(tmp_path / "p.npz", on_case, metadata={"seed": 0})
    host = moonxp.load_params(tmp_path / "p.npz")
    for a, p in zip(host, params):
        assert isinstance(a, np.ndarray) and a.dtype == np.dtype(case.dtype_name)
        np.testing.assert_array_equal(a, p.astype(case.dtype_name))
    back = moonxp.load_params(tmp_path / "p.npz", backend=case)
    for a, p in zip(back, host):
        assert_on_case(a, case)
        np.testing.assert_array_equal(moonxp.to_host(a), p)
    assert moonxp.load_metadata(tmp_path / "p.npz") == {"seed": 0}


def test_loaded_params_evaluate_like_the_trained_ones(tmp_path):
    X, T, params = moonxp.make_ensemble(0, networks=4)
    trained, _ = moonxp.train(params, X, T, iters=16)
    moonxp.save_params(tmp_path / "p.npz", trained)
    again = moonxp.evaluate(moonxp.load_params(tmp_path / "p.npz"), X, T)
    for a, b in zip(again, moonxp.evaluate(trained, X, T)):
        np.testing.assert_array_equal(a, b)


def _npz(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def _npy(path, array):
    with open(path, "wb") as f:
        np.save(f, array)


GOOD = {"format": np.array("moonxp-params"), "version": np.array(1), "metadata": np.array("{}"),
        "W": np.zeros((2, 3)), "b": np.zeros(3), "v": np.zeros(3)}


@pytest.mark.parametrize("content, phrase", [
    (lambda p: p.write_bytes(b"not a zip file at all"), "is not a readable moonxp params file"),
    (lambda p: p.write_bytes(zipfile.ZipFile.__doc__.encode()[:10]), "is not a readable moonxp params file"),
    (lambda p: _npz(p, **{**GOOD, "version": np.array(2)}), "params format version 2, this moonxp reads version 1"),
    (lambda p: _npz(p, **{k: v for k, v in GOOD.items() if k != "version"}), "format version None"),
    (lambda p: _npz(p, **{**GOOD, "format": np.array("other")}), "is not a moonxp params file"),
    (lambda p: _npz(p, **{k: v for k, v in GOOD.items() if k != "v"}), "damaged moonxp params file (no v)"),
    (lambda p: _npz(p, **{**GOOD, "b": np.zeros(4)}), "holds unusable params (params.b has shape (4,)"),
    (lambda p: _npz(p, **{**GOOD, "W": np.full((2, 3), np.nan)}), "params.W holds NaN"),
    (lambda p: _npy(p, np.zeros(3)), "is not a readable moonxp params file (a single .npy array)"),
])
def test_a_bad_file_is_one_clear_error(tmp_path, content, phrase):
    path = tmp_path / "bad.npz"
    content(path)
    with pytest.raises(moonxp.InvalidInputError) as info:
        moonxp.load_params(path)
    assert phrase in str(info.value)


def test_a_library_user_sees_the_cause_of_an_unreadable_file(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(moonxp.InvalidInputError) as info:
        moonxp.load_params(tmp_path / "bad.npz")
    assert isinstance(info.value.__cause__, ValueError)  # NumPy's own reason, kept
    with pytest.raises(moonxp.InvalidInputError) as info:
        moonxp.load_params(tmp_path / "missing.npz")
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_truncated_file(tmp_path):
    moonxp.save_params(tmp_path / "p.npz", _ensemble())
    data = (tmp_path / "p.npz").read_bytes()
    (tmp_path / "p.npz").write_bytes(data[:len(data) // 2])
    with pytest.raises(moonxp.InvalidInputError, match="is not a readable moonxp params file"):
        moonxp.load_params(tmp_path / "p.npz")


def test_loading_never_unpickles(tmp_path, capsys):
    class Boom:
        def __reduce__(self):
            return (print, ("pwned",))
    path = tmp_path / "evil.npz"
    with open(path, "wb") as f:
        np.savez(f, **{**GOOD, "W": np.array([Boom()], dtype=object)})
    with pytest.raises(moonxp.InvalidInputError, match="not a readable moonxp params file.*allow_pickle=False"):
        moonxp.load_params(path)
    assert "pwned" not in capsys.readouterr().out


def test_missing_file(tmp_path):
    with pytest.raises(moonxp.InvalidInputError, match="no such file"):
        moonxp.load_params(tmp_path / "nope.npz")


def test_save_is_atomic(tmp_path, monkeypatch):
    moonxp.save_params(tmp_path / "p.npz", _ensemble())
    before = (tmp_path / "p.npz").read_bytes()

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(np, "savez", fail)
    with pytest.raises(moonxp.OutputError, match="it was left as it was; free disk space or choose another path"):
        moonxp.save_params(tmp_path / "p.npz", _ensemble())
    assert (tmp_path / "p.npz").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["p.npz"]


def _declaring(path, shape):
    """A params file whose W header declares `shape` while holding the bytes of a (2, 3) array."""
    good = _npz(path.with_suffix(".good"), **GOOD)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(path, "w") as crafted:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "W.npy":
                data = header.getvalue() + data[len(header.getvalue()):]
            crafted.writestr(info.filename, data)
    return path


def test_a_header_declaring_more_than_the_file_holds_is_refused_before_allocating(tmp_path):
    for shape in ((1 << 20, 1 << 21), (2, 4)):
        path = _declaring(tmp_path / "huge.npz", shape)
        for load in (moonxp.load_params, moonxp.load_metadata):
            with pytest.raises(moonxp.InvalidInputError, match=r"W.npy declares shape .* but holds 48"):
                load(path)


@pytest.mark.parametrize("content, phrase", [
    (lambda p: None, "no such file"),
    (lambda p: p.write_bytes(b""), "is not a readable moonxp params file"),
    (lambda p: _npz(p, **{**GOOD, "version": np.array(2)}), "params format version 2"),
    (lambda p: _npz(p, **{k: v for k, v in GOOD.items() if k != "metadata"}), "no metadata"),
    (lambda p: _npz(p, **{**GOOD, "metadata": np.array("[1, 2]")}), "a JSON list, not an object"),
    (lambda p: _npz(p, **{**GOOD, "metadata": np.array('{"x": NaN}')}), "NaN is not a finite number"),
    (lambda p: _npz(p, **{**GOOD, "metadata": np.array('{"x": ')}), "has damaged metadata (Expecting value"),
    (lambda p: _npz(p, **{**GOOD, "metadata": np.array("[" * 100_000)}), "has damaged metadata (nested too deeply"),
])
def test_load_metadata_names_the_real_failure(tmp_path, content, phrase):
    path = tmp_path / "m.npz"
    content(path)
    with pytest.raises(moonxp.InvalidInputError) as info:
        moonxp.load_metadata(path)
    assert phrase in str(info.value)


def test_an_empty_path_is_refused_by_name(tmp_path):
    with pytest.raises(moonxp.InvalidInputError, match="path is empty"):
        moonxp.save_params("", _ensemble())


def test_bad_metadata_and_params_are_refused(tmp_path):
    with pytest.raises(moonxp.InvalidTypeError, match="JSON-serialisable"):
        moonxp.save_params(tmp_path / "p.npz", _ensemble(), metadata={"x": object()})
    with pytest.raises(moonxp.InvalidTypeError, match="params must be moonxp.Params"):
        moonxp.save_params(tmp_path / "p.npz", [1, 2])
    assert not list(tmp_path.iterdir())


def test_cli_save_writes_the_trained_ensemble(tmp_path):
    out = io.StringIO()
    code = main(["--out", str(tmp_path / "out"), "--no-plot", "--ensemble", "3", "--iters", "20",
                 "--save", str(tmp_path / "p.npz"), "--hidden", "9"], stdout=out, stderr=io.StringIO())
    assert code == 0 and str(tmp_path / "p.npz") in out.getvalue()
    params = moonxp.load_params(tmp_path / "p.npz")
    assert params.W.shape == (3, 2, 9)
    X, T, initial = moonxp.make_ensemble(0, networks=3, hidden=9)
    expected, _ = moonxp.train(initial, X, T, iters=20)
    for a, e in zip(params, expected):
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-12)
    assert moonxp.load_metadata(tmp_path / "p.npz")["config"]["ensemble"] == 3


def test_cli_save_into_a_missing_directory_fails_before_training(tmp_path):
    err = io.StringIO()
    code = main(["--out", str(tmp_path / "out"), "--save", str(tmp_path / "no" / "p.npz")], stdout=io.StringIO(),
                stderr=err)
    assert code == 2 and "choose another --save" in err.getvalue()
    assert not (tmp_path / "out" / "metrics.json").exists()


@pytest.mark.parametrize("name", ["metrics.json", "curve.png", "boundaries.png", "ensemble.png", "boundaries.gif"])
def test_cli_save_onto_a_report_file_is_refused_before_anything(tmp_path, name):
    out, err = io.StringIO(), io.StringIO()
    code = main(["--out", str(tmp_path / "sv"), "--save", str(tmp_path / "sv" / name), "--no-plot", "--iters", "3"],
                stdout=out, stderr=err)
    assert code == 2 and err.getvalue().count("\n") == 1 and "--save" in err.getvalue() and name in err.getvalue()
    assert out.getvalue() == "" and not (tmp_path / "sv").exists()
