"""napari sample data: one phantom subject, all sequences + its label map."""

from __future__ import annotations

from napari_pandg.layerdata import LayerData, prepare_current_viewer, volume_layerdata

SHOWN_SEQUENCE = "t1fs_venous"


def make_phantom_sample(center: str = "A", seed: int = 0) -> list[LayerData]:
    """All five sequences of one phantom subject (aligned in world mm) plus its labels.

    Only ``t1fs_venous`` starts visible; toggle the others in the layer list (they sit at
    the same world position, on their own acquisition grids). The current viewer (if any)
    switches to the radiological view and the labels are drawn as organ outlines.
    """
    from napari_pandg.phantom import SEQUENCES, generate_subject

    subject = generate_subject(f"{center}000", center=center, seed=seed)
    layers: list[LayerData] = []
    for seq in SEQUENCES:
        data, kwargs, kind = volume_layerdata(subject.images[seq])
        kwargs["visible"] = seq == SHOWN_SEQUENCE
        layers.append((data, kwargs, kind))
    layers.append(volume_layerdata(subject.labels[SHOWN_SEQUENCE]))
    prepare_current_viewer(layers)
    return layers
