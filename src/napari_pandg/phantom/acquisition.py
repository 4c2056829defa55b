"""Signal equations on the fine grid and the acquisition model (PSF, bias, noise, storage).

Order of operations for every sequence (reference §1.1, §1.5):

1. complex signal per fine voxel from the tissue parameters (water and fat components with
   their own relaxation; six-peak fat phasor and B0 phase for GRE; fat suppression
   efficiency eta(x) degraded by off-resonance; transmit B1+ scaling of the flip angle);
2. separable complex PSF + sampling onto the acquisition grid (windowed sinc in-plane at the
   acquired resolution, slice profile through-plane, optional respiratory blur along SI);
   sub-voxel water/fat mixing therefore happens in the complex domain;
3. respiratory ghosts (phase-encode, AP), receive coil sensitivity (sum-of-squares of loop
   coils) with partial intensity normalisation, complex Gaussian noise (optionally
   correlated by interpolation, amplified centrally by a g-factor);
4. magnitude (last), global gain, rounding and clipping to the storage range.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from napari_pandg.phantom import tissues as T
from napari_pandg.phantom._grid import apply_separable, interp_matrix, psf_matrix
from napari_pandg.phantom.anatomy import Anatomy
from napari_pandg.phantom.centers import CenterProfile, SequenceProtocol

_SIGNS = {"RAS": (1, 1, 1), "LPS": (-1, -1, 1), "LAS": (-1, 1, 1), "LPI": (-1, -1, -1)}


# ----------------------------------------------------------------------------- geometry
def acquisition_geometry(center: CenterProfile, proto: SequenceProtocol, body: dict,
                         target_shape: tuple[int, int, int] | None = None) -> dict:
    """Axes (world mm of each sample along i, j, k), affine and PSF widths of one sequence."""
    fov = (center.fov_mm[0], center.fov_mm[1], center.slab_mm)
    if target_shape is None:
        shape = (int(round(fov[0] / proto.recon_spacing[0])),
                 int(round(fov[1] / proto.recon_spacing[1])),
                 int(round(fov[2] / proto.slice_spacing)))
    else:
        shape = tuple(int(s) for s in target_shape)
    spacing = tuple(f / n for f, n in zip(fov, shape, strict=True))
    res = (max(proto.acq_res[0], spacing[0]), max(proto.acq_res[1], spacing[1]))
    thick = proto.slice_thickness if spacing[2] <= 1.3 * proto.slice_thickness else spacing[2]
    signs = _SIGNS[center.orientation]
    c = (0.0, 0.5 * (body["y_post"] + body["y_ant"]), 0.0)
    axes = tuple(
        c[d] + signs[d] * (np.arange(shape[d]) - (shape[d] - 1) / 2.0) * spacing[d] for d in range(3)
    )
    aff = np.diag([signs[0] * spacing[0], signs[1] * spacing[1], signs[2] * spacing[2], 1.0])
    aff[:3, 3] = [axes[0][0], axes[1][0], axes[2][0]]
    return dict(shape=shape, spacing=spacing, axes=axes, affine=aff, res=res, thickness=thick)


# ----------------------------------------------------------------------------- fields
def sample_fields(rng: np.random.Generator) -> dict:
    """Per subject-and-center random coefficients of B1+, B0, coil placement."""
    return dict(
        b1=rng.normal(0, 1, 7), b0=rng.normal(0, 1, 7), coil_jitter=rng.normal(0, 1, (32, 3)),
        swap=rng.random(),
    )


def _norm_axes(anat: Anatomy):
    b = anat.body
    u = (anat.axes[0] / b["a"]).astype(np.float32)
    v = ((anat.axes[1] - 0.5 * (b["y_post"] + b["y_ant"])) / (0.5 * (b["y_ant"] - b["y_post"]))).astype(np.float32)
    w = (anat.axes[2] / 100.0).astype(np.float32)
    return u[:, None, None], v[None, :, None], w[None, None, :]


def b1_map(anat: Anatomy, center: CenterProfile, coef: np.ndarray) -> np.ndarray:
    """Smooth transmit field B1+/B1nominal: central dielectric shading + random tilt."""
    u, v, w = _norm_axes(anat)
    c = coef
    r2 = u * u + v * v
    pat = (-1.0 * np.exp(-2.2 * ((u - 0.25 * c[0]) ** 2 + (v - 0.3 * c[1]) ** 2)) + 0.35
           + 0.25 * c[2] * u + 0.2 * c[3] * v + 0.15 * c[4] * u * v + 0.1 * c[5] * w + 0.15 * r2)
    return (1.0 + center.b1_amp * pat).astype(np.float32)


def b0_map(anat: Anatomy, center: CenterProfile, coef: np.ndarray) -> np.ndarray:
    """Off-resonance (Hz): smooth shim residual growing to the periphery + gas/lung terms."""
    u, v, w = _norm_axes(anat)
    c = coef
    smooth = center.b0_hz * (0.6 * (u * u + v * v) * (1 + 0.3 * c[0]) + 0.25 * c[1] * u
                             + 0.25 * c[2] * v + 0.35 * c[3] * w + 0.2 * c[4] * w * w + 0.3 * w * w)
    ppm_hz = T.GAMMA_BAR_MHZ_T * center.field_strength  # Hz per ppm
    return (smooth + 1.2 * ppm_hz * anat.gas_field).astype(np.float32)


def coil_sensitivity(geom: dict, body: dict, center: CenterProfile, jitter: np.ndarray) -> np.ndarray:
    """Sum-of-squares sensitivity of anterior + posterior loop arrays, mean 1 in the body."""
    ax = [a[:: max(1, len(a) // 40)] if len(a) > 40 else a for a in geom["axes"]]
    X, Y, Z = np.meshgrid(*ax, indexing="ij")
    sos = np.zeros(X.shape)
    r0 = 90.0
    k = 0
    for side, y0 in ((1, body["y_ant"] + 25.0), (-1, body["y_post"] - 20.0)):
        for row in range(center.coil_rows):
            for col in range(center.coils_per_row):
                j = jitter[k % len(jitter)]
                k += 1
                cx = (col - (center.coils_per_row - 1) / 2) * 2 * body["a"] / center.coils_per_row + 8 * j[0]
                cz = (row - (center.coil_rows - 1) / 2) * 120.0 + 10 * j[1]
                cy = y0 - side * 0.25 * (cx / body["a"]) ** 2 * 60.0
                d2 = (X - cx) ** 2 + (Y - cy) ** 2 + (Z - cz) ** 2
                sos += (r0**2 / (r0**2 + d2)) ** 3 * (1 + 0.1 * j[2])
    sos = np.sqrt(sos)
    inside = ((X / body["a"]) ** 2 + ((Y - 0.5 * (body["y_post"] + body["y_ant"]))
                                      / (0.5 * (body["y_ant"] - body["y_post"]))) ** 2) < 0.8
    sos /= sos[inside].mean()
    mats = [interp_matrix(a_c, a) if len(a_c) != len(a) else None
            for a_c, a in zip(ax, geom["axes"], strict=True)]
    # axes may be descending (LPS): interp_matrix expects ascending sources
    out = sos.astype(np.float32)
    for d in range(3):
        if mats[d] is None:
            continue
        src, dst = ax[d], geom["axes"][d]
        if src[0] > src[-1]:
            m = interp_matrix(src[::-1], dst)[:, ::-1]
        else:
            m = interp_matrix(src, dst)
        mats[d] = np.ascontiguousarray(m)
    return apply_separable(out, mats)


# ----------------------------------------------------------------------------- signal
def _fat_sat_eta(proto: SequenceProtocol, b0: np.ndarray, field: float) -> np.ndarray | float:
    if proto.fat_sat <= 0:
        return 0.0
    if not proto.fat_sat_b0_sensitive:
        return proto.fat_sat
    tol = 130.0 * field / 1.5  # Hz: off-resonance at which spectral suppression drops to e^-1
    return (proto.fat_sat * np.exp(-((b0 / tol) ** 2))).astype(np.float32)


N_B1_BINS = 96
B1_RANGE = (0.3, 1.7)


def b1_index(anat: Anatomy, b1: np.ndarray) -> np.ndarray:
    """uint16 index tissue * N_B1_BINS + quantised B1 bin (for one-gather signal look-ups)."""
    lo, hi = B1_RANGE
    b = np.clip(np.rint((b1 - lo) / (hi - lo) * (N_B1_BINS - 1)), 0, N_B1_BINS - 1).astype(np.uint16)
    return anat.tissue.astype(np.uint16) * np.uint16(N_B1_BINS) + b


def fine_signal(anat: Anatomy, tp: T.TissueParams, proto: SequenceProtocol, b1: np.ndarray,
                b0: np.ndarray, idx: np.ndarray | None = None) -> np.ndarray:
    """Noise-free complex (GRE) or real (spin-echo) signal on the fine grid.

    Signal equations are evaluated per (tissue, B1 bin) and gathered with one index map.
    """
    if idx is None:
        idx = b1_index(anat, b1)
    fs = tp.field_strength
    pdw = (tp.PD * (1.0 - tp.FF)).astype(np.float64)[:, None]
    pdf = (tp.PD * tp.FF).astype(np.float64)[:, None]
    vessel = np.zeros(T.N_TISSUES)
    vessel[list(T.VESSEL_TISSUES)] = 1.0
    b1c = np.linspace(*B1_RANGE, N_B1_BINS)[None, :]
    eta = _fat_sat_eta(proto, b0, fs)
    if proto.kind == "ssfse":
        tr = proto.tr
        e1w = 0.0 if np.isinf(tr) else np.exp(-tr / tp.T1.astype(np.float64))
        e1f = 0.0 if np.isinf(tr) else np.exp(-tr / tp.fat_T1)
        flow = (1.0 - vessel * (1.0 - proto.flow_void))[:, None]
        b1fac = np.sin(0.5 * np.pi * b1c) ** 2
        lw = pdw * ((1 - e1w) * np.exp(-proto.te / tp.T2.astype(np.float64)))[:, None] * flow * b1fac
        lf = pdf * (1 - e1f) * np.exp(-proto.te / (T.FSE_FAT_T2_FACTOR * tp.fat_T2)) * flow * b1fac
        if np.ndim(eta):
            s = lw.astype(np.float32).ravel()[idx]
            s += lf.astype(np.float32).ravel()[idx] * (1.0 - eta)
        else:
            s = (lw + lf * (1.0 - eta)).astype(np.float32).ravel()[idx]
        s *= anat.texture
        return s
    # spoiled GRE (T1 fat-sat or dual echo)
    alpha = np.deg2rad(proto.flip) * b1c
    sa, ca = np.sin(alpha), np.cos(alpha)
    e1 = np.exp(-proto.tr / tp.T1.astype(np.float64))[:, None]
    inflow = (1.0 + vessel * (proto.inflow - 1.0))[:, None]
    lw = pdw * np.exp(-proto.te / tp.T2s.astype(np.float64))[:, None] * inflow * sa * (1 - e1) / (1 - ca * e1)
    e1f = np.exp(-proto.tr / tp.fat_T1)
    lf = pdf * np.exp(-proto.te / tp.fat_T2s) * inflow * sa * (1 - e1f) / (1 - ca * e1f)
    c = T.fat_phasor(proto.te, fs)
    w = lw.astype(np.float32).ravel()[idx]
    f = lf.astype(np.float32).ravel()[idx]
    if np.ndim(eta) or eta > 0:
        f *= 1.0 - eta
    w *= anat.texture
    f *= anat.texture
    a_ = w + f * np.float32(c.real)
    b_ = f * np.float32(c.imag)
    del w, f
    ph = (np.float32(2 * np.pi * 1e-3 * proto.te)) * b0
    cos, sin = np.cos(ph), np.sin(ph)
    out = np.empty(idx.shape, np.complex64)
    out.real = a_ * cos - b_ * sin
    out.imag = a_ * sin + b_ * cos
    return out


def reference_signal(tp: T.TissueParams, proto: SequenceProtocol, tissue: int = T.LIVER) -> float:
    """Noise-free signal magnitude of one tissue at nominal B1 (for SNR and gain)."""
    pdw = tp.PD[tissue] * (1 - tp.FF[tissue])
    pdf = tp.PD[tissue] * tp.FF[tissue]
    if proto.kind == "ssfse":
        e1w = 0.0 if np.isinf(proto.tr) else np.exp(-proto.tr / tp.T1[tissue])
        return float(pdw * (1 - e1w) * np.exp(-proto.te / tp.T2[tissue])
                     + pdf * np.exp(-proto.te / (T.FSE_FAT_T2_FACTOR * tp.fat_T2)))
    a = np.deg2rad(proto.flip)
    e1 = np.exp(-proto.tr / tp.T1[tissue])
    e1f = np.exp(-proto.tr / tp.fat_T1)
    w = pdw * np.sin(a) * (1 - e1) / (1 - np.cos(a) * e1) * np.exp(-proto.te / tp.T2s[tissue])
    f = pdf * np.sin(a) * (1 - e1f) / (1 - np.cos(a) * e1f) * np.exp(-proto.te / tp.fat_T2s)
    return float(abs(w + f * T.fat_phasor(proto.te, tp.field_strength)))


# ----------------------------------------------------------------------------- sampling
def psf_matrices(anat: Anatomy, geom: dict, proto: SequenceProtocol, for_labels: bool = False):
    ax_f = anat.axes
    if for_labels:
        return [psf_matrix(ax_f[0], geom["axes"][0], "box", geom["spacing"][0]),
                psf_matrix(ax_f[1], geom["axes"][1], "box", geom["spacing"][1]),
                psf_matrix(ax_f[2], geom["axes"][2], "box", geom["thickness"])]
    return [psf_matrix(ax_f[0], geom["axes"][0], "sinc", geom["res"][0]),
            psf_matrix(ax_f[1], geom["axes"][1], "sinc", geom["res"][1]),
            psf_matrix(ax_f[2], geom["axes"][2], "slice", geom["thickness"],
                       motion=proto.resp_motion_mm)]


def resample_labels(label: np.ndarray, mats: list[np.ndarray]) -> np.ndarray:
    """Hard labels on the acquisition grid: argmax of per-label volume fractions."""
    out_shape = tuple(m.shape[0] for m in mats)
    best = np.full(out_shape, -1.0, np.float32)
    arg = np.zeros(out_shape, np.uint8)
    objs = ndi.find_objects(label)
    ids = [0] + [i + 1 for i, o in enumerate(objs) if o is not None]
    # nonzero column ranges -> row ranges of each matrix
    for lab in ids:
        if lab == 0:
            sl = tuple(slice(0, s) for s in label.shape)
        else:
            sl = objs[lab - 1]
        sub_m, rows = [], []
        for d in range(3):
            m = mats[d][:, sl[d]]
            nz = np.flatnonzero(np.abs(m).sum(axis=1) > 0)
            if nz.size == 0:
                break
            r = slice(nz[0], nz[-1] + 1)
            rows.append(r)
            sub_m.append(m[r])
        else:
            block = (label[sl] == lab).astype(np.float32)
            frac = apply_separable(block, sub_m)
            b = best[tuple(rows)]
            upd = frac > b
            b[upd] = frac[upd]
            arg[tuple(rows)][upd] = lab
    return arg


def acquire(anat: Anatomy, signal: np.ndarray, geom: dict, proto: SequenceProtocol,
            center: CenterProfile, sos: np.ndarray, s_ref_noise: float, s_ref_gain: float,
            rng: np.random.Generator, mats=None, sos_norm: np.ndarray | None = None) -> np.ndarray:
    """Fine-grid signal -> stored magnitude image on the acquisition grid (float32)."""
    if mats is None:
        mats = psf_matrices(anat, geom, proto)
    img = apply_separable(signal, mats)
    if not np.iscomplexobj(img):
        img = img.astype(np.complex64)
    if proto.ghost > 0:
        sh = geom["shape"][1] // 4
        img = img + 0.5 * proto.ghost * (np.roll(img, sh, axis=1) + np.roll(img, -sh, axis=1))
    shape = img.shape
    sigma = np.float32(s_ref_noise / proto.snr)
    noise = np.empty(shape, np.complex64)
    noise.real = rng.standard_normal(shape, dtype=np.float32)
    noise.imag = rng.standard_normal(shape, dtype=np.float32)
    if center.noise_corr > 0:
        s = center.noise_corr
        noise.real = ndi.gaussian_filter(noise.real, (s, s, 0))
        noise.imag = ndi.gaussian_filter(noise.imag, (s, s, 0))
        sigma *= np.float32(np.sqrt(4 * np.pi * s * s))
    if center.gfactor > 0:
        sx, sy = shape[0], shape[1]
        gx = np.exp(-((np.arange(sx) - sx / 2) / (0.3 * sx)) ** 2)
        gy = np.exp(-((np.arange(sy) - sy / 2) / (0.3 * sy)) ** 2)
        g = (sigma * (1.0 + center.gfactor * (gx[:, None] * gy[None, :]))).astype(np.float32)
        noise *= g[:, :, None]
    else:
        noise *= sigma
    img *= sos
    img += noise
    del noise
    mag = np.abs(img)
    del img
    mag *= sos_norm if sos_norm is not None else sos ** np.float32(-center.bias_normalize)
    out = mag * np.float32(proto.gain / s_ref_gain)
    np.rint(out, out=out)
    np.clip(out, 0, center.storage_max, out=out)
    return out.astype(np.float32)
