"""Domain-generalisation training (no Qt): config, data, DG methods, trainer, DDP.

* :func:`load_config` / :class:`TrainConfig` -- YAML + ``key=value`` overrides;
* :func:`train` / :func:`run_train_cli` -- the trainer (single process or ``torchrun``);
* :mod:`.methods` -- erm, bigaug, gin, maskgen, meanteacher, finetune.

``python -m napari_pandg.train CONFIG [key=value ...]`` runs the trainer (also under
``torchrun --nproc_per_node=N -m napari_pandg.train ...``).
"""

from napari_pandg.train.config import ConfigError, TrainConfig, load_config, parse_overrides
from napari_pandg.train.methods import METHODS, make_method
from napari_pandg.train.trainer import TrainResult, run_train_cli, train

__all__ = [
    "METHODS",
    "ConfigError",
    "TrainConfig",
    "TrainResult",
    "load_config",
    "make_method",
    "parse_overrides",
    "run_train_cli",
    "train",
]
