"""``VolumePredictor``: sam2 1.1.0's video predictor adapted to in-memory volumes.

Imports torch and sam2 at module level; :mod:`napari_pandg.sam.model` imports this module only
when a model is built (the hydra ``_target_`` points here).

Changes to ``SAM2VideoPredictor`` (sam2.md sections 2 and 5.4):

* ``init_state`` takes the frames directly: a (D, 3, S, S) tensor / array (the MedSAM2
  ``SAM2VideoPredictorNPZ`` input) or any lazy sequence returning a normalised (3, S, S) slice.
  No JPEG folder, no warm-up encoding unless asked.
* Slice features: with a :class:`FeatureCache` in the state, every encoded slice's backbone output
  is kept, and shared across states. Re-propagation after a correction never re-encodes a slice.
  The position encodings (identical for every slice) are stored once. With a
  :class:`FeatureStore` the features also go to disk, so another session on the same volume and
  model encodes nothing.
* small-hole filling of the low-res logits with scipy (``hole_fill_area``, MedSAM2 uses 8)
  instead of the CUDA-only ``sam2._C`` kernel (2.5).
* ``maskmem_features`` are cast back from bfloat16 when autocast is off (CPU fp32 crash, 2.4).
* ``_clear_obj_non_cond_mem_around_input`` exists (1.1.0 calls a missing method, 2.3).
* ``propagate_in_video`` without tqdm output, otherwise the upstream loop.
* ``predict_slice``: one SAM decoder pass on a slice as an initial conditioning frame (no memory),
  optionally with previous mask logits as the mask prompt, without touching the state.
* ``forward_image`` counts encoded slices in ``encoder_calls``.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sam2.sam2_video_predictor import SAM2VideoPredictor

from napari_pandg.sam.preprocess import slice_to_model_input


class LazySlices:
    """A uint8 (D, H, W) stack served as normalised (3, S, S) float32 tensors on demand."""

    def __init__(self, slices_u8: np.ndarray, image_size: int):
        if slices_u8.ndim != 3:
            raise ValueError(f"expected (D, H, W), got {slices_u8.shape}")
        self.slices = slices_u8
        self.image_size = int(image_size)

    def __len__(self) -> int:
        return int(self.slices.shape[0])

    def __getitem__(self, idx: int) -> torch.Tensor:
        return torch.from_numpy(slice_to_model_input(self.slices[idx], self.image_size))


class FeatureStore:
    """Slice features of one volume for one model, kept on disk (micro-sam's cached embeddings).

    One folder per (volume, model): ``meta.json`` (what the features belong to), ``pos.pt`` (the
    position encodings, the same for every slice) and ``z0000.pt`` ... (each slice's three
    backbone levels, fp32 as computed, so cached and fresh results are identical). Files are
    written atomically as slices get encoded, so an interrupted run keeps what it did; the folder
    name is derived from hashes of the normalised volume and of the model weights, so a changed
    image, model, image size or precision never reads stale features. ~4.2 MB per slice at 512 px.

    A file that cannot be read (truncated, other format) is reported with a warning and treated as
    missing: the slice is encoded again and the file replaced. Write errors (disk full, read-only
    folder) turn the store off with a warning; segmentation goes on from memory.
    """

    FORMAT = "napari-pandg/sam-features/1"

    def __init__(self, root: str | Path, volume_key: str, model_key: str, meta: dict | None = None):
        self.root = Path(root).expanduser()
        self.volume_key = str(volume_key)
        self.model_key = str(model_key)
        self.path = self.root / f"{self.volume_key[:16]}-{self.model_key[:16]}"
        self.meta = {"format": self.FORMAT, "volume": self.volume_key, "model": self.model_key, **(meta or {})}
        self.enabled = True
        self.reads = 0
        self.writes = 0
        self._pos: tuple[str, list[torch.Tensor]] | None = None  # (device, tensors) once read
        if self.root.exists() and not self.root.is_dir():
            raise NotADirectoryError(f"feature cache folder {self.root} is a file; choose a folder")
        if self.path.exists():
            self._check_meta()

    # -- helpers
    def _slice_file(self, idx: int) -> Path:
        return self.path / f"z{int(idx):04d}.pt"

    def _check_meta(self) -> None:
        mfile = self.path / "meta.json"
        try:
            found = json.loads(mfile.read_text())
        except (OSError, ValueError):
            found = None
        keys = ("format", "volume", "model")
        if found is None or any(found.get(k) != self.meta.get(k) for k in keys):
            warnings.warn(
                f"{self.path} holds features of another volume or model (or an unreadable meta.json); "
                "they are ignored and replaced as slices get encoded",
                RuntimeWarning,
                stacklevel=3,
            )
            for f in [*self.path.glob("z*.pt"), self.path / "pos.pt", self.path / "meta.json"]:
                with contextlib.suppress(OSError):  # e.g. a folder where a file should be
                    f.unlink(missing_ok=True)

    def _load(self, f: Path, device):
        try:
            return torch.load(f, map_location=device, weights_only=True)
        except Exception as exc:  # truncated / foreign file: encode again
            warnings.warn(f"cannot read cached features {f} ({exc}); encoding the slice again",
                          RuntimeWarning, stacklevel=3)
            return None

    # -- API
    def slices(self) -> list[int]:
        """Slices whose features are on disk."""
        if not self.path.is_dir():
            return []
        out = []
        for f in self.path.glob("z*.pt"):
            try:
                out.append(int(f.stem[1:]))
            except ValueError:
                continue
        return sorted(out)

    def read(self, idx: int, device) -> dict | None:
        """``{"backbone_fpn": [...], "vision_pos_enc": [...]}`` of a stored slice, or None."""
        if not self.enabled:
            return None
        f = self._slice_file(idx)
        if not f.is_file() or not (self.path / "pos.pt").is_file():
            return None
        fpn = self._load(f, device)
        if self._pos is not None and self._pos[0] == str(device):
            pos = self._pos[1]
        else:  # ~21 MB at 512 px, the same for every slice: read once
            pos = self._load(self.path / "pos.pt", device)
            if isinstance(pos, list):
                self._pos = (str(device), pos)
        if not (isinstance(fpn, list) and isinstance(pos, list) and len(fpn) == len(pos)
                and all(isinstance(t, torch.Tensor) for t in fpn + pos)):
            return None
        self.reads += 1
        return {"backbone_fpn": fpn, "vision_pos_enc": pos}

    def write(self, idx: int, backbone_out: dict) -> None:
        if not self.enabled:
            return
        from napari_pandg.models.checkpoint import atomic_torch_save

        try:
            self.path.mkdir(parents=True, exist_ok=True)
            mfile = self.path / "meta.json"
            if not mfile.is_file():
                tmp = mfile.with_name(".meta.json.tmp")
                tmp.write_text(json.dumps(self.meta, indent=1))
                os.replace(tmp, mfile)
            if not (self.path / "pos.pt").is_file():
                atomic_torch_save([t.detach().cpu() for t in backbone_out["vision_pos_enc"]], self.path / "pos.pt")
            atomic_torch_save([t.detach().cpu() for t in backbone_out["backbone_fpn"]], self._slice_file(idx))
            self.writes += 1
        except OSError as exc:
            self.enabled = False
            warnings.warn(f"cannot write slice features to {self.path} ({exc}); the disk cache is off "
                          "for this volume (segmentation goes on)", RuntimeWarning, stacklevel=3)

    @property
    def nbytes(self) -> int:
        if not self.path.is_dir():
            return 0
        return int(sum(f.stat().st_size for f in self.path.glob("*.pt")))


class FeatureCache:
    """Backbone features of every encoded slice (shared by all inference states of a volume).

    At 512 px one slice costs ~4.2 MB (fp32): backbone_fpn 32x128^2 + 64x64^2 + 256x32^2. The
    vision position encodings do not depend on the slice and are kept once. With a
    :class:`FeatureStore`, slices are also written to disk when encoded and read from there
    when they are not in memory (another session, or evicted by ``max_slices``).
    """

    def __init__(self, max_slices: int | None = None, store: FeatureStore | None = None):
        self.max_slices = max_slices
        self.store = store
        self._fpn: OrderedDict[int, list[torch.Tensor]] = OrderedDict()
        self._pos: list[torch.Tensor] | None = None
        self.hits = 0
        self.misses = 0

    def __contains__(self, idx: int) -> bool:
        return idx in self._fpn

    def __len__(self) -> int:
        return len(self._fpn)

    def clear(self) -> None:
        self._fpn.clear()
        self._pos = None

    def get(self, idx: int, device=None):
        fpn = self._fpn.get(idx)
        if fpn is None:
            if self.store is None:
                return None
            out = self.store.read(idx, device if device is not None else "cpu")
            if out is None:
                return None
            self._remember(idx, out)
            fpn = self._fpn[idx]
        self._fpn.move_to_end(idx)
        self.hits += 1
        return {"backbone_fpn": list(fpn), "vision_pos_enc": list(self._pos)}

    def _remember(self, idx: int, backbone_out: dict) -> None:
        self._fpn[idx] = list(backbone_out["backbone_fpn"])
        if self._pos is None:
            self._pos = list(backbone_out["vision_pos_enc"])
        if self.max_slices is not None:
            while len(self._fpn) > self.max_slices:
                self._fpn.popitem(last=False)

    def attach_store(self, store: FeatureStore | None) -> int:
        """Use ``store`` from now on and write the slices held in memory that it lacks.

        Returns how many slices were written (0 for ``None``, which detaches the store).
        """
        self.store = store
        if store is None or self._pos is None:
            return 0
        on_disk = set(store.slices())
        before = store.writes
        for idx, fpn in list(self._fpn.items()):
            if idx not in on_disk and store.enabled:
                store.write(idx, {"backbone_fpn": fpn, "vision_pos_enc": self._pos})
        return store.writes - before

    def put(self, idx: int, backbone_out: dict) -> None:
        """A freshly encoded slice (counted as a miss; written to the store if there is one)."""
        self.misses += 1
        self._remember(idx, backbone_out)
        if self.store is not None:
            self.store.write(idx, backbone_out)

    @property
    def nbytes(self) -> int:
        n = sum(t.numel() * t.element_size() for fpn in self._fpn.values() for t in fpn)
        if self._pos:
            n += sum(t.numel() * t.element_size() for t in self._pos)
        return int(n)


def fill_holes_cpu(mask_scores: torch.Tensor, max_area: int) -> torch.Tensor:
    """scipy version of sam2's ``fill_holes_in_mask_scores`` (which needs the CUDA ``_C``).

    Background components (scores <= 0, 8-connectivity) of area <= ``max_area`` get score 0.1,
    exactly as upstream (border-touching components included).
    """
    from scipy import ndimage

    if max_area <= 0:
        return mask_scores
    bg = (mask_scores <= 0).detach().cpu().numpy()
    fill = np.zeros_like(bg)
    structure = np.ones((3, 3), dtype=bool)
    for idx in np.ndindex(bg.shape[:-2]):
        lab, n = ndimage.label(bg[idx], structure=structure)
        if n == 0:
            continue
        areas = np.bincount(lab.ravel())
        small = areas <= max_area
        small[0] = False
        fill[idx] = small[lab]
    if not fill.any():
        return mask_scores
    is_hole = torch.from_numpy(fill).to(mask_scores.device)
    return torch.where(is_hole, torch.tensor(0.1, dtype=mask_scores.dtype, device=mask_scores.device), mask_scores)


class VolumePredictor(SAM2VideoPredictor):
    """SAM2 video predictor for volumes held in memory (slices = frames).

    ``hole_fill_area``: fill background holes up to this area in the low-res (S/4) logits, as
    sam2's ``fill_hole_area`` (MedSAM2 uses 8) but with scipy instead of the CUDA extension.
    The upstream ``fill_hole_area`` must stay 0 (it would call the missing ``sam2._C``).
    """

    def __init__(self, *args, hole_fill_area: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.hole_fill_area = int(hole_fill_area)
        self.encoder_calls = 0

    # ------------------------------------------------------------------ encoder
    def forward_image(self, img_batch: torch.Tensor):
        self.encoder_calls += int(img_batch.shape[0])
        return super().forward_image(img_batch)

    # ------------------------------------------------------------------ state
    @torch.inference_mode()
    def init_state(
        self,
        images,
        video_height: int | None = None,
        video_width: int | None = None,
        offload_video_to_cpu: bool = True,
        offload_state_to_cpu: bool = False,
        async_loading_frames: bool = False,
        *,
        feature_cache: FeatureCache | None = None,
        warm_up: bool = False,
    ):
        """Inference state for a preprocessed slice stack.

        ``images``: (D, 3, S, S) tensor or array (ImageNet-normalised, as MedSAM2's
        ``img_resized``), or a sequence such as :class:`LazySlices`. ``video_height`` /
        ``video_width``: the original slice size (H, W) that outputs are resized to (default S).
        ``feature_cache``: keep every slice's features there (shared across states).
        """
        if isinstance(images, (str, bytes)) or hasattr(images, "__fspath__"):
            raise TypeError(
                "VolumePredictor.init_state takes a slice stack, not a path; "
                "use SAM2VideoPredictor for JPEG folders / videos"
            )
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(images)
        if isinstance(images, torch.Tensor):
            if images.ndim != 4 or images.shape[1] != 3:
                raise ValueError(f"expected a (D, 3, S, S) stack, got {tuple(images.shape)}")
            if tuple(images.shape[-2:]) != (self.image_size, self.image_size):
                raise ValueError(
                    f"slices are {tuple(images.shape[-2:])}, the model needs "
                    f"{(self.image_size, self.image_size)}"
                )
        elif not isinstance(images, Sequence) and not (
            hasattr(images, "__len__") and hasattr(images, "__getitem__")
        ):
            raise TypeError(f"unsupported slice source {type(images)!r}")
        if len(images) == 0:
            raise ValueError("empty slice stack")
        compute_device = self.device
        state: dict = {}
        state["images"] = images
        state["num_frames"] = len(images)
        state["offload_video_to_cpu"] = offload_video_to_cpu
        state["offload_state_to_cpu"] = offload_state_to_cpu
        state["video_height"] = int(video_height or self.image_size)
        state["video_width"] = int(video_width or self.image_size)
        state["device"] = compute_device
        state["storage_device"] = torch.device("cpu") if offload_state_to_cpu else compute_device
        state["point_inputs_per_obj"] = {}
        state["mask_inputs_per_obj"] = {}
        state["cached_features"] = {}
        state["feature_cache"] = feature_cache
        state["constants"] = {}
        state["obj_id_to_idx"] = OrderedDict()
        state["obj_idx_to_id"] = OrderedDict()
        state["obj_ids"] = []
        state["output_dict_per_obj"] = {}
        state["temp_output_dict_per_obj"] = {}
        state["frames_tracked_per_obj"] = {}
        if warm_up:
            self._get_image_feature(state, frame_idx=0, batch_size=1)
        return state

    def _get_image_feature(self, inference_state, frame_idx, batch_size):
        cache: FeatureCache | None = inference_state.get("feature_cache")
        if cache is None:
            return super()._get_image_feature(inference_state, frame_idx, batch_size)
        backbone_out = cache.get(frame_idx, inference_state["device"])
        if backbone_out is None:
            device = inference_state["device"]
            image = inference_state["images"][frame_idx].to(device).float().unsqueeze(0)
            backbone_out = self.forward_image(image)
            cache.put(frame_idx, backbone_out)
        expanded = {
            "backbone_fpn": [f.expand(batch_size, -1, -1, -1) for f in backbone_out["backbone_fpn"]],
            "vision_pos_enc": [
                p.expand(batch_size, -1, -1, -1) for p in backbone_out["vision_pos_enc"]
            ],
        }
        features = self._prepare_backbone_features(expanded)
        # the image tensor itself (first element) is not used by any caller
        return (None,) + features

    # ------------------------------------------------------------------ dtype fix
    @staticmethod
    def _autocast_on(inference_state) -> bool:
        dev = inference_state["device"]
        dev_type = dev.type if isinstance(dev, torch.device) else str(dev).split(":")[0]
        try:
            return bool(torch.is_autocast_enabled(dev_type))
        except TypeError:  # older torch without the device_type argument
            return bool(torch.is_autocast_enabled())

    def _memory_dtype(self, inference_state) -> torch.dtype:
        if self._autocast_on(inference_state):
            return torch.bfloat16  # upstream behaviour under autocast
        return next(self.parameters()).dtype

    def _run_single_frame_inference(self, inference_state, *args, **kwargs):
        compact_out, pred_masks = super()._run_single_frame_inference(
            inference_state, *args, **kwargs
        )
        if self.hole_fill_area > 0:
            pred_masks = fill_holes_cpu(pred_masks, self.hole_fill_area)
            compact_out["pred_masks"] = pred_masks.to(inference_state["storage_device"])
        mm = compact_out["maskmem_features"]
        if mm is not None:
            # upstream rounds to bf16 (kept: same numbers) but must not leave the dtype at bf16
            compact_out["maskmem_features"] = mm.to(self._memory_dtype(inference_state))
        return compact_out, pred_masks

    def _run_memory_encoder(self, inference_state, *args, **kwargs):
        mm, pos = super()._run_memory_encoder(inference_state, *args, **kwargs)
        return mm.to(self._memory_dtype(inference_state)), pos

    # ------------------------------------------------------------------ 1.1.0 bug fix
    def _clear_obj_non_cond_mem_around_input(self, inference_state, frame_idx, obj_idx):
        r = self.memory_temporal_stride_for_eval
        begin = frame_idx - r * self.num_maskmem
        end = frame_idx + r * self.num_maskmem
        non_cond = inference_state["output_dict_per_obj"][obj_idx]["non_cond_frame_outputs"]
        for t in range(begin, end + 1):
            non_cond.pop(t, None)

    # ------------------------------------------------------------------ propagation
    @torch.inference_mode()
    def propagate_in_video(
        self,
        inference_state,
        start_frame_idx=None,
        max_frame_num_to_track=None,
        reverse=False,
    ):
        """The 1.1.0 ``propagate_in_video`` loop without the tqdm progress bar."""
        self.propagate_in_video_preflight(inference_state)
        obj_ids = inference_state["obj_ids"]
        num_frames = inference_state["num_frames"]
        batch_size = self._get_obj_num(inference_state)
        if start_frame_idx is None:
            start_frame_idx = min(
                t
                for obj_output_dict in inference_state["output_dict_per_obj"].values()
                for t in obj_output_dict["cond_frame_outputs"]
            )
        if max_frame_num_to_track is None:
            max_frame_num_to_track = num_frames
        if reverse:
            end_frame_idx = max(start_frame_idx - max_frame_num_to_track, 0)
            if start_frame_idx > 0:
                processing_order = range(start_frame_idx, end_frame_idx - 1, -1)
            else:
                processing_order = []
        else:
            end_frame_idx = min(start_frame_idx + max_frame_num_to_track, num_frames - 1)
            processing_order = range(start_frame_idx, end_frame_idx + 1)

        for frame_idx in processing_order:
            pred_masks_per_obj = [None] * batch_size
            for obj_idx in range(batch_size):
                obj_output_dict = inference_state["output_dict_per_obj"][obj_idx]
                if frame_idx in obj_output_dict["cond_frame_outputs"]:
                    current_out = obj_output_dict["cond_frame_outputs"][frame_idx]
                    pred_masks = current_out["pred_masks"].to(
                        inference_state["device"], non_blocking=True
                    )
                    if self.clear_non_cond_mem_around_input:
                        self._clear_obj_non_cond_mem_around_input(
                            inference_state, frame_idx, obj_idx
                        )
                else:
                    current_out, pred_masks = self._run_single_frame_inference(
                        inference_state=inference_state,
                        output_dict=obj_output_dict,
                        frame_idx=frame_idx,
                        batch_size=1,
                        is_init_cond_frame=False,
                        point_inputs=None,
                        mask_inputs=None,
                        reverse=reverse,
                        run_mem_encoder=True,
                    )
                    obj_output_dict["non_cond_frame_outputs"][frame_idx] = current_out
                inference_state["frames_tracked_per_obj"][obj_idx][frame_idx] = {
                    "reverse": reverse
                }
                pred_masks_per_obj[obj_idx] = pred_masks
            if len(pred_masks_per_obj) > 1:
                all_pred_masks = torch.cat(pred_masks_per_obj, dim=0)
            else:
                all_pred_masks = pred_masks_per_obj[0]
            _, video_res_masks = self._get_orig_video_res_output(inference_state, all_pred_masks)
            yield frame_idx, obj_ids, video_res_masks

    # ------------------------------------------------------------------ single slice
    @torch.inference_mode()
    def predict_slice(
        self,
        inference_state,
        frame_idx: int,
        points: torch.Tensor | np.ndarray,
        labels: torch.Tensor | np.ndarray,
        prior_logits: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM on one slice with no memory (an initial conditioning frame); state untouched.

        ``points``: (N, 2) (x, y) in original pixels (box corners first with labels 2/3);
        ``labels``: (N,) 1 / 0 / 2 / 3. ``prior_logits``: optional (S/4, S/4) or (H, W) mask
        logits fed as the mask prompt with the points (as SAM2 feeds the previous logits
        with correction clicks). Returns (video-resolution logits (H, W), low-res logits).
        """
        dev = inference_state["device"]
        pts = torch.as_tensor(np.asarray(points, dtype=np.float32)).reshape(1, -1, 2)
        lab = torch.as_tensor(np.asarray(labels, dtype=np.int32)).reshape(1, -1)
        scale = torch.tensor(
            [inference_state["video_width"], inference_state["video_height"]], dtype=torch.float32
        )
        pts = (pts / scale * self.image_size).to(dev)
        lab = lab.to(dev)
        point_inputs = {"point_coords": pts, "point_labels": lab}
        prev = None
        if prior_logits is not None:
            prev = prior_logits.to(dev, dtype=torch.float32)
            while prev.ndim < 4:
                prev = prev.unsqueeze(0)
            lo = self.image_size // 4
            if tuple(prev.shape[-2:]) != (lo, lo):
                prev = F.interpolate(
                    prev, size=(lo, lo), mode="bilinear", align_corners=False, antialias=True
                )
            prev = torch.clamp(prev, -32.0, 32.0)
        _, pred_masks = self._run_single_frame_inference(
            inference_state=inference_state,
            output_dict={"cond_frame_outputs": {}, "non_cond_frame_outputs": {}},
            frame_idx=frame_idx,
            batch_size=1,
            is_init_cond_frame=True,
            point_inputs=point_inputs,
            mask_inputs=None,
            reverse=False,
            run_mem_encoder=False,
            prev_sam_mask_logits=prev,
        )
        _, video_res = self._get_orig_video_res_output(inference_state, pred_masks)
        return video_res[0, 0], pred_masks[0, 0]
