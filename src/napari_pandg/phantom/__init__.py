"""Physics-based multi-sequence, multi-center abdominal MRI phantom (pure numpy/scipy).

>>> from napari_pandg.phantom import generate_subject
>>> subj = generate_subject("A001", center="A", seed=0)
>>> subj.images["op"].array.shape, subj.labels["op"].array.dtype

See ``docs/phantom.md`` for what is modelled.
"""

from napari_pandg.phantom.centers import CENTERS, SEQUENCES, CenterProfile, SequenceProtocol
from napari_pandg.phantom.generate import (
    GENERATOR_VERSION,
    PhantomSubject,
    generate_subject,
    subject_seed,
    write_dataset,
)
from napari_pandg.phantom.montage import montage, montage_centers
from napari_pandg.phantom.variation import AnatomyVariation, sample_variation

__all__ = [
    "CENTERS",
    "AnatomyVariation",
    "GENERATOR_VERSION",
    "SEQUENCES",
    "CenterProfile",
    "PhantomSubject",
    "SequenceProtocol",
    "generate_subject",
    "montage",
    "montage_centers",
    "sample_variation",
    "subject_seed",
    "write_dataset",
]
