"""Self-describing segmentation checkpoints.

A napari-pandg checkpoint is a ``torch.save`` dict readable with ``weights_only=True``::

    {
        "format": "napari-pandg/model",
        "format_version": 1,
        "description": {...},      # ModelDescription.to_dict(): JSON-able, see below
        "state_dict": {...},       # the full network (FeatureConcatNet when features are used)
        # optional, written by the trainer into last.pt only:
        "train_state": {...},
    }

The description carries everything inference needs (architecture + kwargs, channels,
target spacing, orientation, intensity normalisation, patch size, output index -> AMOS id
label map, optional frozen feature extractor) and the provenance (method, training domains,
validation metrics, command line, torch/monai versions).

:func:`load_checkpoint` also reads MaskGen/DropGen ``best.pth``/``latest.pth`` files (a dict
with ``args`` and ``model_state_dict``), rebuilding the ``PlainUnet`` and the frozen
anatomix feature extractor from ``anatomix.pth`` when the model needs it.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from napari_pandg.labels import IDS, PANCREAS
# ModelDescription and its helpers live in models.description (no torch); re-exported here
from napari_pandg.models.description import (
    DEFAULT_NORMALIZATION,  # noqa: F401
    FORMAT,
    FORMAT_VERSION,  # noqa: F401
    ModelDescription,
    _jsonable,
    _versions,  # noqa: F401
    description_from,
    validate_label_map,  # noqa: F401
)
from napari_pandg.models.errors import (
    ArchitectureMismatchError,
    CheckpointFormatError,
    LabelMapError,
    ModelError,
    ModelNotFoundError,
)
from napari_pandg.models.networks import (
    FeatureConcatNet,
    build_feature_extractor,
    build_network,
)
def check_label_map(
    desc: ModelDescription, expected: Mapping[int, int] | None, path: str | os.PathLike = ""
) -> None:
    """Raise :class:`LabelMapError` when ``desc.label_map`` differs from ``expected``."""
    if expected is None:
        return
    exp = {int(k): int(v) for k, v in expected.items()}
    if exp != desc.label_map:
        where = f"{path}: " if path else ""
        raise LabelMapError(
            f"{where}model {desc.name!r} has label map {desc.label_map} (output index -> AMOS "
            f"id) but {exp} was expected; retrain or fine-tune with a matching label map"
        )


@dataclass
class SegModel:
    """A loaded model: its description and the network (eval mode) on ``device``."""

    description: ModelDescription
    network: nn.Module
    path: Path | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def name(self) -> str:
        return self.description.name

    def to(self, device: str | torch.device) -> SegModel:
        if str(device) == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.network.to(self.device)
        return self


# --------------------------------------------------------------------------- building
def build_model(desc: ModelDescription) -> nn.Module:
    """The network a description specifies (random weights)."""
    seg = build_network(desc.architecture, desc.arch_kwargs, desc.in_channels, desc.out_channels)
    if desc.feature_extractor:
        return FeatureConcatNet(build_feature_extractor(desc.feature_extractor), seg)
    return seg


def load_state_dict_checked(
    net: nn.Module, state: Mapping[str, torch.Tensor], path: str | os.PathLike, what: str
) -> None:
    """``load_state_dict(strict=True)`` with a message naming file, missing/unexpected keys."""
    state = {k.replace("_orig_mod.", "").removeprefix("module."): v for k, v in state.items()}
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape_bad = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if not (missing or unexpected or shape_bad):
        check_finite_weights(state, path)
    if missing or unexpected or shape_bad:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
        if shape_bad:
            parts.append(f"{len(shape_bad)} shape mismatches (e.g. {shape_bad[:2]})")
        raise ArchitectureMismatchError(
            f"{path}: the weights do not fit the expected architecture {what}: " + "; ".join(parts)
        )
    net.load_state_dict(state, strict=True)


def check_finite_weights(state: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Refuse NaN/Inf in any floating-point tensor of a state dict (names the first one)."""
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and (value.is_floating_point() or value.is_complex()):
            finite = torch.isfinite(value)
            if not bool(finite.all()):
                n_bad = int(finite.numel() - int(finite.sum()))
                raise CheckpointFormatError(
                    f"{path}: the weights are not finite: tensor {key!r} {tuple(value.shape)} holds "
                    f"{n_bad} NaN/Inf value(s); the training diverged or the file is corrupt: use "
                    "another checkpoint (e.g. best.pt of the run, or retrain with a lower learning rate)"
                )


