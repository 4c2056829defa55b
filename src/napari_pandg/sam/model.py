"""Building a SAM2.1 / MedSAM2 volume predictor offline from a local checkpoint.

torch and sam2 are imported inside the functions, so importing this module is cheap.

The model is built from the yaml configs packaged with ``sam2`` 1.1.0, loaded with OmegaConf and
instantiated with ``hydra.utils.instantiate``. That path does not use hydra's global state
(``GlobalHydra``/``compose``), so building several models in one process works even when another
plugin cleared or re-initialised GlobalHydra (sam2.md section 2.7).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_pandg.sam.errors import SamCheckpointError

#: Config names -> yaml path inside the ``sam2`` package.
CONFIGS: dict[str, str] = {
    "sam2.1_hiera_t": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_hiera_s": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_b+": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_l": "configs/sam2.1/sam2.1_hiera_l.yaml",
}
#: Aliases accepted by :func:`resolve_config`.
CONFIG_ALIASES: dict[str, str] = {
    "tiny": "sam2.1_hiera_t",
    "t": "sam2.1_hiera_t",
    "medsam2": "sam2.1_hiera_t",
    "sam2.1_hiera_tiny": "sam2.1_hiera_t",
    "sam2.1_hiera_t512": "sam2.1_hiera_t",
    "small": "sam2.1_hiera_s",
    "s": "sam2.1_hiera_s",
    "sam2.1_hiera_small": "sam2.1_hiera_s",
    "base_plus": "sam2.1_hiera_b+",
    "base+": "sam2.1_hiera_b+",
    "b+": "sam2.1_hiera_b+",
    "sam2.1_hiera_base_plus": "sam2.1_hiera_b+",
    "large": "sam2.1_hiera_l",
    "l": "sam2.1_hiera_l",
    "sam2.1_hiera_large": "sam2.1_hiera_l",
}
#: Hiera trunk signature (embed_dim, number of blocks) -> config name.
_TRUNK_SIGNATURES: dict[tuple[int, int], str] = {
    (96, 12): "sam2.1_hiera_t",
    (96, 16): "sam2.1_hiera_s",
    (112, 24): "sam2.1_hiera_b+",
    (144, 48): "sam2.1_hiera_l",
}

#: the value of ``config`` that picks the config from the checkpoint's structure (:func:`detect_config`)
AUTO_CONFIG = "auto"

PREDICTOR_TARGET = "napari_pandg.sam.predictor.VolumePredictor"


def resolve_config(config: str) -> str:
    """Normalise a config name ('sam2.1_hiera_t', 'tiny', 'medsam2', a yaml file name...)."""
    name = Path(str(config)).name
    name = re.sub(r"\.ya?ml$", "", name)
    key = name.lower()
    if key == AUTO_CONFIG:
        return AUTO_CONFIG
    if key in CONFIGS:
        return key
    if key in CONFIG_ALIASES:
        return CONFIG_ALIASES[key]
    raise ValueError(f"unknown SAM2 config {config!r}; choose {AUTO_CONFIG!r} or one of {sorted(CONFIGS)}")


def resolve_device(device: str = "auto") -> str:
    import torch

    d = (device or "auto").lower()
    if d == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if d.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' requested but CUDA is not available; use 'cpu'")
    return d


def model_overrides(
    image_size: int, target: str = PREDICTOR_TARGET, hole_fill_area: int = 8
) -> list[str]:
    """The dotlist overrides applied on top of the packaged yaml (see docs/sam.md)."""
    return [
        f"model._target_={target}",
        f"model.image_size={int(image_size)}",
        # MedSAM2's fill_hole_area=8, done with scipy by VolumePredictor
        f"model.hole_fill_area={int(hole_fill_area)}",
        # build_sam2_video_predictor(apply_postprocessing=True) overrides, as MedSAM2 uses:
        "model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
        "model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
        "model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
        "model.binarize_mask_from_pts_for_mem_enc=true",
        # upstream hole filling needs the CUDA-only sam2._C extension (sam2.md 2.5): off
        "model.fill_hole_area=0",
        # keep corrected slices as conditioning frames (sam2.md 2.2)
        "model.add_all_frames_to_correct_as_cond=true",
        # the upstream flag crashes in 1.1.0 (sam2.md 2.3); the subclass fixes it, keep it off
        "model.clear_non_cond_mem_around_input=false",
    ]


def build_config(
    config: str, image_size: int, target: str = PREDICTOR_TARGET, hole_fill_area: int = 8
):
    """OmegaConf model config from the packaged sam2 yaml plus :func:`model_overrides`."""
    import sam2
    from omegaconf import OmegaConf

    name = resolve_config(config)
    if name == AUTO_CONFIG:
        raise ValueError("build_config needs a concrete config; 'auto' is resolved from a checkpoint (detect_config)")
    path = Path(sam2.__file__).parent / CONFIGS[name]
    if not path.is_file():
        raise FileNotFoundError(f"sam2 config {path} not found (is sam2==1.1.0 installed?)")
    cfg = OmegaConf.load(path)
    overrides = model_overrides(image_size, target, hole_fill_area)
    if target != PREDICTOR_TARGET:  # only VolumePredictor knows hole_fill_area
        overrides = [o for o in overrides if not o.startswith("model.hole_fill_area")]
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
    OmegaConf.resolve(cfg)
    return cfg


_SIZES = ", ".join(f"{n.split('_')[-1]} ({d}/{b})" for (d, b), n in _TRUNK_SIGNATURES.items())


def _trunk_blocks(keys: list[str]) -> int:
    return len({int(m.group(1)) for k in keys if (m := re.match(r"image_encoder\.trunk\.blocks\.(\d+)\.", k))})


def _layout(state_dict: dict[str, Any]) -> tuple[str | None, str]:
    """(config name or None, what the state dict is), from its keys and shapes alone."""
    keys = list(state_dict)
    if not any(k.startswith("image_encoder.") for k in keys) or not any(k.startswith("sam_mask_decoder.") for k in keys):
        return None, (
            f"not a SAM2 checkpoint: no image_encoder / sam_mask_decoder weights among its {len(keys)} keys "
            f"(e.g. {keys[:3]}); give a MedSAM2 (MedSAM2_latest.pt, ...) or Meta SAM 2.1 file"
        )
    w = state_dict.get("image_encoder.trunk.patch_embed.proj.weight")
    shape = tuple(int(x) for x in w.shape) if hasattr(w, "shape") else ()
    dim, blocks = (shape[0] if shape else -1), _trunk_blocks(keys)
    if len(shape) == 4 and shape[-1] >= 14:  # a plain ViT patchify (16 x 16), not Hiera's 7 x 7 stem
        return None, (
            f"an EfficientTAM / EfficientMedSAM2 checkpoint (ViT image encoder: {shape[-2]} x {shape[-1]} "
            f"patches, embed_dim {dim}, {blocks} blocks), e.g. eff_medsam2_*.pt or efficienttam_*.pt; "
            "these need the efficient_track_anything package and are not supported: use a SAM 2.1 "
            "hiera file such as MedSAM2_latest.pt"
        )
    name = _TRUNK_SIGNATURES.get((dim, blocks))
    if name is None:
        return None, (
            f"a Hiera image encoder with embed_dim {dim} and {blocks} blocks, which matches none of the "
            f"SAM 2.1 sizes (embed_dim/blocks): {_SIZES}"
        )
    if not any(k.startswith("obj_ptr_tpos_proj") or k == "no_obj_embed_spatial" for k in keys):
        size = name.split("_")[-1]
        return None, (
            f"a SAM 2.0 checkpoint (sam2_hiera_{size}.pt layout: no obj_ptr_tpos_proj / no_obj_embed_spatial); "
            f"only SAM 2.1 files are supported: use sam2.1_hiera_{size}.pt or a MedSAM2 file"
        )
    return name, f"SAM 2.1 {name}"


def detect_config(state_dict: dict[str, Any], path: Path | str = "checkpoint") -> str:
    """The SAM 2.1 config a state dict was made for, from its structure (no file name needed).

    MedSAM2 files (``MedSAM2_latest.pt``, ``MedSAM2_2411.pt``, ``MedSAM2_MRI_LiverLesion.pt``,
    ``MedSAM2_CTLesion.pt``, ``MedSAM2_US_Heart.pt``, ``medsam2_FLARE25_RECIST_baseline.pt``) are
    hiera-tiny (``sam2.1_hiera_t``; MedSAM2 runs it at 512 px); Meta's ``sam2.1_hiera_{t,s,b+,l}.pt``
    give their size. EfficientTAM / EfficientMedSAM2, SAM 2.0 and anything else raise
    :class:`SamCheckpointError` saying what the file is.
    """
    name, what = _layout(state_dict)
    if name is None:
        raise SamCheckpointError(f"{path}: {what}")
    return name


def suggest_config(state_dict: dict[str, Any]) -> str | None:
    """The config a state dict fits, or a sentence saying why none does (for error messages)."""
    name, what = _layout(state_dict)
    return name or what


def _read_state_dict(path: Path) -> dict[str, Any]:
    import torch

    if not path.exists():
        raise SamCheckpointError(f"SAM checkpoint not found: {path}")
    if not path.is_file():
        raise SamCheckpointError(f"SAM checkpoint is not a file: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file name
        raise SamCheckpointError(f"cannot read SAM checkpoint {path}: {exc}") from exc
    # MedSAM2 / Meta files and sam2 training checkpoints: {"model": sd, (optimizer, epoch, ...)};
    # Lightning-style files: {"state_dict": sd}
    for wrapper in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) for k in obj):
        raise SamCheckpointError(
            f"{path} is not a SAM2 state dict (expected a dict of tensors or {{'model': state_dict}})"
        )
    if all(k.startswith("module.") for k in obj):  # saved from DistributedDataParallel
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def load_state_dict_strict(model, state_dict: dict[str, Any], path: Path | str, config: str) -> None:
    """Strict load with a readable :class:`SamCheckpointError` on any mismatch."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    mismatched = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state_dict))
        if hasattr(state_dict[k], "shape") and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or mismatched:
        suggestion = suggest_config(state_dict)
        lines = [
            f"SAM checkpoint {path} does not fit config {config!r}: "
            f"{len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(mismatched)} shape-mismatched keys."
        ]
        if missing:
            lines.append(f"  missing e.g. {missing[:4]}")
        if unexpected:
            lines.append(f"  unexpected e.g. {unexpected[:4]}")
        if mismatched:
            lines.append(f"  mismatched e.g. {mismatched[:3]}")
        if suggestion:
            lines.append(f"  The checkpoint keys suggest config {suggestion!r}.")
        lines.append(
            "  MedSAM2 checkpoints (MedSAM2_latest.pt etc.) need config 'sam2.1_hiera_t' at "
            "image_size 512."
        )
        raise SamCheckpointError("\n".join(lines))
    model.load_state_dict(state_dict, strict=True)


