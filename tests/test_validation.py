"""Bad input at every public entry: the library raises InvalidInputError (ValueError) or
InvalidTypeError (TypeError), the command line exits 2 with one line on stderr; each
message names the problem and the fix.

One case per message: the exception type and a key phrase of the message.
"""

from __future__ import annotations

import importlib.util
import io

import numpy as np
import pytest

import moonxp
from moonxp import InvalidInputError, InvalidInputError as Bad, InvalidTypeError, InvalidTypeError as BadType, Params
from moonxp.app.cli import main
from helpers import cuda_usable

X0, T0, P0 = moonxp.make_problem(0, n_samples=8, hidden=4)
NAN = float("nan")
INF = float("inf")


def _params(W=P0.W, b=P0.b, v=P0.v) -> Params:
    return Params(W, b, v)


# Entries that take (params, X, T): bad points or labels must be caught by each of them.
POINT_ENTRIES = {
    "forward": lambda p, X, T: moonxp.forward(p, X),
    "backprop": lambda p, X, T: moonxp.backprop(p, X, T),
    "train": lambda p, X, T: moonxp.train(p, X, T, iters=1),
    "evaluate": lambda p, X, T: moonxp.evaluate(p, X, T),
}
PARAM_ENTRIES = {**POINT_ENTRIES,
                 "evaluate_grid": lambda p, X, T: moonxp.evaluate_grid(p, 3),
                 "descent": lambda p, X, T: moonxp.descent(p, P0, 0.1)}
LABEL_ENTRIES = {**{k: POINT_ENTRIES[k] for k in ("backprop", "train", "evaluate")},
                 "loss": lambda p, X, T: moonxp.loss(moonxp.forward(P0, X0), T)}


def _strict_on(device: str):
    xs = pytest.importorskip("array_api_strict")
    return lambda a: xs.asarray(a, device=xs.Device(device))


PARAM_CASES = {  # (params, error, phrase)
    "not-params": (None, BadType, "params must be moonxp.Params(W, b, v)"),
    "params-list": ([P0.W, P0.b], BadType, "params must be moonxp.Params(W, b, v)"),
    "field-not-array": (_params(v=P0.v.tolist()), BadType, "params.v is a list, not an array"),
    "int-dtype": (_params(W=P0.W.astype(np.int64)), BadType, "params.W has dtype int64"),
    "complex-dtype": (Params(*(a.astype(complex) for a in P0)), BadType, "computes in floating point"),
    "mixed-dtypes": (_params(b=P0.b.astype(np.float32)), BadType, "give all parameters one dtype"),
    "W-1d": (_params(W=np.zeros(4)), Bad, "expected (..., D, H) with D, H >= 1"),
    "D-zero": (Params(np.zeros((0, 4)), np.zeros(4), np.zeros(4)), Bad, "expected (..., D, H) with D, H >= 1"),
    "H-zero": (Params(np.zeros((2, 0)), np.zeros(0), np.zeros(0)), Bad, "with D, H >= 1"),
    "b-wrong-H": (_params(b=np.zeros(5)), Bad, "params.b has shape (5,)"),
    "v-wrong-batch": (_params(v=np.zeros((2, 4))), Bad, "params.v has shape (2, 4)"),
    "W-nan": (_params(W=np.full((2, 4), NAN)), Bad, "params.W holds NaN or infinity"),
    "v-inf": (_params(v=np.full(4, INF)), Bad, "params.v holds NaN or infinity"),
}


@pytest.mark.parametrize("entry", PARAM_ENTRIES)
@pytest.mark.parametrize("case", PARAM_CASES)
def test_bad_params(entry, case):
    params, error, phrase = PARAM_CASES[case]
    with pytest.raises(error) as info:
        PARAM_ENTRIES[entry](params, X0, T0)
    assert phrase in str(info.value)


POINT_CASES = {  # (X, error, phrase)
    "list": (X0.tolist(), BadType, "is a list, not an array"),
    "int-dtype": (X0.astype(np.int64), BadType, "X has dtype int64"),
    "bool-dtype": (X0 > 0, BadType, "X has dtype bool"),
    "other-float": (X0.astype(np.float32), BadType, "X is float32 but the params are float64"),
    "three-columns": (np.zeros((8, 3)), Bad, "expected points (N, 2) or (..., N, 2)"),
    "one-dim": (np.zeros(8), Bad, "expected points (N, 2) or (..., N, 2)"),
    "scalar": (np.float64(1.0), Bad, "expected points (N, 2) or (..., N, 2)"),
    "no-points": (np.zeros((0, 2)), Bad, "holds no points (N = 0)"),
    "nan": (np.where(X0 > 0, NAN, X0), Bad, "X holds NaN or infinity"),
    "inf": (np.where(X0 > 0, -INF, X0), Bad, "X holds NaN or infinity"),
}


