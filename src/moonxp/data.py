"""The homework's data and initial parameters, drawn on the host with NumPy.

The homework seeds NumPy's legacy generator, calls scikit-learn's ``make_moons``
(which shuffles with that generator) and then draws W, b, v in that order;
`moons` is that draw in NumPy alone, so drawing the data loads no scikit-learn. A private
``RandomState(seed)`` gives the same stream without touching NumPy's global
state, so ``make_problem(0)`` is the homework's starting point digit for digit.
"""

from __future__ import annotations

import numpy as np

from . import validate
from .defaults import HIDDEN, NOISE, SAMPLES, SEED
from .errors import InvalidInputError
from .kernels import Params


def make_problem(seed: int = SEED, n_samples: int = SAMPLES, noise: float = NOISE,
                 hidden: int = HIDDEN) -> tuple[np.ndarray, np.ndarray, Params]:
    """Moons X (N, 2) scaled to X*2-1, labels T (N,) in {-1, +1}, and initial params (H = hidden).

    Host NumPy float64, drawn in the homework's order from the legacy generator seeded with `seed`.

    Parameters
    ----------
    seed : int
        0 to 2**32 - 1 (NumPy's legacy seeds); 0 is the homework's.
    n_samples : int
        Points N >= 1.
    noise : float
        make_moons' noise, finite and >= 0.
    hidden : int
        Hidden units H >= 1.

    Returns
    -------
    X : ndarray
        (N, 2).
    T : ndarray
        (N,), -1.0 or +1.0.
    params : Params
        W (2, H), b (H,), v (H,).

    Raises
    ------
    InvalidInputError
        An argument out of range.
    """
    validate.problem(seed, n_samples, noise, hidden)
    rng = np.random.RandomState(seed)
    X, T = moons(rng, n_samples, noise)
    return X, T, initial_params(rng, hidden)


def moons(rng: np.random.RandomState, n_samples: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Moons X (N, 2) scaled to X*2-1 and labels T (N,) in {-1, +1}, drawn from `rng`.

    The points and the draws are scikit-learn's ``make_moons(n_samples, noise=noise or None,
    random_state=rng)``, bit for bit (tests compare them), in NumPy alone: the upper half circle
    (N // 2 points, label 0) then the lower one shifted to (1, -0.5) (the rest, label 1), evenly
    spaced in angle; one shuffle of the indices; then, with noise, 2N normals in row order.
    Without noise nothing more is drawn (noise 0 would draw 2N zero-scale normals and shift W, b, v).
    """
    upper = n_samples // 2
    angle_upper, angle_lower = np.linspace(0, np.pi, upper), np.linspace(0, np.pi, n_samples - upper)
    X = np.empty((n_samples, 2))
    X[:upper, 0], X[:upper, 1] = np.cos(angle_upper), np.sin(angle_upper)
    X[upper:, 0], X[upper:, 1] = 1 - np.cos(angle_lower), 1 - np.sin(angle_lower) - 0.5
    order = np.arange(n_samples)
    rng.shuffle(order)
    X, labels = X[order], (order >= upper).astype(np.float64)
    if noise:
        X += rng.normal(scale=noise, size=X.shape)
    with np.errstate(over="ignore"):  # huge noise overflows to inf here; the caller reports it (job.start)
        return X * 2 - 1, labels * 2.0 - 1


def initial_scales(hidden: int, inputs: int = 2) -> tuple[float, float, float]:
    """Standard deviations of the initial W, b, v: 1/sqrt(D), 1 and 1/sqrt(H).

    W ~ N(0, 1/D): at the homework's D = 2 inputs its N(0, 1/2); for any D, standardised inputs
    give preactivations of the same scale.
    """
    return 1 / float(inputs)**0.5, 1.0, 1 / hidden**0.5


def initial_params(rng: np.random.RandomState, hidden: int, inputs: int = 2) -> Params:
    """Initial W (D, H), b (H,), v (H,) drawn from `rng` in the homework's order and `initial_scales`."""
    w, b, v = initial_scales(hidden, inputs)
    return Params(rng.normal(0, w, [inputs, hidden]), rng.normal(0, b, [hidden]), rng.normal(0, v, [hidden]))


def make_ensemble(seed: int = SEED, networks: int = 1, n_samples: int = SAMPLES, noise: float = NOISE,
                  hidden: int = HIDDEN) -> tuple[np.ndarray, np.ndarray, Params]:
    """The data of `seed` and B = `networks` initial params stacked (B, ...): network k is seed + k's.

    Network k is bit for bit `make_problem(seed + k)`'s network, without running make_moons B
    times: one generator is reseeded per network and consumes what make_moons consumes (a
    shuffle of N indices, then 2N normals when there is noise), then the 4H normals of W, b, v
    in one call. The legacy normal is loc + scale * gauss, computed here in the same order.
    """
    validate.problem(seed, n_samples, noise, hidden, networks)
    X, T, first = make_problem(seed, n_samples, noise, hidden)
    rng = np.random.RandomState()
    indices = np.empty(n_samples, dtype=np.intp)  # a shuffle consumes the stream by length only
    gauss = np.zeros((networks, 4 * hidden))  # row 0 is replaced by make_problem(seed)'s network below
    for k in range(1, networks):
        rng.seed(seed + k)
        rng.shuffle(indices)
        if noise:
            rng.standard_normal(2 * n_samples)
        gauss[k] = rng.standard_normal(4 * hidden)
    w_scale, b_scale, v_scale = initial_scales(hidden)
    W = 0.0 + w_scale * gauss[:, :2 * hidden].reshape(networks, 2, hidden)
    b = 0.0 + b_scale * gauss[:, 2 * hidden:3 * hidden]
    v = 0.0 + v_scale * gauss[:, 3 * hidden:]
    W[0], b[0], v[0] = first
    return X, T, Params(W, b, v)


def signed_labels(labels: np.ndarray) -> np.ndarray:
    """Convert {0, 1} class labels to the loss's {-1.0, +1.0}."""
    labels = np.asarray(labels)
    if not np.isin(labels, (0, 1)).all():
        raise InvalidInputError("signed_labels expects labels in {0, 1}; labels already in {-1, +1} need no conversion")
    return labels * 2.0 - 1


def snapshot_iterations(iters: int) -> list[int]:
    """The homework's snapshot iterations 0, 1, 3, 7, ... (2**k - 1) that come before update `iters`."""
    end = max(validate.count("iters", iters, 0), 1)  # with no update at all, the initial state is still shown
    return [2**k - 1 for k in range(end.bit_length() + 1) if 2**k - 1 < end]
