"""Training configuration: nested dataclasses with defaults, YAML files and ``key=value`` overrides.

>>> cfg = load_config("training/configs/erm.yaml", ["optim.lr=1e-3", "data.train_centers=[A,B]"])

Override values are parsed as YAML (``1e-3`` -> float, ``[A,B]`` -> list, ``null`` -> None).
Unknown keys are errors that list the valid ones. ``method.params`` is a free-form dict for
the DG method (see :mod:`napari_pandg.train.methods`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from napari_pandg.models.errors import ModelError


class ConfigError(ModelError):
    """A training configuration is invalid (unknown key, wrong type, missing manifest)."""


@dataclass
class DataConfig:
    #: where training volumes come from: "manifest" (files of a dataset index) or "phantom"
    #: (freshly generated, randomised phantom subjects streamed during training; see
    #: napari_pandg.train.stream and its settings in ``stream``)
    source: str = "manifest"
    #: dataset index / phantom manifest.csv (paths relative to the CSV are resolved)
    manifest: str = ""
    train_centers: list[str] = field(default_factory=lambda: ["A"])
    train_sequences: list[str] = field(default_factory=lambda: ["t1fs_venous"])
    #: validation domain (None: the training domain); validation subjects are held out
    val_centers: list[str] | None = None
    val_sequences: list[str] | None = None
    #: fractions of subjects (per split, over all subjects of the manifest, by seed)
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    #: extra subjects always held out as test (never trained or validated on)
    test_subjects: list[str] = field(default_factory=list)
    #: few-shot: use only the first N training subjects (after the seeded shuffle)
    max_train_subjects: int | None = None
    #: unlabelled target-domain volumes (mean teacher), from the training subjects only
    unlabeled_centers: list[str] = field(default_factory=list)
    unlabeled_sequences: list[str] = field(default_factory=list)
    #: AMOS label id -> training class index (other ids become background)
    label_map: dict[int, int] = field(default_factory=lambda: {10: 1})
    spacing: list[float] = field(default_factory=lambda: [2.0, 2.0, 4.0])
    patch_size: list[int] = field(default_factory=lambda: [96, 96, 32])
    #: RandCropByPosNegLabeld positive:negative centre ratio
    pos: float = 2.0
    neg: float = 1.0
    #: folder for preprocessed (normalised, resampled) volumes; None: memory only
    cache_dir: str | None = None
    num_workers: int = 0
    #: settings of the phantom stream (source: phantom), see napari_pandg.train.stream.STREAM_DEFAULTS
    stream: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelConfig:
    architecture: str = "UNet"
    kwargs: dict[str, Any] = field(
        default_factory=lambda: {
            "channels": [16, 32, 64, 128],
            "strides": [2, 2, 2],
            "num_res_units": 1,
            "norm": "instance",
        }
    )


@dataclass
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 1e-5
    epochs: int = 50
    steps_per_epoch: int = 50
    batch_size: int = 2
    #: cosine annealing over all steps, after ``warmup_steps`` of linear warm-up
    warmup_steps: int = 0
    min_lr: float = 0.0
    grad_clip: float = 12.0


@dataclass
class ValConfig:
    every_epochs: int = 1
    overlap: float = 0.5
    sw_batch_size: int = 2
    max_cases: int | None = None


@dataclass
class MethodConfig:
    #: erm, bigaug, gin, maskgen, meanteacher, finetune
    name: str = "erm"
    #: augmentation preset: none, standard (MaskGen-like, p=0.33 each), bigaug
    augment: str = "standard"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    name: str = "run"
    #: run folder (config.yaml, metrics.jsonl, last.pt, best.pt); default runs/<name>
    out_dir: str = ""
    seed: int = 0
    device: str = "auto"
    #: continue from out_dir/last.pt when it exists
    resume: bool = True
    #: allow starting over in a run folder that already has last.pt (when resume is false)
    overwrite: bool = False
    #: initialise the network from this checkpoint (fine-tuning)
    init_checkpoint: str | None = None
    #: torch intra-op threads (None: torch default)
    threads: int | None = None
    log_every: int = 10
    #: testing aid: every DDP rank writes rank<r>_weights.pt at the end
    dump_rank_weights: bool = False
    #: stop after this many epochs in this invocation (None: run to optim.epochs); for
    #: splitting a long run into chunks and for testing resume
    stop_after_epochs: int | None = None
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    val: ValConfig = field(default_factory=ValConfig)
    method: MethodConfig = field(default_factory=MethodConfig)

    def run_dir(self) -> Path:
        return Path(self.out_dir) if self.out_dir else Path("runs") / self.name

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "val": ValConfig, "method": MethodConfig}


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Light type checking/coercion for YAML values."""
    text = str(hint)
    if isinstance(value, str) and (hint in (int, float) or text.startswith("int")):
        try:  # YAML 1.1 reads "1e-3" as a string
            value = float(value)
        except ValueError:
            pass
    if value is None:
        if "None" in text or "Any" in text:
            return None
        raise ConfigError(f"config key {key!r} cannot be null")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key {key!r} must be true/false, got {value!r}")
    if hint is int or text.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ConfigError(f"config key {key!r} must be an integer, got {value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {key!r} must be a number, got {value!r}")
        return float(value)
    if hint is str or text.startswith("str"):
        if isinstance(value, (dict, list, tuple)):
            raise ConfigError(f"config key {key!r} must be a single value (text), got {value!r}")
        return str(value)
    if text.startswith("list"):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r} must be a list, got {value!r}")
        for name, elem in (("list[str]", str), ("list[float]", float), ("list[int]", int)):
            if name in text:  # each element checked like a scalar key, errors name the key
                return [_coerce(v, elem, f"{key}[{i}]") for i, v in enumerate(value)]
        return list(value)
    if text.startswith("dict"):
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r} must be a mapping, got {value!r}")
        if "dict[int, int]" in text:
            return {_coerce(k, int, f"{key} (key {k!r})"): _coerce(v, int, f"{key}[{k!r}]") for k, v in value.items()}
        return dict(value)
    return value


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {[prefix + k for k in unknown]}; valid keys under "
            f"{prefix.rstrip('.') or 'the top level'}: {', '.join(names)}"
        )
    kwargs = {}
    for k, v in data.items():
        if k in _SECTIONS and cls is TrainConfig:
            if not isinstance(v, dict):
                raise ConfigError(f"config section {k!r} must be a mapping")
            kwargs[k] = _build(_SECTIONS[k], v, f"{k}.")
        else:
            kwargs[k] = _coerce(v, hints[k], prefix + k)
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    cfg = _build(TrainConfig, dict(data or {}))
    validate_config(cfg)
    return cfg


