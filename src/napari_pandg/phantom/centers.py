"""Scanner / protocol profiles ("centers").

Numbers follow ``shared/reference/mri_physics_and_data.md`` §1.4 (PMC9201619 Table 7, AMOS
scanners, CHAOS); the profiles themselves are modelling assumptions. Vendor names are only
"-like": nothing here reproduces a vendor's proprietary processing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

SEQUENCES: tuple[str, ...] = ("t1fs", "t1fs_venous", "t2", "ip", "op")


@dataclass(frozen=True)
class SequenceProtocol:
    """Acquisition parameters of one sequence at one center.

    kind: ``"spgr"`` (T1 fat-sat spoiled GRE), ``"ssfse"`` (single-shot / turbo spin echo) or
    ``"dixon"`` (dual-echo chemical-shift GRE; the ip/op images use ``te``).
    ``acq_res`` is the acquired in-plane resolution (LR, AP) in mm that sets the PSF,
    ``recon_spacing`` the reconstructed pixel size (smaller than ``acq_res`` with zero-fill
    interpolation). Slices: ``slice_thickness`` (profile FWHM) and ``slice_spacing``.
    """

    vendor_name: str
    kind: str
    tr: float  # ms (float("inf") for single-shot)
    te: float  # ms
    flip: float  # degrees
    acq_res: tuple[float, float]
    recon_spacing: tuple[float, float]
    slice_thickness: float
    slice_spacing: float
    snr: float  # liver SNR before bias / g-factor
    dims: str = "3D"
    fat_sat: float = 0.0  # suppression efficiency eta (0 = none)
    fat_sat_b0_sensitive: bool = True  # SPAIR/CHESS (True) or Dixon water image (False)
    resp_motion_mm: float = 0.0  # SI blur (uniform displacement range)
    ghost: float = 0.0  # respiratory ghost amplitude along phase-encode (AP)
    flow_void: float = 0.15  # vessel signal factor on spin-echo
    inflow: float = 1.0  # vessel signal factor on 2D GRE (inflow enhancement)
    gain: float = 300.0  # stored intensity of noise-free, unbiased pre-contrast / in-phase liver


@dataclass(frozen=True)
class CenterProfile:
    """One scanner / site: field strength, vendor-like protocols and artefact knobs.

    orientation: axis codes of the written arrays (``"RAS"``: affine diagonal positive;
    ``"LPS"``: negative x and y diagonal, as after ITK/DICOM conversion; ``"LAS"``).
    """

    name: str
    vendor: str
    model: str
    field_strength: float
    orientation: str
    fov_mm: tuple[float, float]  # LR (readout), AP (phase)
    slab_mm: float
    protocols: dict[str, SequenceProtocol]
    b1_amp: float  # transmit B1+ inhomogeneity (fraction)
    b0_hz: float  # smooth off-resonance amplitude (Hz) at the body periphery
    coil_rows: int = 2
    coils_per_row: int = 4
    bias_normalize: float = 0.5  # 0 = raw coil shading, 1 = fully normalised (Prescan/PURE/CLEAR)
    gfactor: float = 0.2  # extra central noise from parallel imaging
    noise_corr: float = 0.0  # in-plane noise correlation (ZIP / interpolation), pixels sigma
    storage_max: int = 32767  # int16 storage; 4095 for 12-bit
    description: str = ""
    extra: dict = field(default_factory=dict)

    def protocol(self, sequence: str) -> SequenceProtocol:
        if sequence not in self.protocols:
            raise KeyError(f"center {self.name} has no protocol for sequence {sequence!r}; "
                           f"known: {', '.join(self.protocols)}")
        return self.protocols[sequence]


def _dixon(base: SequenceProtocol, te_op: float, te_ip: float, gain_ip: float, gain_op: float):
    return {"ip": replace(base, te=te_ip, gain=gain_ip), "op": replace(base, te=te_op, gain=gain_op)}


def _center_a() -> CenterProfile:
    t1 = SequenceProtocol("VIBE (Q-fatsat)", "spgr", 4.0, 1.5, 9.0, (1.25, 1.45), (1.25, 1.25),
                          3.0, 3.0, 30.0, fat_sat=0.93, gain=420.0)
    t2 = SequenceProtocol("HASTE", "ssfse", float("inf"), 92.0, 150.0, (1.25, 1.7), (1.25, 1.25),
                          6.0, 6.0, 20.0, flow_void=0.1, gain=260.0)
    dx = SequenceProtocol("VIBE-Dixon", "dixon", 3.97, 2.46, 9.0, (1.4, 1.6), (1.4, 1.4),
                          3.0, 3.0, 24.0, gain=380.0)
    return CenterProfile(
        "A", "Siemens", "MAGNETOM Prisma-like (3T)", 3.0, "RAS", (400.0, 325.0), 192.0,
        {"t1fs": t1, "t1fs_venous": replace(t1, snr=34.0, gain=420.0), "t2": t2,
         **_dixon(dx, 1.23, 2.46, 380.0, 380.0)},
        b1_amp=0.25, b0_hz=110.0, bias_normalize=0.55, gfactor=0.25,
        description="3 T Siemens-like (AMOS Prisma): strong B1+ and coil shading, RAS affine",
    )


def _center_b() -> CenterProfile:
    t1 = SequenceProtocol("LAVA", "spgr", 4.2, 1.9, 13.0, (1.56, 1.9), (0.78125, 0.78125),
                          5.0, 2.5, 16.0, fat_sat=0.95, gain=300.0)
    t2 = SequenceProtocol("SSFSE", "ssfse", float("inf"), 85.0, 130.0, (1.56, 2.0), (0.78125, 0.78125),
                          6.0, 7.0, 12.0, flow_void=0.15, gain=180.0)
    dx = SequenceProtocol("LAVA-Flex", "dixon", 6.6, 4.4, 12.0, (1.56, 1.9), (0.78125, 0.78125),
                          5.0, 2.5, 15.0, gain=330.0)
    return CenterProfile(
        "B", "GE", "Signa HDxt-like (1.5T)", 1.5, "LPS", (400.0, 320.0), 192.0,
        {"t1fs": t1, "t1fs_venous": replace(t1, snr=20.0, gain=300.0), "t2": t2,
         **_dixon(dx, 2.2, 4.4, 330.0, 330.0)},
        b1_amp=0.08, b0_hz=60.0, bias_normalize=0.6, gfactor=0.15, noise_corr=0.9,
        description="1.5 T GE-like: ZIP512 / ZIP2 interpolation, lower SNR, LPS affine",
    )


def _center_c() -> CenterProfile:
    t1 = SequenceProtocol("e-THRIVE (SPAIR)", "spgr", 4.0, 1.8, 10.0, (1.6, 1.9), (1.484375, 1.484375),
                          5.0, 5.0, 22.0, fat_sat=0.95, gain=250.0)
    t2 = SequenceProtocol("T2-SPIR TSE (resp-triggered)", "ssfse", 1600.0, 80.0, 90.0,
                          (1.5, 1.9), (1.484375, 1.484375), 7.0, 8.0, 18.0, fat_sat=0.55,
                          resp_motion_mm=7.0, ghost=0.05, flow_void=0.2, gain=150.0)
    dx = SequenceProtocol("2D FFE dual echo", "dixon", 160.0, 4.6, 75.0, (1.6, 1.9),
                          (1.484375, 1.484375), 7.0, 8.0, 24.0, dims="2D", inflow=1.8,
                          resp_motion_mm=2.0, gain=300.0)
    return CenterProfile(
        "C", "Philips", "Ingenia-like (1.5T)", 1.5, "LPS", (380.0, 310.0), 192.0,
        {"t1fs": t1, "t1fs_venous": replace(t1, snr=26.0, gain=250.0), "t2": t2,
         **_dixon(dx, 2.3, 4.6, 300.0, 300.0)},
        b1_amp=0.06, b0_hz=50.0, bias_normalize=0.7, gfactor=0.1, storage_max=4095,
        description="1.5 T Philips-like (CHAOS-like): thick 2D slices, fat-suppressed "
                    "respiratory-triggered T2, 12-bit storage, LPS affine",
    )


def _center_d() -> CenterProfile:
    t1 = SequenceProtocol("3D GRE (Dixon water)", "spgr", 3.6, 1.4, 11.0, (1.32, 1.6),
                          (1.32, 1.32), 3.5, 3.5, 26.0, fat_sat=0.985,
                          fat_sat_b0_sensitive=False, gain=520.0)
    t2 = SequenceProtocol("SSFSE-like", "ssfse", float("inf"), 98.0, 140.0, (1.32, 1.8),
                          (1.32, 1.32), 5.0, 5.0, 22.0, flow_void=0.12, gain=300.0)
    dx = SequenceProtocol("3D dual-echo GRE", "dixon", 4.0, 2.3, 10.0, (1.32, 1.6), (1.32, 1.32),
                          3.5, 3.5, 22.0, gain=460.0)
    return CenterProfile(
        "D", "United Imaging", "uMR 790-like (3T)", 3.0, "LAS", (380.0, 310.0), 192.0,
        {"t1fs": t1, "t1fs_venous": replace(t1, snr=30.0, gain=520.0), "t2": t2,
         **_dixon(dx, 1.15, 2.3, 460.0, 460.0)},
        b1_amp=0.18, b0_hz=90.0, bias_normalize=0.8, gfactor=0.3,
        description="3 T, another vendor: Dixon-based uniform fat suppression, LAS affine",
    )


CENTERS: dict[str, CenterProfile] = {c.name: c for c in (_center_a(), _center_b(), _center_c(), _center_d())}
