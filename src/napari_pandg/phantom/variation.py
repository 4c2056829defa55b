"""Anatomy randomisation: per-subject organ size, shape, position and habitus knobs.

The default phantom (``variation=None``) draws a narrow family of adults around one layout,
which is what let the shipped models learn *this phantom* rather than abdominal anatomy. An
:class:`AnatomyVariation` widens every knob to published adult ranges and adds what real
abdomens show and the default never does: absent organs, atrophic or fatty glands, very thin
or obese habitus, strong organ displacement and deformation. :func:`sample_variation` draws
one; :func:`napari_pandg.phantom.anatomy.build_anatomy` applies it. Ranges and their sources
are tabulated in ``docs/phantom.md`` (section *Anatomy randomisation*).

Everything is a pure function of the seed: the variation carries its own ``seed`` for the
extra random fields it needs, so ``build_anatomy(rng, variation=v)`` stays deterministic and
``variation=None`` reproduces the default phantom bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: organs that get an independent scale / shift / rotation
ORGANS = ("liver", "spleen", "kidney_r", "kidney_l", "stomach", "gallbladder", "duodenum", "pancreas", "vessels")

#: adult pancreas volume range (mL) used by the randomised anatomy (issue 11; Saisho 2007,
#: Szczepaniak 2012: 40-120 mL in healthy adults, lower in the elderly / atrophy)
PANCREAS_ML = (40.0, 120.0)


@dataclass(frozen=True)
class AnatomyVariation:
    """One subject's anatomy knobs (identity values = the default phantom)."""

    seed: int = 0
    #: body-mass knob: 0..1 is the default phantom's range; <0 thin, >1 obese (subcut. fat 3-65 mm)
    bmi: float = 0.5
    #: multipliers of the body outline's half-width (LR) and depth (AP)
    body_scale: tuple[float, float] = (1.0, 1.0)
    #: smooth global deformation: amplitude (mm) and correlation length (mm), plus a finer field
    warp_amp: float = 3.0
    warp_corr: float = 45.0
    warp_fine_amp: float = 0.0
    #: boundary irregularity multiplier (organ outline noise)
    shape_noise: float = 1.0
    #: fat gap between organs, multiplier of the default 1-1.5 mm (visceral fat amount)
    gap: float = 1.0
    scale: dict[str, float] = field(default_factory=dict)
    shift: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    rot: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    #: pancreas: target volume (mL), AP thickness multipliers (head, neck/body, tail),
    #: lobulation amplitude, fraction of the gland replaced by interlobular fat, atrophy
    pancreas_ml: float = 78.0
    pancreas_thickness: tuple[float, float, float] = (1.0, 1.0, 1.0)
    pancreas_lobulation: float = 0.06
    fatty_infiltration: float = 0.0
    atrophic: bool = False
    pancreas_config: str | None = None
    #: organs not painted at all (cholecystectomy, nephrectomy, splenectomy)
    absent: tuple[str, ...] = ()
    #: small-bowel loops and how often their lumen holds gas
    n_loops: int = 12
    bowel_gas: float = 0.1

    def s(self, organ: str) -> float:
        return float(self.scale.get(organ, 1.0))

    def d(self, organ: str) -> np.ndarray:
        return np.asarray(self.shift.get(organ, (0.0, 0.0, 0.0)), dtype=np.float64)

    def r(self, organ: str) -> tuple[float, float, float]:
        return tuple(float(v) for v in self.rot.get(organ, (0.0, 0.0, 0.0)))  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def sample_variation(rng: np.random.Generator, strength: float = 1.0) -> AnatomyVariation:
    """Draw one subject's knobs; ``strength`` in [0, 1] scales every range (1 = full range)."""
    k = float(np.clip(strength, 0.0, 1.5))
    U = lambda a, b: float(rng.uniform(a, b))  # noqa: E731

    def around(lo: float, hi: float, centre: float = 1.0) -> float:
        """U(lo, hi) shrunk toward ``centre`` by the strength."""
        return centre + k * (U(lo, hi) - centre)

    scale = {
        "liver": around(0.78, 1.3),        # craniocaudal span 11-18 cm (hepatomegaly > 16 cm)
        "spleen": around(0.7, 1.6),        # length 7-17 cm (splenomegaly > 13 cm)
        "kidney_r": around(0.82, 1.18),    # length 9-14 cm
        "kidney_l": around(0.82, 1.18),
        "stomach": around(0.5, 1.5),       # collapsed to distended
        "gallbladder": around(0.55, 1.45),  # contracted to distended
        "duodenum": around(0.75, 1.3),
        "vessels": around(0.85, 1.2),      # aortic / IVC calibre
    }
    shift = {
        "liver": tuple(k * rng.normal(0, [8, 8, 10])),
        "spleen": tuple(k * rng.normal(0, [10, 10, 12])),
        "kidney_r": tuple(k * rng.normal(0, [7, 6, 14])),   # ptosis / high kidneys
        "kidney_l": tuple(k * rng.normal(0, [7, 6, 14])),
        "stomach": tuple(k * rng.normal(0, [10, 8, 10])),
        "gallbladder": tuple(k * rng.normal(0, [8, 8, 10])),
        "pancreas": tuple(k * rng.normal(0, [5, 5, 14])),    # L1-L2 level varies by a vertebra
        "vessels": tuple(k * rng.normal(0, [3, 2, 0])),
    }
    rot = {
        "pancreas": (k * rng.normal(0, 6), k * rng.normal(0, 5), k * rng.normal(0, 12)),
        "spleen": (k * rng.normal(0, 10), k * rng.normal(0, 10), k * rng.normal(0, 15)),
        "kidney_r": (k * rng.normal(0, 8), k * rng.normal(0, 8), k * rng.normal(0, 12)),
        "kidney_l": (k * rng.normal(0, 8), k * rng.normal(0, 8), k * rng.normal(0, 12)),
        "liver": (k * rng.normal(0, 5), k * rng.normal(0, 5), k * rng.normal(0, 8)),
    }
    atrophic = bool(rng.random() < 0.12 * k)
    lo, hi = PANCREAS_ML
    ml = U(lo, 75.0) if atrophic else U(lo, hi)
    absent = []
    for organ, p in (("gallbladder", 0.15), ("kidney_r", 0.03), ("kidney_l", 0.03), ("spleen", 0.03)):
        if rng.random() < p * k:
            absent.append(organ)
    if "kidney_r" in absent and "kidney_l" in absent:
        absent.remove("kidney_l")
    configs = ["oblique", "horizontal", "sigmoid", "inverted_v"]
    return AnatomyVariation(
        seed=int(rng.integers(0, 2**31 - 1)),
        bmi=0.5 + k * (U(-0.35, 1.6) - 0.5),
        body_scale=(around(0.88, 1.14), around(0.88, 1.16)),
        warp_amp=3.25 + k * (U(1.5, 10.0) - 3.25),
        warp_corr=U(35.0, 80.0) if k > 0 else 45.0,
        warp_fine_amp=k * U(0.0, 3.0),
        shape_noise=1.0 + k * U(0.0, 2.0),
        gap=1.0 + k * (U(0.5, 2.6) - 1.0),
        scale=scale,
        shift={o: tuple(float(x) for x in v) for o, v in shift.items()},
        rot={o: tuple(float(x) for x in v) for o, v in rot.items()},
        pancreas_ml=float(ml),
        pancreas_thickness=(around(0.75, 1.3), around(0.65, 1.3), around(0.6, 1.35)),
        pancreas_lobulation=0.04 + k * U(0.0, 0.26),
        fatty_infiltration=float(k * rng.choice([0.0, U(0.05, 0.35)], p=[0.7, 0.3])),
        atrophic=atrophic,
        pancreas_config=str(rng.choice(configs)) if k > 0 else None,
        absent=tuple(absent),
        n_loops=int(rng.integers(6, 21)) if k > 0 else 12,
        bowel_gas=0.1 + k * U(-0.08, 0.35),
    )
