"""The benchmark's peers do the same work as moonxp, so their timings compare like with like."""

import numpy as np
import pytest

import moonxp
from moonxp import to_host
from moonxp.benchmark.peers import PEERS
from moonxp.benchmark.workloads import WORKLOADS, host_problem, make_call


def _peer_backend(name: str):
    pytest.importorskip({"numpy": "numpy", "torch": "torch", "jax": "jax"}[PEERS[name].backend])
    return moonxp.resolve("cpu", PEERS[name].backend, "float64")


@pytest.mark.parametrize("peer", sorted(PEERS))
@pytest.mark.parametrize("batch", [None, 3])
def test_peer_training_matches_moonxp(peer, batch):
    backend = _peer_backend(peer)
    X, T, params = moonxp.make_problem(1, n_samples=40)
    if batch:
        params = moonxp.make_ensemble(1, batch, n_samples=40)[2]
    expected, _ = moonxp.train(params, X, T, lr=0.1, iters=12)
    got = PEERS[peer].train(*(backend.asarray(p) for p in params), backend.asarray(X), backend.asarray(T), 0.1, 12)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(to_host(g), e, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("peer", sorted(PEERS))
def test_peer_grid_matches_moonxp(peer):
    backend = _peer_backend(peer)
    _, _, params = moonxp.make_problem(2)
    axis = np.linspace(-4.0, 4.0, 70)  # not a multiple of the peers' row blocks
    got = PEERS[peer].grid(*(backend.asarray(p) for p in params), backend.asarray(axis))
    np.testing.assert_allclose(to_host(got), moonxp.evaluate_grid(params, 70), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_workload_runs_the_same_problem_for_moonxp_and_peers(name):
    workload = WORKLOADS[name]
    size = workload.sizes["cpu"]["smoke"][0]
    backend = moonxp.resolve("cpu", "numpy", "float64")
    ours = make_call(workload, size, backend)()
    theirs = make_call(workload, size, backend, "numpy-homework")()
    if name == "grid-eval":
        np.testing.assert_allclose(theirs, ours, rtol=1e-10, atol=1e-12)
    else:
        params, _ = ours
        for g, e in zip(theirs, params):
            np.testing.assert_allclose(g, e, rtol=1e-9, atol=1e-12)
    host_params, X, T = host_problem(workload, size)
    assert X.shape == (size if name == "train-large" else 100, 2)
    assert host_params.W.shape[:-2] == ((size,) if name == "train-batched" else ())


def test_peer_grid_blocks_suit_the_device():
    from moonxp.benchmark.peers import GRID_CHUNK_POINTS, grid_block_points
    assert grid_block_points(False, 50) == GRID_CHUNK_POINTS
    assert grid_block_points(True, 50) >= 1_000_000  # a 16384^2 grid in a few hundred blocks, not 65 536


def test_jax_grid_with_gpu_sized_blocks_matches_moonxp():
    pytest.importorskip("jax")
    from moonxp.benchmark.peers import _jax_grid_compiled, grid_block_points
    backend = moonxp.resolve("cpu", "jax", "float64")
    _, _, params = moonxp.make_problem(3)
    axis = np.linspace(-4.0, 4.0, 70)
    got = _jax_grid_compiled()(*(backend.asarray(p) for p in params), backend.asarray(axis),
                               grid_block_points(True, params.W.shape[-1]))
    np.testing.assert_allclose(to_host(got), moonxp.evaluate_grid(params, 70), rtol=1e-10, atol=1e-12)
