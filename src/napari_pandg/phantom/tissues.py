"""Tissue classes and their MR parameters (1.5 T and 3 T), contrast agent model.

Values follow ``shared/reference/mri_physics_and_data.md`` §1.2-1.3 (de Bazelaire 2004, Stanisz
2005, Sharma 2006, Tirkes 2019, Szomolanyi 2019). T2* and PD values, and everything marked
"assumption" there, are modelling choices. Times are in ms.

The tissue map is internal to the phantom: the public label map uses AMOS ids
(:mod:`napari_pandg.labels`); several tissues share one label (kidney cortex and medulla, marrow
and cortical bone, GI wall / lumen fluid / gas) and one tissue may appear under several labels
(venous blood in the IVC, the portal vein and the intrahepatic veins, which AMOS counts as liver).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# ----------------------------------------------------------------------------- tissue ids
AIR = 0
SUBQ_FAT = 1
VISC_FAT = 2
MUSCLE = 3
CORT_BONE = 4
MARROW = 5
DISC = 6
CSF = 7
CORD = 8
ART_BLOOD = 9
VEN_BLOOD = 10
LIVER = 11
PANCREAS = 12
SPLEEN = 13
KID_CORTEX = 14
KID_MEDULLA = 15
ADRENAL = 16
BILE = 17
GI_WALL = 18
GI_FLUID = 19
GAS = 20
CHYME = 21
URINE = 22
LUNG = 23
N_TISSUES = 24

TISSUE_NAMES = {
    AIR: "air", SUBQ_FAT: "subcutaneous_fat", VISC_FAT: "visceral_fat", MUSCLE: "muscle",
    CORT_BONE: "cortical_bone", MARROW: "marrow", DISC: "disc", CSF: "csf", CORD: "cord",
    ART_BLOOD: "arterial_blood", VEN_BLOOD: "venous_blood", LIVER: "liver",
    PANCREAS: "pancreas", SPLEEN: "spleen", KID_CORTEX: "kidney_cortex",
    KID_MEDULLA: "kidney_medulla", ADRENAL: "adrenal", BILE: "bile", GI_WALL: "gi_wall",
    GI_FLUID: "gi_fluid", GAS: "gas", CHYME: "chyme", URINE: "urine", LUNG: "lung",
}

VESSEL_TISSUES = (ART_BLOOD, VEN_BLOOD)

# Fat component (used wherever FF > 0), per field strength.
#   T1/T2 from dB04 (subcutaneous fat; 1.5 T unverified); T2* assumption.
FAT = {
    1.5: dict(T1=343.0, T2=58.0, T2s=22.0),
    3.0: dict(T1=382.0, T2=68.0, T2s=14.0),
}
#: effective FSE fat T2 multiplier (J-coupling suppression), reference §1.1: 1.5-2x
FSE_FAT_T2_FACTOR = 1.8

#: six-peak fat spectrum (ppm relative to water, relative amplitudes), reference §1.1
FAT_PPM = np.array([-3.80, -3.40, -2.60, -1.94, -0.39, 0.60])
FAT_AMP = np.array([0.087, 0.693, 0.128, 0.004, 0.039, 0.048])
GAMMA_BAR_MHZ_T = 42.577


def fat_phasor(te_ms: float, b0: float) -> complex:
    """c(TE) = sum_k a_k exp(i 2 pi gamma_bar B0 delta_k TE) for the six-peak model."""
    f_hz = GAMMA_BAR_MHZ_T * 1e6 * b0 * FAT_PPM * 1e-6
    return complex(np.sum(FAT_AMP * np.exp(2j * np.pi * f_hz * te_ms * 1e-3)))


# ----------------------------------------------------------------------------- table
# (T1_1.5, T2_1.5, T2s_1.5, T1_3, T2_3, T2s_3, PD, FF) for the *water* component of each
# tissue; FF is the fat fraction carried by the fat component above.
# Tissues whose composite T1 in the table is dominated by fat (adipose, marrow) get a
# water-component T1/T2 chosen so the composite matches the table (assumption).
# Pancreas T1: relaxometry at 1.5 T scatters between ~520 and 654 ms (dB04 via Fetal-XCMR
# 584, Tirkes 2019 VFA 654) and sits at 717-725 ms at 3 T, within a few per cent of the liver,
# yet the normal gland is iso- to hyperintense to the liver on fat-suppressed T1 (acinar
# protein; reference §1.7). With 584 ms at 1.5 T the phantom's pancreas came out darker than
# the liver on t1fs at centers B and C whenever its fat fraction was above average (ratio of
# medians down to 0.90). 520 / 700 ms (modelling choice at the short end of the published
# range) keep it at 0.98-1.30x the liver at every center (tests/test_phantom.py).
_TABLE: dict[int, tuple[float, float, float, float, float, float, float, float]] = {
    AIR: (1000, 1, 1, 1000, 1, 1, 0.0, 0.0),
    SUBQ_FAT: (1100, 40, 25, 1200, 35, 15, 0.90, 0.93),
    VISC_FAT: (1100, 40, 25, 1200, 35, 15, 0.90, 0.88),
    MUSCLE: (856, 27, 22, 898, 29, 16, 0.80, 0.03),     # dB04 (S05 1008/44, 1412/50 randomised)
    CORT_BONE: (200, 1, 0.5, 300, 1, 0.4, 0.08, 0.0),
    MARROW: (800, 45, 18, 900, 45, 11, 0.85, 0.45),     # composite ~549/586 (dB04); FF 0.3-0.6
    DISC: (1100, 110, 50, 1200, 95, 35, 0.85, 0.0),     # assumption
    CSF: (3600, 1500, 300, 4100, 1200, 200, 1.0, 0.0),  # fluid ranges (assumption)
    CORD: (750, 75, 45, 870, 70, 35, 0.75, 0.0),        # assumption
    ART_BLOOD: (1441, 290, 120, 1932, 275, 60, 0.95, 0.0),  # S05 / Sharma
    VEN_BLOOD: (1582, 181, 60, 1584, 66, 25, 0.95, 0.0),    # Fetal-XCMR (IT'IS)
    LIVER: (586, 46, 28, 809, 34, 18, 0.80, 0.02),      # dB04 / S05
    PANCREAS: (520, 46, 30, 700, 43, 21, 0.80, 0.03),   # see the note above the table
    SPLEEN: (1057, 79, 50, 1328, 61, 33, 0.85, 0.0),    # dB04
    KID_CORTEX: (966, 87, 55, 1142, 76, 38, 0.87, 0.007),
    KID_MEDULLA: (1412, 85, 55, 1545, 81, 40, 0.90, 0.0),
    ADRENAL: (700, 50, 28, 900, 42, 18, 0.80, 0.05),    # assumption
    BILE: (2000, 600, 200, 2400, 500, 150, 1.0, 0.0),   # gallbladder bile (variable, assumption)
    GI_WALL: (981, 40, 25, 1233, 37, 18, 0.80, 0.0),    # Fetal-XCMR (stomach wall = muscle-like)
    GI_FLUID: (3300, 1200, 250, 3800, 1000, 180, 1.0, 0.0),
    GAS: (1000, 1, 1, 1000, 1, 1, 0.0, 0.0),
    CHYME: (900, 90, 40, 1100, 80, 25, 0.85, 0.15),     # fluid-fat mix (assumption)
    URINE: (3300, 1200, 250, 3800, 1000, 180, 1.0, 0.0),
    LUNG: (1200, 40, 1.5, 1300, 35, 1.0, 0.08, 0.0),    # assumption
}

#: extracellular volume fraction for the Gd model (reference §1.2; assumptions except pancreas)
ECV = {
    MUSCLE: 0.12, SUBQ_FAT: 0.07, VISC_FAT: 0.07, MARROW: 0.15, CORT_BONE: 0.05, DISC: 0.03,
    LIVER: 0.27, PANCREAS: 0.28, SPLEEN: 0.35, ADRENAL: 0.30, GI_WALL: 0.25, CORD: 0.01,
    CHYME: 0.0, LUNG: 0.10,
}
HCT = 0.42
#: absolute tissue Gd concentration (mM) for the kidney (filtration concentrates the agent)
KIDNEY_C = {KID_CORTEX: 2.0, KID_MEDULLA: 0.9}
#: plasma concentration at 70 s (portal-venous phase), Parker AIF (reference §1.2)
CP_PORTAL_VENOUS = 1.49
#: r1 of gadobutrol in plasma, L/mmol/s (Szomolanyi 2019); r2 ~ 1.3 r1 (assumption)
R1_GADOBUTROL = {1.5: 4.78, 3.0: 4.97}

#: multiplicative texture amplitude per tissue (fraction, reference §2.2: 2-5 %)
TEXTURE_AMP = np.zeros(N_TISSUES, dtype=np.float32)
for _t, _a in {
    LIVER: 0.04, PANCREAS: 0.07, SPLEEN: 0.035, KID_CORTEX: 0.03, KID_MEDULLA: 0.04,
    MUSCLE: 0.05, SUBQ_FAT: 0.03, VISC_FAT: 0.05, MARROW: 0.10, GI_WALL: 0.05, CHYME: 0.15,
    ADRENAL: 0.03, DISC: 0.05, GI_FLUID: 0.02, BILE: 0.02, VEN_BLOOD: 0.02, ART_BLOOD: 0.02,
}.items():
    TEXTURE_AMP[_t] = _a


@dataclass
class TissueParams:
    """Per-subject, per-field tissue parameter vectors indexed by tissue id (float32)."""

    field_strength: float
    T1: np.ndarray
    T2: np.ndarray
    T2s: np.ndarray
    PD: np.ndarray
    FF: np.ndarray
    conc_pv: np.ndarray  # Gd concentration (mM) in the portal-venous phase
    fat_T1: float
    fat_T2: float
    fat_T2s: float
    r1: float  # 1/(ms mM)
    r2: float

    def post_contrast(self, conc: np.ndarray | None = None) -> TissueParams:
        """Parameters with 1/T1 = 1/T1_0 + r1 C (and the same for T2/T2*, r2)."""
        c = self.conc_pv if conc is None else conc
        t1 = 1.0 / (1.0 / self.T1 + self.r1 * c)
        t2 = 1.0 / (1.0 / self.T2 + self.r2 * c)
        t2s = 1.0 / (1.0 / self.T2s + self.r2 * c)
        return TissueParams(self.field_strength, t1.astype(np.float32), t2.astype(np.float32),
                            t2s.astype(np.float32), self.PD, self.FF, c, self.fat_T1,
                            self.fat_T2, self.fat_T2s, self.r1, self.r2)


def sample_tissue_params(rng: np.random.Generator, field_strength: float,
                         subject_traits: dict) -> TissueParams:
    """Draw per-subject parameters: +/-10 % T1/T2, +/-5 % PD, FF and ECV jitter.

    ``subject_traits`` carries values shared across field strengths for one subject (marrow FF
    from age, pancreas FF, muscle literature mix, bile composition); it is drawn once per
    subject so that the same subject scanned at two centers has the same physiology.
    """
    fs = 3.0 if field_strength > 2.0 else 1.5
    col = 0 if fs == 1.5 else 3
    T1 = np.empty(N_TISSUES, np.float64)
    T2 = np.empty(N_TISSUES, np.float64)
    T2s = np.empty(N_TISSUES, np.float64)
    PD = np.empty(N_TISSUES, np.float64)
    FF = np.empty(N_TISSUES, np.float64)
    for t, row in _TABLE.items():
        T1[t], T2[t], T2s[t] = row[col], row[col + 1], row[col + 2]
        PD[t], FF[t] = row[6], row[7]
    jit = subject_traits["jitter"]  # (3, N) uniform in [-1, 1], shared across fields
    T1 *= 1.0 + 0.10 * jit[0]
    T2 *= 1.0 + 0.10 * jit[1]
    T2s *= 1.0 + 0.10 * jit[1]
    PD *= 1.0 + 0.05 * jit[2]
    # muscle: de Bazelaire vs Stanisz differ by up to 50 % at 3 T -> mix
    m = subject_traits["muscle_mix"]
    s05 = {1.5: (1008.0, 44.0), 3.0: (1412.0, 50.0)}[fs]
    T1[MUSCLE] = (1 - subject_traits["muscle_mix_t1"]) * T1[MUSCLE] + subject_traits["muscle_mix_t1"] * s05[0]
    T2[MUSCLE] = (1 - m) * T2[MUSCLE] + m * s05[1]
    FF[MARROW] = subject_traits["marrow_ff"]
    FF[PANCREAS] = subject_traits["pancreas_ff"]
    FF[LIVER] = subject_traits["liver_ff"]
    T1[BILE] = subject_traits["bile_t1"] * (1.0 if fs == 1.5 else 1.15)
    T2[BILE] = subject_traits["bile_t2"] * (1.0 if fs == 1.5 else 0.85)
    T2s[BILE] = 0.35 * T2[BILE]
    # Gd concentrations (portal-venous phase)
    cp = CP_PORTAL_VENOUS * subject_traits["cp_scale"]
    conc = np.zeros(N_TISSUES)
    for t, e in ECV.items():
        conc[t] = e * cp
    if fs == 3.0:
        conc[PANCREAS] = 0.25 * cp  # Tirkes: median 0.25 at 3 T
    conc[PANCREAS] *= subject_traits["pancreas_ecv_scale"]
    conc[ART_BLOOD] = conc[VEN_BLOOD] = (1.0 - HCT) * cp  # plasma space of whole blood
    for t, c in KIDNEY_C.items():
        conc[t] = c * subject_traits["cp_scale"]
    r1 = R1_GADOBUTROL[fs] * 1e-3
    f = FAT[fs]
    return TissueParams(fs, T1.astype(np.float32), T2.astype(np.float32),
                        T2s.astype(np.float32), PD.astype(np.float32), FF.astype(np.float32),
                        conc.astype(np.float32), f["T1"], f["T2"], f["T2s"], r1, 1.3 * r1)


def sample_subject_traits(rng: np.random.Generator) -> dict:
    age = float(rng.uniform(20, 80))
    return dict(
        age=age,
        jitter=rng.uniform(-1, 1, size=(3, N_TISSUES)),
        muscle_mix=float(rng.uniform(0, 0.3)),
        muscle_mix_t1=float(rng.uniform(0.3, 0.8)),
        marrow_ff=float(np.clip(0.3 + 0.3 * (age - 20) / 60 + rng.normal(0, 0.04), 0.3, 0.6)),
        pancreas_ff=float(np.clip(0.028 + 0.035 * max(age - 45, 0) / 25
                                  + rng.normal(0, 0.008), 0.01, 0.09)),
        liver_ff=float(np.clip(rng.lognormal(np.log(0.025), 0.4), 0.005, 0.12)),
        bile_t1=float(rng.uniform(1000, 3000)),
        bile_t2=float(rng.uniform(300, 1000)),
        cp_scale=float(rng.uniform(0.85, 1.15)),
        pancreas_ecv_scale=float(rng.uniform(0.8, 1.2)),
    )
