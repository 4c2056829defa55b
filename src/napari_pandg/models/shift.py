"""Shift score: how far a volume lies from a model's training domain, per segmentation.

A model trained on one sequence can return a confident-looking mask on another sequence
where it scores zero (and a "pancreas" on a blank image). The shift score tells the user
when not to trust a result. It combines, each scaled so that 1.0 is the most unusual value
seen on the model's calibration volumes (in-domain, never used to fit the reference):

* ``feature``: Mahalanobis distance of the volume's pooled bottleneck features (the model's
  own deepest encoder output, averaged over the sliding windows) to the training-domain
  features stored in the checkpoint (mean and Ledoit-Wolf shrunk precision; scikit-learn's
  ``LedoitWolf``, because ~50 reference volumes do not support a plain 128 x 128 covariance);
* ``confidence``: 1 - mean softmax probability over the voxels the model calls foreground
  (low confidence where the features are familiar but the answer is not), scaled by the
  least confident reference volume;
* ``volume``: the predicted pancreas volume against the plausible adult range (none found,
  or far too large);
* ``image``: sanity of the input itself: a blank or constant image, or a foreground share
  far outside what the training volumes had.

``score = max(components)``; ``flagged = score > 1``. The reference is fitted by
:func:`fit_reference` on training-domain volumes (for streamed models: fresh subjects of the
training stream; for manifest models: the training subjects) and calibrated on further
held-out in-domain volumes (the run's validation subjects and more). It lives in
``ModelDescription.shift``; models without one get only the sanity components.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

#: plausible predicted pancreas volume (mL): below, the gland was missed or the slab cuts it;
#: above, the mask has run into neighbouring organs (adult range 40-120 mL, Saisho 2007)
PLAUSIBLE_ML = (15.0, 220.0)
SHIFT_FORMAT = 1


def bottleneck_name(net: nn.Module, patch: Sequence[int], in_channels: int = 1) -> str | None:
    """Name of the deepest encoder module: smallest spatial output, most channels, not a concat.

    ``in_channels`` is what the network is called with (the image: 1 channel, also for a
    MaskGen-style ``FeatureConcatNet`` whose segmentation head sees image + features). For
    such a network the bottleneck is taken from its segmentation head (``seg.``), the part
    that was trained on the source domain, not from the frozen feature extractor.
    """
    from napari_pandg.models.networks import FeatureConcatNet

    prefix = "seg." if isinstance(net, FeatureConcatNet) else ""
    seen: list[tuple[str, str, tuple[int, ...]]] = []
    hooks = []
    for name, mod in net.named_modules():
        if not name or not name.startswith(prefix):
            continue

        def hook(m: nn.Module, _i: Any, out: Any, name: str = name) -> None:
            if torch.is_tensor(out) and out.ndim == 5:
                seen.append((name, type(m).__name__, tuple(out.shape)))

        hooks.append(mod.register_forward_hook(hook))
    p = next(net.parameters(), None)
    try:
        with torch.no_grad():
            net(torch.zeros((1, in_channels, *patch), dtype=p.dtype if p is not None else torch.float32,
                            device=p.device if p is not None else "cpu"))  # fmt: skip
    finally:
        for h in hooks:
            h.remove()
    cand = [s for s in seen if "SkipConnection" not in s[1] and "Concat" not in s[1]]
    if not cand:  # no 3D feature maps (e.g. a thresholding stand-in): only the sanity checks run
        return None
    smallest = min(math.prod(s[2][2:]) for s in cand)
    cand = [s for s in cand if math.prod(s[2][2:]) == smallest]
    most = max(s[2][1] for s in cand)
    cand = [s for s in cand if s[2][1] == most]
    return min(cand, key=lambda s: (s[0].count("."), s[0]))[0]


class BottleneckProbe:
    """Context manager: mean-pools the bottleneck output of every window the network sees."""

    def __init__(self, net: nn.Module, name: str) -> None:
        self.module = dict(net.named_modules())[name]
        self.sum: torch.Tensor | None = None
        self.count = 0
        self._h: Any = None

    def __enter__(self) -> BottleneckProbe:
        def hook(_m: nn.Module, _i: Any, out: torch.Tensor) -> None:
            pooled = out.detach().float().mean(dim=tuple(range(2, out.ndim)))  # (B, C)
            s = pooled.sum(0).cpu()
            self.sum = s if self.sum is None else self.sum + s
            self.count += int(pooled.shape[0])

        self._h = self.module.register_forward_hook(hook)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._h.remove()

    def descriptor(self) -> np.ndarray:
        if self.sum is None or self.count == 0:
            raise ValueError("no window passed the bottleneck")
        return (self.sum / self.count).numpy().astype(np.float64)


@dataclass
class ShiftSignals:
    """What one segmentation measured (raw, before comparing with the reference)."""

    features: list[float]
    confidence: float  # mean max-softmax over predicted foreground voxels (nan if none)
    volume_ml: float  # predicted foreground (pancreas) volume
    fg_fraction: float  # share of the image above the normalisation's foreground threshold
    constant: bool  # the image has (almost) no intensity variation

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ShiftReport:
    score: float
    flagged: bool
    components: dict[str, float]
    reasons: list[str] = field(default_factory=list)
    feature_distance: float = float("nan")
    calibrated: bool = True

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ShiftReport:
        """Inverse of :meth:`to_dict` (a sidecar JSON or ``Volume.metadata['shift']``)."""
        fd = d.get("feature_distance")
        return cls(float(d["score"]), bool(d["flagged"]), dict(d.get("components") or {}), list(d.get("reasons") or []),
                   float("nan") if fd is None else float(fd), bool(d.get("calibrated", True)))  # fmt: skip

    def summary(self) -> str:
        head = f"shift score {self.score:.2f}" + (" (above 1: outside the training domain)" if self.flagged else " (in domain)")
        if not self.calibrated:
            head += "; this model has no training-domain reference, only image/volume checks ran"
        return head + ("".join(f"\n  - {r}" for r in self.reasons) if self.reasons else "")


def image_signals(norm: np.ndarray, raw: np.ndarray, threshold: float = 0.1) -> tuple[float, bool]:
    """(foreground share, constant?) of an image, as the normalisation sees it."""
    from napari_pandg.models.preprocess import foreground_mask

    raw = np.asarray(raw, dtype=np.float32)
    p1, p99 = np.percentile(raw, [1.0, 99.0]) if raw.size else (0.0, 0.0)
    constant = bool(raw.size == 0 or float(p99 - p1) <= 1e-6 * max(1.0, abs(float(p99))))
    fg = foreground_mask(raw, threshold)
    frac = 0.0 if constant else float(fg.mean())
    return frac, constant


def mahalanobis(x: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> float:
    d = np.asarray(x, np.float64) - np.asarray(mean, np.float64)
    return float(np.sqrt(max(float(d @ np.asarray(precision, np.float64) @ d), 0.0)))


def _components(ref: Mapping[str, Any] | None, sig: ShiftSignals) -> tuple[dict[str, float], float]:
    comp: dict[str, float] = {}
    dist = float("nan")
    if ref and sig.features:
        if len(sig.features) != len(ref["mean"]):
            raise ValueError(f"the shift-score reference has {len(ref['mean'])} features but the network's layer "
                             f"{ref.get('layer')!r} gives {len(sig.features)} (a reference fitted for another model?)")  # fmt: skip
        dist = mahalanobis(np.asarray(sig.features), np.asarray(ref["mean"]), np.asarray(ref["precision"]))
        comp["feature"] = dist / float(ref["feature_threshold"])
        if math.isfinite(sig.confidence):
            comp["confidence"] = (1.0 - sig.confidence) / float(ref["confidence_threshold"])
        else:
            comp["confidence"] = 0.0
    lo, hi = (ref or {}).get("volume_ml", PLAUSIBLE_ML)
    v = sig.volume_ml
    comp["volume"] = 2.0 if v <= 0 else (1.0 + abs(math.log(v / lo)) if v < lo else (1.0 + math.log(v / hi) if v > hi else 0.0))
    flo, fhi = (ref or {}).get("fg_fraction", (0.02, 0.98))
    f = sig.fg_fraction
    if sig.constant:
        comp["image"] = 100.0
    elif f < flo:
        comp["image"] = flo / max(f, 1e-6)
    else:
        comp["image"] = f / fhi if f > fhi else 0.0
    return comp, dist


def shift_report(ref: Mapping[str, Any] | None, sig: ShiftSignals) -> ShiftReport:
    comp, dist = _components(ref, sig)
    score = max(comp.values()) if comp else 0.0
    reasons: list[str] = []
    if sig.constant:
        reasons.append("the image is blank or constant: there is nothing to segment")
    elif comp.get("image", 0.0) > 1:
        reasons.append(f"only {100 * sig.fg_fraction:.1f} % of the image is above the background threshold "
                       f"(training volumes: {100 * (ref or {}).get('fg_fraction', (0.02, 0.98))[0]:.1f}-"
                       f"{100 * (ref or {}).get('fg_fraction', (0.02, 0.98))[1]:.1f} %)")  # fmt: skip
    if comp.get("feature", 0.0) > 1:
        reasons.append(f"its features are {comp['feature']:.1f}x farther from the training domain than any "
                       "calibration volume (another sequence or scanner than the model was trained on?)")  # fmt: skip
    if comp.get("confidence", 0.0) > 1:
        reasons.append(f"the model is unsure of its mask (mean probability {sig.confidence:.2f})")
    if comp.get("volume", 0.0) > 1:
        if sig.volume_ml <= 0:
            reasons.append("no pancreas was found (outside the field of view, or the model failed)")
        else:
            lo, hi = (ref or {}).get("volume_ml", PLAUSIBLE_ML)
            reasons.append(f"the predicted pancreas is {sig.volume_ml:.0f} mL, outside the plausible {lo:.0f}-{hi:.0f} mL")
    return ShiftReport(round(float(score), 4), bool(score > 1.0), {k: round(float(v), 4) for k, v in comp.items()},
                       reasons, dist, calibrated=bool(ref))  # fmt: skip


def fit_reference(
    fit: Iterable[ShiftSignals], calibrate: Iterable[ShiftSignals], layer: str, source: str,
    augmented: Iterable[ShiftSignals] = (),
) -> dict[str, Any]:  # fmt: skip
    """The ``ModelDescription.shift`` entry: reference features + calibrated thresholds.

    ``fit`` and ``calibrate`` are volumes of the model's training domain (its ``domains``:
    source center and sequence); ``augmented`` are further volumes the model was trained on
    (e.g. the random-contrast renderings of a ``synth`` model): they widen the feature
    statistics (mean, covariance) but not the thresholds, so that 1.0 stays "as unusual as
    the most unusual source-domain calibration volume" (renderings span contrasts on which the
    model is not known to be right)."""
    from sklearn.covariance import LedoitWolf

    fit = list(fit)
    cal = list(calibrate)
    aug = list(augmented)
    if len(fit) < 5 or len(cal) < 2:
        raise ValueError(f"a shift reference needs >= 5 fitting and >= 2 calibration volumes (got {len(fit)}, {len(cal)})")
    X = np.asarray([s.features for s in fit + aug], np.float64)
    lw = LedoitWolf().fit(X)
    mean, prec = lw.location_, lw.precision_
    d_cal = [mahalanobis(np.asarray(s.features), mean, prec) for s in cal]
    conf = [1.0 - s.confidence for s in cal + fit if math.isfinite(s.confidence)]
    fg = [s.fg_fraction for s in fit + cal]
    return {
        "format": SHIFT_FORMAT,
        "layer": layer,
        "mean": [float(v) for v in mean],
        "precision": [[float(v) for v in row] for row in prec],
        "shrinkage": float(lw.shrinkage_),
        # 1.0 = the most unusual calibration volume (no in-domain calibration volume is flagged)
        "feature_threshold": float(max(d_cal)),
        "confidence_threshold": float(max(max(conf), 1e-3)) if conf else 1.0,
        "fg_fraction": [float(min(fg)) / 2.0, min(1.0, float(max(fg)) * 1.5)],
        "volume_ml": list(PLAUSIBLE_ML),
        "calibration": {"feature_distance": [round(float(d), 3) for d in d_cal], "n_fit": len(fit), "n_cal": len(cal),
                        "n_augmented": len(aug)},
        "source": source,
    }