def parse_overrides(overrides: list[str] | None) -> dict[str, Any]:
    """``["optim.lr=1e-3", "method.params.drop_prob=0.5"]`` -> nested dict."""
    out: dict[str, Any] = {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. optim.lr=1e-3)")
        key, _, raw = item.partition("=")
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() != "" else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with another override")
        node[parts[-1]] = value
    return out


def _merge(base: dict[str, Any], upd: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in upd.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def load_config(path: str | os.PathLike | None, overrides: list[str] | None = None) -> TrainConfig:
    """Defaults <- YAML file (optional) <- ``key=value`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"training config {p} does not exist")
        try:
            # safe_load only: tags such as !!python/object/apply are refused, never executed
            loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: invalid YAML: {exc}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{p}: is not UTF-8 text (byte at offset {exc.start}); save it as UTF-8") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: a training config must be a mapping (key: value lines), got a "
                              f"{type(loaded).__name__}")  # fmt: skip
        data = loaded
    try:
        data = _merge(data, parse_overrides(overrides))
        return config_from_dict(data)
    except ConfigError as exc:
        if path is None:
            raise
        raise ConfigError(f"training config {path}: {exc}") from None


def validate_config(cfg: TrainConfig) -> None:
    d = cfg.data
    if d.source not in ("manifest", "phantom"):
        raise ConfigError(f"data.source must be 'manifest' or 'phantom', got {d.source!r}")
    if d.source == "phantom":
        from napari_pandg.train.stream import stream_settings

        stream_settings(d)
    if len(d.spacing) != 3 or min(d.spacing) <= 0:
        raise ConfigError(f"data.spacing must be 3 positive numbers, got {d.spacing}")
    if len(d.patch_size) != 3 or min(d.patch_size) < 4:
        raise ConfigError(f"data.patch_size must be 3 integers >= 4, got {d.patch_size}")
    if not 0 <= d.val_fraction < 1 or not 0 <= d.test_fraction < 1:
        raise ConfigError("data.val_fraction and data.test_fraction must be in [0, 1)")
    if sorted(set(d.label_map.values())) != list(range(1, len(set(d.label_map.values())) + 1)):
        raise ConfigError(
            f"data.label_map values must be the class indices 1..N, got {d.label_map}"
        )
    o = cfg.optim
    if o.epochs < 1 or o.steps_per_epoch < 1 or o.batch_size < 1:
        raise ConfigError("optim.epochs, optim.steps_per_epoch and optim.batch_size must be >= 1")
    if o.lr <= 0:
        raise ConfigError(f"optim.lr must be > 0, got {o.lr}")


def dump_config(cfg: TrainConfig, path: str | os.PathLike) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
