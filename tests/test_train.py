"""Trainer: config, splits, run folder, resume determinism, DG methods, fine-tuning, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from napari_pandg.labels import PANCREAS  # noqa: E402
from napari_pandg.models import LabelMapError, load_checkpoint, segment_volume  # noqa: E402
from napari_pandg.train import ConfigError, load_config, train  # noqa: E402
from napari_pandg.train.data import make_split, read_manifest  # noqa: E402
from napari_pandg.train.methods import MaskGen, gin_augment, make_method  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "training" / "configs"


def make_dataset(root: Path, n_subjects: int = 6, seqs=("t1fs_venous", "op"), shape=(32, 32, 12), seed=0) -> Path:
    """Tiny labelled volumes: a bright 'pancreas' box (AMOS 10) and a 'liver' slab (6),
    stored LPS-like so training has to reorient; 'op' has another contrast."""
    import nibabel as nib
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows = []
    aff = np.diag([-2.0, -2.0, 4.0, 1.0])
    for s in range(n_subjects):
        subj = f"S{s:02d}"
        lab = np.zeros(shape, np.uint8)
        c = rng.integers([8, 8, 3], [24, 24, 9])
        lab[c[0] - 4 : c[0] + 4, c[1] - 3 : c[1] + 3, c[2] - 2 : c[2] + 2] = PANCREAS
        slab = lab[2:8, 2:30, :]
        slab[slab == 0] = 6
        for q in seqs:
            bg, panc, liver = {"t1fs_venous": (100, 250, 160), "op": (100, 60, 180)}[q]
            img = rng.normal(bg, 10, shape).astype(np.float32)
            img[lab == PANCREAS] += panc - bg
            img[lab == 6] += liver - bg
            d = root / subj
            d.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(img, aff), str(d / f"{q}.nii.gz"))
            nib.save(nib.Nifti1Image(lab, aff), str(d / f"{q}_label.nii.gz"))
            rows.append({"subject": subj, "center": "A", "sequence": q, "field_strength": 3.0,
                         "image": f"{subj}/{q}.nii.gz", "label": f"{subj}/{q}_label.nii.gz"})  # fmt: skip
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


TINY = [
    "data.spacing=[2.0,2.0,4.0]",
    "data.patch_size=[16,16,8]",
    "model.architecture=UNet",
    "model.kwargs={channels: [4, 8, 16], strides: [2, 2], num_res_units: 0, norm: instance}",
    "optim.batch_size=2",
    "optim.lr=0.01",
    "optim.warmup_steps=0",
    "val.overlap=0.25",
    "log_every=2",
    "threads=2",
]


def tiny_cfg(manifest: Path, out: Path, *extra: str, epochs: int = 2, steps: int = 2):
    return load_config(
        CONFIGS / "erm.yaml",
        [f"data.manifest={manifest}", f"out_dir={out}", "data.cache_dir=null",
         f"optim.epochs={epochs}", f"optim.steps_per_epoch={steps}", *TINY, *extra],
    )  # fmt: skip


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("traindata"))


@pytest.fixture(scope="module")
def erm_run(manifest: Path, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "erm"
    return train(tiny_cfg(manifest, out, "method.name=gin", epochs=3), command="pytest erm", log=lambda s: None)


# --------------------------------------------------------------------------- config
def test_config_overrides_and_errors(tmp_path: Path):
    cfg = load_config(
        CONFIGS / "erm.yaml",
        ["optim.lr=1e-3", "data.train_centers=[A,B]", "method.params.drop_prob=0.5", "data.max_train_subjects=3"],
    )
    assert cfg.optim.lr == 1e-3 and cfg.data.train_centers == ["A", "B"]
    assert cfg.method.params == {"drop_prob": 0.5} and cfg.data.max_train_subjects == 3
    assert cfg.data.label_map == {PANCREAS: 1}
    with pytest.raises(ConfigError, match=r"optim\.lrr.*valid keys under optim: lr"):
        load_config(None, ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="integer"):
        load_config(None, ["optim.epochs=1.5"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["optim.lr"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("name", ["erm", "bigaug", "gin", "synth", "maskgen", "meanteacher", "finetune"])
def test_shipped_configs_parse(name: str):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert cfg.method.name == name and cfg.data.train_centers == ["A"]
    assert cfg.data.train_sequences == (["op"] if name == "finetune" else ["t1fs_venous"])


def test_split_is_deterministic_and_disjoint(manifest: Path):
    df = read_manifest(manifest)
    cfg = load_config(None, ["data.val_fraction=0.2", "data.test_fraction=0.2"]).data
    a, b = make_split(df, cfg, 0), make_split(df, cfg, 0)
    assert a == b and set(a) == set(df["subject"])
    assert sorted(a.values()).count("test") == 1 and sorted(a.values()).count("val") == 1
    assert any(make_split(df, cfg, s) != a for s in range(1, 6))
    forced = make_split(df, load_config(None, ["data.test_subjects=[S03]"]).data, 0)
    assert forced["S03"] == "test"


# --------------------------------------------------------------------------- run folder
def test_run_folder_and_checkpoint(erm_run):
    rd = erm_run.run_dir
    assert {"config.yaml", "split.csv", "metrics.jsonl", "last.pt", "best.pt"} <= {p.name for p in rd.iterdir()}
    recs = [json.loads(line) for line in (rd / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in recs if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3]
    assert all({"loss", "val_dice", "lr", "time_s"} <= set(r) for r in epochs)
    assert [r["kind"] for r in recs].count("step") == 3  # every 2 of 6 steps
    assert epochs[-1]["lr"] == pytest.approx(0.0, abs=1e-9)  # cosine to min_lr
    m = load_checkpoint(erm_run.best_path, expected_label_map={0: 0, 1: PANCREAS})
    d = m.description
    assert d.method == "gin" and d.domains == {"centers": ["A"], "sequences": ["t1fs_venous"]}
    assert d.val_metrics["dice"] == pytest.approx(erm_run.best_dice) and d.command == "pytest erm"
    assert d.spacing == (2.0, 2.0, 4.0) and d.patch_size == (16, 16, 8)
    test_subjects = d.extra["test_subjects"]
    split = dict(line.split(",") for line in (rd / "split.csv").read_text().splitlines()[1:])
    assert test_subjects and all(split[s] == "test" for s in test_subjects)
    # last.pt is a loadable checkpoint as well
    assert load_checkpoint(erm_run.last_path).description.name == d.name


def test_trained_checkpoint_segments_input_grid(erm_run, manifest: Path):
    from napari_pandg.io import load_volume

    img = load_volume(manifest.parent / "S00" / "op.nii.gz")
    seg = segment_volume(str(erm_run.best_path), img)
    assert seg.shape == img.shape and np.array_equal(seg.affine, img.affine)
    assert set(np.unique(seg.array)) <= {0, PANCREAS}


def test_resume_reproduces_uninterrupted_run(erm_run, manifest: Path, tmp_path: Path):
    out = tmp_path / "resumed"
    first = train(tiny_cfg(manifest, out, "method.name=gin", "stop_after_epochs=1", epochs=3), log=lambda s: None)
    assert first.epochs_done == 1
    logs: list[str] = []
    second = train(tiny_cfg(manifest, out, "method.name=gin", epochs=3), log=logs.append)
    assert any("resuming" in line and "after epoch 1/3" in line for line in logs)
    assert [r["epoch"] for r in second.history] == [1, 2, 3]
    for a, b in zip(erm_run.history, second.history, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6, abs=1e-7)
        assert a["val_dice"] == pytest.approx(b["val_dice"], rel=1e-6, abs=1e-7)
    wa = load_checkpoint(erm_run.last_path).network.state_dict()
    wb = load_checkpoint(second.last_path).network.state_dict()
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_run_folder_protection(erm_run, manifest: Path):
    with pytest.raises(FileExistsError, match="already holds a run"):
        train(tiny_cfg(manifest, erm_run.run_dir, "method.name=gin", "resume=false", epochs=3), log=lambda s: None)
    with pytest.raises(ConfigError, match="different configuration"):
        train(tiny_cfg(manifest, erm_run.run_dir, "method.name=erm", epochs=3), log=lambda s: None)


# --------------------------------------------------------------------------- methods
def test_gin_and_channel_masking_units():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 1, 8, 8, 8)
    y = gin_augment(x, g, prob=1.0)
    assert not torch.allclose(x, y)
    for b in range(4):
        assert float(y[b].mean()) == pytest.approx(float(x[b].mean()), abs=1e-4)
        assert float(y[b].std()) == pytest.approx(float(x[b].std()), rel=1e-3)
    cfg = load_config(None, ["method.name=maskgen", "method.params.features=random"])
    m = make_method(cfg)
    assert isinstance(m, MaskGen) and m.in_channels() == 1 + m.spec["out_channels"]
    z = m.prepare_input(torch.rand(8, 1, 16, 16, 16), torch.Generator().manual_seed(1))
    assert z.shape[1] == m.in_channels()
    kept = z.abs().flatten(2).amax(-1) > 0  # whole channels are either kept or zeroed
    assert 0 < kept.float().mean() < 0.6  # p = 0.75
    full = torch.cat([torch.rand(1, 1, 16, 16, 16)] * 1, 0)
    scaled = m.prepare_input(full, torch.Generator().manual_seed(3))
    ch = [c for c in range(scaled.shape[1]) if scaled[0, c].abs().max() > 0]
    if 0 in ch:  # survivors are scaled by 1 / (1 - p) = 4
        assert torch.allclose(scaled[0, 0], full[0, 0] * 4)


@pytest.mark.parametrize(
    "method",
    [
        ["method.name=bigaug", "method.augment=bigaug"],
        ["method.name=maskgen", "method.params.features=random"],
        ["method.name=meanteacher", "data.unlabeled_sequences=[op]"],
        ["method.name=synth"],
    ],
    ids=["bigaug", "maskgen", "meanteacher", "synth"],
)
def test_dg_methods_train_and_export(method, manifest: Path, tmp_path: Path):
    res = train(tiny_cfg(manifest, tmp_path / "m", *method, epochs=1, steps=2), log=lambda s: None)
    rec = res.history[-1]
    assert np.isfinite(rec["loss"]) and 0 <= rec["val_dice"] <= 1
    m = load_checkpoint(res.last_path)
    name = method[0].split("=")[1]
    assert m.description.method == name
    if name == "maskgen":
        assert m.description.feature_extractor["source"] == "random" and m.description.in_channels == 5
        assert type(m.network).__name__ == "FeatureConcatNet"
    if name == "meanteacher":
        assert "consistency" in rec and rec["cons_weight"] >= 0
    vol = __import__("napari_pandg.io", fromlist=["load_volume"]).load_volume(manifest.parent / "S01" / "op.nii.gz")
    assert segment_volume(m, vol).shape == vol.shape


def test_meanteacher_needs_unlabeled_data():
    with pytest.raises(ConfigError, match="unlabeled"):
        make_method(load_config(None, ["method.name=meanteacher"]))


def test_finetune_from_checkpoint_and_label_map_check(erm_run, manifest: Path, tmp_path: Path):
    res = train(
        tiny_cfg(manifest, tmp_path / "ft", "method.name=finetune", f"init_checkpoint={erm_run.best_path}",
                 "data.train_sequences=[op]", "data.max_train_subjects=2", "model.kwargs={}", epochs=1, steps=2),
        log=lambda s: None,
    )  # fmt: skip
    d = load_checkpoint(res.best_path or res.last_path).description
    assert d.method == "finetune" and d.arch_kwargs == load_checkpoint(erm_run.best_path).description.arch_kwargs
    assert d.domains["sequences"] == ["op"]
    with pytest.raises(LabelMapError, match="expected"):
        train(tiny_cfg(manifest, tmp_path / "ft2", "method.name=finetune", f"init_checkpoint={erm_run.best_path}",
                       "data.label_map={6: 1}", epochs=1, steps=1), log=lambda s: None)  # fmt: skip
    with pytest.raises(ConfigError, match="init_checkpoint"):
        make_method(load_config(None, ["method.name=finetune"]))


# --------------------------------------------------------------------------- DDP
def test_ddp_two_processes_train_the_same_model(manifest: Path, tmp_path: Path):
    out = tmp_path / "ddp"
    cfg = tmp_path / "ddp.yaml"
    import yaml

    c = tiny_cfg(manifest, out, "dump_rank_weights=true", "threads=1", epochs=1, steps=2)
    cfg.write_text(yaml.safe_dump(c.to_dict()))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "napari_pandg.train", str(cfg)],
        capture_output=True, text=True, timeout=240, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    r0 = torch.load(out / "rank0_weights.pt", weights_only=True)
    r1 = torch.load(out / "rank1_weights.pt", weights_only=True)
    assert (r0["world"], r1["world"], r0["rank"], r1["rank"]) == (2, 2, 0, 1)
    # the ranks saw different patches (different local losses) ...
    assert not np.allclose(r0["local_losses"], r1["local_losses"])
    # ... yet DDP kept the weights identical after every step
    assert all(torch.equal(r0["state_dict"][k], r1["state_dict"][k]) for k in r0["state_dict"])
    init = load_checkpoint(out / "last.pt")
    assert init.description.method == "erm"
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs if r["kind"] == "epoch"] == [1]
    assert proc.stdout.count("best checkpoint:") == 1  # rank 0 reports


# --------------------------------------------------------------------------- separate process
def _process_cfg(manifest: Path, out: Path, tmp_path: Path, name: str, epochs: int, steps: int) -> Path:
    from napari_pandg.train.config import dump_config

    cfg_p = tmp_path / f"{name}.yaml"
    dump_config(tiny_cfg(manifest, out, "threads=1", epochs=epochs, steps=steps), cfg_p)
    return cfg_p


def test_trainer_process_reports_json_lines_and_resumes(manifest: Path, tmp_path: Path):
    from napari_pandg.train.process import TrainerProcess

    out = tmp_path / "proc"
    cfg_p = _process_cfg(manifest, out, tmp_path, "proc", epochs=2, steps=2)
    proc = TrainerProcess(cfg_p, out, env={"OMP_NUM_THREADS": "1", "PANDG_TRAIN_COMMAND": "pytest process"}).start()
    events = list(proc.events())
    res = proc.result()
    kinds = [e["event"] for e in events]
    assert kinds[-1] == "done" and "log" in kinds, kinds
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [1, 2]
    assert all(isinstance(e["loss"], float) for e in events if e["event"] == "epoch")
    assert res.returncode == 0 and not res.cancelled and res.epochs_done == 2
    assert res.last_path.exists() and load_checkpoint(res.last_path).description.command == "pytest process"
    # Resume: the same run folder with more epochs continues after epoch 2
    again = TrainerProcess(out / "config.yaml", out, ["optim.epochs=3"], env={"OMP_NUM_THREADS": "1"}).start()
    ev2 = list(again.events())
    assert [e["epoch"] for e in ev2 if e["event"] == "epoch"] == [3]
    assert any("resuming" in str(e.get("text", "")) for e in ev2)
    assert again.result().epochs_done == 3


def test_trainer_process_survives_sigkill_and_stops_cleanly(manifest: Path, tmp_path: Path):
    from napari_pandg.train.process import TrainerProcess, TrainerProcessError, resumable

    out = tmp_path / "killed"
    cfg_p = _process_cfg(manifest, out, tmp_path, "killed", epochs=500, steps=30)
    env = {"OMP_NUM_THREADS": "1"}
    proc = TrainerProcess(cfg_p, out, env=env).start()
    for ev in proc.events():
        if ev["event"] == "epoch":
            proc.kill()  # SIGKILL: no handler, no cleanup in the trainer
    with pytest.raises(TrainerProcessError, match=r"killed by signal SIGKILL after epoch \d+;.*last\.pt.*resume"):
        proc.result()
    assert proc.wait() == -9 and resumable(out)
    done = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["epoch"]
    assert load_checkpoint(out / "last.pt").description.name  # a whole, loadable checkpoint
    # start the same folder again: resumes after the saved epoch; Stop ends it after the current step
    proc2 = TrainerProcess(out / "config.yaml", out, env=env).start()
    first = None
    for ev in proc2.events():
        if ev["event"] == "epoch" and first is None:
            first = ev["epoch"]
            proc2.stop()
    res = proc2.result()
    assert first == done + 1, (first, done)
    assert res.cancelled and res.returncode == 0 and first <= res.epochs_done < 500


def test_trainer_process_refused_config_is_a_clear_error(tmp_path: Path):
    from napari_pandg.train.process import TrainerProcess, TrainerProcessError, trainer_command

    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: fast\n")
    proc = TrainerProcess(bad, tmp_path / "run").start()
    events = list(proc.events())
    assert events and events[-1]["event"] == "error" and "bad.yaml" in events[-1]["message"]
    with pytest.raises(TrainerProcessError, match=r"refused to start: training config .*bad\.yaml.*lr"):
        proc.result()
    assert proc.wait() == 2
    cmd = trainer_command(bad, ["optim.epochs=2"], nproc=2)
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert cmd[-2:] == ["optim.epochs=2", "--json-progress"]


# --------------------------------------------------------------------------- features
def test_render_views_share_geometry_not_contrast():
    from napari_pandg.train.features import render, voxel_contrastive_loss

    lab = torch.zeros((1, 1, 16, 16, 8), dtype=torch.long)
    lab[:, :, 4:12, 4:12, 2:6] = 10
    lab[:, :, :, :2] = 6
    g = torch.Generator().manual_seed(0)
    v1, v2 = render(lab, g), render(lab, g)
    assert v1.shape == lab.shape and float(v1.min()) >= 0 and float(v1.max()) <= 1.0 + 1e-6
    assert not torch.allclose(v1, v2)
    # identical features for both views and well-separated labels give a low loss
    f = torch.nn.functional.one_hot(lab[:, 0].clamp(max=11), 12).permute(0, 4, 1, 2, 3).float() * 10
    low = voxel_contrastive_loss(f, f, lab, torch.Generator().manual_seed(1), n_samples=64)
    rnd = voxel_contrastive_loss(torch.randn(1, 12, 16, 16, 8), torch.randn(1, 12, 16, 16, 8), lab,
                                 torch.Generator().manual_seed(1), n_samples=64)  # fmt: skip
    assert float(low) < float(rnd)


def test_render_acquisition_effects():
    """texture adds within-structure variation, slice_blur blurs only through-plane."""
    from napari_pandg.train.features import render

    lab = torch.zeros((1, 1, 24, 24, 24), dtype=torch.long)
    lab[:, :, :, :, 12:] = 2  # a through-plane edge (last axis) ...
    lab[:, :, 12:, :, :] += 1  # ... and an in-plane edge (first axis): 4 structures

    def draws(n: int = 24, **kw):
        g = torch.Generator().manual_seed(5)
        return [render(lab, g, **kw)[0, 0] for _ in range(n)]

    def within_sd(imgs):  # mean spread inside the structures, away from edges
        core = [img[2:10, :, 2:10] for img in imgs] + [img[14:22, :, 14:22] for img in imgs]
        return float(torch.stack([c.std() for c in core]).mean())

    def edge_ratio(imgs):  # sharpness through-plane / in-plane
        z = torch.stack([(img[:, :, 12] - img[:, :, 11]).abs().mean() for img in imgs]).mean()
        x = torch.stack([(img[12] - img[11]).abs().mean() for img in imgs]).mean()
        return float(z / x)

    plain = draws()
    assert within_sd(draws(texture=0.3)) > 1.15 * within_sd(plain)
    assert edge_ratio(draws(slice_blur=2.0)) < 0.8 * edge_ratio(plain)
    # every effect together: reproducible from the generator, still in [0, 1]
    assert all(
        torch.equal(a, b) for a, b in zip(draws(2, rician=1.0), draws(2, rician=1.0), strict=True)
    )
    for img in draws(4, texture=0.3, slice_blur=2.0, rician=1.0):
        assert (
            img.shape == lab.shape[2:] and float(img.min()) >= 0 and float(img.max()) <= 1 + 1e-6
        )


def test_feature_pretraining_feeds_maskgen(manifest: Path, tmp_path: Path):
    from napari_pandg.train.features import train_features

    feats = train_features(manifest, tmp_path / "features.pt", steps=2, patch_size=(16, 16, 8),
                           num_downs=2, ngf=4, log=None, subjects=["S00", "S01"])  # fmt: skip
    with pytest.raises(FileExistsError):
        train_features(manifest, feats, steps=1)
    res = train(tiny_cfg(manifest, tmp_path / "mg", "method.name=maskgen", f"method.params.features={feats}",
                         epochs=1, steps=1), log=lambda s: None)  # fmt: skip
    m = load_checkpoint(res.last_path)
    assert m.description.feature_extractor["trained"]["n_label_maps"] == 2
    assert m.description.in_channels == 17


def test_train_features_cli_uses_only_training_subjects(manifest: Path, tmp_path: Path, capsys):
    from napari_pandg.cli import main

    split = tmp_path / "split.csv"
    split.write_text("subject,split\nS00,train\nS01,test\nS02,train\n")
    out = tmp_path / "f.pt"
    args = ["train-features", str(manifest), "--out", str(out), "--steps", "1", "--patch-size", "16,16,16",
            "--split-from", str(split)]  # fmt: skip
    assert main(args) == 0
    desc = torch.load(out, weights_only=True)["description"]
    assert desc["trained"]["n_label_maps"] == 2 and desc["trained"]["patch_size"] == [16, 16, 16]
    assert main(args) == 2  # exists: refused without --overwrite
    assert main(args + ["--overwrite", "--patch-size", "16,16"]) == 2
    assert main(args + ["--overwrite", "--patch-size", "16,16,8"]) == 2
    assert "at least 16" in capsys.readouterr().err
    split.write_text("subject,split\nS00,test\n")
    assert main(args + ["--overwrite"]) == 2


def test_region_map_keeps_label_ids_and_bins_unlabelled_voxels():
    from napari_pandg.train.data import REGION_BIN_BASE, REGION_BINS, region_map

    img = np.zeros((20, 20, 6), np.float32)
    img[:, 10:] = 100.0  # two unlabelled intensity classes
    lab = np.zeros(img.shape, np.uint8)
    lab[2:6, 2:6] = 10
    lab[12:16, 12:16] = 6
    reg = region_map(lab, img)
    assert reg.dtype == np.uint8 and reg.shape == lab.shape
    assert (reg[lab == 10] == 10).all() and (reg[lab == 6] == 6).all()
    dark, bright = reg[:, :9][lab[:, :9] == 0], reg[:, 12:][lab[:, 12:] == 0]
    assert set(np.unique(dark)) == {REGION_BIN_BASE}
    assert set(np.unique(bright)) == {REGION_BIN_BASE + REGION_BINS - 1}
    with pytest.raises(ConfigError, match="label id 251"):
        region_map(np.full(img.shape, 251, np.uint8), img)
    with pytest.raises(ConfigError, match="differs"):
        region_map(lab[:, :, :3], img)


def test_synth_regions_follow_the_spatial_augmentation(manifest: Path):
    """Crop and affine move image, label and regions together (regions nearest, ids kept)."""
    from napari_pandg.models.checkpoint import DEFAULT_NORMALIZATION
    from napari_pandg.train.data import PatchDataset, load_cases, select_rows
    from napari_pandg.train.features import render
    from napari_pandg.train.methods import Synth

    cfg = tiny_cfg(manifest, manifest.parent / "unused", "method.name=synth", "method.params.aug_prob=1.0")
    df = read_manifest(manifest)
    rows = select_rows(df, {s: "train" for s in df["subject"]}, "train", ["A"], ["t1fs_venous"])
    cases = load_cases(rows.iloc[:2], cfg.data, dict(DEFAULT_NORMALIZATION), with_regions=True)
    assert all(c.regions is not None and c.regions.shape == c.image.shape for c in cases)
    m = make_method(cfg)
    assert isinstance(m, Synth)
    ds = PatchDataset(cases, cfg.data.patch_size, 6, 0, m.augmentations())
    with_pancreas = None
    for i in range(6):
        b = ds[i]
        assert b["regions"].shape == b["label"].shape == b["image"].shape
        # the trained class (pancreas -> 1) is exactly the pancreas region (AMOS 10) after warping
        assert torch.equal(b["label"] == 1, b["regions"] == PANCREAS)
        if (b["label"] == 1).any():
            with_pancreas = b
    assert with_pancreas is not None  # pos:neg 2:1 crops
    # a rendering has the anatomy's geometry with another contrast
    g = torch.Generator().manual_seed(0)
    reg = with_pancreas["regions"]
    r = render(reg[None], g)[0, 0]
    inside, outside = r[reg[0] == PANCREAS], r[reg[0] != PANCREAS]
    assert float(inside.std()) < float(outside.std())
    x = torch.stack([ds[0]["image"], ds[1]["image"]])
    batch = {"image": x, "label": torch.stack([ds[0]["label"], ds[1]["label"]]),
             "regions": torch.stack([ds[0]["regions"], ds[1]["regions"]])}  # fmt: skip
    seen = []
    model = lambda inp: (seen.append(inp.clone()), torch.zeros(inp.shape[0], 2, *inp.shape[2:]))[1]  # noqa: E731
    m.params.update(prob=1.0, texture=0.15, slice_blur=1.0, rician=0.5)
    m.loss(model, batch, lambda logits, y: logits.sum(), torch.Generator().manual_seed(1), 0)
    assert not torch.allclose(seen[0], x)  # replaced by renderings ...
    for k in range(2):  # ... rescaled to the patch's statistics
        assert float(seen[0][k].mean()) == pytest.approx(float(x[k].mean()), abs=1e-3)
        assert float(seen[0][k].std()) == pytest.approx(float(x[k].std()), rel=1e-2)
    with pytest.raises(ConfigError, match="regions"):
        m.loss(model, {"image": x, "label": batch["label"]}, lambda a, b: a.sum(), g, 0)


def test_finetune_on_corrected_pairs_cancel_and_install(erm_run, manifest: Path, tmp_path: Path, monkeypatch):
    """The widget's path: corrected (image, label) pairs -> finetune run -> user model."""
    from napari_pandg.io import load_case, read_index
    from napari_pandg.models import list_models
    from napari_pandg.train.finetune import install_model, prepare_finetune

    df = read_index(manifest)
    rows = df[df["sequence"] == "op"].iloc[:2]
    pairs = []
    for r in rows.to_dict("records"):
        img, lab = load_case(r)
        pairs.append((img, lab.with_array((lab.array == PANCREAS).astype(np.uint8))))  # a 0/1 layer
    with pytest.raises(ConfigError, match="no voxel of value 5"):
        prepare_finetune(pairs, erm_run.last_path, tmp_path / "bad", label_value=5)
    with pytest.raises(ConfigError, match="set the label value"):
        prepare_finetune(pairs, erm_run.last_path, tmp_path / "bad2")
    cfg = prepare_finetune(pairs, erm_run.last_path, tmp_path / "ft", label_value=1, epochs=2, steps_per_epoch=2)
    written = read_index(tmp_path / "ft" / "data" / "manifest.csv")
    assert len(written) == 2 and set(written["sequence"]) == {"op"}
    assert set(np.unique(load_case(written.iloc[0])[1].array)) <= {0, PANCREAS}  # 1 -> the model's AMOS id
    assert cfg.method.name == "finetune" and cfg.data.label_map == {PANCREAS: 1}
    with pytest.raises(FileExistsError):
        prepare_finetune(pairs, erm_run.last_path, tmp_path / "ft", label_value=1)

    stop = iter([False, True])  # cancel after the first step
    res = train(cfg, log=lambda s: None, cancel=lambda: next(stop, True))
    assert res.cancelled and res.epochs_done == 0 and not res.last_path.exists()
    seen: list[dict] = []
    res = train(cfg, log=lambda s: None, on_epoch=seen.append)
    assert not res.cancelled and [r["epoch"] for r in seen] == [1, 2]
    assert all(np.isfinite(r["loss"]) and 0 <= r["val_dice"] <= 1 for r in seen)  # 1 of 2 pairs validates
    d = load_checkpoint(res.last_path).description
    assert d.method == "finetune" and d.domains["sequences"] == ["op"]

    monkeypatch.setenv("PANDG_MODELS", str(tmp_path / "models"))
    dst = install_model(res.best_path or res.last_path, "my op model")
    assert dst.name == "my_op_model.pt"
    models = list_models()
    assert "my_op_model" in set(models["name"]) and models.set_index("name").loc["my_op_model", "source"] == "user"
    with pytest.raises(FileExistsError):
        install_model(res.last_path, "my op model")
