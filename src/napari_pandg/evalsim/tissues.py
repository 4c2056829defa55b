"""Tissue classes and their MR properties for the evaluation simulator (own table).

Values are chosen for this simulator from the literature ranges collected in
``shared/reference/mri_physics_and_data.md`` §1.2-1.3 (de Bazelaire 2004, Stanisz 2005, Tirkes
2019, Sharma 2006), rounded and re-picked independently of the training phantom; PD and the
T2* of most tissues are assumptions. Per subject every T1/T2 is jittered (+/- 7 %), PD
(+/- 4 %), and the fat fractions of liver, pancreas and marrow follow the subject's age and
a steatosis draw. Contrast: gadoterate-like agent (r1 3.6 / 3.3 L/mmol/s at 1.5 / 3 T),
tissue concentrations per phase below (late arterial ~35 s, portal venous ~70 s).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: tissue id -> name (ids are local to evalsim; label ids are napari_pandg.labels)
TISSUE_NAMES: tuple[str, ...] = (
    "air", "skin", "subcut_fat", "visceral_fat", "muscle", "cortical_bone", "marrow", "disc",
    "csf", "cord", "liver", "hepatic_vein", "bile", "spleen", "renal_cortex", "renal_medulla",
    "urine", "adrenal", "pancreas", "pancreatic_duct", "pancreas_fat_cleft", "arterial_blood",
    "ivc_blood", "portal_blood", "gi_wall", "gi_fluid", "gas", "stool", "chyme",
)  # fmt: skip
T: dict[str, int] = {n: i for i, n in enumerate(TISSUE_NAMES)}
N_TISSUES = len(TISSUE_NAMES)

#: flowing blood (flow voids on single-shot FSE, inflow on 2D GRE)
FLOWING = ("arterial_blood", "ivc_blood", "portal_blood", "hepatic_vein")

# name: (T1 1.5T, T2 1.5T, T2* 1.5T, T1 3T, T2 3T, T2* 3T, PD, fat fraction) -- water component
_TABLE: dict[str, tuple[float, ...]] = {
    "air":                (1000, 1, 0.5, 1000, 1, 0.5, 0.0, 0.0),
    "skin":               (720, 42, 25, 880, 38, 16, 0.74, 0.05),
    "subcut_fat":         (900, 40, 25, 1100, 36, 16, 0.92, 0.93),
    "visceral_fat":       (900, 40, 25, 1100, 36, 16, 0.90, 0.87),
    "muscle":             (930, 35, 23, 1180, 32, 15, 0.78, 0.03),
    "cortical_bone":      (260, 1.2, 0.6, 320, 1.0, 0.5, 0.07, 0.0),
    "marrow":             (720, 48, 14, 860, 45, 9, 0.86, 0.45),
    "disc":               (1120, 95, 45, 1300, 85, 32, 0.86, 0.0),
    "csf":                (3700, 1700, 900, 4100, 1400, 600, 1.0, 0.0),
    "cord":               (820, 78, 50, 1010, 70, 38, 0.80, 0.0),
    "liver":              (610, 47, 27, 830, 37, 17, 0.78, 0.02),
    "hepatic_vein":       (1560, 165, 55, 1640, 70, 26, 0.95, 0.0),
    "bile":               (2400, 700, 250, 2700, 600, 180, 1.0, 0.0),
    "spleen":             (1090, 78, 52, 1350, 63, 35, 0.86, 0.0),
    "renal_cortex":       (960, 86, 52, 1160, 78, 36, 0.87, 0.007),
    "renal_medulla":      (1390, 96, 56, 1560, 86, 40, 0.90, 0.0),
    "urine":              (3300, 1300, 600, 3700, 1100, 400, 1.0, 0.0),
    "adrenal":            (780, 55, 32, 980, 50, 22, 0.80, 0.05),
    "pancreas":           (560, 45, 28, 735, 41, 19, 0.82, 0.04),
    "pancreatic_duct":    (3200, 1100, 500, 3600, 950, 350, 1.0, 0.0),
    "pancreas_fat_cleft": (700, 45, 22, 900, 40, 14, 0.85, 0.55),
    "arterial_blood":     (1500, 250, 110, 1720, 160, 60, 0.95, 0.0),
    "ivc_blood":          (1560, 170, 55, 1640, 72, 26, 0.95, 0.0),
    "portal_blood":       (1540, 185, 60, 1620, 80, 28, 0.95, 0.0),
    "gi_wall":            (970, 42, 26, 1220, 38, 17, 0.80, 0.0),
    "gi_fluid":           (3400, 1250, 500, 3800, 1000, 350, 1.0, 0.0),
    "gas":                (1000, 1, 0.5, 1000, 1, 0.5, 0.0, 0.0),
    "stool":              (820, 75, 30, 1000, 65, 20, 0.78, 0.12),
    "chyme":              (1250, 160, 60, 1450, 130, 40, 0.92, 0.06),
}  # fmt: skip

#: fat component (multi-peak triglyceride): T1, T2 (spin echo), T2* at 1.5 / 3 T
FAT = {1.5: (355.0, 62.0, 30.0), 3.0: (395.0, 56.0, 17.0)}
#: fat spectrum: (ppm relative to water, relative amplitude); own choice of a 6-peak model
FAT_PEAKS = ((-3.80, 0.085), (-3.40, 0.70), (-2.60, 0.12), (-1.95, 0.01), (-0.50, 0.035), (0.60, 0.05))
GAMMA_MHZ_T = 42.577

# Gd concentration (mM) in each tissue: (late arterial, portal venous)
_GD: dict[str, tuple[float, float]] = {
    "skin": (0.25, 0.35), "subcut_fat": (0.05, 0.08), "visceral_fat": (0.06, 0.09),
    "muscle": (0.25, 0.40), "marrow": (0.45, 0.50), "disc": (0.0, 0.05), "cord": (0.0, 0.02),
    "liver": (0.35, 0.80), "hepatic_vein": (0.30, 1.90), "spleen": (1.70, 1.05),
    "renal_cortex": (4.20, 2.60), "renal_medulla": (0.60, 2.10), "adrenal": (1.20, 0.90),
    "pancreas": (1.60, 0.85), "pancreas_fat_cleft": (0.6, 0.4), "arterial_blood": (5.50, 2.30),
    "ivc_blood": (0.60, 2.00), "portal_blood": (1.30, 2.50), "gi_wall": (1.00, 0.80),
    "stool": (0.0, 0.0), "chyme": (0.0, 0.0),
}  # fmt: skip
R1 = {1.5: 3.6, 3.0: 3.3}  # L/mmol/s, gadoterate-like, plasma 37 C
R2_OVER_R1 = 1.25

#: per-tissue texture amplitude (fractional std of the multiplicative texture)
TEXTURE = {
    "skin": 0.04, "subcut_fat": 0.035, "visceral_fat": 0.05, "muscle": 0.06, "marrow": 0.10,
    "disc": 0.05, "liver": 0.035, "spleen": 0.04, "renal_cortex": 0.04, "renal_medulla": 0.06,
    "adrenal": 0.05, "pancreas": 0.07, "pancreas_fat_cleft": 0.05, "gi_wall": 0.06,
    "gi_fluid": 0.05, "stool": 0.30, "chyme": 0.22, "bile": 0.02, "cord": 0.03,
}  # fmt: skip


@dataclass
class TissueProps:
    """Per-subject tissue properties at one field strength (arrays indexed by tissue id)."""

    field: float
    t1: np.ndarray
    t2: np.ndarray
    t2s: np.ndarray
    pd: np.ndarray
    ff: np.ndarray
    gd: dict[str, np.ndarray]  # phase -> concentration (mM) per tissue
    fat_t1: float
    fat_t2: float
    fat_t2s: float
    traits: dict = field(default_factory=dict)

    def t1_at(self, phase: str | None) -> np.ndarray:
        if not phase:
            return self.t1
        return 1.0 / (1.0 / self.t1 + R1[self.field] * self.gd[phase] / 1000.0)

    def t2s_at(self, phase: str | None) -> np.ndarray:
        if not phase:
            return self.t2s
        return 1.0 / (1.0 / self.t2s + R1[self.field] * R2_OVER_R1 * self.gd[phase] / 1000.0)

    def t2_at(self, phase: str | None) -> np.ndarray:
        if not phase:
            return self.t2
        return 1.0 / (1.0 / self.t2 + R1[self.field] * R2_OVER_R1 * self.gd[phase] / 1000.0)


def sample_traits(rng: np.random.Generator) -> dict:
    """Subject physiology: age, fat fractions, bile, contrast bolus timing."""
    age = float(rng.uniform(22, 84))
    steatosis = rng.random() < 0.22
    liver_ff = float(rng.uniform(0.07, 0.22) if steatosis else rng.uniform(0.005, 0.045))
    panc_ff = float(np.clip(0.015 + 0.0011 * (age - 20) + rng.normal(0, 0.012), 0.01, 0.14))
    marrow_ff = float(np.clip(0.22 + 0.0060 * (age - 20) + rng.normal(0, 0.05), 0.15, 0.75))
    return dict(
        age=age,
        steatosis=bool(steatosis),
        liver_ff=liver_ff,
        pancreas_ff=panc_ff,
        marrow_ff=marrow_ff,
        bile_t1=float(rng.uniform(1300, 3200)),
        bile_t2=float(rng.uniform(350, 1100)),
        bolus_arterial=float(rng.uniform(0.7, 1.25)),  # arterial timing: early (<1) or late
        bolus_venous=float(rng.uniform(0.85, 1.15)),
        pancreas_t1_factor=float(rng.uniform(0.92, 1.06) * (1 + 0.002 * max(age - 50, 0))),
    )


def sample_props(rng: np.random.Generator, field_t: float, traits: dict) -> TissueProps:
    """Jittered tissue properties of one subject at ``field_t`` (1.5 or 3.0)."""
    if field_t not in (1.5, 3.0):
        raise ValueError(f"field strength must be 1.5 or 3.0 T, got {field_t}")
    hi = field_t == 3.0
    n = N_TISSUES
    t1 = np.zeros(n)
    t2 = np.zeros(n)
    t2s = np.zeros(n)
    pd = np.zeros(n)
    ff = np.zeros(n)
    for name, row in _TABLE.items():
        i = T[name]
        a = row[3:6] if hi else row[0:3]
        t1[i], t2[i], t2s[i] = a
        pd[i], ff[i] = row[6], row[7]
    j1 = rng.uniform(0.93, 1.07, n)
    j2 = rng.uniform(0.93, 1.07, n)
    jp = rng.uniform(0.96, 1.04, n)
    t1 *= j1
    t2 *= j2
    t2s *= j2
    pd *= jp
    t1[T["bile"]] = traits["bile_t1"] * (1.12 if hi else 1.0)
    t2[T["bile"]] = traits["bile_t2"] * (0.85 if hi else 1.0)
    t2s[T["bile"]] = 0.4 * t2[T["bile"]]
    t1[T["pancreas"]] *= traits["pancreas_t1_factor"]
    ff[T["liver"]] = traits["liver_ff"]
    ff[T["pancreas"]] = traits["pancreas_ff"]
    ff[T["marrow"]] = traits["marrow_ff"]
    ff[T["pancreas_fat_cleft"]] = float(np.clip(0.35 + traits["pancreas_ff"] * 3, 0.35, 0.8))
    ff[T["subcut_fat"]] = rng.uniform(0.90, 0.95)
    ff[T["visceral_fat"]] = rng.uniform(0.84, 0.91)
    gd = {"arterial": np.zeros(n), "venous": np.zeros(n)}
    for name, (ca, cv) in _GD.items():
        gd["arterial"][T[name]] = ca
        gd["venous"][T[name]] = cv
    ba, bv = traits["bolus_arterial"], traits["bolus_venous"]
    # early arterial: less parenchymal and portal enhancement, aorta already bright
    gd["arterial"] *= rng.uniform(0.9, 1.1, n)
    gd["arterial"][T["arterial_blood"]] *= 1.0 + 0.3 * (1 - ba)
    for name in ("pancreas", "portal_blood", "liver", "spleen", "renal_medulla", "gi_wall"):
        gd["arterial"][T[name]] *= ba
    gd["venous"] *= bv * rng.uniform(0.92, 1.08, n)
    ft1, ft2, ft2s = FAT[field_t]
    return TissueProps(
        field=field_t, t1=t1, t2=t2, t2s=t2s, pd=pd, ff=ff, gd=gd,
        fat_t1=ft1 * rng.uniform(0.95, 1.05), fat_t2=ft2 * rng.uniform(0.95, 1.05),
        fat_t2s=ft2s * rng.uniform(0.9, 1.1), traits=dict(traits),
    )  # fmt: skip


def fat_phasor(te_ms: float, field_t: float) -> complex:
    """Sum of the fat peaks' phasors at echo time ``te_ms`` (water on resonance)."""
    f0 = GAMMA_MHZ_T * field_t  # MHz
    return complex(sum(a * np.exp(2j * np.pi * f0 * ppm * te_ms * 1e-3) for ppm, a in FAT_PEAKS))


def texture_amplitudes() -> np.ndarray:
    amp = np.zeros(N_TISSUES, dtype=np.float32)
    for name, a in TEXTURE.items():
        amp[T[name]] = a
    return amp