@pytest.mark.parametrize("entry", POINT_ENTRIES)
@pytest.mark.parametrize("case", POINT_CASES)
def test_bad_points(entry, case):
    X, error, phrase = POINT_CASES[case]
    with pytest.raises(error) as info:
        POINT_ENTRIES[entry](P0, X, T0)
    assert phrase in str(info.value)


@pytest.mark.parametrize("entry", POINT_ENTRIES)
def test_batch_dims_that_do_not_broadcast(entry):
    batched = Params(*(np.stack([a] * 3) for a in P0))          # 3 networks
    with pytest.raises(Bad, match="do not broadcast with the params'"):
        POINT_ENTRIES[entry](batched, np.stack([X0] * 2), np.stack([T0] * 2))


@pytest.mark.parametrize("entry", ["backprop", "train"])
def test_points_batch_wider_than_params(entry):
    with pytest.raises(Bad, match="each network needs its own parameters"):
        POINT_ENTRIES[entry](P0, np.stack([X0] * 2), T0)


LABEL_CASES = {  # (T, error, phrase)
    "zero-one": ((T0 + 1) / 2, Bad, "labels T must be -1 or +1; convert {0, 1} labels with moonxp.signed_labels"),
    "scaled": (T0 * 2, Bad, "labels T must be -1 or +1"),
    "nan": (np.where(T0 > 0, NAN, T0), Bad, "labels T must be -1 or +1"),
    "int-dtype": (T0.astype(np.int64), BadType, "T has dtype int64"),
    "other-float": (T0.astype(np.float32), BadType, "T is float32 but"),
    "too-few": (T0[:5], Bad, "one label per point"),
    "scalar": (np.float64(1.0), Bad, "one label per point"),
    "list": (T0.tolist(), BadType, "is a list, not an array"),
}


@pytest.mark.parametrize("entry", LABEL_ENTRIES)
@pytest.mark.parametrize("case", LABEL_CASES)
def test_bad_labels(entry, case):
    T, error, phrase = LABEL_CASES[case]
    with pytest.raises(error) as info:
        LABEL_ENTRIES[entry](P0, X0, T)
    assert phrase in str(info.value)


@pytest.mark.parametrize("Y, phrase", [(np.float64(0.5), "expected outputs (..., N) with N >= 1"),
                                       (np.zeros((3, 0)), "expected outputs (..., N) with N >= 1"),
                                       (np.full(8, NAN), "Y holds NaN or infinity")])
def test_loss_bad_outputs(Y, phrase):
    with pytest.raises(Bad) as info:
        moonxp.loss(Y, T0[: Y.shape[-1]] if Y.ndim else T0)
    assert phrase in str(info.value)


def test_mixed_namespaces():
    torch = pytest.importorskip("torch")
    with pytest.raises(BadType, match="arrays from different libraries .*move them to one namespace"):
        moonxp.forward(P0, torch.asarray(X0))


def test_mixed_array_api_strict_and_numpy():
    on = _strict_on("CPU_DEVICE")
    with pytest.raises(BadType, match="arrays from different libraries"):
        moonxp.backprop(Params(*(on(a) for a in P0)), X0, T0)


def test_mixed_devices():
    default, device1 = _strict_on("CPU_DEVICE"), _strict_on("device1")
    with pytest.raises(BadType, match="arrays on different devices .*move them to one device"):
        moonxp.train(Params(*(default(a) for a in P0)), device1(X0), device1(T0), iters=1)


def test_dtype_the_device_cannot_hold():
    xs = pytest.importorskip("array_api_strict")
    backend = moonxp.Backend("array-api-strict", xs, xs.Device("no_float64"), xs.float64, "no_float64",
                             "float64", xs.__version__)
    with pytest.raises(BadType, match="cannot hold float64.*use --dtype float32"):
        backend.asarray(X0)


def test_descent_bad_grads():
    with pytest.raises(BadType, match="grads must be moonxp.Params"):
        moonxp.descent(P0, None, 0.1)
    with pytest.raises(Bad, match="gradients share the params' shapes"):
        moonxp.descent(P0, Params(*(a[None] for a in P0)), 0.1)
    with pytest.raises(BadType, match="grads.W is float32 but params.W is float64"):
        moonxp.descent(P0, Params(*(a.astype(np.float32) for a in P0)), 0.1)


