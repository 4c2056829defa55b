"""Public entry points: :func:`generate_subject` and :func:`write_dataset`."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_pandg.phantom import tissues as T
from napari_pandg.phantom.acquisition import (
    acquire,
    acquisition_geometry,
    b0_map,
    b1_index,
    b1_map,
    coil_sensitivity,
    fine_signal,
    psf_matrices,
    reference_signal,
    resample_labels,
    sample_fields,
)
from napari_pandg.phantom.anatomy import Anatomy, build_anatomy
from napari_pandg.phantom.centers import CENTERS, SEQUENCES
from napari_pandg.phantom.variation import AnatomyVariation, sample_variation
from napari_pandg.volume import Volume

#: 1.1: pancreas T1 520 / 700 ms (iso/hyperintense to liver on t1fs); anatomy randomisation
GENERATOR_VERSION = "1.1"
_SEQ_INDEX = {s: i for i, s in enumerate(SEQUENCES)}
_CENTER_INDEX = {c: i for i, c in enumerate(sorted(CENTERS))}


@dataclass
class PhantomSubject:
    """All sequences of one phantom subject at one center (same anatomy, same world frame)."""

    subject: str
    center: str
    seed: int
    images: dict[str, Volume] = field(default_factory=dict)
    labels: dict[str, Volume] = field(default_factory=dict)
    pancreas_volume_ml: float = 0.0
    params: dict = field(default_factory=dict)


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *keys]))


def generate_subject(
    subject: str,
    center: str = "A",
    sequences: Sequence[str] = SEQUENCES,
    seed: int = 0,
    fine_spacing: float = 1.5,
    target_shape: tuple[int, int, int] | None = None,
    variation: AnatomyVariation | None = None,
    anatomy: Anatomy | None = None,
) -> PhantomSubject:
    """Simulate one subject at one center for the requested sequences.

    The anatomy and physiology depend only on ``seed`` (the same seed at two centers is the
    same person scanned twice); fields, noise and protocol depend on the center. Deterministic:
    the same arguments give bit-identical arrays. ``target_shape`` overrides the acquisition
    matrix (i, j, k) while keeping the center's field of view. ``variation``
    (:func:`napari_pandg.phantom.variation.sample_variation`) randomises the anatomy far beyond
    the default family (organ sizes, positions, shapes, habitus, absent organs, atrophy, fat).
    ``anatomy``: an already built :class:`~napari_pandg.phantom.anatomy.Anatomy` of this seed
    (e.g. shared with random-contrast renderings); then ``variation``/``fine_spacing`` are its own.
    """
    if center not in CENTERS:
        raise KeyError(f"unknown center {center!r}; choose from {', '.join(CENTERS)}")
    bad = [s for s in sequences if s not in SEQUENCES]
    if bad:
        raise KeyError(f"unknown sequence(s) {bad}; choose from {', '.join(SEQUENCES)}")
    if not 0.5 <= fine_spacing <= 4.0:
        raise ValueError(f"fine_spacing must be within 0.5-4 mm, got {fine_spacing}")
    prof = CENTERS[center]
    anat = anatomy if anatomy is not None else build_anatomy(_rng(seed, 1), fine_spacing, variation)
    fine_spacing = float(anat.spacing)
    traits = T.sample_subject_traits(_rng(seed, 2))
    tp0 = T.sample_tissue_params(_rng(seed, 3), prof.field_strength, traits)
    fields = sample_fields(_rng(seed, 4, _CENTER_INDEX[center]))
    b1 = b1_map(anat, prof, fields["b1"])
    b0 = b0_map(anat, prof, fields["b0"])
    idx = b1_index(anat, b1)

    out = PhantomSubject(subject=subject, center=center, seed=int(seed),
                         pancreas_volume_ml=float(anat.pancreas_ml))
    out.params = dict(anatomy=anat.params, traits={k: v for k, v in traits.items() if k != "jitter"})
    label_cache: dict = {}
    sos_cache: dict = {}
    for seq in sequences:
        proto = prof.protocol(seq)
        tp = tp0.post_contrast() if seq == "t1fs_venous" else tp0
        geom = acquisition_geometry(prof, proto, anat.body, target_shape)
        sig = fine_signal(anat, tp, proto, b1, b0, idx)
        gkey = (geom["shape"], tuple(np.round(geom["affine"].ravel(), 6)))
        if gkey not in sos_cache:
            sos = coil_sensitivity(geom, anat.body, prof, fields["coil_jitter"])
            sos_cache[gkey] = (sos, (sos ** np.float32(-prof.bias_normalize)).astype(np.float32))
        # gain reference: pre-contrast liver (t1fs_venous), in-phase liver (ip/op)
        ref_proto = prof.protocol("ip") if seq in ("ip", "op") else proto
        s_gain = reference_signal(tp0, ref_proto)
        s_noise = reference_signal(tp0, proto)  # noise level set by the pre-contrast liver
        img = acquire(anat, sig, geom, proto, prof, sos_cache[gkey][0], s_noise, s_gain,
                      _rng(seed, 5, _CENTER_INDEX[center], _SEQ_INDEX[seq]),
                      sos_norm=sos_cache[gkey][1])
        del sig
        lkey = (gkey, round(geom["thickness"], 4))
        if lkey not in label_cache:
            label_cache[lkey] = resample_labels(anat.label, psf_matrices(anat, geom, proto, True))
        lab = label_cache[lkey]
        meta = dict(
            field_strength=prof.field_strength, vendor=prof.vendor, model=prof.model,
            sequence_name=proto.vendor_name, kind=proto.kind, TR=proto.tr, TE=proto.te,
            flip=proto.flip, slice_thickness=geom["thickness"], acquired_resolution=geom["res"],
            orientation=prof.orientation, phantom=True, seed=int(seed),
            generator_version=GENERATOR_VERSION, fine_spacing=fine_spacing,
            anatomy_variation=variation is not None or "variation" in anat.params,
        )
        out.images[seq] = Volume(img, geom["affine"].copy(), subject=subject, center=center,
                                 sequence=seq, is_label=False, metadata=dict(meta))
        out.labels[seq] = Volume(lab.copy(), geom["affine"].copy(), subject=subject, center=center,
                                 sequence=seq, is_label=True, metadata=dict(meta))
    return out


# ----------------------------------------------------------------------------- dataset
def _atomic_save(img, path: Path) -> None:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".nii.gz", dir=path.parent)
    os.close(fd)
    try:
        nib.save(img, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _to_nifti(vol: Volume):
    import nibabel as nib

    arr = vol.array.astype(np.uint8 if vol.is_label else np.float32)
    img = nib.Nifti1Image(arr, vol.affine)
    img.set_qform(vol.affine, code=1)
    img.set_sform(vol.affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_data_dtype(np.uint8 if vol.is_label else np.float32)
    descr = f"pandg phantom {vol.subject} {vol.center} {vol.sequence}"[:79]
    img.header["descrip"] = descr.encode()
    return img


def subject_seed(seed: int, center: str, index: int) -> int:
    """Per-subject seed derived deterministically from (seed, center, index)."""
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 1000 + _CENTER_INDEX.get(center, ord(center[0])), int(index)])
    return int(ss.generate_state(1, dtype=np.uint32)[0])


def write_dataset(
    out_dir,
    n_subjects: int,
    centers: Sequence[str] = ("A", "B", "C", "D"),
    sequences: Sequence[str] = SEQUENCES,
    seed: int = 0,
    overwrite: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
    fine_spacing: float = 1.5,
    first_index: int = 1,
    variation: float = 0.0,
):
    """Write ``n_subjects`` per center as NIfTI + ``manifest.csv`` + ``phantom.json``.

    Layout: ``DIR/imagesTr/<subject>_<sequence>.nii.gz`` (float32) and
    ``DIR/labelsTr/<subject>_<sequence>.nii.gz`` (uint8, AMOS ids); subject ids are
    ``<center><index:03d>`` (e.g. ``A001``), indices ``first_index .. first_index + n - 1``.
    Give an independent test set its own ``first_index`` (e.g. 101) as well as its own seed,
    so that its subject ids never collide with a training set's. ``variation`` > 0 draws each
    subject's anatomy with :func:`~napari_pandg.phantom.variation.sample_variation` at that
    strength (1 = the full published ranges). Returns the manifest.
    """
    import pandas as pd

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(
            f"output directory {out} is not empty; choose an empty directory or pass "
            f"overwrite=True (CLI: --overwrite) to write into it"
        )
    bad_c = [c for c in centers if c not in CENTERS]
    if bad_c:
        raise KeyError(f"unknown center(s) {bad_c}; choose from {', '.join(CENTERS)}")
    bad_s = [s for s in sequences if s not in SEQUENCES]
    if bad_s:
        raise KeyError(f"unknown sequence(s) {bad_s}; choose from {', '.join(SEQUENCES)}")
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
    for c in centers:
        prof = CENTERS[c]
        for i in range(first_index, first_index + n_subjects):
            sid = f"{c}{i:03d}"
            s_seed = subject_seed(seed, c, i)
            var = sample_variation(_rng(s_seed, 9), variation) if variation > 0 else None
            subj = generate_subject(sid, c, tuple(sequences), seed=s_seed, fine_spacing=fine_spacing,
                                    variation=var)  # fmt: skip
            for seq in sequences:
                img_rel = f"imagesTr/{sid}_{seq}.nii.gz"
                lab_rel = f"labelsTr/{sid}_{seq}.nii.gz"
                _atomic_save(_to_nifti(subj.images[seq]), out / img_rel)
                _atomic_save(_to_nifti(subj.labels[seq]), out / lab_rel)
                sp = subj.images[seq].spacing
                rows.append(dict(
                    subject=sid, center=c, sequence=seq, field_strength=prof.field_strength,
                    vendor=prof.vendor, image=img_rel, label=lab_rel, seed=s_seed,
                    spacing_x=sp[0], spacing_y=sp[1], spacing_z=sp[2],
                    pancreas_ml=round(subj.pancreas_volume_ml, 3),
                ))
            done += 1
            if progress is not None:
                progress(done, total, sid)
    df = pd.DataFrame(rows, columns=["subject", "center", "sequence", "field_strength", "vendor",
                                     "image", "label", "seed", "spacing_x", "spacing_y",
                                     "spacing_z", "pancreas_ml"])
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".csv", dir=out)
    os.close(fd)
    df.to_csv(tmp, index=False)
    os.replace(tmp, out / "manifest.csv")
    meta = dict(
        generator="napari_pandg.phantom", version=GENERATOR_VERSION, seed=int(seed),
        n_subjects_per_center=int(n_subjects),
        first_index=int(first_index), centers=list(centers), sequences=list(sequences),
        fine_spacing_mm=fine_spacing, anatomy_variation=float(variation),
        center_profiles={c: dict(vendor=CENTERS[c].vendor, model=CENTERS[c].model,
                                 field_strength=CENTERS[c].field_strength,
                                 orientation=CENTERS[c].orientation,
                                 description=CENTERS[c].description) for c in centers},
        label_ids="AMOS 1-13 + phantom extras 16-23 (napari_pandg.labels)",
    )
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".json", dir=out)
    with os.fdopen(fd, "w") as f:
        json.dump(meta, f, indent=2)
    os.replace(tmp, out / "phantom.json")
    return df
