"""Center x sequence benchmark: tiny NIfTI cases, tiny models with known outputs."""

from __future__ import annotations

import base64
import re
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")
nib = pytest.importorskip("nibabel")

from napari_pandg import benchmark as bm  # noqa: E402
from napari_pandg.benchmark import (  # noqa: E402
    PER_CASE_COLUMNS,
    domain_shift,
    model_subject_splits,
    run_benchmark,
    run_benchmark_cli,
)
from napari_pandg.io import load_case, load_volume, read_index  # noqa: E402
from napari_pandg.labels import PANCREAS  # noqa: E402
from napari_pandg.metrics import max_distance, segmentation_metrics  # noqa: E402
from napari_pandg.models import (  # noqa: E402
    ModelDescription,
    ModelNotFoundError,
    SegModel,
    build_model,
    save_checkpoint,
)

SHAPE = (16, 16, 8)
SPACING = (2.0, 2.0, 3.0)
TINY = {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0, "norm": "instance"}
SUBJECTS = {"A001": "A", "A002": "A", "A003": "A", "B001": "B", "B002": "B"}
SEQUENCES = ("s1", "s2")


# --------------------------------------------------------------------------- data
def _write_dataset(root: Path) -> Path:
    """5 subjects x 2 sequences, 16x16x8 voxels; B002/s2 stores the pancreas as 1 (label_map 1:10);
    A003/s1 is listed twice (same image) to exercise the prediction cache."""
    (root / "img").mkdir(parents=True)
    (root / "lab").mkdir()
    aff = np.diag([*SPACING, 1.0])
    rng = np.random.default_rng(0)
    rows = []
    for k, (subject, center) in enumerate(SUBJECTS.items()):
        for q, seq in enumerate(SEQUENCES):
            img = (100 + 20 * rng.standard_normal(SHAPE)).astype(np.float32)
            lab = np.zeros(SHAPE, np.uint8)
            lab[2:12, 2:12, 1:7] = 1  # "liver"
            s = 3 + k % 3 + q  # pancreas size differs per case, so Dice values differ
            lab[4 : 4 + s, 5 : 5 + s, 2:5] = PANCREAS
            label_map = ""
            if subject == "B002" and seq == "s2":
                lab = np.where(lab == PANCREAS, 1, np.where(lab == 1, 6, 0)).astype(np.uint8)
                label_map = "1:10,6:1"
            ip, lp = root / "img" / f"{subject}_{seq}.nii.gz", root / "lab" / f"{subject}_{seq}.nii.gz"
            nib.save(nib.Nifti1Image(img, aff), ip)
            nib.save(nib.Nifti1Image(lab, aff), lp)
            rows.append({"subject": subject, "center": center, "sequence": seq, "image": f"img/{ip.name}",
                         "label": f"lab/{lp.name}", "layout": "pandg", "split": "test", "label_map": label_map})  # fmt: skip
    rows.append(dict(rows[4]))  # A003 / s1 again
    # an unlabelled image is ignored
    rows.append({**rows[0], "subject": "A009", "label": ""})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_dataset(tmp_path_factory.mktemp("bench") / "data")


@pytest.fixture(scope="module")
def truth(manifest: Path) -> dict[str, object]:
    """image path -> ground-truth Volume (label_map applied, on the image grid)."""
    df = read_index(manifest)
    return {r["image"]: load_case(r)[1] for r in df.to_dict("records") if r["label"]}


def _desc(name: str, centers=("A",), sequences=("s1",), **kw) -> ModelDescription:
    return ModelDescription(
        name=name, architecture="UNet", arch_kwargs=dict(TINY), spacing=SPACING, patch_size=(16, 16, 8),
        domains={"centers": list(centers), "sequences": list(sequences)}, method=kw.pop("method", "erm"),
        command=f"pandg train {name}.yaml", val_metrics={"dice": 0.7}, **kw,
    )  # fmt: skip


def _constant_ckpt(path: Path, desc: ModelDescription, pancreas: bool) -> Path:
    """A real UNet whose weights are zero and whose last bias picks one class everywhere."""
    torch.manual_seed(0)
    net = build_model(desc)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        last = [k for k, _ in net.named_parameters()][-1]
        net.get_parameter(last).copy_(torch.tensor([-5.0, 5.0] if pancreas else [5.0, -5.0]))
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(path, desc, net.eval())


