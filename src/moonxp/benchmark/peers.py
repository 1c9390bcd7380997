"""Independent implementations the benchmark runs side by side with moonxp.

Each peer is the same work written the way its users would write it, not
with moonxp's kernels: plain NumPy in the homework's style, PyTorch eager,
and JAX with the whole loop under ``jax.jit``. They are deliberately separate
code, so a ratio to a peer measures moonxp against an outside baseline.
A peer's `train(W, b, v, X, T, lr, iters)` takes arrays of its `backend`
(W (..., 2, H), b and v (..., H), X (N, 2), T (N,)) and returns the new
(W, b, v); `grid(W, b, v, axis)` returns the outputs on the axis x axis grid.
"""

from __future__ import annotations

import functools
import numpy as np

GRID_CHUNK_POINTS = 4096            # grid points a peer evaluates at a time on a CPU (cache-sized blocks)
GPU_CHUNK_ELEMENTS = 1 << 26        # (points, H) elements of a block on a GPU: a few hundred MB, fills the chip


def grid_block_points(gpu: bool, hidden: int) -> int:
    """Grid points per block of a peer's grid: cache-sized on a CPU, chip-filling on a GPU."""
    return max(GRID_CHUNK_POINTS, GPU_CHUNK_ELEMENTS // hidden) if gpu else GRID_CHUNK_POINTS


def _batched_homework(W, b, v, X, T, lr, iters, relu):
    """The homework's loop with batch dims via matmul, in operators NumPy and PyTorch share."""
    N = X.shape[0]
    for _ in range(iters):
        Z = X @ W + b[..., None, :]
        A = relu(Z)
        Y = (A @ v[..., :, None])[..., 0]
        DY = (-Y * T > 0) * (-T)
        DZ = DY[..., :, None] * v[..., None, :] * (Z > 0)
        W = W - lr * (X.T @ DZ) / N
        b = b - lr * DZ.mean(-2)
        v = v - lr * (DY[..., None, :] @ A)[..., 0, :] / N
    return W, b, v


class NumpyHomework:
    """Plain NumPy as in the homework (batch dims via matmul), single-threaded, unchunked training."""

    name, backend = "numpy-homework", "numpy"

    @staticmethod
    def train(W, b, v, X, T, lr, iters):
        N = X.shape[0]
        if W.ndim == 2:  # one network: the homework's own code
            for _ in range(iters):
                Z = X.dot(W) + b
                A = np.maximum(0, Z)
                Y = A.dot(v)
                DY = (-Y * T > 0) * (-T)
                DZ = np.outer(DY, v) * (Z > 0)
                W, b, v = W - lr * X.T.dot(DZ) / N, b - lr * DZ.mean(0), v - lr * A.T.dot(DY) / N
            return W, b, v
        return _batched_homework(W, b, v, X, T, lr, iters, lambda Z: np.maximum(0, Z))

    @staticmethod
    def grid(W, b, v, axis):
        X1, X2 = np.meshgrid(axis, axis)
        X = np.stack([X1.ravel(), X2.ravel()], axis=1)
        rows = [np.maximum(0, X[i:i + GRID_CHUNK_POINTS] @ W + b) @ v for i in range(0, len(X), GRID_CHUNK_POINTS)]
        return np.concatenate(rows).reshape(X1.shape)


class TorchEager:
    """PyTorch eager on the backend's device, unchunked training."""

    name, backend = "torch-eager", "torch"

    @staticmethod
    def train(W, b, v, X, T, lr, iters):
        return _batched_homework(W, b, v, X, T, lr, iters, lambda Z: Z.relu())

    @staticmethod
    def grid(W, b, v, axis):
        import torch
        X2, X1 = torch.meshgrid(axis, axis, indexing="ij")
        X = torch.stack([X1.reshape(-1), X2.reshape(-1)], dim=1)
        step = grid_block_points(X.is_cuda, W.shape[-1])
        rows = [(X[i:i + step] @ W + b).relu() @ v for i in range(0, len(X), step)]
        return torch.cat(rows).reshape(len(axis), len(axis))


class JaxJit:
    """JAX with the whole training loop (`lax.fori_loop`) and the grid (`lax.map` over row blocks) jitted.

    Row blocks hold `grid_block_points` points: 4096 on a CPU, millions on a GPU,
    where 4096-point blocks would be thousands of sequential dispatches.
    """

    name, backend = "jax-jit", "jax"

    @staticmethod
    def train(W, b, v, X, T, lr, iters):
        return _jax_train_compiled()(W, b, v, X, T, lr, iters)

    @staticmethod
    def grid(W, b, v, axis):
        gpu = any(device.platform != "cpu" for device in axis.devices())
        return _jax_grid_compiled()(W, b, v, axis, grid_block_points(gpu, W.shape[-1]))


@functools.lru_cache(maxsize=1)
def _jax_train_compiled():
    import jax
    import jax.numpy as jnp

    def step(_, state):
        W, b, v, X, T, lr = state
        N = X.shape[0]
        Z = X @ W + b[..., None, :]
        A = jnp.maximum(Z, 0)
        Y = (A @ v[..., :, None])[..., 0]
        DY = jnp.where(Y * T < 0, -T, 0)
        DZ = DY[..., :, None] * v[..., None, :] * (Z > 0)
        return (W - lr * (X.T @ DZ) / N, b - lr * DZ.mean(-2), v - lr * (DY[..., None, :] @ A)[..., 0, :] / N,
                X, T, lr)

    @functools.partial(jax.jit, static_argnums=6)
    def train(W, b, v, X, T, lr, iters):
        return jax.lax.fori_loop(0, iters, step, (W, b, v, X, T, lr))[:3]
    return train


@functools.lru_cache(maxsize=1)
def _jax_grid_compiled():
    import jax
    import jax.numpy as jnp

    @functools.partial(jax.jit, static_argnums=4)
    def grid(W, b, v, axis, block_points):
        G = axis.shape[0]
        rows = max(1, block_points // G)
        blocks = -(-G // rows)
        x2 = jnp.pad(axis, (0, blocks * rows - G)).reshape(blocks, rows)

        def block(x2_rows):
            X = jnp.stack(jnp.broadcast_arrays(axis[None, :], x2_rows[:, None]), axis=-1).reshape(-1, 2)
            return (jnp.maximum(X @ W + b, 0) @ v).reshape(rows, G)
        return jax.lax.map(block, x2).reshape(-1, G)[:G]
    return grid


PEERS = {peer.name: peer for peer in (NumpyHomework, TorchEager, JaxJit)}

