"""Abdominal anatomy at the pancreas level, drawn with evalsim's own primitives.

Frame: world RAS millimetres (x toward the patient's right, y anterior, z superior) with the
origin on the vertebral-body axis near the pancreatic neck. Structures and their primitive:

* body outline: star-shaped Fourier contour around an ellipse with a flat, grooved back;
  skin, subcutaneous fat (angle-dependent thickness) and the abdominal wall muscle (rectus
  with a linea alba, obliques) as radial depth bands;
* vertebrae: rounded convex hulls of random point clouds (cortex + marrow, discs), posterior
  arch, transverse and spinous processes as sphere sweeps; spinal canal a convex hull with
  CSF and cord (conus at a random level);
* muscles (paraspinal, psoas, quadratus), liver, spleen, kidneys, stomach, gallbladder:
  metaballs (Gaussian kernel sums, negative balls carve the renal and splenic hila);
* vessels, adrenals, duodenum, bowel, pancreas: sphere sweeps along centripetal Catmull-Rom
  paths; the pancreas sweep has a head lobe, a noise-modulated (lobulated) surface, a duct
  and age-dependent fat clefts, and is scaled to a sampled volume;
* a per-subject free-form deformation on a coarse cubic B-spline lattice at the end.

Structures are painted in a fixed order; each may overwrite only the labels it is allowed
to (mostly visceral fat) and keeps a fat plane of ``gap`` voxels to other organs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from napari_pandg.evalsim import _prims as P
from napari_pandg.evalsim.tissues import T, texture_amplitudes

# label ids (napari_pandg.labels, AMOS + project extras)
SPLEEN, RKID, LKID, GALL, ESO, LIVER, STOM, AORTA, IVC, PANC = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
RADR, LADR, DUOD = 11, 12, 13
PORTAL, BONE, CANAL, MUSCLE, SUBCUT, VISC, BOWEL, SMA = 16, 17, 18, 19, 20, 21, 22, 23

Z_HALF = 126.0  # fine grid covers z in [-Z_HALF, Z_HALF]


@dataclass
class EvalAnatomy:
    """Fine-grid anatomy of one subject: labels, tissue classes and texture."""

    grid: P.FineGrid
    label: np.ndarray  # uint8, napari_pandg.labels ids
    tissue: np.ndarray  # uint8, evalsim.tissues ids
    texture: np.ndarray  # float16 multiplicative texture (1 = none)
    pancreas_ml: float
    body: dict = field(default_factory=dict)
    landmarks: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)

    @property
    def affine(self) -> np.ndarray:
        return self.grid.affine

    def centroid(self, label_id: int) -> np.ndarray:
        idx = np.argwhere(self.label == label_id)
        if len(idx) == 0:
            return np.full(3, np.nan)
        return self.grid.origin + self.grid.h * idx.mean(axis=0)


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


class _Builder:
    def __init__(self, rng: np.random.Generator, h: float) -> None:
        self.rng = rng
        self.h = h
        self.params: dict = {}
        self.lm: dict = {}
        self._sample_body()
        s_max = max(self._zscale(z) for z in np.linspace(-Z_HALF, Z_HALF, 21))
        xh = self.a * s_max * 1.08 + 12
        lo = np.array([-xh, -(self.bp * s_max * 1.06 + 12), -Z_HALF])
        hi = np.array([xh, self.ha * s_max * 1.08 + 12, Z_HALF])
        shape = np.ceil((hi - lo) / h).astype(int) + 1
        self.grid = P.FineGrid(lo, shape, h)
        self.label = np.zeros(self.grid.shape, dtype=np.uint8)
        self.tissue = np.zeros(self.grid.shape, dtype=np.uint8)

    # ------------------------------------------------------------------ body
    def _sample_body(self) -> None:
        r = self.rng
        hb = _u(r, 0.0, 1.0)  # habitus: 0 lean .. 1 obese
        self.habitus = hb
        self.a = 132 + 52 * hb + r.normal(0, 6)  # half width LR
        self.ha = 108 + 72 * hb + r.normal(0, 7)  # anterior extent from the spine axis
        self.t_sc = float(np.clip(4 + 34 * hb**1.2 + r.normal(0, 3), 3.5, 44))
        self.bp = 63 + 0.75 * self.t_sc + 8 * hb + r.normal(0, 3)  # posterior extent
        self.t_m = _u(r, 6.0, 11.0) * (1.1 - 0.2 * hb)
        self.c1, self.c2 = _u(r, -0.05, 0.03), _u(r, -0.04, 0.01)
        self.fmod = P.fourier_contour(r, 5, 0.025)
        self.fsc = P.fourier_contour(r, 4, 0.15)
        self.groove = _u(r, 2.0, 10.0)
        self.k_post = _u(r, 1.06, 1.16)
        self.muscle_mass = _u(r, 0.8, 1.2)
        self.yc = (self.ha - self.bp) / 2
        self.b = (self.ha + self.bp) / 2
        # spine
        self.lord = _u(r, 0.0, 12.0)
        self.scol = _u(r, -3.0, 3.0)
        self.wv = _u(r, 20.0, 25.0)
        self.dv = _u(r, 15.0, 19.0)
        self.params.update(habitus=hb, half_width=self.a, anterior=self.ha, posterior=self.bp,
                           subcut_fat=self.t_sc, wall_muscle=self.t_m)  # fmt: skip

    def _zscale(self, z: float) -> float:
        t = z / 100.0
        return 1.0 + self.c1 * t + self.c2 * t * t

    def y_sp(self, z):
        return -self.lord * np.asarray(z) / 100.0

    def x_sp(self, z):
        return self.scol * np.sin(np.asarray(z) / 150.0)

    def _outer_r(self, theta: np.ndarray) -> np.ndarray:
        a, b = self.a, self.b
        re = a * b / np.sqrt((b * np.cos(theta)) ** 2 + (a * np.sin(theta)) ** 2)
        re = re * self.fmod(theta)
        post = np.sin(theta) < 0
        flat = b / np.maximum(np.abs(np.sin(theta)), 1e-3)
        blend = 1.0 + (self.k_post - 1.0) * np.clip(-np.sin(theta) * 2.5, 0, 1)
        re = np.where(post, np.minimum(re * blend, flat), re)
        re = re - self.groove * np.exp(-(((theta + np.pi / 2) / 0.10) ** 2))
        return re.astype(np.float32)

    def _fat_t(self, theta: np.ndarray) -> np.ndarray:
        s = np.sin(theta)
        t = self.t_sc * (0.75 + 0.35 * np.maximum(s, 0) + 0.3 * np.cos(theta) ** 2) * self.fsc(theta)
        return np.maximum(t, 2.0).astype(np.float32)

    def _muscle_t(self, theta: np.ndarray) -> np.ndarray:
        d = np.abs(np.angle(np.exp(1j * (theta - np.pi / 2))))  # angle from anterior midline
        t = np.full_like(theta, self.t_m, dtype=np.float32)
        t = np.where((d > 0.05) & (d < 0.55), t * 1.45 * self.muscle_mass, t)  # rectus
        t = np.where(d <= 0.05, 1.2, t)  # linea alba
        post = np.sin(theta) < 0
        t = np.where(post, t * np.maximum(0.0, 1 - 1.25 * np.abs(np.sin(theta))), t)
        return t.astype(np.float32)

    def inner_x(self, z: float, side: int = 1) -> float:
        """Half width of the abdominal cavity at height z on the right (+1) / left (-1)."""
        th = np.array([0.0 if side > 0 else np.pi])
        return float(self._outer_r(th)[0] * self._zscale(z) - self._fat_t(th)[0] - self._muscle_t(th)[0] - 2)

    def inner_front(self, z: float, x: float = 0.0) -> float:
        th = np.array([np.arctan2(self.b, x if abs(x) > 1e-3 else 1e-3)])
        r = self._outer_r(th)[0] * self._zscale(z) - self._fat_t(th)[0] - self._muscle_t(th)[0] - 2
        return float(self.yc + r * np.sin(th[0]))

    def paint_body(self) -> None:
        g = self.grid
        x = g.axis(0)[:, None]
        y = g.axis(1)[None, :]
        theta = np.arctan2(y - self.yc, x)
        rad = np.sqrt(x * x + (y - self.yc) ** 2)
        r_out = self._outer_r(theta)
        t_fat = self._fat_t(theta)
        t_mus = self._muscle_t(theta)
        zs = g.axis(2)
        for k, z in enumerate(zs):
            s = self._zscale(float(z))
            depth = r_out * s - rad
            lab = np.zeros(depth.shape, np.uint8)
            tis = np.zeros(depth.shape, np.uint8)
            body = depth > 0
            lab[body], tis[body] = SUBCUT, T["subcut_fat"]
            skin = body & (depth < 1.8)
            tis[skin] = T["skin"]
            wall = body & (depth >= t_fat) & (depth < t_fat + t_mus)
            lab[wall], tis[wall] = MUSCLE, T["muscle"]
            cav = body & (depth >= t_fat + t_mus)
            lab[cav], tis[cav] = VISC, T["visceral_fat"]
            self.label[:, :, k] = lab
            self.tissue[:, :, k] = tis
        self.body = dict(center=(0.0, float(self.yc)), half_width=float(self.a), half_ap=float(self.b),
                         y_front=float(self.yc + self.b), y_back=float(self.yc - self.b))  # fmt: skip

    # ------------------------------------------------------------------ painting
    def paint(self, sl, mask, label, tissue, allowed=(VISC,), gap: int = 0, exempt=()) -> np.ndarray:
        """Write ``label``/``tissue`` (scalar or array) where ``mask`` and the current label is
        in ``allowed``, keeping ``gap`` voxels from other non-fat structures."""
        if sl is None:
            return np.zeros((0,), bool)
        cur = self.label[sl]
        ok = mask & np.isin(cur, np.asarray(allowed, np.uint8))
        if gap > 0 and ok.any():
            keep = np.isin(cur, np.asarray((0, VISC, SUBCUT, MUSCLE, label, *allowed, *exempt), np.uint8))
            near = ndi.binary_dilation(~keep, iterations=gap)
            ok &= ~near
        cur[ok] = label
        tv = self.tissue[sl]
        if np.isscalar(tissue):
            tv[ok] = tissue
        else:
            tv[ok] = tissue[ok]
        return ok

    def sweep(self, ctrl, radii_ctrl, step=1.5, scale=(1, 1, 1), reach=1.3, with_param=False):
        path = P.catmull_rom(np.asarray(ctrl, float), step=step)
        s_ctrl = P.arclength(np.asarray(ctrl, float))
        s_path = P.arclength(path)
        radii_ctrl = np.asarray(radii_ctrl, float)
        if len(radii_ctrl) == len(s_ctrl):
            s_r = s_ctrl / max(s_ctrl[-1], 1e-6) * s_path[-1]
        else:  # radii spread evenly along the path
            s_r = np.linspace(0.0, s_path[-1], len(radii_ctrl))
        radii = np.interp(s_path, s_r, radii_ctrl)
        lo, hi = P.sweep_box(path, radii, scale, pad=reach + 0.05)
        sl = self.grid.box(lo, hi)
        if sl is None:
            return None, None, path, radii
        out = P.sweep_field(self.grid, sl, path, radii, scale=scale, reach=reach, with_param=with_param)
        return sl, out, path, radii

    def paint_sweep(self, ctrl, radii, label, tissue, allowed=(VISC,), gap=0, scale=(1, 1, 1), wall=None,
                    lumen_tissue=None, exempt=(), step=1.5):
        """Tube: ``tissue`` where q <= 1; with ``wall`` (mm) the inner part gets ``lumen_tissue``."""
        sl, q, path, rr = self.sweep(ctrl, radii, step=step, scale=scale)
        if sl is None:
            return None, path, rr
        mask = q <= 1.0
        tis: np.ndarray | int = tissue
        if wall is not None and lumen_tissue is not None:
            rmin = float(np.min(rr))
            inner = q <= max(1.0 - wall / rmin, 0.0)
            tis = np.where(inner, np.uint8(lumen_tissue), np.uint8(tissue))
        self.paint(sl, mask, label, tis, allowed=allowed, gap=gap, exempt=exempt)
        return sl, path, rr

    def metaball_f(self, centers, radii, weights=None, metric=None, pad=1.6):
        lo, hi = P.metaball_box(np.asarray(centers), np.asarray(radii), pad=pad, metric=metric)
        sl = self.grid.box(lo, hi)
        if sl is None:
            return None, None
        return sl, P.metaball_field(self.grid, sl, centers, radii, weights, metric)

    def metaball(self, centers, radii, weights=None, metric=None, level=0.5):
        sl, f = self.metaball_f(centers, radii, weights, metric)
        if sl is None:
            return None, None
        return sl, f >= level

    def metaball_volume(self, centers, radii, target_ml, weights=None, metric=None, allowed=(VISC,),
                        surface_noise: float = 0.08):
        """Metaball organ whose iso-level is chosen to give ``target_ml`` inside ``allowed``."""
        sl, f = self.metaball_f(centers, radii, weights, metric, pad=1.9)
        if sl is None:
            return None, None, 0.5
        ok = np.isin(self.label[sl], np.asarray(allowed, np.uint8))
        if surface_noise > 0:  # irregular (non-geometric) outline
            f = f * (1.0 + np.float32(surface_noise) * np.clip(P.coarse_noise(self.rng, f.shape, self.h, 7.0), -3, 3))
        lev = P.level_for_volume(f, target_ml * 1000.0 / self.h**3, ok)
        return sl, (f >= lev) & ok, lev

    def volume_ml(self, mask) -> float:
        return float(np.count_nonzero(mask)) * self.h**3 / 1000.0

    # ------------------------------------------------------------------ spine and muscles
    def paint_spine(self) -> None:
        r, g = self.rng, self.grid
        hv, hd = _u(r, 23.0, 28.0), _u(r, 7.0, 10.0)
        per = hv + hd
        z0 = _u(r, 0, per)
        cw, ch = _u(r, 9.0, 12.0), _u(r, 6.5, 8.5)
        z_conus = _u(r, -45.0, 5.0)
        rc = _u(r, 3.5, 4.8)
        xs_all = g.axis(0)[:, None]
        ys_all = g.axis(1)[None, :]
        zs = g.axis(2)
        levels = np.arange(z0 - 6 * per, z0 + 6 * per + 1, per)
        levels = levels[(levels > -Z_HALF - per) & (levels < Z_HALF + per)]
        hulls = []
        for zc in levels:
            grow = 1.0 + 0.012 * (-zc / 30.0)
            pts = P.random_hull_points(r, 16, (self.wv * grow, self.dv * grow), 0.07)
            pts[:, 1] = np.where(pts[:, 1] < -0.55 * self.dv, -0.55 * self.dv + (pts[:, 1] + 0.55 * self.dv) * 0.35,
                                 pts[:, 1])  # fmt: skip
            hulls.append((zc, pts))
        # bounding box in xy around the spine
        x_lo, x_hi = -self.wv * 1.4 - 45, self.wv * 1.4 + 45
        sl_xy = g.box((x_lo, -self.bp, -Z_HALF), (x_hi, self.dv * 1.5 + 20, Z_HALF))
        xs = xs_all[sl_xy[0]]
        ys = ys_all[:, sl_xy[1]]
        sdfs = []
        for zc, pts in hulls:
            xc, yc = float(self.x_sp(zc)), float(self.y_sp(zc))
            sdfs.append(P.hull_sdf_2d(pts, xs - xc, ys - yc))
        canal_pts = P.random_hull_points(r, 12, (cw, ch), 0.06)
        for k, z in enumerate(zs):
            z = float(z)
            n = int(np.argmin(np.abs(levels - z)))
            zc = levels[n]
            xc, yc = float(self.x_sp(z)), float(self.y_sp(z))
            lab = self.label[sl_xy[0], sl_xy[1], k]
            tis = self.tissue[sl_xy[0], sl_xy[1], k]
            dz = abs(z - zc)
            if dz <= hv / 2:
                sd = sdfs[n] - 1.0
                body = sd <= 0
                lab[body] = BONE
                tis[body] = T["marrow"]
                shell = body & ((sd > -1.6) | (dz > hv / 2 - 1.4))
                tis[shell] = T["cortical_bone"]
            else:
                # disc: blend of the two neighbouring hulls, slightly bulging
                n2 = n + (1 if z > zc else -1)
                n2 = int(np.clip(n2, 0, len(levels) - 1))
                sd = 0.5 * (sdfs[n] + sdfs[n2]) - 1.0
                disc = sd <= 0
                lab[disc] = BONE
                tis[disc] = T["disc"]
            # canal
            ccy = yc - self.dv - ch - 1.5
            cs = P.hull_sdf_2d(canal_pts, xs - xc, ys - ccy)
            can = cs <= 0
            lab[can] = CANAL
            tis[can] = T["csf"]
            if z > z_conus:
                cord = ((xs - xc) ** 2 + (ys - ccy - 1.0) ** 2) <= rc * rc
                tis[cord & can] = T["cord"]
        self.lm["canal_center_y"] = float(-self.dv - ch - 1.5)
        # posterior arch, processes (sweeps)
        for zc in levels:
            if abs(zc) > Z_HALF + 10:
                continue
            xc, yc = float(self.x_sp(zc)), float(self.y_sp(zc))
            ccy = yc - self.dv - ch - 1.5
            za = zc + 2.0
            back = ccy - ch - 4
            spin_len = _u(r, 28, 40)
            pieces = [
                ([(xc - self.wv * 0.5, yc - self.dv * 0.7, za), (xc - cw - 4, ccy, za), (xc - cw * 0.5, back, za),
                  (xc, back - 2, za)], [4.5, 4.5, 4.0, 4.0]),
                ([(xc + self.wv * 0.5, yc - self.dv * 0.7, za), (xc + cw + 4, ccy, za), (xc + cw * 0.5, back, za),
                  (xc, back - 2, za)], [4.5, 4.5, 4.0, 4.0]),
                ([(xc, back - 2, za), (xc, back - spin_len * 0.6, za - 6), (xc, back - spin_len, za - 12)],
                 [4.5, 4.0, 3.5]),
                ([(xc - cw - 4, ccy + 2, za), (xc - cw - 30, ccy + 4, za + 1)], [4.0, 3.0]),
                ([(xc + cw + 4, ccy + 2, za), (xc + cw + 30, ccy + 4, za + 1)], [4.0, 3.0]),
            ]  # fmt: skip
            for ctrl, rad in pieces:
                sl, q, _, _ = self.sweep(ctrl, rad, step=1.2, scale=(1, 1, 0.55))
                if sl is None:
                    continue
                tis = np.where(q <= 0.62, np.uint8(T["marrow"]), np.uint8(T["cortical_bone"]))
                self.paint(sl, q <= 1.0, BONE, tis, allowed=(VISC, MUSCLE, SUBCUT))
        self.params.update(vertebra_height=hv, disc_height=hd, conus_z=z_conus)

    def _paint_paraspinal(self, side: int) -> None:
        r, g = self.rng, self.grid
        mm = self.muscle_mass
        th = np.array([-np.pi / 2 + side * 0.35])
        y_in = float(self.yc + (self._outer_r(th)[0] - self._fat_t(th)[0]) * np.sin(th[0]))
        base = np.array([
            (9.0, -self.dv - 17), (9.0, -self.bp * 2), (36.0 * mm, -self.bp * 2),
            (48.0 * mm + _u(r, -5, 5), -self.dv - 22 + _u(r, -4, 4)), (32.0 * mm, -self.dv - 6), (20.0, -self.dv - 11),
        ])  # fmt: skip
        base += r.normal(0, 1.5, base.shape) * np.array([[0, 0]] + [[1, 1]] * 5)
        lo = (min(side * 2, side * 90), y_in - 5, -Z_HALF)
        hi = (max(side * 2, side * 90), 10.0, Z_HALF)
        sl = g.box(np.minimum(lo, hi), np.maximum(lo, hi))
        xs = g.axis(0)[sl[0]][:, None]
        ys = g.axis(1)[sl[1]][None, :]
        for k in range(sl[2].start, sl[2].stop):
            z = float(g.axis(2)[k])
            f = 1.0 + 0.12 * np.clip(-z / 100.0, -0.6, 1.0)
            pts = base * np.array([[f, 1.0]])
            pts[:, 0] *= side
            pts[:, 1] = np.maximum(pts[:, 1], y_in - 4 - self.y_sp(z))
            sd = P.hull_sdf_2d(pts, xs - float(self.x_sp(z)), ys - float(self.y_sp(z))) - 5.0
            lab = self.label[sl[0], sl[1], k]
            tis = self.tissue[sl[0], sl[1], k]
            m = (sd <= 0) & (lab == VISC)
            lab[m] = MUSCLE
            tis[m] = T["muscle"]

    def paint_muscles(self) -> None:
        r = self.rng
        mm = self.muscle_mass
        for side in (-1, 1):
            # paraspinal mass (erector spinae + multifidus): rounded convex hull per slice
            self._paint_paraspinal(side)
            # psoas: grows inferiorly, moves lateral/anterior
            z_top = _u(r, 5, 35)
            zz = np.arange(z_top, -Z_HALF - 20, -12.0)
            t = (z_top - zz) / (z_top + Z_HALF)
            cen = np.stack([side * (self.wv + 4 + 24 * t), self.y_sp(zz) + 2 + 10 * t, zz], axis=1)
            rad = (5 + 16 * t**0.7) * mm * _u(r, 0.85, 1.15)
            sl, m = self.metaball(cen, rad, P.chain_weights(cen, rad, 1 / 0.6), metric=np.diag([1.0, 1.1, 0.6]))
            self.paint(sl, m, MUSCLE, T["muscle"], allowed=(VISC,))
            # quadratus lumborum
            zq = np.arange(_u(r, -5, 20), -Z_HALF - 20, -12.0)
            tq = np.clip((-zq) / 100.0, 0, 1)
            cen = np.stack([side * (self.wv + 40 + 12 * tq), self.y_sp(zq) - self.dv - 6, zq], axis=1)
            rad = (7 + 7 * tq) * mm
            sl, m = self.metaball(cen, rad, P.chain_weights(cen, rad, 1 / 0.6), metric=np.diag([0.9, 1.3, 0.6]))
            self.paint(sl, m, MUSCLE, T["muscle"], allowed=(VISC,))

    # ------------------------------------------------------------------ vessels
    def plan_vessels(self) -> None:
        r, lm = self.rng, self.lm
        zz = np.linspace(-Z_HALF - 5, Z_HALF + 5, 11)
        r_a = _u(r, 9.0, 12.5) * (1 + 0.002 * (self.rng.uniform(20, 80) - 40))
        xa0 = -_u(r, 7, 17)
        gap_a = _u(r, 1.0, 4.0)
        ya = self.y_sp(zz) + self.dv + r_a + gap_a - 0.06 * np.maximum(zz - 70, 0)
        xa = xa0 + 0.04 * zz + r.normal(0, 1.0, len(zz))
        aorta = np.stack([xa, ya, zz], axis=1)
        lm.update(aorta=aorta, r_aorta=r_a)
        # IVC
        r_i, sy = _u(r, 11.0, 14.0), _u(r, 1.25, 1.7)
        xi0 = _u(r, 17, 28)
        z_liv = _u(r, 20, 45)
        yi = self.y_sp(zz) + self.dv + r_i / sy + _u(r, 2, 8) + 0.35 * np.maximum(zz - z_liv, 0)
        xi = xi0 + 0.12 * np.maximum(zz - z_liv, 0) + r.normal(0, 1.0, len(zz))
        lm.update(ivc=np.stack([xi, yi, zz], axis=1), r_ivc=r_i, ivc_sy=sy, z_ivc_liver=z_liv)
        # SMA
        z0 = _u(r, -2, 18)
        ax_at = lambda z: np.array([np.interp(z, zz, xa), np.interp(z, zz, ya)])  # noqa: E731
        xa_z0, ya_z0 = ax_at(z0)
        sma = np.array([
            (xa_z0, ya_z0 + r_a - 3, z0), (xa_z0 + 2, ya_z0 + r_a + 9, z0 - 9),
            (xa_z0 + 4, ya_z0 + r_a + 18, z0 - 32), (xa_z0 + 6, ya_z0 + r_a + 24, z0 - 80),
            (xa_z0 + 9, ya_z0 + r_a + 27, -Z_HALF - 10),
        ])  # fmt: skip
        sma[:, :2] += r.normal(0, 1.5, (5, 2)) * np.array([[0, 0]] + [[1, 1]] * 4)
        lm.update(sma=sma, r_sma=_u(r, 3.3, 4.5), sma_origin_z=z0)
        # SMV + confluence + portal vein
        z_c = z0 - _u(r, 6, 16)
        dx_v = _u(r, 10, 15)
        sz = np.array([-Z_HALF - 10, -80.0, -40.0, z_c])
        sx = np.interp(sz, sma[::-1, 2], sma[::-1, 0]) + dx_v + r.normal(0, 1.5, 4)
        sy_ = np.interp(sz, sma[::-1, 2], sma[::-1, 1]) + _u(r, 0, 4)
        smv = np.stack([sx, sy_, sz], axis=1)
        conf = smv[-1].copy()
        r_pv = _u(r, 6.0, 7.5)
        hil = conf + np.array([_u(r, 33, 46), _u(r, -16, -4), _u(r, 26, 40)])
        portal = np.array([conf, conf + np.array([14, -6, 9]) + r.normal(0, 1.5, 3), hil])
        lm.update(smv=smv, r_smv=_u(r, 5.0, 6.5), confluence=conf, portal=portal, r_portal=r_pv, hilum=hil)

    def paint_vessels(self) -> None:
        lm = self.lm
        ra = lm["r_aorta"]
        self.paint_sweep(lm["aorta"], [ra * 1.05, ra, ra * 0.93], AORTA, T["arterial_blood"], allowed=(VISC, MUSCLE))
        ri = lm["r_ivc"]
        self.paint_sweep(lm["ivc"], [ri, ri, ri * 1.1], IVC, T["ivc_blood"], allowed=(VISC, MUSCLE),
                         scale=(1.0, lm["ivc_sy"], 1.0))  # fmt: skip
        rs = lm["r_sma"]
        self.paint_sweep(lm["sma"], [rs * 1.2, rs, rs, rs * 0.8, rs * 0.7], SMA, T["arterial_blood"],
                         allowed=(VISC, AORTA))  # fmt: skip
        rv = lm["r_smv"]
        self.paint_sweep(lm["smv"], [rv * 0.8, rv * 0.9, rv, rv * 1.1], PORTAL, T["portal_blood"])
        rp = lm["r_portal"]
        self.paint_sweep(lm["portal"], [rp, rp, rp * 0.95], PORTAL, T["portal_blood"], allowed=(VISC, PORTAL))

    # ------------------------------------------------------------------ organs
    def plan_spleen(self) -> None:
        r = self.rng
        zs = _u(r, 15, 45)
        R = _u(r, 21, 27) * _u(r, 0.9, 1.12)
        L = _u(r, 85, 125)
        xi = self.inner_x(zs, -1)
        ys = float(self.y_sp(zs)) - _u(r, 5, 30)
        cen = np.array([-(xi - R * 0.62), ys, zs])
        ax = _unit((-0.1 + r.normal(0, 0.05), 0.55 + r.normal(0, 0.1), -0.8))
        ts = np.linspace(-1, 1, 5) * (L / 2 - R * 0.8)
        balls = cen[None, :] + ts[:, None] * ax[None, :]
        balls[:, 0] = np.maximum(balls[:, 0], -(np.array([self.inner_x(z, -1) for z in balls[:, 2]]) - R * 0.6))
        radii = R * np.array([0.75, 0.95, 1.0, 0.92, 0.7]) * r.uniform(0.9, 1.1, 5)
        hil = cen + np.array([R * 0.75, R * 0.35, -3.0])
        self.lm.update(spleen_balls=balls, spleen_r=radii, spleen_hilum=hil, spleen_R=R)

    def paint_spleen(self) -> None:
        lm = self.lm
        balls, radii = lm["spleen_balls"], lm["spleen_r"]
        R = lm["spleen_R"]
        carve = lm["spleen_hilum"] + np.array([R * 0.75, 0.0, 0.0])
        cen = np.vstack([balls, carve[None]])
        rad = np.concatenate([radii, [R * 0.8]])
        w = np.concatenate([P.chain_weights(balls, radii), [-0.6]])
        target = _u(self.rng, 130, 320)
        sl, m, _ = self.metaball_volume(cen, rad, target, w, metric=np.diag([1.55, 1.0, 0.85]))
        m = _largest(m)
        self.paint(sl, m, SPLEEN, T["spleen"], gap=1)
        self.lm["spleen_volume_ml"] = self.volume_ml(self.label[sl] == SPLEEN)

    def plan_kidneys(self) -> None:
        r = self.rng
        zl = _u(r, -30, 2)
        zr = zl - _u(r, 8, 25)
        for side, z, name in ((-1, zl, "lkid"), (1, zr, "rkid")):
            L, R = _u(r, 98, 124), _u(r, 23, 28)
            x = side * (self.wv + _u(r, 38, 52))
            y = float(self.y_sp(z)) - _u(r, -4, 12)
            c = np.array([x, y, z])
            ax = _unit((-side * _u(r, 0.15, 0.35), -_u(r, 0.05, 0.25), 1.0))
            hil = _unit((-side * 0.8, 0.65, 0.0))
            self.lm[name] = dict(center=c, axis=ax, hilum_dir=hil, L=L, R=R,
                                 top=c + ax * L / 2, bottom=c - ax * L / 2)  # fmt: skip

    def paint_kidneys(self) -> None:
        for name, lab in (("lkid", LKID), ("rkid", RKID)):
            k = self.lm[name]
            c, ax, hd, L, R = k["center"], k["axis"], k["hilum_dir"], k["L"], k["R"]
            ts = np.linspace(-1, 1, 4) * (L / 2 - R * 0.85)
            balls = c[None] + ts[:, None] * ax[None]
            radii = R * np.array([0.92, 1.0, 1.0, 0.95]) * self.rng.uniform(0.93, 1.07, 4)
            # metric: flatten along the antero-posterior direction of the kidney frame
            e3 = ax
            e2 = _unit(np.cross(e3, (1.0, 0, 0)))
            e1 = np.cross(e2, e3)
            metric = np.stack([e1, e2 * 1.3, e3 * 0.93])
            hil_c = c + hd * R * 0.95
            w = P.chain_weights(balls, radii, 1 / 0.93)
            cen_all = np.vstack([balls, hil_c[None]])
            rad_all = np.concatenate([radii, [R * 0.55]])
            w_all = np.concatenate([w, [-0.7]])
            target = _u(self.rng, 115, 190)
            sl, m, lev = self.metaball_volume(cen_all, rad_all, target, w_all, metric=metric)
            if sl is None:
                continue
            full = P.metaball_field(self.grid, sl, balls, radii, w, metric) >= lev
            m = _largest(m)
            # cortex / medulla from the inside distance
            dist = _edt(m) * self.h
            t_c = _u(self.rng, 5.0, 8.0)
            noise = P.coarse_noise(self.rng, m.shape, self.h, 5.0, factor=2)
            tis = np.full(m.shape, T["renal_cortex"], np.uint8)
            tis[(dist > t_c) & (noise > -0.35)] = T["renal_medulla"]
            self.paint(sl, m, lab, tis, gap=1)
            # renal sinus: fat + pelvis (urine) in the carved hilum, inside the envelope
            if full is not None:
                sinus = full & ~m
                sx, sy, sz = self.grid.coords(sl)
                pel = ((sx - hil_c[0]) ** 2 + (sy - hil_c[1]) ** 2 + (sz - hil_c[2]) ** 2) < (R * 0.28) ** 2
                self.paint(sl, sinus & ~pel, VISC, T["visceral_fat"])
                self.paint(sl, sinus & pel, lab, T["urine"])
            self.lm[name]["volume_ml"] = self.volume_ml(self.label[sl] == lab)

    def paint_adrenals(self) -> None:
        r, lm = self.rng, self.lm
        ivc = lm["ivc"]
        rk, lk = lm["rkid"], lm["lkid"]
        zt = rk["top"][2] + _u(r, 6, 14)
        xi = np.interp(zt, ivc[:, 2], ivc[:, 0])
        yi = np.interp(zt, ivc[:, 2], ivc[:, 1])
        apex = np.array([xi + _u(r, 3, 9), yi - lm["r_ivc"] / lm["ivc_sy"] - _u(r, 4, 9), zt])
        ra = _u(r, 2.8, 3.6)
        for limb in (np.array([11, -19, -21]), np.array([-4, -23, -18])):
            self.paint_sweep([apex, apex + limb * 0.5, apex + limb], [ra * 1.2, ra, ra * 0.8], RADR, T["adrenal"],
                             step=0.8)  # fmt: skip
        aorta = lm["aorta"]
        zt = lk["top"][2] + _u(r, 0, 8)
        xa = np.interp(zt, aorta[:, 2], aorta[:, 0])
        ya = np.interp(zt, aorta[:, 2], aorta[:, 1])
        apex = np.array([xa - lm["r_aorta"] - _u(r, 7, 13), ya - _u(r, 0, 8), zt])
        for limb in (np.array([-12, -18, -23]), np.array([2, -23, -25])):
            self.paint_sweep([apex, apex + limb * 0.5, apex + limb], [ra * 1.2, ra, ra * 0.8], LADR, T["adrenal"],
                             step=0.8)  # fmt: skip

    # ------------------------------------------------------------------ pancreas
    def plan_pancreas(self, target_ml: float) -> None:
        r, lm = self.rng, self.lm
        conf, sma, aorta = lm["confluence"], lm["sma"], lm["aorta"]
        smv = lm["smv"]
        zc = conf[2]
        r_pv = lm["r_portal"]

        def at(path, z):
            return np.array([np.interp(z, path[::-1, 2], path[::-1, d]) if path[0, 2] > path[-1, 2]
                             else np.interp(z, path[:, 2], path[:, d]) for d in range(2)])  # fmt: skip

        xa, ya = at(aorta, zc)
        ra = lm["r_aorta"]
        z_u = zc - _u(r, 24, 36)
        xs_u, _ = at(sma, z_u)
        xv_u, yv_u = at(smv, z_u)
        U = np.array([0.5 * (xs_u + xv_u) + _u(r, -2, 4), yv_u - _u(r, 9, 13), z_u])
        H = np.array([conf[0] + _u(r, 20, 30), conf[1] + _u(r, -3, 6), zc - _u(r, 10, 20)])
        N = np.array([conf[0] + _u(r, -4, 2), conf[1] + r_pv + _u(r, 8, 12), zc + _u(r, 0, 6)])
        B = np.array([xa - _u(r, 10, 24), ya + ra + _u(r, 22, 32), zc + _u(r, 5, 15)])
        hil = lm["spleen_hilum"]
        Tt = np.array([hil[0] + _u(r, 8, 18), hil[1] + _u(r, 0, 10), hil[2] + _u(r, -8, 6)])
        config = r.choice(["oblique", "horizontal", "sigmoid", "inverted_v"])
        M = 0.5 * (B + Tt) + r.normal(0, 3, 3)
        if config == "horizontal":
            Tt[2] = B[2] + _u(r, -3, 8)
            M[2] = 0.5 * (B[2] + Tt[2])
        elif config == "sigmoid":
            M += np.array([0, _u(r, 5, 12), -_u(r, 5, 12)])
        elif config == "inverted_v":
            B[2] += _u(r, 8, 15)
            M[2] = B[2] + _u(r, 0, 6)
        ctrl = np.array([U, H, N, B, M, Tt])
        radii = np.array([6.5, 15.0, 7.5, 10.5, 10.0, 9.0]) * r.uniform(0.85, 1.15, 6)
        kz = _u(r, 0.72, 0.9)
        head2 = np.array([H, H + np.array([_u(r, 0, 5), _u(r, -4, 3), -_u(r, 10, 16)])])
        age = self.params.get("age", 50.0)
        lam = 0.06 + 0.14 * np.clip((age - 20) / 60, 0, 1)
        self.params.update(pancreas_config=str(config), pancreas_target_ml=float(target_ml),
                           pancreas_lobulation=float(lam))  # fmt: skip

        # shape field: min of the two sweeps, lobulated by noise
        path = P.catmull_rom(ctrl, step=1.2)
        s_c = P.arclength(ctrl)
        s_p = P.arclength(path)
        rp = np.interp(s_p, s_c / s_c[-1] * s_p[-1], radii)
        path2 = P.catmull_rom(head2, step=1.2)
        rp2 = np.full(len(path2), radii[1] * _u(r, 0.75, 0.9))
        sc = (1.0, 1.0, kz)
        reach = 1.7
        lo1, hi1 = P.sweep_box(path, rp, sc, pad=reach + 0.1)
        lo2, hi2 = P.sweep_box(path2, rp2, sc, pad=reach + 0.1)
        lo, hi = P.box_union([(lo1, hi1), (lo2, hi2)])
        sl = self.grid.box(lo, hi)
        q1 = P.sweep_field(self.grid, sl, path, rp, scale=sc, reach=reach)
        q2 = P.sweep_field(self.grid, sl, path2, rp2, scale=sc, reach=reach)
        q = np.minimum(q1, q2)
        noise = P.spectral_noise(r, q.shape, self.h, 4.5)
        q = q / (1.0 + np.float32(lam) * np.clip(noise, -2.5, 2.5))
        # radius scale k so that the (unclipped) gland has the target volume
        vox = self.h**3 / 1000.0
        lo_k, hi_k = 0.3, reach - 0.05
        for _ in range(30):
            k = 0.5 * (lo_k + hi_k)
            v = np.count_nonzero(q <= k) * vox
            if v > target_ml:
                hi_k = k
            else:
                lo_k = k
        k = 0.5 * (lo_k + hi_k)
        self.lm.update(panc_sl=sl, panc_q=q, panc_k=k, panc_path=path, panc_r=rp * k, panc_kz=kz,
                       panc_ctrl=ctrl, panc_head=H, panc_head_r=radii[1] * k)  # fmt: skip
        # splenic vein along the posterior surface, neck -> tail -> hilum
        i_n = int(np.argmin(np.linalg.norm(path - N, axis=1)))
        seg = path[i_n::12]
        rseg = rp[i_n::12] * k
        r_sv = _u(r, 3.5, 5.0)
        off = np.stack([np.zeros(len(seg)), -(rseg + r_sv) * 0.85, rseg * 0.45], axis=1)
        sv = np.vstack([conf + np.array([0, 0, 2.0]), (seg + off)[1:], hil + np.array([3.0, 0, 0])])
        self.lm.update(splenic_vein=sv, r_sv=r_sv)

    def paint_splenic_vein(self) -> None:
        sv = self.lm["splenic_vein"]
        r = self.lm["r_sv"]
        self.paint_sweep(sv, np.full(len(sv), r), PORTAL, T["portal_blood"], allowed=(VISC, PORTAL), step=1.0)

    def paint_pancreas(self) -> None:
        lm, r = self.lm, self.rng
        sl, q, k = lm["panc_sl"], lm["panc_q"], lm["panc_k"]
        mask = q <= k
        age = self.params.get("age", 50.0)
        tis = np.full(mask.shape, T["pancreas"], np.uint8)
        cleft_noise = P.spectral_noise(r, mask.shape, self.h, 2.0)
        thr = 2.4 - 0.018 * max(age - 25, 0)
        tis[cleft_noise > thr] = T["pancreas_fat_cleft"]
        # main duct: thin sweep along the centre line from the tail to the head
        path = lm["panc_path"]
        r_d = _u(r, 0.9, 1.3) + 0.006 * max(age - 40, 0)
        qd = P.sweep_field(self.grid, sl, path[::-1][: int(len(path) * 0.85)], np.full(int(len(path) * 0.85), r_d),
                           reach=1.05)  # fmt: skip
        tis[qd <= 1.0] = T["pancreatic_duct"]
        self.paint(sl, mask, PANC, tis, allowed=(VISC,), gap=1, exempt=(PORTAL,))
        del lm["panc_q"]

    def paint_duodenum(self) -> None:
        r, lm = self.rng, self.lm
        H, rh = lm["panc_head"], lm["panc_head_r"]
        kz = lm["panc_kz"]
        aorta, sma = lm["aorta"], lm["sma"]
        ra = lm["r_aorta"]
        rd = _u(r, 10.0, 13.0)
        x2 = H[0] + rh + rd + _u(r, 2, 5)
        z3 = H[2] - rh / kz * 0.9 - rd - _u(r, 3, 8)
        xa = float(np.interp(z3, aorta[:, 2], aorta[:, 0]))
        ya = float(np.interp(z3, aorta[:, 2], aorta[:, 1]))
        ys = float(np.interp(z3, sma[::-1, 2], sma[::-1, 1]))
        y3 = max(0.5 * (ya + ra + ys), ya + ra * 0.2 + rd * 0.6)
        conf = lm["confluence"]
        py = np.array([conf[0] + _u(r, 6, 16), H[1] + rh + _u(r, 14, 24), H[2] + _u(r, 22, 32)])
        ctrl = np.array([
            py, (H[0] + 8, H[1] + rh + 8, py[2] + 2), (x2, H[1] + 4, H[2] + 22), (x2 + 2, H[1] - 2, H[2] - 4),
            (x2, H[1] - 4, z3 + 10), (x2 - 14, y3 + 2, z3), (xa + 22, y3, z3 - 3), (xa - ra - 4, y3, z3 + 2),
            (xa - ra - 14, y3 + 6, z3 + 18), (xa - ra - 22, ya + ra + 22, conf[2] - _u(r, 8, 18)),
        ])  # fmt: skip
        ctrl[1:] += r.normal(0, 1.5, (len(ctrl) - 1, 3))
        radii = rd * np.array([0.8, 1.25, 1.05, 1.0, 1.0, 1.0, 0.95, 0.9, 0.95, 0.9])
        content = r.choice(["fluid", "gas", "collapsed"], p=[0.5, 0.15, 0.35])
        lumen = {"fluid": T["gi_fluid"], "gas": T["gas"], "collapsed": T["gi_wall"]}[str(content)]
        wall = _u(r, 2.0, 3.0) if content != "collapsed" else 1.0
        if content == "collapsed":
            radii = radii * 0.7
        self.paint_sweep(ctrl, radii, DUOD, T["gi_wall"], gap=1, wall=wall, lumen_tissue=lumen, exempt=(PANC, STOM))
        lm.update(pylorus=py, duodenum_content=str(content))
        self.params["duodenum_content"] = str(content)

    def paint_liver(self) -> None:
        r, lm = self.rng, self.lm
        ivc = lm["ivc"]
        z_tip = -_u(r, 25, 85)
        xi = float(np.interp(40.0, ivc[:, 2], ivc[:, 0]))
        y_back = float(self.y_sp(60)) - _u(r, 35, 50)
        cen, rad = [], []
        for _ in range(15):  # right lobe
            z = _u(r, z_tip + 30, 128)
            xr = self.inner_x(z, 1)
            yf = self.inner_front(z, 60)
            u, v = _u(r, 0.35, 0.9), _u(r, 0.1, 0.9)
            rr = _u(r, 28, 40)
            cen.append((xi + u * (xr - xi), y_back + v * (yf - y_back), z))
            rad.append(rr)
        x_left = -_u(r, 20, 80)
        for _ in range(6):  # left lobe / segment IV, anterior and high
            z = _u(r, 20, 120)
            yf = self.inner_front(z, 0)
            cen.append((_u(r, x_left, xi), yf - _u(r, 18, 40), z))
            rad.append(_u(r, 20, 30))
        cen.append((xi - 4, float(np.interp(45, ivc[:, 2], ivc[:, 1])) + 8, _u(r, 30, 55)))
        rad.append(16.0)  # caudate
        xr = self.inner_x(z_tip + 15, 1)
        cen.append((xr - 28, self.yc + _u(r, -5, 25), z_tip + 18))
        rad.append(_u(r, 18, 26))
        cen = np.array(cen)
        rad = np.array(rad)
        target = _u(r, 1150, 1850) * (0.9 + 0.2 * self.habitus)
        sl, m, _ = self.metaball_volume(cen, rad, target, allowed=(VISC,))
        m = _largest(m)
        self.paint(sl, m, LIVER, T["liver"], gap=1, exempt=(IVC, PORTAL, GALL))
        # hepatic veins (from the IVC) and portal branches (from the hilum): random branching
        # sweeps inside the liver, labelled liver as in AMOS, with blood signal
        inside = np.argwhere(m)
        if len(inside):
            def target():
                v = inside[int(r.integers(len(inside)))]
                return self.grid.origin + self.grid.h * (np.array([sl[d].start for d in range(3)]) + v)

            zh = _u(r, 70, 100)
            p0 = np.array([float(np.interp(zh, ivc[:, 2], ivc[:, 0])), float(np.interp(zh, ivc[:, 2], ivc[:, 1])), zh])
            for root, tis, r0 in ((p0, T["hepatic_vein"], 5.5), (lm["hilum"], T["portal_blood"], 5.5)):
                for _ in range(int(r.integers(3, 5))):
                    t1 = target()
                    mid = 0.5 * (root + t1) + r.normal(0, 5, 3)
                    self.paint_sweep([root, mid, t1], [r0, r0 * 0.7, 1.8], LIVER, tis, allowed=(LIVER,))
                    for _ in range(int(r.integers(1, 3))):
                        t2 = target()
                        if np.linalg.norm(t2 - mid) > 90:
                            continue
                        self.paint_sweep([mid, 0.5 * (mid + t2) + r.normal(0, 4, 3), t2], [r0 * 0.55, 2.6, 1.5],
                                         LIVER, tis, allowed=(LIVER,))  # fmt: skip
        lm["liver_volume_ml"] = self.volume_ml(self.label[sl] == LIVER)

    def paint_gallbladder(self) -> None:
        r = self.rng
        ivc = self.lm["ivc"]
        xi = float(np.interp(0.0, ivc[:, 2], ivc[:, 0]))
        zf = self.lm["confluence"][2] - _u(r, -5, 25)
        F = np.array([xi + _u(r, 22, 45), self.inner_front(zf, 40) - _u(r, 14, 32), zf])
        d = _unit((-_u(r, 0.2, 0.5), -_u(r, 0.4, 0.7), 1.0))
        ln = _u(r, 45, 80)
        dist = _u(r, 0.6, 1.25)
        cen = np.array([F, F + d * ln * 0.45, F + d * ln * 0.85])
        rad = np.array([14.0, 12.0, 7.5]) * dist
        sl, m = self.metaball(cen, rad)
        if sl is None:
            return
        dd = _edt(m) * self.h
        tis = np.where(dd < 1.6, np.uint8(T["gi_wall"]), np.uint8(T["bile"]))
        self.paint(sl, m, GALL, tis, allowed=(VISC, LIVER), gap=1, exempt=(LIVER,))

    def paint_stomach(self) -> None:
        r, lm = self.rng, self.lm
        aorta = lm["aorta"]
        xa118 = float(np.interp(118, aorta[:, 2], aorta[:, 0]))
        ya118 = float(np.interp(118, aorta[:, 2], aorta[:, 1]))
        dist = _u(r, 0.7, 1.15)
        Rf, Rb, Ra = 36 * dist, 32 * dist, 22 * dist
        py = lm["pylorus"]
        ctrl = np.array([
            (xa118 - 6, ya118 + 14, 124), (-(self.inner_x(95, -1) - Rf * 0.9), float(self.y_sp(95)) + _u(r, -5, 20), 95),
            (-(self.inner_x(60, -1) - Rb) * 0.85, self.yc + _u(r, 5, 25), 62),
            (-_u(r, 35, 60), self.inner_front(35, -40) - Rb * 0.9, 32),
            (-_u(r, 5, 25), self.inner_front(py[2] + 10, -10) - Ra, py[2] + _u(r, 8, 18)), py,
        ])  # fmt: skip
        radii = np.array([11.0, Rf, Rb, Rb * 0.95, Ra, 11.0])
        path = P.catmull_rom(ctrl, step=9.0)
        s_c, s_p = P.arclength(ctrl), P.arclength(path)
        rp = np.interp(s_p, s_c / s_c[-1] * s_p[-1], radii)
        # keep the stomach anterior to the pancreas / splenic vein and medial to the spleen
        obst = np.vstack([lm["panc_path"], lm["splenic_vein"]])
        obr = np.concatenate([lm["panc_r"], np.full(len(lm["splenic_vein"]), lm["r_sv"])])
        for i in range(len(path)):
            for _ in range(25):
                d = np.linalg.norm(obst - path[i], axis=1) - obr - rp[i] * 0.85
                if d.min() >= 4:
                    break
                path[i, 1] += 3.0
        sl, m = self.metaball(path, rp * 0.85, P.chain_weights(path, rp * 0.85))
        if sl is None:
            return
        m = _largest(m)
        dd = _edt(m) * self.h
        rug = P.coarse_noise(r, m.shape, self.h, 4.0, factor=2)
        wall = dd < (3.0 + 1.2 * np.clip(rug, -1.5, 2.5))
        content = r.choice(["fluid", "food", "mixed"], p=[0.45, 0.3, 0.25])
        tis = np.full(m.shape, T["gi_fluid"] if content == "fluid" else T["chyme"], np.uint8)
        _, y, _ = self.grid.coords(sl)
        if content == "mixed":
            ymid = np.percentile(np.broadcast_to(y, m.shape)[m], 45)
            tis[np.broadcast_to(y < ymid, m.shape)] = T["gi_fluid"]
        gas_depth = _u(r, 0, 30)
        ytop = float(np.max(np.broadcast_to(y, m.shape)[m])) if m.any() else 0.0
        tis[np.broadcast_to(y > ytop - gas_depth, m.shape)] = T["gas"]
        tis[wall] = T["gi_wall"]
        self.paint(sl, m, STOM, tis, gap=1, exempt=(DUOD, ESO))
        # esophagus at the top of the slab
        eso = [(xa118 + 6, ya118 + 10, Z_HALF + 10), (xa118 + 2, ya118 + 13, 121), ctrl[0]]
        self.paint_sweep(eso, [8.0, 8.0, 9.0], ESO, T["gi_wall"], allowed=(VISC, MUSCLE), exempt=(STOM,))
        self.params["stomach_content"] = str(content)

    def paint_bowel(self) -> None:
        r, lm = self.rng, self.lm
        zc = lm["confluence"][2]
        xr, xl = self.inner_x(-40, 1), self.inner_x(-40, -1)
        # colon: ascending, transverse, descending with haustra
        zh = zc + _u(r, -35, 0)
        zsf = zc + _u(r, 10, 45)
        zt = zc - _u(r, 25, 70)
        yfront = self.inner_front(zt, 0)
        ctrl = np.array([
            (xr - 30, self.yc + _u(r, -25, 15), -Z_HALF - 10), (xr - 32, self.yc + _u(r, -20, 15), zh - 30),
            (xr - 40, self.yc + 40, zh), (_u(r, 20, 60), yfront - 30, zt), (-_u(r, 10, 50), yfront - 28, zt - _u(r, -10, 20)),
            (-(self.inner_x(zsf, -1) - 35), self.yc + _u(r, 0, 30), zsf), (-(xl - 28), self.yc + _u(r, -30, 0), zsf - 50),
            (-(xl - 25), self.yc + _u(r, -30, 5), -Z_HALF - 10),
        ])  # fmt: skip
        rc = _u(r, 17, 24)
        path = P.catmull_rom(ctrl, step=1.5)
        s = P.arclength(path)
        rr = rc * (1 + 0.13 * np.sin(2 * np.pi * s / _u(r, 22, 32))) * np.interp(s, [0, s[-1]], [1.05, 0.75])
        lo, hi = P.sweep_box(path, rr, pad=1.35)
        sl = self.grid.box(lo, hi)
        if sl is not None:
            q = P.sweep_field(self.grid, sl, path, rr)
            m = q <= 1.0
            stool = P.spectral_noise(r, m.shape, self.h, 3.0)
            tis = np.where(stool > 0.6, np.uint8(T["gas"]), np.uint8(T["stool"]))
            tis[q > 1.0 - 2.2 / rc] = T["gi_wall"]
            self.paint(sl, m, BOWEL, tis, gap=1)
        # small bowel: random-walk loops below the mesocolon and in the left upper quadrant
        n_loops = int(r.integers(12, 20))
        for n in range(n_loops):
            left_upper = n % 4 == 3
            ztop = zc + 25 if left_upper else zc - 12
            z = _u(r, -Z_HALF - 5, ztop)
            x0 = _u(r, -xl + 40, -20) if left_upper else _u(r, -xl * 0.75, xr * 0.6)
            pts = [np.array([x0, _u(r, self.yc - 10, self.inner_front(z, x0) - 15), z])]
            for _ in range(int(r.integers(5, 10))):
                nxt = pts[-1] + r.normal(0, 20, 3)
                nxt[0] = np.clip(nxt[0], -xl + 30, xr - 30)
                nxt[1] = np.clip(nxt[1], self.yc - 30, self.inner_front(nxt[2], nxt[0]) - 12)
                nxt[2] = np.clip(nxt[2], -Z_HALF - 10, ztop)
                pts.append(nxt)
            content = r.choice(["fluid", "collapsed", "chyme", "gas"], p=[0.4, 0.3, 0.2, 0.1])
            rb = _u(r, 9, 14) if content != "collapsed" else _u(r, 6, 9)
            lumen = {"fluid": T["gi_fluid"], "collapsed": T["gi_wall"], "chyme": T["chyme"], "gas": T["gas"]}[str(content)]
            self.paint_sweep(np.array(pts), np.full(len(pts), rb), BOWEL, T["gi_wall"], gap=1, wall=2.0,
                             lumen_tissue=lumen, exempt=(BOWEL,))  # fmt: skip

    # ------------------------------------------------------------------ finish
    def finish(self, ffd_sigma: float, ffd_spacing: float) -> EvalAnatomy:
        r = self.rng
        if ffd_sigma > 0:
            ffd = P.FreeFormDeformation(r, self.grid, ffd_spacing, ffd_sigma)
            self.label, self.tissue = ffd.warp([self.label, self.tissue])
        g = self.grid
        # texture: spectral noise at 2x coarser resolution, upsampled
        cs = tuple(max(4, int(np.ceil(s / 2))) for s in g.shape)
        n = P.spectral_noise(r, cs, g.h * 2, 4.0)
        n = P.upsample_linear(n, g.shape)
        amp = texture_amplitudes()
        tex = (1.0 + amp[self.tissue] * np.clip(n, -3, 3)).astype(np.float16)
        panc_ml = float(np.count_nonzero(self.label == PANC)) * g.h**3 / 1000.0
        anat = EvalAnatomy(g, self.label, self.tissue, tex, panc_ml, body=self.body, params=self.params)
        anat.landmarks = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.lm.items()
                          if k in ("confluence", "hilum", "spleen_hilum", "pylorus", "sma_origin_z")}  # fmt: skip
        anat.landmarks["pancreas_centroid"] = anat.centroid(PANC).tolist()
        return anat


def _edt(mask: np.ndarray) -> np.ndarray:
    """Inside distance (voxels) computed on the mask's bounding box only."""
    out = np.zeros(mask.shape, np.float32)
    idx = np.argwhere(mask)
    if len(idx) == 0:
        return out
    lo = np.maximum(idx.min(axis=0) - 1, 0)
    hi = idx.max(axis=0) + 2
    sl = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    out[sl] = ndi.distance_transform_edt(mask[sl])
    return out