def _split_ckpt(folder: Path, name: str = "erm_A_s1") -> Path:
    """A run folder: best.pt + split.csv (A001/B001 train, A002 val, A003/B002 test)."""
    ck = _constant_ckpt(folder / "best.pt", _desc(name), pancreas=True)
    split = {"A001": "train", "A002": "val", "A003": "test", "B001": "train", "B002": "test"}
    pd.DataFrame(sorted(split.items()), columns=["subject", "split"]).to_csv(folder / "split.csv", index=False)
    return ck


@pytest.fixture
def oracle(monkeypatch: pytest.MonkeyPatch, truth):
    """segment_volume replaced by the ground truth (Dice 1); counts the calls."""
    calls: list[tuple[str, str]] = []

    def fake(model, vol, progress=None, cancel=None, device=None):
        calls.append((model.name, str(vol.source_path)))
        gt = truth[str(vol.source_path)]
        return vol.with_array(gt.array.copy(), is_label=True, source_path=None)

    monkeypatch.setattr(bm, "segment_volume", fake)
    return calls


# --------------------------------------------------------------------------- tests
def test_oracle_outputs_exclusion_and_cache(tmp_path: Path, manifest: Path, oracle):
    ck = _split_ckpt(tmp_path / "runs" / "erm_A_s1")
    seen = []
    res = run_benchmark(manifest, [str(ck)], tmp_path / "out", device="cpu",
                        progress=lambda d, t, s: seen.append((d, t)))  # fmt: skip
    pc = res.per_case
    assert list(pc.columns) == list(PER_CASE_COLUMNS)
    # A001 (train, has an A/s1 image) and A002 (val) are excluded; B001 is in the train split
    # but never loaded by a center-A model, so it is scored
    assert res.excluded == {"erm_A_s1": ["A001", "A002"]}
    assert "split.csv" in res.split_sources["erm_A_s1"]
    assert set(pc["subject"]) == {"A003", "B001", "B002"} and len(pc) == 7  # A003/s1 twice
    # split.csv gives ids only: nobody scored is a confirmed training subject, so no split is
    # claimed for them; the evidence names the id's split
    assert (pc["seen_in_training"] == "no").all()
    assert (pc["model_split"] == "").all()
    ev = dict(zip(pc["subject"], pc["seen_evidence"], strict=False))
    assert "(test split)" in ev["A003"] and "outside its domain" in ev["B001"]
    # each (model, image) segmented once although A003/s1 is listed twice
    assert len(oracle) == 6 and len(set(oracle)) == 6
    assert seen[-1] == (7, 7) and [d for d, _ in seen] == list(range(1, 8))
    # values: the prediction is the ground truth
    assert (pc["dice"] == 1.0).all() and (pc["hd95"] == 0.0).all() and (pc["nsd"] == 1.0).all()
    assert (pc["error"] == "").all() and (pc["method"] == "erm").all()
    b2 = pc[(pc["subject"] == "B002") & (pc["sequence"] == "s2")].iloc[0]  # label_map 1:10 applied
    assert b2["volume_gt_ml"] == pytest.approx(5 * 5 * 3 * np.prod(SPACING) / 1000)  # 3 + 4 % 3 + 1
    # domain flags
    flags = {(r.center, r.sequence): (r.in_domain, r.domain_shift) for r in pc.itertuples()}
    assert flags == {("A", "s1"): (True, "in_domain"), ("A", "s2"): (False, "cross_sequence"),
                     ("B", "s1"): (False, "cross_center"), ("B", "s2"): (False, "cross_both")}  # fmt: skip
    # matrix and counts
    mat, n = res.matrices["erm_A_s1"], res.counts["erm_A_s1"]
    assert list(mat.index) == ["A", "B"] and list(mat.columns) == ["s1", "s2"]
    assert (mat.to_numpy() == 1.0).all()
    assert n.to_numpy().tolist() == [[2, 1], [2, 2]]
    # files
    out = tmp_path / "out"
    for f in ("per_case.csv", "summary.csv", "cells.csv", "report.html", "matrix_erm_A_s1_dice.csv",
              "matrix_erm_A_s1_n.csv", "matrix_erm_A_s1_dice.png"):  # fmt: skip
        assert (out / f).is_file(), f
    assert not list(out.glob(".*.tmp"))
    png = (out / "matrix_erm_A_s1_dice.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    disk = pd.read_csv(out / "matrix_erm_A_s1_dice.csv", index_col=0)
    assert disk.shape == (2, 2) and np.allclose(disk.to_numpy(), 1.0)
    assert pd.read_csv(out / "matrix_erm_A_s1_n.csv", index_col=0).to_numpy().tolist() == [[2, 1], [2, 2]]
    assert len(pd.read_csv(out / "per_case.csv")) == 7
    text = (out / "report.html").read_text()
    imgs = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text)
    assert len(imgs) == 1 and base64.b64decode(imgs[0]) == png
    assert "<table" in text and "1.000 (n=2)" in text and "pandg train erm_A_s1.yaml" in text
    assert "<style>" in text and "training domain" in text and "erm" in text
    s = res.summary.iloc[0]
    assert s["dice_in_domain"] == 1.0 and s["n_in_domain"] == 2 and s["n_cross_both"] == 2
    assert s["n_excluded_subjects"] == 2


