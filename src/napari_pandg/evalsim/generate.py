"""Public entry points: :func:`generate_eval_subject` and :func:`write_eval_dataset`."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_pandg.evalsim.anatomy import PANC, EvalAnatomy, build_anatomy
from napari_pandg.evalsim.render import (
    SubjectFields,
    acquisition_grid,
    f32,
    reference_signal,
    render_group,
    to_storage,
)
from napari_pandg.evalsim.scanners import CENTERS, SEQUENCES
from napari_pandg.evalsim.tissues import sample_props, sample_traits
from napari_pandg.volume import Volume

GENERATOR = "napari_pandg.evalsim"
GENERATOR_VERSION = "1.0"
_CENTER_INDEX = {c: i for i, c in enumerate(sorted(CENTERS))}
_SEQ_INDEX = {s: i for i, s in enumerate(SEQUENCES)}


@dataclass
class EvalSubject:
    """All requested series of one simulated subject at one center (one anatomy, one world frame)."""

    subject: str
    center: str
    seed: int
    images: dict[str, Volume] = field(default_factory=dict)
    labels: dict[str, Volume] = field(default_factory=dict)
    pancreas_volume_ml: float = 0.0
    params: dict = field(default_factory=dict)
    anatomy: EvalAnatomy | None = None
    timings: dict[str, float] = field(default_factory=dict)


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0x5EED, *keys]))


def _check(centers: Sequence[str], sequences: Sequence[str]) -> None:
    bad_c = [c for c in centers if c not in CENTERS]
    if bad_c:
        raise KeyError(f"unknown center(s) {bad_c}; choose from {', '.join(CENTERS)}")
    bad_s = [s for s in sequences if s not in SEQUENCES]
    if bad_s:
        raise KeyError(f"unknown sequence(s) {bad_s}; choose from {', '.join(SEQUENCES)}")
    if not sequences:
        raise ValueError("no sequences requested")


def generate_eval_subject(
    subject: str,
    center: str = "X1",
    seed: int = 0,
    sequences: Sequence[str] = SEQUENCES,
    fine_spacing: float = 1.25,
    zoom: float = 1.0,
    keep_anatomy: bool = False,
) -> EvalSubject:
    """Simulate one subject scanned at ``center`` with the requested ``sequences``.

    Deterministic: the same arguments give bit-identical arrays. The anatomy depends on
    ``seed`` only; coil/B1/B0 fields on ``seed`` and ``center``; noise also on the sequence.
    ``fine_spacing`` (mm) is the anatomy grid; ``zoom > 1`` coarsens every acquisition grid by
    that factor keeping its field of view (fast test-size subjects). ``keep_anatomy`` keeps
    the fine label/tissue maps on the result (``.anatomy``).
    """
    _check([center], sequences)
    if zoom < 1.0 or zoom > 4.0:
        raise ValueError(f"zoom must be within 1-4, got {zoom}")
    prof = CENTERS[center]
    ci = _CENTER_INDEX[center]
    t0 = time.perf_counter()
    anat = build_anatomy(_rng(seed, 1), fine_spacing)
    t_anat = time.perf_counter() - t0
    traits = sample_traits(_rng(seed, 2))
    props = sample_props(_rng(seed, 3), prof.field_strength, traits)
    fields = SubjectFields(_rng(seed, 4, ci), anat, prof)
    panc_c = np.asarray(anat.landmarks["pancreas_centroid"], float)
    body_c = np.array([anat.body["center"][0], anat.body["center"][1], panc_c[2]])
    out = EvalSubject(subject=subject, center=center, seed=int(seed), pancreas_volume_ml=float(anat.pancreas_ml))
    out.params = dict(anatomy=anat.params, traits=traits, landmarks=anat.landmarks)
    # group the series that share a grid (three T1 phases; in/opposed phase)
    groups: dict[str, list[str]] = {}
    for s in sequences:
        groups.setdefault(prof.protocol(s).group, []).append(s)
    for gname, seqs in groups.items():
        t1 = time.perf_counter()
        grng = _rng(seed, 6, ci, sum(map(ord, gname)))
        proto0 = prof.protocol(seqs[0])
        c_world = body_c + np.array([grng.uniform(-6, 6), grng.uniform(-6, 6) + 8.0, grng.uniform(-9, 9)])
        grid = acquisition_grid(proto0, c_world, zoom)
        series = {s: prof.protocol(s) for s in seqs}
        ref = {}
        for s, p in series.items():
            # noise and gain references: pre-contrast liver of this protocol (ip for the dual echo)
            base = "ip" if gname == "dixon" else ("t1fs" if gname == "t1" else s)
            pr = prof.protocol(base)
            r0 = reference_signal(props, pr, base)
            # gain: liver for the T1 / dual-echo series, spleen on T2 (fluid would clip)
            rg = reference_signal(props, pr, base, "spleen") if p.kind == "fse" else r0
            ref[s] = (r0, rg)
        rngs = {s: _rng(seed, 5, ci, _SEQ_INDEX[s]) for s in seqs}
        imgs, lab = render_group(anat, props, prof, series, grid, fields, rngs, ref)
        stored_labels: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for s in seqs:
            p = series[s]
            arr, aff = to_storage(imgs.pop(s), grid.affine, p.storage)
            if p.storage not in stored_labels:
                stored_labels[p.storage] = to_storage(lab, grid.affine, p.storage)
            larr, laff = stored_labels[p.storage]
            if not np.array_equal(aff, laff):  # pragma: no cover - same grid by construction
                raise RuntimeError("label and image grids differ")
            meta = dict(
                evalsim=True, generator=GENERATOR, generator_version=GENERATOR_VERSION, seed=int(seed),
                field_strength=prof.field_strength, vendor=prof.vendor, model=prof.model, sequence_name=p.name,
                kind=p.kind, TR=p.tr, TE=p.te, flip=p.flip, slice_thickness=float(grid.thickness),
                slice_spacing=float(grid.spacing[2]), storage=p.storage, tilt_deg=list(p.tilt_deg),
                acquired_fraction=list(p.kfrac), zoom=zoom, fine_spacing=fine_spacing,
            )  # fmt: skip
            out.images[s] = Volume(arr, aff, subject=subject, center=center, sequence=s, metadata=dict(meta))
            out.labels[s] = Volume(larr.copy(), aff.copy(), subject=subject, center=center, sequence=s, is_label=True,
                                   metadata=dict(meta))  # fmt: skip
        out.timings[gname] = time.perf_counter() - t1
    out.timings["anatomy"] = t_anat
    if keep_anatomy:
        out.anatomy = anat
    return out


# ----------------------------------------------------------------------------- dataset
def subject_seed(seed: int, center: str, index: int) -> int:
    """Per-subject seed from (seed, center, index); a different stream from the phantom's."""
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0xE7A1, 17 + _CENTER_INDEX.get(center, 99), int(index)])
    return int(ss.generate_state(1, dtype=np.uint32)[0])


