"""Tests of the independent evaluation simulator (napari_pandg.evalsim): independence from the
training phantom, determinism, anatomy, geometry / orientations, dataset layout, physics."""

from __future__ import annotations

import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_pandg.evalsim import (
    CENTERS,
    SEQUENCES,
    generate_eval_subject,
    oblique_angle,
    pancreas_world_centroid,
    write_eval_dataset,
)
from napari_pandg.evalsim.anatomy import build_anatomy
from napari_pandg.evalsim.render import reference_signal, storage_matrix, thick_slice_weights, to_storage
from napari_pandg.evalsim.tissues import sample_props, sample_traits
from napari_pandg.labels import PANCREAS

FINE = 2.5  # anatomy grid of the test subjects (1.25 mm by default)
ZOOM = 2.0  # acquisition grids 2x coarser than the centers' (same field of view)


@pytest.fixture(scope="module")
def subjects():
    """One test-size subject per center (same seed: the same person scanned at X1, X2, X3)."""
    return {c: generate_eval_subject(f"{c}_901", c, seed=11, fine_spacing=FINE, zoom=ZOOM, keep_anatomy=True)
            for c in CENTERS}  # fmt: skip


def _roi(subj, seq, lab_id, erode=1):
    m = subj.labels[seq].array == lab_id
    if erode:
        m = ndi.binary_erosion(m, iterations=erode)
    assert m.sum() >= 5, f"label {lab_id} too small on {subj.center} {seq}"
    return float(np.median(subj.images[seq].array[m]))


