"""Signal model and acquisition of the evaluation simulator (own code path).

For every series the acquisition grid (possibly oblique) is *supersampled*: each acquired
voxel is split into ``s x s`` in-plane points and ``s_z`` points across the slice thickness
(box slice profile, slice gaps left out), every point looks up the tissue class, label and
texture of the fine anatomy (nearest neighbour through the exact affine), and the complex
signal of the points (water + fat with its chemical-shift phasor, fat saturation, B1+, B0
phase) is *block-averaged* in the complex domain. Then, per series: k-space windowing to the
acquired resolution (zero-filled recon), FSE echo-train decay along phase encode,
respiratory ghosts, receive-coil shading, complex Gaussian noise (filtered like the signal),
magnitude (Rician), vendor-like intensity normalisation, scaling and integer storage.
Overlapping slices (thickness > spacing) are built from contiguous one-spacing slabs summed
with box weights. Labels: the most frequent label among the same sample points (over the
voxel and its slice thickness, or its central slab for overlapping slices), so label and
image share partial volume and grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_pandg.evalsim import _prims as P
from napari_pandg.evalsim.anatomy import EvalAnatomy
from napari_pandg.evalsim.scanners import PHASE, Center, Protocol
from napari_pandg.evalsim.tissues import FLOWING, GAMMA_MHZ_T, N_TISSUES, T, TissueProps, fat_phasor

N_LABEL = 32
J_COUPLING = 2.6  # apparent lengthening of fat T2 on (turbo) spin echo trains
_AX = {"R": (0, False), "L": (0, True), "A": (1, False), "P": (1, True), "S": (2, False), "I": (2, True)}


@dataclass
class AcqGrid:
    """Canonical acquisition grid: axes (i, j, k) ~ (R, A, S) of the (possibly tilted) frame."""

    affine: np.ndarray
    shape: tuple[int, int, int]
    thickness: float
    kfrac: tuple[float, float]
    dims: str

    @property
    def spacing(self) -> np.ndarray:
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))


def f32(a: np.ndarray) -> np.ndarray:
    """Round to float32-representable values (what NIfTI's sform stores)."""
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def acquisition_grid(proto: Protocol, center_world: np.ndarray, zoom: float = 1.0) -> AcqGrid:
    nx = max(8, int(round(proto.matrix[0] / zoom)))
    ny = max(8, int(round(proto.matrix[1] / zoom)))
    nz = max(4, int(round(proto.n_slices / zoom)))
    dx = proto.dx * proto.matrix[0] / nx
    dy = proto.dx * proto.matrix[1] / ny
    dz = proto.slice_spacing * proto.n_slices / nz
    rot = P.rotation(*proto.tilt_deg)
    m = rot @ np.diag([dx, dy, dz])
    aff = np.eye(4)
    aff[:3, :3] = m
    aff[:3, 3] = np.asarray(center_world) - m @ ((np.array([nx, ny, nz]) - 1) / 2.0)
    return AcqGrid(f32(aff), (nx, ny, nz), proto.thickness * dz / proto.slice_spacing, proto.kfrac, proto.dims)


def storage_matrix(shape: tuple[int, int, int], axcodes: str) -> tuple[list[int], list[bool], np.ndarray]:
    """For stored axis codes (e.g. ``"IPL"``): the canonical axis of each stored axis, whether
    it is flipped, and the 4x4 matrix taking stored indices to canonical indices."""
    codes = axcodes.upper()
    if len(codes) != 3 or sorted(_AX[c][0] for c in codes) != [0, 1, 2]:
        raise ValueError(f"storage axis codes must name each of R/L, A/P, S/I once, got {axcodes!r}")
    perm, flips = [], []
    m = np.zeros((4, 4))
    m[3, 3] = 1
    for a, c in enumerate(codes):
        ax, flip = _AX[c]
        perm.append(ax)
        flips.append(flip)
        m[ax, a] = -1.0 if flip else 1.0
        if flip:
            m[ax, 3] = shape[ax] - 1
    return perm, flips, m


def to_storage(array: np.ndarray, affine: np.ndarray, axcodes: str) -> tuple[np.ndarray, np.ndarray]:
    """Array and affine in the stored orientation (exact: a permutation / flip of the grid)."""
    perm, flips, m = storage_matrix(array.shape, axcodes)
    out = np.transpose(array, perm)
    for a, fl in enumerate(flips):
        if fl:
            out = np.flip(out, axis=a)
    return np.ascontiguousarray(out), f32(affine @ m)


# --------------------------------------------------------------------------- fields
class SubjectFields:
    """Smooth B1+, B0 and receive-coil fields of one subject at one center (world functions)."""

    def __init__(self, rng: np.random.Generator, anat: EvalAnatomy, center: Center) -> None:
        b = anat.body
        self.a = b["half_width"]
        self.bap = b["half_ap"]
        self.yc = b["center"][1]
        self.zc = float(anat.landmarks["pancreas_centroid"][2])
        self.center = center
        self.g_b1 = rng.normal(0, 1, 4) * np.array([1.0, 0.35, 0.35, 0.25])
        self.g_b1[0] = abs(self.g_b1[0]) + 0.5  # central brightening dominates at 3 T
        self.h_b0 = rng.normal(0, 1, 4) * np.array([1.0, 0.4, 0.6, 0.4])
        xs = np.array([-0.55, 0.0, 0.55]) * self.a
        els = []
        for ye in (b["y_front"] + 15.0, b["y_back"] - 8.0):
            for x in xs:
                for ze in (-65.0, 65.0):
                    els.append((x + rng.normal(0, 12), ye + rng.normal(0, 4), self.zc + ze + rng.normal(0, 10)))
        self.elements = np.array(els)
        self.gains = rng.uniform(0.8, 1.2, len(els))
        self._sens0 = 1.0
        self._sens0 = float(self.sensitivity(np.array([[0.0, self.yc, self.zc]]))[0])

    def _uv(self, w: np.ndarray):
        return w[..., 0] / self.a, (w[..., 1] - self.yc) / self.bap, (w[..., 2] - self.zc) / 100.0

    def b1(self, w: np.ndarray) -> np.ndarray:
        u, v, t = self._uv(w)
        g = self.g_b1
        f = g[0] * (np.exp(-(u * u + v * v) / 0.45) - 0.55) + g[1] * u + g[2] * v + g[3] * t
        return np.clip(1.0 + self.center.b1_amp * f, 0.5, 1.5).astype(np.float32)

    def b0_hz(self, w: np.ndarray) -> np.ndarray:
        u, v, t = self._uv(w)
        h = self.h_b0
        ppm = self.center.b0_ppm * (h[0] * (u * u + v * v) + h[1] * u + h[2] * v + h[3] * t)
        return (ppm * GAMMA_MHZ_T * self.center.field_strength).astype(np.float32)

    def sensitivity(self, w: np.ndarray) -> np.ndarray:
        rho2 = self.center.coil_rho**2
        acc = np.zeros(w.shape[:-1], dtype=np.float32)
        for e, g in zip(self.elements, self.gains, strict=True):
            d2 = ((w - e.astype(np.float32)) ** 2).sum(axis=-1)
            s = np.float32(g) / (1.0 + d2 / np.float32(rho2)) ** 1.5
            acc += s * s
        return (np.sqrt(acc) / np.float32(self._sens0)).astype(np.float32)

    def gfactor(self, w: np.ndarray) -> np.ndarray:
        u, v, _ = self._uv(w)
        return (1.0 + self.center.gfactor * np.exp(-(u * u + v * v) / 0.3)).astype(np.float32)


# --------------------------------------------------------------------------- signal LUTs
def _b1_bins(center: Center) -> np.ndarray:
    half = min(0.5, 1.7 * center.b1_amp + 0.02)
    return np.linspace(1 - half, 1 + half, 21).astype(np.float32)


def signal_lut(props: TissueProps, proto: Protocol, sequence: str, b1_levels: np.ndarray):
    """Water (W) and fat (F) signal amplitudes per B1 level and tissue, arrays (n_b1, n_tissue)
    (float32), and the fat's complex chemical-shift phasor at this echo (1 for spin echo)."""
    phase = PHASE[sequence]
    t1w = props.t1_at(phase)
    t2w = props.t2_at(phase)
    t2sw = props.t2s_at(phase)
    pdw = props.pd * (1 - props.ff)
    pdf = props.pd * props.ff
    flowing = np.zeros(len(props.pd), bool)
    for n in FLOWING:
        flowing[T[n]] = True
    b = b1_levels[:, None].astype(np.float64)
    if proto.kind == "gre":
        a = np.deg2rad(proto.flip) * b
        e1w = np.exp(-proto.tr / t1w)[None, :]
        e1f = np.exp(-proto.tr / props.fat_t1)
        w = pdw[None] * np.sin(a) * (1 - e1w) / (1 - np.cos(a) * e1w) * np.exp(-proto.te / t2sw)[None]
        f = pdf[None] * np.sin(a) * (1 - e1f) / (1 - np.cos(a) * e1f) * np.exp(-proto.te / props.fat_t2s)
        phasor = fat_phasor(proto.te, props.field)
        if proto.dims == "2D":
            w = np.where(flowing[None], w * proto.inflow, w)
    elif proto.kind == "fse":
        rec_w = 1 - np.exp(-proto.tr / t1w) if np.isfinite(proto.tr) else np.ones_like(t1w)
        rec_f = 1 - np.exp(-proto.tr / props.fat_t1) if np.isfinite(proto.tr) else 1.0
        refoc = np.sin(np.pi / 2 * np.clip(b, 0, 2)) ** 2.5
        w = pdw[None] * rec_w[None] * np.exp(-proto.te / t2w)[None] * refoc
        f = pdf[None] * rec_f * np.exp(-proto.te / (props.fat_t2 * J_COUPLING)) * refoc
        w = np.where(flowing[None], w * proto.flow_void, w)
        phasor = 1.0 + 0j
    else:
        raise ValueError(f"unknown sequence kind {proto.kind!r}")
    w = np.broadcast_to(w, (len(b1_levels), len(props.pd)))
    f = np.broadcast_to(f, (len(b1_levels), len(props.pd)))
    return w.astype(np.float32), f.astype(np.float32), complex(phasor)


def reference_signal(props: TissueProps, proto: Protocol, sequence: str, tissue: str = "liver") -> float:
    w, f, c = signal_lut(props, proto, sequence, np.array([1.0], np.float32))
    i = T[tissue]
    return float(abs(w[0, i] + (1 - proto.fat_sat) * f[0, i] * c))


# --------------------------------------------------------------------------- sampling
def _subsamples(grid: AcqGrid, h: float, thickness: float) -> tuple[int, int, np.ndarray, np.ndarray]:
    sp = grid.spacing
    s_xy = int(np.clip(round(min(sp[0], sp[1]) / h), 1, 3))
    s_z = int(np.clip(np.ceil(thickness / h), 1, 8))
    off_xy = (np.arange(s_xy) + 0.5) / s_xy - 0.5
    off_z = ((np.arange(s_z) + 0.5) / s_z - 0.5) * thickness / sp[2]
    return s_xy, s_z, off_xy, off_z


def thick_slice_weights(q: float) -> np.ndarray:
    """Weights of contiguous slabs (width 1, centred on integers) that make up a box slice of
    width ``q`` slabs centred on slab 0 (overlapping slices: thickness = q x spacing)."""
    n = int(np.ceil(q / 2 + 0.5))
    j = np.arange(-n, n + 1, dtype=np.float64)
    w = np.clip(np.minimum(j + 0.5, q / 2) - np.maximum(j - 0.5, -q / 2), 0, None) / q
    return w[w > 0]


def _thicken(img: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Convolve along slices with ``w`` (odd length), renormalised at the stack ends."""
    h = len(w) // 2
    out = np.zeros_like(img)
    norm = np.zeros(img.shape[2], np.float32)
    nz = img.shape[2]
    for o, wt in zip(range(-h, h + 1), w, strict=True):
        lo, hi = max(0, -o), min(nz, nz - o)
        out[:, :, lo:hi] += np.float32(wt) * img[:, :, lo + o : hi + o]
        norm[lo:hi] += wt
    return out / norm[None, None, :]


def render_group(
    anat: EvalAnatomy,
    props: TissueProps,
    center: Center,
    series: dict[str, Protocol],
    grid: AcqGrid,
    fields: SubjectFields,
    rngs: dict[str, np.random.Generator],
    ref: dict[str, tuple[float, float]],
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Images (canonical orientation, float32) of the series sharing ``grid``, and the label map.

    ``ref[seq] = (noise reference signal, gain reference signal)``.
    """
    g = anat.grid
    nx, ny, nz = grid.shape
    # overlapping slices (thickness >= 1.5 x spacing): sample contiguous slabs one spacing
    # thick, then sum neighbouring slabs with box weights (exact for a box profile)
    q = grid.thickness / grid.spacing[2]
    thick_w = thick_slice_weights(q) if q >= 1.5 else None
    s_xy, s_z, off_xy, off_z = _subsamples(grid, g.h, grid.spacing[2] if thick_w is not None else grid.thickness)
    n_sub = s_xy * s_xy * s_z
    # fine-grid fractional index of acquisition index (i, j, k): M @ ijk + m
    m = (grid.affine[:3, :3] / g.h).astype(np.float32)
    t = ((grid.affine[:3, 3] - g.origin) / g.h).astype(np.float32)
    ii = np.arange(nx, dtype=np.float32)[:, None] + off_xy[None, :].astype(np.float32)  # (nx, s)
    jj = np.arange(ny, dtype=np.float32)[:, None] + off_xy[None, :].astype(np.float32)
    fshape = np.array(g.shape)
    lab_flat, tis_flat, tex_flat = anat.label.ravel(), anat.tissue.ravel(), anat.texture.ravel()
    b1_levels = _b1_bins(center)
    n_t = N_TISSUES
    luts = {}
    for s, p in series.items():
        wl, fl, ph = signal_lut(props, p, s, b1_levels)
        luts[s] = (wl.ravel(), fl.ravel(), np.complex64(ph))
    b1_map = smooth_map(fields.b1, grid)
    bidx_map = np.clip(np.rint((b1_map - b1_levels[0]) / (b1_levels[1] - b1_levels[0])), 0, len(b1_levels) - 1)
    bidx_map = bidx_map.astype(np.int32) * np.int32(n_t)
    del b1_map
    df_map = smooth_map(fields.b0_hz, grid)
    out = {s: np.zeros(grid.shape, np.complex64) for s in series}
    label = np.zeros(grid.shape, np.uint8)
    per_slice = nx * ny * n_sub
    chunk = max(1, int(3_000_000 // per_slice))
    for k0 in range(0, nz, chunk):
        k1 = min(nz, k0 + chunk)
        nkc = k1 - k0
        kk = np.arange(k0, k1, dtype=np.float32)[:, None] + off_z[None, :].astype(np.float32)  # (nkc, sz)
        flat = None
        for c in range(3):
            terms = [(m[c, 0] * ii)[:, None, None, :, None, None], (m[c, 1] * jj)[None, :, None, None, :, None],
                     (m[c, 2] * kk)[None, None, :, None, None, :]]  # fmt: skip
            used = [d for d in range(3) if abs(m[c, d]) > 1e-9]
            if len(used) == 1:  # axis-aligned component: index along one acquisition axis only
                v = terms[used[0]] + t[c]
            else:
                v = terms[0] + terms[1] + terms[2] + t[c]
            idx = np.clip(np.rint(v), 0, fshape[c] - 1).astype(np.int64)
            flat = idx if flat is None else flat * int(fshape[c]) + idx
        flat = np.broadcast_to(flat, (nx, ny, nkc, s_xy, s_xy, s_z))
        flat = flat.reshape(nx * ny * nkc, n_sub)
        tis = tis_flat[flat]
        lab = lab_flat[flat]
        tex = tex_flat[flat].astype(np.float32)
        del flat
        sl = (slice(None), slice(None), slice(k0, k1))
        lut_idx = tis.astype(np.int32) + bidx_map[sl].reshape(-1, 1)
        df = df_map[sl]
        for s, p in series.items():
            wl, fl, ph = luts[s]
            if n_sub == 1:
                wsum = wl[lut_idx[:, 0]] * tex[:, 0]
                fsum = fl[lut_idx[:, 0]] * tex[:, 0]
            else:
                wsum = np.einsum("ij,ij->i", wl[lut_idx], tex)
                fsum = np.einsum("ij,ij->i", fl[lut_idx], tex)
            if p.fat_sat > 0:
                eta = p.fat_sat * (np.exp(-((df / p.fat_sat_bw_hz) ** 2)) if p.fat_sat_bw_hz > 0 else 1.0)
                fsum *= (1 - eta).astype(np.float32).ravel()
            vox = ((wsum + ph * fsum) * np.float32(1.0 / n_sub)).astype(np.complex64).reshape(nx, ny, nkc)
            if p.kind == "gre":
                vox *= np.exp(2j * np.pi * df * np.float32(p.te * 1e-3)).astype(np.complex64)
            out[s][sl] = vox
        label[sl] = _majority(lab).reshape(nx, ny, nkc)
    if thick_w is not None:
        for key in out:
            out[key] = _thicken(out[key], thick_w)
    # ------------------------------------------------------------------ per series acquisition
    sens = smooth_map(fields.sensitivity, grid)
    gmap = smooth_map(fields.gfactor, grid)
    norm = (np.maximum(sens, 0.05) ** np.float32(-center.normalize)).astype(np.float32) if center.normalize > 0 else None
    images = {}
    for s, p in series.items():
        rng = rngs[s]
        img = out.pop(s)
        img *= sens
        if p.ghost > 0:
            n_g = int(rng.integers(3, 6))
            shift = ny // n_g
            ph = np.exp(1j * rng.uniform(0, 2 * np.pi)).astype(np.complex64)
            img = img + np.complex64(p.ghost) * ph * (np.roll(img, shift, axis=1) + np.roll(img, -shift, axis=1))
        s_noise, s_gain = ref[s]
        sigma = s_noise / p.snr
        win = _kspace_window(grid, p)
        noise = rng.standard_normal((*img.shape, 2), dtype=np.float32).view(np.complex64)[..., 0]
        noise *= gmap * np.float32(sigma / np.sqrt(np.mean(win**2)) / np.sqrt(2.0))
        img += noise
        del noise
        img = _apply_kwindow(img, win)
        mag = np.abs(img)
        if norm is not None:
            mag *= norm
        mag *= np.float32(center.scale / s_gain)
        if center.integer:
            mag = np.rint(mag)
        mag = np.clip(mag, 0, center.storage_max).astype(np.float32)
        images[s] = mag
    return images, label


def _majority(lab: np.ndarray) -> np.ndarray:
    """Most frequent value per row of (n_voxels, n_samples) uint8 labels (ties: lowest id)."""
    first = lab[:, 0]
    if lab.shape[1] == 1:
        return first.copy()
    mixed = np.flatnonzero((lab != first[:, None]).any(axis=1))
    out = first.copy()
    if len(mixed):
        sub = lab[mixed].astype(np.int64)
        base = (np.arange(len(mixed), dtype=np.int64) * N_LABEL)[:, None]
        counts = np.bincount((base + sub).ravel(), minlength=len(mixed) * N_LABEL).reshape(-1, N_LABEL)
        out[mixed] = counts.argmax(axis=1).astype(np.uint8)
    return out


def smooth_map(func, grid: AcqGrid, step: float = 12.0) -> np.ndarray:
    """A smooth world function evaluated every ~``step`` mm on ``grid`` and linearly
    interpolated to every voxel (float32, grid shape)."""
    n = np.array(grid.shape)
    sp = grid.spacing
    m = np.maximum(2, np.ceil(n * sp / step).astype(int) + 1)
    m = np.minimum(m, n)
    axes = [np.linspace(0, n[d] - 1, m[d]) for d in range(3)]
    a = grid.affine
    i, j, k = axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]
    w = np.stack([a[r, 0] * i + a[r, 1] * j + a[r, 2] * k + a[r, 3] for r in range(3)], axis=-1)
    coarse = np.asarray(func(w.astype(np.float32)), dtype=np.float32)
    return P.upsample_linear(coarse, grid.shape)


def _kspace_window(grid: AcqGrid, p: Protocol) -> np.ndarray:
    """(nx, ny) k-space weights: acquired fraction with raised-cosine edges, times the FSE
    echo-train decay along phase encode (AP = axis 1)."""
    nx, ny, _ = grid.shape
    ws = []
    for n, frac, ax in ((nx, grid.kfrac[0], 0), (ny, grid.kfrac[1], 1)):
        k = np.abs(np.fft.fftfreq(n)) * 2  # 0 .. 1 (Nyquist)
        edge = max(p.apodize * frac, 1e-3)
        w = np.clip((frac - k) / edge, 0, 1)
        w = 0.5 - 0.5 * np.cos(np.pi * w)
        if ax == 1 and p.echo_blur > 0:
            w = w * np.exp(-p.echo_blur * np.clip(k / frac, 0, 1))
        ws.append(w.astype(np.float32))
    return ws[0][:, None] * ws[1][None, :]


def _apply_kwindow(img: np.ndarray, win: np.ndarray) -> np.ndarray:
    from scipy import fft

    out = np.empty_like(img)
    step = 8
    for k0 in range(0, img.shape[2], step):
        ks = fft.fft2(img[:, :, k0 : k0 + step], axes=(0, 1))
        ks *= win[:, :, None]
        out[:, :, k0 : k0 + step] = fft.ifft2(ks, axes=(0, 1))
    return out
