"""Feature embeddings across centers and sequences: patch descriptors, UMAP, domain separation.

The question a user asks here is *what a feature space sees*: does it group scans by
sequence (contrast) and center (scanner), or by anatomy? This module answers it without Qt:

1. :func:`volume_patches` cuts a volume, on a fixed millimetre grid (RAS, ``spacing``), into
   non-overlapping blocks of ``patch`` voxels inside the body, and describes each block by the
   mean of a feature map over its body voxels. Feature maps:

   * ``"anatomy"``: the frozen anatomy feature extractor shipped for MaskGen
     (``anatomy_features_A.pt``, trained by ``pandg train-features``), or any features
     checkpoint / ``anatomix.pth`` given with ``feature_source``; contrast-invariant by design;
   * ``"intensity"``: intensity statistics of the normalised image (mean, std, 10/50/90th
     percentiles, mean gradient magnitude); a contrast-bound baseline.

   Each block row keeps where it came from (subject, center, sequence, image path, block
   centre as storage voxel i, j, k and RAS millimetres) and, with a label map, its dominant
   structure (``organ``) and pancreas fraction: enough to go back from a point to the voxel.
2. :func:`embed_index` does that for every row of a dataset index, with a per-volume disk
   cache (keyed by file path, size, mtime and the settings), progress and cancel callbacks.
3. :func:`run_umap` (umap-learn, standardised features, seeded) adds ``UMAP0``/``UMAP1``.
4. :func:`domain_separation` measures what the features encode: k-NN accuracy of predicting
   sequence, center and organ from the features with neighbours from other subjects, and how
   often a patch's nearest neighbour in the same subject's other sequences is the same place.

The napari widget (``napari_pandg._qt.embedding_widget``) and ``pandg embed`` are thin layers
over these functions.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from napari_pandg.labels import NAMES
from napari_pandg.volume import Volume

FEATURE_KINDS = ("anatomy", "intensity")
DEFAULT_FEATURE_SOURCE = "anatomy_features_A.pt"
INTENSITY_COLUMNS = ("int_mean", "int_std", "int_p10", "int_p50", "int_p90", "int_grad")
META_COLUMNS = ("subject", "center", "sequence", "image", "block", "i", "j", "k", "x_mm", "y_mm", "z_mm",
                "organ_id", "organ", "pancreas_fraction", "body_fraction")  # fmt: skip
CACHE_VERSION = 1


class EmbedError(ValueError):
    """A problem with the inputs of an embedding run (names the file or setting)."""


class Cancelled(RuntimeError):
    """Raised inside :func:`embed_index` when the cancel callback returns True."""


def feature_columns(df: pd.DataFrame) -> list[str]:
    """The descriptor columns of a patch table (``f0..`` for anatomy, ``int_*`` for intensity)."""
    cols = [c for c in df.columns if c.startswith("f") and c[1:].isdigit()]
    cols.sort(key=lambda c: int(c[1:]))
    return cols or [c for c in INTENSITY_COLUMNS if c in df]


def load_extractor(kind: str, feature_source: str | None = None) -> tuple[Any, dict[str, Any]]:
    """The frozen feature network for ``kind`` (None for ``"intensity"``) and its description."""
    if kind not in FEATURE_KINDS:
        raise EmbedError(f"unknown feature kind {kind!r}; choose from {', '.join(FEATURE_KINDS)}")
    if kind == "intensity":
        return None, {"kind": "intensity"}
    from napari_pandg.train.methods import load_feature_module

    net, spec = load_feature_module(feature_source or DEFAULT_FEATURE_SOURCE)
    net.eval()
    return net, dict(spec)


def _depth_multiple(spec: dict[str, Any]) -> int:
    downs = int(dict(spec.get("kwargs") or {}).get("num_downs", 3))
    return 2**downs


def _feature_map(grid: np.ndarray, net: Any, spec: dict[str, Any]) -> np.ndarray:
    """(C, X, Y, Z) features of a normalised image on the model grid (padded to the net's stride)."""
    import torch

    m = _depth_multiple(spec)
    pads = [(0, (-n) % m) for n in grid.shape]
    x = np.pad(grid, pads, mode="edge")
    with torch.no_grad():
        f = net(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None])[0].numpy()
    return f[:, : grid.shape[0], : grid.shape[1], : grid.shape[2]]


