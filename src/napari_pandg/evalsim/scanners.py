"""Scanner / protocol profiles of the evaluation simulator: centers ``X1``, ``X2``, ``X3``.

The names are deliberately not the training phantom's A-D. Each center is a vendor-like
profile (1.5 T or 3 T) with its own protocols, storage orientation per series, intensity
scaling and artefact knobs; every number is a modelling choice within the published ranges
of ``shared/reference/mri_physics_and_data.md`` §1.4 (PMC9201619 Table 7 and vendor names),
not a vendor's exact protocol.

Geometry of a series: an axial stack (optionally tilted by ``tilt_deg`` about the x, y, z
axes: oblique), in-plane recon spacing ``dx`` on a ``matrix`` grid, ``n_slices`` slices every
``slice_spacing`` mm with a box profile of ``thickness`` mm, k-space coverage ``kfrac``
(readout, phase) of the recon matrix. ``storage`` is the axis code string of the array as
written (e.g. ``"RAS"``, ``"LPS"``, ``"IPL"`` = slice axis first). Series of one ``group``
share the exact grid (the three T1 phases; in- and opposed-phase echoes).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

SEQUENCES: tuple[str, ...] = ("t1fs", "t1fs_arterial", "t1fs_venous", "t2", "ip", "op")
#: contrast phase of each sequence (None = pre-contrast)
PHASE = {"t1fs": None, "t1fs_arterial": "arterial", "t1fs_venous": "venous", "t2": None, "ip": None, "op": None}


@dataclass(frozen=True)
class Protocol:
    """One series: sequence physics + geometry + artefacts (see module doc)."""

    name: str
    kind: str  # "gre" (spoiled gradient echo, incl. dual echo) or "fse" (single-shot / turbo spin echo)
    group: str
    tr: float  # ms; inf for single shot
    te: float  # ms
    flip: float  # degrees
    dx: float  # recon in-plane spacing, mm
    matrix: tuple[int, int]  # recon (LR, AP)
    kfrac: tuple[float, float]  # acquired fraction of k-space (readout LR, phase AP)
    thickness: float
    slice_spacing: float
    n_slices: int
    snr: float  # liver SNR at unit coil sensitivity
    dims: str = "3D"
    fat_sat: float = 0.0  # suppression efficiency at resonance
    fat_sat_bw_hz: float = 0.0  # off-resonance tolerance of the fat-sat pulse (0 = ideal)
    echo_blur: float = 0.0  # FSE echo-train decay across the phase-encode lines (e-folds at the edge)
    flow_void: float = 1.0  # signal factor of flowing blood (FSE)
    inflow: float = 1.0  # signal factor of flowing blood (2D GRE)
    ghost: float = 0.0  # respiratory ghost amplitude along phase encode
    storage: str = "RAS"
    tilt_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    apodize: float = 0.15  # raised-cosine edge of the k-space window (fraction)

    @property
    def fov(self) -> tuple[float, float, float]:
        return (self.dx * self.matrix[0], self.dx * self.matrix[1], self.slice_spacing * self.n_slices)


@dataclass(frozen=True)
class Center:
    name: str
    vendor: str
    model: str
    field_strength: float
    protocols: dict[str, Protocol]
    b1_amp: float  # transmit inhomogeneity (fraction)
    b0_ppm: float  # residual off-resonance at the body edge (ppm)
    coil_rho: float  # receive element reach (mm)
    normalize: float  # 0 = raw coil shading .. 1 = fully normalised
    gfactor: float  # central noise amplification (parallel imaging)
    scale: float  # stored intensity of pre-contrast liver
    integer: bool  # stored values rounded to integers
    storage_max: float
    description: str = ""
    extra: dict = field(default_factory=dict)

    def protocol(self, sequence: str) -> Protocol:
        if sequence not in self.protocols:
            raise KeyError(f"center {self.name} has no protocol for {sequence!r}; known: {', '.join(self.protocols)}")
        return self.protocols[sequence]


def _x1() -> Center:
    t1 = Protocol("3D VIBE-like GRE + SPAIR", "gre", "t1", 3.9, 1.35, 9.0, 1.19, (320, 260), (0.78, 0.62),
                  3.0, 3.0, 62, 26.0, fat_sat=0.94, fat_sat_bw_hz=260.0, storage="RAS")
    t2 = Protocol("HASTE-like single-shot FSE", "fse", "t2", float("inf"), 95.0, 150.0, 1.19, (320, 260),
                  (0.8, 0.55), 6.0, 6.6, 29, 19.0, echo_blur=1.3, flow_void=0.12, storage="LPS",
                  tilt_deg=(6.0, 0.0, 3.0))
    dx = Protocol("3D dual-echo VIBE-like GRE", "gre", "dixon", 4.1, 1.18, 9.0, 1.37, (288, 234), (0.8, 0.68),
                  3.5, 3.5, 52, 22.0, storage="RAS")
    return Center(
        "X1", "Siemens-like", "3T Skyra-like", 3.0,
        {"t1fs": t1, "t1fs_arterial": replace(t1, snr=23.0, ghost=0.03), "t1fs_venous": replace(t1, snr=25.0),
         "t2": t2, "op": replace(dx, te=1.18), "ip": replace(dx, te=2.36)},
        b1_amp=0.22, b0_ppm=0.9, coil_rho=150.0, normalize=0.45, gfactor=0.25, scale=700.0, integer=True,
        storage_max=4095.0,
        description="3 T: strong B1+ shading, RAS 3D GRE, tilted (oblique) HASTE stored LPS",
    )  # fmt: skip


def _x2() -> Center:
    t1 = Protocol("3D LAVA-like GRE + spectral fat-sat (ZIP)", "gre", "t1", 4.4, 2.1, 12.0, 0.94, (416, 336),
                  (0.55, 0.45), 4.8, 2.4, 76, 17.0, fat_sat=0.9, fat_sat_bw_hz=120.0, storage="IPL", apodize=0.3)
    t2 = Protocol("SSFSE-like", "fse", "t2", float("inf"), 86.0, 130.0, 1.5, (256, 208), (0.9, 0.62),
                  7.0, 7.5, 26, 14.0, echo_blur=1.7, flow_void=0.2, storage="LPS")
    dx = Protocol("2D dual-echo SPGR (in/out of phase)", "gre", "dixon", 150.0, 2.25, 70.0, 1.48, (256, 208),
                  (0.9, 0.62), 7.0, 8.0, 24, 20.0, dims="2D", inflow=1.6, storage="IPL")
    return Center(
        "X2", "GE-like", "1.5T Signa-like", 1.5,
        {"t1fs": t1, "t1fs_arterial": replace(t1, snr=14.0), "t1fs_venous": replace(t1, snr=15.0),
         "t2": t2, "op": replace(dx, te=2.25), "ip": replace(dx, te=4.5)},
        b1_amp=0.06, b0_ppm=0.7, coil_rho=130.0, normalize=0.8, gfactor=0.15, scale=1.0, integer=False,
        storage_max=float("inf"),
        description="1.5 T: zero-filled 0.94 mm recon from ~1.7 mm, overlapping slices, 2D dual echo "
                    "with gaps; 3D GRE and dual echo stored slice-first (IPL), floating-point scaling",
    )  # fmt: skip


def _x3() -> Center:
    t1 = Protocol("3D GRE + CHESS fat-sat", "gre", "t1", 4.8, 2.2, 11.0, 1.6, (240, 200), (0.85, 0.75),
                  5.0, 2.5, 72, 24.0, fat_sat=0.88, fat_sat_bw_hz=180.0, storage="LAS")
    t2 = Protocol("respiratory-triggered FSE + SPAIR", "fse", "t2", 3000.0, 82.0, 120.0, 1.3, (288, 236),
                  (0.75, 0.6), 6.0, 7.0, 28, 17.0, fat_sat=0.85, fat_sat_bw_hz=200.0, echo_blur=0.8,
                  flow_void=0.25, ghost=0.05, storage="LPS")
    dx = Protocol("3D dual-echo GRE", "gre", "dixon", 7.0, 2.3, 10.0, 1.6, (240, 200), (0.85, 0.7),
                  4.0, 4.0, 48, 21.0, storage="LAS")
    return Center(
        "X3", "Canon-like", "1.5T Vantage-like", 1.5,
        {"t1fs": t1, "t1fs_arterial": replace(t1, snr=20.0, ghost=0.02), "t1fs_venous": replace(t1, snr=21.0),
         "t2": t2, "op": replace(dx, te=2.3), "ip": replace(dx, te=4.6)},
        b1_amp=0.07, b0_ppm=0.8, coil_rho=170.0, normalize=0.2, gfactor=0.1, scale=300.0, integer=True,
        storage_max=32767.0,
        description="1.5 T: 5 mm slices every 2.5 mm, fat-suppressed triggered T2 with ghosts, LAS "
                    "storage, weak coil normalisation",
    )  # fmt: skip


CENTERS: dict[str, Center] = {c.name: c for c in (_x1(), _x2(), _x3())}