def test_constant_models_through_real_inference(tmp_path: Path, manifest: Path, truth):
    """All-background and all-pancreas UNets: Dice/HD95/NSD are known; matrices = per-case means;
    the training split is derived from the recorded training manifest + held-out subjects."""
    extra = {"config": {"data": {"manifest": str(manifest)}}, "test_subjects": ["A003", "B002"],
             "val_subjects": ["A002"]}  # fmt: skip
    bg = _constant_ckpt(tmp_path / "m" / "bg.pt", _desc("bg", extra=dict(extra)), pancreas=False)
    full = _constant_ckpt(tmp_path / "m" / "full.pt",
                          _desc("full", centers=("B",), sequences=("s2",), method="gin", extra=dict(extra)),
                          pancreas=True)  # fmt: skip
    res = run_benchmark(manifest, [str(bg), str(full)], tmp_path / "out", device="cpu",
                        exclude_training_subjects=False, save_predictions=True)  # fmt: skip
    pc = res.per_case
    assert len(pc) == 2 * 11 and (pc["error"] == "").all()
    split = dict(zip(pc["subject"], pc["model_split"], strict=False))
    assert split == {"A001": "train", "A002": "val", "A003": "test", "B001": "train", "B002": "test"}
    seen_bg = set(pc[(pc["model"] == "bg") & (pc["seen_in_training"] == "yes")]["subject"])
    seen_full = set(pc[(pc["model"] == "full") & (pc["seen_in_training"] == "yes")]["subject"])
    assert set(pc["seen_in_training"]) <= {"yes", "no"}  # the training manifest identifies everyone
    assert seen_bg == {"A001", "A002"}  # B001: train split but center B, not in bg's domain A
    assert seen_full == {"B001"}  # A001/A002 are center A, not in full's domain B
    diag = max_distance(SHAPE, SPACING)
    b = pc[pc["model"] == "bg"]
    assert (b["dice"] == 0).all() and (b["nsd"] == 0).all() and np.allclose(b["hd95"], diag)
    assert b["empty_pred"].all() and not b["empty_gt"].any()
    # the shift score of every case is in the table: a model that finds no pancreas is flagged
    assert (b["shift_score"] >= 2.0).all() and b["shift_flagged"].all()
    assert b["shift_reasons"].str.contains("no pancreas was found").all()
    assert pc["shift_score"].notna().all() and (b["shift_volume"] == 2.0).all()
    import json

    sig = [json.loads(line) for line in (tmp_path / "out" / "shift_signals.jsonl").read_text().splitlines()]
    assert len(sig) == len(pc) and {"features", "confidence", "volume_ml", "dice"} <= set(sig[0])  # one per case
    f = pc[pc["model"] == "full"]
    for r in f.itertuples():
        gt = truth[r.image].array
        g, v = int((gt == PANCREAS).sum()), gt.size
        assert r.dice == pytest.approx(2 * g / (g + v), rel=1e-5)
        ref = segmentation_metrics(np.full(SHAPE, PANCREAS, np.uint8), gt, SPACING)
        assert r.hd95 == pytest.approx(ref["hd95"]) and r.nsd == pytest.approx(ref["nsd"])
        assert (load_volume(r.prediction, is_label=True).array == PANCREAS).all()
    assert f["dice"].nunique() > 2
    # matrices are exactly the per-case means per center x sequence
    for key in ("bg", "full"):
        rows = pc[pc["model"] == key]
        exp = rows.groupby(["center", "sequence"])["dice"].mean().unstack()
        assert np.allclose(res.matrices[key].loc[exp.index, exp.columns].to_numpy(), exp.to_numpy())
        assert res.counts[key].to_numpy().sum() == 11
    full_flags = f.groupby(["center", "sequence"])["domain_shift"].first().to_dict()
    assert full_flags == {("A", "s1"): "cross_both", ("A", "s2"): "cross_center",
                          ("B", "s1"): "cross_sequence", ("B", "s2"): "in_domain"}  # fmt: skip
    s = res.summary.set_index("model")
    assert s.loc["full", "method"] == "gin" and s.loc["full", "train_centers"] == "B"
    assert s.loc["full", "dice_in_domain"] == pytest.approx(f[f["in_domain"]]["dice"].mean())
    assert s.loc["bg", "dice_all"] == 0.0
    assert len(list((tmp_path / "out" / "predictions" / "full").glob("*_seg.nii.gz"))) == 10
    # every case fails (Dice < 0.5): the AUROC needs both classes and is not defined here
    sh = pd.read_csv(tmp_path / "out" / "shift_auroc.csv").set_index("model")
    assert set(sh.index) == {"bg", "full", "all"} and sh["auroc"].isna().all()
    assert sh.loc["bg", "n_flagged"] == 11 and sh.loc["bg", "sensitivity"] == 1.0
    assert "Shift score: does it warn" in (tmp_path / "out" / "report.html").read_text()


