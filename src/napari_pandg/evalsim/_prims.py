"""Shape primitives and random fields of the independent evaluation simulator.

Written for :mod:`napari_pandg.evalsim` only (nothing here is shared with the training
phantom): metaballs (sums of Gaussian kernels, optionally with negative "carving" balls and
an anisotropic metric; separable when the metric is diagonal), rounded convex hulls of random point clouds (half-space distance),
sphere sweeps along centripetal Catmull-Rom paths (union of balls of varying radius, built
by a running minimum in small boxes), star-shaped Fourier contours, spectral (FFT) noise and
a free-form deformation on a coarse cubic B-spline lattice.

All positions are world millimetres in the fine grid's RAS frame (x toward the patient's
right, y anterior, z superior).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.spatial import ConvexHull

LN2 = float(np.log(2.0))


# --------------------------------------------------------------------------- grid
class FineGrid:
    """Axis-aligned isotropic grid: world = origin + index * h (RAS, C order)."""

    def __init__(self, origin: Sequence[float], shape: Sequence[int], h: float) -> None:
        self.origin = np.asarray(origin, dtype=np.float64)
        self.shape = tuple(int(s) for s in shape)
        self.h = float(h)

    @property
    def affine(self) -> np.ndarray:
        a = np.eye(4)
        a[:3, :3] *= self.h
        a[:3, 3] = self.origin
        return a

    def axis(self, d: int) -> np.ndarray:
        return (self.origin[d] + self.h * np.arange(self.shape[d])).astype(np.float32)

    def box(self, lo: Sequence[float], hi: Sequence[float]) -> tuple[slice, slice, slice] | None:
        """Index slices covering the world box [lo, hi] (clipped); ``None`` if empty."""
        sl = []
        for d in range(3):
            a = int(np.floor((lo[d] - self.origin[d]) / self.h))
            b = int(np.ceil((hi[d] - self.origin[d]) / self.h)) + 1
            a, b = max(a, 0), min(b, self.shape[d])
            if b <= a:
                return None
            sl.append(slice(a, b))
        return tuple(sl)  # type: ignore[return-value]

    def coords(self, sl: tuple[slice, slice, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Open-mesh world coordinates (broadcastable) of the voxels in ``sl``."""
        x = self.axis(0)[sl[0]][:, None, None]
        y = self.axis(1)[sl[1]][None, :, None]
        z = self.axis(2)[sl[2]][None, None, :]
        return x, y, z


