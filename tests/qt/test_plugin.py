"""The npe2 manifest: validation, reader, writer and sample data through napari itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from napari_pandg.labels import PANCREAS


def test_manifest_validates() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", "napari-pandg"], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "valid" in (res.stdout + res.stderr)


def test_reader_opens_image_and_label_in_world_mm(make_napari_viewer, phantom_index: pd.DataFrame) -> None:
    viewer = make_napari_viewer()
    row = phantom_index.iloc[0]
    layers = viewer.open(row["image"], plugin="napari-pandg")
    lab_layers = viewer.open(row["label"], plugin="napari-pandg")
    assert layers[0].__class__.__name__ == "Image"
    assert lab_layers[0].__class__.__name__ == "Labels"
    img = nib.load(row["image"])
    spacing = sorted(float(z) for z in img.header.get_zooms()[:3])
    np.testing.assert_allclose(sorted(np.abs(layers[0].scale)), spacing, rtol=1e-5)
    np.testing.assert_allclose(layers[0].scale, lab_layers[0].scale)
    np.testing.assert_allclose(layers[0].translate, lab_layers[0].translate)
    assert tuple(layers[0].axis_labels) == ("S", "A", "R")
    assert PANCREAS in np.unique(lab_layers[0].data)


def test_writer_round_trip_is_exact(make_napari_viewer, phantom_index: pd.DataFrame, tmp_path: Path) -> None:
    viewer = make_napari_viewer()
    row = phantom_index[phantom_index["center"] == "B"].iloc[0]  # center B: LPS-like affine
    (lab,) = viewer.open(row["label"], plugin="napari-pandg")
    lab.data[lab.data == PANCREAS] = 0  # an edit
    out = tmp_path / "edited.nii.gz"
    written = lab.save(str(out), plugin="napari-pandg")
    assert written and Path(written[0]).exists()
    src, new = nib.load(row["label"]), nib.load(out)
    np.testing.assert_array_equal(new.affine, src.affine)
    assert new.shape == src.shape
    expected = np.asarray(src.dataobj).copy()
    expected[expected == PANCREAS] = 0
    np.testing.assert_array_equal(np.asarray(new.dataobj), expected)
    assert int(new.header["sform_code"]) == int(src.header["sform_code"])


def test_sample_data_all_sequences_and_labels(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    viewer.open_sample("napari-pandg", "phantom_subject")
    names = [ly.name for ly in viewer.layers]
    for seq in ("t1fs", "t1fs_venous", "t2", "ip", "op"):
        assert any(n.endswith(seq) for n in names), names
    labels = [ly for ly in viewer.layers if ly.__class__.__name__ == "Labels"]
    assert len(labels) == 1 and PANCREAS in np.unique(labels[0].data)


def test_reader_declines_other_files_quietly(tmp_path: Path) -> None:
    from napari_pandg.io._reader import napari_get_reader

    p = tmp_path / "notes.txt"
    p.write_text("hello")
    assert napari_get_reader(str(p)) is None