def volume_patches(
    image: Volume,
    label: Volume | None = None,
    *,
    kind: str = "anatomy",
    net: Any = None,
    spec: dict[str, Any] | None = None,
    spacing: Sequence[float] = (2.0, 2.0, 4.0),
    patch: Sequence[int] = (16, 16, 8),
    min_body: float = 0.5,
) -> pd.DataFrame:
    """One row per body block of ``image`` (see the module doc); ``label`` on the same grid."""
    from scipy import ndimage

    from napari_pandg.models.preprocess import foreground_mask, normalize_intensity, to_model_grid

    if kind not in FEATURE_KINDS:
        raise EmbedError(f"unknown feature kind {kind!r}; choose from {', '.join(FEATURE_KINDS)}")
    if kind == "anatomy" and net is None:
        net, spec = load_extractor(kind)
    patch = tuple(int(p) for p in patch)
    if len(patch) != 3 or min(patch) < 1:
        raise EmbedError(f"patch must be three positive sizes in voxels, got {patch}")
    where = str(image.source_path or image.subject or "image")
    if label is not None and label.shape != image.shape:
        raise EmbedError(f"{label.source_path or 'label'}: shape {label.shape} differs from the image's "
                         f"{image.shape} ({where})")  # fmt: skip
    norm = normalize_intensity(image.array, None, where)
    grid, gaff = to_model_grid(norm, image.affine, tuple(float(s) for s in spacing), "RAS", "bilinear")
    lab = None
    if label is not None:
        lab, _ = to_model_grid(np.asarray(label.array).astype(np.int16), label.affine,
                               tuple(float(s) for s in spacing), "RAS", "nearest")  # fmt: skip
    body = foreground_mask(grid)
    body = ndimage.binary_fill_holes(ndimage.binary_opening(body, iterations=1))
    if kind == "anatomy":
        feats = _feature_map(grid, net, spec or {})
    else:
        gmag = np.sqrt(sum(g**2 for g in np.gradient(grid)))
        feats = None
    nb = [max(1, n // p) for n, p in zip(grid.shape, patch, strict=True)]
    off = [(n - b * p) // 2 for n, b, p in zip(grid.shape, nb, patch, strict=True)]  # centre the block grid
    inv = np.linalg.inv(image.affine)
    rows: list[dict[str, Any]] = []
    for bi in range(nb[0]):
        for bj in range(nb[1]):
            for bk in range(nb[2]):
                sl = tuple(slice(o + b * p, min(o + (b + 1) * p, n))
                           for o, b, p, n in zip(off, (bi, bj, bk), patch, grid.shape, strict=True))  # fmt: skip
                m = body[sl]
                frac = float(m.mean()) if m.size else 0.0
                if frac < min_body or not m.any():
                    continue
                centre = np.array([(s.start + s.stop - 1) / 2 for s in sl])
                ras = gaff[:3, :3] @ centre + gaff[:3, 3]
                ijk = inv[:3, :3] @ ras + inv[:3, 3]
                row: dict[str, Any] = {"block": f"{bi}-{bj}-{bk}", "i": float(ijk[0]), "j": float(ijk[1]),
                                       "k": float(ijk[2]), "x_mm": float(ras[0]), "y_mm": float(ras[1]),
                                       "z_mm": float(ras[2]), "body_fraction": frac}  # fmt: skip
                if lab is not None:
                    ids = lab[sl][m].astype(np.int64)
                    vals, counts = np.unique(ids, return_counts=True)
                    oid = int(vals[np.argmax(counts)])
                    row["organ_id"] = oid
                    row["organ"] = NAMES.get(oid, "background" if oid == 0 else f"label_{oid}")
                    row["pancreas_fraction"] = float((ids == 10).mean())
                else:
                    row["organ_id"], row["organ"], row["pancreas_fraction"] = -1, "", float("nan")
                if feats is not None:
                    v = feats[(slice(None), *sl)][:, m].mean(axis=1)
                    row.update({f"f{c}": float(v[c]) for c in range(v.shape[0])})
                else:
                    vals_i = grid[sl][m]
                    p10, p50, p90 = np.percentile(vals_i, [10, 50, 90])
                    row.update({"int_mean": float(vals_i.mean()), "int_std": float(vals_i.std()),
                                "int_p10": float(p10), "int_p50": float(p50), "int_p90": float(p90),
                                "int_grad": float(gmag[sl][m].mean())})  # fmt: skip
                rows.append(row)
    df = pd.DataFrame(rows)
    for k, v in (("subject", image.subject), ("center", image.center), ("sequence", image.sequence),
                 ("image", str(image.source_path or ""))):  # fmt: skip
        df[k] = v
    return df


def _cache_key(row: dict[str, Any], settings: dict[str, Any]) -> str:
    parts: dict[str, Any] = {"v": CACHE_VERSION, **settings}
    for k in ("image", "label"):
        p = row.get(k)
        if isinstance(p, str) and p and os.path.exists(p):
            st = os.stat(p)
            parts[k] = [os.path.abspath(p), st.st_size, int(st.st_mtime)]
    parts["tags"] = [str(row.get(k, "")) for k in ("subject", "center", "sequence", "label_map")]
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def embed_index(
    index: pd.DataFrame,
    *,
    kind: str = "anatomy",
    feature_source: str | None = None,
    spacing: Sequence[float] = (2.0, 2.0, 4.0),
    patch: Sequence[int] = (16, 16, 8),
    min_body: float = 0.5,
    cache_dir: str | os.PathLike | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> pd.DataFrame:
    """Patch table for every row of a dataset index (``napari_pandg.io.read_index``)."""
    from napari_pandg.io import load_case

    if index is None or len(index) == 0:
        raise EmbedError("the dataset index is empty: nothing to embed")
    missing = [c for c in ("subject", "center", "sequence", "image") if c not in index]
    if missing:
        raise EmbedError(f"the dataset index lacks columns {missing}")
    net, spec = load_extractor(kind, feature_source)
    settings = {"kind": kind, "spec": {k: spec.get(k) for k in ("architecture", "kwargs", "source")},
                "spacing": [float(s) for s in spacing], "patch": [int(p) for p in patch], "min_body": float(min_body)}  # fmt: skip
    cache = Path(cache_dir).expanduser() if cache_dir else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    tables = []
    rows = index.to_dict("records")
    for n, row in enumerate(rows):
        if cancel is not None and cancel():
            raise Cancelled(f"cancelled after {n} of {len(rows)} volumes")
        f = cache / f"{_cache_key(row, settings)}.csv" if cache is not None else None
        table = None
        if f is not None and f.exists():
            try:
                table = pd.read_csv(f, dtype={"subject": str, "center": str, "sequence": str, "organ": str})
                table["organ"] = table["organ"].fillna("")
            except (OSError, ValueError, pd.errors.ParserError):
                table = None
        if table is None:
            image, label = load_case(row)
            table = volume_patches(image, label, kind=kind, net=net, spec=spec, spacing=spacing,
                                   patch=patch, min_body=min_body)  # fmt: skip
            table["image"] = str(row["image"])
            if f is not None:
                tmp = f.with_name(f".{f.stem}.{os.getpid()}.tmp")
                table.to_csv(tmp, index=False)
                os.replace(tmp, f)
        tables.append(table)
        if progress is not None:
            progress(n + 1, len(rows), f"{row.get('subject', '')} {row.get('sequence', '')}: {len(table)} patches")
    df = pd.concat(tables, ignore_index=True)
    front = [c for c in META_COLUMNS if c in df]
    return df[front + [c for c in df.columns if c not in front]]


def volume_shift_scores(
    table: pd.DataFrame,
    model: Any,
    progress: Callable[[int, int, str], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> pd.DataFrame:
    """``table`` with a ``shift_score`` column: each patch gets the shift score of its volume
    under ``model`` (a name, checkpoint or SegModel; ``napari_pandg.models.shift``), computed
    once per image by segmenting it. Colouring the UMAP by it shows which centers, sequences
    and subjects lie outside the model's training domain."""
    from napari_pandg.io import load_volume
    from napari_pandg.models.inference import as_model, segment_volume

    if "image" not in table:
        raise EmbedError("the patch table has no image column: cannot tell which volume a patch is from")
    m = as_model(model)
    images = list(dict.fromkeys(str(p) for p in table["image"]))
    scores: dict[str, float] = {}
    for n, path in enumerate(images):
        if cancel is not None and cancel():
            raise Cancelled(f"cancelled after {n} of {len(images)} volumes")
        scores[path] = float(segment_volume(m, load_volume(path)).metadata["shift"]["score"])
        if progress is not None:
            progress(n + 1, len(images), f"shift score {Path(path).name}: {scores[path]:.2f}")
    out = table.copy()
    out["shift_score"] = [scores[str(p)] for p in table["image"]]
    return out


def run_umap(
    df: pd.DataFrame,
    columns: Sequence[str] | None = None,
    *,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    seed: int = 0,
) -> np.ndarray:
    """(N, 2) UMAP of the standardised descriptor columns (seeded, single-threaded: reproducible)."""
    cols = list(columns or feature_columns(df))
    if not cols:
        raise EmbedError("the table has no feature columns (f0.. or int_*)")
    x = df[cols].to_numpy(dtype=np.float64)
    if len(x) < 4:
        raise EmbedError(f"UMAP needs at least 4 patches, got {len(x)}")
    if not np.isfinite(x).all():
        raise EmbedError("feature table holds NaN/inf values; re-run the embedding")
    from sklearn.preprocessing import StandardScaler
    from umap import UMAP

    xs = StandardScaler().fit_transform(x)
    nn = int(min(max(2, n_neighbors), len(x) - 1))
    return UMAP(n_components=2, n_neighbors=nn, min_dist=float(min_dist), random_state=int(seed)).fit_transform(xs)


def domain_separation(
    df: pd.DataFrame,
    columns: Sequence[str] | None = None,
    targets: Sequence[str] = ("sequence", "center", "organ"),
    k: int = 10,
    max_points: int = 4000,
    seed: int = 0,
) -> pd.DataFrame:
    """What the features encode, as accuracies against chance (one row per measure).

    * ``knn:<target>``: k-NN accuracy of predicting ``target`` (sequence, center, organ) from
      the standardised features, with every neighbour taken from *another subject* (so a
      subject's other sequences, which share its anatomy, cannot vote). High for ``sequence``
      means the space is organised by contrast, the property that breaks models across
      sequences; high for ``organ`` means it is organised by anatomy. ``chance`` = always
      answering the most frequent value.
    * ``same_block_across_sequences``: for each patch, the nearest patch among the *same
      subject's other sequences*; the fraction that is the same block (same place in the body).
      1.0 = perfectly contrast-invariant features; ``chance`` = 1 / blocks per volume.
    """
    cols = list(columns or feature_columns(df))
    if not cols:
        raise EmbedError("the table has no feature columns (f0.. or int_*)")
    rng = np.random.default_rng(seed)
    d = df.reset_index(drop=True)
    x_all = d[cols].to_numpy(dtype=np.float64)
    x_all = (x_all - x_all.mean(0)) / (x_all.std(0) + 1e-9)
    sel = np.sort(rng.choice(len(d), max_points, replace=False)) if len(d) > max_points else np.arange(len(d))
    x, subj = x_all[sel], d["subject"].astype(str).to_numpy()[sel]
    out = []
    for t in targets:
        if t not in d:
            continue
        y = d[t].astype(str).to_numpy()[sel]
        ok = y != ""
        if len(np.unique(y[ok])) < 2:
            continue
        correct = total = 0
        for i in np.nonzero(ok)[0]:
            di = ((x - x[i]) ** 2).sum(-1)
            di[(subj == subj[i]) | ~ok] = np.inf
            nn = np.argpartition(di, min(k, len(di) - 1))[:k]
            nn = nn[np.isfinite(di[nn])]
            if len(nn) == 0:
                continue
            vals, counts = np.unique(y[nn], return_counts=True)
            correct += int(vals[np.argmax(counts)] == y[i])
            total += 1
        _, counts = np.unique(y[ok], return_counts=True)
        if total:
            out.append({"measure": f"knn:{t}", "accuracy": correct / total, "chance": counts.max() / ok.sum(),
                        "classes": int(len(counts)), "n": int(total)})  # fmt: skip
    # same place across sequences (all patches of each subject; no subsampling needed per subject)
    hits = total = 0
    blocks_per_volume = []
    for _, g in d.groupby("subject"):
        if g["sequence"].nunique() < 2:
            continue
        xg, seq, blk = x_all[g.index], g["sequence"].astype(str).to_numpy(), g["block"].astype(str).to_numpy()
        blocks_per_volume += list(g.groupby("sequence").size())
        for i in range(len(g)):
            di = ((xg - xg[i]) ** 2).sum(-1)
            di[seq == seq[i]] = np.inf
            j = int(np.argmin(di))
            if np.isfinite(di[j]):
                hits += int(blk[j] == blk[i])
                total += 1
    if total:
        out.append({"measure": "same_block_across_sequences", "accuracy": hits / total,
                    "chance": 1.0 / float(np.mean(blocks_per_volume)), "classes": int(np.mean(blocks_per_volume)),
                    "n": int(total)})  # fmt: skip
    return pd.DataFrame(out, columns=["measure", "accuracy", "chance", "classes", "n"])


def scatter_png(
    emb: np.ndarray, values: Sequence[Any], path: str | os.PathLike, title: str = "", max_legend: int = 20
) -> Path:
    """A matplotlib scatter of an embedding coloured by ``values`` (categorical), written atomically."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    vals = np.asarray([str(v) for v in values])
    cats = sorted(set(vals))
    cmap = plt.get_cmap("tab20" if len(cats) > 10 else "tab10")
    fig, ax = plt.subplots(figsize=(7.0, 4.5), dpi=100)
    for n, c in enumerate(cats):
        sel = vals == c
        ax.scatter(emb[sel, 0], emb[sel, 1], s=4, color=cmap(n % cmap.N), label=c if n < max_legend else None,
                   alpha=0.8, linewidths=0)  # fmt: skip
    ax.set_xlabel("UMAP0")
    ax.set_ylabel("UMAP1")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, markerscale=3, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def default_cache_dir(source: str | os.PathLike | None = None) -> Path:
    """Where per-volume patch tables are cached: ``$PANDG_CACHE`` or ``~/.pandg/cache/embed``."""
    env = os.environ.get("PANDG_CACHE")
    return (Path(env).expanduser() if env else Path.home() / ".pandg" / "cache") / "embed"


def is_patch_table(path: str | os.PathLike) -> bool:
    """True for a CSV written by ``pandg embed`` (patch rows with i, j, k and block columns)."""
    p = Path(path).expanduser()
    if not (p.is_file() and p.suffix.lower() == ".csv"):
        return False
    try:
        cols = set(pd.read_csv(p, nrows=0).columns)
    except (OSError, ValueError, pd.errors.ParserError):
        return False
    return {"block", "i", "j", "k", "image"} <= cols


def read_patch_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a ``patches_<kind>.csv`` of ``pandg embed`` (checked for its columns)."""
    p = Path(path).expanduser()
    if not is_patch_table(p):
        raise EmbedError(f"{p}: not a patch table of `pandg embed` (needs block, i, j, k, image columns)")
    df = pd.read_csv(p, dtype={"subject": str, "center": str, "sequence": str, "organ": str, "image": str})
    for c in ("subject", "center", "sequence", "organ"):
        if c in df:
            df[c] = df[c].fillna("")
    if not feature_columns(df):
        raise EmbedError(f"{p}: no feature columns (f0.. or int_*)")
    return df


def load_index(
    source: str | os.PathLike | pd.DataFrame,
    *,
    centers: Sequence[str] | None = None,
    sequences: Sequence[str] | None = None,
    subjects: Sequence[str] | None = None,
) -> pd.DataFrame:
    """A dataset index (CSV, dataset folder or DataFrame), filtered; unknown filter values are errors."""
    from napari_pandg.benchmark import read_dataset

    df, name = read_dataset(source)
    for col, allowed in (("center", centers), ("sequence", sequences), ("subject", subjects)):
        if allowed:
            unknown = sorted(set(allowed) - set(df[col].astype(str)))
            if unknown:
                raise EmbedError(f"{name}: no {col} {unknown} (present: {sorted(set(df[col].astype(str)))})")
            df = df[df[col].astype(str).isin(list(allowed))]
    if df.empty:
        raise EmbedError(f"{name}: no volumes left after the center/sequence/subject filters")
    return df.reset_index(drop=True)


def run_embed_cli(
    manifest: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    kinds: Sequence[str] = ("anatomy", "intensity"),
    feature_source: str | None = None,
    centers: Sequence[str] | None = None,
    sequences: Sequence[str] | None = None,
    subjects: Sequence[str] | None = None,
    patch: Sequence[int] = (16, 16, 8),
    spacing: Sequence[float] = (2.0, 2.0, 4.0),
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> Path:
    """``pandg embed``: per feature kind, ``patches_<kind>.csv`` (descriptors + UMAP0/1),
    ``separation_<kind>.csv`` and ``umap_<kind>_by_<sequence|center|organ>.png`` in ``out_dir``."""
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"output folder {out} is not empty; choose an empty folder or pass --overwrite")
    for k in kinds:
        if k not in FEATURE_KINDS:
            raise EmbedError(f"unknown feature kind {k!r}; choose from {', '.join(FEATURE_KINDS)}")
    df = load_index(manifest, centers=centers, sequences=sequences, subjects=subjects)
    name = str(manifest)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(cache_dir).expanduser() if cache_dir else out / ".cache"
    log(f"embedding {len(df)} volumes of {name} ({', '.join(kinds)} features) -> {out}")
    for kind in kinds:
        table = embed_index(df, kind=kind, feature_source=feature_source, spacing=spacing, patch=patch,
                            cache_dir=cache, progress=lambda d, t, w, k=kind: log(f"[{k} {d}/{t}] {w}"))  # fmt: skip
        emb = run_umap(table, n_neighbors=n_neighbors, min_dist=min_dist, seed=seed)
        table["UMAP0"], table["UMAP1"] = emb[:, 0], emb[:, 1]
        _atomic_csv(table, out / f"patches_{kind}.csv")
        sep = domain_separation(table, seed=seed)
        _atomic_csv(sep, out / f"separation_{kind}.csv")
        for by in ("sequence", "center", "organ"):
            if by in table and table[by].astype(str).replace("", np.nan).dropna().nunique() > 0:
                scatter_png(emb, table[by], out / f"umap_{kind}_by_{by}.png", f"{kind} features, coloured by {by}")
        log(f"{kind}: {len(table)} patches")
        for r in sep.itertuples():
            log(f"  {r.measure:<28} {r.accuracy:.3f} (chance {r.chance:.3f})")
    return out


def _atomic_csv(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)
