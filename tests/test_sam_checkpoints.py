"""Published SAM2 / MedSAM2 checkpoint layouts are recognised by their structure (issue 13 §3).

Every model here is built from the yaml configs packaged with sam2 1.1.0 (random weights): the
state-dict layouts are those of the real files of the same architecture. MedSAM2's files
(``MedSAM2_latest.pt``, ``MedSAM2_2411.pt``, ``MedSAM2_MRI_LiverLesion.pt``, ``MedSAM2_CTLesion.pt``,
``medsam2_FLARE25_RECIST_baseline.pt``) are SAM 2.1 hiera-tiny state dicts saved as
``{"model": sd}`` (../shared/reference/sam2.md 4.2). EfficientTAM / EfficientMedSAM2 cannot be built
with sam2 1.1.0; its layout is made from the values of MedSAM2's ``efficientmedsam_s_512`` config.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

from napari_pandg.sam import (  # noqa: E402
    SamCheckpointError,
    detect_config,
    load_sam_model,
)

SIZE = 64


@pytest.fixture(scope="module", autouse=True)
def _env():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    yield
    torch.set_num_threads(old)


def _build_from_yaml(rel: str) -> torch.nn.Module:
    import sam2
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(Path(sam2.__file__).parent / "configs" / rel)
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([f"model.image_size={SIZE}"]))
    OmegaConf.resolve(cfg)
    torch.manual_seed(0)
    return instantiate(cfg.model, _recursive_=True)


@pytest.mark.parametrize(
    ("rel", "expected"),
    [
        ("sam2.1/sam2.1_hiera_t.yaml", "sam2.1_hiera_t"),
        ("sam2.1/sam2.1_hiera_s.yaml", "sam2.1_hiera_s"),
        ("sam2.1/sam2.1_hiera_b+.yaml", "sam2.1_hiera_b+"),
        ("sam2.1/sam2.1_hiera_l.yaml", "sam2.1_hiera_l"),
        ("sam2/sam2_hiera_t.yaml", "SAM 2.0"),
        ("sam2/sam2_hiera_s.yaml", "SAM 2.0"),
        ("sam2/sam2_hiera_b+.yaml", "SAM 2.0"),
        ("sam2/sam2_hiera_l.yaml", "SAM 2.0"),
    ],
)
def test_every_packaged_sam2_layout_is_recognised(rel: str, expected: str) -> None:
    sd = _build_from_yaml(rel).state_dict()
    if expected.startswith("sam2.1"):
        assert detect_config(sd, rel) == expected
    else:  # SAM 2.0 files (sam2_hiera_*.pt): refused, naming the 2.1 file to use instead
        size = rel.split("_")[-1].removesuffix(".yaml")
        with pytest.raises(SamCheckpointError, match=r"SAM 2\.0 checkpoint.*" + re.escape(f"sam2.1_hiera_{size}.pt")):
            detect_config(sd, rel)


@pytest.fixture(scope="module")
def tiny_sd() -> dict:
    return _build_from_yaml("sam2.1/sam2.1_hiera_t.yaml").state_dict()


@pytest.mark.parametrize(
    ("name", "layout"),
    [
        ("MedSAM2_latest.pt", "wrapped"),
        ("MedSAM2_MRI_LiverLesion.pt", "wrapped"),
        ("medsam2_FLARE25_RECIST_baseline.pt", "training"),  # as sam2's trainer saves: + optimizer, epoch
        ("my_finetune_ddp.pt", "ddp"),
        ("lightning.ckpt", "lightning"),
    ],
)
def test_medsam2_files_load_by_structure(tiny_sd: dict, tmp_path: Path, name: str, layout: str) -> None:
    sd = tiny_sd
    if layout == "wrapped":
        obj = {"model": sd}
    elif layout == "training":
        obj = {"model": sd, "optimizer": {"state": {}, "param_groups": [{"lr": 5e-6, "params": [0]}]},
               "epoch": 99, "loss": {"core_loss": 0.1}, "steps": {"train": 10}}  # fmt: skip
    elif layout == "ddp":
        obj = {f"module.{k}": v for k, v in sd.items()}
    else:
        obj = {"state_dict": sd}
    path = tmp_path / name
    torch.save(obj, path)
    eng = load_sam_model(path, image_size=SIZE, device="cpu")  # config="auto" by default
    assert eng.config == "sam2.1_hiera_t"
    got = eng.model.state_dict()
    for k in ("image_encoder.trunk.patch_embed.proj.weight", "obj_ptr_tpos_proj.weight", "no_obj_embed_spatial"):
        assert torch.equal(got[k], sd[k]), k


def test_meta_small_checkpoint_picks_its_config(tmp_path: Path) -> None:
    sd = _build_from_yaml("sam2.1/sam2.1_hiera_s.yaml").state_dict()
    path = tmp_path / "sam2.1_hiera_small.pt"
    torch.save({"model": sd}, path)
    eng = load_sam_model(path, image_size=SIZE, device="cpu")
    assert eng.config == "sam2.1_hiera_s"
    assert torch.equal(eng.model.state_dict()["image_encoder.trunk.pos_embed"], sd["image_encoder.trunk.pos_embed"])
    # an explicit config that does not fit still says which one would
    with pytest.raises(SamCheckpointError, match=r"(?s)sam2.1_hiera_small\.pt.*'sam2\.1_hiera_t'.*suggest config 'sam2\.1_hiera_s'"):
        load_sam_model(path, config="sam2.1_hiera_t", image_size=SIZE, device="cpu")


def _efficienttam_sd(tiny_sd: dict) -> dict:
    """An EfficientMedSAM2-s layout: ViT trunk (patch 16, 384 wide, 12 blocks) + ViTDetNeck."""
    sd = {k: v for k, v in tiny_sd.items() if not k.startswith("image_encoder.")}
    d = 384
    sd["image_encoder.trunk.patch_embed.proj.weight"] = torch.zeros(d, 3, 16, 16)
    sd["image_encoder.trunk.patch_embed.proj.bias"] = torch.zeros(d)
    sd["image_encoder.trunk.pos_embed"] = torch.zeros(1, 197, d)
    for i in range(12):
        p = f"image_encoder.trunk.blocks.{i}."
        sd[p + "norm1.weight"] = torch.zeros(d)
        sd[p + "attn.qkv.weight"] = torch.zeros(3 * d, d)
        sd[p + "attn.proj.weight"] = torch.zeros(d, d)
        sd[p + "mlp.fc1.weight"] = torch.zeros(4 * d, d)
    sd["image_encoder.neck.convs.0.conv.weight"] = torch.zeros(256, d, 1, 1)
    return sd


def test_efficienttam_checkpoint_is_refused_clearly(tiny_sd: dict, tmp_path: Path) -> None:
    path = tmp_path / "eff_medsam2_small_FLARE25_RECIST_baseline.pt"
    torch.save({"model": _efficienttam_sd(tiny_sd)}, path)
    with pytest.raises(SamCheckpointError, match=r"eff_medsam2_small.*EfficientTAM.*16 x 16.*384.*12 blocks.*not supported"):
        load_sam_model(path, image_size=SIZE, device="cpu")
    with pytest.raises(SamCheckpointError, match=r"(?s)does not fit config 'sam2\.1_hiera_t'.*EfficientTAM"):
        load_sam_model(path, config="tiny", image_size=SIZE, device="cpu")


def test_unknown_hiera_size_and_foreign_files_are_refused(tiny_sd: dict, tmp_path: Path) -> None:
    extra = dict(tiny_sd)
    for k, v in tiny_sd.items():
        if k.startswith("image_encoder.trunk.blocks.11."):
            extra[k.replace("blocks.11.", "blocks.12.")] = v
    with pytest.raises(SamCheckpointError, match=r"embed_dim 96 and 13 blocks.*none of the SAM 2.1 sizes.*t \(96/12\)"):
        detect_config(extra)
    unet = torch.nn.Conv3d(1, 2, 3).state_dict()
    path = tmp_path / "unet.pt"
    torch.save({"model": unet}, path)
    with pytest.raises(SamCheckpointError, match=r"unet\.pt: not a SAM2 checkpoint.*MedSAM2"):
        load_sam_model(path, image_size=SIZE, device="cpu")


def test_cli_reports_what_the_checkpoint_is(tiny_sd: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``pandg sam`` with an EfficientTAM file: exit 2, a clear message naming the file, nothing written."""
    import numpy as np

    from napari_pandg.cli import main
    from napari_pandg.io import save_volume
    from napari_pandg.volume import Volume

    ckpt = tmp_path / "efficienttam_s_512x512.pt"
    torch.save({"model": _efficienttam_sd(tiny_sd)}, ckpt)
    img = tmp_path / "img.nii.gz"
    arr = np.random.default_rng(0).random((32, 32, 4)).astype(np.float32)
    save_volume(Volume(array=arr, affine=np.eye(4)), img)
    out = tmp_path / "mask.nii.gz"
    code = main(["sam", "--checkpoint", str(ckpt), "--input", str(img), "--box", "2,4,4,20,20",
                 "--output", str(out), "--image-size", str(SIZE), "--device", "cpu"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and "efficienttam_s_512x512.pt" in err and "EfficientTAM" in err
    assert not out.exists()