@dataclass
class SamEngine:
    """A built volume predictor plus how it was built."""

    model: Any  # napari_pandg.sam.predictor.VolumePredictor
    config: str
    image_size: int
    device: str
    checkpoint: Path | None
    use_autocast: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    def autocast(self):
        """bfloat16 autocast on CUDA (capability >= 8), a no-op context elsewhere."""
        import torch

        if self.use_autocast and self.device.startswith("cuda"):
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def fingerprint(self) -> str:
        """A hash of the weights, config, image size and precision (names on-disk feature caches).

        Computed from the parameters and buffers in memory (not the file path), once per engine:
        ~0.3 s for hiera-tiny. Two engines that would encode a slice differently never share it.
        """
        fp = self.meta.get("fingerprint")
        if fp is None:
            import hashlib

            import torch

            h = hashlib.blake2b(digest_size=16)
            h.update(f"{self.config}|{self.image_size}|{'bf16' if self.use_autocast else 'fp32'}".encode())
            for name, t in sorted(self.model.state_dict().items()):
                h.update(name.encode())
                t = t.detach().to("cpu").contiguous()
                if t.dtype == torch.bfloat16:
                    t = t.float()
                h.update(t.numpy().tobytes())
            fp = self.meta["fingerprint"] = h.hexdigest()
        return fp

    @property
    def encoder_calls(self) -> int:
        """How many slices the image encoder has encoded so far (for tests / benchmarks)."""
        return int(getattr(self.model, "encoder_calls", 0))


