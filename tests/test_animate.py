"""--animate: boundaries.gif, one batched grid over the stacked frames, atomic, refused when it cannot fit."""

from __future__ import annotations

import dataclasses
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

import moonxp
import moonxp.app.budget
from moonxp import plot
from moonxp.app import model
from moonxp.app.cli import main


def run(tmp_path, *args):
    out, err = io.StringIO(), io.StringIO()
    code = main(["--out", str(tmp_path), "--no-plot", "--grid", "24", *args], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def frames(path):
    with Image.open(path) as gif:
        images = []
        for k in range(gif.n_frames):
            gif.seek(k)
            images.append(np.asarray(gif.convert("RGB")))
        return images


@pytest.mark.slow
def test_one_frame_per_iteration(tmp_path):
    code, out, _ = run(tmp_path, "--iters", "10", "--animate")
    assert code == 0 and "boundaries.gif" in out
    images = frames(tmp_path / "boundaries.gif")
    assert len(images) == 11  # before updates 0..9, and the trained state
    assert images[0].shape == (240, 240, 3)
    assert not np.array_equal(images[0], images[-1])  # the boundary moved
    assert sorted(os.listdir(tmp_path)) == ["boundaries.gif", "metrics.json"]


@pytest.mark.slow
def test_every_kth_iteration_and_an_ensemble_side_by_side(tmp_path, monkeypatch):
    calls = []
    original = plot.evaluate_grid
    monkeypatch.setattr(plot, "evaluate_grid", lambda p, *a, **k: calls.append(tuple(p.W.shape)) or original(p, *a, **k))
    code, _, _ = run(tmp_path, "--iters", "10", "--animate", "4", "--ensemble", "6", "--hidden", "5")
    assert code == 0
    images = frames(tmp_path / "boundaries.gif")
    assert len(images) == 4  # iterations 0, 4, 8, 10
    assert images[0].shape == (240, 4 * 240, 3)  # the first 4 networks side by side
    assert calls == [(4, 4, 2, 5)]  # ONE batched grid: (frames, networks, 2, H)


def test_long_runs_show_every_kth_iteration():
    shown = model.frame_iterations(10_000, 0)
    assert len(shown) <= model.MAX_FRAMES and shown[0] == 0 and shown[-1] == 10_000
    assert model.frame_iterations(5, 0) == [0, 1, 2, 3, 4, 5]
    assert model.frame_iterations(5, 2) == [0, 2, 4, 5]


def test_refused_up_front_when_it_would_not_fit(tmp_path, monkeypatch):
    monkeypatch.setattr(moonxp.app.budget, "host_memory", lambda: 500_000_000)  # enough for the run, not its GIF
    code, _, err = run(tmp_path / "out", "--iters", "500", "--animate", "--grid", "400")
    assert code == 2
    assert "--animate needs about" in err and "use --animate K with a larger K" in err
    assert not (tmp_path / "out").exists()  # before training, before --out was created


def test_memory_estimate_counts_frames_grids_and_pixels():
    config = model.Config(iters=99, grid=100, ensemble=2, animate=0)
    host, device = moonxp.app.budget.animation_needs(config, 8)
    assert device == 100 * 2 * 100 * 100 * 8                            # 100 frames of 2 grids on the device
    assert host == device + 100 * 240 * 240 * 2 * 4                     # their copies on the host, and the RGBA frames
    assert moonxp.app.budget.animation_needs(model.Config(), 8) == (0, 0)


def test_the_run_and_its_animation_count_in_one_total(monkeypatch):
    config = model.Config(iters=500, grid=400, animate=0)
    alone, backend = dataclasses.replace(config, animate=None), moonxp.resolve()
    run, frames = sum(moonxp.app.budget.needs(alone, backend, True)), sum(moonxp.app.budget.animation_needs(config, 8))
    assert sum(moonxp.app.budget.needs(config, backend, True)) == run + frames
    monkeypatch.setattr(moonxp.app.budget, "host_memory", lambda: max(run, frames) + min(run, frames) // 2)
    moonxp.app.budget.check(alone, backend, True)  # each fits by itself, with room to spare
    with pytest.raises(moonxp.InvalidInputError, match="--animate needs about .* use --animate K with a larger K"):
        moonxp.app.budget.check(config, backend, True)


def test_a_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    from matplotlib.animation import PillowWriter

    def full(self, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(PillowWriter, "grab_frame", full)
    code, _, err = run(tmp_path, "--iters", "3", "--animate")
    assert code == 2 and "boundaries.gif" in err and "it was left as it was" in err
    assert os.listdir(tmp_path) == ["metrics.json"]  # no figure set without its GIF, no temporary file
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "boundaries.gif" in metrics["message"]


def test_the_memory_check_counts_frames_without_listing_them(tmp_path, monkeypatch):
    from moonxp.app import model
    for iters in (0, 1, 7, 199, 200, 12345):
        for every in (0, 1, 3, 10):
            assert model.frame_count(iters, every) == len(model.frame_iterations(iters, every))
    monkeypatch.setattr(model, "frame_iterations", lambda *a: pytest.fail("frames listed before the memory check"))
    err = io.StringIO()
    argv = ["--animate", "1", "--iters", "10000000", "--out", str(tmp_path / "o")]
    assert main(argv, stdout=io.StringIO(), stderr=err) == 2
    assert "--animate needs about" in err.getvalue() and not (tmp_path / "o").exists()
