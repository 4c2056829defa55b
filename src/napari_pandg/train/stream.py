"""Training on freshly generated phantom subjects, streamed while the network trains.

``data.source: phantom`` replaces the manifest's fixed handful of volumes by an endless,
seeded stream of new people: subject ``k`` of the stream is a pure function of
``(seed, k)``. Each subject is built with anatomy randomisation
(:func:`napari_pandg.phantom.variation.sample_variation`, strength ``data.stream.variation``)
and gives

* its **source-domain image**: the physics simulation of a training center and sequence
  (``data.train_centers`` x ``data.train_sequences``, default center A ``t1fs_venous``), the
  domain an ERM model is trained on;
* for methods that ask for it (``synth``: ``Method.render_prob``), ``renders_per_subject``
  **random-contrast acquisitions** (:mod:`napari_pandg.phantom.appearance`): random contrast
  over every structure, fat/water phase, resolution, slice thickness, field of view, motion,
  ghosts, Gibbs ringing, coil shading, noise and intensity non-linearity.

Both go through exactly the preprocessing of inference (intensity normalisation, RAS,
``data.spacing``) and give ``patches_per_subject`` patches. ``pool`` subjects are in flight at
once and are replaced in a staggered order, so every batch mixes subjects and a new subject
arrives every ``patches_per_subject`` patches. Item ``g`` (a global index over all epochs) is
a pure function of ``(seed, g)``: runs are reproducible and resumable, and a DataLoader worker
(``data.num_workers: 1``) generates ahead while the network trains. Validation uses
``val_subjects`` further subjects of their own seed stream (source-domain images), never
trained on.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch

from napari_pandg.train.config import ConfigError, DataConfig
from napari_pandg.train.data import Case, preprocess_volumes, sample_patch, seed_for

#: data.stream keys and their defaults
STREAM_DEFAULTS: dict[str, Any] = {
    "variation": 1.0,
    "fine_spacing": 2.0,
    "patches_per_subject": 16,
    "pool": 8,
    "renders_per_subject": 4,
    "val_subjects": 4,
    "slab_crop_prob": 0.25,
    "appearance": {},
}


def stream_settings(data: DataConfig) -> dict[str, Any]:
    """``data.stream`` merged with the defaults; unknown keys and bad values are errors."""
    raw = dict(data.stream or {})
    unknown = sorted(set(raw) - set(STREAM_DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown data.stream key(s) {unknown}; valid: {', '.join(STREAM_DEFAULTS)}")
    out = {**STREAM_DEFAULTS, **raw}
    for k in ("patches_per_subject", "pool", "val_subjects"):
        if not isinstance(out[k], int) or out[k] < 1:
            raise ConfigError(f"data.stream.{k} must be an integer >= 1, got {out[k]!r}")
    if not isinstance(out["renders_per_subject"], int) or out["renders_per_subject"] < 0:
        raise ConfigError(f"data.stream.renders_per_subject must be an integer >= 0, got {out['renders_per_subject']!r}")
    if not 0.0 <= float(out["variation"]) <= 1.5:
        raise ConfigError(f"data.stream.variation must be within 0-1.5, got {out['variation']!r}")
    if not 1.0 <= float(out["fine_spacing"]) <= 4.0:
        raise ConfigError(f"data.stream.fine_spacing must be within 1-4 mm, got {out['fine_spacing']!r}")
    from napari_pandg.phantom.appearance import AppearanceOptions

    known = {f.name for f in fields(AppearanceOptions)}
    bad = sorted(set(out["appearance"]) - known)
    if bad:
        raise ConfigError(f"unknown data.stream.appearance key(s) {bad}; valid: {', '.join(sorted(known))}")
    return out


@dataclass
class StreamSubject:
    k: int
    source: Case
    renders: list[Case] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


class PhantomStream:
    """Builds stream subjects (numpy only; safe in a DataLoader worker)."""

    def __init__(self, data: DataConfig, seed: int, norm: Mapping[str, Any], renders: bool) -> None:
        from napari_pandg.phantom import CENTERS, SEQUENCES

        self.data = data
        self.seed = int(seed)
        self.norm = dict(norm)
        self.settings = stream_settings(data)
        self.renders = int(self.settings["renders_per_subject"]) if renders else 0
        bad = [c for c in data.train_centers if c not in CENTERS] + [s for s in data.train_sequences if s not in SEQUENCES]
        if bad:
            raise ConfigError(f"data.source=phantom: unknown phantom center/sequence {bad} in data.train_centers/"
                              f"train_sequences (centers {', '.join(CENTERS)}; sequences {', '.join(SEQUENCES)})")  # fmt: skip
        if 0 not in (set(data.label_map) | {0}) or 10 not in data.label_map:
            raise ConfigError("data.source=phantom trains the pancreas: data.label_map must contain 10 (AMOS pancreas)")

    def subject_seed(self, k: int) -> int:
        """Seed of stream subject ``k`` (``k < 0``: validation subjects, their own stream)."""
        return seed_for(self.seed, 31, k) if k >= 0 else seed_for(self.seed, 97, -k)

    def volumes(self, k: int, renders: int | None = None) -> tuple[Any, Any, list[tuple[Any, Any]], dict[str, Any]]:
        """Stream subject ``k`` as Volumes: (source image, its labels, [(render, labels)], info)."""
        from napari_pandg.phantom import generate_subject
        from napari_pandg.phantom.anatomy import build_anatomy
        from napari_pandg.phantom.appearance import AppearanceOptions, random_acquisition, random_contrast
        from napari_pandg.phantom.variation import sample_variation
        from napari_pandg.volume import Volume

        st = self.settings
        n_renders = self.renders if renders is None else int(renders)
        s_seed = self.subject_seed(k)
        rng = np.random.default_rng(s_seed)
        var = sample_variation(np.random.default_rng(seed_for(s_seed, 1)), float(st["variation"])) if st["variation"] > 0 else None
        anat = build_anatomy(np.random.default_rng(seed_for(s_seed, 2)), float(st["fine_spacing"]), var)
        centers, seqs = self.data.train_centers, self.data.train_sequences
        center = centers[int(rng.integers(len(centers)))]
        seq = seqs[int(rng.integers(len(seqs)))]
        sid = f"stream{k:06d}" if k >= 0 else f"streamval{-k:03d}"
        subj = generate_subject(sid, center, (seq,), seed=s_seed, anatomy=anat)
        img, lab = subj.images[seq], subj.labels[seq]
        if k >= 0 and rng.random() < float(st["slab_crop_prob"]):
            img, lab = _crop_slab(img, lab, rng)
        opts = AppearanceOptions(**dict(st["appearance"]))
        rendered = []
        for r in range(n_renders):
            rr = np.random.default_rng(seed_for(s_seed, 3, r))
            arr, labels, aff = random_acquisition(anat, random_contrast(anat, rr, opts), rr, opts)
            rendered.append((Volume(arr, aff, subject=sid, center="synth", sequence=f"render{r}"),
                             Volume(labels, aff, subject=sid, center="synth", sequence=f"render{r}", is_label=True)))  # fmt: skip
        info = {"subject": sid, "center": center, "sequence": seq, "pancreas_ml": anat.pancreas_ml}
        return img, lab, rendered, info

    def build(self, k: int) -> StreamSubject:
        img, lab, rendered, info = self.volumes(k)
        sid = info["subject"]
        source = preprocess_volumes(img, lab, self.data, self.norm, what=f"{sid} {info['center']}/{info['sequence']}")
        out = StreamSubject(k, source, info=info)
        for r, (vol, lvol) in enumerate(rendered):
            out.renders.append(preprocess_volumes(vol, lvol, self.data, self.norm, what=f"{sid} render {r}"))
        return out

    def validation_cases(self) -> list[Case]:
        return [self.build(-(i + 1)).source for i in range(int(self.settings["val_subjects"]))]


def _crop_slab(img: Any, lab: Any, rng: np.random.Generator) -> tuple[Any, Any]:
    """A shorter slab at a random level (60-100 % of the slices): variable slice coverage."""
    from dataclasses import replace

    nz = img.array.shape[2]
    n = max(4, int(round(nz * float(rng.uniform(0.6, 1.0)))))
    z0 = int(rng.integers(0, nz - n + 1))
    shift = np.eye(4)
    shift[2, 3] = z0
    aff = img.affine @ shift
    return (replace(img, array=img.array[:, :, z0 : z0 + n].copy(), affine=aff),
            replace(lab, array=lab.array[:, :, z0 : z0 + n].copy(), affine=aff))  # fmt: skip


class StreamPatchDataset(torch.utils.data.Dataset):
    """Patches of stream subjects; index ``g`` is global over all epochs (see :class:`EpochSlice`)."""

    def __init__(
        self, stream: PhantomStream, total: int, seed: int, augment: Sequence[Any], render_prob: float,
        pos: float = 2.0, neg: float = 1.0,
    ) -> None:  # fmt: skip
        from monai.transforms import Compose, RandCropByPosNegLabeld

        self.stream = stream
        self.total = int(total)
        self.seed = int(seed)
        self.render_prob = float(render_prob)
        st = stream.settings
        self.M = int(st["patches_per_subject"])
        self.P = int(st["pool"])
        crop = RandCropByPosNegLabeld(keys=["image", "label"], label_key="label",
                                      spatial_size=tuple(stream.data.patch_size), pos=pos, neg=neg,
                                      num_samples=1, image_key=None, allow_smaller=False)  # fmt: skip
        self.transform = Compose([crop, *augment])
        self._cache: collections.OrderedDict[int, StreamSubject] = collections.OrderedDict()
        self.built = 0

    def __len__(self) -> int:
        return self.total

    def locate(self, g: int) -> tuple[int, int]:
        """(subject k, patch number j) of global item ``g``: ``pool`` slots, staggered refresh."""
        s = g % self.P
        uses = g // self.P + (s * self.M) // self.P
        return (uses // self.M) * self.P + s, uses % self.M

    def subject(self, k: int) -> StreamSubject:
        if k in self._cache:
            self._cache.move_to_end(k)
            return self._cache[k]
        subj = self.stream.build(k)
        self.built += 1
        self._cache[k] = subj
        while len(self._cache) > 2 * self.P:
            self._cache.popitem(last=False)
        return subj

    def __getitem__(self, g: int) -> dict[str, torch.Tensor]:
        k, j = self.locate(int(g))
        subj = self.subject(k)
        rng = np.random.default_rng(seed_for(self.seed, 41, int(g)))
        case = subj.source
        if subj.renders and rng.random() < self.render_prob:
            case = subj.renders[j % len(subj.renders)]
        return sample_patch(case, self.transform, seed_for(self.seed, 43, int(g)))


class EpochSlice(torch.utils.data.Sampler[int]):
    """Global indices of one epoch (``set_epoch``), split between DDP ranks."""

    def __init__(self, per_epoch: int, rank: int = 0, world: int = 1) -> None:
        self.per_epoch, self.rank, self.world, self.epoch = int(per_epoch), int(rank), int(world), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        start = self.epoch * self.per_epoch
        return iter(range(start + self.rank, start + self.per_epoch, self.world))

    def __len__(self) -> int:
        return len(range(self.rank, self.per_epoch, self.world))


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def stream_loader(
    stream: PhantomStream, epochs: int, per_epoch: int, batch: int, seed: int, augment: Sequence[Any],
    render_prob: float, workers: int, pos: float, neg: float, rank: int = 0, world: int = 1,
) -> tuple[torch.utils.data.DataLoader, EpochSlice, StreamPatchDataset]:  # fmt: skip
    """The training DataLoader over the stream (persistent worker so the pool survives epochs)."""
    ds = StreamPatchDataset(stream, epochs * per_epoch, seed, augment, render_prob, pos, neg)
    sampler = EpochSlice(per_epoch, rank, world)
    kw: dict[str, Any] = {}
    if workers > 0:
        kw = {"persistent_workers": True, "prefetch_factor": 8, "worker_init_fn": _worker_init}
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=workers,
                                         drop_last=True, **kw)  # fmt: skip
    return loader, sampler, ds