@pytest.mark.parametrize("lr", [0, -0.1, NAN, INF, "0.1", True, None])
@pytest.mark.parametrize("entry", ["train", "descent"])
def test_bad_learning_rate(entry, lr):
    call = {"train": lambda: moonxp.train(P0, X0, T0, lr=lr, iters=1), "descent": lambda: moonxp.descent(P0, P0, lr)}
    with pytest.raises(Bad, match="learning rate must be a finite number > 0"):
        call[entry]()


def test_numpy_scalars_are_numbers():
    moonxp.descent(P0, P0, np.float32(0.1))
    moonxp.train(P0, X0, T0, lr=np.float64(0.1), iters=np.int64(2))
    moonxp.evaluate_grid(P0, np.int32(3))


@pytest.mark.parametrize("iters", [-1, 1.5, True, "3"])
def test_bad_iters(iters):
    with pytest.raises(Bad, match="iters must be an integer >= 0"):
        moonxp.train(P0, X0, T0, iters=iters)


def test_bad_check_every():
    with pytest.raises(Bad, match="check_every must be an integer >= 1"):
        moonxp.train(P0, X0, T0, iters=1, check_every=0)


@pytest.mark.parametrize("size", [1, 0, -3, 2.5])
def test_bad_grid_size(size):
    with pytest.raises(Bad, match="grid size must be an integer >= 2"):
        moonxp.evaluate_grid(P0, size)


@pytest.mark.parametrize("lo, hi", [(1.0, 1.0), (2.0, -2.0), (NAN, 1.0), (-INF, 1.0), ("a", 1.0)])
def test_bad_grid_bounds(lo, hi):
    with pytest.raises(Bad, match="grid bounds must be finite with lo < hi"):
        moonxp.evaluate_grid(P0, 3, lo, hi)


def test_compile_without_a_compiler():
    with pytest.raises(BadType, match="has no compiler: compile=True needs JAX or PyTorch"):
        moonxp.train(P0, X0, T0, iters=1, compile=True)


@pytest.mark.parametrize("kwargs, phrase", [
    ({"seed": -1}, "seed must be an integer from 0 to 429496729"),
    ({"seed": 2**32}, "seed must be an integer from 0 to 429496729"),
    ({"seed": 1.5}, "seed must be an integer"),
    ({"n_samples": 0}, "n_samples must be an integer >= 1"),
    ({"n_samples": 2.0}, "n_samples must be an integer >= 1"),
    ({"noise": -0.1}, "noise must be a finite number >= 0"),
    ({"noise": NAN}, "noise must be a finite number >= 0"),
    ({"hidden": 0}, "hidden must be an integer >= 1"),
], ids=lambda v: str(v) if isinstance(v, dict) else "")
def test_make_problem_bad_arguments(kwargs, phrase):
    with pytest.raises(Bad, match=phrase):
        moonxp.make_problem(**kwargs)
    with pytest.raises(Bad, match=phrase):
        moonxp.make_ensemble(networks=2, **kwargs)


@pytest.mark.parametrize("kwargs, phrase", [
    ({"networks": 0}, "networks must be an integer from 1 to 4294967296"),
    ({"networks": -2}, "networks must be an integer from 1 to 4294967296"),
    ({"networks": 2, "seed": 2**32 - 1}, "seed must be an integer from 0 to 4294967294"),
])
def test_make_ensemble_bad_arguments(kwargs, phrase):
    with pytest.raises(Bad, match=phrase):
        moonxp.make_ensemble(**kwargs)


@pytest.mark.parametrize("labels", [[0, 2], [-1, 1], ["a"], [0.5]])
def test_signed_labels_only_converts_zero_one(labels):
    with pytest.raises(Bad, match=r"signed_labels expects labels in \{0, 1\}"):
        moonxp.signed_labels(labels)
    np.testing.assert_array_equal(moonxp.signed_labels([0, 1, 1]), [-1.0, 1.0, 1.0])


