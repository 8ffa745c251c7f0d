"""Polynomial windows over sliding windows (after Zell et al., ECCV 2020).

Kinematics ``q`` and ground-reaction forces/moments are represented by cubic polynomials and
joint torques by linear polynomials, each fitted by least squares over overlapping windows of
``length`` frames that start every ``stride`` frames (defaults: 15 frames = 0.5 s at 30 FPS,
stride 5 frames, i.e. 2/3 overlap).

Within a window the polynomial variable is normalized time ``u = k / (L - 1)`` in ``[0, 1]``
(``k = 0 .. L-1`` the frame within the window), and coefficients are stored in increasing power
order ``c_0 .. c_d`` so that ``x(u) = sum_j c_j u**j`` (same order as
``numpy.polynomial.polynomial``). Coefficients carry the unit of the fitted signal.

All windows are fitted at once: the pseudo-inverse of the ``(L, d+1)`` Vandermonde matrix is
computed once and applied to the gathered windows (fancy-index gather) with a single matrix
product per block of windows (blocks bound memory; there is no loop per window or per frame).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINEMATICS_DEGREE = 3
"""Polynomial degree for kinematics q (joint angles, root position): cubic."""

GRF_DEGREE = 3
"""Polynomial degree for ground-reaction forces and moments: cubic."""

TORQUE_DEGREE = 1
"""Polynomial degree for joint torques: linear."""

_MAX_DEGREE = max(KINEMATICS_DEGREE, GRF_DEGREE, TORQUE_DEGREE)

# Float64 elements gathered per block (1 MiB): bounds memory and keeps each block in cache.
_BLOCK_ELEMENTS = 1 << 17


@dataclass(frozen=True)
class WindowConfig:
    """Sliding-window layout, in frames at the canonical rate (30 FPS).

    Attributes:
        length: frames per window (default 15 = 0.5 s); must be ≥ the highest degree + 1 (4)
            so that every polynomial of the pipeline is determined.
        stride: frames between consecutive window starts (default 5 → 2/3 overlap); ≥ 1.
    """

    length: int = 15
    stride: int = 5

    def __post_init__(self) -> None:
        if int(self.length) != self.length or self.length < _MAX_DEGREE + 1:
            raise ValueError(
                f"window length must be an integer ≥ {_MAX_DEGREE + 1} (highest polynomial "
                f"degree {_MAX_DEGREE} + 1), got {self.length!r}"
            )
        if int(self.stride) != self.stride or self.stride < 1:
            raise ValueError(f"window stride must be an integer ≥ 1, got {self.stride!r}")

    def starts(self, n_frames: int) -> np.ndarray:
        """(W,) window starts for a sequence of ``n_frames`` frames (see ``window_starts``)."""
        return window_starts(n_frames, self.length, self.stride)


def window_starts(n_frames: int, length: int, stride: int) -> np.ndarray:
    """(W,) int64 start frames of all complete windows of ``length`` frames every ``stride`` frames.

    Starts are ``0, stride, 2*stride, ...`` while the window fits. If the last of these windows
    does not reach the final frame (``n_frames - 1``), one more window aligned to the end
    (start ``n_frames - length``) is appended, so every frame is covered by at least one window
    whenever ``n_frames >= length``; that final window may overlap its predecessor by more than
    ``length - stride`` frames. Starts are strictly increasing. Returns 0 windows when
    ``n_frames < length``.
    """
    if length < 1:
        raise ValueError(f"window length must be ≥ 1, got {length!r}")
    if stride < 1:
        raise ValueError(f"window stride must be ≥ 1, got {stride!r}")
    if n_frames < 0:
        raise ValueError(f"n_frames must be ≥ 0, got {n_frames!r}")
    if n_frames < length:
        return np.zeros(0, dtype=np.int64)
    last = n_frames - length
    starts = np.arange(0, last + 1, stride, dtype=np.int64)
    if starts[-1] != last:
        starts = np.append(starts, np.int64(last))
    return starts


def normalized_time(length: int) -> np.ndarray:
    """(L,) float64 normalized time ``u = k / (L - 1)`` in ``[0, 1]`` (``[0.]`` when ``L == 1``)."""
    if length < 1:
        raise ValueError(f"window length must be ≥ 1, got {length!r}")
    if length == 1:
        return np.zeros(1)
    return np.arange(length, dtype=np.float64) / (length - 1)


def vandermonde(length: int, degree: int) -> np.ndarray:
    """(L, degree+1) matrix of ``u**j`` for ``j = 0 .. degree`` (increasing powers)."""
    if degree < 0:
        raise ValueError(f"degree must be ≥ 0, got {degree!r}")
    return np.vander(normalized_time(length), degree + 1, increasing=True)


@dataclass(frozen=True)
class FitResult:
    """Polynomial coefficients of every window.

    Attributes:
        coef: (W, degree+1, ...) float64 coefficients in increasing power of ``u``; the trailing
            dims are those of the input after the frame axis; unit of the signal. NaN for a
            window with any non-finite input sample.
        rmse: (W,) float64 root-mean-square residual over the window's frames and all channels,
            unit of the signal; NaN for a window with any non-finite input sample.
    """

    coef: np.ndarray
    rmse: np.ndarray

    @property
    def degree(self) -> int:
        return int(self.coef.shape[1]) - 1


def fit_windows(x: np.ndarray, starts: np.ndarray, length: int, degree: int) -> FitResult:
    """Least-squares polynomial fit of ``x`` over each window ``x[s : s + length]``.

    Args:
        x: (N, ...) signal, frame axis first (e.g. (N, 24, 3)); any real dtype, fitted in float64.
        starts: (W,) integer window starts, each in ``[0, N - length]``.
        length: frames per window, ≥ ``degree + 1``.
        degree: polynomial degree d (``KINEMATICS_DEGREE``, ``GRF_DEGREE``, ``TORQUE_DEGREE``).

    Returns:
        ``FitResult`` with coef (W, d+1, ...) and rmse (W,). Windows are independent: a NaN
        (or inf) sample makes only the windows that contain it NaN.
    """
    x = np.asarray(x)
    starts = np.asarray(starts)
    if x.ndim < 1:
        raise ValueError("x must have a frame axis")
    if starts.ndim != 1 or (starts.size and not np.issubdtype(starts.dtype, np.integer)):
        raise ValueError("starts must be a 1-D integer array")
    if degree < 0 or length < degree + 1:
        raise ValueError(f"window length {length} too short for degree {degree} (need ≥ degree + 1)")
    n = x.shape[0]
    trailing = x.shape[1:]
    n_win = starts.shape[0]
    if n_win and (starts.min() < 0 or starts.max() > n - length):
        raise ValueError(f"window starts must lie in [0, {n - length}] for {n} frames of length {length}")

    coef = np.empty((n_win, degree + 1) + trailing, dtype=np.float64)
    rmse = np.empty(n_win, dtype=np.float64)
    if n_win == 0:
        return FitResult(coef=coef, rmse=rmse)

    vand = vandermonde(length, degree)                 # (L, P)
    pinv = np.linalg.pinv(vand)                        # (P, L)
    n_ch = int(np.prod(trailing, dtype=np.int64))
    x2 = x.reshape(n, n_ch)
    offsets = np.arange(length)[:, None]
    coef3 = coef.reshape(n_win, degree + 1, n_ch)

    # Windows are gathered frame-major, (L, B*C): the fit is then one GEMM (P, L) @ (L, B*C)
    # with a long inner dimension, which BLAS handles far better than B*C tiny (L,)·(L, P)
    # products. Blocks of ~1 MiB keep the gathered copy and its residual in cache.
    block = max(1, _BLOCK_ELEMENTS // max(1, n_ch * length))
    for lo in range(0, n_win, block):                  # memory blocks, not per window
        hi = min(lo + block, n_win)
        b = hi - lo
        xw = x2[starts[lo:hi][None, :] + offsets].astype(np.float64, copy=False)  # (L, B, C)
        flat = xw.reshape(length, b * n_ch)
        with np.errstate(invalid="ignore", over="ignore"):  # non-finite windows handled below
            c = pinv @ flat                            # (P, B*C) least-squares coefficients
            resid = (flat - vand @ c).reshape(length, b, n_ch)
            r = np.sqrt(np.einsum("kbc,kbc->b", resid, resid) / (length * n_ch))
        c = c.reshape(degree + 1, b, n_ch).transpose(1, 0, 2)  # (B, P, C)
        # A non-finite sample always yields a non-finite residual (NaN/inf propagate through the
        # products and inf - inf = NaN), so this flags exactly the windows to blank out.
        bad = ~np.isfinite(r)
        coef3[lo:hi] = c
        if bad.any():
            coef3[lo:hi][bad] = np.nan
            r[bad] = np.nan
        rmse[lo:hi] = r
    return FitResult(coef=coef, rmse=rmse)


def evaluate_windows(coef: np.ndarray, length: int) -> np.ndarray:
    """(W, L, ...) float64 polynomials evaluated at the window's frames ``u = k / (L - 1)``.

    Args:
        coef: (W, d+1, ...) coefficients in increasing power order (``FitResult.coef``).
        length: frames per window L.
    """
    coef = np.asarray(coef, dtype=np.float64)
    if coef.ndim < 2:
        raise ValueError("coef must have shape (W, degree+1, ...)")
    vand = vandermonde(length, coef.shape[1] - 1)      # (L, P)
    return np.einsum("kp,wp...->wk...", vand, coef, optimize=True)