# --------------------------------------------------------------------------- save
def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def checkpoint_dict(
    desc: ModelDescription, network: nn.Module, train_state: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    net = network.module if hasattr(network, "module") else network  # DDP
    out: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "description": desc.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
    }
    if train_state is not None:
        out["train_state"] = dict(train_state)
    return out


def save_checkpoint(
    path: str | os.PathLike,
    desc: ModelDescription,
    network: nn.Module,
    train_state: Mapping[str, Any] | None = None,
    overwrite: bool = True,
) -> Path:
    """Write a self-describing checkpoint atomically (temp file + ``os.replace``)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    if not desc.created:
        import datetime as _dt

        desc.created = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    return atomic_torch_save(checkpoint_dict(desc, network, train_state), path)


# --------------------------------------------------------------------------- load
def read_checkpoint_file(path: str | os.PathLike, weights_only: bool = True) -> Any:
    """``torch.load`` with clear errors for missing, empty, truncated or foreign files."""
    path = Path(path)
    if not path.exists():
        raise ModelNotFoundError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise ModelError(f"{path} is a folder; expected a checkpoint file (.pt/.pth)")
    if path.stat().st_size == 0:
        raise CheckpointFormatError(f"{path} is empty (0 bytes); the checkpoint is corrupt")
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError as exc:
        if weights_only:
            raise CheckpointFormatError(
                f"{path} contains objects other than tensors and plain values and was not "
                f"loaded for safety ({str(exc).splitlines()[0]})"
            ) from exc
        raise CheckpointFormatError(f"{path} is not a readable checkpoint: {exc}") from exc
    # foreign bytes can fail anywhere inside the unpickler (IndexError, KeyError, struct.error…)
    except Exception as exc:  # noqa: BLE001
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointFormatError(
            f"{path} is not a readable PyTorch checkpoint (corrupt or truncated?): {first}"
        ) from exc


def load_checkpoint(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    expected_label_map: Mapping[int, int] | None = None,
    features_path: str | os.PathLike | None = None,
) -> SegModel:
    """Load a napari-pandg checkpoint, or a MaskGen/DropGen ``best.pth``, into a :class:`SegModel`.

    ``features_path``: ``anatomix.pth`` for MaskGen checkpoints (default: searched next to
    the checkpoint, in its parent folders' ``pretrained/`` and in the user model folder).
    """
    path = Path(path)
    obj = read_checkpoint_file(path)
    if not isinstance(obj, Mapping):
        raise CheckpointFormatError(
            f"{path}: expected a checkpoint dict, found {type(obj).__name__}"
        )
    if obj.get("format") == FORMAT:
        model = _load_pandg(path, obj)
    elif "args" in obj and "model_state_dict" in obj:
        model = _load_maskgen(path, obj, features_path)
    elif obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointFormatError(
            f"{path} is a bare state dict without a model description (for example "
            "anatomix.pth, a feature extractor); it cannot segment on its own. Use a "
            "napari-pandg checkpoint (pandg train) or a MaskGen best.pth"
        )
    else:
        raise CheckpointFormatError(
            f"{path}: unknown checkpoint layout (keys {sorted(map(str, obj))[:8]}); expected a "
            f"napari-pandg checkpoint (format {FORMAT!r}) or a MaskGen best.pth (args + "
            "model_state_dict)"
        )
    check_label_map(model.description, expected_label_map, path)
    return model.to(device)


def read_description(path: str | os.PathLike) -> ModelDescription:
    """Only the description of a napari-pandg checkpoint (or MaskGen ``args``)."""
    path = Path(path)
    obj = read_checkpoint_file(path)
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        return _description_from(path, obj)
    if isinstance(obj, Mapping) and "args" in obj and "model_state_dict" in obj:
        return maskgen_description(obj["args"], path)
    raise CheckpointFormatError(f"{path}: not a napari-pandg or MaskGen checkpoint")


def _description_from(path: Path, obj: Mapping[str, Any]) -> ModelDescription:
    return description_from(path, obj, CheckpointFormatError)


def _load_pandg(path: Path, obj: Mapping[str, Any]) -> SegModel:
    desc = _description_from(path, obj)
    if "state_dict" not in obj:
        raise CheckpointFormatError(f"{path}: no 'state_dict' in the checkpoint")
    net = build_model(desc)
    fx = " + frozen features" if desc.feature_extractor else ""
    load_state_dict_checked(
        net,
        obj["state_dict"],
        path,
        f"{desc.architecture}({desc.arch_kwargs}){fx}, in={desc.in_channels}, out={desc.out_channels}",
    )
    net.eval()
    return SegModel(desc, net, path)


# --------------------------------------------------------------------------- MaskGen
def maskgen_label_map(args: Mapping[str, Any]) -> dict[int, int]:
    """MaskGen ``class_mapping`` (name -> index) -> output index -> AMOS id."""
    dataset = str(args.get("dataset", ""))
    out_ch = int(args.get("out_channels", 2))
    if dataset == "pancreas" or (out_ch == 2 and not args.get("class_mapping")):
        return {0: 0, 1: PANCREAS}
    if dataset == "amos" and out_ch == 16:
        return {i: i for i in range(16)}
    mapping = args.get("class_mapping")
    if isinstance(mapping, str):
        try:
            mapping = json.loads(mapping)
        except json.JSONDecodeError:
            mapping = None
    if isinstance(mapping, Mapping):
        out = {0: 0}
        for name, idx in mapping.items():
            key = str(name).lower().replace(" ", "_")
            if int(idx) == 0:
                continue
            if key not in IDS:
                raise LabelMapError(
                    f"MaskGen class {name!r} (dataset {dataset!r}) has no AMOS id; only abdominal "
                    "datasets (pancreas, amos) map to napari-pandg labels"
                )
            out[int(idx)] = IDS[key]
        return out
    raise LabelMapError(
        f"cannot derive a label map for MaskGen dataset {dataset!r} with {out_ch} classes"
    )


def maskgen_description(args: Mapping[str, Any], path: str | os.PathLike = "") -> ModelDescription:
    method = str(args.get("method", "erm"))
    in_ch = int(args.get("in_channels", 1))
    fx = None
    if method in ("dropgen", "maskgen") or in_ch == 17:
        fdim = int(args.get("feature_dim", 16))
        fx = {
            "architecture": "PlainUnet",
            "kwargs": {"num_downs": 4, "ngf": fdim, "norm": str(args.get("norm_type", "batch"))},
            "in_channels": 1,
            "out_channels": 16,
            "input_norm": "none",  # MaskGen min-max normalises the whole volume already
            "instance_norm": True,
            "source": "anatomix.pth",
        }
    try:
        return _maskgen_description(args, path, method, in_ch, fx)
    except ModelError as exc:
        if not path:
            raise
        raise type(exc)(f"{path}: invalid MaskGen model arguments: {exc}") from None


def _maskgen_description(
    args: Mapping[str, Any], path: str | os.PathLike, method: str, in_ch: int, fx: dict[str, Any] | None
) -> ModelDescription:
    return ModelDescription(
        name=Path(path).parent.name or Path(path).stem if path else "maskgen",
        architecture="PlainUnet",
        arch_kwargs={
            "num_downs": int(args.get("num_levels", 5)),
            "ngf": int(args.get("base_filters", 20)),
            "norm": "batch",
        },
        in_channels=in_ch,
        out_channels=int(args.get("out_channels", 2)),
        spacing=tuple(args.get("spacing", (1.0, 1.0, 1.0))),
        orientation="RAS",
        patch_size=tuple(args.get("crop_size", (128, 128, 128))),
        normalization={"method": "minmax"},
        label_map=maskgen_label_map(args),
        feature_extractor=fx,
        inference={
            "overlap": 0.5,
            "sw_batch_size": int(args.get("batch_size", 2) or 2),
            "mode": "constant",
        },
        method="maskgen" if fx else method,
        domains={"centers": [], "sequences": [], "dataset": [str(args.get("dataset", ""))]},
        val_metrics={},
        command=f"MaskGen main.py --run_name {args.get('run_name')}",
        versions={},
        source_format="maskgen",
        notes="converted from a MaskGen/DropGen checkpoint",
        extra={"maskgen_args": _jsonable(dict(args))},
    )


def _find_anatomix(path: Path) -> Path | None:
    from napari_pandg.models.registry import user_model_dir

    cands = [path.parent / "anatomix.pth"]
    for parent in [path.parent, *path.parents][:4]:
        cands += [parent / "pretrained" / "anatomix.pth", parent / "pretrained" / "anatomix" / "anatomix.pth"]
    cands.append(user_model_dir() / "anatomix.pth")
    return next((c for c in cands if c.is_file()), None)


def load_anatomix(path: str | os.PathLike, spec: Mapping[str, Any] | None = None) -> nn.Module:
    """The frozen anatomix feature extractor (+ InstanceNorm) from ``anatomix.pth``."""
    path = Path(path)
    spec = dict(spec or {})
    spec.setdefault("architecture", "PlainUnet")
    spec.setdefault("kwargs", {"num_downs": 4, "ngf": 16, "norm": "batch"})
    spec.setdefault("out_channels", 16)
    spec.setdefault("instance_norm", True)
    spec.setdefault("input_norm", "minmax")
    obj = read_checkpoint_file(path)
    if isinstance(obj, Mapping) and obj.get("format") == "napari-pandg/features":
        spec = {**obj["description"]}
        obj = obj["state_dict"]
    elif isinstance(obj, Mapping) and "model_state_dict" in obj:
        obj = obj["model_state_dict"]
    fx = build_feature_extractor(spec)
    load_state_dict_checked(fx.net, obj, path, f"anatomix-style PlainUnet({spec['kwargs']})")
    return fx


def _load_maskgen(path: Path, obj: Mapping[str, Any], features_path: str | os.PathLike | None) -> SegModel:
    args = obj["args"]
    if not isinstance(args, Mapping):
        raise CheckpointFormatError(f"{path}: MaskGen 'args' is not a dict")
    desc = maskgen_description(args, path)
    seg = build_network(desc.architecture, desc.arch_kwargs, desc.in_channels, desc.out_channels)
    load_state_dict_checked(
        seg, obj["model_state_dict"], path, f"MaskGen PlainUnet({desc.arch_kwargs}, in={desc.in_channels})"
    )
    net: nn.Module = seg
    if desc.feature_extractor:
        fpath = Path(features_path) if features_path else _find_anatomix(path)
        if fpath is None or not fpath.is_file():
            raise ModelNotFoundError(
                f"{path} is a MaskGen model that needs the anatomix feature extractor; put "
                "anatomix.pth next to it or in the user model folder, or pass features_path"
            )
        net = FeatureConcatNet(load_anatomix(fpath, desc.feature_extractor), seg)
        desc.feature_extractor["source"] = str(fpath)
    net.eval()
    return SegModel(desc, net, path)
