"""`MoonxpClassifier`: the homework network as a scikit-learn binary classifier, on any Array API namespace.

The homework's network (a D-input, H-unit ReLU layer and a linear readout with
no output bias), its hand-written backprop and full-batch gradient descent, with
defaults for standardised data rather than the homework's 100 points in [-3, 3]:
the logistic loss log(1 + exp(-y t)) (``moonxp.kernels.logistic_*``), a step of
lr = 1 and scikit-learn's stopping rule: stop once the training loss has not
fallen by ``tol`` for more than ``n_iter_no_change`` steps, or after ``max_iter``
steps with a ``ConvergenceWarning``. ``loss="perceptron"`` is the homework's loss
(with ``lr=0.1, max_iter=128``, ``fit`` is ``moonxp.train``, bit for bit).
docs/estimator.md says why and what it measures against ``MLPClassifier``.

The two class labels map to t = -1 (``classes_[0]``) and t = +1 (``classes_[1]``);
the decision function is the network output y. Initial weights follow the
homework's draw generalised to D inputs (`initial_params`).

With ``sklearn.set_config(array_api_dispatch=True)``, ``fit`` trains in the
namespace, on the device and in the floating dtype of ``X`` (PyTorch, CuPy,
array-api-strict, NumPy), found through array-api-compat; labels and weights of
another namespace or device are moved to X's. Only the initial weights (drawn
on the host) are moved in, and one loss value per step is read back. Torch
inputs are detached from any autograd graph first. Without dispatch, inputs
become NumPy arrays (float64, or float32 when given float32), as everywhere in
scikit-learn. Only public scikit-learn APIs are used.

This module imports scikit-learn; ``import moonxp`` does not import it.

Expected failures of ``check_estimator``: none.
"""

from __future__ import annotations

import math
import warnings
from numbers import Integral, Real
from typing import Any

import numpy as np
from array_api_compat import array_namespace, device as device_of, is_array_api_obj, to_device
from sklearn import get_config
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets, type_of_target, unique_labels
from sklearn.utils.validation import check_is_fitted, validate_data

from . import data, kernels
from .arrays import detached, device_context, to_host
from .defaults import HIDDEN
from .engine.executor import compiles, program
from .engine.policy import free_device_memory, policy as policy_for
from .environment import host_memory
from .errors import DivergedError
from .kernels import STEP_TEMPORARIES, Params

__all__ = ["MoonxpClassifier", "initial_params"]

MAX_ITER = 1_000_000  # steps per fit: far beyond convergence on any data this network suits, and a bound on the time
LOSSES = ("log_loss", "perceptron")


def initial_params(inputs: int, hidden: int, random_state: Any) -> Params:
    """W (D, H) ~ N(0, 1/D), b (H,) ~ N(0, 1), v (H,) ~ N(0, 1/H) on the host: `data.initial_params`' draw.

    At D = 2 it is the homework's draw, from ``check_random_state(random_state)``.
    """
    return data.initial_params(check_random_state(random_state), hidden, inputs)


def _step(params: Params, X: Any, T: Any, weights: Any, scale: float, *, xp: Any, loss: str,
          fused: bool) -> tuple[Params, Any]:
    """(params after one descent step of lr = scale * N, the loss summed over the points before it).

    Weights (None: all 1) fold into the perceptron's labels: w max(0, -y t) = max(0, -y w t) for w >= 0.
    """
    if loss == "perceptron":
        e, sums = kernels.error_and_gradient_sums(params, X, T if weights is None else T * weights, xp, fused)
    else:
        e, sums = kernels.logistic_error_and_gradient_sums(params, X, T, weights, xp)
    return kernels.descent(params, sums, scale), e


def _check_interval(name: str, value: Any, kind: type, low: float, high: float | None = None, *,
                    low_open: bool = False) -> None:
    """scikit-learn's rule and wording: a refused value names the parameter and the accepted range."""
    number = (isinstance(value, Integral) if kind is int else isinstance(value, Real)) and not isinstance(value, bool)
    fits = number and math.isfinite(value) and (value > low if low_open else value >= low) and (
        high is None or value <= high)
    if not fits:
        article = "an int" if kind is int else "a float"
        bounds = f"{'(' if low_open else '['}{low}, {'inf)' if high is None else f'{high}]'}"
        raise ValueError(f"The '{name}' parameter of MoonxpClassifier must be {article} in the range {bounds}. "
                         f"Got {value!r} instead.")


