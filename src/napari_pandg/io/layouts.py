"""Dataset layouts -> rows of the dataset index.

Each builder takes a dataset root and returns a list of row dicts with at least
``subject, center, sequence, image, label, layout, split, label_map`` (absolute paths,
``label`` ``None`` when the case has no label file). :mod:`napari_pandg.io.index` turns
them into a DataFrame. Supported layouts:

``pandg``         this project's phantom ``manifest.csv`` (paths relative to its folder).
``nnunet``        nnU-Net raw ``imagesTr``/``labelsTr``/``imagesTs`` (``<case>_0000.nii.gz``),
                  also nested ``<...>/<CENTER or OutPhaseCENTER>/imagesTr`` (PancreasDG) and
                  ``<CENTER>_<id>`` case names (PanSegData); labels pancreas = 1 -> ``"1:10"``.
``amos``          AMOS 2022 ``imagesTr|Va|Ts/amos_XXXX.nii.gz``, MRI = id > 500, metadata CSV.
``totalseg_mri``  TotalSegmentator MRI ``sXXXX/mri.nii.gz`` + ``segmentations/*.nii.gz``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from napari_pandg.io.errors import PandgFileNotFoundError, PandgIOError
from napari_pandg.io.nifti import (
    format_label_map,
    is_nifti_path,
    load_volume,
    nifti_stem,
    validate_pair,
)
from napari_pandg.volume import Volume

LAYOUTS = ("pandg", "nnunet", "amos", "totalseg_mri")
PANCREAS_LABEL_MAP = "1:10"

#: TotalSegmentator class name -> AMOS id (pancreas = 10)
TOTALSEG_TO_AMOS: dict[str, int] = {
    "spleen": 1,
    "kidney_right": 2,
    "kidney_left": 3,
    "gallbladder": 4,
    "esophagus": 5,
    "liver": 6,
    "stomach": 7,
    "aorta": 8,
    "inferior_vena_cava": 9,
    "adrenal_gland_right": 11,
    "adrenal_gland_left": 12,
    "duodenum": 13,
    "urinary_bladder": 14,
    "prostate": 15,
    "pancreas": 10,  # last: wins where masks overlap
}

_SPLIT_DIRS = {
    "imagesTr": ("train", "labelsTr"),
    "imagesTs": ("test", "labelsTs"),
    "imagesVa": ("val", "labelsVa"),
    "imagesVal": ("val", "labelsVal"),
}
_CHANNEL_RE = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})$")
_AMOS_RE = re.compile(r"^amos_(?P<id>\d{4})$")
_SEQ_PREFIX_RE = re.compile(
    r"^(?P<seq>outphase|out_phase|opp|inphase|in_phase|t1w?|t2w?|dwi|adc|dixon)[_-]?(?P<rest>.*)$",
    re.IGNORECASE,
)
_SEQ_CANON = {
    "outphase": "outphase", "out_phase": "outphase", "opp": "outphase",
    "inphase": "inphase", "in_phase": "inphase",
    "t1": "t1", "t1w": "t1", "t2": "t2", "t2w": "t2",
    "dwi": "dwi", "adc": "adc", "dixon": "dixon",
}  # fmt: skip
_GENERIC_CHANNEL_NAMES = {"mri", "mr", "ct", "noct", "nonct", "image", "img", "", "rescale_to_0_1", "zscore"}
_NAME_TO_AMOS = {
    "spleen": 1, "right_kidney": 2, "kidney_right": 2, "left_kidney": 3, "kidney_left": 3,
    "gallbladder": 4, "esophagus": 5, "liver": 6, "stomach": 7, "aorta": 8,
    "ivc": 9, "postcava": 9, "inferior_vena_cava": 9, "pancreas": 10,
    "right_adrenal": 11, "adrenal_gland_right": 11, "left_adrenal": 12, "adrenal_gland_left": 12,
    "duodenum": 13, "bladder": 14, "urinary_bladder": 14,
}  # fmt: skip
_MAX_DEPTH = 4


# --------------------------------------------------------------------------- utilities
def _nifti_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and is_nifti_path(p) and not p.name.startswith(("._", "."))
    )  # fmt: skip


def _abs(p: Path) -> str:
    return str(p.expanduser().resolve())


def _row(**kw: Any) -> dict[str, Any]:
    base = {
        "subject": "", "center": "", "sequence": "", "image": None, "label": None,
        "layout": "", "split": "", "label_map": "",
    }  # fmt: skip
    base.update(kw)
    return base


def _walk_dirs(root: Path, max_depth: int = _MAX_DEPTH) -> Iterable[Path]:
    """Folders under ``root`` (itself included) down to ``max_depth``, not entering
    nnU-Net image/label folders (they only hold files)."""
    root_depth = len(root.parts)
    for dirpath, dirnames, _ in os.walk(root):
        d = Path(dirpath)
        yield d
        if len(d.parts) - root_depth >= max_depth:
            dirnames[:] = []
        else:
            dirnames[:] = sorted(
                n for n in dirnames
                if not n.startswith(".") and not n.startswith(("images", "labels"))
            )  # fmt: skip


def _sniff_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, sep=None, engine="python", dtype=str)
    except Exception as exc:
        raise PandgIOError(f"{path}: cannot read the metadata CSV ({exc})") from exc


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def _col(df: pd.DataFrame, *names: str) -> str | None:
    """First column of ``df`` whose name matches one of ``names`` (case/space-insensitive)."""
    cols = {_norm(c): c for c in df.columns}
    return next((cols[_norm(n)] for n in names if _norm(n) in cols), None)


def _clean(v: Any) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    return str(v).strip()


# --------------------------------------------------------------------------- CSV files
def read_csv_checked(path: Path, **kwargs: Any) -> pd.DataFrame:
    """``pd.read_csv`` (UTF-8) with errors naming the file: empty, not UTF-8, malformed."""
    try:
        return pd.read_csv(path, encoding="utf-8", **kwargs)
    except pd.errors.EmptyDataError:
        raise PandgIOError(
            f"{path}: the CSV file is empty; write the index again (pandg index / pandg synth)"
        ) from None
    except UnicodeDecodeError as exc:
        raise PandgIOError(
            f"{path}: is not UTF-8 text (undecodable byte at offset {exc.start}); save the CSV "
            "with UTF-8 encoding"
        ) from None
    except pd.errors.ParserError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PandgIOError(f"{path}: malformed CSV ({first}); fix or write the file again") from None
    except OSError as exc:
        raise PandgIOError(f"{path}: cannot read the CSV ({exc.strerror or exc})") from None


def csv_path(csv: Path, base: Path, value: Any, line: int, column: str) -> str | None:
    """Resolve a path cell of an index/manifest CSV (``None`` for an empty cell).

    The rule (documented in docs/io.md): relative paths are relative to the CSV's folder and
    must stay inside it (``../`` that leaves the folder is refused, so a manifest cannot point
    at files outside its dataset); absolute paths (as ``pandg index`` writes) are used as
    they are. ``line`` is the CSV line number (header = line 1).
    """
    text = _clean(value)
    if not text:
        return None
    p = Path(text).expanduser()
    if p.is_absolute():
        return str(p.resolve())
    joined = Path(os.path.normpath(base / p))
    if os.path.commonpath([str(base), str(joined)]) != str(base):
        raise PandgIOError(
            f"{csv}: line {line}, column {column!r}: the relative path {text!r} leaves the "
            f"CSV's folder {base}; relative paths in a dataset CSV must stay inside its folder "
            "(give an absolute path, or move the CSV to the dataset root)"
        )
    return str(joined.resolve())


def check_csv_files(csv: Path, entries: Iterable[tuple[int, str, str | None]]) -> None:
    """Refuse an index whose ``(line, column, path)`` entries name missing files."""
    missing = [(line, col, p) for line, col, p in entries if p is not None and not os.path.isfile(p)]
    if missing:
        shown = "; ".join(f"line {line} {col} {p}" for line, col, p in missing[:3])
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise PandgFileNotFoundError(
            f"{csv}: {len(missing)} file(s) listed in the CSV do not exist: {shown}{more}; "
            "fix the paths or index the dataset again (pandg index)"
        )


# --------------------------------------------------------------------------- pandg
def build_pandg(root: Path) -> list[dict[str, Any]]:
    """Rows from the phantom ``manifest.csv`` (paths relative to the manifest's folder)."""
    manifest = root if root.is_file() else root / "manifest.csv"
    if not manifest.is_file():
        raise PandgFileNotFoundError(f"{manifest}: no manifest.csv (pandg layout)")
    df = read_csv_checked(manifest, dtype=str, keep_default_na=False)
    missing = {"subject", "center", "sequence", "image"} - set(df.columns)
    if missing:
        raise PandgIOError(
            f"{manifest}: missing columns {sorted(missing)}; expected subject, center, "
            "sequence, image[, label, field_strength] (as written by napari_pandg.phantom)"
        )
    base = Path(os.path.abspath(manifest.parent))
    rows = []
    checks: list[tuple[int, str, str | None]] = []
    for i, rec in enumerate(df.to_dict("records")):
        line = i + 2
        img = csv_path(manifest, base, rec.pop("image"), line, "image")
        if img is None:
            raise PandgIOError(f"{manifest}: line {line}: the image cell is empty")
        lab = csv_path(manifest, base, rec.pop("label", ""), line, "label")
        checks += [(line, "image", img), (line, "label", lab)]
        row = _row(
            subject=rec.pop("subject"), center=rec.pop("center"), sequence=rec.pop("sequence"),
            image=img, label=lab, layout="pandg",
            split=rec.pop("split", ""), label_map=rec.pop("label_map", ""),
        )  # fmt: skip
        row.update(rec)
        rows.append(row)
    check_csv_files(manifest, checks)
    return rows


# --------------------------------------------------------------------------- nnunet
def _read_dataset_json(folder: Path) -> dict[str, Any]:
    p = folder / "dataset.json"
    if not p.is_file():
        return {}
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


def _channel_names(meta: Mapping[str, Any]) -> dict[int, str]:
    names = meta.get("channel_names") or meta.get("modality") or {}
    out = {}
    for k, v in dict(names).items():
        try:
            out[int(k)] = str(v)
        except ValueError:
            continue
    return out


def nnunet_label_map(meta: Mapping[str, Any]) -> str:
    """Label map to AMOS ids from dataset.json ``labels`` (v1 or v2); default ``"1:10"``.

    Names matching AMOS organs map to their ids; tumour/cancer/lesion classes of a pancreas
    dataset merge into the gland (10). Without a ``labels`` entry pancreas = 1 is assumed.
    """
    labels = meta.get("labels")
    if not labels:
        return PANCREAS_LABEL_MAP
    pairs: dict[int, str] = {}
    for k, v in dict(labels).items():
        try:  # v1: {"0": "background", "1": "pancreas"}
            pairs[int(k)] = str(v)
        except ValueError:
            try:  # v2: {"background": 0, "pancreas": 1} (regions: lists)
                pairs[int(v)] = str(k)
            except (TypeError, ValueError):
                continue
    has_pancreas = any("pancrea" in n.lower() for n in pairs.values())
    mapping: dict[int, int] = {}
    for idx, name in pairs.items():
        key = name.lower().strip().replace(" ", "_")
        if idx == 0:
            continue
        if "pancrea" in key:
            mapping[idx] = 10
        elif key in _NAME_TO_AMOS:
            mapping[idx] = _NAME_TO_AMOS[key]
        elif has_pancreas and re.search(r"tumou?r|cancer|lesion|cyst|pdac", key):
            mapping[idx] = 10
    return format_label_map(mapping)


def _folder_center_sequence(name: str) -> tuple[str, str]:
    """``OutPhaseEMC`` -> (``EMC``, ``outphase``); ``EMC`` -> (``EMC``, ``""``)."""
    m = _SEQ_PREFIX_RE.match(name)
    if m:
        return m.group("rest"), _SEQ_CANON[m.group("seq").lower()]
    return name, ""


def _sequence_from_names(names: Iterable[str]) -> str:
    for n in names:
        m = re.search(r"((?i:outphase|inphase)|T1|T2)(?!\d)", n)
        if m:
            return _SEQ_CANON[m.group(1).lower()]
    return ""


def _is_dataset_dir_name(name: str) -> bool:
    return bool(re.match(r"^(Task|Dataset)\d+_", name))


def _nnunet_dataset_dirs(root: Path) -> list[Path]:
    dirs = []
    for d in _walk_dirs(root):
        if any((d / s).is_dir() for s in _SPLIT_DIRS):
            dirs.append(d)
    return dirs


def _case_center(cases: list[str]) -> dict[str, str]:
    """Center from ``<CENTER>_<id>`` case names (uppercase prefix or several prefixes)."""
    prefixes = {}
    for c in cases:
        m = re.match(r"^(?P<p>[A-Za-z][A-Za-z0-9]*)_(?P<rest>.*\d.*)$", c)
        prefixes[c] = m.group("p") if m else ""
    distinct = {p for p in prefixes.values() if p}
    out = {}
    for c, p in prefixes.items():
        out[c] = p if p and (len(distinct) > 1 or re.fullmatch(r"[A-Z][A-Z0-9]*", p)) else ""
    return out


def build_nnunet(root: Path) -> list[dict[str, Any]]:
    """Rows for nnU-Net raw folders (one row per image channel), possibly nested."""
    rows: list[dict[str, Any]] = []
    for ds in _nnunet_dataset_dirs(root):
        meta = _read_dataset_json(ds)
        ancestors = [p.name for p in [ds, *ds.parents] if len(p.parts) >= len(root.parts)]
        if not meta:  # nested center folders: dataset.json usually sits in the Task folder
            for parent in ds.parents:
                if len(parent.parts) < len(root.parts):
                    break
                meta = _read_dataset_json(parent)
                if meta:
                    break
        label_map = nnunet_label_map(meta)
        channels = _channel_names(meta)
        folder_center, folder_seq = "", ""
        if ds != root and not _is_dataset_dir_name(ds.name):
            folder_center, folder_seq = _folder_center_sequence(ds.name)
        fallback_seq = _sequence_from_names(ancestors)
        for img_dir, (split, lab_dir_name) in _SPLIT_DIRS.items():
            files = _nifti_files(ds / img_dir)
            if not files:
                continue
            parsed = []
            for f in files:
                m = _CHANNEL_RE.match(nifti_stem(f))
                case, ch = (m.group("case"), int(m.group("ch"))) if m else (nifti_stem(f), 0)
                parsed.append((f, case, ch))
            centers = _case_center(sorted({c for _, c, _ in parsed}))
            n_channels = len({ch for _, _, ch in parsed})
            lab_dir = ds / lab_dir_name
            for f, case, ch in parsed:
                lab = None
                for suf in (".nii.gz", ".nii"):
                    if (lab_dir / f"{case}{suf}").is_file():
                        lab = lab_dir / f"{case}{suf}"
                        break
                name = channels.get(ch, "")
                if name.lower() in _GENERIC_CHANNEL_NAMES:
                    name = ""
                if folder_seq and n_channels == 1:
                    seq = folder_seq
                elif name:
                    seq = name.lower()
                elif n_channels == 1 and (folder_seq or fallback_seq):
                    seq = folder_seq or fallback_seq
                else:
                    seq = f"ch{ch}"
                rows.append(
                    _row(
                        subject=case, center=folder_center or centers[case] or "",
                        sequence=seq, image=_abs(f), label=_abs(lab) if lab else None,
                        layout="nnunet", split=split,
                        label_map=label_map if lab else "", channel=ch,
                        dataset=ds.name if ds != root else root.name,
                    )
                )  # fmt: skip
    return rows


# --------------------------------------------------------------------------- amos
def _amos_meta(root: Path) -> dict[int, dict[str, str]]:
    candidates = sorted(root.glob("labeled_data_meta*.csv")) + sorted(root.glob("*meta*.csv"))
    out: dict[int, dict[str, str]] = {}
    for path in candidates:
        df = _sniff_csv(path)
        id_col = _col(df, "amos_id", "id")
        if id_col is None:
            continue
        vendor = _col(df, "Manufacturer")
        model = _col(df, "Manufacturer's Model Name", "ManufacturersModelName", "model")
        site = _col(df, "Site", "Institution", "InstitutionName")
        for rec in df.to_dict("records"):
            try:
                i = int(float(_clean(rec[id_col])))
            except ValueError:
                continue
            out.setdefault(i, {
                "vendor": _clean(rec.get(vendor)) if vendor else "",
                "scanner": _clean(rec.get(model)) if model else "",
                "site": _clean(rec.get(site)) if site else "",
            })  # fmt: skip
    return out


def build_amos(root: Path, *, include_ct: bool = False) -> list[dict[str, Any]]:
    """AMOS 2022 rows; MRI only (id > 500) unless ``include_ct``.

    ``center`` is ``<Manufacturer>_<Site>`` from ``labeled_data_meta_0000_0599.csv``
    (whichever is known; ``""`` without the CSV); ``vendor``/``scanner``/``site`` columns
    hold the parts. ``sequence`` is ``"mri"`` (AMOS does not record the MR sequence) or
    ``"ct"``. Ids 500 and 600 are flagged ``ambiguous``.
    """
    meta = _amos_meta(root)
    rows = []
    for img_dir, (split, lab_dir_name) in _SPLIT_DIRS.items():
        for f in _nifti_files(root / img_dir):
            m = _AMOS_RE.match(nifti_stem(f))
            if not m:
                continue
            i = int(m.group("id"))
            mri = i > 500
            if not mri and not include_ct:
                continue
            lab = None
            for suf in (".nii.gz", ".nii"):
                if (root / lab_dir_name / f"amos_{m.group('id')}{suf}").is_file():
                    lab = root / lab_dir_name / f"amos_{m.group('id')}{suf}"
                    break
            info = meta.get(i, {"vendor": "", "scanner": "", "site": ""})
            center = "_".join(x for x in (info["vendor"], info["site"]) if x)
            rows.append(
                _row(
                    subject=nifti_stem(f), center=center, sequence="mri" if mri else "ct",
                    image=_abs(f), label=_abs(lab) if lab else None, layout="amos",
                    split=split, label_map="", vendor=info["vendor"], scanner=info["scanner"],
                    site=info["site"], modality="MR" if mri else "CT",
                    ambiguous=i in (500, 600),
                )
            )  # fmt: skip
    return rows


# --------------------------------------------------------------------------- totalseg
def _totalseg_cases(root: Path) -> list[Path]:
    return sorted(
        d for d in root.iterdir()
        if d.is_dir() and any((d / n).is_file() for n in ("mri.nii.gz", "mri.nii"))
    )  # fmt: skip


def build_totalseg_mri(root: Path, *, require_pancreas: bool = True) -> list[dict[str, Any]]:
    """TotalSegmentator-MRI rows: ``sXXXX/mri.nii.gz`` with ``segmentations/pancreas.nii.gz``.

    ``center`` = ``institute`` from the semicolon-separated ``meta.csv``; ``label`` is the
    pancreas mask (value 1, ``label_map`` ``"1:10"``); cases without a pancreas mask file
    are skipped unless ``require_pancreas=False``. Use :func:`load_totalseg_labels` for a
    multi-organ AMOS-id label map of one case.
    """
    meta: dict[str, dict[str, str]] = {}
    meta_path = root / "meta.csv"
    if meta_path.is_file():
        df = _sniff_csv(meta_path)
        id_col = _col(df, "image_id", "subject", "id")
        if id_col is not None:
            for rec in df.to_dict("records"):
                meta[_clean(rec[id_col])] = {k: _clean(v) for k, v in rec.items() if k != id_col}
    rows = []
    for case in _totalseg_cases(root):
        img = case / "mri.nii.gz" if (case / "mri.nii.gz").is_file() else case / "mri.nii"
        seg = case / "segmentations"
        panc = next((seg / f"pancreas{s}" for s in (".nii.gz", ".nii") if (seg / f"pancreas{s}").is_file()), None)
        if panc is None and require_pancreas:
            continue
        info = meta.get(case.name, {})
        norm_info = {_norm(k): v for k, v in info.items()}

        def get(*names: str, _n: dict = norm_info) -> str:
            return next((_n[_norm(n)] for n in names if _norm(n) in _n), "")

        row = _row(
            subject=case.name, center=get("institute", "institution", "center"),
            sequence=(get("sequence", "series_description") or "mri").lower(),
            image=_abs(img), label=_abs(panc) if panc else None, layout="totalseg_mri",
            split=get("split"), label_map=PANCREAS_LABEL_MAP if panc else "",
            vendor=get("manufacturer"), scanner=get("scanner_model", "model"),
            field_strength=get("field_strength", "magnetic_field_strength"),
            segmentations=_abs(seg) if seg.is_dir() else None,
        )  # fmt: skip
        for k, v in info.items():
            row.setdefault(k, v)
        rows.append(row)
    return rows


def load_totalseg_labels(
    case_dir: str | os.PathLike, *, names: Mapping[str, int] | None = None
) -> Volume:
    """Combine a TotalSegmentator case's per-class masks into one AMOS-id label map.

    ``names`` maps mask file names (without ``.nii.gz``) to ids, default
    :data:`TOTALSEG_TO_AMOS`; masks are painted in that order (pancreas last, so it wins
    overlaps). Each mask must lie on the ``mri.nii.gz`` grid (see :func:`validate_pair`).
    Missing masks are skipped; ``metadata["classes"]`` lists those found.
    """
    case = Path(case_dir)
    seg = case / "segmentations"
    if not seg.is_dir():
        raise PandgFileNotFoundError(f"{seg}: no segmentations folder (TotalSegmentator case)")
    mapping = dict(TOTALSEG_TO_AMOS if names is None else names)
    ref_path = next((case / n for n in ("mri.nii.gz", "mri.nii") if (case / n).is_file()), None)
    ref = load_volume(ref_path, allow_nonfinite=True) if ref_path else None
    out: np.ndarray | None = None
    affine = header = None
    found = []
    for name, idx in mapping.items():
        p = next((seg / f"{name}{s}" for s in (".nii.gz", ".nii") if (seg / f"{name}{s}").is_file()), None)
        if p is None:
            continue
        m = load_volume(p, is_label=True)
        if ref is not None:
            m = validate_pair(ref, m)
        if out is None:
            out = np.zeros(m.shape, dtype=np.uint8)
            affine, header = m.affine, m.header
        elif m.shape != out.shape:
            raise PandgIOError(f"{p}: shape {m.shape} differs from the other masks {out.shape}")
        out[m.array > 0] = idx
        found.append(name)
    if out is None:
        raise PandgIOError(
            f"{seg}: none of the masks {sorted(mapping)} found (expected e.g. pancreas.nii.gz)"
        )
    if ref is not None:
        affine, header = ref.affine, ref.header
    return Volume(
        array=out, affine=affine, subject=case.name, is_label=True, source_path=None,
        header=header, metadata={"classes": found, "case_dir": str(case)},
    )  # fmt: skip


# --------------------------------------------------------------------------- detection
def _looks_amos(root: Path) -> bool:
    for img_dir in ("imagesTr", "imagesVa", "imagesTs"):
        d = root / img_dir
        if d.is_dir() and any(_AMOS_RE.match(nifti_stem(f)) for f in _nifti_files(d)):
            return True
    return False


def _looks_totalseg(root: Path) -> bool:
    try:
        return bool(_totalseg_cases(root))
    except OSError:
        return False


DETECTION_HELP = (
    "looked for: manifest.csv (pandg); sXXXX/mri.nii.gz [+ segmentations/, meta.csv] "
    "(totalseg_mri); imagesTr|imagesVa|imagesTs/amos_XXXX.nii.gz (amos); imagesTr/ or "
    f"imagesTs/ with .nii.gz files, up to {_MAX_DEPTH} folders deep (nnunet)"
)


def detect_layout(root: str | os.PathLike) -> str:
    """Name of the layout found at ``root`` (one of :data:`LAYOUTS`)."""
    root = Path(root).expanduser()
    if not root.exists():
        raise PandgFileNotFoundError(f"{root}: dataset folder does not exist")
    if root.is_file():
        if root.name.lower().endswith(".csv"):
            return "pandg"
        raise PandgIOError(f"{root}: is a file; give the dataset folder (or a manifest.csv)")
    if (root / "manifest.csv").is_file():
        return "pandg"
    if _looks_totalseg(root):
        return "totalseg_mri"
    if _looks_amos(root):
        return "amos"
    for ds in _nnunet_dataset_dirs(root):
        if any(_nifti_files(ds / d) for d in _SPLIT_DIRS):
            return "nnunet"
    raise PandgIOError(f"{root}: no dataset layout recognised; {DETECTION_HELP}")


BUILDERS = {
    "pandg": build_pandg,
    "nnunet": build_nnunet,
    "amos": build_amos,
    "totalseg_mri": build_totalseg_mri,
}
