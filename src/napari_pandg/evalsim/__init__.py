"""Independent evaluation simulator: abdominal MRI the training phantom cannot produce.

A second, separately written simulator (pure numpy/scipy/nibabel, deterministic by seed) for
measuring transfer honestly: its own anatomy code with other shape primitives (metaballs,
convex hulls, sphere sweeps, Fourier contours, B-spline free-form deformation), its own
tissue table and signal code (supersampled, complex block-averaged), its own centers
``X1``-``X3`` with RAS / LPS / LAS / slice-first and oblique storage, six sequences
(``t1fs``, ``t1fs_arterial``, ``t1fs_venous``, ``t2``, ``ip``, ``op``). It imports nothing from
:mod:`napari_pandg.phantom`.

>>> from napari_pandg.evalsim import generate_eval_subject, write_eval_dataset
>>> subj = generate_eval_subject("X1_001", center="X1", seed=0)
>>> subj.images["op"].array.shape, subj.labels["op"].affine

See ``docs/evalsim.md``.
"""

from napari_pandg.evalsim.generate import (
    GENERATOR_VERSION,
    EvalSubject,
    generate_eval_subject,
    oblique_angle,
    pancreas_world_centroid,
    subject_id,
    subject_seed,
    write_eval_dataset,
)
from napari_pandg.evalsim.montage import montage, montage_centers
from napari_pandg.evalsim.scanners import CENTERS, SEQUENCES, Center, Protocol

__all__ = [
    "CENTERS",
    "GENERATOR_VERSION",
    "SEQUENCES",
    "Center",
    "EvalSubject",
    "Protocol",
    "generate_eval_subject",
    "montage",
    "montage_centers",
    "oblique_angle",
    "pancreas_world_centroid",
    "subject_id",
    "subject_seed",
    "write_eval_dataset",
]