def _moved(a: Any, xp: Any, device: Any) -> Any:
    """`a` in namespace `xp` on `device`: within a library by its own transfer, across libraries through the host."""
    if array_namespace(a) is xp:
        return to_device(a, device)
    return xp.asarray(to_host(a), device=device)


def _namespace(X: Any) -> Any:
    """The namespace fit and predict compute in: X's under array API dispatch, else NumPy's (scikit-learn's rule)."""
    if get_config()["array_api_dispatch"] and is_array_api_obj(X):
        return array_namespace(X)
    return array_namespace(np.empty(0))


class MoonxpClassifier(ClassifierMixin, BaseEstimator):
    """Binary classifier: a one-hidden-layer ReLU network trained by moonxp's hand-written backprop.

    Parameters
    ----------
    hidden : int, default=50
        Hidden units H, >= 1.
    loss : {"log_loss", "perceptron"}, default="log_loss"
        "log_loss": log(1 + exp(-y t)); "perceptron": the homework's max(0, -y t).
    lr : float, default=1.0
        Gradient-descent step size, > 0 (suits standardised features).
    max_iter : int, default=1000
        Most full-batch gradient-descent steps per ``fit``, 1 to 1 000 000.
    tol : float, default=1e-4
        A step improves when the training loss falls below the best so far minus ``tol`` (>= 0).
    n_iter_no_change : int, default=20
        ``fit`` stops after more than this many steps without improvement (>= 1).
    warm_start : bool, default=False
        ``fit`` continues from the fitted parameters instead of drawing new ones.
    random_state : int, RandomState instance or None, default=None
        Seeds the initial weights (see `initial_params`).
    compile : bool or None, default=None
        Compile each step (``jax.jit`` / ``torch.compile``); None: where it pays (see `moonxp.train`).

    Attributes
    ----------
    classes_ : array (2,)
        The two class labels; ``classes_[1]`` is the positive class (decision function > 0).
    W_, b_, v_ : arrays (D, H), (H,), (H,)
        The trained parameters, in X's namespace, device and dtype (``params_`` bundles them).
    loss_curve_ : list of float
        The training loss before each step (sample-weighted mean).
    best_loss_ : float
        The lowest value of ``loss_curve_``.
    n_iter_ : int
        Steps taken (summed over ``fit`` calls with ``warm_start`` and over ``partial_fit`` calls).
    n_features_in_ : int
        D, the number of features seen in fit.
    feature_names_in_ : ndarray of str
        Feature names seen in fit, when X had string column names.

    Notes
    -----
    Two classes only: more are refused (``ValueError``), and the estimator is tagged
    ``multi_class=False``. A classifier outputs labels, not features, so
    ``get_feature_names_out`` does not apply. Training that diverges raises
    ``moonxp.DivergedError`` (a ``FloatingPointError``): use a smaller ``lr`` or scale the data.
    """

    def __init__(self, hidden: int = HIDDEN, loss: str = "log_loss", lr: float = 1.0, max_iter: int = 1000,
                 tol: float = 1e-4, n_iter_no_change: int = 20, warm_start: bool = False,
                 random_state: Any = None, compile: bool | None = None):
        self.hidden = hidden
        self.loss = loss
        self.lr = lr
        self.max_iter = max_iter
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.warm_start = warm_start
        self.random_state = random_state
        self.compile = compile

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> MoonxpClassifier:
        """Train on X (n_samples, n_features) and labels y (n_samples,) of exactly two classes.

        Parameters
        ----------
        X : array-like (n_samples, n_features)
        y : array-like (n_samples,)
        sample_weight : array-like (n_samples,), float or None
            Non-negative weights of the points in the loss (None: all 1).

        Returns
        -------
        self

        Raises
        ------
        ValueError
            Bad parameters or input, a number of classes other than two, or a problem too large for memory.
        moonxp.DivergedError
            The loss or the parameters became non-finite.
        """
        self._check_params()
        warm = self.warm_start and hasattr(self, "W_")
        X, y, xp, device = self._inputs(X, y, reset=not warm)
        classes = self._binary_classes(y)
        if warm and not self._same_labels(classes, self.classes_):
            raise ValueError("warm_start can only be used where y has the same classes as in the previous call "
                             "to fit: set warm_start=False to train anew")
        if not warm:
            self.classes_ = classes
        self._train(X, self._signed(y, xp, device, X.dtype), sample_weight, xp, device, self.max_iter, fresh=not warm,
                    stop=True)
        return self

    def partial_fit(self, X: Any, y: Any, classes: Any = None, sample_weight: Any = None) -> MoonxpClassifier:
        """One gradient-descent step on the batch X, y (from the current parameters, or new ones on the first call).

        Parameters
        ----------
        X, y, sample_weight
            As for `fit`; y may hold one class or both.
        classes : array-like (2,), optional
            Both class labels: required on the first call, and if given later, the same.

        Returns
        -------
        self
        """
        self._check_params()
        first = not hasattr(self, "W_")
        if first and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit: the two labels y can take")
        X, y, xp, device = self._inputs(X, y, reset=first)
        if classes is not None:
            given = self._binary_classes(unique_labels(classes if is_array_api_obj(classes) else np.asarray(classes)))
            if not first and not self._same_labels(given, self.classes_):
                raise ValueError(f"classes={list(to_host(given))} differs from the classes of the first call to "
                                 f"partial_fit, {list(to_host(self.classes_))}")
            if first:
                self.classes_ = given
        negative, positive = self._class_labels(y)
        if not bool(array_namespace(y).all((y == negative) | (y == positive))):
            raise ValueError(f"y holds labels outside classes_ = {list(to_host(self.classes_))}: the labels of "
                             f"partial_fit are fixed on its first call")
        self._train(X, self._signed(y, xp, device, X.dtype), sample_weight, xp, device, 1, fresh=first, stop=False)
        return self

    @property
    def params_(self) -> Params:
        """The trained parameters as ``moonxp.Params`` (for ``moonxp.save_params``, ``moonxp.plot``)."""
        check_is_fitted(self)
        return Params(self.W_, self.b_, self.v_)

    def decision_function(self, X: Any) -> Any:
        """Network output y (n_samples,): > 0 predicts ``classes_[1]``. In X's namespace and device, W_'s dtype."""
        check_is_fitted(self)
        self._check_same_namespace(X, "decision_function")
        X = validate_data(self, detached(X), reset=False, dtype=self._dtypes(X))
        xp = array_namespace(X)
        return kernels.forward(self.params_, xp.astype(X, self.W_.dtype), xp=xp)

    @available_if(lambda self: self.loss == "log_loss")
    def predict_proba(self, X: Any) -> Any:
        """Probabilities (n_samples, 2) of ``classes_``: the logistic sigmoid of the network output (log_loss only)."""
        check_is_fitted(self)
        self._check_same_namespace(X, "predict_proba")
        y = self.decision_function(X)
        xp = array_namespace(y)
        positive = xp.exp(-kernels.logistic_terms(y, xp.ones_like(y), xp))  # 1 / (1 + exp(-y)), without overflow
        return xp.stack([1.0 - positive, positive], axis=1)

    def predict(self, X: Any) -> Any:
        """Class labels (n_samples,): ``classes_[1]`` where the network output is > 0, else ``classes_[0]``."""
        check_is_fitted(self)
        self._check_same_namespace(X, "predict")
        output = self.decision_function(X)
        xp, device = array_namespace(output), device_of(output)
        indices = xp.astype(output > 0, xp.int64)
        xp_classes = array_namespace(self.classes_)
        labels = xp_classes.take(self.classes_, _moved(indices, xp_classes, device_of(self.classes_)), axis=0)
        if isinstance(labels, np.ndarray) and not np.issubdtype(labels.dtype, np.number):
            return labels  # string or object labels stay NumPy
        return _moved(labels, xp, device)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        tags.array_api_support = True
        return tags

    # ------------------------------------------------------------ checks

    def _check_params(self) -> None:
        _check_interval("hidden", self.hidden, int, 1)
        if self.loss not in LOSSES:
            raise ValueError(f"The 'loss' parameter of MoonxpClassifier must be a str among {set(LOSSES)}. "
                             f"Got {self.loss!r} instead.")
        _check_interval("lr", self.lr, float, 0, low_open=True)
        _check_interval("max_iter", self.max_iter, int, 1, MAX_ITER)
        _check_interval("tol", self.tol, float, 0)
        _check_interval("n_iter_no_change", self.n_iter_no_change, int, 1)
        for name in ("warm_start", "compile"):
            value = getattr(self, name)
            if not isinstance(value, bool) and not (name == "compile" and value is None):
                kinds = "an instance of 'bool' or None" if name == "compile" else "an instance of 'bool'"
                raise ValueError(f"The '{name}' parameter of MoonxpClassifier must be {kinds}. Got {value!r} instead.")

    def _dtypes(self, X: Any) -> list:
        xp = _namespace(X)
        return [xp.float64, xp.float32]

    def _check_same_namespace(self, X: Any, method: str) -> None:
        """Under dispatch, X must come from fit's namespace and device (scikit-learn's rule and wording)."""
        if not get_config()["array_api_dispatch"]:
            return
        xp, device = array_namespace(self.W_), device_of(self.W_)
        X_xp = array_namespace(X) if is_array_api_obj(X) else array_namespace(np.empty(0))
        X_device = device_of(X) if is_array_api_obj(X) else "cpu"
        if X_xp is not xp or X_device != device:
            raise ValueError(f"Inputs passed to MoonxpClassifier.{method}() must use the same namespace and the "
                             f"same device as those passed to fit(): fit used {xp.__name__} on {device}, "
                             f"{method} got {X_xp.__name__} on {X_device}. Move X there (or refit).")

    def _inputs(self, X: Any, y: Any, reset: bool) -> tuple[Any, Any, Any, Any]:
        """(X, y validated, X's namespace, X's device); X and y detached from any autograd graph."""
        X, y = validate_data(self, detached(X), detached(y), reset=reset, dtype=self._dtypes(X))
        check_classification_targets(y)
        xp = array_namespace(X)
        return X, y, xp, device_of(X)

    @staticmethod
    def _binary_classes(y: Any) -> Any:
        target = type_of_target(y, input_name="y", raise_unknown=True)
        if target != "binary":
            raise ValueError(f"Only binary classification is supported. The type of the target is {target}: "
                             f"MoonxpClassifier needs exactly two classes (wrap it in "
                             f"sklearn.multiclass.OneVsRestClassifier for more)")
        classes = unique_labels(y)
        if classes.shape[0] != 2:
            raise ValueError("MoonxpClassifier needs two classes, but y holds one class only: give samples of "
                             "both classes")
        return classes

    @staticmethod
    def _same_labels(a: Any, b: Any) -> bool:
        """Whether two label arrays are equal: where they live when they share a namespace, else on the host."""
        xp = array_namespace(a)
        if xp is not array_namespace(b):
            return to_host(a).tolist() == to_host(b).tolist()
        return tuple(a.shape) == tuple(b.shape) and bool(xp.all(a == b))

    def _class_labels(self, y: Any) -> tuple[Any, Any]:
        """``classes_[0]``, ``classes_[1]`` comparable with y: y's namespace, or Python values from another one."""
        if array_namespace(self.classes_) is array_namespace(y):
            return self.classes_[0], self.classes_[1]
        negative, positive = to_host(self.classes_).tolist()
        return negative, positive

    def _signed(self, y: Any, xp: Any, device: Any, dtype: Any) -> Any:
        """Labels T = +1 for ``classes_[1]``, -1 for ``classes_[0]``, in X's namespace, device and floating dtype."""
        return xp.astype(_moved(y == self._class_labels(y)[1], xp, device), dtype) * 2.0 - 1.0

    def _weights(self, sample_weight: Any, n: int, xp: Any, device: Any, dtype: Any) -> Any:
        """Weights scaled to sum n (so that sums over points divide by n, as unweighted), or None for all 1."""
        if sample_weight is None:
            return None
        if isinstance(sample_weight, Real) and not isinstance(sample_weight, bool):
            w = xp.full((n,), float(sample_weight), dtype=dtype, device=device)
        else:
            w = detached(sample_weight) if is_array_api_obj(sample_weight) else np.asarray(sample_weight)
            if w.ndim != 1 or w.shape[0] != n:
                raise ValueError(f"sample_weight.shape == {tuple(w.shape)}, expected {(n,)}!")
            w = xp.astype(_moved(w, xp, device), dtype)
        total = xp.sum(w)
        if not bool(xp.all(xp.isfinite(w)) & xp.all(w >= 0)):
            raise ValueError("sample_weight must be finite and >= 0")
        if not bool(total > 0):
            raise ValueError("sample_weight is zero for every sample: give some sample a weight > 0")
        return w * (n / total)

    def _check_size(self, n: int, d: int, itemsize: int, xp: Any, device: Any) -> None:
        """Refuse, before any allocation, a problem whose step would not fit in the device's (or host's) memory."""
        h = self.hidden
        needed = itemsize * (STEP_TEMPORARIES * n * h + n * d + 3 * (d + 2) * h)  # (N, H) temporaries, params x 3
        free = free_device_memory(xp, device)
        available = host_memory() if free is None else free
        if needed > available:
            raise ValueError(f"hidden={h} units x {d} features x {n} samples need about {needed / 2**30:.1f} GiB "
                             f"per step, more than the {available / 2**30:.1f} GiB available: use fewer hidden "
                             f"units or fewer samples")

    # ------------------------------------------------------------ training

    def _train(self, X: Any, T: Any, sample_weight: Any, xp: Any, device: Any, steps: int, *, fresh: bool,
               stop: bool) -> None:
        """`steps` descent steps from new (fresh) or the fitted parameters; with `stop`, scikit-learn's stopping rule."""
        n, d = X.shape
        self._check_size(n, d, xp.finfo(X.dtype).bits // 8, xp, device)
        weights = self._weights(sample_weight, n, xp, device, X.dtype)
        with device_context(xp, device):
            if fresh:
                host = initial_params(d, self.hidden, self.random_state)
                params = Params(*(xp.asarray(p, dtype=X.dtype, device=device) for p in host))
                self.loss_curve_, self.best_loss_, self._no_improvement_count, self.n_iter_ = [], math.inf, 0, 0
            else:
                params = Params(*(xp.astype(p, X.dtype) for p in self.params_))
            if weights is None and self.loss == "log_loss":
                weights = xp.ones((n,), dtype=X.dtype, device=device)
            policy = policy_for(xp, device, X.dtype)
            compiled = compiles(policy, self.compile, steps, n * self.hidden)
            step = program(_step, policy, self.compile, compiled, xp=xp, loss=self.loss)
            scale = self.lr / n
            for _ in range(steps):
                updated, total = step(params, X, T, weights, scale)
                loss = float(total / n)
                if not math.isfinite(loss):
                    raise DivergedError(self.n_iter_, self.lr)
                params = updated
                self.n_iter_ += 1
                self.loss_curve_.append(loss)
                self._no_improvement_count = self._no_improvement_count + 1 if loss > self.best_loss_ - self.tol else 0
                self.best_loss_ = min(self.best_loss_, loss)
                if stop and self._no_improvement_count > self.n_iter_no_change:
                    break
            else:
                if stop:
                    warnings.warn(f"MoonxpClassifier: max_iter={self.max_iter} steps reached and the training loss "
                                  f"still improves by more than tol={self.tol:g}: raise max_iter (or lr)",
                                  ConvergenceWarning, stacklevel=3)
            if not bool(xp.all(xp.stack([xp.all(xp.isfinite(p)) for p in params]))):
                raise DivergedError(self.n_iter_, self.lr)
        self.W_, self.b_, self.v_ = params
