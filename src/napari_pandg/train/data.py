"""Training data: subject splits, cached preprocessed volumes and seeded patch sampling.

* :func:`make_split` assigns every subject of the manifest to ``train``/``val``/``test``
  deterministically from the seed (a subject's images all go to the same split, so no test
  subject is ever seen in training, in any sequence).
* :func:`load_cases` loads, normalises (:func:`~napari_pandg.models.preprocess.normalize_intensity`)
  and resamples (MONAI ``Orientation``/``Spacing``) each volume to the target spacing, maps AMOS
  ids to class indices and caches the result (memory, and ``cache_dir`` on disk).
* :class:`PatchDataset` draws training patches with MONAI ``RandCropByPosNegLabeld`` plus the
  method's augmentations. Item ``i`` of epoch ``e`` is a pure function of ``(seed, e, i)``,
  so runs are reproducible, resumable and identical whatever the number of workers;
  under DDP a ``DistributedSampler`` gives each rank its share of the indices.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from napari_pandg.models.preprocess import normalize_intensity, to_model_grid
from napari_pandg.train.config import ConfigError, DataConfig

CACHE_VERSION = 1


@dataclass
class Case:
    subject: str
    center: str
    sequence: str
    image: np.ndarray  # (X, Y, Z) float32 on the target grid, padded to >= patch
    label: np.ndarray | None  # (X, Y, Z) uint8 class indices
    affine: np.ndarray
    source: str = ""
    regions: np.ndarray | None = None  # (X, Y, Z) uint8 anatomy regions (see region_map), synth only


def read_manifest(path: str | os.PathLike) -> pd.DataFrame:
    from napari_pandg.io import read_index

    if not path:
        raise ConfigError("data.manifest is not set: give a manifest.csv (pandg synth) or index CSV")
    return read_index(path)


def make_split(df: pd.DataFrame, cfg: DataConfig, seed: int) -> dict[str, str]:
    """subject -> 'train' | 'val' | 'test' (seeded shuffle of the sorted subject list)."""
    subjects = sorted({str(s) for s in df["subject"]})
    rng = np.random.default_rng(seed)
    order = [subjects[i] for i in rng.permutation(len(subjects))]
    n = len(order)
    forced = [s for s in order if s in set(cfg.test_subjects)]
    rest = [s for s in order if s not in set(cfg.test_subjects)]
    n_test = int(round(cfg.test_fraction * n)) - len(forced)
    n_test = max(0, min(n_test, len(rest) - 2))
    n_val = max(1 if cfg.val_fraction > 0 else 0, int(round(cfg.val_fraction * n)))
    n_val = min(n_val, len(rest) - n_test - 1)
    if len(rest) - n_test - n_val < 1:
        raise ConfigError(f"not enough subjects ({n}) for a train/val/test split")
    split = {s: "test" for s in forced}
    for i, s in enumerate(rest):
        split[s] = "test" if i < n_test else ("val" if i < n_test + n_val else "train")
    return split


def read_split(path: str | os.PathLike) -> dict[str, str]:
    """A run's ``split.csv`` as {subject: 'train' | 'val' | 'test'}, with errors naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such split file (a run folder's split.csv)")
    df = pd.read_csv(path, dtype=str).fillna("")
    if not {"subject", "split"} <= set(df.columns):
        raise ConfigError(f"{path}: a split file needs the columns subject,split")
    return dict(zip(df["subject"], df["split"], strict=True))


def select_rows(
    df: pd.DataFrame,
    split: Mapping[str, str],
    which: str,
    centers: Sequence[str] | None,
    sequences: Sequence[str] | None,
    labeled: bool = True,
) -> pd.DataFrame:
    m = df["subject"].astype(str).map(split) == which
    if centers:
        m &= df["center"].isin(list(centers))
    if sequences:
        m &= df["sequence"].isin(list(sequences))
    if labeled:
        m &= df["label"].notna() & (df["label"].astype(str) != "")
    return df[m].sort_values(["subject", "center", "sequence"]).reset_index(drop=True)