# --------------------------------------------------------------------------- independence
def test_does_not_import_the_training_phantom():
    code = (
        "import sys\n"
        "import napari_pandg.evalsim as e\n"
        "from napari_pandg.evalsim import generate_eval_subject, write_eval_dataset, montage\n"
        "import napari_pandg.io\n"
        "s = generate_eval_subject('X1_001', 'X1', 0, sequences=('t1fs', 'op'), fine_spacing=4.0, zoom=4.0)\n"
        "bad = sorted(m for m in sys.modules if m.startswith('napari_pandg.phantom'))\n"
        "assert not bad, bad\n"
        "assert 'torch' not in sys.modules\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith("ok")


def test_no_phantom_reference_in_source():
    from pathlib import Path

    import napari_pandg.evalsim as ev

    for f in Path(ev.__file__).parent.glob("*.py"):
        text = f.read_text()
        assert "from napari_pandg.phantom" not in text and "import napari_pandg.phantom" not in text, f


# --------------------------------------------------------------------------- determinism
def test_deterministic_by_seed():
    kw = dict(sequences=("t1fs_venous", "op"), fine_spacing=4.0, zoom=3.0)
    a = generate_eval_subject("X3_001", "X3", 5, **kw)
    b = generate_eval_subject("X3_001", "X3", 5, **kw)
    c = generate_eval_subject("X3_001", "X3", 6, **kw)
    for s in kw["sequences"]:
        assert np.array_equal(a.images[s].array, b.images[s].array)
        assert np.array_equal(a.labels[s].array, b.labels[s].array)
        assert np.array_equal(a.images[s].affine, b.images[s].affine)
        assert not np.array_equal(a.labels[s].array, c.labels[s].array)


# --------------------------------------------------------------------------- anatomy
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_anatomy_labels_and_pancreas_volume(seed):
    anat = build_anatomy(np.random.default_rng(seed), spacing=3.0)
    present = set(np.unique(anat.label).tolist())
    required = {0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 13, 16, 17, 18, 19, 20, 21, 22, 23}
    assert required <= present, f"missing {sorted(required - present)}"
    assert present <= {0, *range(1, 14), *range(16, 24)}
    assert 40.0 <= anat.pancreas_ml <= 120.0
    # layout: liver right (+x), spleen left, aorta left of the IVC, both anterior to the spine
    c = {k: anat.centroid(k) for k in (1, 6, 8, 9, 10, 17)}
    assert c[6][0] > 30 and c[1][0] < -40
    assert c[8][0] < c[9][0]
    assert c[8][1] > c[17][1] and c[9][1] > c[17][1]
    # pancreas anterior to the aorta, head (right part) lower than the tail (left part)
    idx = np.argwhere(anat.label == PANCREAS)
    w = anat.grid.origin + anat.grid.h * idx
    assert np.median(w[:, 1]) > c[8][1]
    right, left = w[w[:, 0] > np.percentile(w[:, 0], 80)], w[w[:, 0] < np.percentile(w[:, 0], 20)]
    assert right[:, 2].mean() < left[:, 2].mean() + 5


def test_subject_labels(subjects):
    for subj in subjects.values():
        for s in SEQUENCES:
            ids = set(np.unique(subj.labels[s].array).tolist())
            assert {1, 6, 8, 10, 13, 17, 20, 21} <= ids, (subj.center, s, ids)
            assert subj.labels[s].array.dtype == np.uint8
            assert subj.images[s].array.dtype == np.float32
            assert np.isfinite(subj.images[s].array).all()


# --------------------------------------------------------------------------- geometry
def test_storage_orientations(subjects):
    seen = set()
    for c, subj in subjects.items():
        for s in SEQUENCES:
            img, lab = subj.images[s], subj.labels[s]
            proto = CENTERS[c].protocol(s)
            assert img.shape == lab.shape and np.array_equal(img.affine, lab.affine)
            codes = "".join(nib.aff2axcodes(img.affine))
            assert codes == proto.storage, (c, s, codes)
            seen.add(codes)
            # affines are float32-exact (what NIfTI's sform stores)
            assert np.array_equal(img.affine, img.affine.astype(np.float32).astype(np.float64))
    assert {"RAS", "LPS", "LAS"} <= seen
    assert any(codes[0] in "SI" for codes in seen), "no slice-first (permuted) storage"
    x2 = subjects["X2"].images["t1fs"]
    assert "".join(nib.aff2axcodes(x2.affine))[0] in "SI" and x2.shape[0] < x2.shape[1]
    assert 4.0 < oblique_angle(subjects["X1"].images["t2"].affine) < 10.0
    assert oblique_angle(subjects["X1"].images["t1fs"].affine) < 1e-3


def test_storage_transform_is_exact():
    rng = np.random.default_rng(0)
    arr = rng.random((5, 6, 7)).astype(np.float32)
    aff = np.diag([1.5, 1.2, 3.0, 1.0])
    aff[:3, 3] = (-10, 20, 5)
    for codes in ("RAS", "LPS", "LAS", "IPL", "SAR", "PIR"):
        st, st_aff = to_storage(arr, aff, codes)
        assert "".join(nib.aff2axcodes(st_aff)) == codes
        _, _, m = storage_matrix(arr.shape, codes)
        # every stored voxel sits at the world position of the same canonical voxel
        for ijk in ((0, 0, 0), (1, 2, 3), tuple(s - 1 for s in st.shape)):
            c_idx = (m @ np.array([*ijk, 1.0]))[:3].round().astype(int)
            assert st[ijk] == arr[tuple(c_idx)]
            assert np.allclose(st_aff @ np.array([*ijk, 1.0]), aff @ np.array([*c_idx, 1.0]))


def test_pancreas_world_position_consistent(subjects):
    """Every series of a subject (RAS, LPS, LAS, slice-first, oblique) places the pancreas at the
    fine anatomy's RAS position; acquired pancreas voxels map (by the affine) into the gland."""
    for subj in subjects.values():
        anat = subj.anatomy
        truth = anat.centroid(PANCREAS)
        cents = []
        for s in SEQUENCES:
            lab = subj.labels[s]
            c = pancreas_world_centroid(lab)
            cents.append(c)
            tol = 0.6 * max(lab.spacing)
            assert np.all(np.abs(c - truth) < max(tol, 3.0)), (subj.center, s, c, truth)
            idx = np.argwhere(lab.array == PANCREAS)
            w = lab.voxel_to_world(idx)
            f = np.rint((w - anat.grid.origin) / anat.grid.h).astype(int)
            f = np.clip(f, 0, np.array(anat.label.shape) - 1)
            hit = anat.label[f[:, 0], f[:, 1], f[:, 2]] == PANCREAS
            assert hit.mean() > 0.6, (subj.center, s, hit.mean())
        cents = np.array(cents)
        assert np.all(cents.max(axis=0) - cents.min(axis=0) < 6.0)


def test_thick_slice_weights():
    for q in (1.5, 2.0, 2.4, 3.0):
        w = thick_slice_weights(q)
        assert len(w) % 2 == 1 and np.isclose(w.sum(), 1.0) and np.allclose(w, w[::-1])


# --------------------------------------------------------------------------- physics
@pytest.mark.parametrize("field", [1.5, 3.0])
def test_signal_model_relations(field):
    """Noise-free tissue signals of each center's protocols at its field strength."""
    props = sample_props(np.random.default_rng(1), field, sample_traits(np.random.default_rng(2)))
    for c in CENTERS.values():
        if c.field_strength != field:
            continue

        def sig(seq, tissue):
            return reference_signal(props, c.protocol(seq), seq, tissue)

        # T1 fat-sat (pre-contrast): pancreas iso- to hyperintense to liver; fluid dark
        assert sig("t1fs", "pancreas") >= 0.95 * sig("t1fs", "liver")
        assert sig("t1fs", "gi_fluid") < 0.6 * sig("t1fs", "liver")
        # arterial: aorta > pancreas > liver; pancreas enhances more than liver; cortex > medulla
        assert sig("t1fs_arterial", "arterial_blood") > sig("t1fs_arterial", "pancreas") > sig("t1fs_arterial", "liver")
        assert (sig("t1fs_arterial", "pancreas") / sig("t1fs", "pancreas")
                > sig("t1fs_arterial", "liver") / sig("t1fs", "liver"))  # fmt: skip
        assert sig("t1fs_arterial", "renal_cortex") > 1.3 * sig("t1fs_arterial", "renal_medulla")
        # venous: portal vein bright, brighter than in the arterial phase
        assert sig("t1fs_venous", "portal_blood") > 1.3 * sig("t1fs_venous", "liver")
        assert sig("t1fs_venous", "portal_blood") > sig("t1fs_arterial", "portal_blood")
        # T2: CSF > spleen > pancreas, liver darker than spleen, flow voids
        assert sig("t2", "csf") > 1.5 * sig("t2", "spleen") > 1.5 * sig("t2", "pancreas")
        assert sig("t2", "liver") < sig("t2", "spleen")
        assert sig("t2", "arterial_blood") < sig("t2", "spleen")
        # in / opposed phase: marrow (FF 0.3-0.6) drops on OP, lean organs do not
        assert sig("op", "marrow") < 0.7 * sig("ip", "marrow")
        assert sig("op", "spleen") > 0.85 * sig("ip", "spleen")


def test_image_contrasts(subjects):
    for c, subj in subjects.items():
        assert _roi(subj, "t1fs", 10) >= 0.9 * _roi(subj, "t1fs", 6), c
        assert _roi(subj, "t2", 1) > _roi(subj, "t2", 10), c
        assert _roi(subj, "t2", 6) < _roi(subj, "t2", 1), c
        art = subj.images["t1fs_arterial"].array
        assert _roi(subj, "t1fs_arterial", 8) > _roi(subj, "t1fs_arterial", 10) > _roi(subj, "t1fs_arterial", 6), c
        # fluid is the brightest thing on T2: top percentile far above the spleen
        body = subj.labels["t2"].array > 0
        assert np.percentile(subj.images["t2"].array[body], 99.8) > 1.5 * _roi(subj, "t2", 1), c
        assert art.max() > 0


def test_opposed_phase_india_ink(subjects):
    """Voxels on the pancreas / fat boundary lose signal on OP relative to IP (sub-voxel
    water-fat cancellation in the complex domain); the gland's interior does not."""
    for c, subj in subjects.items():
        lab = subj.labels["op"].array
        ip, op = subj.images["ip"].array, subj.images["op"].array
        panc = lab == PANCREAS
        fat = lab == 21
        edge = panc & ndi.binary_dilation(fat)
        inner = ndi.binary_erosion(panc)
        assert edge.sum() > 10 and inner.sum() > 3, c
        r_edge = np.median(op[edge] / np.maximum(ip[edge], 1e-6))
        r_inner = np.median(op[inner] / np.maximum(ip[inner], 1e-6))
        assert r_edge < r_inner - 0.05, (c, r_edge, r_inner)


# --------------------------------------------------------------------------- dataset
def test_write_eval_dataset_is_indexed(tmp_path):
    from napari_pandg.io import build_index, load_case

    out = tmp_path / "evalsim"
    seqs = ("t1fs_venous", "t2", "op")
    df = write_eval_dataset(out, n_subjects=1, centers=("X1", "X2"), sequences=seqs, seed=3,
                            fine_spacing=4.0, zoom=3.0)  # fmt: skip
    assert len(df) == 6 and set(df["subject"]) == {"X1_001", "X2_001"}
    assert (out / "manifest.csv").is_file() and (out / "evalsim.json").is_file()
    assert not any(p.name.startswith(".") for p in (out / "imagesTr").iterdir())
    idx = build_index(out / "manifest.csv")
    assert set(idx["layout"]) == {"pandg"} and len(idx) == 6
    assert set(idx["sequence"]) == set(seqs) and set(idx["center"]) == {"X1", "X2"}
    for _, row in idx.iterrows():
        img, lab = load_case(row)
        assert lab is not None and img.shape == lab.shape
        assert PANCREAS in np.unique(lab.array)
        assert "".join(nib.aff2axcodes(img.affine)) == row["axcodes"]
    assert build_index(out)["image"].tolist() == idx["image"].tolist()
    with pytest.raises(FileExistsError):
        write_eval_dataset(out, n_subjects=1, centers=("X1",), sequences=("op",), fine_spacing=4.0, zoom=3.0)
    write_eval_dataset(out, n_subjects=1, centers=("X1",), sequences=("op",), fine_spacing=4.0, zoom=3.0,
                       overwrite=True)  # fmt: skip
    with pytest.raises(KeyError):
        write_eval_dataset(tmp_path / "x", n_subjects=1, centers=("A",))


def test_cli_synth_eval(tmp_path, capsys):
    from napari_pandg.cli import main

    out = tmp_path / "cli"
    args = ["synth-eval", "--out", str(out), "--subjects", "1", "--centers", "X3", "--sequences", "t1fs,ip",
            "--seed", "2", "--fine-spacing", "4", "--zoom", "3"]  # fmt: skip
    assert main(args) == 0
    assert "wrote 1 subjects, 2 volumes" in capsys.readouterr().out
    assert main(args) == 2  # non-empty folder without --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    with pytest.raises(SystemExit):
        main(["synth-eval", "--out", str(tmp_path / "y"), "--centers", "A"])