@pytest.mark.parametrize("args, phrase", [
    (("gpu",), "unknown device 'gpu': use cpu, cuda or cuda:N"),
    ((1,), "unknown device 1"),
    (("cpu:1",), "the CPU is just 'cpu'"),
    (("cpu", "numpy", "float16"), "unknown dtype 'float16': use float64 or float32"),
    (("cpu", "tensorflow"), "unknown backend 'tensorflow': use one of"),
    (("cuda", "numpy"), "numpy runs on the CPU only"),
    (("cpu", "cupy"), "cupy runs on CUDA devices only"),
])
def test_resolve_bad_names(args, phrase):
    with pytest.raises(Bad) as info:
        moonxp.resolve(*args)
    assert phrase in str(info.value)


@pytest.mark.parametrize("backend", ["cupy", "torch", "jax"])
def test_resolve_unavailable_cuda(backend):
    if backend != "cupy":
        pytest.importorskip(backend)
    if cuda_usable(backend):
        pytest.skip(f"a CUDA device is usable by {backend} here")
    with pytest.raises(moonxp.BackendError, match="or use --device cpu|is not installed"):
        moonxp.resolve("cuda", backend)


def test_resolve_device_that_does_not_exist():
    pytest.importorskip("torch")
    with pytest.raises(moonxp.BackendError, match="cuda:7 does not exist|no CUDA device"):
        moonxp.resolve("cuda:7", "torch")


# ---------------------------------------------------------------- command line: exit 2, one line, no traceback