def load_sam_model(
    checkpoint: str | Path | None,
    config: str = AUTO_CONFIG,
    image_size: int = 512,
    device: str = "auto",
    *,
    random_init: bool = False,
    autocast: bool | None = None,
    num_threads: int | None = None,
    hole_fill_area: int = 8,
) -> SamEngine:
    """Build the volume predictor and load a local checkpoint strictly.

    Parameters
    ----------
    checkpoint:
        A ``.pt`` file holding a bare SAM2 state dict or ``{"model": state_dict}`` (MedSAM2 and Meta
        checkpoints). Nothing is ever downloaded. ``None`` needs ``random_init=True`` (tests).
    config:
        ``auto`` (default: read from the checkpoint's structure, :func:`detect_config`; hiera-tiny
        without a checkpoint), ``sam2.1_hiera_t`` (MedSAM2), ``sam2.1_hiera_s``,
        ``sam2.1_hiera_b+``, ``sam2.1_hiera_l`` or an alias ('tiny', 'medsam2', ...).
    image_size:
        Model input size. MedSAM2 = 512; Meta SAM2.1 = 1024; tests use 64-128.
    device:
        'auto' (CUDA if available, else CPU), 'cpu', 'cuda', 'cuda:1', ...
    autocast:
        bfloat16 autocast; default on for CUDA devices with bf16 support, never on CPU.
    num_threads:
        ``torch.set_num_threads`` (process-wide) if given.
    hole_fill_area:
        Fill background holes up to this area in the low-res logits (MedSAM2: 8; 0 = off).
    """
    import torch
    from hydra.utils import instantiate

    if image_size % 16 != 0 or image_size < 32:
        raise ValueError(f"image_size must be a multiple of 16 and >= 32, got {image_size}")
    cfg_name = resolve_config(config)
    if checkpoint is None and not random_init:
        raise SamCheckpointError(
            "no SAM checkpoint given: pass the path of a local MedSAM2 / SAM2.1 .pt file "
            "(random weights only with random_init=True, for tests)"
        )
    state_dict = None
    ckpt_path = None
    if checkpoint is not None:
        ckpt_path = Path(checkpoint).expanduser()
        state_dict = _read_state_dict(ckpt_path)  # before building: fail fast on a bad path
    if cfg_name == AUTO_CONFIG:
        cfg_name = detect_config(state_dict, ckpt_path) if state_dict is not None else "sam2.1_hiera_t"
    dev = resolve_device(device)
    if num_threads:
        torch.set_num_threads(int(num_threads))

    cfg = build_config(cfg_name, image_size, hole_fill_area=hole_fill_area)
    model = instantiate(cfg.model, _recursive_=True)
    if state_dict is not None:
        load_state_dict_strict(model, state_dict, ckpt_path, cfg_name)
        del state_dict
    model = model.to(dev).eval()
    if autocast is None:
        autocast = dev.startswith("cuda") and torch.cuda.is_bf16_supported()
    elif autocast and not dev.startswith("cuda"):
        autocast = False  # bf16 autocast only on CUDA (sam2.md section 3)
    return SamEngine(
        model=model,
        config=cfg_name,
        image_size=int(image_size),
        device=dev,
        checkpoint=ckpt_path,
        use_autocast=bool(autocast),
    )


def save_checkpoint(engine_or_model, path: str | Path, wrap: bool = True) -> Path:
    """Save a state dict as ``{"model": sd}`` (``wrap``) or bare; used by tests and tools."""
    import torch

    model = getattr(engine_or_model, "model", engine_or_model)
    sd = model.state_dict()
    path = Path(path)
    torch.save({"model": sd} if wrap else sd, path)
    return path


def build_image_predictor(engine: SamEngine, **kwargs):
    """A ``SAM2ImagePredictor`` on the engine's model, fixed for non-1024 image sizes.

    sam2 1.1.0 hard-codes the 1024 feature sizes (sam2.md 2.6); they are recomputed from
    ``image_size`` here. The segmenter does not need it (its 2D preview goes through the volume
    predictor and reuses the cached slice features); it is provided for 2D images.
    """
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    pred = SAM2ImagePredictor(engine.model, **kwargs)
    s = engine.image_size // 4
    pred._bb_feat_sizes = [(s, s), (s // 2, s // 2), (s // 4, s // 4)]
    return pred
