"""moonxp.plot: figures from params of any namespace; the CLI's report draws with the same functions."""

from __future__ import annotations

import io

import numpy as np
import pytest

import moonxp
from moonxp import Params, plot
from moonxp.app.cli import main


@pytest.fixture(scope="module")
def trained():
    X, T, params = moonxp.make_problem(0, hidden=8)
    snapshots = []
    for steps in (0, 1, 3):
        params, _ = moonxp.train(params, X, T, iters=steps)
        snapshots.append(params)
    return X, T, snapshots


def test_boundaries_from_any_namespace(case, trained):
    X, T, snapshots = trained
    on = [Params(*(case.asarray(p) for p in s)) for s in snapshots]
    fig = plot.boundaries(on, case.asarray(X), case.asarray(T), titles=["a", "b", "c"], size=20, compile=False)
    assert [ax.get_title() for ax in fig.axes] == ["a", "b", "c"]
    assert fig._repr_png_().startswith(b"\x89PNG")


def test_boundaries_draw_the_grid_of_each_snapshot(trained, monkeypatch):
    X, T, snapshots = trained
    calls = []
    monkeypatch.setattr(plot, "evaluate_grid", lambda p, *a, **k: calls.append(p.W.shape) or moonxp.evaluate_grid(p, *a, **k))
    axis, images = plot.grids(plot.stack(snapshots), 30)
    assert calls == [(3, 2, 8)]  # one batched call for all snapshots
    for image, params in zip(images, snapshots):
        np.testing.assert_array_equal(image, moonxp.evaluate_grid(params, 30))
    np.testing.assert_array_equal(axis, np.linspace(-4, 4, 30))
    fig = plot.boundaries(snapshots[1], X, T, size=30)  # one network: one panel
    assert len(fig.axes) == 1 and fig.axes[0].get_title() == "network 0"


def test_curve_of_one_network_and_of_an_ensemble():
    one = plot.curve(np.linspace(1, 0, 11))
    assert len(one.axes[0].lines) == 1 and one.axes[0].get_legend() is None
    many = plot.curve(np.random.default_rng(0).random((5, 11)))
    assert many.axes[0].get_legend() is not None and len(many.axes[0].collections) == 1


def test_ensemble_titles_carry_each_networks_error(case):
    X, T, params = moonxp.make_ensemble(0, networks=5, hidden=6)
    on = Params(*(case.asarray(p) for p in params))
    fig = plot.ensemble(on, X, T, panels=3, size=16, compile=False)
    assert len(fig.axes) == 5  # 3 boundaries + 2 histograms
    errors, _ = moonxp.evaluate(params, X, T)
    assert [ax.get_title() for ax in fig.axes[:3]] == [f"network {k}: error {errors[k]:.3f}" for k in range(3)]


def test_plots_refuse_what_they_cannot_draw(trained):
    X, T, snapshots = trained
    with pytest.raises(moonxp.InvalidInputError, match="grids need D = 2"):
        plot.boundaries(Params(np.ones((3, 4)), np.ones(4), np.ones(4)), X, T)
    with pytest.raises(moonxp.InvalidInputError, match="2 titles for 3 snapshots"):
        plot.boundaries(snapshots, X, T, titles=["a", "b"])
    with pytest.raises(moonxp.InvalidInputError, match=r"ensemble draws B networks, W \(B, 2, H\)"):
        plot.ensemble(snapshots[0], X, T)
    with pytest.raises(moonxp.InvalidInputError, match="no snapshots to draw"):
        plot.boundaries([], X, T)


def test_plots_refuse_odd_arguments_in_one_library_error(trained):
    X, T, snapshots = trained
    _, _, other = moonxp.make_problem(0, hidden=5)
    stacked = plot.stack(snapshots)
    for call, phrase in [
        (lambda: plot.boundaries(snapshots, X, T, columns=0), "columns must be an integer >= 1"),
        (lambda: plot.boundaries(snapshots, X, T, columns=-1), "columns must be an integer >= 1"),
        (lambda: plot.boundaries([snapshots[0], other], X, T), r"W \(2, H\) of one shape"),
        (lambda: plot.boundaries(Params(*(p[None] for p in stacked)), X, T), "one batch axis at a time"),
        (lambda: plot.boundaries(snapshots, X, np.where(T > 0, "a", "b")), "numeric points and labels"),
        (lambda: plot.curve(np.zeros((0, 5))), r"errors must be .* not \(0, 5\)"),
        (lambda: plot.ensemble(stacked, X, T, panels=-1), "panels must be an integer >= 1"),
        (lambda: plot.ensemble(stacked, X, T, panels=0), "panels must be an integer >= 1"),
    ]:
        with pytest.raises(moonxp.InvalidInputError, match=phrase):
            call()


@pytest.mark.slow
def test_the_cli_report_draws_with_the_public_functions(tmp_path, monkeypatch):
    used = []
    for name in ("boundaries", "curve", "ensemble"):
        original = getattr(plot, name)
        monkeypatch.setattr(plot, name, lambda *a, _f=original, _n=name, **k: used.append(_n) or _f(*a, **k))
    assert main(["--out", str(tmp_path), "--ensemble", "2", "--iters", "4"], stdout=io.StringIO(),
                stderr=io.StringIO()) == 0
    assert sorted(used) == ["boundaries", "curve", "ensemble"]