def box_union(boxes: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    lo = np.min([b[0] for b in boxes], axis=0)
    hi = np.max([b[1] for b in boxes], axis=0)
    return lo, hi


# --------------------------------------------------------------------------- metaballs
def metaball_field(
    grid: FineGrid,
    sl: tuple[slice, slice, slice],
    centers: np.ndarray,
    radii: np.ndarray,
    weights: np.ndarray | None = None,
    metric: np.ndarray | None = None,
) -> np.ndarray:
    """Sum of kernels ``w exp(-ln2 |M (x - c)|^2 / r^2)`` over the box ``sl``.

    A single ball of weight 1 crosses the iso-level 0.5 at distance ``r``; nearby balls merge
    smoothly, negative weights carve. ``metric`` (3x3, world -> shape frame) makes every
    kernel anisotropic in the same way (e.g. a flattened kidney). Each kernel is evaluated
    only in its own sub-box (2.4 r, where it is < 2 %).
    """
    centers = np.atleast_2d(np.asarray(centers, dtype=np.float64))
    radii = np.asarray(radii, dtype=np.float64).ravel()
    weights = np.ones(len(radii)) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    shape = tuple(s.stop - s.start for s in sl)
    out = np.zeros(shape, dtype=np.float32)
    m = np.eye(3) if metric is None else np.asarray(metric, dtype=np.float64)
    # world half-extent of the ellipsoid |M d| <= R along each axis: R * ||row of M^-1||
    minv = np.linalg.inv(m)
    ext = np.sqrt((minv**2).sum(axis=1))
    x0, y0, z0 = (grid.axis(d)[sl[d]] for d in range(3))
    diag = np.allclose(m, np.diag(np.diag(m)))
    md = np.diag(m)
    for c, r, w in zip(centers, radii, weights, strict=True):
        reach = 2.4 * r * ext
        sub = grid.box(c - reach, c + reach)
        if sub is None:
            continue
        loc = []
        for d in range(3):
            a = max(sub[d].start, sl[d].start) - sl[d].start
            b = min(sub[d].stop, sl[d].stop) - sl[d].start
            if b <= a:
                break
            loc.append(slice(a, b))
        if len(loc) < 3:
            continue
        dx = (x0[loc[0]] - c[0])[:, None, None]
        dy = (y0[loc[1]] - c[1])[None, :, None]
        dz = (z0[loc[2]] - c[2])[None, None, :]
        a = np.float32(-LN2 / (r * r))
        if diag:  # separable: product of three 1D kernels
            ex = np.float32(w) * np.exp(a * (md[0] * dx) ** 2)
            ey = np.exp(a * (md[1] * dy) ** 2)
            ez = np.exp(a * (md[2] * dz) ** 2)
            out[loc[0], loc[1], loc[2]] += (ex * ey) * ez
            continue
        else:
            u = m[0, 0] * dx + m[0, 1] * dy + m[0, 2] * dz
            v = m[1, 0] * dx + m[1, 1] * dy + m[1, 2] * dz
            t = m[2, 0] * dx + m[2, 1] * dy + m[2, 2] * dz
            d2 = u * u + v * v + t * t
        out[loc[0], loc[1], loc[2]] += np.float32(w) * np.exp(a * d2)
    return out


def metaball_box(
    centers: np.ndarray, radii: np.ndarray, pad: float = 1.6, metric: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """World box holding every kernel out to ``pad`` radii (in the metric's frame)."""
    centers = np.atleast_2d(centers)
    ext = np.ones(3) if metric is None else np.sqrt((np.linalg.inv(metric) ** 2).sum(axis=1))
    r = np.asarray(radii)[:, None] * pad * ext[None, :]
    return (centers - r).min(axis=0), (centers + r).max(axis=0)


def chain_weights(centers: np.ndarray, radii: np.ndarray, stretch: float = 1.0) -> np.ndarray:
    """Weights that make a chain of overlapping kernels sum to about 1 on its axis, so that the
    0.5 iso-surface lies near ``r`` from the chain (``stretch``: kernel elongation along it)."""
    c = np.atleast_2d(centers)
    if len(c) < 2:
        return np.ones(len(c))
    seg = np.linalg.norm(np.diff(c, axis=0), axis=1)
    step = np.concatenate([[seg[0]], 0.5 * (seg[:-1] + seg[1:]), [seg[-1]]])
    w = step / (np.asarray(radii) * stretch * np.sqrt(np.pi / LN2))
    return np.clip(w, 0.05, 1.0)


def level_for_volume(field: np.ndarray, target_vox: float, allowed: np.ndarray | None = None,
                     lo: float = 0.12, hi: float = 4.0) -> float:
    """Iso-level whose super-level set (within ``allowed``) holds ``target_vox`` voxels."""
    v = field[allowed] if allowed is not None else field.ravel()
    if v.size == 0:
        return 0.5
    if np.count_nonzero(v >= lo) <= target_vox:
        return lo
    for _ in range(28):
        mid = 0.5 * (lo + hi)
        if np.count_nonzero(v >= mid) > target_vox:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


# --------------------------------------------------------------------------- convex hulls
def hull_sdf_2d(points: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside; exact inside, lower bound outside) to the convex hull
    of 2D ``points`` on the broadcast grid ``x, y``."""
    eq = ConvexHull(np.asarray(points, dtype=np.float64)).equations  # (n, 3): a x + b y + c <= 0
    out = None
    for a, b, c in eq:
        v = np.float32(a) * x + np.float32(b) * y + np.float32(c)
        out = v if out is None else np.maximum(out, v)
    return out


def random_hull_points(rng: np.random.Generator, n: int, half: Sequence[float], roughness: float = 0.15) -> np.ndarray:
    """``n`` points on a jittered ellipse of semi-axes ``half`` (2D)."""
    t = np.sort(rng.uniform(0, 2 * np.pi, n))
    rr = 1.0 + roughness * rng.uniform(-1, 1, n)
    return np.stack([half[0] * rr * np.cos(t), half[1] * rr * np.sin(t)], axis=1)


# --------------------------------------------------------------------------- paths / sweeps
def catmull_rom(ctrl: np.ndarray, step: float = 1.0, alpha: float = 0.5) -> np.ndarray:
    """Centripetal Catmull-Rom curve through the control points, resampled every ``step`` mm."""
    p = np.asarray(ctrl, dtype=np.float64)
    if len(p) < 2:
        return p.copy()
    ext = np.vstack([2 * p[0] - p[1], p, 2 * p[-1] - p[-2]])
    pts = []
    for i in range(1, len(ext) - 2):
        p0, p1, p2, p3 = ext[i - 1 : i + 3]
        t0 = 0.0
        t1 = t0 + max(np.linalg.norm(p1 - p0), 1e-6) ** alpha
        t2 = t1 + max(np.linalg.norm(p2 - p1), 1e-6) ** alpha
        t3 = t2 + max(np.linalg.norm(p3 - p2), 1e-6) ** alpha
        n = max(int(np.ceil(np.linalg.norm(p2 - p1) / (step * 0.25))), 2)
        t = np.linspace(t1, t2, n, endpoint=False)[:, None]
        a1 = (t1 - t) / (t1 - t0) * p0 + (t - t0) / (t1 - t0) * p1
        a2 = (t2 - t) / (t2 - t1) * p1 + (t - t1) / (t2 - t1) * p2
        a3 = (t3 - t) / (t3 - t2) * p2 + (t - t2) / (t3 - t2) * p3
        b1 = (t2 - t) / (t2 - t0) * a1 + (t - t0) / (t2 - t0) * a2
        b2 = (t3 - t) / (t3 - t1) * a2 + (t - t1) / (t3 - t1) * a3
        pts.append((t2 - t) / (t2 - t1) * b1 + (t - t1) / (t2 - t1) * b2)
    pts.append(p[-1:])
    dense = np.vstack(pts)
    return resample_polyline(dense, step)


def resample_polyline(pts: np.ndarray, step: float) -> np.ndarray:
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    if s[-1] <= 0:
        return pts[:1].copy()
    n = max(int(np.ceil(s[-1] / step)) + 1, 2)
    si = np.linspace(0.0, s[-1], n)
    return np.stack([np.interp(si, s, pts[:, d]) for d in range(pts.shape[1])], axis=1)


def arclength(pts: np.ndarray) -> np.ndarray:
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    return np.concatenate([[0.0], np.cumsum(seg)])


def sweep_box(path: np.ndarray, radii: np.ndarray, scale: Sequence[float] = (1, 1, 1), pad: float = 1.3):
    r = np.asarray(radii)[:, None] * pad / np.asarray(scale)[None, :]
    return (path - r).min(axis=0), (path + r).max(axis=0)


def sweep_field(
    grid: FineGrid,
    sl: tuple[slice, slice, slice],
    path: np.ndarray,
    radii: np.ndarray,
    scale: Sequence[float] = (1.0, 1.0, 1.0),
    reach: float = 1.3,
    with_param: bool = False,
):
    """Normalised distance ``q = min_k |S (x - p_k)| / r_k`` to a sweep of balls.

    ``q <= 1`` is inside the union of balls of radius ``r_k`` centred on the path samples
    (in the metric scaled by ``S = diag(scale)``: ``scale[2] < 1`` stretches the cross-section
    along z). Values above ``reach`` are not computed (left at ``inf``). With ``with_param``
    also returns the index of the nearest ball (for properties that vary along the path).
    """
    shape = tuple(s.stop - s.start for s in sl)
    q = np.full(shape, np.inf, dtype=np.float32)
    idx = np.full(shape, -1, dtype=np.int32) if with_param else None
    sc = np.asarray(scale, dtype=np.float64)
    x0, y0, z0 = (grid.axis(d)[sl[d]] for d in range(3))
    for k, (p, r) in enumerate(zip(np.asarray(path), np.asarray(radii), strict=True)):
        half = reach * r / sc
        sub = grid.box(p - half, p + half)
        if sub is None:
            continue
        loc = []
        for d in range(3):
            a = max(sub[d].start, sl[d].start) - sl[d].start
            b = min(sub[d].stop, sl[d].stop) - sl[d].start
            if b <= a:
                break
            loc.append(slice(a, b))
        if len(loc) < 3:
            continue
        f = np.float32(1.0 / r)
        dx = ((x0[loc[0]] - p[0]) * np.float32(sc[0] * f))[:, None, None]
        dy = ((y0[loc[1]] - p[1]) * np.float32(sc[1] * f))[None, :, None]
        dz = ((z0[loc[2]] - p[2]) * np.float32(sc[2] * f))[None, None, :]
        d = np.sqrt(dx * dx + dy * dy + dz * dz)
        view = q[loc[0], loc[1], loc[2]]
        better = d < view
        view[better] = d[better]
        if idx is not None:
            idx[loc[0], loc[1], loc[2]][better] = k
    if with_param:
        return q, idx
    return q


# --------------------------------------------------------------------------- contours
def fourier_contour(rng: np.random.Generator, n_harm: int, amp: float, decay: float = 1.3):
    """Random periodic radial modulation ``1 + sum_k a_k cos(k t) + b_k sin(k t)``."""
    k = np.arange(2, 2 + n_harm)
    a = rng.normal(0, amp, n_harm) / k**decay
    b = rng.normal(0, amp, n_harm) / k**decay

    def f(theta: np.ndarray) -> np.ndarray:
        out = np.ones_like(theta, dtype=np.float32)
        for kk, aa, bb in zip(k, a, b, strict=True):
            out += np.float32(aa) * np.cos(kk * theta) + np.float32(bb) * np.sin(kk * theta)
        return out

    return f


# --------------------------------------------------------------------------- noise
def spectral_noise(rng: np.random.Generator, shape: Sequence[int], h: float, corr_mm: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian random field with a Gaussian spectrum of correlation length
    ``corr_mm`` (FFT synthesis; periodic)."""
    shape = tuple(int(max(s, 1)) for s in shape)
    white = rng.standard_normal(shape).astype(np.float32)
    spec = np.fft.rfftn(white)
    ks = [np.fft.fftfreq(s, d=h) for s in shape[:-1]] + [np.fft.rfftfreq(shape[-1], d=h)]
    k2 = np.zeros(spec.shape, dtype=np.float32)
    for d, kk in enumerate(ks):
        sh = [1] * len(shape)
        sh[d] = len(kk)
        k2 = k2 + (kk.astype(np.float32).reshape(sh)) ** 2
    spec *= np.exp(-2.0 * (np.pi * corr_mm) ** 2 * k2 / 4.0)
    out = np.fft.irfftn(spec, s=shape, axes=tuple(range(len(shape)))).astype(np.float32)
    sd = float(out.std())
    return out / sd if sd > 0 else out


def coarse_noise(rng: np.random.Generator, shape: Sequence[int], h: float, corr_mm: float, factor: int = 3) -> np.ndarray:
    """:func:`spectral_noise` drawn ``factor`` x coarser and linearly upsampled (cheap for
    correlation lengths of several voxels)."""
    cs = [max(4, int(np.ceil(s / factor)) + 1) for s in shape]
    return upsample_linear(spectral_noise(rng, cs, h * factor, corr_mm), shape)


def upsample_linear(field: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Separable linear interpolation of a coarse field onto ``shape`` (end-aligned)."""
    out = field.astype(np.float32)
    for d, n in enumerate(shape):
        m = out.shape[d]
        if m == n:
            continue
        pos = np.linspace(0, m - 1, n)
        i0 = np.clip(np.floor(pos).astype(int), 0, max(m - 2, 0))
        w = (pos - i0).astype(np.float32)
        a = np.take(out, i0, axis=d)
        b = np.take(out, np.minimum(i0 + 1, m - 1), axis=d)
        sh = [1] * out.ndim
        sh[d] = n
        w = w.reshape(sh)
        out = a * (1 - w) + b * w
    return out


# --------------------------------------------------------------------------- B-spline FFD
def _bspline3(t: np.ndarray) -> np.ndarray:
    t = np.abs(t)
    out = np.zeros_like(t)
    m1 = t < 1
    m2 = (t >= 1) & (t < 2)
    out[m1] = 2.0 / 3.0 - t[m1] ** 2 + 0.5 * t[m1] ** 3
    out[m2] = (2.0 - t[m2]) ** 3 / 6.0
    return out


def bspline_basis(x: np.ndarray, lo: float, spacing: float, n_ctrl: int) -> np.ndarray:
    """(len(x), n_ctrl) cubic B-spline weights of lattice knots ``lo + (j - 1) * spacing``."""
    u = (np.asarray(x, dtype=np.float64) - lo) / spacing + 1.0
    j = np.arange(n_ctrl)[None, :]
    return _bspline3(u[:, None] - j).astype(np.float32)


class FreeFormDeformation:
    """Smooth displacement field from random displacements on a coarse cubic B-spline lattice."""

    def __init__(self, rng: np.random.Generator, grid: FineGrid, spacing_mm: float, sigma_mm: float) -> None:
        self.grid = grid
        self.spacing = float(spacing_mm)
        ext = np.array(grid.shape) * grid.h
        self.n = [int(np.ceil(e / spacing_mm)) + 3 for e in ext]
        self.coef = rng.normal(0.0, sigma_mm, size=(3, *self.n)).astype(np.float32)
        self.basis = [bspline_basis(grid.axis(d), float(grid.origin[d]), spacing_mm, self.n[d]) for d in range(3)]

    def displacement(self, k0: int, k1: int) -> np.ndarray:
        """(3, nx, ny, k1 - k0) displacement in mm for fine-grid slices k0..k1."""
        bx, by, bz = self.basis
        bz = bz[k0:k1]
        out = np.empty((3, bx.shape[0], by.shape[0], k1 - k0), dtype=np.float32)
        for c in range(3):
            t = np.tensordot(self.coef[c], bz, axes=([2], [1]))  # (Lx, Ly, nz)
            t = np.tensordot(by, t, axes=([1], [1]))  # (ny, Lx, nz)
            out[c] = np.tensordot(bx, t, axes=([1], [1]))  # (nx, ny, nz)
        return out

    def warp(self, arrays: Sequence[np.ndarray], chunk: int = 24) -> list[np.ndarray]:
        """Pull every array through the deformation (nearest neighbour): out(p) = a(p + D(p))."""
        g = self.grid
        nx, ny, nz = g.shape
        outs = [np.empty_like(a) for a in arrays]
        flats = [a.ravel() for a in arrays]
        ii = np.arange(nx, dtype=np.float32)[:, None, None]
        jj = np.arange(ny, dtype=np.float32)[None, :, None]
        for k0 in range(0, nz, chunk):
            k1 = min(nz, k0 + chunk)
            disp = self.displacement(k0, k1) / np.float32(g.h)
            kk = np.arange(k0, k1, dtype=np.float32)[None, None, :]
            si = np.clip(np.rint(ii + disp[0]), 0, nx - 1).astype(np.int64)
            sj = np.clip(np.rint(jj + disp[1]), 0, ny - 1).astype(np.int64)
            sk = np.clip(np.rint(kk + disp[2]), 0, nz - 1).astype(np.int64)
            flat = (si * ny + sj) * nz + sk
            for o, f in zip(outs, flats, strict=True):
                o[:, :, k0:k1] = f[flat]
        return outs


def rotation(rx_deg: float = 0.0, ry_deg: float = 0.0, rz_deg: float = 0.0) -> np.ndarray:
    """Rotation matrix Rz @ Ry @ Rx (degrees)."""
    ax, ay, az = np.deg2rad([rx_deg, ry_deg, rz_deg])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx
