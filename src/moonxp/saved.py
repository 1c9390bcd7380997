"""Trained networks on disk: ``save_params`` / ``load_params``, a versioned ``.npz`` that never unpickles.

The file holds W, b, v (host NumPy, any batch dims and D), a format tag, the
format version, and optional JSON metadata (a run's config, say). Loading uses
``np.load(allow_pickle=False)``, so a file from a stranger cannot run code;
anything that is not a params file of this version is one `InvalidInputError`.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from typing import Any

import numpy as np

from . import validate
from .arrays import to_host
from .errors import InvalidInputError, InvalidTypeError, MoonxpError
from .kernels import Params
from .outputs import write_npz

FORMAT = "moonxp-params"
VERSION = 1  # bump when the layout changes; a file of another version is refused, not guessed at


def save_params(path: str | os.PathLike, params: Params, *, metadata: dict | None = None) -> None:
    """Write `params` (any namespace and device; copied to the host) to `path` as .npz, atomically.

    Parameters
    ----------
    path : file to write (replaced whole; nothing half-written is left on failure).
    params : moonxp.Params, W (..., D, H), b (..., H), v (..., H).
    metadata : JSON-serialisable dict stored beside the arrays (see `load_metadata`).

    Raises
    ------
    InvalidInputError, InvalidTypeError
        Bad params or metadata that JSON cannot hold.
    OutputError
        The file cannot be written.
    """
    if not os.fspath(path).strip():
        raise InvalidInputError("path is empty: give save_params a file name")
    validate.arrays(params)
    try:
        text = json.dumps({} if metadata is None else metadata, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidTypeError(f"metadata must be a JSON-serialisable dict ({exc}): use str, numbers, lists, dicts")
    arrays = {name: to_host(a) for name, a in zip("Wbv", params)}
    write_npz(path, {"format": np.array(FORMAT), "version": np.array(VERSION), "metadata": np.array(text), **arrays})


def _check_sizes(name: str) -> None:
    """Refuse a member whose header declares more data than the member holds (before anything is allocated:
    a crafted header can declare terabytes)."""
    with zipfile.ZipFile(name) as archive:
        for info in archive.infolist():
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                    np.lib.format.read_array_header_2_0
                shape, _, dtype = read_header(member)
                if dtype.hasobject:  # refused by np.load(allow_pickle=False), never read
                    continue
                declared = math.prod(shape) * dtype.itemsize
                if member.tell() + declared > info.file_size:
                    raise ValueError(f"{info.filename} declares shape {shape} of {dtype}, {declared} bytes, "
                                     f"but holds {info.file_size - member.tell()}")


def _read(path: str | os.PathLike) -> dict:
    """The arrays of a params file of this version, as host NumPy."""
    name = os.fspath(path)
    try:
        data = np.load(name, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array")
        with data:
            _check_sizes(name)
            contents = {key: data[key] for key in data.files}
    except FileNotFoundError as exc:
        raise InvalidInputError(f"cannot load {name!r}: no such file") from exc
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise InvalidInputError(f"{name!r} is not a readable moonxp params file ({exc}); write one with "
                                f"moonxp.save_params or --save") from exc
    if contents.get("format") is None or contents["format"].shape != () or str(contents["format"]) != FORMAT:
        raise InvalidInputError(f"{name!r} is not a moonxp params file (no {FORMAT!r} tag); write one with "
                                f"moonxp.save_params or --save")
    version = contents.get("version")
    if version is None or version.shape != () or not np.issubdtype(version.dtype, np.integer) or version != VERSION:
        raise InvalidInputError(f"{name!r} is in params format version {version}, this moonxp reads version "
                                f"{VERSION}: load it with the moonxp version that wrote it")
    missing = [key for key in ("W", "b", "v", "metadata") if key not in contents]
    if missing:
        raise InvalidInputError(f"{name!r} is a damaged moonxp params file (no {', '.join(missing)}): save it again")
    return contents


def load_params(path: str | os.PathLike, backend: Any = None) -> Params:
    """Params saved by `save_params`, on the host (NumPy) or moved to `backend` (a `moonxp.Backend`).

    Parameters
    ----------
    path : a file written by `save_params` or ``--save``.
    backend : ``moonxp.resolve(device, backend, dtype)``; None keeps host NumPy in the saved dtype.

    Returns
    -------
    Params with the saved shapes, in the backend's namespace, device and dtype.

    Raises
    ------
    InvalidInputError
        A missing, corrupt or foreign file, or one of another format version (never unpickled).
    """
    contents = _read(path)
    params = Params(contents["W"], contents["b"], contents["v"])
    try:
        validate.arrays(params)
    except MoonxpError as exc:
        raise InvalidInputError(f"{os.fspath(path)!r} holds unusable params ({exc}): save them again") from exc
    return params if backend is None else Params(*(backend.asarray(p) for p in params))


def load_metadata(path: str | os.PathLike) -> dict:
    """The metadata dict saved with the params (``--save`` stores the run's config and final errors).

    Raises
    ------
    InvalidInputError
        The file is not a params file of this version (see `load_params`), or its metadata is not a
        JSON object of finite numbers.
    """
    text = str(_read(path)["metadata"])

    def no_constant(name: str) -> None:
        raise ValueError(f"{name} is not a finite number")
    try:
        metadata = json.loads(text, parse_constant=no_constant)
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else exc
        raise InvalidInputError(f"{os.fspath(path)!r} has damaged metadata ({reason}): save it again") from exc
    if not isinstance(metadata, dict):
        raise InvalidInputError(f"{os.fspath(path)!r} has damaged metadata (a JSON {type(metadata).__name__}, "
                                f"not an object): save it again")
    return metadata
