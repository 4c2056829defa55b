"""Model registry: shipped models (package data) and user models (a folder).

* shipped: ``napari_pandg/models/weights/*.pt``;
* user: ``$PANDG_MODELS`` if set, else ``~/.pandg/models`` (``*.pt`` and ``*.pth``; MaskGen
  ``best.pth`` files in sub-folders are found as ``<folder>/best``).

A model's *name* is its file stem (``erm_t1fs_venous.pt`` -> ``erm_t1fs_venous``). User models
shadow shipped models of the same name.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from napari_pandg.models.errors import ModelError, ModelNotFoundError

SUFFIXES = (".pt", ".pth")
#: files in a model folder that are feature extractors, not segmentation models
FEATURE_FILES = ("anatomix.pth",)


def shipped_model_dir() -> Path:
    return Path(__file__).resolve().parent / "weights"


def user_model_dir() -> Path:
    env = os.environ.get("PANDG_MODELS")
    return Path(env).expanduser() if env else Path.home() / ".pandg" / "models"


def _scan(folder: Path, source: str) -> dict[str, tuple[Path, str]]:
    out: dict[str, tuple[Path, str]] = {}
    if not folder.is_dir():
        return out
    for p in sorted(folder.rglob("*")):
        if p.suffix not in SUFFIXES or not p.is_file() or p.name in FEATURE_FILES:
            continue
        rel = p.relative_to(folder)
        # feature extractors (pandg train-features) live in a features/ folder or end in _features
        if p.name.startswith(".") or "features" in p.stem.split("_")[-1:] or "features" in rel.parts[:-1]:
            continue
        name = rel.with_suffix("").as_posix()
        out[name] = (p, source)
    return out


def _all() -> dict[str, tuple[Path, str]]:
    models = _scan(shipped_model_dir(), "shipped")
    models.update(_scan(user_model_dir(), "user"))
    return models


def list_models(describe: bool = True) -> pd.DataFrame:
    """One row per model: name, source (shipped/user), path and, with ``describe``, the
    method, architecture, spacing, label map, training domains and validation Dice read from
    the checkpoint (``error`` is filled for unreadable files instead of raising).

    Descriptions are read without torch and without building any network
    (:func:`~napari_pandg.models.description.read_description_fast`); only files that reader
    does not handle (MaskGen ``.pth``, legacy pickles, broken files) go through ``torch.load``.
    """
    from napari_pandg.models.description import read_description_fast

    rows = []
    for name, (path, source) in sorted(_all().items()):
        row: dict[str, object] = {"name": name, "source": source, "path": str(path)}
        if describe:
            try:
                d = read_description_fast(path)
                if d is None:
                    from napari_pandg.models.checkpoint import read_description

                    d = read_description(path)
                row.update(
                    {
                        "method": d.method,
                        "architecture": d.architecture,
                        "spacing": "x".join(f"{s:g}" for s in d.spacing),
                        "labels": ",".join(str(v) for k, v in sorted(d.label_map.items()) if k),
                        "centers": ",".join(d.domains.get("centers", [])),
                        "sequences": ",".join(d.domains.get("sequences", [])),
                        "val_dice": d.val_metrics.get("dice"),
                        "error": "",
                    }
                )
            except ModelError as exc:
                row["error"] = str(exc)
        rows.append(row)
    cols = ["name", "source", "path", "method", "architecture", "spacing", "labels", "centers",
            "sequences", "val_dice", "error"]
    df = pd.DataFrame(rows)
    return df.reindex(columns=cols if describe else cols[:3])


def resolve_model(name_or_path: str | os.PathLike) -> Path:
    """A checkpoint path from a file path or a registered model name."""
    text = os.fspath(name_or_path)
    p = Path(text).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        for cand in ("best.pt", "best.pth", "last.pt"):
            if (p / cand).is_file():
                return p / cand
        raise ModelNotFoundError(f"{p} is a folder without best.pt / best.pth / last.pt")
    models = _all()
    if text in models:
        return models[text][0]
    if any(sep in text for sep in ("/", "\\")) or text.endswith(SUFFIXES):
        raise ModelNotFoundError(f"checkpoint {p} does not exist")
    known = ", ".join(sorted(models)) or "none"
    raise ModelNotFoundError(
        f"no model named {text!r}; known models: {known} (user folder {user_model_dir()}, "
        "set PANDG_MODELS to use another)"
    )
