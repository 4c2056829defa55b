"""napari_pandg.io layouts: dataset index builders on fake trees of tiny NIfTI files."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from napari_pandg.io import (
    INDEX_COLUMNS,
    PandgIOError,
    build_index,
    detect_layout,
    load_case,
    load_totalseg_labels,
    read_index,
    write_index,
)
from napari_pandg.io._reader import napari_get_reader

SHAPE = (4, 5, 3)
AFF = np.diag([1.5, 1.5, 4.0, 1.0])


def nii(path: Path, value: int | None = None, *, label: bool = False, shape=SHAPE, affine=AFF) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if label:
        arr = np.zeros(shape, np.uint8)
        arr[1:3, 1:3, 1] = 1 if value is None else value
    else:
        arr = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    nib.save(nib.Nifti1Image(arr, affine), str(path))
    return path


def rows(df: pd.DataFrame, cols=("subject", "center", "sequence")) -> list[tuple]:
    return sorted(tuple(r) for r in df[list(cols)].itertuples(index=False))


# --------------------------------------------------------------------------- pandg
def make_pandg(root: Path) -> Path:
    recs = []
    for subj, center in (("A_000", "A"), ("B_000", "B")):
        lab = nii(root / subj / "labels.nii.gz", 10, label=True)
        for seq in ("t1", "t2"):
            img = nii(root / subj / f"{seq}.nii.gz")
            recs.append({
                "subject": subj, "center": center, "sequence": seq, "field_strength": 1.5,
                "image": str(img.relative_to(root)), "label": str(lab.relative_to(root)),
            })  # fmt: skip
    pd.DataFrame(recs).to_csv(root / "manifest.csv", index=False)
    return root


def test_pandg_manifest(tmp_path):
    root = make_pandg(tmp_path / "phantom")
    assert detect_layout(root) == "pandg"
    df = build_index(root)
    assert list(df.columns[: len(INDEX_COLUMNS)]) == list(INDEX_COLUMNS)
    assert rows(df) == [("A_000", "A", "t1"), ("A_000", "A", "t2"), ("B_000", "B", "t1"), ("B_000", "B", "t2")]
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in df["image"])
    assert all(Path(p).name == "labels.nii.gz" for p in df["label"])
    assert set(df["layout"]) == {"pandg"}
    assert set(df["label_map"]) == {""}
    assert "field_strength" in df
    # the manifest file itself works too
    assert len(build_index(root / "manifest.csv")) == 4


def test_pandg_manifest_missing_columns(tmp_path):
    (tmp_path / "manifest.csv").write_text("a,b\n1,2\n")
    with pytest.raises(PandgIOError, match="missing columns"):
        build_index(tmp_path)


# --------------------------------------------------------------------------- nnunet
def test_nnunet_center_prefix_pansegdata(tmp_path):
    root = tmp_path / "Task110_PancreasT1"
    for case in ("NYU_0029", "NYU_0030", "MCF_0001"):
        nii(root / "imagesTr" / f"{case}_0000.nii.gz")
        nii(root / "labelsTr" / f"{case}.nii.gz", label=True)
    nii(root / "imagesTs" / "AHN_0100_0000.nii.gz")
    (root / "imagesTr" / "._NYU_0029_0000.nii.gz").write_bytes(b"appledouble")
    assert detect_layout(root) == "nnunet"
    df = build_index(root)
    assert rows(df, ("subject", "center", "split")) == [
        ("AHN_0100", "AHN", "test"), ("MCF_0001", "MCF", "train"),
        ("NYU_0029", "NYU", "train"), ("NYU_0030", "NYU", "train"),
    ]  # fmt: skip
    lab = df.set_index("subject")["label"]
    assert Path(lab["NYU_0029"]).name == "NYU_0029.nii.gz"
    assert lab["AHN_0100"] is None
    assert df.set_index("subject").loc["NYU_0029", "label_map"] == "1:10"
    assert set(df["sequence"]) == {"t1"}  # from the Task folder name


def test_nnunet_multichannel_dataset_json(tmp_path):
    root = tmp_path / "Dataset500_Abd"
    for case in ("pancreas_001", "pancreas_002"):
        nii(root / "imagesTr" / f"{case}_0000.nii.gz")
        nii(root / "imagesTr" / f"{case}_0001.nii.gz")
        nii(root / "labelsTr" / f"{case}.nii.gz", label=True)
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T1", "1": "T2"},
        "labels": {"background": 0, "pancreas": 1, "tumor": 2},
        "file_ending": ".nii.gz",
    }))  # fmt: skip
    df = build_index(root)
    assert rows(df, ("subject", "center", "sequence", "channel")) == [
        ("pancreas_001", "", "t1", 0), ("pancreas_001", "", "t2", 1),
        ("pancreas_002", "", "t1", 0), ("pancreas_002", "", "t2", 1),
    ]  # fmt: skip
    assert set(df["label_map"]) == {"1:10,2:10"}
    # both channels share the case label
    assert df.groupby("subject")["label"].nunique().eq(1).all()


def test_nnunet_channels_without_json(tmp_path):
    root = tmp_path / "raw"
    nii(root / "imagesTr" / "case_001_0000.nii.gz")
    nii(root / "imagesTr" / "case_001_0001.nii.gz")
    df = build_index(root, layout="nnunet")
    assert sorted(df["sequence"]) == ["ch0", "ch1"]
    assert set(df["subject"]) == {"case_001"}
    assert set(df["center"]) == {""}  # a single lowercase prefix is not a center


def test_nnunet_nested_pancreasdg(tmp_path):
    root = tmp_path / "Task310_PancreasT1DG"
    for folder, case in (("EMC", "EMC_001"), ("NU", "NU_004"), ("OutPhaseEMC", "EMC_001"), ("OutPhaseNU", "NU_007")):
        nii(root / "out_of_domain" / folder / "imagesTr" / f"{case}_0000.nii.gz")
        nii(root / "out_of_domain" / folder / "labelsTr" / f"{case}.nii.gz", label=True)
    assert detect_layout(root) == "nnunet"
    df = build_index(root)
    assert rows(df) == [
        ("EMC_001", "EMC", "outphase"), ("EMC_001", "EMC", "t1"),
        ("NU_004", "NU", "t1"), ("NU_007", "NU", "outphase"),
    ]  # fmt: skip
    assert df["label"].notna().all()
    assert set(df["label_map"]) == {"1:10"}
    # labels load remapped to pancreas = 10
    image, label = load_case(df.iloc[0], allowed={0, 10})
    assert sorted(np.unique(label.array)) == [0, 10]
    np.testing.assert_array_equal(label.affine, image.affine)


# --------------------------------------------------------------------------- amos
def make_amos(root: Path) -> Path:
    for split, lab in (("imagesTr", "labelsTr"), ("imagesVa", "labelsVa")):
        for i in ((1, 507, 540) if split == "imagesTr" else (300, 580)):
            nii(root / split / f"amos_{i:04d}.nii.gz")
            nii(root / lab / f"amos_{i:04d}.nii.gz", 10, label=True)
    nii(root / "imagesTs" / "amos_0600.nii.gz")
    pd.DataFrame({
        "amos_id": [1, 507, 540, 580, 600],
        "Manufacturer's Model Name": ["Aquilion", "Prisma", "Ingenia", "Signa HDe", "Prisma"],
        "Manufacturer": ["TOSHIBA", "SIEMENS", "Philips", "GE", "SIEMENS"],
        "Site": ["X", "Y", "Y", "Z", "Y"],
    }).to_csv(root / "labeled_data_meta_0000_0599.csv", index=False)  # fmt: skip
    (root / "dataset.json").write_text("{}")
    return root


def test_amos(tmp_path):
    root = make_amos(tmp_path / "amos22")
    assert detect_layout(root) == "amos"
    df = build_index(root)
    assert rows(df, ("subject", "center", "sequence", "split")) == [
        ("amos_0507", "SIEMENS_Y", "mri", "train"), ("amos_0540", "Philips_Y", "mri", "train"),
        ("amos_0580", "GE_Z", "mri", "val"), ("amos_0600", "SIEMENS_Y", "mri", "test"),
    ]  # fmt: skip
    s = df.set_index("subject")
    assert s.loc["amos_0507", "scanner"] == "Prisma"
    assert s.loc["amos_0600", "label"] is None and bool(s.loc["amos_0600", "ambiguous"])
    assert Path(s.loc["amos_0580", "label"]).parent.name == "labelsVa"
    assert set(df["label_map"]) == {""}
    with_ct = build_index(root, include_ct=True)
    assert {"amos_0001", "amos_0300"} <= set(with_ct["subject"])
    assert with_ct.set_index("subject").loc["amos_0001", "sequence"] == "ct"


def test_amos_ct_only_explains(tmp_path):
    root = tmp_path / "amos_ct"
    nii(root / "imagesTr" / "amos_0001.nii.gz")
    with pytest.raises(PandgIOError, match="ids > 500"):
        build_index(root)


# --------------------------------------------------------------------------- totalseg
def make_totalseg(root: Path) -> Path:
    for case in ("s0001", "s0002", "s0003"):
        nii(root / case / "mri.nii.gz")
        seg = root / case / "segmentations"
        nii(seg / "liver.nii.gz", 1, label=True)
        if case != "s0003":
            nii(seg / "pancreas.nii.gz", 1, label=True)
    # spleen overlapping nothing, pancreas overlaps liver in s0001 (pancreas wins)
    arr = np.zeros(SHAPE, np.uint8)
    arr[0, 0, 0] = 1
    nib.save(nib.Nifti1Image(arr, AFF), str(root / "s0001" / "segmentations" / "spleen.nii.gz"))
    (root / "meta.csv").write_text(
        "image_id;split;institute;manufacturer;scanner_model;field_strength\n"
        "s0001;train;I1;Siemens;Skyra;3\n"
        "s0002;val;I2;GE;Signa;1.5\n"
        "s0003;train;I1;Siemens;Skyra;3\n"
    )
    return root


def test_totalseg(tmp_path):
    root = make_totalseg(tmp_path / "ts_mri")
    assert detect_layout(root) == "totalseg_mri"
    df = build_index(root)
    assert rows(df, ("subject", "center", "sequence", "split")) == [
        ("s0001", "I1", "mri", "train"), ("s0002", "I2", "mri", "val")
    ]
    assert all(Path(p).name == "pancreas.nii.gz" for p in df["label"])
    assert set(df["label_map"]) == {"1:10"}
    s = df.set_index("subject")
    assert s.loc["s0002", "vendor"] == "GE" and str(s.loc["s0002", "field_strength"]) == "1.5"
    assert len(build_index(root, require_pancreas=False)) == 3
    _, label = load_case(df.iloc[0], allowed={0, 10})
    assert sorted(np.unique(label.array)) == [0, 10]


def test_load_totalseg_labels(tmp_path):
    root = make_totalseg(tmp_path / "ts_mri")
    vol = load_totalseg_labels(root / "s0001")
    assert vol.is_label and vol.array.dtype == np.uint8
    assert sorted(np.unique(vol.array)) == [0, 1, 10]  # liver fully covered by pancreas
    assert vol.array[0, 0, 0] == 1
    assert set(vol.metadata["classes"]) == {"liver", "pancreas", "spleen"}
    np.testing.assert_array_equal(vol.affine, nib.load(str(root / "s0001" / "mri.nii.gz")).affine)
    vol3 = load_totalseg_labels(root / "s0003")
    assert sorted(np.unique(vol3.array)) == [0, 6]
    # a mask on another grid is refused
    nii(root / "s0003" / "segmentations" / "spleen.nii.gz", label=True, shape=(4, 5, 4))
    with pytest.raises(PandgIOError, match="shape mismatch"):
        load_totalseg_labels(root / "s0003")


# --------------------------------------------------------------------------- detection / csv
def test_detect_nothing(tmp_path):
    (tmp_path / "random").mkdir()
    nii(tmp_path / "random" / "x.nii.gz")
    with pytest.raises(PandgIOError) as exc:
        detect_layout(tmp_path)
    msg = str(exc.value)
    assert str(tmp_path) in msg
    for what in ("manifest.csv", "mri.nii.gz", "amos_XXXX", "imagesTr"):
        assert what in msg
    with pytest.raises(PandgIOError, match="does not exist"):
        build_index(tmp_path / "missing")
    with pytest.raises(PandgIOError, match="unknown layout"):
        build_index(tmp_path, layout="bids")


def test_write_read_index(tmp_path):
    root = make_amos(tmp_path / "amos22")
    df = build_index(root)
    out = write_index(df, tmp_path / "index.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["amos22", "index.csv"]  # no temp file
    with pytest.raises(FileExistsError, match="overwrite"):
        write_index(df, out)
    write_index(df, out, overwrite=True)
    back = read_index(out)
    assert list(back["subject"]) == list(df["subject"])
    assert list(back["image"]) == list(df["image"])
    assert back["label"].notna().sum() == df["label"].notna().sum() == 3
    assert back.set_index("subject").loc["amos_0600", "label"] is None
    assert set(back["label_map"]) == {""}
    # relative paths in a hand-written index resolve against the CSV folder
    rel = df.copy()
    rel["image"] = [str(Path(p).relative_to(tmp_path)) for p in df["image"]]
    write_index(rel, tmp_path / "rel.csv")
    assert list(read_index(tmp_path / "rel.csv")["image"]) == list(df["image"])
    with pytest.raises(PandgIOError, match="not found"):
        read_index(tmp_path / "none.csv")


def test_reader_opens_dataset_folder(tmp_path):
    root = make_pandg(tmp_path / "phantom")
    reader = napari_get_reader(str(root))
    assert callable(reader)
    with pytest.warns(UserWarning, match="2 subjects"):
        layers = reader(str(root))
    assert [t for _, _, t in layers] == ["image", "image", "labels"]
    names = [kw["name"] for _, kw, _ in layers]
    assert names == ["A_000_t1", "A_000_t2", "A_000_t1_labels"]
    assert layers[0][1]["metadata"]["center"] == "A"


def test_reader_opens_manifest_and_index_csv(tmp_path):
    root = make_pandg(tmp_path / "phantom")
    write_index(build_index(root), tmp_path / "index.csv")
    (tmp_path / "other.csv").write_text("x,y\n1,2\n")
    assert napari_get_reader(str(tmp_path / "other.csv")) is None
    for csv_path in (root / "manifest.csv", tmp_path / "index.csv"):
        reader = napari_get_reader(str(csv_path))
        assert callable(reader), csv_path
        with pytest.warns(UserWarning, match="2 subjects"):
            layers = reader(str(csv_path))
        assert [t for _, _, t in layers] == ["image", "image", "labels"]