def test_refuses_non_empty_out_dir(tmp_path: Path, manifest: Path, oracle):
    ck = _split_ckpt(tmp_path / "run")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        run_benchmark(manifest, [str(ck)], out, device="cpu")
    assert not oracle
    res = run_benchmark(manifest, [str(ck)], out, device="cpu", overwrite=True)
    assert res.report.is_file() and (out / "keep.txt").is_file()


def test_bad_model_name(tmp_path: Path, manifest: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PANDG_MODELS", str(tmp_path / "models"))
    with pytest.raises(ModelNotFoundError, match="no model named 'nope'"):
        run_benchmark(manifest, ["nope"], tmp_path / "out", device="cpu")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="no model given"):
        run_benchmark(manifest, [], tmp_path / "out", device="cpu")


def test_cancel_stops_early(tmp_path: Path, manifest: Path, oracle):
    ck = _split_ckpt(tmp_path / "run")
    ev = threading.Event()
    res = run_benchmark(manifest, [str(ck)], tmp_path / "out", device="cpu", cancel=ev,
                        progress=lambda d, t, s: ev.set())  # fmt: skip
    assert res.cancelled and len(res.per_case) == 1
    assert "cancelled" in res.report.read_text()


def test_max_cases_per_cell_is_deterministic(tmp_path: Path, manifest: Path, oracle):
    ck = _split_ckpt(tmp_path / "run")
    a = run_benchmark(manifest, [str(ck)], tmp_path / "o1", device="cpu", max_cases_per_cell=1,
                      exclude_training_subjects=False)  # fmt: skip
    b = run_benchmark(manifest, [str(ck)], tmp_path / "o2", device="cpu", max_cases_per_cell=1,
                      exclude_training_subjects=False)  # fmt: skip
    assert (a.counts["erm_A_s1"].to_numpy() == 1).all()
    assert a.per_case["image"].tolist() == b.per_case["image"].tolist()
    # the same subject is preferred in every sequence of a center
    assert a.per_case.groupby("center")["subject"].nunique().max() == 1


def test_cli_by_registered_name(tmp_path: Path, manifest: Path, monkeypatch, capsys, oracle):
    models = tmp_path / "models"
    _constant_ckpt(models / "m1.pt", _desc("first"), pancreas=True)
    _constant_ckpt(models / "m2.pt", _desc("second", centers=("B",)), pancreas=True)
    monkeypatch.setenv("PANDG_MODELS", str(models))
    report = run_benchmark_cli(manifest, "m1, m2", tmp_path / "out", device="cpu")
    out = capsys.readouterr().out
    assert report == tmp_path / "out" / "report.html" and report.is_file()
    assert "m1 (erm; trained on centers A, sequences s1)" in out and "m2 (erm" in out
    assert "1.000 (2)" in out and "in-domain 1.000" in out and str(report) in out
    assert (tmp_path / "out" / "matrix_m2_dice.png").is_file()


def test_subject_splits_without_run_files(manifest: Path):
    df = read_index(manifest)
    recorded = SegModel(_desc("x", extra={"test_subjects": ["A003"], "val_subjects": ["A002"]}), torch.nn.Identity())
    splits, src = model_subject_splits(recorded, df)
    assert splits["A003"] == "test" and splits["A002"] == "val" and splits["B001"] == "train"
    assert "shares subjects" in src
    other = df.assign(subject=df["subject"] + "_other")
    splits, _ = model_subject_splits(recorded, other)
    assert set(splits) == {"A003", "A002"}  # another dataset: nothing taken as training
    bare = SegModel(_desc("y"), torch.nn.Identity())
    assert model_subject_splits(bare, df) == ({}, "none recorded in the checkpoint: no subject could be excluded")
    assert domain_shift("A", "t2", {"centers": [], "sequences": []}) == "unknown"


