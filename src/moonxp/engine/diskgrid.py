"""A G x G grid too large for memory, written band by band into a chunked array on disk.

Each task computes one band of rows (`evaluate_grid(..., rows=band)`), opens the
store itself, writes the band as whole chunks and then leaves a marker file; no
process holds more than a band. The store is Zarr (``path.zarr``, uncompressed
chunks of one band) or a ``.npy`` file written through a memory map. Markers sit
in ``path + ".bands"`` beside a fingerprint of the grid, so a stopped run,
started again with the same arguments, skips the bands already written, once
it has checked that the store is still the one it created (shape, dtype,
chunks, every byte of a .npy) and, for Zarr, that each marked band's chunk is
there.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import validate
from ..arrays import to_host
from ..defaults import GRID_HI, GRID_LO
from ..errors import BackendError, OutputError, install_hint
from ..kernels import Params
from .tasks import Spec, map_tasks, task_backend
from .grid import evaluate_grid

BAND_BYTES = 64 << 20  # output bytes of one band (a task, and a chunk of the store)
FORMATS = (".zarr", ".npy")


def band_rows(shape: tuple[int, ...], itemsize: int) -> int:
    """Rows per band for a grid of `shape` (..., G, G): about BAND_BYTES of output, at least one row."""
    return max(1, min(shape[-2], BAND_BYTES // (itemsize * int(np.prod(shape[:-2], dtype=np.int64)) * shape[-1])))


def _fingerprint(params: Params, size: int, lo: float, hi: float, dtype: str, rows: int) -> str:
    digest = hashlib.sha256(repr((size, lo, hi, dtype, rows, [p.shape for p in params])).encode())
    for p in params:
        digest.update(np.ascontiguousarray(p, dtype=dtype).tobytes())
    return digest.hexdigest()


def _open(path: str, mode: str, shape: tuple = (), dtype: str = "", rows: int = 0) -> Any:
    if path.endswith(".zarr"):
        import zarr
        if mode == "w":
            return zarr.create_array(path, shape=shape, chunks=shape[:-2] + (rows, shape[-1]), dtype=dtype,
                                     compressors=None, fill_value=0, overwrite=True)
        return zarr.open_array(path, mode="r+")
    if mode == "w":
        return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    return np.load(path, mmap_mode="r+")


def _intact(path: str, shape: tuple, dtype: str, rows: int) -> bool:
    """Whether the store at `path` is one this grid would create: its shape, dtype and (Zarr) chunks."""
    try:
        if path.endswith(".zarr"):
            import zarr
            store = zarr.open_array(path, mode="r")
            return store.shape == shape and store.dtype == dtype and store.chunks == shape[:-2] + (rows, shape[-1])
        store = np.load(path, mmap_mode="r")  # a truncated file fails here: the map needs every byte
        return isinstance(store, np.memmap) and store.shape == shape and store.dtype == dtype
    except Exception:  # any store that cannot be opened (zarr raises many kinds) is not this grid's
        return False


def _written(path: str, band: tuple[int, int], rows: int, batch: int) -> bool:
    """Whether band's data is in the store: a Zarr chunk file of the band (a .npy holds every band's bytes)."""
    if not path.endswith(".zarr"):
        return True
    import zarr
    key = zarr.open_array(path, mode="r").metadata.encode_chunk_key((0,) * batch + (band[0] // rows, 0))
    return (Path(path) / key).exists()


def _write_band(band: tuple[int, int], *, path: str, params: Params, size: int, lo: float, hi: float,
                spec: Spec) -> int:
    """Compute rows band[0]:band[1] of the grid, write them into the store at `path`, mark the band done."""
    backend = task_backend(spec)
    start, stop = band
    values = to_host(evaluate_grid(Params(*(backend.asarray(p) for p in params)), size, lo, hi, rows=band))
    store = _open(path, "r+")
    store[..., start:stop, :] = values
    if isinstance(store, np.memmap):
        store.flush()
    del store
    try:
        (Path(path + ".bands") / f"{start}").touch()
    except OSError as exc:
        raise OutputError(f"cannot mark band {start} done in {path + '.bands'!r}: {exc.strerror or exc}; "
                          f"choose another path") from exc
    return stop - start


def grid_to_disk(params: Params, path: str | os.PathLike, size: int, lo: float = GRID_LO, hi: float = GRID_HI, *,
                 device: str = "cpu", backend: str | None = None, dtype: str = "float32", client: Any = None,
                 progress: Callable[[int, int], None] | None = None) -> Path:
    """Write `evaluate_grid(params, size, lo, hi)` (..., size, size) to `path` (.zarr or .npy), band by band.

    params: host arrays (leading batch dims allowed). Bands run as tasks on `client`'s
    workers (None: here, one after another) and are resumable: bands marked done by an
    earlier run with the same arguments are skipped. `progress(done, total)` counts bands.

    Returns
    -------
    Path
        `path`.

    Raises
    ------
    InvalidInputError, InvalidTypeError
        Bad params (NaN, shapes, D != 2), grid size or bounds, before anything is written.
    OutputError
        The path has another suffix, or the store or a band's marker cannot be written.
    BackendError
        A .zarr path without zarr installed.
    """
    path = str(path)
    params = Params(*(np.asarray(p, dtype=dtype) for p in params))
    validate.arrays(params)  # NaN, shapes and D = 2 here, before a full-size store is created
    validate.planar(params)
    validate.count("grid size", size, 2)
    lo, hi = validate.interval(lo, hi)
    if not path.endswith(FORMATS):
        raise OutputError(f"cannot tell the format of {path!r}: end the path in .zarr (Zarr) or .npy (NumPy)")
    if path.endswith(".zarr"):
        try:
            import zarr  # noqa: F401
        except ImportError as exc:
            raise BackendError(f"{path!r} needs zarr (Python 3.11 or newer), which is not installed: "
                               f"{install_hint('cluster')}, or write a .npy file") from exc
    spec = (device, backend, dtype)
    task_backend(spec)  # a bad device or backend fails here, before anything is written
    shape = params.W.shape[:-2] + (size, size)
    rows = band_rows(shape, np.dtype(dtype).itemsize)
    bands = [(start, min(start + rows, size)) for start in range(0, size, rows)]
    markers = Path(path + ".bands")
    fingerprint = _fingerprint(params, size, lo, hi, dtype, rows)
    stamp = markers / "fingerprint"
    try:
        if not (stamp.exists() and stamp.read_text() == fingerprint and _intact(path, shape, dtype, rows)):
            if markers.exists():
                for marker in markers.iterdir():
                    marker.unlink()
            markers.mkdir(parents=True, exist_ok=True)
            _open(path, "w", shape, dtype, rows)
            stamp.write_text(fingerprint)
    except OSError as exc:
        raise OutputError(f"cannot create {path!r}: {exc.strerror or exc}; choose another path") from exc
    batch = len(shape) - 2
    todo = [band for band in bands if not ((markers / f"{band[0]}").exists() and _written(path, band, rows, batch))]
    skipped = len(bands) - len(todo)
    on_progress = None if progress is None else (lambda done, total: progress(skipped + done, len(bands)))
    map_tasks(client, _write_band, todo, on_progress, path=path, params=params, size=size, lo=lo, hi=hi, spec=spec)
    return Path(path)
