"""An anatomix-style frozen feature extractor for MaskGen, trained here on phantom label maps.

anatomix (Dey et al., ICLR'25) learns contrast-invariant voxel features from synthetic
images rendered from label maps. This module does a small version of that:

* **rendering** (SynthSeg-style, :func:`render`): every label of a label-map patch gets a random
  mean intensity and within-label noise, then a random Gaussian blur, a smooth multiplicative
  bias field, a random gamma and additive noise; the result is min-max scaled to [0, 1];
* **views**: two independent renderings of the same patch (same geometry, different contrast);
* **loss** (:func:`voxel_contrastive_loss`): voxel-wise InfoNCE between the two views'
  L2-normalised features at sampled voxels; the positive of a voxel is the same voxel in the
  other view, negatives are sampled voxels with *another* label (same-label voxels are
  ignored rather than pushed apart);
* **network**: :class:`~napari_pandg.models.networks.PlainUnet` (the anatomix layout, smaller by
  default: ``ngf=8``, 3 levels, 16 output channels, instance norm).

The result is a ``napari-pandg/features`` checkpoint that ``method.params.features`` of
``maskgen.yaml`` accepts (as it accepts ``anatomix.pth``)::

    {"format": "napari-pandg/features", "format_version": 1,
     "description": {architecture, kwargs, in_channels, out_channels, input_norm, instance_norm, ...},
     "state_dict": {...}}
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from napari_pandg.models.checkpoint import _versions, atomic_torch_save
from napari_pandg.models.networks import build_network
from napari_pandg.models.preprocess import to_model_grid
from napari_pandg.train.config import ConfigError
from napari_pandg.train.data import seed_for

FEATURES_FORMAT = "napari-pandg/features"


def _gaussian_blur(img: torch.Tensor, sigmas: Sequence[float]) -> torch.Tensor:
    """Separable Gaussian blur of (1, 1, X, Y, Z) with one sigma (voxels) per axis; replicate pad.

    Hand-written (not ``monai.transforms.GaussianSmooth``) because the three sigmas are drawn per
    sample inside the loss on tensors already on the training device, and this stays a few lines.
    """
    for d, sigma in enumerate(sigmas):
        if sigma <= 0.2:
            continue
        r = int(np.ceil(2 * sigma))
        x = torch.arange(-r, r + 1, dtype=torch.float32)
        k = torch.exp(-(x**2) / (2 * sigma**2))
        k = k / k.sum()
        shape = [1, 1, 1, 1, 1]
        shape[2 + d] = len(k)
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - d)] = pad[2 * (2 - d) + 1] = r
        img = F.conv3d(F.pad(img, pad, mode="replicate"), k.view(shape))
    return img


def render(
    labels: torch.Tensor, gen: torch.Generator, n_ids: int = 256, texture: float = 0.0,
    slice_blur: float = 0.0, rician: float = 0.0,
) -> torch.Tensor:  # fmt: skip
    """One random-contrast image (B, 1, X, Y, Z) in [0, 1] from integer labels (B, 1, X, Y, Z).

    Always: a random mean and within-label noise per label, an isotropic Gaussian blur
    (sigma < 1 voxel), a smooth multiplicative bias field, a random gamma and additive noise.
    Optional acquisition effects (all off by default, which keeps the feature extractor's
    rendering unchanged):

    * ``texture`` (max amplitude, e.g. 0.15): each label gets a smooth multiplicative texture
      ``1 + a * n`` (``a`` uniform in [0, texture] per label, ``n`` unit smooth noise with a
      correlation length of ~3 voxels), like parenchymal texture and lobulation;
    * ``slice_blur`` (max sigma in voxels along the last axis, e.g. 1.0): extra through-plane
      blur, as thick slices (T2 and Dixon are often acquired at 6-8 mm) seen on a finer grid;
    * ``rician`` (probability): additive noise becomes the magnitude of complex noise, which
      lifts dark regions and air to a Rician floor as in magnitude images.
    """
    b = labels.shape[0]
    out = torch.empty(labels.shape, dtype=torch.float32)
    for i in range(b):
        lab = labels[i, 0].long()
        mu = torch.rand(n_ids, generator=gen)
        sd = torch.rand(n_ids, generator=gen) * 0.08
        img = mu[lab] + sd[lab] * torch.randn(lab.shape, generator=gen)
        img = img[None, None]
        if texture > 0:
            amp = torch.rand(n_ids, generator=gen) * texture
            coarse = [max(2, s // 3) for s in lab.shape]
            field = F.interpolate(torch.randn([1, 1, *coarse], generator=gen), size=lab.shape,
                                  mode="trilinear", align_corners=False)  # fmt: skip
            field = field / (field.std() + 1e-6)
            img = img * (1.0 + amp[lab][None, None] * field).clamp_min(0.0)
        sigma = float(torch.rand((), generator=gen)) * 1.0
        sigmas = [sigma, sigma, sigma]
        if slice_blur > 0:
            sigmas[2] = float(np.hypot(sigma, float(torch.rand((), generator=gen)) * slice_blur))
        img = _gaussian_blur(img, sigmas)
        # smooth multiplicative bias field from a 4^3 grid
        coarse = torch.randn((1, 1, 4, 4, 4), generator=gen) * float(torch.rand((), generator=gen)) * 0.3
        bias = torch.exp(F.interpolate(coarse, size=img.shape[2:], mode="trilinear", align_corners=False))
        img = img * bias
        img = (img - img.min()) / (img.max() - img.min() + 1e-6)
        gamma = float(torch.exp(torch.randn((), generator=gen) * 0.25))
        img = img.clamp_min(0) ** gamma
        if rician > 0 and float(torch.rand((), generator=gen)) < rician:
            n1, n2 = torch.randn((2, *img.shape), generator=gen) * float(torch.rand((), generator=gen)) * 0.05
            img = torch.sqrt((img + n1) ** 2 + n2**2)
        else:  # (draw order kept from the first version: the shipped extractor's rendering)
            img = img + torch.randn(img.shape, generator=gen) * float(torch.rand((), generator=gen)) * 0.05
        img = (img - img.min()) / (img.max() - img.min() + 1e-6)
        out[i] = img[0]
    return out


def voxel_contrastive_loss(
    f1: torch.Tensor, f2: torch.Tensor, labels: torch.Tensor, gen: torch.Generator,
    n_samples: int = 256, temperature: float = 0.1,
) -> torch.Tensor:  # fmt: skip
    """InfoNCE between two views' voxel features (B, C, ...); same-label pairs are not negatives."""
    losses = []
    for i in range(f1.shape[0]):
        lab = labels[i, 0].reshape(-1)
        a = F.normalize(f1[i].reshape(f1.shape[1], -1), dim=0)
        b = F.normalize(f2[i].reshape(f2.shape[1], -1), dim=0)
        # sample voxels roughly uniformly over the labels present (small organs included)
        ids = torch.unique(lab)
        per = max(1, n_samples // len(ids))
        picks = []
        for v in ids:
            where = torch.nonzero(lab == v).view(-1)
            sel = torch.randint(len(where), (per,), generator=gen)
            picks.append(where[sel])
        idx = torch.cat(picks)
        za, zb, lz = a[:, idx].T, b[:, idx].T, lab[idx]
        logits = za @ zb.T / temperature  # (n, n): row i's positive is column i
        same = lz[:, None] == lz[None, :]
        eye = torch.eye(len(idx), dtype=torch.bool)
        logits = logits.masked_fill(same & ~eye, float("-inf"))
        target = torch.arange(len(idx))
        losses.append(0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)))
    return torch.stack(losses).mean()


