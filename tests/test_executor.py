"""moonxp.executor: tiles cover the work exactly once, threads return results in order, out of memory halves tiles."""

from __future__ import annotations

import functools
import itertools
import math
import random
import threading
import time

import numpy as np
import pytest

import array_api_compat.numpy as xp
import moonxp
from moonxp.engine.policy import Policy
from moonxp.engine.executor import ALL, ALL_TILE, concat_tiles, map_tiles, plan, run, sum_over_points


def _indices(part: slice, total: int) -> range:
    return range(total)[part]


def _coverage(tiles, networks: int, points: int) -> np.ndarray:
    """How often each (network entry, point) is in a tile."""
    seen = np.zeros((networks, points), dtype=int)
    for nets, pts in tiles:
        for n in _indices(nets, networks):
            for p in _indices(pts, points):
                seen[n, p] += 1
    return seen


SHAPES = [  # (networks, per_network, points, per_point, tile_elements)
    (1, 1, 100, 50, 1 << 18),     # the homework: one tile
    (1, 1, 100, 50, 500),         # points split
    (1, 1, 101, 50, 500),         # a last, shorter tile
    (7, 1, 100, 50, 12_000),      # whole networks per tile, 7 = 2 + 2 + 2 + 1
    (5, 3, 10, 4, 100),           # batch dims behind the first: per_network = 3
    (3, 1, 10, 50, 10),           # a single point exceeds the budget: one point per tile
    (4, 2, 1, 1, 3),
]


@pytest.mark.parametrize(("networks", "per_network", "points", "per_point", "budget"), SHAPES)
def test_plan_covers_everything_exactly_once(networks, per_network, points, per_point, budget):
    tiles = plan(networks, per_network, points, per_point, budget)
    assert (_coverage(tiles, networks, points) == 1).all()
    for nets, pts in tiles:
        size = len(_indices(nets, networks)) * per_network * len(_indices(pts, points)) * per_point
        # within budget, unless one point of one network entry alone exceeds it
        assert size <= max(budget, per_network * per_point)


def test_plan_exhaustive_small_shapes():
    for networks, per_network, points, per_point, budget in itertools.product(
            (1, 2, 5), (1, 3), (1, 4, 9), (1, 2, 7), (1, 6, 20, 64, 1000)):
        tiles = plan(networks, per_network, points, per_point, budget)
        case = (networks, per_network, points, per_point, budget)
        assert (_coverage(tiles, networks, points) == 1).all(), case
        for nets, pts in tiles:
            size = len(_indices(nets, networks)) * per_network * len(_indices(pts, points)) * per_point
            assert size <= max(budget, per_network * per_point), case


def test_plan_one_tile_when_it_fits():
    assert plan(4, 2, 100, 50, 40_000) == [(ALL, ALL)]
    assert len(plan(4, 2, 100, 50, 39_999)) > 1


def test_plan_keeps_tiles_contiguous_and_ordered():
    """Point tiles of one network entry follow each other in order (concatenation relies on it)."""
    tiles = plan(3, 1, 10, 10, 30)
    starts = [(_indices(n, 3)[0], _indices(p, 10)[0]) for n, p in tiles]
    assert starts == sorted(starts)


@pytest.mark.parametrize("workers", [1, 2, 3, 8])
def test_run_returns_results_in_tile_order(workers):
    tiles = [(slice(k, k + 1), ALL) for k in range(23)]
    threads = set()
    delays = random.Random(0)
    pauses = {k: delays.uniform(0, 0.003) for k in range(23)}

    def work(tile):
        threads.add(threading.get_ident())
        time.sleep(pauses[tile[0].start])  # finish out of order
        return tile[0].start * 10

    assert run(work, tiles, workers) == [k * 10 for k in range(23)]
    assert (len(threads) > 1) == (workers > 1)


def test_tile_workers_run_blas_on_one_thread_and_restore_it():
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads() -> list[int]:
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    if not blas_threads():
        pytest.skip("threadpoolctl finds no BLAS in this NumPy")
    with threadpool_limits(limits=2, user_api="blas"):
        seen = run(lambda tile: blas_threads(), [(slice(k, k + 1), ALL) for k in range(4)], 2)
        assert seen == [[1] * len(blas_threads())] * 4
        assert blas_threads() == [2] * len(seen[0])
        assert run(lambda tile: blas_threads(), [ALL_TILE], 2) == [[2] * len(seen[0])]  # one tile: no workers


