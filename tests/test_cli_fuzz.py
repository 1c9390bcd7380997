"""A fuzz of the command line's argument space: any argv ends in exit 0 or 2, never a traceback.

argv is generated from `moonxp train`'s options with valid and invalid values, flags,
and junk tokens, in any order, and run in-process after small sizes (which it may
override), with --no-plot and --out in a fresh temporary directory. Exit 2 is one line on stderr
and leaves no metrics.json; exit 0 leaves a whole one; valid options always give 0.
"""

from __future__ import annotations

import importlib.util
import io
import json
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("hypothesis")
from hypothesis import event, example, given, settings, strategies as st  # noqa: E402

from moonxp.app.cli import main  # noqa: E402

TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=8)


def ints(lo: int, hi: int) -> st.SearchStrategy[str]:
    return st.integers(lo, hi).map(str)


def numbers(lo: float, hi: float) -> st.SearchStrategy[str]:
    return st.floats(lo, hi, allow_nan=False).map(repr)


JUNK_NUMBERS = st.sampled_from(["", "nan", "inf", "-inf", "1e400", "abc", "1.5", "0x10", "1_000", " 3", "--"])

# option: (valid values, small so runs are fast and do not diverge; invalid values, probing every check)
OPTIONS = {
    "--device": (st.just("cpu"),
                 st.sampled_from(["cuda", "cuda:0", "cuda:1", "cuda:x", "cpu:0", "gpu", "CPU", ""]) | TEXT),
    "--backend": (st.sampled_from(["numpy"] + (["array-api-strict"] if importlib.util.find_spec("array_api_strict")
                                               else [])),
                  st.sampled_from(["cupy", "tensorflow", "NumPy", ""]) | TEXT),
    "--dtype": (st.sampled_from(["float64", "float32"]), st.sampled_from(["float16", "int32", ""])),
    "--hidden": (ints(1, 6), ints(-2, 0) | JUNK_NUMBERS),
    "--lr": (numbers(1e-3, 5.0), numbers(-5.0, 0.0) | JUNK_NUMBERS),
    "--iters": (ints(0, 8), ints(-2, -1) | JUNK_NUMBERS),
    "--samples": (ints(1, 12), ints(-1, 0) | JUNK_NUMBERS),
    "--noise": (numbers(0.0, 0.5), st.sampled_from(["-0.1", "-1e-300"]) | JUNK_NUMBERS),
    "--seed": (ints(0, 2**32 - 3),  # seed + ensemble - 1 stays a NumPy seed
               st.sampled_from([str(2**32), "-1"]) | ints(2**32, 2**64) | JUNK_NUMBERS),
    "--ensemble": (ints(1, 3), ints(-1, 0) | JUNK_NUMBERS),
    "--grid": (ints(2, 6), ints(-1, 1) | st.sampled_from(["4097", "100000"]) | JUNK_NUMBERS),
}
FLAGS = st.sampled_from(["--no-compile", "--json", "--quiet", "--no-plot"])


def option(valid: bool) -> st.SearchStrategy[list[str]]:
    """['--name', value] or ['--name=value'], with a valid or an invalid value."""
    def pair(name: str) -> st.SearchStrategy[list[str]]:
        values = OPTIONS[name][0 if valid else 1]
        return st.one_of(values.map(lambda v: [name, v]), values.map(lambda v: [f"{name}={v}"]))
    return st.sampled_from(sorted(OPTIONS)).flatmap(pair)


VALID = st.one_of(option(True), FLAGS.map(lambda f: [f]))
ANY = st.one_of(
    option(True), option(False), FLAGS.map(lambda f: [f]),
    st.sampled_from(["--compile", "train", "info", "bench", "-x", "--", "--hid", "--h", "--lr=", "-h", "--version"])
    .map(lambda t: [t]),
    TEXT.map(lambda t: [t]),
)
SMALL = ["--iters", "2", "--samples", "8", "--hidden", "4", "--grid", "4"]  # defaults the fuzz may override
VALID_ARGVS = st.lists(VALID, max_size=6).map(lambda groups: [t for g in groups for t in g])
ARGVS = VALID_ARGVS | st.lists(ANY, max_size=7).map(lambda groups: [t for g in groups for t in g])


def run(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(tmp) / "out"
        stdout, stderr = io.StringIO(), io.StringIO()
        code = main(SMALL + argv + ["--no-plot", "--out", str(out_dir)], stdout=stdout, stderr=stderr)
        err = stderr.getvalue()
        event(f"exit {code}")
        assert code in (0, 2), (code, err)
        assert "Traceback" not in err
        metrics = out_dir / "metrics.json"
        if code == 2:
            assert err.endswith("\n") and err.count("\n") == 1 and err.startswith("moonxp"), err
            assert not metrics.exists()
        elif metrics.exists():
            assert json.loads(metrics.read_text())["status"] == "ok"
            assert [p.name for p in out_dir.iterdir()] == ["metrics.json"]
        return code


@settings(max_examples=400, deadline=None)
@given(ARGVS)
@example(["--iters", "3", "--samples", "5", "--grid", "3"])
@example(["--backend", "array-api-strict", "--dtype", "float32", "--iters", "2", "--ensemble", "2", "--grid", "2"])
@example(["--seed", str(2**32 - 1), "--ensemble", "2"])
@example(["--lr", "1e400"])
@example(["--lr=--"])
@example(["--samples", "1", "--iters", "0", "--hidden", "1", "--grid", "2", "--json"])
@example(["--device", "cuda"])
@example(["--compile", "--iters", "1"])
@example(["-h"])
def test_any_argv_exits_0_or_2_without_traceback(argv):
    run(argv)


@settings(max_examples=60, deadline=None)
@given(VALID_ARGVS)
def test_valid_argv_is_never_rejected(argv):
    assert run(argv) == 0
