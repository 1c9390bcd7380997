"""The decision function on a G x G grid, in bounded memory, on any backend.

On the grid the preactivation separates into a column term and a row term,
    z[i, k] = l[k] W[0] + (l[i] W[1] + b),
so each tile of rows adds two small (G, H) and (r, H) tables instead of
multiplying every point by W, then reads out with the same `readout` kernel.
"""

from __future__ import annotations

import math
from typing import Any

from . import validate
from .backend import device_context, policy as policy_for
from .executor import ALL, concat_over_points, map_tiles, prepare
from .kernels import Params, readout

Array = Any


def _rows(col: Array, row: Array, v: Array, xp: Any) -> Array:
    """Outputs (..., r, G) of rows with x2-terms `row` (..., r, H) over columns `col` (..., G, H)."""
    z = row[..., :, None, :] + col[..., None, :, :]                   # (..., r, G, H)
    return readout(z, v[..., None, :], xp)


def evaluate_grid(params: Params, size: int = 100, lo: float = -4.0, hi: float = 4.0, *,
                  compile: bool | None = None) -> Array:
    """Yg (..., size, size) with Yg[..., i, k] = f(x1 = l[k], x2 = l[i]), l = linspace(lo, hi, size).

    For one network or a batch (params with leading dims); the result stays in the
    params' namespace, device and dtype. Memory is bounded by tiling the rows.
    """
    xp, device = validate.arrays(params)
    params = Params(*params)
    validate.count("grid size", size, 2)
    lo, hi = validate.interval(lo, hi)
    validate.compile_flag(compile)
    policy = policy_for(xp, device, params.W.dtype)
    rows = prepare(_rows, policy, compile, xp=xp)
    W, b, v = params
    with device_context(xp, device):
        axis = xp.linspace(lo, hi, size, dtype=W.dtype, device=device)
        col = axis[:, None] * W[..., 0, None, :]                     # (..., G, H): x1 = l[k]
        row = axis[:, None] * W[..., 1, None, :] + b[..., None, :]   # (..., G, H): x2 = l[i], plus b

        def work(tile):
            nets, rs = tile
            c, r, w = (col, row, v) if nets is ALL else (col[nets, ...], row[nets, ...], v[nets, ...])
            return rows(c, r if rs is ALL else r[..., rs, :], w)

        shape = (W.shape[0] if W.ndim > 2 else 1, math.prod(W.shape[1:-2]), size, size * W.shape[-1])
        tiles, results = map_tiles(work, shape, policy)
        return concat_over_points(tiles, results, xp, axis=-2)

