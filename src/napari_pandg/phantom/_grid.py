"""Separable grid operators: interpolation / PSF matrices, smooth noise, curves."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy import ndimage as ndi
from scipy.interpolate import CubicSpline
from scipy.special import erf


def interp_matrix(x_from: np.ndarray, x_to: np.ndarray) -> np.ndarray:
    """Linear interpolation weights (len(x_to), len(x_from)); clamps outside the range."""
    x_from = np.asarray(x_from, np.float64)
    n = len(x_from)
    h = (x_from[-1] - x_from[0]) / max(n - 1, 1)
    f = np.clip((np.asarray(x_to, np.float64) - x_from[0]) / h, 0, n - 1)
    i0 = np.minimum(np.floor(f).astype(int), n - 2 if n > 1 else 0)
    w = f - i0
    m = np.zeros((len(x_to), n), np.float32)
    rows = np.arange(len(x_to))
    m[rows, i0] += (1 - w).astype(np.float32)
    if n > 1:
        m[rows, i0 + 1] += w.astype(np.float32)
    return m


def psf_matrix(x_fine: np.ndarray, x_acq: np.ndarray, kind: str, width: float,
               motion: float = 0.0) -> np.ndarray:
    """Weights (len(x_acq), len(x_fine)) mapping a fine-grid signal to acquisition samples.

    kind ``"box"``: exact overlap of each fine voxel with a box of ``width`` (partial volume).
    kind ``"sinc"``: k-space truncation to resolution ``width`` (Lanczos-3 windowed sinc, so it
    rings mildly like a filtered reconstruction). kind ``"slice"``: box of FWHM ``width`` with
    Gaussian edges (slice profile). ``motion`` (mm) convolves with a uniform displacement
    (respiratory blur along that axis). Rows are normalised as for an infinite fine grid, so
    samples near or beyond the fine-grid edge see air outside.
    """
    xf = np.asarray(x_fine, np.float64)
    h = xf[1] - xf[0]
    xa = np.asarray(x_acq, np.float64)[:, None]
    shifts = [0.0] if motion <= 0 else list(np.linspace(0.0, motion, 5) - motion / 2)
    total = np.zeros((xa.shape[0], len(xf)))
    for sh in shifts:
        d = xf[None, :] - xa - sh
        if kind == "box":
            lo = np.maximum(d - h / 2, -width / 2)
            hi = np.minimum(d + h / 2, width / 2)
            w = np.clip(hi - lo, 0, None) / width
        elif kind == "sinc":
            u = d / width
            w = np.sinc(u) * np.sinc(u / 3.0) * (np.abs(u) < 3.0)
        elif kind == "slice":
            s = 0.12 * width + 0.25 * h
            w = 0.5 * (erf((d + width / 2) / (np.sqrt(2) * s)) - erf((d - width / 2) / (np.sqrt(2) * s)))
        else:
            raise ValueError(kind)
        if kind != "box":
            # normalisation for an infinite fine grid with the same phase
            off = (xa[:, 0] - xf[0] + sh) / h
            frac = off - np.floor(off)
            k = np.arange(-int(4 * width / h) - 3, int(4 * width / h) + 4)
            dd = (k[None, :] - frac[:, None]) * h
            if kind == "sinc":
                uu = dd / width
                ww = np.sinc(uu) * np.sinc(uu / 3.0) * (np.abs(uu) < 3.0)
            else:
                ww = 0.5 * (erf((dd + width / 2) / (np.sqrt(2) * s)) - erf((dd - width / 2) / (np.sqrt(2) * s)))
            w = w / ww.sum(axis=1, keepdims=True)
        total += w
    total /= len(shifts)
    total[np.abs(total) < 1e-5] = 0.0
    return total.astype(np.float32)


def apply_separable(arr: np.ndarray, mats: list) -> np.ndarray:
    """Apply one (banded) matrix per axis (None = identity), most reducing axis first.

    Matrices are applied as CSR sparse products on the axis moved to the front, which is far
    cheaper than dense BLAS for PSF / interpolation kernels of a few taps.
    """
    if np.iscomplexobj(arr):
        re = apply_separable(np.ascontiguousarray(arr.real), mats)
        im = apply_separable(np.ascontiguousarray(arr.imag), mats)
        out = np.empty(re.shape, np.complex64)
        out.real, out.imag = re, im
        return out
    order = sorted(
        range(3),
        key=lambda ax: (mats[ax].shape[0] / mats[ax].shape[1]) if mats[ax] is not None else 9e9,
    )
    out = np.asarray(arr, dtype=np.float32)
    for ax in order:
        m = mats[ax]
        if m is None:
            continue
        if not sp.issparse(m):
            m = sp.csr_matrix(np.asarray(m, dtype=np.float32))
        moved = np.ascontiguousarray(np.moveaxis(out, ax, 0))
        s = moved.shape
        res = (m @ moved.reshape(s[0], -1)).astype(np.float32, copy=False)
        out = np.moveaxis(res.reshape((m.shape[0],) + s[1:]), 0, ax)
    return np.ascontiguousarray(out)


def smooth_noise(rng: np.random.Generator, axes: tuple[np.ndarray, np.ndarray, np.ndarray],
                 scale_mm: float) -> np.ndarray:
    """Unit-variance smooth Gaussian noise with correlation length ~scale_mm on the fine grid."""
    step = scale_mm / 2.0
    coarse_axes = [np.arange(a[0] - step, a[-1] + 2 * step, step) for a in axes]
    g = rng.standard_normal(tuple(len(c) for c in coarse_axes)).astype(np.float32)
    g = ndi.gaussian_filter(g, 1.0, mode="wrap")
    g /= g.std() + 1e-8
    mats = [interp_matrix(c, a) for c, a in zip(coarse_axes, axes, strict=True)]
    return apply_separable(g, mats)


def curve(ctrl, step: float = 0.6):
    """Cubic spline through control points, sampled every ~step mm.

    Returns (points (n,3), unit tangents (n,3), chord parameter t in [0,1] (n,), knots (m,)).
    """
    ctrl = np.asarray(ctrl, np.float64)
    keep = np.r_[True, np.linalg.norm(np.diff(ctrl, axis=0), axis=1) > 1e-3]
    ctrl = ctrl[keep]
    if len(ctrl) < 2:
        ctrl = np.vstack([ctrl[0], ctrl[0] + [0.0, 0.0, 1e-2]])
    d = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(ctrl, axis=0), axis=1))]
    if len(ctrl) == 2:
        t = np.linspace(0, d[-1], max(int(d[-1] / step), 2))
        p = ctrl[0] + (ctrl[1] - ctrl[0]) * (t / d[-1])[:, None]
    else:
        cs = CubicSpline(d, ctrl, bc_type="natural")
        t = np.linspace(0, d[-1], max(int(1.3 * d[-1] / step), 2))
        p = cs(t)
    tan = np.gradient(p, axis=0)
    tan /= np.linalg.norm(tan, axis=1, keepdims=True) + 1e-12
    return p, tan, t / d[-1], d / d[-1]