def _cache_key(
    row: Mapping[str, Any], cfg: DataConfig, norm: Mapping[str, Any], with_label: bool, with_regions: bool = False
) -> str:
    parts = {"v": CACHE_VERSION, "spacing": list(cfg.spacing), "norm": dict(norm),
             "label_map": {str(k): v for k, v in cfg.label_map.items()}, "with_label": with_label,
             "patch": list(cfg.patch_size)}  # fmt: skip
    if with_regions:  # only then, so existing caches stay valid
        parts["regions"] = REGION_BINS
    for k in ("image", "label"):
        p = row.get(k)
        if p and isinstance(p, str) and os.path.exists(p):
            st = os.stat(p)
            parts[k] = [os.path.abspath(p), st.st_size, int(st.st_mtime)]
    parts["label_map_row"] = str(row.get("label_map") or "")
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _pad_to(arr: np.ndarray, size: Sequence[int], value: float) -> np.ndarray:
    pads = [(0, max(0, int(s) - n)) for n, s in zip(arr.shape, size, strict=True)]
    if not any(p[1] for p in pads):
        return arr
    # centre the volume in the padded box
    pads = [((p[1]) // 2, p[1] - p[1] // 2) for p in pads]
    return np.pad(arr, pads, mode="constant", constant_values=value)


#: Unlabelled voxels (label id 0) are split into this many intensity bins by :func:`region_map`.
REGION_BINS = 4
#: Region ids of the intensity bins of unlabelled voxels (label ids must stay below this).
REGION_BIN_BASE = 250


def region_map(label_ids: np.ndarray, image: np.ndarray, bins: int = REGION_BINS) -> np.ndarray:
    """Anatomy regions for label-map rendering (the ``synth`` method), uint8, same shape.

    Every labelled voxel keeps its label-file id (all structures of the file, not only the
    trained classes). Unlabelled voxels (id 0: air, and on partially labelled data fat, muscle,
    other organs) are split into ``bins`` equal-width intensity bins of the lightly smoothed
    image between its 1st and 99th percentiles, ids ``REGION_BIN_BASE + k``. With a pancreas-only
    label file this still gives the renderer a coarse tissue partition to re-contrast.
    """
    from scipy.ndimage import gaussian_filter

    lab = np.asarray(label_ids)
    if lab.shape != image.shape:
        raise ConfigError(f"region map: label shape {lab.shape} differs from image shape {image.shape}")
    if lab.size and int(lab.max()) >= REGION_BIN_BASE:
        raise ConfigError(
            f"region map: label id {int(lab.max())} >= {REGION_BIN_BASE}; the synth method supports label "
            f"ids 0..{REGION_BIN_BASE - 1}"
        )
    out = lab.astype(np.uint8)
    unl = lab == 0
    if unl.any():
        sm = gaussian_filter(np.asarray(image, dtype=np.float32), 1.0)
        lo, hi = np.percentile(sm, [1.0, 99.0])
        k = np.clip(((sm - lo) / max(float(hi - lo), 1e-6) * bins).astype(np.int64), 0, bins - 1)
        out[unl] = (REGION_BIN_BASE + k[unl]).astype(np.uint8)
    return out


def preprocess_row(
    row: Mapping[str, Any], cfg: DataConfig, norm: Mapping[str, Any], with_label: bool = True,
    with_regions: bool = False,
) -> Case:  # fmt: skip
    from napari_pandg.io import load_volume

    tags = {k: str(row.get(k, "") or "") for k in ("subject", "center", "sequence")}
    vol = load_volume(row["image"], **tags)
    lab = None
    if with_label:
        lab = load_volume(row["label"], is_label=True, label_map=row.get("label_map") or None, **tags)
    return preprocess_volumes(vol, lab, cfg, norm, what=str(row["image"]), label_what=str(row.get("label", "")),
                              with_regions=with_regions)  # fmt: skip


def preprocess_volumes(
    vol: Any, lab: Any | None, cfg: DataConfig, norm: Mapping[str, Any], what: str = "",
    label_what: str = "", with_regions: bool = False,
) -> Case:  # fmt: skip
    """A training :class:`Case` from an image Volume (and its label Volume, AMOS ids): normalised
    as at inference, on the model grid (RAS, ``cfg.spacing``), padded to the patch size."""
    what = what or str(vol.source_path or vol.subject or "image")
    img = normalize_intensity(vol.array, norm, what)
    img_g, aff = to_model_grid(img, vol.affine, tuple(cfg.spacing), "RAS", "bilinear")
    lab_g = None
    if lab is not None:
        lut = np.zeros(max(256, int(lab.array.max()) + 1), dtype=np.uint8)
        for amos, idx in cfg.label_map.items():
            if amos < len(lut):
                lut[int(amos)] = int(idx)
        lab_idx = lut[np.asarray(lab.array, dtype=np.int64)]
        lab_g, _ = to_model_grid(lab_idx.astype(np.uint8), lab.affine, tuple(cfg.spacing), "RAS", "nearest")
        if lab_g.shape != img_g.shape:
            raise ConfigError(
                f"{label_what or 'label'}: label grid {lab_g.shape} differs from image grid {img_g.shape} "
                "after resampling; image and label must share the same geometry"
            )
        lab_g = _pad_to(lab_g.astype(np.uint8), cfg.patch_size, 0)
    reg_g = None
    if with_regions:
        if lab is None:
            raise ConfigError("anatomy regions need the label file (with_label=True)")
        ids = np.asarray(lab.array, dtype=np.int64)
        ids_g, _ = to_model_grid(np.clip(ids, 0, 255).astype(np.uint8), lab.affine, tuple(cfg.spacing), "RAS", "nearest")
        reg_g = _pad_to(region_map(ids_g, img_g), cfg.patch_size, REGION_BIN_BASE)
    img_g = _pad_to(img_g, cfg.patch_size, float(img_g.min()))
    return Case(str(vol.subject), str(vol.center), str(vol.sequence), img_g.astype(np.float32), lab_g, aff,
                what, reg_g)  # fmt: skip


def load_cases(
    rows: pd.DataFrame,
    cfg: DataConfig,
    norm: Mapping[str, Any],
    with_label: bool = True,
    progress: Any = None,
    with_regions: bool = False,
) -> list[Case]:
    """Preprocess each row (cached in ``cfg.cache_dir`` when set)."""
    cases = []
    cache = Path(cfg.cache_dir) if cfg.cache_dir else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    for i, row in enumerate(rows.to_dict("records")):
        case = None
        if cache is not None:
            f = cache / f"{_cache_key(row, cfg, norm, with_label, with_regions)}.npz"
            if f.exists():
                try:
                    z = np.load(f)
                    case = Case(str(row.get("subject", "")), str(row.get("center", "")),
                                str(row.get("sequence", "")), z["image"],
                                z["label"] if with_label else None, z["affine"], str(row["image"]),
                                z["regions"] if with_regions else None)  # fmt: skip
                except (OSError, KeyError, ValueError):
                    case = None
            if case is None:
                case = preprocess_row(row, cfg, norm, with_label, with_regions)
                tmp = f.with_name(f".{f.stem}.{os.getpid()}.tmp.npz")
                arrays = {"image": case.image, "affine": case.affine}
                if case.label is not None:
                    arrays["label"] = case.label
                if case.regions is not None:
                    arrays["regions"] = case.regions
                np.savez(tmp, **arrays)
                os.replace(tmp, f)
        else:
            case = preprocess_row(row, cfg, norm, with_label, with_regions)
        cases.append(case)
        if progress is not None:
            progress(i + 1, len(rows), f"preprocessed {case.subject} {case.sequence}")
    return cases


def seed_for(*parts: int) -> int:
    """A 31-bit seed from integers (stable across processes and Python versions)."""
    h = hashlib.sha1(",".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


class PatchDataset(torch.utils.data.Dataset):
    """``length`` seeded patches per epoch from ``cases`` (balanced over cases)."""

    def __init__(
        self,
        cases: Sequence[Case],
        patch_size: Sequence[int],
        length: int,
        seed: int,
        augment: Sequence[Any] = (),
        pos: float = 2.0,
        neg: float = 1.0,
        labeled: bool = True,
        stream: int = 0,
    ) -> None:
        from monai.transforms import Compose, RandCropByPosNegLabeld, RandSpatialCropd

        if not cases:
            raise ConfigError("no training volumes: check the manifest and the center/sequence filters")
        self.cases = list(cases)
        self.length = int(length)
        self.seed = int(seed)
        self.stream = int(stream)
        self.epoch = 0
        self.regions = labeled and all(c.regions is not None for c in self.cases)
        keys = ["image", "label"] if labeled else ["image"]
        if self.regions:
            keys.append("regions")
        if labeled:
            crop = RandCropByPosNegLabeld(
                keys=keys, label_key="label", spatial_size=tuple(patch_size), pos=pos, neg=neg,
                num_samples=1, image_key=None, allow_smaller=False,
            )  # fmt: skip
        else:
            crop = RandSpatialCropd(keys=keys, roi_size=tuple(patch_size), random_size=False)
        self.labeled = labeled
        self.transform = Compose([crop, *augment])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng(seed_for(self.seed, self.stream, self.epoch))
        order = rng.permutation(len(self.cases))
        case = self.cases[int(order[index % len(self.cases)])]
        return sample_patch(case, self.transform, seed_for(self.seed, self.stream, self.epoch, index),
                            self.labeled, self.regions)  # fmt: skip


def sample_patch(case: Case, transform: Any, seed: int, labeled: bool = True, regions: bool = False) -> dict[str, torch.Tensor]:
    """One patch of ``case`` through ``transform`` (crop + augmentation), seeded."""
    d: dict[str, Any] = {"image": torch.from_numpy(case.image)[None]}
    if labeled:
        d["label"] = torch.from_numpy(case.label)[None]
    if regions:
        d["regions"] = torch.from_numpy(case.regions)[None]
    transform.set_random_state(seed=seed)
    out = transform(d)
    if isinstance(out, list):
        out = out[0]
    res = {"image": _plain(out["image"]).float().contiguous()}
    if labeled:
        res["label"] = _plain(out["label"]).long().contiguous()
    if regions:
        res["regions"] = _plain(out["regions"]).long().contiguous()
    return res


def _plain(x: Any) -> torch.Tensor:
    """A plain tensor (MONAI transforms return MetaTensors, which collate slowly)."""
    return x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)
