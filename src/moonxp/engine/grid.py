"""The decision function on a G x G grid, in bounded memory, on any backend.

On the grid the preactivation separates into a column term and a row term,
    z[i, h, k] = col[h, k] + row[i, h],  col = l[k] W[0, h],  row = l[i] W[1, h] + b[h],
so a tile of r rows adds two small tables instead of multiplying every point
by W. With max(0, z) = (z + |z|) / 2 the linear half separates too:
    y[i, k] = (sum_h v_h |z[i, h, k]| + row[i] . v + v . col[:, k]) / 2,
which leaves one add, one |.| and one matmul per (point, unit).

The add runs as a matmul too, [row, 1] [1; col] per unit (`_rows`; exact: each
element is one product by 1 and one rounded sum): NumPy's broadcast add, with
one operand constant along each row, costs an inner loop per (row, unit),
about three times a plain pass. Units sit first, (H, r, G), so |z| is one
contiguous pass; the sum over units is one matrix-vector product per row.
On the NumPy policy each tile writes its rows into the preallocated grid
(`Policy.writes_tiles`) instead of a concatenation at the end.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import validate
from ..arrays import device_context, values_readable
from ..errors import InvalidInputError
from ..defaults import GRID, GRID_HI, GRID_LO
from ..kernels import Params, matvec
from .executor import ALL, compiles, concat_tiles, map_tiles, plan, program
from .policy import policy as policy_for

Array = Any
ROW_TEMPORARIES = 2  # (..., H, r, G) arrays alive at once in `_rows`: z and |z|
MIN_TILE_ROWS = 4    # rows wider than a tile of this many rows are cut into column tiles


def ones_over(col: Array, xp: Any) -> Array:
    """[1; col] (..., H, 2, G): the column table `col` (..., H, G) under a row of ones, for `_rows`."""
    return xp.stack([xp.ones_like(col), col], axis=-2)


def _rows(row: Array, col1: Array, v: Array, col_v: Array, xp: Any, fused: bool) -> Array:
    """Outputs (..., r, G) of the rows with terms `row` (..., r, H) over the columns `col1` = [1; col] (..., H, 2, G).

    `col_v` (..., G) is v . col, the columns' share of the linear half. `fused`: the sums
    over h as multiply and ``xp.sum`` (see `kernels`), which a compiler fuses with the add and |.|.
    """
    if fused:
        z = row[..., :, :, None] + col1[..., None, :, 1, :]                  # (..., r, H, G)
        abs_v = xp.sum(v[..., None, :, None] * xp.abs(z), axis=-2)           # sum_h v_h |z|, (..., r, G)
    else:
        row_t = xp.matrix_transpose(row)                                     # (..., H, r)
        z = xp.stack([row_t, xp.ones_like(row_t)], axis=-1) @ col1           # row + col, (..., H, r, G)
        lead = tuple(range(z.ndim - 3))
        by_row = xp.permute_dims(xp.abs(z), (*lead, z.ndim - 2, z.ndim - 3, z.ndim - 1))  # (..., r, H, G), a view
        abs_v = (v[..., None, None, :] @ by_row)[..., 0, :]                  # one product per row, as forward's
    return (abs_v + matvec(row, v, xp, fused)[..., None] + col_v[..., None, :]) * 0.5


def evaluate_grid(params: Params, size: int = GRID, lo: float = GRID_LO, hi: float = GRID_HI, *,
                  compile: bool | None = None, rows: tuple[int, int] | None = None) -> Array:
    """Yg (..., size, size) with Yg[..., i, k] = f(x1 = l[k], x2 = l[i]), l = linspace(lo, hi, size).

    For one network or a batch (params with leading dims) of D = 2 inputs; the result stays in the
    params' namespace, device and dtype. Memory is bounded by tiling the rows (and the
    columns of rows wider than a tile).

    Parameters
    ----------
    params : Params
        W (..., 2, H), b (..., H), v (..., H).
    size : int
        Grid points per side, >= 2.
    lo, hi : float
        Bounds of both axes, finite, lo < hi.
    compile : bool, optional
        As for `moonxp.train`.
    rows : (int, int), optional
        (start, stop): only that band of rows, Yg[..., start:stop, :].

    Returns
    -------
    Yg : array
        (..., size, size), or (..., stop - start, size) for a band.

    Raises
    ------
    InvalidInputError
        D != 2, a bad size, bounds or band, or outputs that overflow the dtype on the grid.
    InvalidTypeError
        As for `moonxp.forward`.
    DeviceMemoryError
        Out of device memory even in the smallest useful tiles.
    """
    xp, device = validate.arrays(params)
    params = Params(*params)
    validate.planar(params)
    size = validate.count("grid size", size, 2)
    lo, hi = validate.interval(lo, hi)
    validate.compile_flag(compile)
    start, stop = (0, size) if rows is None else rows
    validate.count("first grid row", start, 0, size - 1)
    validate.count("grid row stop", stop, start + 1, size)
    W, b, v = params
    # Overflow shows as a non-finite grid, reported below, not as NumPy warnings.
    with device_context(xp, device), np.errstate(over="ignore", invalid="ignore"):
        policy = policy_for(xp, device, W.dtype)
        networks, per_network = (W.shape[0] if W.ndim > 2 else 1), math.prod(W.shape[1:-2])
        units = networks * per_network * (stop - start) * size * W.shape[-1]
        band = program(_rows, policy, compile, compiles(policy, compile, 1, units), xp=xp)
        axis = xp.linspace(lo, hi, size, dtype=W.dtype, device=device)
        col = W[..., 0, :, None] * axis                              # (..., H, G): x1 = l[k]
        row = axis[start:stop, None] * W[..., 1, None, :] + b[..., None, :]  # (..., r, H): x2 = l[i], plus b
        col_v = (v[..., None, :] @ col)[..., 0, :]                   # (..., G)
        col1 = ones_over(col, xp)
        batched = W.ndim > 2
        out = xp.empty((*row.shape[:-1], size), dtype=W.dtype, device=device) if policy.writes_tiles else None

        def work(tile):
            nets, rs, cs = tile
            r, c, w, cv = (row, col1, v, col_v) if nets is ALL else (
                row[nets, ...], col1[nets, ...], v[nets, ...], col_v[nets, ...])
            if cs is not ALL:
                c, cv = c[..., cs], cv[..., cs]
            y = band(r if rs is ALL else r[..., rs, :], c, w, cv)
            finite = xp.all(xp.isfinite(y))  # checked while the tile is in cache; read back once, below
            if out is None:
                return y, finite
            out[((nets,) if batched else ()) + (..., rs, cs)] = y
            return None, finite

        per_row = ROW_TEMPORARIES * size * W.shape[-1]

        def planner(tile_elements: int) -> list:
            # a row wider than MIN_TILE_ROWS rows of a tile is cut into column tiles of equal width
            pieces = -(-size // max(1, tile_elements // (per_network * MIN_TILE_ROWS * per_row // size)))
            width = -(-size // pieces)
            columns = [ALL] if pieces == 1 else [slice(k, min(k + width, size)) for k in range(0, size, width)]
            return [(n, r, c) for n, r in plan(networks, per_network, stop - start, per_row * width // size,
                                               tile_elements) for c in columns]

        tiles, results = map_tiles(work, planner, networks * per_network * (stop - start) * per_row, policy)
        finite = [f for _, f in results]
        grid = out if out is not None else concat_tiles(tiles, [y for y, _ in results], xp, axes=(0, -2, -1))
        if values_readable(finite[0]) and not bool(xp.all(xp.stack(finite))):
            raise InvalidInputError(f"the network's outputs overflow {W.dtype} on the grid from {lo:g} to {hi:g}: "
                                    f"use bounds closer to 0, or float64 parameters")
        return grid