def subject_id(center: str, index: int) -> str:
    return f"{center}_{index:03d}"


def _header(vol: Volume):
    import nibabel as nib

    hdr = nib.Nifti1Header()
    hdr.set_data_shape(vol.shape)
    hdr.set_sform(vol.affine, code=1)  # scanner
    hdr.set_qform(vol.affine, code=1)
    hdr.set_xyzt_units("mm", "sec")
    hdr["descrip"] = f"pandg evalsim {vol.subject} {vol.sequence}"[:79].encode()
    return hdr


def _atomic_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


MANIFEST_COLUMNS = [
    "subject", "center", "sequence", "field_strength", "vendor", "image", "label", "seed", "spacing_x",
    "spacing_y", "spacing_z", "axcodes", "oblique_deg", "pancreas_ml", "generator",
]  # fmt: skip


def write_eval_dataset(
    out_dir,
    n_subjects: int = 4,
    centers: Sequence[str] = ("X1", "X2", "X3"),
    sequences: Sequence[str] = SEQUENCES,
    seed: int = 0,
    overwrite: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
    fine_spacing: float = 1.25,
    first_index: int = 1,
    zoom: float = 1.0,
):
    """Write ``n_subjects`` per center as NIfTI + ``manifest.csv`` + ``evalsim.json``.

    Same layout as :func:`napari_pandg.phantom.write_dataset` (read by
    :func:`napari_pandg.io.build_index`, ``pandg benchmark``): ``DIR/imagesTr/<subject>_<seq>.nii.gz``
    (float32) and ``DIR/labelsTr/<subject>_<seq>.nii.gz`` (uint8 label ids), relative paths in
    the manifest. Subject ids ``<center>_<index:03d>`` (e.g. ``X1_001``) never collide with the
    phantom's ``A001``. Refuses a non-empty folder unless ``overwrite``. Returns the manifest.
    """
    import nibabel as nib
    import pandas as pd

    from napari_pandg.io import save_volume

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(
            f"output directory {out} is not empty; choose an empty directory or pass overwrite=True "
            "(CLI: --overwrite) to write into it"
        )
    _check(centers, sequences)
    if not 1.0 <= zoom <= 4.0:
        raise ValueError(f"zoom must be within 1-4, got {zoom}")
    if not 0.75 <= fine_spacing <= 4.0:
        raise ValueError(f"fine_spacing must be within 0.75-4 mm, got {fine_spacing}")
    if n_subjects < 1:
        raise ValueError("n_subjects must be >= 1")
    last = first_index + n_subjects - 1
    if first_index < 1 or last > 999:
        raise ValueError(f"subject indices {first_index}..{last} must lie in 1..999")
    (out / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out / "labelsTr").mkdir(parents=True, exist_ok=True)
    rows = []
    total = n_subjects * len(centers)
    done = 0
    seconds = []
    for c in centers:
        prof = CENTERS[c]
        for i in range(first_index, first_index + n_subjects):
            sid = subject_id(c, i)
            s_seed = subject_seed(seed, c, i)
            t0 = time.perf_counter()
            subj = generate_eval_subject(sid, c, s_seed, tuple(sequences), fine_spacing=fine_spacing, zoom=zoom)
            for seq in sequences:
                img_rel = f"imagesTr/{sid}_{seq}.nii.gz"
                lab_rel = f"labelsTr/{sid}_{seq}.nii.gz"
                im, lb = subj.images[seq], subj.labels[seq]
                im.header, lb.header = _header(im), _header(lb)
                save_volume(im, out / img_rel, overwrite=overwrite)
                save_volume(lb, out / lab_rel, overwrite=overwrite)
                sp = im.spacing
                rows.append(dict(
                    subject=sid, center=c, sequence=seq, field_strength=prof.field_strength, vendor=prof.vendor,
                    image=img_rel, label=lab_rel, seed=s_seed, spacing_x=round(sp[0], 5), spacing_y=round(sp[1], 5),
                    spacing_z=round(sp[2], 5), axcodes="".join(nib.aff2axcodes(im.affine)),
                    oblique_deg=round(oblique_angle(im.affine), 3), pancreas_ml=round(subj.pancreas_volume_ml, 3),
                    generator="evalsim",
                ))  # fmt: skip
            seconds.append(time.perf_counter() - t0)
            done += 1
            if progress is not None:
                progress(done, total, sid)
    df = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    _atomic_text(out / "manifest.csv", df.to_csv(index=False))
    meta = dict(
        generator=GENERATOR, version=GENERATOR_VERSION, seed=int(seed), n_subjects_per_center=int(n_subjects),
        first_index=int(first_index), centers=list(centers), sequences=list(sequences),
        fine_spacing_mm=fine_spacing, zoom=zoom,
        seconds_per_subject=[round(s, 2) for s in seconds],
        center_profiles={c: dict(vendor=CENTERS[c].vendor, model=CENTERS[c].model,
                                 field_strength=CENTERS[c].field_strength, description=CENTERS[c].description,
                                 storage={s: CENTERS[c].protocol(s).storage for s in sequences})
                         for c in centers},
        label_ids="AMOS 1-13 + project extras 16-23 (napari_pandg.labels)",
        independent_of="napari_pandg.phantom (no code or parameters shared)",
    )  # fmt: skip
    _atomic_text(out / "evalsim.json", json.dumps(meta, indent=2))
    return df


def oblique_angle(affine: np.ndarray) -> float:
    """Largest angle (degrees) between a voxel axis and its closest world axis."""
    r = np.asarray(affine)[:3, :3]
    r = r / np.linalg.norm(r, axis=0, keepdims=True)
    return float(np.degrees(np.arccos(np.clip(np.abs(r).max(axis=0).min(), -1, 1))))


def pancreas_world_centroid(label: Volume) -> np.ndarray:
    """RAS world position (mm) of the pancreas centroid of a label volume."""
    idx = np.argwhere(label.array == PANC)
    if len(idx) == 0:
        return np.full(3, np.nan)
    return label.voxel_to_world(idx.mean(axis=0))[0]


__all__ = [
    "GENERATOR_VERSION",
    "EvalSubject",
    "f32",
    "generate_eval_subject",
    "oblique_angle",
    "pancreas_world_centroid",
    "subject_id",
    "subject_seed",
    "write_eval_dataset",
]