# --------------------------------------------------------------------------- who was seen in training
def _with_seeds(manifest: Path, out: Path, seeds: dict[str, int]) -> Path:
    """A copy of the test manifest with a phantom ``seed`` column (a phantom person is its seed)."""
    df = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    df["seed"] = df["subject"].map(lambda s: str(seeds.get(s, 999)))
    df["image"] = [str((manifest.parent / p).resolve()) for p in df["image"]]
    df["label"] = [str((manifest.parent / p).resolve()) if p else "" for p in df["label"]]
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    return out


SYNTH_CMD = "pandg synth --out data/A --subjects 3 --centers A --seed 11; pandg synth --out data/B --subjects 2 --centers B --seed 12"


def _synth_ckpt(path: Path) -> Path:
    """A model trained on center A / s1 whose checkpoint records ids and the pandg synth command
    of its training data (as the shipped models do), but no training manifest on disk."""
    extra = {"train_subjects": ["A001", "B001"], "val_subjects": ["A002"], "test_subjects": ["A003", "B002"],
             "data_command": SYNTH_CMD, "config": {"data": {"manifest": "gone/manifest.csv"}}}  # fmt: skip
    return _constant_ckpt(path, _desc("synth_ids", extra=extra), pancreas=True)


def test_synth_command_fingerprints_give_each_id_its_phantom_seed() -> None:
    from napari_pandg.benchmark import synth_command_fingerprints
    from napari_pandg.phantom import subject_seed

    fps = synth_command_fingerprints(SYNTH_CMD + "; python training/merge_manifests.py data/A data/B --out m.csv")
    assert sorted(fps) == ["A001", "A002", "A003", "B001", "B002"]
    assert fps["A002"] == {f"phantom-seed:{subject_seed(11, 'A', 2)}"}
    assert fps["B001"] == {f"phantom-seed:{subject_seed(12, 'B', 1)}"}
    assert synth_command_fingerprints("python other.py --seed 3") == {}
    first = synth_command_fingerprints("pandg synth --out t --subjects 1 --centers C --seed 5 --first-index 101")
    assert first == {"C101": {f"phantom-seed:{subject_seed(5, 'C', 101)}"}}


def test_same_ids_other_people_are_not_training_subjects(tmp_path: Path, manifest: Path, oracle):
    """The demo's case: the benchmark's A001/A002/B001 carry the training ids but are other phantom
    people (other seeds). Before, they were excluded (or marked train/val) by id."""
    ck = _synth_ckpt(tmp_path / "m" / "synth_ids.pt")
    other = _with_seeds(manifest, tmp_path / "other" / "manifest.csv", {s: 1000 + k for k, s in enumerate(SUBJECTS)})
    res = run_benchmark(other, [str(ck)], tmp_path / "out", device="cpu")
    pc = res.per_case
    assert res.excluded == {"synth_ids": []}  # nobody left out: nobody was seen
    assert set(pc["subject"]) == set(SUBJECTS)
    assert (pc["seen_in_training"] == "no").all() and (pc["model_split"] == "").all()
    for subj in ("A001", "A002", "B001"):
        ev = pc[pc["subject"] == subj]["seen_evidence"].iloc[0]
        assert ev.startswith("another person") and "phantom seed" in ev
    text = res.report.read_text()
    assert "training subjects <b>included</b>" not in text
    assert text.count(html_escape(res.scoring)) == 2  # the header and the text say the same thing
    assert "none of this manifest's subjects is one of them" in res.scoring
    assert "A001, A002, A003, B001, B002 share subject ids" in res.scoring
    disk = pd.read_csv(tmp_path / "out" / "per_case.csv", keep_default_na=False)
    assert set(disk["seen_in_training"]) == {"no"} and set(disk["model_split"]) == {""}