def _largest(mask: np.ndarray) -> np.ndarray:
    if mask is None or not mask.any():
        return mask
    lab, n = ndi.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def build_anatomy(rng: np.random.Generator, spacing: float = 1.25, age: float | None = None) -> EvalAnatomy:
    """Draw one subject's anatomy on a ``spacing`` mm isotropic grid (see module doc)."""
    if not 0.75 <= spacing <= 4.0:
        raise ValueError(f"anatomy spacing must be within 0.75-4 mm, got {spacing}")
    b = _Builder(rng, spacing)
    b.params["age"] = float(age if age is not None else rng.uniform(22, 84))
    target = float(np.clip(rng.normal(74, 15), 48, 108))
    b.paint_body()
    b.paint_spine()
    b.paint_muscles()
    b.plan_vessels()
    b.plan_spleen()
    b.plan_kidneys()
    b.plan_pancreas(target * 1.04)
    b.paint_vessels()
    b.paint_splenic_vein()
    b.paint_kidneys()
    b.paint_adrenals()
    b.paint_pancreas()
    b.paint_duodenum()
    b.paint_liver()
    b.paint_gallbladder()
    b.paint_spleen()
    b.paint_stomach()
    b.paint_bowel()
    ffd_sigma = float(rng.uniform(2.5, 5.0))
    ffd_spacing = float(rng.uniform(45, 65))
    b.params.update(ffd_sigma_mm=ffd_sigma, ffd_spacing_mm=ffd_spacing, fine_spacing_mm=spacing)
    return b.finish(ffd_sigma, ffd_spacing)
