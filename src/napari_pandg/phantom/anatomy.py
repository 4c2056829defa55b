"""Fine-grid abdominal anatomy: tissue map + AMOS-id label map from implicit shapes.

World frame: patient RAS+ in mm (+x patient right, +y anterior, +z superior), origin at the
centre of the L1 vertebral body. The fine grid is axis-aligned with positive spacing (array
axes = x, y, z). Shapes are ellipsoids, superellipses and tubes along cubic splines, evaluated
on *warped* coordinates (a smooth random displacement field), so every organ deforms
consistently. Organs are painted in priority order onto visceral fat; each paint may only
overwrite the listed labels and keeps a fat gap (default 1.5 mm) from other organs, which is
what produces the thin fat planes (India ink on opposed-phase images).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from napari_pandg.phantom import tissues as T
from napari_pandg.phantom._grid import apply_separable, curve, interp_matrix, smooth_noise
from napari_pandg.phantom.variation import AnatomyVariation

# label ids (AMOS + phantom extras, see napari_pandg.labels)
L_SPLEEN, L_RKID, L_LKID, L_GB, L_ESO, L_LIVER, L_STOM, L_AORTA, L_IVC, L_PANC = range(1, 11)
L_RADR, L_LADR, L_DUO = 11, 12, 13
L_VEIN, L_VERT, L_CANAL, L_MUSCLE, L_SUBQ, L_VISC, L_BOWEL, L_SMA = range(16, 24)

PANCREAS_ML_RANGE = (40.0, 140.0)

#: z extent (mm) of the fine grid; acquisitions use a 192 mm slab centred at z = 0
Z_RANGE = (-102.0, 102.0)


def _rot(ax: float = 0.0, ay: float = 0.0, az: float = 0.0) -> np.ndarray:
    """Rotation matrix from angles in degrees about x, then y, then z."""
    a, b, c = np.deg2rad([ax, ay, az])
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass
class _Tube:
    sl: tuple
    shape: tuple
    ids: np.ndarray  # flat indices in the bbox
    u: np.ndarray
    v: np.ndarray
    w: np.ndarray
    a: np.ndarray
    b: np.ndarray
    t: np.ndarray

    def q(self, shrink: float = 0.0) -> np.ndarray:
        a = np.maximum(self.a - shrink, 0.3)
        b = np.maximum(self.b - shrink, 0.3)
        c = np.minimum(a, b)
        return np.sqrt((self.u / a) ** 2 + (self.v / b) ** 2 + (self.w / c) ** 2)

    def full(self, sel: np.ndarray, values=None, dtype=bool, fill=0):
        out = np.full(self.shape, fill, dtype)
        if values is None:
            out.flat[self.ids[sel]] = True
        else:
            out.flat[self.ids[sel]] = values[sel] if np.ndim(values) else values
        return out


@dataclass
class Anatomy:
    """Fine-grid anatomy of one subject (internal; the public output is the label map)."""

    tissue: np.ndarray  # uint8 tissue ids (napari_pandg.phantom.tissues)
    label: np.ndarray  # uint8 AMOS / phantom label ids
    texture: np.ndarray  # float32 multiplicative texture (~1)
    gas_field: np.ndarray  # float32 smoothed gas/air proximity (drives local B0 offsets)
    axes: tuple[np.ndarray, np.ndarray, np.ndarray]  # world coordinates of the fine samples
    spacing: float
    body: dict
    pancreas_ml: float
    params: dict = field(default_factory=dict)

    @property
    def origin(self) -> np.ndarray:
        return np.array([a[0] for a in self.axes])

    @property
    def affine(self) -> np.ndarray:
        aff = np.diag([self.spacing] * 3 + [1.0])
        aff[:3, 3] = self.origin
        return aff


class _Canvas:
    def __init__(self, axes, disp, shape_noise, lobule_noise):
        self.x, self.y, self.z = axes
        self.h = float(self.x[1] - self.x[0])
        self.shape = (len(self.x), len(self.y), len(self.z))
        self.X = (self.x[:, None, None] + disp[0]).astype(np.float32)
        self.Y = (self.y[None, :, None] + disp[1]).astype(np.float32)
        self.Z = (self.z[None, None, :] + disp[2]).astype(np.float32)
        self.margin = float(max(np.abs(d).max() for d in disp)) + 2 * self.h
        self.N = shape_noise
        self.NL = lobule_noise
        self.label = np.zeros(self.shape, np.uint8)
        self.tissue = np.zeros(self.shape, np.uint8)
        self.gap_scale = 1.0  # AnatomyVariation.gap: more visceral fat between organs

    # -- geometry helpers
    def box(self, lo, hi):
        out = []
        for ax, a, b in zip((self.x, self.y, self.z), lo, hi, strict=True):
            i0 = int(np.floor((a - self.margin - ax[0]) / self.h))
            i1 = int(np.ceil((b + self.margin - ax[0]) / self.h)) + 1
            i0, i1 = max(i0, 0), min(i1, len(ax))
            if i1 <= i0:
                return None
            out.append(slice(i0, i1))
        return tuple(out)

    def coords(self, sl):
        return self.X[sl], self.Y[sl], self.Z[sl]

    def ellipsoid(self, c, semi, rot=None, pad=0.0):
        semi = np.asarray(semi, float)
        r = float(semi.max()) + pad
        sl = self.box(np.asarray(c) - r, np.asarray(c) + r)
        if sl is None:
            return None, None
        X, Y, Z = self.coords(sl)
        dx, dy, dz = X - c[0], Y - c[1], Z - c[2]
        if rot is not None:  # local = R^T d
            R = np.asarray(rot, np.float32)
            lx = R[0, 0] * dx + R[1, 0] * dy + R[2, 0] * dz
            ly = R[0, 1] * dx + R[1, 1] * dy + R[2, 1] * dz
            lz = R[0, 2] * dx + R[1, 2] * dy + R[2, 2] * dz
            dx, dy, dz = lx, ly, lz
        q = np.sqrt((dx / semi[0]) ** 2 + (dy / semi[1]) ** 2 + (dz / semi[2]) ** 2)
        return sl, q

    def tube(self, ctrl, ra, rb=None, ref=(0.0, 0.0, 1.0)):
        ctrl = np.asarray(ctrl, float)
        ra = np.broadcast_to(np.asarray(ra, float), (len(ctrl),))
        rb = ra if rb is None else np.broadcast_to(np.asarray(rb, float), (len(ctrl),))
        keep = np.r_[True, np.linalg.norm(np.diff(ctrl, axis=0), axis=1) > 1e-3]
        if keep.sum() < 2:
            return None
        ctrl, ra, rb = ctrl[keep], ra[keep], rb[keep]
        P, Tn, tpar, knots = curve(ctrl, step=min(0.6, self.h / 2))
        a = np.interp(tpar, knots, ra)
        b = np.interp(tpar, knots, rb)
        rmax = float(max(a.max(), b.max()))
        sl = self.box(P.min(0) - rmax, P.max(0) + rmax)
        if sl is None:
            return None
        ref = np.asarray(ref, float)
        N1 = ref[None, :] - (Tn @ ref)[:, None] * Tn
        n1 = np.linalg.norm(N1, axis=1)
        bad = n1 < 1e-3
        if bad.any():
            alt = np.array([0.0, 1.0, 0.0]) if abs(ref[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
            N1[bad] = alt - (Tn[bad] @ alt)[:, None] * Tn[bad]
            n1 = np.linalg.norm(N1, axis=1)
        N1 /= n1[:, None]
        N2 = np.cross(Tn, N1)
        X, Y, Z = self.coords(sl)
        tree = cKDTree(P)
        st = 3
        Xc, Yc, Zc = X[1::st, 1::st, 1::st], Y[1::st, 1::st, 1::st], Z[1::st, 1::st, 1::st]
        if min(Xc.shape) == 0:
            Xc, Yc, Zc, st = X, Y, Z, 1
        pc = np.stack([Xc.ravel(), Yc.ravel(), Zc.ravel()], 1)
        dc, _ = tree.query(pc, distance_upper_bound=rmax * 1.15 + 1.0 + 2.0 * self.h, workers=2)
        near = np.isfinite(dc).reshape(Xc.shape)
        cand = near.repeat(st, 0).repeat(st, 1).repeat(st, 2)
        pads = [(0, max(0, n - c)) for n, c in zip(X.shape, cand.shape, strict=True)]
        if any(p[1] for p in pads):
            cand = np.pad(cand, pads, mode="edge")
        cand = cand[: X.shape[0], : X.shape[1], : X.shape[2]]
        ids = np.flatnonzero(cand)
        if ids.size == 0:
            return None
        p = np.stack([X.ravel()[ids], Y.ravel()[ids], Z.ravel()[ids]], 1).astype(np.float64)
        d, k = tree.query(p, distance_upper_bound=rmax * 1.15 + 1.0, workers=2)
        ok = np.isfinite(d)
        ids, p, k = ids[ok], p[ok], k[ok]
        off = p - P[k]
        u = np.einsum("ij,ij->i", off, N1[k])
        v = np.einsum("ij,ij->i", off, N2[k])
        w = np.einsum("ij,ij->i", off, Tn[k])
        return _Tube(sl, X.shape, ids, u, v, w, a[k], b[k], tpar[k])

    # -- painting
    def paint(self, sl, mask, label, tissue, over=(L_VISC,), gap=1.5, exempt=()):
        if sl is None or mask is None:
            return 0
        lab = self.label[sl]
        ok = np.zeros(256, bool)
        ok[list(over)] = True
        allowed = mask & ok[lab]
        gap = gap * self.gap_scale
        if gap > 0 and allowed.any():
            blk = np.ones(256, bool)
            blk[[0, L_SUBQ, L_VISC, label, *over, *exempt]] = False
            b = blk[lab]
            if b.any():
                n = max(1, int(round(gap / self.h)))
                b = ndi.binary_dilation(b, iterations=n)
                allowed &= ~b
        lab[allowed] = label
        tis = self.tissue[sl]
        tis[allowed] = tissue if np.ndim(tissue) == 0 else tissue[allowed]
        return int(allowed.sum())


def _body_q(X, Y, a, b_ant, b_post, yc):
    """Body-outline 'radius' (<1 inside): ellipse, squarer and flatter posteriorly."""
    dy = Y - yc
    by = np.where(dy > 0, np.float32(b_ant), np.float32(b_post))
    u2 = (X / a) ** 2
    v2 = (dy / by) ** 2
    sq = np.where(dy > 0, np.float32(0.0), np.float32(-0.55))
    return np.sqrt(u2 + v2 + sq * u2 * v2)


def build_anatomy(
    rng: np.random.Generator, spacing: float = 1.5, variation: AnatomyVariation | None = None
) -> Anatomy:
    """Sample one subject's anatomy on a fine isotropic grid of ``spacing`` mm.

    ``variation`` (:mod:`napari_pandg.phantom.variation`) widens organ sizes, positions,
    shapes, habitus and adds absent organs, atrophy and fatty infiltration; ``None`` keeps
    the default phantom exactly (same random stream, bit-identical output).
    """
    J = lambda s=1.0: float(rng.normal(0.0, s))  # noqa: E731  (jitter helper)
    # (an empty range can occur for very thin randomised bodies: draw at its lower end)
    U = lambda a, b: float(rng.uniform(a, max(a, b)))  # noqa: E731
    var = variation
    vr = np.random.default_rng(var.seed) if var is not None else None  # the variation's own draws
    VS = (lambda o: var.s(o)) if var is not None else (lambda o: 1.0)  # noqa: E731
    VD = (lambda o: var.d(o)) if var is not None else (lambda o: np.zeros(3))  # noqa: E731

    def VR(o: str, ax: float = 0.0, ay: float = 0.0, az: float = 0.0) -> np.ndarray:
        """The organ's rotation with the variation's extra angles (degrees)."""
        ex = var.r(o) if var is not None else (0.0, 0.0, 0.0)
        return _rot(ax + ex[0], ay + ex[1], az + ex[2])

    # ---------------------------------------------------------------- body habitus
    bmi = U(0, 1)
    if var is not None:
        bmi = var.bmi
    a_body = 158 + 32 * bmi + J(5)
    b_body = 108 + 26 * bmi + J(4)
    t_sc = 6 + 28 * bmi + J(3)
    t_sc = float(np.clip(t_sc, 5, 40)) if var is None else float(np.clip(t_sc, 3, 65))
    if var is not None:
        a_body *= var.body_scale[0]
        b_body *= var.body_scale[1]
    y_ps = -(74 + 0.7 * t_sc)
    b_post = 0.92 * b_body
    yc = y_ps + b_post
    b_ant = 2 * b_body - b_post
    w_m = U(8, 13)
    body = dict(a=a_body, b_ant=b_ant, b_post=b_post, yc=yc, t_sc=t_sc, bmi=bmi,
                y_post=y_ps, y_ant=yc + b_ant, wall=w_m)

    h = float(spacing)
    pad = 6.0
    axes = (
        np.arange(-a_body - pad, a_body + pad + h / 2, h),
        np.arange(y_ps - pad, yc + b_ant + pad + h / 2, h),
        np.arange(Z_RANGE[0], Z_RANGE[1] + h / 2, h),
    )
    axes = tuple(ax.astype(np.float64) for ax in axes)

    # smooth random deformation (SynthSeg-style), sigma ~3-4 mm, correlation ~45 mm
    amp = U(2.5, 4.0)
    corr = 45.0
    if var is not None:
        amp, corr = var.warp_amp, var.warp_corr
    disp = [amp * smooth_noise(rng, axes, corr) for _ in range(3)]
    if var is not None and var.warp_fine_amp > 0:
        for d in range(3):
            disp[d] += var.warp_fine_amp * smooth_noise(vr, axes, 18.0)
    shape_noise = smooth_noise(rng, axes, 14.0)
    lob_noise = smooth_noise(rng, axes, 5.0)
    if var is not None:
        shape_noise *= np.float32(var.shape_noise)
    cv = _Canvas(axes, disp, shape_noise, lob_noise)
    if var is not None:
        cv.gap_scale = float(var.gap)
    del disp
    X, Y, Z = cv.X, cv.Y, cv.Z

    # ---------------------------------------------------------------- body layers
    widen = (1.0 + 0.03 * Z / 100.0).astype(np.float32)  # wider at the lower ribs
    q_skin = _body_q(X / widen, Y, a_body, b_ant, b_post, yc)
    skin = q_skin < 1.0 + 0.004 * cv.N
    cv.label[skin] = L_SUBQ
    cv.tissue[skin] = T.SUBQ_FAT
    del q_skin
    a_i, ba_i, bp_i = a_body - t_sc, b_ant - 1.15 * t_sc, b_post - 0.75 * t_sc
    q_fas = _body_q(X / widen, Y, a_i, ba_i, bp_i, yc)
    fas = q_fas < 1.0 + 0.01 * cv.N
    cv.label[fas] = L_MUSCLE
    cv.tissue[fas] = T.MUSCLE
    del q_fas
    a_c, ba_c, bp_c = a_i - w_m, ba_i - 1.2 * w_m, bp_i - w_m
    q_cav = _body_q(X / widen, Y, a_c, ba_c, bp_c, yc)
    cav = q_cav < 1.0 + 0.01 * cv.N
    cv.label[cav] = L_VISC
    cv.tissue[cav] = T.VISC_FAT
    del q_cav, cav, fas, skin
    body.update(a_inner=a_i, a_cav=a_c, b_ant_cav=ba_c, b_post_cav=bp_c)

    # ---------------------------------------------------------------- lungs / diaphragm
    for s in (1, -1):
        c = (s * (a_c * 0.55 + J(5)), y_ps + 45 + J(5), 118 + J(6))
        sl, q = cv.ellipsoid(c, (a_c * 0.5, 60, 62), pad=6)
        if sl is not None:
            semi_min = 60.0
            cv.paint(sl, q < 1.0 + 5.0 / semi_min, L_MUSCLE, T.MUSCLE, over=(L_VISC,), gap=0)
            cv.paint(sl, q < 1.0, 0, T.LUNG, over=(L_MUSCLE,), gap=0)

    # ---------------------------------------------------------------- spine
    vs = U(0.92, 1.08)
    va, vb = 22 * vs, 17 * vs
    sl = cv.box((-va, -vb, Z_RANGE[0]), (va, vb, Z_RANGE[1]))
    Xs, Ys, Zs = cv.coords(sl)
    zz = np.mod(Zs + 17.5, 35.0) - 17.5  # 0 at vertebral body centres (35 mm period)
    qv = np.sqrt((Xs / va) ** 2 + (Ys / vb) ** 2)
    # slight waist of the vertebral body
    waist = 1.0 - 0.05 * np.cos(np.pi * zz / 27.0)
    is_disc = np.abs(zz) > 13.5
    inside = qv < waist
    tis = np.where(is_disc, T.DISC, np.where(qv < waist - 1.6 / vb, T.MARROW, T.CORT_BONE))
    endplate = (np.abs(np.abs(zz) - 13.0) < 0.8) & ~is_disc
    tis = np.where(endplate & inside, T.CORT_BONE, tis).astype(np.uint8)
    cv.paint(sl, inside, L_VERT, tis, over=(L_VISC, L_MUSCLE), gap=0)
    # posterior elements: arch ring + spinous process + transverse processes
    cy = -(vb + 10.5)
    sl = cv.box((-40, cy - 40, Z_RANGE[0]), (40, -vb + 2, Z_RANGE[1]))
    Xs, Ys, Zs = cv.coords(sl)
    zz = np.mod(Zs + 17.5, 35.0) - 17.5
    q_arch = np.sqrt((Xs / 17.0) ** 2 + ((Ys - cy) / 13.0) ** 2)
    seg = np.abs(zz + 4) < 13  # arches are segmental
    spin = (np.abs(Xs) < 4.0 + 0.5 * cv.N[sl]) & (Ys < cy) & (Ys > cy - 34 + 8 * np.abs(zz + 6) / 17) & seg
    trans = (np.abs(Ys - (cy + 3)) < 3.5) & (np.abs(Xs) < 30 - 0.4 * np.abs(zz + 3)) & (np.abs(zz + 3) < 5)
    arch = ((q_arch < 1.0) & (Ys < -vb + 1) & seg) | spin | trans
    q_can = np.sqrt((Xs / 10.5) ** 2 + ((Ys - cy) / 8.5) ** 2)
    bone_t = np.where((q_arch < 0.85) & ~spin, T.MARROW, T.CORT_BONE).astype(np.uint8)
    cv.paint(sl, arch & (q_can >= 1.0), L_VERT, bone_t, over=(L_VISC, L_MUSCLE), gap=0)
    cord_t = np.where((np.sqrt((Xs / 4.8) ** 2 + ((Ys - cy - 0.5) / 3.8) ** 2) < 1.0) & (Zs > -30),
                      T.CORD, T.CSF).astype(np.uint8)
    cv.paint(sl, q_can < 1.0, L_CANAL, cord_t, over=(L_VISC, L_MUSCLE, L_VERT), gap=0)
    body["canal_y"] = cy

    # ---------------------------------------------------------------- muscles
    for s in (1, -1):
        # paraspinal (erector spinae + multifidus)
        c = (s * (37 + J(2)), cy - 24 + J(2), 0.0)
        sl, q = cv.ellipsoid(c, (27 + J(2), 21 + J(1.5), 400))
        if sl is not None:
            cv.paint(sl, q < 1.0 + 0.03 * cv.N[sl], L_MUSCLE, T.MUSCLE,
                     over=(L_VISC, L_SUBQ), gap=0)
        # quadratus lumborum (below T12)
        zq = np.array([40.0, 0.0, -100.0])
        sl = cv.box((s * 66 - 25, -60, -110), (s * 66 + 25, -10, 45))
        if sl is not None:
            Xs, Ys, Zs = cv.coords(sl)
            r = np.interp(Zs, zq[::-1], np.array([16.0, 12.0, 2.0])[::-1])
            q = np.sqrt(((Xs - s * 64) / r) ** 2 + ((Ys - (cy - 5)) / (0.7 * r)) ** 2)
            cv.paint(sl, (q < 1.0) & (Zs < 40), L_MUSCLE, T.MUSCLE, over=(L_VISC,), gap=0)
        # psoas (from T12/L1 downwards, growing)
        sl = cv.box((s * 50 - 35, -30, -110), (s * 50 + 35, 30, 25))
        if sl is not None:
            Xs, Ys, Zs = cv.coords(sl)
            r = np.clip(3.0 + (15.0 - Zs) * 0.16, 0.5, 22)
            q = np.sqrt(((Xs - s * (va + 3 + 0.8 * r)) / r) ** 2 + ((Ys - (-3 + 0.3 * r)) / (0.9 * r)) ** 2)
            cv.paint(sl, (q < 1.0) & (Zs < 15), L_MUSCLE, T.MUSCLE, over=(L_VISC,), gap=0)
    # diaphragmatic crura around the aorta (upper levels)
    for s in (1, -1):
        ctrl = [(s * 14, 12, -20), (s * 16, 22, 20), (s * 13, 35, 60), (s * 6, 48, 95)]
        tb = cv.tube(ctrl, [2.0, 4.0, 5.0, 4.0], [2.0, 3.0, 3.5, 3.0])
        if tb is not None:
            cv.paint(tb.sl, tb.full(tb.q() < 1), L_MUSCLE, T.MUSCLE, over=(L_VISC,), gap=0)

    # ---------------------------------------------------------------- ribs (label: vertebra/bone)
    for s in (1, -1):
        for n, (z0, th1) in enumerate(((112, 150), (92, 142), (70, 128), (48, 108), (26, 88))):
            th = np.deg2rad(np.linspace(35, th1, 8))
            am, bpm, bam = a_i - w_m * 0.5, bp_i - w_m * 0.5, ba_i - w_m * 0.5
            by = np.where(np.cos(th) > 0, bpm, bam)
            px = s * am * np.sin(th) * (1 + 0.03 * z0 / 100)
            py = yc - by * np.cos(th)
            pz = z0 - (th - th[0]) / (np.deg2rad(110)) * (55 + 5 * n) + J(2)
            tb = cv.tube(np.stack([px, py, pz], 1), 5.5, 3.8, ref=(0.0, 0.0, 1.0))
            if tb is None:
                continue
            q = tb.q()
            tis = np.where(tb.q(1.4) < 1.0, T.MARROW, T.CORT_BONE).astype(np.uint8)
            cv.paint(tb.sl, tb.full(q < 1), L_VERT, tb.full(q < 1, tis, np.uint8),
                     over=(L_MUSCLE, L_VISC, L_SUBQ), gap=0)

    # ---------------------------------------------------------------- great vessels
    ax_x, ax_y, r_ao = -14 + J(3), vb + 12.5 + J(1.5), U(10, 12.5)
    if var is not None:
        ax_x, ax_y = ax_x + VD("vessels")[0], ax_y + abs(VD("vessels")[1])
        r_ao *= VS("vessels")
    zc = np.array([Z_RANGE[0] - 5, -40, 20, 60, Z_RANGE[1] + 5])
    aorta_ctrl = np.stack([ax_x + np.array([2, 0, -1, -3, -4]) + rng.normal(0, 1.5, 5),
                           ax_y + np.array([-1, 0, -2, -5, -8]) + rng.normal(0, 1.0, 5), zc], 1)
    tb = cv.tube(aorta_ctrl, r_ao, ref=(0, 1, 0))
    cv.paint(tb.sl, tb.full(tb.q() < 1), L_AORTA, T.ART_BLOOD, gap=1.5)
    ivc_x = ax_x + 36 + J(3)
    ivc_ctrl = np.stack([ivc_x + np.array([0, 0, 1, -1, -4]), ax_y + np.array([-2, 0, 6, 12, 15]),
                         zc], 1)
    r_ivc = U(12, 15) * VS("vessels")
    tb = cv.tube(ivc_ctrl, [r_ivc, r_ivc, r_ivc + 1, r_ivc + 2, r_ivc + 3],
                 [0.62 * r_ivc, 0.65 * r_ivc, 0.75 * r_ivc, 0.85 * r_ivc, 0.9 * r_ivc], ref=(1, 0, 0))
    cv.paint(tb.sl, tb.full(tb.q() < 1), L_IVC, T.VEN_BLOOD, gap=1.5)
    ao_front = ax_y + r_ao
    # SMA
    z_sma = -2 + J(5)
    sma = [(ax_x, ao_front - 4, z_sma), (ax_x + 5, ao_front + 12, z_sma - 15),
           (ax_x + 9, ao_front + 24, z_sma - 45), (ax_x + 11, ao_front + 32, Z_RANGE[0] - 5)]
    sma = np.asarray(sma) + np.r_[[0, 0, 0], [*rng.normal(0, 2, 9)]].reshape(4, 3) * [1, 1, 0.5]
    r_sma = U(3.0, 4.0)
    tb = cv.tube(sma, r_sma)
    cv.paint(tb.sl, tb.full(tb.q() < 1), L_SMA, T.ART_BLOOD, gap=1.5, exempt=(L_AORTA,))
    # celiac trunk -> common hepatic / splenic arteries (labelled as 0: not in the label set)
    zc_c = z_sma + 14 + J(2)
    cel = [(ax_x, ao_front - 3, zc_c), (ax_x + 2, ao_front + 12, zc_c + 3)]
    hep = [cel[-1], (ax_x + 25, ao_front + 15, zc_c + 8), (ax_x + 55, ao_front + 18, zc_c + 20)]
    for ctrl, r in ((cel, 3.2), (hep, 2.4)):
        tb = cv.tube(ctrl, r)
        cv.paint(tb.sl, tb.full(tb.q() < 1), 0, T.ART_BLOOD, gap=1.0, exempt=(L_AORTA,))

    # ---------------------------------------------------------------- pancreas (key organ)
    config = rng.choice(["oblique", "horizontal", "sigmoid", "inverted_v"], p=[0.45, 0.2, 0.2, 0.15])
    if var is not None and var.pancreas_config:
        config = var.pancreas_config
    rise = {"oblique": U(35, 50), "horizontal": U(12, 22), "sigmoid": U(30, 45),
            "inverted_v": U(15, 25)}[config]
    body_dz = {"oblique": 0.55, "horizontal": 0.6, "sigmoid": 0.25, "inverted_v": 1.15}[config]
    z_head = -30 + J(5)
    yf = ao_front + 16  # pancreas sits ~1.5 cm anterior to the aortic front
    smv_x = ax_x + 23 + J(2)
    ctrl = np.array([
        [smv_x - 2, yf - 3, z_head - 14],          # uncinate tip (behind the SMV)
        [smv_x + 20, yf + 4, z_head],               # head
        [smv_x - 3, yf + 17, z_head + 16],          # neck (anterior to the confluence)
        [ax_x - 18, yf + 11, z_head + 16 + body_dz * rise * 0.5],   # body (over aorta/SMA)
        [ax_x - 52, yf - 6, z_head + 4 + rise * 0.85],              # tail
        [ax_x - 72, yf - 24, z_head + rise + 4],                    # tail tip (splenic hilum)
    ], float)
    ctrl[1:] += rng.normal(0, 4.0, (5, 3)) * [1.0, 0.6, 0.8]
    s_len = U(0.92, 1.08)
    ctrl[3:, 0] = ctrl[2, 0] + (ctrl[3:, 0] - ctrl[2, 0]) * s_len
    a_ap = np.array([13, 27, 12, 20, 19, 11]) * U(0.9, 1.1) * np.r_[1, rng.uniform(0.88, 1.12, 5)]
    b_cc = np.array([15, 34, 22, 27, 25, 13]) * U(0.9, 1.1) * np.r_[1, rng.uniform(0.88, 1.12, 5)]
    head_c = ctrl[1] + [3, -1, -4]
    head_semi = np.array([15.0, 14.0, 21.0]) * U(0.9, 1.1)
    target_ml = float(np.clip(rng.normal(78, 16), 48, 125))
    lob_amp = 0.04 + 0.10 * max(0.0, (U(20, 80) - 35) / 45)
    if var is not None:
        # the gland turns about its neck (tail up/down, more or less oblique) and moves as one
        # with the vessels it wraps; thickness per segment; atrophy thins the body and tail
        R_p = VR("pancreas")
        neck = ctrl[2].copy()
        ctrl = (ctrl - neck) @ R_p.T + neck + VD("pancreas")
        head_c = (head_c - neck) @ R_p.T + neck + VD("pancreas")
        th_h, th_b, th_t = var.pancreas_thickness
        seg = np.array([th_h, th_h, th_b, th_b, th_t, th_t])
        if var.atrophic:
            seg = seg * np.array([0.8, 0.8, 0.6, 0.55, 0.55, 0.55])
        a_ap = a_ap * seg
        head_semi = head_semi * np.array([1.0, th_h, 1.0])
        target_ml = float(var.pancreas_ml)
        lob_amp = float(var.pancreas_lobulation)
        dp = VD("pancreas")  # the duodenum and the SMV follow the gland
        smv_x, yf, z_head = smv_x + dp[0], yf + dp[1], z_head + dp[2]
    scale = 1.0
    panc_lab = cv.label.copy()
    panc_tis = cv.tissue.copy()
    for _attempt in range(4):
        cv.label[...] = panc_lab
        cv.tissue[...] = panc_tis
        tb = cv.tube(ctrl, b_cc * scale / 2, a_ap * scale / 2)
        qn = tb.q() - 0.06 * cv.N[tb.sl].flat[tb.ids] - lob_amp * cv.NL[tb.sl].flat[tb.ids]
        cv.paint(tb.sl, tb.full(qn < 1), L_PANC, T.PANCREAS, gap=1.5)
        sl, q = cv.ellipsoid(head_c, head_semi * scale)
        qn = q - 0.06 * cv.N[sl] - lob_amp * cv.NL[sl]
        cv.paint(sl, qn < 1, L_PANC, T.PANCREAS, gap=1.5)
        sl, q = cv.ellipsoid(ctrl[0] + [4, 1, 3], np.array([11.0, 8.0, 9.0]) * scale)
        cv.paint(sl, q - 0.05 * cv.N[sl] < 1, L_PANC, T.PANCREAS, gap=1.5)
        n_vox = int(np.count_nonzero(cv.label == L_PANC))
        ml = n_vox * h**3 / 1000.0
        if PANCREAS_ML_RANGE[0] + 3 <= ml <= PANCREAS_ML_RANGE[1] - 3 and abs(ml - target_ml) < 0.2 * target_ml:
            break
        scale *= float(np.clip((target_ml / max(ml, 1.0)) ** 0.5, 0.7, 1.4))
    del panc_lab, panc_tis
    if var is not None and var.fatty_infiltration > 0:
        # interlobular fat (fatty pancreas): the lobules with the highest lobule-noise value turn
        # to adipose tissue but stay labelled pancreas, as in manual segmentations
        pm = cv.label == L_PANC
        vals = cv.NL[pm]
        cut = np.quantile(vals, 1.0 - var.fatty_infiltration)
        fat = np.zeros_like(pm)
        fat[pm] = vals > cut
        cv.tissue[fat] = T.VISC_FAT
        del pm, fat, vals
    # main pancreatic duct (fluid, inside the gland)
    duct = cv.tube(ctrl[1:], U(0.9, 1.4))
    if duct is not None:
        cv.paint(duct.sl, duct.full(duct.q() < 1), L_PANC, T.GI_FLUID, over=(L_PANC,), gap=0)

    # frames along the pancreas centre line for the splenic vein
    P, Tn, tpar, knots = curve(ctrl, step=1.0)
    up = np.array([0.0, 0.0, 1.0])
    N1 = up[None] - (Tn @ up)[:, None] * Tn
    N1 /= np.linalg.norm(N1, axis=1, keepdims=True)
    N2 = np.cross(Tn, N1)
    N2 *= np.sign(N2[:, 1:2] + 1e-9)  # anterior
    a_s = np.interp(tpar, knots, a_ap * scale)
    r_sv = U(3.8, 5.0)
    sv_pts = []
    for t in (0.55, 0.68, 0.8, 0.92, 1.0):
        i = int(np.argmin(np.abs(tpar - t)))
        sv_pts.append(P[i] - N2[i] * (a_s[i] / 2 + r_sv + 2.0) + N1[i] * 3.0)
    conf = ctrl[2] + [1, -13, -2]  # portal confluence, behind the neck
    spleen_c = np.array([ax_x - 88 + J(4), -12 + J(4), 42 + J(5)]) + VD("spleen")
    hilum = P[-1] + (spleen_c - P[-1]) * 0.35 - [0, 6, 0]
    sv = np.vstack([conf, sv_pts, hilum])
    tb = cv.tube(sv, r_sv)
    cv.paint(tb.sl, tb.full(tb.q() < 1), L_VEIN, T.VEN_BLOOD, gap=1.0)
    # SMV and portal vein
    smv = [(smv_x + 2, yf + 15, Z_RANGE[0] - 5), (smv_x + 1, yf + 11, z_head - 25),
           (smv_x, yf + 5, z_head + 2), tuple(conf)]
    tb = cv.tube(smv, [6.0, 5.5, 5.5, 6.0])
    cv.paint(tb.sl, tb.full(tb.q() < 1), L_VEIN, T.VEN_BLOOD, gap=1.0)
    porta = np.array([ivc_x + 22 + J(3), ao_front + 12 + J(3), 24 + J(4)])
    pv = [tuple(conf), tuple(conf + [8, 2, 12]), tuple(porta)]
    r_pv = U(6.0, 7.0)
    tb = cv.tube(pv, r_pv)
    cv.paint(tb.sl, tb.full(tb.q() < 1), L_VEIN, T.VEN_BLOOD, gap=1.0)

    # ---------------------------------------------------------------- duodenum
    x_d2 = float(head_c[0] + head_semi[0] * scale + 16 + J(2))
    pylorus = np.array([head_c[0] - 12, yf + 30, z_head + 22]) + rng.normal(0, 3, 3)
    duo = np.array([
        pylorus,
        [x_d2 - 14, yf + 20, z_head + 28],
        [x_d2, yf + 4, z_head + 22],           # superior flexure
        [x_d2 + 2, yf - 2, z_head + 2],        # D2
        [x_d2, yf - 2, z_head - 22],
        [x_d2 - 14, yf - 3, z_head - 36],      # inferior flexure
        [smv_x - 5, ao_front + 11, z_head - 42],   # D3 between aorta and SMA
        [ax_x - 16, ao_front + 12, z_head - 36],
        [ax_x - 22, ao_front + 16, z_head - 16],   # D4 -> DJ flexure
    ])
    duo[1:] += rng.normal(0, 2.5, (8, 3))
    r_duo = U(11.5, 14.0) * VS("duodenum")
    wall = U(2.0, 3.0)
    tb = cv.tube(duo, r_duo)
    q, ql = tb.q(), tb.q(wall)
    mode = rng.choice(["fluid", "collapsed", "gas"], p=[0.5, 0.3, 0.2])
    if mode == "collapsed":
        ql = tb.q(r_duo - 2.5)
    lumen_t = T.GI_FLUID
    tis = np.where(ql < 1, lumen_t, T.GI_WALL).astype(np.uint8)
    if mode == "gas":  # gas rises anteriorly (supine)
        ylev = np.percentile(tb.v, 60)
        tis = np.where((ql < 1) & (tb.v > ylev) & (tb.t < 0.35), T.GAS, tis).astype(np.uint8)
    cv.paint(tb.sl, tb.full(q < 1), L_DUO, tb.full(q < 1, tis, np.uint8), gap=1.5)

    # ---------------------------------------------------------------- kidneys + adrenals
    kid_info = {}
    for s, lab, zk in ((1, L_RKID, -42 + J(5)), (-1, L_LKID, -26 + J(5))):
        kname = "kidney_r" if s > 0 else "kidney_l"
        kc = np.array([s * (68 + J(3)), -6 + J(3), zk]) + VD(kname)
        semi = np.array([27.0, 21.0, 55.0]) * U(0.9, 1.1) * VS(kname)
        R = VR(kname, ax=-12 + J(3), ay=s * (10 + J(3)), az=s * (-28 + J(5)))
        if var is not None and kname in var.absent:  # nephrectomy: the fossa fills with fat
            kid_info[lab] = (kc, semi, R)
            continue
        sl, q = cv.ellipsoid(kc, semi, R, pad=3)
        X_, Y_, Z_ = cv.coords(sl)
        d = np.stack([X_ - kc[0], Y_ - kc[1], Z_ - kc[2]], 0)
        lx = R[0, 0] * d[0] + R[1, 0] * d[1] + R[2, 0] * d[2]
        ly = R[0, 1] * d[0] + R[1, 1] * d[1] + R[2, 1] * d[2]
        lz = R[0, 2] * d[0] + R[1, 2] * d[1] + R[2, 2] * d[2]
        # hilum / sinus on the medial side (local -s*x)
        med = -s * lx
        q_sinus = np.sqrt(((med - semi[0] * 0.55) / (semi[0] * 0.75)) ** 2
                          + (ly / (semi[1] * 0.55)) ** 2 + (lz / (semi[2] * 0.45)) ** 2)
        outer = (q < 1.0 + 0.015 * cv.N[sl]) & (q_sinus > 1.0)
        t_cort = U(5.5, 7.5)
        q_in = np.sqrt((lx / (semi[0] - t_cort)) ** 2 + (ly / (semi[1] - t_cort)) ** 2
                       + (lz / (semi[2] - t_cort)) ** 2)
        ang = np.arctan2(ly, med)
        pyr = (np.cos(5 * ang + 0.5 * lz / 10 + 0.3 * cv.N[sl]) > -0.6) | (q_in < 0.5)
        pyr &= np.abs(lz) < semi[2] * 0.82
        q_sin2 = np.sqrt(((med - semi[0] * 0.45) / (semi[0] * 0.85)) ** 2
                         + (ly / (semi[1] * 0.6)) ** 2 + (lz / (semi[2] * 0.55)) ** 2)
        medulla = (q_in < 1.0) & pyr & (q_sin2 > 1.0)
        tis = np.where(medulla, T.KID_MEDULLA, T.KID_CORTEX).astype(np.uint8)
        cv.paint(sl, outer, lab, tis, gap=1.5)
        # renal pelvis (urine) in the sinus, labelled kidney
        pelvis = (np.sqrt(((med - semi[0] * 0.62) / 7.0) ** 2 + (ly / 6.0) ** 2 + (lz / 12.0) ** 2) < 1)
        cv.paint(sl, pelvis, lab, T.URINE, gap=0.0)
        kid_info[lab] = (kc, semi, R)
        # renal vein to the IVC (label 0, like unlabelled AMOS structures)
        hil = kc + R @ np.array([-s * semi[0] * 0.8, semi[1] * 0.2, 0.0])
        if s < 0:  # left renal vein passes between the aorta and the SMA
            rv = [hil, (ax_x - 22, ao_front + 3, zk + 3), (ax_x, ao_front + 4.5, zk + 4),
                  (ivc_x - 5, ax_y + 4, zk + 4)]
        else:
            rv = [hil, (ivc_x + 5, ax_y + 2, zk + 6)]
        tb = cv.tube(rv, 4.2, 3.5, ref=(0, 0, 1))
        cv.paint(tb.sl, tb.full(tb.q() < 1), 0, T.VEN_BLOOD, gap=1.0,
                 exempt=(L_IVC, L_RKID, L_LKID))
    # adrenals: thin inverted-Y, above/medial to the upper poles
    for s, lab, _zt in ((1, L_RADR, -42 + 50), (-1, L_LADR, -26 + 42)):
        kc = kid_info[L_RKID if s > 0 else L_LKID][0]
        apex = np.array([s * 30 + J(2), ax_y + 4 + J(2), kc[2] + 62 + J(3)])
        limb1 = apex + [s * -1, -14, -18]
        limb2 = apex + [s * 13, -12, -15]
        for limb in (limb1, limb2):
            tb = cv.tube([apex, (apex + limb) / 2 + [0, 0, 1], limb], [3.2, 2.6, 1.8], [2.0, 1.8, 1.4])
            if tb is not None:
                cv.paint(tb.sl, tb.full(tb.q() < 1), lab, T.ADRENAL, gap=1.5, exempt=(L_RADR, L_LADR))

    # ---------------------------------------------------------------- gallbladder
    gb_f = np.array([ivc_x + 40 + J(6), yf + 40 + J(5), z_head + 10 + J(6)]) + VD("gallbladder")
    gb = [gb_f, gb_f + [-6, -14, 16], gb_f + [-16, -28, 30]]
    r_gb = U(13, 18) * VS("gallbladder")
    tb = cv.tube(gb, [r_gb, r_gb * 0.8, 5.0])
    if tb is not None and not (var is not None and "gallbladder" in var.absent):
        cv.paint(tb.sl, tb.full(tb.q() < 1), L_GB, T.BILE, gap=1.5)

    # ---------------------------------------------------------------- spleen
    R = VR("spleen", ax=35 + J(5), ay=-15 + J(5), az=J(8))
    semi = np.array([22.0, 38.0, 56.0]) * U(0.85, 1.15) * VS("spleen")
    sl, q = cv.ellipsoid(spleen_c, semi, R, pad=3)
    Xs, Ys, Zs = cv.coords(sl)
    c2 = spleen_c + np.array([30.0, 18.0, -4.0]) * VS("spleen")
    q2 = np.sqrt(((Xs - c2[0]) / 30) ** 2 + ((Ys - c2[1]) / 36) ** 2 + ((Zs - c2[2]) / 50) ** 2)
    if not (var is not None and "spleen" in var.absent):
        cv.paint(sl, (q < 1 + 0.04 * cv.N[sl]) & (q2 > 1), L_SPLEEN, T.SPLEEN, gap=1.5)

    # ---------------------------------------------------------------- esophagus + stomach
    st_ctrl = np.array([
        [ax_x - 48, ax_y + 12, 84],   # fundus
        [ax_x - 52, ax_y + 32, 58],
        [ax_x - 40, yf + 28, 30],     # body
        [ax_x - 12, yf + 42, z_head + 34],    # antrum
        [pylorus[0] - 10, pylorus[1] + 4, pylorus[2] + 4],
        pylorus,
    ]) + np.r_[rng.normal(0, 4, 15), [0, 0, 0]].reshape(6, 3)
    st_ctrl[:4] += VD("stomach")
    fill = U(0.7, 1.15) * VS("stomach")
    r_st = np.array([38, 36, 31, 22, 14, 9.5]) * np.r_[fill, fill, fill, 1, 1, 1]
    tb = cv.tube(st_ctrl, r_st, r_st * [0.95, 0.9, 0.8, 0.85, 0.9, 1])
    st_wall = U(3.5, 5.0)
    q, ql = tb.q(), tb.q(st_wall)
    content = rng.choice(["fluid", "chyme", "mixed"])
    lum = np.full(q.shape, T.GI_FLUID if content != "chyme" else T.CHYME, np.uint8)
    if content == "mixed":
        lum[tb.t < 0.45] = T.CHYME
    Yb = cv.Y[tb.sl].ravel()[tb.ids]
    Zb = cv.Z[tb.sl].ravel()[tb.ids]
    gas_level = U(0.45, 0.8)
    # gas collects anteriorly in the upper body/fundus (supine)
    ylev = np.quantile(Yb[ql < 1], gas_level) if np.any(ql < 1) else 1e9
    lum[(Yb > ylev) & (tb.t < 0.6) & (Zb > 20)] = T.GAS
    tis = np.where(ql < 1, lum, T.GI_WALL).astype(np.uint8)
    cv.paint(tb.sl, tb.full(q < 1), L_STOM, tb.full(q < 1, tis, np.uint8), gap=1.5,
             exempt=(L_DUO, L_ESO))
    eso = [(ax_x + 4, ax_y + 13, Z_RANGE[1] + 5), (ax_x - 6, ax_y + 20, 88), (ax_x - 22, ax_y + 26, 70),
           tuple(st_ctrl[0] + [12, 8, -8])]
    tb = cv.tube(eso, 8.0, 6.5, ref=(0, 1, 0))
    if tb is not None:
        tis = np.where(tb.q(5.5) < 1, T.GAS if rng.random() < 0.3 else T.GI_FLUID, T.GI_WALL).astype(np.uint8)
        cv.paint(tb.sl, tb.full(tb.q() < 1), L_ESO, tb.full(tb.q() < 1, tis, np.uint8), gap=1.0,
                 exempt=(L_STOM,))

    # ---------------------------------------------------------------- liver
    liver_parts = [
        (np.array([ivc_x + 58, ax_y + 8, 45.0]) + rng.normal(0, 4, 3),
         np.array([68.0, 82.0, 72.0]) * U(0.92, 1.08), _rot(az=J(5), ax=J(4))),
        (np.array([ax_x + 2, yf + 20, 58.0]) + rng.normal(0, 4, 3),
         np.array([62.0, 34.0, 34.0]) * U(0.85, 1.15), _rot(az=-12 + J(5), ax=12 + J(4))),
        (np.array([ivc_x + 4, ax_y + 20, 45.0]), np.array([18.0, 16.0, 26.0]), None),  # caudate
        (np.array([ivc_x + 70, ax_y + 20, -8.0]) + rng.normal(0, 5, 3),
         np.array([36.0, 44.0, 42.0]) * U(0.7, 1.2), None),  # inferior right lobe
    ]
    if var is not None:  # the whole liver scales about its right-lobe centre, shifts and turns
        c0 = liver_parts[0][0].copy()
        R_l = VR("liver")
        liver_parts = [((c - c0) @ R_l.T * VS("liver") + c0 + VD("liver"), semi * VS("liver"),
                        R_l if R is None else R_l @ R) for c, semi, R in liver_parts]  # fmt: skip
    lmask_full = np.zeros(cv.shape, bool)
    for c, semi, R in liver_parts:
        sl, q = cv.ellipsoid(c, semi, R)
        if sl is None:
            continue
        lmask_full[sl] |= q < 1.0 + 0.03 * cv.N[sl]
    lsl = ndi.find_objects(lmask_full.view(np.uint8))[0]
    lsl = tuple(slice(max(a.start - 3, 0), a.stop + 3) for a in lsl)
    # smooth union
    lmask = ndi.binary_closing(lmask_full[lsl], iterations=2)
    del lmask_full
    cv.paint(lsl, lmask, L_LIVER, T.LIVER, gap=1.5, exempt=(L_IVC, L_VEIN))
    # intrahepatic vessels (venous blood, labelled liver as in AMOS)
    hv_top = np.array([ivc_x - 2, ax_y + 18, 86.0])
    vessels = [
        ([porta, porta + [30, -8, 10], porta + [62, -18, 14]], [5.0, 4.0, 2.5]),      # right PV
        ([porta, porta + [-20, 20, 14], porta + [-45, 34, 20]], [4.2, 3.2, 2.0]),     # left PV
        ([porta + [30, -8, 10], porta + [44, 14, -8], porta + [58, 28, -22]], [3.0, 2.4, 1.8]),
        ([hv_top, hv_top + [40, -14, -25], hv_top + [80, -20, -55]], [5.5, 4.0, 2.2]),  # right HV
        ([hv_top, hv_top + [22, 22, -25], hv_top + [35, 48, -55]], [5.0, 3.6, 2.0]),   # middle HV
        ([hv_top, hv_top + [-22, 22, -12], hv_top + [-50, 34, -25]], [4.5, 3.2, 1.8]),  # left HV
    ]
    for ctrl_v, rads in vessels:
        tb = cv.tube(np.asarray(ctrl_v) + rng.normal(0, 2, (3, 3)) * [[0], [1], [1]], rads)
        if tb is not None:
            cv.paint(tb.sl, tb.full(tb.q() < 1), L_LIVER, T.VEN_BLOOD, over=(L_LIVER,), gap=0)

    # ---------------------------------------------------------------- colon + small bowel
    colon = [
        [(a_c - 32, yc + 8, Z_RANGE[0] - 5), (a_c - 30, yc + 12, -60), (a_c - 45, yf + 30, -22),
         (40, ba_c + yc - 35, -40), (-20, ba_c + yc - 32, -36), (-a_c + 60, yf + 35, -5),
         (-a_c + 35, yc + 20, -5), (-a_c + 30, yc + 5, -50), (-a_c + 32, yc + 5, Z_RANGE[0] - 5)],
    ]
    for ctrl_c in colon:
        ctrl_c = np.asarray(ctrl_c, float)
        ctrl_c[1:-1] += rng.normal(0, 5, (len(ctrl_c) - 2, 3))
        r_c = U(16, 22)
        tb = cv.tube(ctrl_c, r_c)
        q, ql = tb.q(), tb.q(2.5)
        stool = cv.NL[tb.sl].ravel()[tb.ids] + 0.6 * cv.N[tb.sl].ravel()[tb.ids]
        lum = np.where(stool > U(-0.5, 0.5), T.CHYME, T.GAS)
        lum = np.where(tb.v > r_c * 0.35, T.GAS, lum)
        tis = np.where(ql < 1, lum, T.GI_WALL).astype(np.uint8)
        cv.paint(tb.sl, tb.full(q < 1), L_BOWEL, tb.full(q < 1, tis, np.uint8), gap=1.5)
    n_loops = int(rng.integers(10, 15))
    if var is not None:
        n_loops = var.n_loops
    for i_loop in range(n_loops):
        n = 9
        upper = i_loop < n_loops // 3  # jejunal loops in the left upper quadrant
        x0 = U(-a_c + 45, -10) if upper else U(-a_c + 40, a_c - 40)
        y0 = U(yf - 5, yc + ba_c - 25)
        z0 = U(-30, 10) if upper else U(-95, -30)
        steps = rng.normal(0, 1, (n, 3)) * [22, 14, 14]
        pts = np.cumsum(steps, axis=0) + [x0, y0, z0]
        pts[:, 0] = np.clip(pts[:, 0], -a_c + 25, a_c - 25)
        pts[:, 1] = np.clip(pts[:, 1], yf - 25 if upper else yf - 5, yc + ba_c - 15)
        pts[:, 2] = np.clip(pts[:, 2], Z_RANGE[0] - 5, 20 if upper else -15)
        r_b = U(10, 15)
        tb = cv.tube(pts, r_b)
        if tb is None:
            continue
        q = tb.q() - 0.04 * cv.N[tb.sl].ravel()[tb.ids]
        m = rng.choice(["fluid", "collapsed", "chyme", "gas"], p=[0.4, 0.35, 0.15, 0.1])
        if var is not None:
            g = float(np.clip(var.bowel_gas, 0.0, 0.6))
            m = vr.choice(["fluid", "collapsed", "chyme", "gas"], p=np.array([0.4, 0.35, 0.15, 0]) * (1 - g) / 0.9 + [0, 0, 0, g])
        ql = tb.q(2.0 if m != "collapsed" else r_b - 3.0)
        lum_t = {"fluid": T.GI_FLUID, "collapsed": T.GI_FLUID, "chyme": T.CHYME, "gas": T.GAS}[m]
        tis = np.where(ql < 1, lum_t, T.GI_WALL).astype(np.uint8)
        cv.paint(tb.sl, tb.full(q < 1), L_BOWEL, tb.full(q < 1, tis, np.uint8), gap=1.5)

    # ---------------------------------------------------------------- texture & gas field
    tissue, label = cv.tissue, cv.label
    tex_noise = smooth_noise(rng, axes, 7.0)
    tex = 1.0 + T.TEXTURE_AMP[tissue] * (0.75 * tex_noise + 0.55 * cv.NL)
    tex = np.clip(tex, 0.6, 1.4).astype(np.float32)
    del tex_noise
    # gas / lung proximity (smoothed on a 3x coarser grid): drives local B0 offsets
    gas = ((tissue == T.GAS) | (tissue == T.LUNG)).astype(np.float32)
    step = 3
    coarse_axes = [ax[::step] for ax in axes]
    down = [interp_matrix(ax, c) for ax, c in zip(axes, coarse_axes, strict=True)]
    g = apply_separable(gas, down)
    g = ndi.gaussian_filter(g, 10.0 / (h * step))
    up = [interp_matrix(c, ax) for c, ax in zip(coarse_axes, axes, strict=True)]
    gas_field = apply_separable(g, up).astype(np.float32)

    n_vox = int(np.count_nonzero(label == L_PANC))
    ml = n_vox * h**3 / 1000.0
    params = dict(
        bmi_knob=bmi, body_semi_lr=a_body, body_ap=2 * b_body, subq_fat_mm=t_sc,
        pancreas_config=str(config), pancreas_tail_rise_mm=rise, pancreas_scale=scale,
        pancreas_target_ml=target_ml, deformation_mm=amp, duodenum_lumen=str(mode),
        stomach_content=str(content),
    )
    if var is not None:
        params["variation"] = var.to_dict()
    return Anatomy(tissue=tissue, label=label, texture=tex, gas_field=gas_field, axes=axes,
                   spacing=h, body=body, pancreas_ml=ml, params=params)