def test_tile_workers_started_from_another_thread_leave_blas_alone():
    """OpenBLAS ignores a raise of its threads asked from a thread other than the main one: a limit set there
    would stay for good, so only the main thread limits (a user's threads and Dask's run BLAS as they find it)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads() -> list[int]:
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    if not blas_threads():
        pytest.skip("threadpoolctl finds no BLAS in this NumPy")
    seen = []
    with threadpool_limits(limits=2, user_api="blas"):
        thread = threading.Thread(target=lambda: seen.append(run(lambda tile: blas_threads(),
                                                                 [(slice(k, k + 1), ALL) for k in range(4)], 2)))
        thread.start()
        thread.join()
        assert seen == [[[2] * len(blas_threads())] * 4] and blas_threads() == [2] * len(blas_threads())


def test_run_propagates_an_error_from_a_thread():
    def work(tile):
        if tile[0].start == 5:
            raise KeyError("tile 5")
        return tile[0].start

    with pytest.raises(KeyError, match="tile 5"):
        run(work, [(slice(k, k + 1), ALL) for k in range(8)], 3)


class OutOfMemoryError(Exception):
    """Named like CuPy's and PyTorch's: the executor recognizes it by name."""


def _points_in(tile, total: int) -> int:
    return len(_indices(tile[1], total))


def _map(work, shape, policy):
    return map_tiles(work, functools.partial(plan, *shape), math.prod(shape), policy)


def test_map_tiles_halves_tiles_out_of_memory():
    shape = (1, 1, 1000, 10)  # 10_000 elements
    attempts = []

    def work(tile):
        n = _points_in(tile, 1000)
        attempts.append(n)
        if n > 200:
            raise OutOfMemoryError(f"cannot allocate {n * 10} elements")
        return n

    tiles, results = _map(work, shape, Policy(tile_elements=10_000, workers=1))
    # 10_000 -> 5000 -> 2500 -> 1250 elements: 1000, 500, 250, then 125 points a tile
    assert attempts[:3] == [1000, 500, 250]
    assert results == [125] * 8
    assert (_coverage(tiles, 1, 1000) == 1).all()


def test_map_tiles_recognizes_xla_resource_exhausted():
    calls = []

    def work(tile):
        calls.append(tile)
        if _points_in(tile, 64) == 64:
            raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate")
        return 1

    tiles, results = _map(work, (1, 1, 64, 64), Policy(tile_elements=1 << 20, workers=2))
    assert len(results) == len(tiles) > 1


def test_map_tiles_gives_up_with_a_clear_error():
    def work(tile):
        raise OutOfMemoryError("out of memory")

    with pytest.raises(moonxp.MoonxpError, match="out of device memory") as info:
        _map(work, (2, 1, 1000, 50), Policy(tile_elements=1 << 16, workers=1))
    assert "fewer networks or points" in str(info.value)


def test_map_tiles_remembers_the_tile_size_that_fitted():
    calls = []

    def work(tile):
        calls.append(tile)
        if tile[1].stop is None or tile[1].stop - (tile[1].start or 0) > 100:
            raise OutOfMemoryError("out of memory")
        return 1

    policy = Policy(tile_elements=1 << 16, workers=1)
    first, _ = _map(work, (1, 1, 1000, 50), policy)
    calls.clear()
    again, _ = _map(work, (1, 1, 1000, 50), policy)
    assert again == first and len(calls) == len(first)  # no failed attempts the second time
    moonxp.engine.policy.reset()  # forgotten on request: the full size is tried again
    calls.clear()
    _map(work, (1, 1, 1000, 50), policy)
    assert calls[0][1] == ALL  # the whole problem first, as on the first call
    moonxp.engine.policy.reset()


def test_map_tiles_does_not_retry_other_errors():
    calls = []

    def work(tile):
        calls.append(tile)
        raise ValueError("a bug, not memory")

    with pytest.raises(ValueError, match="a bug"):
        _map(work, (1, 1, 100, 50), Policy(tile_elements=1 << 18, workers=1))
    assert len(calls) == 1


def test_sum_over_points_adds_point_tiles_and_concatenates_network_tiles():
    tiles = plan(3, 1, 10, 1, 4)  # networks one by one, points in tiles of 4
    data = np.arange(30.0).reshape(3, 10)

    def work(tile):
        nets, pts = tile
        part = data[nets][:, pts] if nets is not ALL else data[:, pts]
        return (xp.sum(part, axis=-1), xp.sum(part ** 2, axis=-1))

    total, squares = sum_over_points(tiles, [work(t) for t in tiles], xp)
    np.testing.assert_array_equal(total, data.sum(axis=-1))
    np.testing.assert_array_equal(squares, (data ** 2).sum(axis=-1))


def test_concat_tiles_restores_the_layout():
    tiles = plan(2, 1, 7, 1, 3)
    data = np.arange(14.0).reshape(2, 7, 1)
    results = [data[n][:, p] if n is not ALL else data[:, p] for n, p in tiles]
    np.testing.assert_array_equal(concat_tiles(tiles, results, xp, axes=(0, -2)), data)


def test_concat_tiles_restores_rows_cut_into_column_tiles():
    data = np.arange(2 * 5 * 7.0).reshape(2, 5, 7)
    tiles = [(slice(n, n + 1), slice(r, r + 1), slice(c, min(c + 3, 7)))
             for n in range(2) for r in range(5) for c in range(0, 7, 3)]
    results = [data[n, r, c] for n, r, c in tiles]
    np.testing.assert_array_equal(concat_tiles(tiles, results, xp, axes=(0, -2, -1)), data)