def _label_volumes(manifest: str | os.PathLike, spacing: Sequence[float], centers, sequences,
                   subjects: set[str] | None) -> list[np.ndarray]:  # fmt: skip
    from napari_pandg.io import load_volume, read_index

    df = read_index(manifest)
    df = df[df["label"].notna()]
    if centers:
        df = df[df["center"].isin(list(centers))]
    if sequences:
        df = df[df["sequence"].isin(list(sequences))]
    if subjects is not None:
        df = df[df["subject"].isin(subjects)]
    # one label map per subject is enough (the anatomy is shared by its sequences)
    df = df.drop_duplicates("subject")
    if df.empty:
        raise ConfigError(f"{manifest}: no label maps for centers={centers} sequences={sequences}")
    out = []
    for r in df.to_dict("records"):
        lab = load_volume(r["label"], is_label=True, label_map=r.get("label_map") or None)
        g, _ = to_model_grid(np.asarray(lab.array, dtype=np.uint8), lab.affine, tuple(spacing), "RAS", "nearest")
        out.append(g.astype(np.int64))
    return out


def train_features(
    manifest: str | os.PathLike,
    out: str | os.PathLike,
    steps: int = 2000,
    batch_size: int = 2,
    patch_size: Sequence[int] = (64, 64, 32),
    spacing: Sequence[float] = (2.0, 2.0, 4.0),
    centers: Sequence[str] | None = None,
    sequences: Sequence[str] | None = None,
    subjects: Sequence[str] | None = None,
    ngf: int = 8,
    num_downs: int = 3,
    out_channels: int = 16,
    lr: float = 1e-3,
    seed: int = 0,
    overwrite: bool = False,
    log_every: int = 50,
    log: Any = print,
) -> Path:
    """Contrastive pre-training on label maps of ``manifest``; writes a features checkpoint.

    ``subjects``: restrict to these subjects (e.g. the training split, so that test anatomy is
    never seen). Returns ``out``.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True to replace it")
    labels = _label_volumes(manifest, spacing, centers, sequences, set(subjects) if subjects else None)
    patch = tuple(int(p) for p in patch_size)
    div = 2**num_downs
    if any(p % div or p < 2 * div for p in patch):
        raise ConfigError(f"patch_size {patch} must be multiples of {div} and at least {2 * div} (num_downs={num_downs})")
    labels = [np.pad(v, [(0, max(0, p - s)) for s, p in zip(v.shape, patch, strict=True)]) for v in labels]
    torch.manual_seed(seed)
    kwargs = {"num_downs": num_downs, "ngf": ngf, "norm": "instance"}
    net = build_network("PlainUnet", kwargs, 1, out_channels)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    history = []
    t0 = time.perf_counter()
    for step in range(steps):
        gen = torch.Generator().manual_seed(seed_for(seed, 11, step))
        rng = np.random.default_rng(seed_for(seed, 12, step))
        crops = []
        for _ in range(batch_size):
            v = labels[int(rng.integers(len(labels)))]
            lo = [int(rng.integers(0, s - p + 1)) for s, p in zip(v.shape, patch, strict=True)]
            crops.append(v[lo[0] : lo[0] + patch[0], lo[1] : lo[1] + patch[1], lo[2] : lo[2] + patch[2]])
        lab = torch.from_numpy(np.stack(crops))[:, None]
        v1, v2 = render(lab, gen), render(lab, gen)
        loss = voxel_contrastive_loss(net(v1), net(v2), lab, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        history.append(loss.item())
        if log and log_every and ((step + 1) % log_every == 0 or step + 1 == steps):
            el = time.perf_counter() - t0
            log(f"features step {step + 1}/{steps} loss {np.mean(history[-log_every:]):.4f} "
                f"({el / (step + 1):.2f} s/step, ETA {el / (step + 1) * (steps - step - 1):.0f} s)")  # fmt: skip
    desc = {
        "architecture": "PlainUnet", "kwargs": kwargs, "in_channels": 1, "out_channels": out_channels,
        "input_norm": "minmax", "instance_norm": True,
        "trained": {"manifest": str(manifest), "steps": steps, "patch_size": list(patch),
                    "spacing": list(spacing), "seed": seed, "final_loss": float(np.mean(history[-10:])),
                    "centers": list(centers or []), "sequences": list(sequences or []),
                    "n_label_maps": len(labels)},
        "versions": _versions(),
    }  # fmt: skip
    net.eval()
    atomic_torch_save({"format": FEATURES_FORMAT, "format_version": 1, "description": json.loads(json.dumps(desc)),
                       "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()}}, out)  # fmt: skip
    return out


def run_train_features_cli(
    manifest: str | os.PathLike,
    out: str | os.PathLike,
    steps: int = 2000,
    centers: Sequence[str] | None = None,
    seed: int = 0,
    overwrite: bool = False,
    subjects: Sequence[str] | None = None,
    patch_size: Sequence[int] = (64, 64, 32),
) -> Path:
    """``pandg train-features``: contrastive pre-training of the MaskGen feature extractor."""
    path = train_features(
        manifest, out, steps=steps, centers=centers, subjects=subjects, seed=seed,
        overwrite=overwrite, patch_size=patch_size,
    )
    print(f"wrote {path}")
    return path