def test_same_people_are_excluded_or_marked_seen(tmp_path: Path, manifest: Path, oracle):
    from napari_pandg.phantom import subject_seed

    ck = _synth_ckpt(tmp_path / "m" / "synth_ids.pt")
    seeds = {"A001": subject_seed(11, "A", 1), "A002": subject_seed(11, "A", 2), "A003": subject_seed(11, "A", 3),
             "B001": subject_seed(12, "B", 1), "B002": 5}  # B002: another person  # fmt: skip
    same = _with_seeds(manifest, tmp_path / "same" / "manifest.csv", seeds)
    res = run_benchmark(same, [str(ck)], tmp_path / "o1", device="cpu")
    assert res.excluded == {"synth_ids": ["A001", "A002"]}  # B001: train split, but center B
    assert "2 seen in training or validation" in res.scoring
    res = run_benchmark(same, [str(ck)], tmp_path / "o2", device="cpu", exclude_training_subjects=False)
    st = res.per_case.groupby("subject")[["seen_in_training", "model_split"]].first().T.to_dict("list")
    assert st == {"A001": ["yes", "train"], "A002": ["yes", "val"], "A003": ["no", "test"],
                  "B001": ["no", "train"], "B002": ["no", ""]}  # fmt: skip
    assert "4 scored case(s) are of subjects seen in training" in res.scoring  # A001, A002 x 2 sequences
    assert "B002 share subject ids" in res.scoring
    text = res.report.read_text()
    assert text.count(html_escape(res.scoring)) == 2 and "are not scored" not in text
    assert int(res.summary["n_cases_seen_in_training"].iloc[0]) == 4


def test_unknown_identity_is_said_unknown(tmp_path: Path, manifest: Path, oracle):
    """Ids only (split.csv, no fingerprint, no manifest, no synth command): never "train"."""
    ck = _split_ckpt(tmp_path / "runs" / "erm_A_s1")
    res = run_benchmark(manifest, [str(ck)], tmp_path / "out", device="cpu", exclude_training_subjects=False)
    st = res.per_case.groupby("subject")["seen_in_training"].first().to_dict()
    assert st == {"A001": "unknown", "A002": "unknown", "A003": "no", "B001": "no", "B002": "no"}
    assert (res.per_case["model_split"] == "").all()
    assert "of unknown identity" in res.scoring
    assert res.report.read_text().count(html_escape(res.scoring)) == 2


def test_shipped_models_do_not_claim_the_demo_subjects() -> None:
    """The shipped checkpoints say what they were trained on: a model of fixed phantom subjects
    records the pandg synth commands of its data, so the demo's subjects (seed 0) with the same
    ids are told apart and a subject of the training draw is not; a streamed model saw no file
    subject at all."""
    from napari_pandg.benchmark import model_subject_splits, subject_status
    from napari_pandg.models import list_models, load_checkpoint, resolve_model
    from napari_pandg.phantom import subject_seed

    shipped = list_models(describe=False)
    shipped = shipped[shipped["source"] == "shipped"] if "source" in shipped else shipped.iloc[0:0]
    if shipped.empty:
        pytest.skip("no shipped model")
    rows = []
    for c, seed in (("A", 0), ("B", 0), ("C", 0), ("D", 0)):  # the demo: pandg demo --seed 0
        rows.append({"subject": f"{c}001", "center": c, "sequence": "t1fs_venous", "image": f"/x/{c}001.nii.gz",
                     "seed": str(subject_seed(seed, c, 1))})  # fmt: skip
    rows.append({"subject": "A002", "center": "A", "sequence": "t1fs_venous", "image": "/x/A002.nii.gz",
                 "seed": str(subject_seed(11, "A", 2))})  # a real training subject of the fixed-set models  # fmt: skip
    df = pd.DataFrame(rows)
    kinds = set()
    for name in shipped["name"]:
        model = load_checkpoint(resolve_model(str(name)), device="cpu")
        splits, _ = model_subject_splits(model, df)
        status, source = subject_status(model, splits, df)
        if (model.description.extra.get("train_data") or {}).get("source") == "phantom_stream":
            kinds.add("stream")
            assert "generated during training" in source, (name, source)
            assert {v[0] for v in status.values()} == {"no"}, (name, status)
        else:
            kinds.add("fixed")
            assert "pandg synth" in source, (name, source)
            assert {s: v[0] for s, v in status.items()} == {"A001": "no", "B001": "no", "C001": "no", "D001": "no",
                                                          "A002": "yes"}, (name, status)  # fmt: skip
            assert status["A002"][1] == "train" and status["A001"][1] == ""
    assert kinds == {"stream", "fixed"}  # both kinds are shipped (erm/synth streamed, gin on fixed subjects)


def html_escape(text: str) -> str:
    import html

    return html.escape(text)
