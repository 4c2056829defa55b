"""The model description (what a checkpoint says about itself), without torch.

:class:`ModelDescription` is validated when it is built: every field that inference uses is
checked against sane limits (see :data:`LIMITS`), so that a corrupt or hand-edited
checkpoint is refused with a message at load time instead of failing later (an allocation
error for an absurd patch size, an empty mask for an implausible spacing).

:func:`read_description_fast` reads the description of a ``torch.save`` zip checkpoint with
a restricted unpickler that never imports torch and never builds tensors (tensors become
placeholders, any other global refuses), so ``pandg models`` lists models in a fraction of a
second. Anything unusual (legacy pickles, unknown globals) returns ``None`` and the caller
falls back to :func:`napari_pandg.models.checkpoint.read_description` (``torch.load`` with
``weights_only=True``).
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_pandg.labels import PANCREAS
from napari_pandg.models.errors import LabelMapError, ModelError

FORMAT = "napari-pandg/model"
FORMAT_VERSION = 1

#: architectures :func:`napari_pandg.models.networks.build_network` knows
ARCHITECTURES = ("UNet", "DynUNet", "PlainUnet")
#: intensity normalisations :func:`napari_pandg.models.preprocess.normalize_intensity` knows
NORMALIZATIONS = ("percentile_zscore", "minmax", "none")
#: sliding-window blending modes (MONAI ``sliding_window_inference``)
BLEND_MODES = ("gaussian", "constant")
#: plausible voxel size (mm) per axis; the same range as ``napari_pandg.io.nifti.SPACING_RANGE_MM``
#: (kept here so that reading a description needs neither nibabel nor torch)
SPACING_RANGE_MM = (0.05, 50.0)
#: limits of a description (a checkpoint outside them is refused at load)
LIMITS: dict[str, Any] = {
    "patch_dim": (8, 512),  # voxels per sliding-window axis
    "patch_voxels": 2**24,  # product of the patch size (256^3 or 512 x 512 x 64)
    "in_channels": (1, 64),
    "out_channels": (2, 256),
    "sw_batch_size": (1, 64),
}

#: default intensity normalisation (what the trainer uses)
DEFAULT_NORMALIZATION: dict[str, Any] = {
    "method": "percentile_zscore",
    "lower": 0.5,
    "upper": 99.5,
    "foreground": "robust_threshold",
    "threshold": 0.1,
}


def _versions() -> dict[str, str]:
    import torch  # only when a new description is made (training), never when reading one

    out = {"torch": torch.__version__}
    try:
        import monai

        out["monai"] = monai.__version__
    except ImportError:  # pragma: no cover - monai is a hard dependency of the trainer
        pass
    try:
        from napari_pandg import __version__

        out["napari_pandg"] = __version__
    except ImportError:  # pragma: no cover
        pass
    return out


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ModelError(f"{what} must be an integer, got {value!r}")
    try:
        f = float(value)
    except ValueError:
        raise ModelError(f"{what} must be an integer, got {value!r}") from None
    if not math.isfinite(f) or f != int(f):
        raise ModelError(f"{what} must be an integer, got {value!r}")
    return int(f)


def _float(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ModelError(f"{what} must be a number, got {value!r}")
    try:
        f = float(value)
    except ValueError:
        raise ModelError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(f):
        raise ModelError(f"{what} must be a finite number, got {value!r}")
    return f


def _triple(value: Any, conv: Any, what: str) -> tuple:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 3:
        raise ModelError(f"{what} must be 3 values (X, Y, Z), got {value!r}")
    return tuple(conv(v, what) for v in value)


def _in_range(value: int, bounds: tuple[int, int], what: str) -> int:
    lo, hi = bounds
    if not lo <= value <= hi:
        raise ModelError(f"{what} must be in {lo}..{hi}, got {value}")
    return value


def _check_orientation(code: Any, what: str) -> str:
    text = str(code).upper()
    axes = [{"L", "R"}, {"P", "A"}, {"I", "S"}]
    used = []
    for ch in text:
        k = next((i for i, ax in enumerate(axes) if ch in ax), None)
        if k is None:
            used = None
            break
        used.append(k)
    if len(text) != 3 or used is None or sorted(used) != [0, 1, 2]:
        raise ModelError(
            f"{what}: orientation {code!r} is not a 3-letter axis code with one of L/R, P/A and "
            "I/S each (e.g. RAS, LPS)"
        )
    return text


def _check_shift(shift: Any, what: str) -> dict[str, Any]:
    """A shift reference is {} or a mean vector, a square precision of the same size and
    positive finite thresholds (napari_pandg.models.shift.fit_reference)."""
    if not shift:
        return {}
    if not isinstance(shift, Mapping):
        raise ModelError(f"{what}: shift must be a mapping, got {type(shift).__name__}")
    try:
        n = len(shift["mean"])
        prec = shift["precision"]
        ok = n > 0 and len(prec) == n and all(len(r) == n for r in prec)
        vals = [float(v) for v in shift["mean"]] + [float(shift["feature_threshold"]), float(shift["confidence_threshold"])]
        ok = ok and all(math.isfinite(v) for v in vals) and float(shift["feature_threshold"]) > 0
        ok = ok and isinstance(shift.get("layer"), str)
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise ModelError(f"{what}: the shift-score reference is malformed (mean / precision / thresholds / layer)")
    return dict(shift)


@dataclass
class ModelDescription:
    """Everything needed to rebuild a model and run it the way it was trained."""

    name: str = "model"
    architecture: str = "UNet"
    arch_kwargs: dict[str, Any] = field(
        default_factory=lambda: {
            "channels": [16, 32, 64, 128],
            "strides": [2, 2, 2],
            "num_res_units": 1,
            "norm": "instance",
        }
    )
    in_channels: int = 1
    out_channels: int = 2
    #: target voxel size in mm along the model grid axes (after reorientation)
    spacing: tuple[float, float, float] = (2.0, 2.0, 4.0)
    orientation: str = "RAS"
    #: sliding-window ROI (voxels on the model grid)
    patch_size: tuple[int, int, int] = (96, 96, 32)
    normalization: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_NORMALIZATION))
    #: model output index -> AMOS label id
    label_map: dict[int, int] = field(default_factory=lambda: {0: 0, 1: PANCREAS})
    #: frozen feature extractor whose output is concatenated to the image (MaskGen), or None
    feature_extractor: dict[str, Any] | None = None
    inference: dict[str, Any] = field(
        default_factory=lambda: {"overlap": 0.5, "sw_batch_size": 2, "mode": "gaussian"}
    )
    #: applied to the output-index map on the model grid (:mod:`napari_pandg.postprocess`),
    #: e.g. ``{"largest_component": [1]}``; chosen on validation (``training/ship_model.py``)
    postprocess: dict[str, Any] = field(default_factory=dict)
    #: training-domain reference of the shift score (:mod:`napari_pandg.models.shift`), or {}
    shift: dict[str, Any] = field(default_factory=dict)
    method: str = "erm"
    #: training domains: {"centers": [...], "sequences": [...]}
    domains: dict[str, list[str]] = field(default_factory=lambda: {"centers": [], "sequences": []})
    val_metrics: dict[str, Any] = field(default_factory=dict)
    command: str = ""
    versions: dict[str, str] = field(default_factory=_versions)
    created: str = ""
    source_format: str = "napari-pandg"
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        what = f"model {self.name!r}"
        self.shift = _check_shift(self.shift, what)
        if self.architecture not in ARCHITECTURES:
            raise ModelError(
                f"{what}: unknown architecture {self.architecture!r}; known: {', '.join(ARCHITECTURES)}"
            )
        if not isinstance(self.arch_kwargs, Mapping):
            raise ModelError(f"{what}: arch_kwargs must be a mapping, got {self.arch_kwargs!r}")
        self.in_channels = _in_range(_int(self.in_channels, f"{what}: in_channels"), LIMITS["in_channels"],
                                     f"{what}: in_channels")  # fmt: skip
        self.out_channels = _in_range(_int(self.out_channels, f"{what}: out_channels"), LIMITS["out_channels"],
                                      f"{what}: out_channels")  # fmt: skip
        self.spacing = _triple(self.spacing, _float, f"{what}: spacing")  # type: ignore[assignment]
        lo, hi = SPACING_RANGE_MM
        if min(self.spacing) < lo or max(self.spacing) > hi:
            raise ModelError(
                f"{what}: spacing {self.spacing} mm is implausible; each axis must be in "
                f"{lo:g}..{hi:g} mm"
            )
        self.orientation = _check_orientation(self.orientation, what)
        self.patch_size = _triple(self.patch_size, _int, f"{what}: patch_size")  # type: ignore[assignment]
        pmin, pmax = LIMITS["patch_dim"]
        if min(self.patch_size) < pmin or max(self.patch_size) > pmax:
            raise ModelError(
                f"{what}: patch_size {self.patch_size} is outside {pmin}..{pmax} voxels per axis"
            )
        if math.prod(self.patch_size) > LIMITS["patch_voxels"]:
            raise ModelError(
                f"{what}: patch_size {self.patch_size} has {math.prod(self.patch_size)} voxels, "
                f"more than {LIMITS['patch_voxels']} (256^3)"
            )
        if not isinstance(self.normalization, Mapping):
            raise ModelError(f"{what}: normalization must be a mapping, got {self.normalization!r}")
        norm = self.normalization.get("method", "percentile_zscore")
        if norm not in NORMALIZATIONS:
            raise ModelError(
                f"{what}: unknown intensity normalisation {norm!r}; known: {', '.join(NORMALIZATIONS)}"
            )
        if not isinstance(self.inference, Mapping):
            raise ModelError(f"{what}: inference must be a mapping, got {self.inference!r}")
        inf = dict(self.inference)
        if "overlap" in inf:
            ov = _float(inf["overlap"], f"{what}: inference.overlap")
            if not 0 <= ov < 1:
                raise ModelError(f"{what}: inference.overlap must be in [0, 1), got {ov}")
        if "sw_batch_size" in inf:
            _in_range(_int(inf["sw_batch_size"], f"{what}: inference.sw_batch_size"), LIMITS["sw_batch_size"],
                      f"{what}: inference.sw_batch_size")  # fmt: skip
        if str(inf.get("mode", "gaussian")) not in BLEND_MODES:
            raise ModelError(
                f"{what}: inference.mode {inf.get('mode')!r} is not one of {', '.join(BLEND_MODES)}"
            )
        if self.feature_extractor is not None and not isinstance(self.feature_extractor, Mapping):
            raise ModelError(f"{what}: feature_extractor must be a mapping or null")
        if not isinstance(self.label_map, Mapping):
            raise ModelError(f"{what}: label_map must be a mapping, got {self.label_map!r}")
        try:
            self.label_map = {int(k): int(v) for k, v in dict(self.label_map).items()}
        except (TypeError, ValueError):
            raise LabelMapError(f"{what}: label map {self.label_map!r} must map integers to integers") from None
        validate_label_map(self.label_map, self.out_channels, what=what)
        from napari_pandg.postprocess import validate_postprocess

        try:
            self.postprocess = validate_postprocess(self.postprocess, self.out_channels, what)
        except (TypeError, ValueError) as exc:
            raise ModelError(str(exc)) from None

    # ------------------------------------------------------------------ (de)serialise
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["spacing"] = list(self.spacing)
        d["patch_size"] = list(self.patch_size)
        # JSON object keys are strings; keep ints in torch.save but make it JSON-safe too
        d["label_map"] = {int(k): int(v) for k, v in self.label_map.items()}
        return _jsonable(d)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelDescription:
        if not isinstance(d, Mapping):
            raise ModelError(f"a model description must be a mapping, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        extra = dict(kwargs.pop("extra", {}) or {})
        extra.update({k: v for k, v in d.items() if k not in known})
        return cls(**kwargs, extra=extra)

    def summary(self) -> str:
        labels = ", ".join(f"{k}->{v}" for k, v in sorted(self.label_map.items()))
        fx = " + frozen features" if self.feature_extractor else ""
        pp = "".join(f", {k} {v}" for k, v in self.postprocess.items())
        return (
            f"{self.name}: {self.architecture}{fx} ({self.method}{pp}), spacing "
            f"{'x'.join(f'{s:g}' for s in self.spacing)} mm {self.orientation}, patch "
            f"{'x'.join(map(str, self.patch_size))}, labels {{{labels}}}, trained on "
            f"centers {self.domains.get('centers', [])} sequences {self.domains.get('sequences', [])}"
        )


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {
            (int(k) if isinstance(k, int) and not isinstance(k, bool) else str(k)): _jsonable(v)
            for k, v in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if obj is None or type(obj) is bool:
        return obj
    if isinstance(obj, str):  # also str subclasses such as torch.__version__
        return str(obj)
    if isinstance(obj, (bool, int)) and not hasattr(obj, "dtype"):
        return int(obj)
    if isinstance(obj, float) and not hasattr(obj, "dtype"):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        try:
            return obj.item()
        except (ValueError, RuntimeError):
            pass
    return str(obj)


def validate_label_map(label_map: Mapping[int, int], out_channels: int, what: str = "model") -> None:
    """The label map must give an AMOS id for every output index 0..out_channels-1."""
    keys = sorted(int(k) for k in label_map)
    if keys != list(range(out_channels)):
        raise LabelMapError(
            f"{what}: label map {dict(label_map)} must map every output index "
            f"0..{out_channels - 1} to a label id (it maps {keys})"
        )
    if int(label_map[0]) != 0:
        raise LabelMapError(f"{what}: output index 0 must be background (0), got {label_map[0]}")
    vals = [int(v) for v in label_map.values()]
    if min(vals) < 0 or max(vals) > 255:
        raise LabelMapError(f"{what}: label ids must be in 0..255, got {sorted(set(vals))}")


# --------------------------------------------------------------------------- fast reading
class _Tensor:
    """Stands in for a tensor in :func:`read_description_fast` (no data is read)."""


class _NotPlain(Exception):
    """The pickle holds something the restricted reader does not handle: use torch.load."""


def _placeholder(*_args: Any, **_kwargs: Any) -> _Tensor:
    return _Tensor()


class _DescriptionUnpickler(pickle.Unpickler):
    """Plain Python values, ``OrderedDict`` and tensor rebuilds (as placeholders) only."""

    _TENSOR_REBUILDS = {"_rebuild_tensor_v2", "_rebuild_tensor", "_rebuild_parameter"}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch._utils" and name in self._TENSOR_REBUILDS:
            return _placeholder
        if module == "torch" and name.endswith("Storage"):
            return _Tensor
        raise _NotPlain(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        return _Tensor()


def read_description_fast(path: str | os.PathLike) -> ModelDescription | None:
    """The description of a napari-pandg zip checkpoint without torch, or ``None``.

    ``None`` means "not handled here" (not a zip checkpoint, another format, an unknown
    global): call :func:`napari_pandg.models.checkpoint.read_description` instead, which
    gives the proper error. A napari-pandg checkpoint whose description is invalid raises
    :class:`~napari_pandg.models.errors.CheckpointFormatError` naming the file.
    """
    from napari_pandg.models.errors import CheckpointFormatError

    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(names) != 1:
                return None
            data = zf.read(names[0])
    except (OSError, zipfile.BadZipFile, KeyError, EOFError, ValueError):
        return None
    try:
        obj = _DescriptionUnpickler(io.BytesIO(data)).load()
    except Exception:  # noqa: BLE001 - anything odd: let torch.load report it
        return None
    if not isinstance(obj, Mapping) or obj.get("format") != FORMAT:
        return None
    return description_from(path, obj, CheckpointFormatError)


def description_from(path: Path, obj: Mapping[str, Any], error: type[Exception]) -> ModelDescription:
    """The validated description of a loaded checkpoint dict; ``error`` names the file."""
    version = obj.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise error(
            f"{path}: checkpoint format version {version!r} is newer than this napari-pandg "
            f"understands ({FORMAT_VERSION}); update napari-pandg"
        )
    if "description" not in obj:
        raise error(f"{path}: the checkpoint has no model description")
    try:
        return ModelDescription.from_dict(obj["description"])
    except (KeyError, TypeError) as exc:
        raise error(f"{path}: the model description is incomplete: {exc}") from None
    except ModelError as exc:  # the validation (keeps LabelMapError etc.)
        raise type(exc)(f"{path}: invalid model description: {exc}") from None
    except ValueError as exc:
        raise error(f"{path}: invalid model description: {exc}") from None