def run_cli(argv, tmp_path):
    out, err = io.StringIO(), io.StringIO()
    small = ["--iters", "2", "--samples", "8", "--grid", "4", "--no-plot"]  # argv's own values come last and win
    code = main(small + ([] if "--out" in argv else ["--out", str(tmp_path / "out")]) + list(argv),
                stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


CLI_CASES = {
    "lr-zero": (["--lr", "0"], "--lr must be a finite number > 0, not 0.0"),
    "lr-negative": (["--lr", "-1"], "--lr must be a finite number > 0"),
    "lr-nan": (["--lr", "nan"], "--lr: 'nan' is not finite"),
    "lr-inf": (["--lr", "inf"], "is not finite"),
    "lr-junk": (["--lr", "fast"], "'fast' is not a number"),
    "iters-negative": (["--iters", "-1"], "--iters must be an integer >= 0, not -1"),
    "iters-float": (["--iters", "1.5"], "'1.5' is not an integer"),
    "samples-zero": (["--samples", "0"], "--samples must be an integer >= 1, not 0"),
    "hidden-zero": (["--hidden", "0"], "--hidden must be an integer >= 1, not 0"),
    "noise-negative": (["--noise", "-0.5"], "--noise must be a finite number >= 0, not -0.5"),
    "noise-nan": (["--noise", "nan"], "is not finite"),
    "seed-negative": (["--seed", "-1"], "--seed must be an integer from 0 to 4294967295, not -1"),
    "seed-too-big": (["--seed", str(2**32)], "--seed must be an integer from 0 to 4294967295, not 4294967296"),
    "seed-plus-ensemble": (["--seed", str(2**32 - 1), "--ensemble", "2"], "2 networks use seeds seed to seed + 1"),
    "ensemble-zero": (["--ensemble", "0"], "--ensemble must be an integer from 1 to 4294967296, not 0"),
    "grid-one": (["--grid", "1"], "--grid must be an integer from 2 to 4096, not 1"),
    "grid-huge": (["--grid", "100000"], "--grid must be an integer from 2 to 4096, not 100000"),
    "dtype": (["--dtype", "float16"], "--dtype: invalid choice: 'float16'"),
    "device": (["--device", "gpu"], "unknown device 'gpu'"),
    "device-cpu-index": (["--device", "cpu:0"], "the CPU is just 'cpu'"),
    "backend": (["--backend", "tensorflow"], "unknown backend 'tensorflow'"),
    "backend-cpu-only": (["--device", "cuda", "--backend", "numpy"], "numpy runs on the CPU only"),
    "backend-gpu-only": (["--backend", "cupy"], "cupy runs on CUDA devices only"),
    "compile-numpy": (["--compile"], "has no compiler"),
    "unknown-option": (["--speed", "3"], "unrecognized arguments: --speed 3"),
    "missing-value": (["--lr"], "--lr: expected one argument"),
    "double-dash-value": (["--lr=--"], "--lr: expected one argument"),
}


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_bad_input(case, tmp_path):
    argv, phrase = CLI_CASES[case]
    code, out, err = run_cli(argv, tmp_path)
    assert code == 2
    assert phrase in err
    assert err.count("\n") == 1 and err.startswith("moonxp") and "Traceback" not in err
    assert not (tmp_path / "out" / "metrics.json").exists()


@pytest.mark.skipif(cuda_usable(), reason="a CUDA device is usable here")
def test_cli_no_cuda_device(tmp_path):
    """Without a usable GPU, --device cuda names the fix: the driver, or installing CuPy where it is missing."""
    code, out, err = run_cli(["--device", "cuda"], tmp_path)
    fix = "or use --device cpu" if importlib.util.find_spec("cupy") else 'pip install -e ".[cuda12]"'
    assert code == 2 and fix in err and err.count("\n") == 1


def test_cli_file_in_the_way_of_out(tmp_path):
    (tmp_path / "taken").write_text("not a directory")
    code, out, err = run_cli(["--out", str(tmp_path / "taken")], tmp_path)
    assert code == 2 and "a file is in the way; choose another --out" in err and err.count("\n") == 1
    assert (tmp_path / "taken").read_text() == "not a directory"


def test_cli_out_below_a_file(tmp_path):
    (tmp_path / "taken").write_text("")
    code, out, err = run_cli(["--out", str(tmp_path / "taken" / "sub")], tmp_path)
    assert code == 2 and "Not a directory" in err and "choose another --out" in err and err.count("\n") == 1


def test_per_network_labels_on_shared_points_are_accepted():
    batched = Params(*(np.stack([a, -a]) for a in P0))             # 2 networks, one set of points
    T = np.stack([T0, -T0])                                         # each network its own labels
    grads = moonxp.backprop(batched, X0, T)
    for k in range(2):
        one = moonxp.backprop(Params(*(a[k] for a in batched)), X0, T[k])
        for g, o in zip(grads, one):
            np.testing.assert_allclose(g[k], o, rtol=1e-12, atol=1e-15)
    assert moonxp.train(batched, X0, T, iters=2)[1].shape == (2, 3)
    assert moonxp.evaluate(batched, X0, T)[0].shape == (2,)


# ---------------------------------------------------------------- only documented errors

def _torch_meta(homework):
    torch = pytest.importorskip("torch")
    X, T, p = homework
    p = Params(*(torch.asarray(a, device="meta") for a in p))
    moonxp.train(p, torch.asarray(X, device="meta"), torch.asarray(T, device="meta"))


EMPTY_BATCH = Params(np.zeros((3, 0, 2, 50)), np.zeros((3, 0, 50)), np.zeros((3, 0, 50)))
RAW_ERRORS = {
    "lr 10**400": (lambda h: moonxp.train(h[2], h[0], h[1], lr=10**400), InvalidInputError),
    "descent lr 10**400": (lambda h: moonxp.descent(h[2], h[2], 10**400), InvalidInputError),
    "noise 10**400": (lambda h: moonxp.make_problem(noise=10**400), InvalidInputError),
    "lo -10**400": (lambda h: moonxp.evaluate_grid(h[2], 5, lo=-10**400), InvalidInputError),
    "empty batch": (lambda h: moonxp.evaluate_grid(EMPTY_BATCH, 5), InvalidInputError),
    "snapshot 1.5": (lambda h: moonxp.snapshot_iterations(1.5), InvalidInputError),
    "to_host list": (lambda h: moonxp.to_host([1, 2]), InvalidTypeError),
    "torch meta train": (_torch_meta, InvalidTypeError),
    "masked X": (lambda h: moonxp.forward(h[2], np.ma.masked_array(h[0], mask=h[0] > 2)), InvalidTypeError),
    "grid overflow": (lambda h: moonxp.evaluate_grid(h[2], 5, -1e308, 1e308), InvalidInputError),
    "float32 grid beyond range": (lambda h: moonxp.evaluate_grid(Params(*(a.astype(np.float32) for a in h[2])), 5,
                                                                 -1e39, 1e39), InvalidInputError),
    "one label for N points": (lambda h: moonxp.train(h[2], h[0], np.ones(1), iters=1), InvalidInputError),
    "one label, backprop": (lambda h: moonxp.backprop(h[2], h[0], np.ones(1)), InvalidInputError),
}


@pytest.mark.parametrize("name", RAW_ERRORS)
def test_every_library_error_is_a_documented_type(homework, name):
    call, kind = RAW_ERRORS[name]
    with pytest.raises(kind) as info:
        call(homework)
    assert isinstance(info.value, moonxp.MoonxpError) and "\n" not in str(info.value)


def test_numpy_integer_grid_size_is_accepted(homework):
    grid = moonxp.evaluate_grid(homework[2], np.int16(400))
    assert grid.shape == (400, 400) and np.isfinite(grid).all()
