"""Domain-generalisation methods as small strategy objects used by the trainer.

=============  =================================================================================
name           what changes compared with plain training (ERM)
=============  =================================================================================
erm            nothing (``method.augment`` picks the augmentation preset, default ``standard``)
bigaug         stacked strong MONAI intensity + spatial augmentations (Zhang et al., BigAug)
gin            GIN: random shallow conv nets applied to the input (Ouyang et al., GIN-IPA,
               without IPA); params ``prob`` (0.5), ``layers`` (4), ``width`` (8), ``kernel`` (3)
synth          label-map domain randomisation (SynthSeg-style): training images replaced by
               random-contrast renderings of the label file's anatomy (all its structures, plus
               intensity bins of unlabelled voxels) with probability ``prob`` (0.8)
maskgen        MaskGen/DropGen: concat(image, frozen features) with whole-channel dropout
               ``drop_prob`` (0.75) during training, all channels at inference; params
               ``features`` (a napari-pandg feature checkpoint, ``anatomix.pth``, or ``random``)
meanteacher    semi-supervised mean teacher on unlabelled target-domain volumes
               (``data.unlabeled_*``): consistency MSE between student and EMA teacher softmax
               under different intensity perturbations; params ``ema`` (0.99),
               ``consistency`` (1.0), ``rampup_epochs`` (5), ``noise`` (0.1); exports the teacher
finetune       ERM from ``init_checkpoint`` (few-shot: ``data.max_train_subjects``)
=============  =================================================================================

Randomness inside methods (GIN weights, channel masks, teacher noise) comes from a
``torch.Generator`` seeded per step and rank by the trainer, so runs are reproducible.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from napari_pandg.models.errors import ModelError
from napari_pandg.train.config import ConfigError, TrainConfig

AUGMENT_PRESETS = ("none", "standard", "bigaug")


def augmentations(preset: str, p: float | None = None, label_keys: Sequence[str] = ("label",)) -> list[Any]:
    """MONAI dictionary transforms for the ``image`` and ``label_keys`` keys (after the patch crop).

    Spatial transforms move ``image`` (bilinear) and every key of ``label_keys`` (nearest);
    intensity transforms touch ``image`` only.
    """
    from monai.transforms import (
        RandAdjustContrastd,
        RandAffined,
        RandBiasFieldd,
        RandGaussianNoised,
        RandGaussianSharpend,
        RandGaussianSmoothd,
        RandGibbsNoised,
        RandScaleIntensityd,
        RandShiftIntensityd,
        RandSimulateLowResolutiond,
    )

    keys = ["image", *label_keys]
    img = ["image"]
    modes = ("bilinear",) + ("nearest",) * len(label_keys)
    pads = ("border",) + ("zeros",) * len(label_keys)
    if preset == "none":
        return []
    if preset == "standard":  # MaskGen-like, gentler geometry for the abdomen
        p = 0.33 if p is None else p
        return [
            RandAffined(keys, prob=p, rotate_range=(0.1, 0.1, 0.35), scale_range=(0.15, 0.15, 0.15),
                        shear_range=(0.05, 0.05, 0.05), mode=modes,
                        padding_mode=pads),  # fmt: skip
            RandSimulateLowResolutiond(img, prob=p, zoom_range=(0.5, 1.0)),
            RandGaussianNoised(img, prob=p, std=0.1),
            RandBiasFieldd(img, prob=p, coeff_range=(0.0, 0.1)),
            RandAdjustContrastd(img, prob=p, gamma=(0.7, 1.5)),
            RandGaussianSmoothd(img, prob=p, sigma_x=(0.25, 1.0), sigma_y=(0.25, 1.0), sigma_z=(0.25, 1.0)),
        ]
    if preset == "bigaug":  # nnUNetBigAugTrainerV2-like ranges (rot 30 deg, gamma 0.5-4.5)
        p = 0.5 if p is None else p
        return [
            RandAffined(keys, prob=p, rotate_range=(0.2, 0.2, 0.52), scale_range=(0.3, 0.3, 0.3),
                        shear_range=(0.1, 0.1, 0.1), mode=modes,
                        padding_mode=pads),  # fmt: skip
            RandSimulateLowResolutiond(img, prob=p, zoom_range=(0.4, 1.0)),
            RandGaussianSmoothd(img, prob=p, sigma_x=(0.5, 1.5), sigma_y=(0.5, 1.5), sigma_z=(0.25, 1.0)),
            RandGaussianSharpend(img, prob=p / 2),
            RandGaussianNoised(img, prob=p, std=0.2),
            RandGibbsNoised(img, prob=p / 2, alpha=(0.0, 0.5)),
            RandBiasFieldd(img, prob=p, coeff_range=(0.0, 0.3)),
            RandScaleIntensityd(img, prob=p, factors=0.3),
            RandShiftIntensityd(img, prob=p, offsets=0.3),
            RandAdjustContrastd(img, prob=p, gamma=(0.5, 4.5)),
        ]
    raise ConfigError(f"unknown method.augment {preset!r}; choose from {', '.join(AUGMENT_PRESETS)}")


class Method:
    """ERM: the base strategy; subclasses override the hooks they need."""

    name = "erm"
    needs_unlabeled = False
    #: the trainer loads anatomy region maps (``batch["regions"]``, see ``data.region_map``)
    needs_regions = False

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.params: dict[str, Any] = dict(cfg.method.params)

    # --- construction
    def in_channels(self) -> int:
        return 1

    def augmentations(self) -> list[Any]:
        # streamed phantom data is rendered before the crop: no region maps travel with it
        keys = ("label", "regions") if self.needs_regions and self.cfg.data.source != "phantom" else ("label",)
        return augmentations(self.cfg.method.augment, self.params.get("aug_prob"), keys)

    def setup(self, model: nn.Module, device: torch.device) -> None:
        """Called once the trainable model is on its device."""

    # --- training
    def prepare_input(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return x

    def loss(
        self, model: nn.Module, batch: dict[str, torch.Tensor], loss_fn: Any, gen: torch.Generator,
        step: int, unlabeled: Any = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:  # fmt: skip
        logits = model(self.prepare_input(batch["image"], gen))
        loss = loss_fn(logits, batch["label"])
        return loss, {}

    def after_step(self, model: nn.Module, step: int) -> None:
        """After the optimiser step (EMA updates)."""

    def render_prob(self) -> float:
        """Share of streamed patches (``data.source: phantom``) taken from random-contrast renderings."""
        return 0.0

    # --- export (validation and checkpoints)
    def export_network(self, model: nn.Module) -> nn.Module:
        return _unwrap(model)

    def description_updates(self) -> dict[str, Any]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


class BigAug(Method):
    name = "bigaug"

    def augmentations(self) -> list[Any]:
        preset = self.cfg.method.augment if self.cfg.method.augment != "standard" else "bigaug"
        return augmentations(preset, self.params.get("aug_prob"))


def gin_augment(
    x: torch.Tensor, gen: torch.Generator, layers: int = 4, width: int = 8, kernel: int = 3,
    prob: float = 0.5,
) -> torch.Tensor:  # fmt: skip
    """Global intensity non-linear augmentation (GIN, Ouyang et al. 2022).

    Per sample (with probability ``prob``): a random ``layers``-deep conv net (kernel 1 or
    ``kernel``, ``width`` channels, weights ~ N(0, 1), leaky-ReLU), mixed with the input by a
    random ``alpha`` ~ U(0, 1), then re-standardised to the input's mean and std.
    """
    out = x.clone()
    for b in range(x.shape[0]):
        if float(torch.rand((), generator=gen)) >= prob:
            continue
        h = x[b : b + 1]
        cin = h.shape[1]
        for i in range(layers):
            cout = cin if i == layers - 1 else width
            k = kernel if float(torch.rand((), generator=gen)) < 0.5 else 1
            w = torch.randn((cout, h.shape[1], k, k, k), generator=gen) / math.sqrt(h.shape[1] * k**3)
            bias = torch.randn((cout,), generator=gen) * 0.1
            h = F.conv3d(h, w.to(h), bias.to(h), padding=k // 2)
            if i < layers - 1:
                h = F.leaky_relu(h, 0.2)
        alpha = float(torch.rand((), generator=gen))
        mixed = alpha * h + (1 - alpha) * x[b : b + 1]
        mean, std = x[b].mean(), x[b].std()
        mixed = (mixed - mixed.mean()) / (mixed.std() + 1e-6) * std + mean
        out[b] = mixed[0]
    return out


class GIN(Method):
    name = "gin"

    def prepare_input(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return gin_augment(
            x, gen, layers=int(self.params.get("layers", 4)), width=int(self.params.get("width", 8)),
            kernel=int(self.params.get("kernel", 3)), prob=float(self.params.get("prob", 0.5)),
        )  # fmt: skip


class Synth(Method):
    """Label-map domain randomisation (SynthSeg-style; Billot et al. 2023).

    With probability ``prob`` (default 0.8) a training patch's image is replaced by a rendering
    of its anatomy regions with random contrast (:func:`napari_pandg.train.features.render`:
    random mean and spread per region, blur, bias field, gamma, noise), rescaled to the real
    patch's mean and standard deviation. The regions are every structure of the label file plus
    intensity bins of the unlabelled voxels (:func:`napari_pandg.train.data.region_map`), so a
    sequence's contrast, including inverted contrast, is one draw among many. The network is a
    plain single-channel model; inference is unchanged.

    Optional acquisition effects of the rendering (``render``'s arguments, off when absent):
    ``texture`` (per-structure smooth texture amplitude), ``slice_blur`` (extra through-plane
    blur sigma, voxels: thick-slice T2 / Dixon) and ``rician`` (probability of magnitude noise).
    """

    name = "synth"
    needs_regions = True

    def render_prob(self) -> float:
        return float(self.params.get("prob", 0.8))

    def loss(self, model, batch, loss_fn, gen, step, unlabeled=None):  # noqa: D102
        from napari_pandg.train.features import render

        x = batch["image"]
        regions = batch.get("regions")
        if regions is None and self.cfg.data.source == "phantom":
            # the stream already rendered the random-contrast acquisitions (render_prob)
            return loss_fn(model(x), batch["label"]), {}
        if regions is None:
            raise ConfigError("the synth method needs anatomy regions in the batch (trainer bug)")
        prob = float(self.params.get("prob", 0.8))
        effects = {k: float(self.params.get(k, 0.0)) for k in ("texture", "slice_blur", "rician")}
        x = x.clone()
        for b in range(x.shape[0]):
            if float(torch.rand((), generator=gen)) >= prob:
                continue
            r = render(regions[b : b + 1].cpu(), gen, **effects).to(x)
            mean, std = x[b].mean(), x[b].std()
            x[b] = ((r - r.mean()) / (r.std() + 1e-6) * std + mean)[0]
        logits = model(x)
        return loss_fn(logits, batch["label"]), {}


class MaskGen(Method):
    """MaskGen: channel dropout over concat(image, frozen features) (methods.md §1.2)."""

    name = "maskgen"

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__(cfg)
        self.features, self.spec = load_feature_module(self.params.get("features", "random"), cfg.seed)

    def in_channels(self) -> int:
        return 1 + int(self.spec["out_channels"])

    def setup(self, model: nn.Module, device: torch.device) -> None:
        self.features.to(device).eval()

    def features_of(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.features(x)

    def prepare_input(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        z = torch.cat([x, self.features_of(x)], dim=1)
        p = float(self.params.get("drop_prob", 0.75))
        if p <= 0:
            return z
        # F.dropout3d(z, p, training=True) with a seeded mask: whole channels, survivors x 1/(1-p)
        keep = (torch.rand((z.shape[0], z.shape[1], 1, 1, 1), generator=gen) >= p).to(z)
        return z * keep / (1.0 - p)

    def export_network(self, model: nn.Module) -> nn.Module:
        from napari_pandg.models.networks import FeatureConcatNet

        return FeatureConcatNet(self.features, _unwrap(model))

    def description_updates(self) -> dict[str, Any]:
        return {"feature_extractor": dict(self.spec)}


def load_feature_module(source: str | None, seed: int = 0) -> tuple[nn.Module, dict[str, Any]]:
    """The frozen feature extractor for MaskGen and its description.

    ``source``: a napari-pandg feature checkpoint (``train.features``), ``anatomix.pth``, or
    ``"random"`` (a randomly initialised, frozen anatomix-shaped net; for tests/ablations).
    """
    from napari_pandg.models.checkpoint import load_anatomix
    from napari_pandg.models.networks import build_feature_extractor

    if source in (None, "", "random"):
        spec = {"architecture": "PlainUnet", "kwargs": {"num_downs": 2, "ngf": 4, "norm": "instance"},
                "in_channels": 1, "out_channels": 4, "input_norm": "minmax", "instance_norm": True,
                "source": "random"}  # fmt: skip
        g = torch.random.get_rng_state()
        torch.manual_seed(seed + 1234)
        fx = build_feature_extractor(spec)
        torch.random.set_rng_state(g)
        return fx, spec
    path = Path(str(source)).expanduser()
    if not path.is_file():
        from napari_pandg.models.registry import shipped_model_dir, user_model_dir

        cands = (user_model_dir() / path.name, shipped_model_dir() / "features" / path.name,
                 shipped_model_dir() / path.name)  # fmt: skip
        for cand in cands:
            if cand.is_file():
                path = cand
                break
        else:
            raise ModelError(
                f"MaskGen feature extractor {source} not found (give a path to a features "
                "checkpoint from `pandg train-features`, anatomix.pth, or 'random')"
            )
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and obj.get("format") == "napari-pandg/features":
        spec = dict(obj["description"])
    else:  # anatomix.pth: fixed architecture, [0, 1] inputs
        spec = {"architecture": "PlainUnet", "kwargs": {"num_downs": 4, "ngf": 16, "norm": "batch"},
                "in_channels": 1, "out_channels": 16, "input_norm": "minmax", "instance_norm": True}  # fmt: skip
    fx = load_anatomix(path, spec)
    spec["source"] = str(path)
    return fx, spec


class MeanTeacher(Method):
    """Mean teacher (Tarvainen & Valpola 2017) on unlabelled target-domain patches."""

    name = "meanteacher"
    needs_unlabeled = True

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__(cfg)
        if not (cfg.data.unlabeled_sequences or cfg.data.unlabeled_centers):
            raise ConfigError(
                "meanteacher needs unlabelled target data: set data.unlabeled_sequences "
                "(and/or data.unlabeled_centers), e.g. data.unlabeled_sequences=[op]"
            )
        self.teacher: nn.Module | None = None

    def setup(self, model: nn.Module, device: torch.device) -> None:
        self.teacher = copy.deepcopy(_unwrap(model)).to(device)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.teacher.eval()

    def weight(self, step: int) -> float:
        ramp = int(self.params.get("rampup_epochs", 5)) * self.cfg.optim.steps_per_epoch
        w = float(self.params.get("consistency", 1.0))
        if ramp <= 0:
            return w
        t = min(step, ramp) / ramp
        return w * math.exp(-5.0 * (1.0 - t) ** 2)

    def loss(self, model, batch, loss_fn, gen, step, unlabeled=None):  # noqa: D102
        logits = model(batch["image"])
        sup = loss_fn(logits, batch["label"])
        if unlabeled is None:
            return sup, {"sup": float(sup)}
        noise = float(self.params.get("noise", 0.1))
        xs = unlabeled + noise * torch.randn(unlabeled.shape, generator=gen).to(unlabeled)
        xt = unlabeled + noise * torch.randn(unlabeled.shape, generator=gen).to(unlabeled)
        with torch.no_grad():
            pt = torch.softmax(self.teacher(xt), dim=1)
        ps = torch.softmax(model(xs), dim=1)
        cons = F.mse_loss(ps, pt)
        w = self.weight(step)
        return sup + w * cons, {"sup": float(sup), "consistency": float(cons), "cons_weight": w}

    @torch.no_grad()
    def after_step(self, model: nn.Module, step: int) -> None:
        ema = float(self.params.get("ema", 0.99))
        a = min(ema, 1.0 - 1.0 / (step + 2))  # faster start, as in the original code
        student = _unwrap(model)
        for pt, ps in zip(self.teacher.parameters(), student.parameters(), strict=True):
            pt.mul_(a).add_(ps.detach(), alpha=1 - a)
        for bt, bs in zip(self.teacher.buffers(), student.buffers(), strict=True):
            bt.copy_(bs)

    def export_network(self, model: nn.Module) -> nn.Module:
        return self.teacher

    def state_dict(self) -> dict[str, Any]:
        return {"teacher": {k: v.detach().cpu().clone() for k, v in self.teacher.state_dict().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("teacher") is not None:
            self.teacher.load_state_dict(state["teacher"])


class Finetune(Method):
    name = "finetune"

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__(cfg)
        if not cfg.init_checkpoint:
            raise ConfigError("finetune needs init_checkpoint=PATH (a napari-pandg checkpoint)")


METHODS: dict[str, type[Method]] = {
    "erm": Method,
    "bigaug": BigAug,
    "gin": GIN,
    "synth": Synth,
    "maskgen": MaskGen,
    "meanteacher": MeanTeacher,
    "finetune": Finetune,
}


def make_method(cfg: TrainConfig) -> Method:
    try:
        cls = METHODS[cfg.method.name]
    except KeyError:
        raise ConfigError(
            f"unknown method.name {cfg.method.name!r}; choose from {', '.join(METHODS)}"
        ) from None
    return cls(cfg)
