"""3D box/point prompting, propagation and correction on a volume (Qt-free).

Axis convention (the same as the ``pandg sam`` CLI)
---------------------------------------------------
Volumes and 3D masks are numpy arrays in NIfTI storage order ``(X, Y, Z)`` = ``Volume.array``.
Slice ``z`` is ``array[:, :, z]``; the model sees it as the 2D image ``array[:, :, z].T`` (rows = Y,
columns = X). Prompts are voxel indices of the stored array:

* ``box = (x0, y0, x1, y1)``: x along the first axis, y along the second axis (corners inclusive,
  in any order);
* ``points = [(x, y, +1 | -1), ...]``: +1 (or 1 / '+' / True) positive, -1 (or 0 / '-') negative.

2D masks going in and out (``preview``, ``callback``, ``correct(mask2d=...)``) are ``(X, Y)``
arrays, i.e. ``mask3d[:, :, z] == mask2d``. 3D masks are ``uint8`` ``(X, Y, Z)``.

Protocol (MedSAM2 ``medsam2_infer_3D_CT.py``): prompts on the key slice -> propagate forward from
the key slice -> reset the tracking state, prompts again -> propagate in reverse -> union of
``logits > 0`` -> largest 3D connected component (26-connectivity, as ``skimage.measure.label``).
See ``docs/sam.md`` for the correction design and the differences from the reference.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_pandg.labels import PANCREAS
from napari_pandg.postprocess import largest_connected_component
from napari_pandg.sam.errors import SamPromptError, SamStateError
from napari_pandg.sam.preprocess import normalize_volume

#: callback(z, mask2d_xy, done, total) -> False to stop
Callback = Callable[[int, np.ndarray, int, int], Any]

_OBJ_ID = 1


@dataclass
class _Anchor:
    """A conditioning slice: point/box prompts or a 2D mask (model orientation (Y, X))."""

    points: np.ndarray | None = None  # (N, 2) float32 (x, y); box corners first
    labels: np.ndarray | None = None  # (N,) int32 in {0, 1, 2, 3}
    mask: np.ndarray | None = None  # bool (H, W) = (Y, X)


@dataclass
class _SlicePrompts:
    """Prompts given so far on one slice (clicks accumulate until a new box)."""

    box: tuple[float, float, float, float] | None = None
    points: list[tuple[float, float, int]] = field(default_factory=list)


@dataclass
class _Snapshot:
    """One object's state before an action; ``commit`` = (voxels it labelled, their old values)."""

    mask: np.ndarray | None
    anchors: dict[int, _Anchor]
    prompts: dict[int, _SlicePrompts]
    z_range: tuple[int, int] | None
    commit: tuple[np.ndarray, np.ndarray, int] | None = None


@dataclass
class _Object:
    """One object being segmented: its mask, conditioning slices, prompts and undo history."""

    label_id: int
    name: str
    mask: np.ndarray | None = None  # bool (Z, Y, X)
    anchors: dict[int, _Anchor] = field(default_factory=dict)
    prompts: dict[int, _SlicePrompts] = field(default_factory=dict)
    z_range: tuple[int, int] | None = None
    undo: list[_Snapshot] = field(default_factory=list)


def _check_label_id(label_id: Any) -> int:
    try:
        lab = int(label_id)
    except (TypeError, ValueError) as exc:
        raise SamPromptError(f"label id {label_id!r} is not an integer") from exc
    if lab != label_id or not 1 <= lab <= 255:
        raise SamPromptError(f"label id must be an integer in 1..255, got {label_id!r}")
    return lab


def _default_name(label_id: int) -> str:
    from napari_pandg.labels import NAMES

    return NAMES.get(label_id, f"object {label_id}")


def _parse_label(v: Any) -> int:
    if isinstance(v, str):
        s = v.strip()
        if s in ("+", "+1", "1", "pos", "positive"):
            return 1
        if s in ("-", "-1", "0", "neg", "negative"):
            return 0
        raise SamPromptError(f"point label {v!r} must be '+' or '-'")
    if isinstance(v, (bool, np.bool_)):
        return int(bool(v))
    try:
        f = float(v)
    except (TypeError, ValueError) as exc:
        raise SamPromptError(f"point label {v!r} must be +1 / -1") from exc
    if f > 0:
        return 1
    if f in (0.0, -1.0) or f < 0:
        return 0
    raise SamPromptError(f"point label {v!r} must be +1 / -1")


def masks_agree(a: np.ndarray, b: np.ndarray, min_dice: float) -> bool:
    """Whether two 2D masks agree: both empty, or Dice >= ``min_dice``."""
    na, nb = int(np.count_nonzero(a)), int(np.count_nonzero(b))
    if na + nb == 0:
        return True
    return 2.0 * np.count_nonzero(np.logical_and(a, b)) / (na + nb) >= min_dice


class VolumeSegmenter:
    """MedSAM2 box-and-propagate segmentation with corrections, undo and commit.

    Not thread-safe: call it from one worker thread at a time (the callback runs in that thread).
    """

    def __init__(
        self,
        engine,
        *,
        modality: str = "mri",
        window: str | tuple[float, float] | None = None,
        keep_largest: bool = True,
        max_cached_slices: int | None = None,
        max_undo: int = 20,
        cache_dir: str | Path | None = None,
    ):
        self.engine = engine
        #: folder for slice features on disk (None: memory only); see :class:`FeatureStore`
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        self.modality = modality
        self.window = window
        self.keep_largest = keep_largest
        self.max_cached_slices = max_cached_slices
        self.max_undo = int(max_undo)
        self.last_cancelled = False
        #: slices the last propagate()/correct() computed, and where a correction converged
        #: ({"forward": z, "backward": z}: the pass stopped there, the slices beyond were kept)
        self.last_visited: list[int] = []
        self.last_converged: dict[str, int] = {}
        #: where each pass of the last propagate() stopped early on empty slices ({direction: z})
        self.last_stopped_empty: dict[str, int] = {}
        self._vol: np.ndarray | None = None  # uint8 (Z, Y, X)
        self._frames = None
        self._cache = None
        self._committed: np.ndarray | None = None  # uint8 (Z, Y, X)
        #: objects in progress by label id (creation order); prompts act on the active one
        self._objects: dict[int, _Object] = {}
        self._active = PANCREAS
        self._reset_objects()

    # ------------------------------------------------------------------ volume
    def set_volume(
        self,
        array,
        modality: str | None = None,
        window: str | tuple[float, float] | None = None,
    ) -> None:
        """Normalise a (X, Y, Z) volume (MedSAM2 MRI/CT recipe); slices are encoded lazily.

        Accepts a numpy array or a :class:`napari_pandg.volume.Volume`. Clears the feature cache,
        the current object, the committed labels and the undo history. With ``cache_dir``, the
        slices already encoded for this volume and model in an earlier session are read from
        disk instead of being encoded again.
        """
        from napari_pandg.sam.predictor import FeatureCache, LazySlices

        arr = getattr(array, "array", array)
        arr = np.asarray(arr)
        if arr.ndim != 3:
            raise SamPromptError(f"SAM needs a 3D image (X, Y, Z), got shape {arr.shape}")
        if min(arr.shape) < 1 or arr.shape[0] < 2 or arr.shape[1] < 2:
            raise SamPromptError(f"image too small for SAM: shape {arr.shape}")
        if modality is not None:
            self.modality = modality
        if window is not None:
            self.window = window
        u8 = normalize_volume(arr, self.modality, self.window)
        self._vol = np.ascontiguousarray(u8.transpose(2, 1, 0))  # (Z, Y, X)
        self._frames = LazySlices(self._vol, self.engine.image_size)
        self._cache = FeatureCache(self.max_cached_slices, store=self._make_store())
        self._committed = np.zeros(self._vol.shape, dtype=np.uint8)
        self._reset_objects()

    def _reset_objects(self) -> None:
        """One empty object, label 10 (pancreas), active: what a single-object user sees."""
        self._objects = {PANCREAS: _Object(PANCREAS, _default_name(PANCREAS))}
        self._active = PANCREAS

    def _make_store(self):
        """The on-disk feature store of the current volume and model, or None."""
        if self.cache_dir is None:
            return None
        import hashlib

        from napari_pandg.sam.predictor import FeatureStore

        h = hashlib.blake2b(digest_size=16)
        h.update(repr(self._vol.shape).encode())
        h.update(self._vol.tobytes())
        meta = {
            "config": self.engine.config,
            "image_size": int(self.engine.image_size),
            "shape_zyx": [int(n) for n in self._vol.shape],
            "checkpoint": str(self.engine.checkpoint) if self.engine.checkpoint else None,
        }
        return FeatureStore(self.cache_dir, h.hexdigest(), self.engine.fingerprint(), meta)

    def set_cache_dir(self, cache_dir: str | Path | None) -> int:
        """Keep embeddings in ``cache_dir`` from now on (None: memory only), without resetting.

        Unlike :meth:`set_volume` this keeps the current object, anchors and undo history; the
        slices already encoded in memory are written to the folder. Returns how many were written.
        """
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        if self._cache is None:
            return 0
        return self._cache.attach_store(self._make_store())

    @property
    def features_on_disk(self) -> list[int]:
        """Slices whose features are in the on-disk cache (empty without ``cache_dir``)."""
        store = self._cache.store if self._cache is not None else None
        return store.slices() if store is not None else []

    @property
    def shape(self) -> tuple[int, int, int]:
        """Volume shape (X, Y, Z)."""
        v = self._need_volume()
        return (int(v.shape[2]), int(v.shape[1]), int(v.shape[0]))

    @property
    def num_slices(self) -> int:
        return int(self._need_volume().shape[0])

    @property
    def normalized(self) -> np.ndarray:
        """The uint8 volume the model sees, (X, Y, Z) (a view)."""
        return self._need_volume().transpose(2, 1, 0)

    @property
    def encoded_slices(self) -> list[int]:
        return sorted(self._cache._fpn) if self._cache is not None else []

    @property
    def cache_nbytes(self) -> int:
        return self._cache.nbytes if self._cache is not None else 0

    @property
    def encoder_calls(self) -> int:
        return self.engine.encoder_calls

    def encode(
        self,
        slices: Iterable[int] | None = None,
        callback: Callable[[int, int, int], Any] | None = None,
        cancel: threading.Event | None = None,
    ) -> int:
        """Encode (and cache) slices ahead of time; ``callback(z, done, total)``. Returns count."""
        import torch

        self._need_volume()
        zs = list(range(self.num_slices)) if slices is None else [int(z) for z in slices]
        state = self._new_state()
        done = 0
        with torch.inference_mode(), self.engine.autocast():
            for z in zs:
                if cancel is not None and cancel.is_set():
                    break
                self._check_z(z)
                self.engine.model._get_image_feature(state, z, 1)
                done += 1
                if callback is not None and callback(z, done, len(zs)) is False:
                    break
        return done

    # ------------------------------------------------------------------ objects
    # The active object's fields, so that propagate/correct read and write "the current object".
    @property
    def _obj(self) -> _Object:
        return self._objects[self._active]

    _mask = property(lambda self: self._obj.mask, lambda self, v: setattr(self._obj, "mask", v))
    _anchors = property(lambda self: self._obj.anchors, lambda self, v: setattr(self._obj, "anchors", v))
    _prompts = property(lambda self: self._obj.prompts, lambda self, v: setattr(self._obj, "prompts", v))
    _z_range = property(lambda self: self._obj.z_range, lambda self, v: setattr(self._obj, "z_range", v))

    @property
    def objects(self) -> dict[int, str]:
        """Objects in progress, ``{label id: name}`` in the order they were added."""
        return {k: o.name for k, o in self._objects.items()}

    @property
    def active_object(self) -> int:
        """Label id of the object that prompts, undo, clear and commit act on."""
        return self._active

    def add_object(self, label_id: int, name: str | None = None, *, select: bool = True) -> int:
        """A new, empty object that will be committed as ``label_id`` (1..255).

        Several objects (pancreas + tumour + duct, or several organs) are segmented side by side:
        each has its own prompts, conditioning slices and undo history, and all share the slice
        features, so a second object encodes no slice again. Returns the label id.
        """
        lab = _check_label_id(label_id)
        if lab in self._objects:
            raise SamPromptError(f"there is already an object with label {lab} ({self._objects[lab].name})")
        self._objects[lab] = _Object(lab, str(name) if name else _default_name(lab))
        if select:
            self._active = lab
        return lab

    def select_object(self, label_id: int, *, create: bool = False) -> int:
        """Make ``label_id`` the active object (``create``: add it if it does not exist)."""
        lab = _check_label_id(label_id)
        if lab not in self._objects:
            if not create:
                known = ", ".join(f"{k} ({o.name})" for k, o in self._objects.items()) or "none"
                raise SamStateError(f"no object with label {lab}; objects: {known}")
            self.add_object(lab, select=False)
        self._active = lab
        return lab

    def remove_object(self, label_id: int) -> None:
        """Drop an object in progress and its undo history (committed voxels stay)."""
        lab = _check_label_id(label_id)
        if lab not in self._objects:
            raise SamStateError(f"no object with label {lab}")
        del self._objects[lab]
        if not self._objects:
            self._reset_objects()
        if self._active not in self._objects:
            self._active = next(iter(self._objects))

    def object_mask(self, label_id: int | None = None) -> np.ndarray | None:
        """One object's mask, uint8 (X, Y, Z) (default: the active object), or None."""
        lab = self._active if label_id is None else _check_label_id(label_id)
        if lab not in self._objects:
            raise SamStateError(f"no object with label {lab}")
        m = self._objects[lab].mask
        return None if m is None else m.transpose(2, 1, 0).astype(np.uint8)

    def objects_map(self) -> np.ndarray:
        """All objects in progress as one label map, uint8 (X, Y, Z), each under its label id.

        Where objects overlap, the one added first keeps the voxel (as :meth:`commit_all`).
        """
        v = self._need_volume()
        out = np.zeros(v.shape, dtype=np.uint8)
        for lab, o in reversed(list(self._objects.items())):
            if o.mask is not None:
                out[o.mask] = lab
        return out.transpose(2, 1, 0).copy()

    # ------------------------------------------------------------------ object state
    @property
    def mask(self) -> np.ndarray | None:
        """Current (active) object, uint8 0/1 (X, Y, Z), or None."""
        if self._mask is None:
            return None
        return self._mask.transpose(2, 1, 0).astype(np.uint8)

    @property
    def committed(self) -> np.ndarray:
        """Committed objects, uint8 label map (X, Y, Z)."""
        self._need_volume()
        return self._committed.transpose(2, 1, 0).copy()

    @property
    def anchors(self) -> list[int]:
        """Slices that condition the active object's propagation (key and corrected slices)."""
        return sorted(self._anchors)

    @property
    def can_undo(self) -> bool:
        """Whether the active object has something to undo."""
        return bool(self._obj.undo)

    def set_mask(self, mask3d: np.ndarray) -> None:
        """Start the active object from an existing 3D mask (X, Y, Z) (DG output, label file...).

        Non-zero voxels are the object. Clears its anchors/prompts; undoable.
        """
        v = self._need_volume()
        m = np.asarray(mask3d)
        if m.shape != self.shape:
            raise SamPromptError(f"mask shape {m.shape} differs from the volume's {self.shape}")
        self._push_undo()
        self._mask = np.ascontiguousarray(m.transpose(2, 1, 0) != 0)
        assert self._mask.shape == v.shape
        self._anchors = {}
        self._prompts = {}
        self._z_range = None

    def clear(self) -> None:
        """Drop the active object's mask and prompts (undoable); other objects stay."""
        self._need_volume()
        self._push_undo()
        self._mask = None
        self._anchors = {}
        self._prompts = {}
        self._z_range = None

    def undo(self) -> np.ndarray | None:
        """Undo the active object's last propagate / correct / set_mask / commit / clear.

        Each object has its own history: undoing one never changes another. Undoing a commit
        gives back the object and removes its label from the voxels that commit labelled (where
        no later commit has relabelled them). Returns the active object's mask.
        """
        obj = self._obj
        if not obj.undo:
            raise SamStateError(f"nothing to undo for object {obj.label_id} ({obj.name})")
        s = obj.undo.pop()
        obj.mask, obj.anchors, obj.prompts, obj.z_range = s.mask, s.anchors, s.prompts, s.z_range
        if s.commit is not None:
            target, old, lab = s.commit
            committed = self._committed.copy()
            ours = target & (committed == lab)
            committed[ours] = old[ours[target]]
            self._committed = committed
        return self.mask

    def commit(self, label_id: int | None = None, overwrite: bool = False) -> np.ndarray:
        """Write the active object into the committed label map (default: under its label id).

        ``overwrite=False`` leaves voxels that already carry another committed label alone.
        The object's mask, anchors and prompts are cleared (undoable). Returns the label map.
        """
        self._need_volume()
        lab = self._active if label_id is None else int(label_id)
        if not 1 <= lab <= 255:
            raise SamPromptError(f"label_id must be in 1..255, got {label_id}")
        if self._mask is None or not self._mask.any():
            raise SamStateError(f"no current object to commit (object {self._active} is empty)")
        committed = self._committed.copy()
        target = self._mask if overwrite else (self._mask & (committed == 0))
        self._push_undo(commit=(target, committed[target].copy(), lab))
        committed[target] = lab
        self._committed = committed
        self._mask = None
        self._anchors = {}
        self._prompts = {}
        self._z_range = None
        return self.committed

    def commit_all(self, overwrite: bool = False) -> np.ndarray:
        """Commit every non-empty object under its own label id, in the order they were added.

        Each commit is undoable on its object. Returns the committed label map.
        """
        self._need_volume()
        active = self._active
        try:
            for lab, o in list(self._objects.items()):
                if o.mask is not None and o.mask.any():
                    self._active = lab
                    self.commit(overwrite=overwrite)
        finally:
            self._active = active
        return self.committed

    # ------------------------------------------------------------------ prompting
    def preview(
        self,
        z: int,
        box: Sequence[float] | None = None,
        points: Sequence[Sequence[Any]] | None = None,
    ) -> np.ndarray:
        """2D mask (X, Y) for the prompts on slice ``z`` alone (no memory), at once.

        Equal to the key-slice result of :meth:`propagate` with the same prompts. Does not
        change the current object.
        """
        z = self._check_z(z)
        pts, labels, _, _ = self._prompt_arrays(z, box, points)
        logits = self._predict_slice(z, pts, labels)
        return (logits > 0).T.astype(np.uint8)

    def propagate(
        self,
        z: int,
        box: Sequence[float] | None = None,
        points: Sequence[Sequence[Any]] | None = None,
        z_range: tuple[int, int] | None = None,
        direction: str = "both",
        callback: Callback | None = None,
        cancel: threading.Event | None = None,
        stop_after_empty: int = 0,
    ) -> np.ndarray:
        """New object from prompts on key slice ``z``, propagated through the volume.

        ``z_range``: inclusive (z_lo, z_hi) limit (default: all slices; slices outside stay 0).
        ``direction``: 'both' | 'forward' (increasing z) | 'backward' (decreasing z).
        ``callback(z, mask2d_xy, done, total)`` after each slice (key slice once); returning
        False, or setting ``cancel``, stops early: the slices done so far are kept (undoable) and
        ``last_cancelled`` is True. ``stop_after_empty=k`` (opt-in early stop, as micro-sam's
        for CPUs): a pass ends once its mask has been empty on k consecutive slices after the
        key slice; slices beyond are neither encoded nor segmented (``last_stopped_empty`` says
        where each pass stopped). Returns the uint8 (X, Y, Z) mask, also the current object.
        """
        if int(stop_after_empty) < 0:
            raise SamPromptError(f"stop_after_empty must be >= 0 (0 = off), got {stop_after_empty}")
        z = self._check_z(z)
        lo, hi = self._check_range(z, z_range)
        direction = self._check_direction(direction)
        pts, labels, box_t, pt_list = self._prompt_arrays(z, box, points)
        anchors = {z: _Anchor(points=pts, labels=labels)}
        visited = self._run_passes(z, anchors, lo, hi, direction, callback, cancel,
                                   stop_after_empty=int(stop_after_empty))  # fmt: skip
        mask = np.zeros(self._vol.shape, dtype=bool)
        for zz, m in visited.items():
            mask[zz] = m
        if self.keep_largest:
            mask = largest_connected_component(mask)
        self._push_undo()
        self._mask = mask
        self._anchors = anchors
        self._prompts = {z: _SlicePrompts(box=box_t, points=pt_list)}
        self._z_range = (lo, hi)
        return self.mask

    def correct(
        self,
        z: int,
        points: Sequence[Sequence[Any]] | None = None,
        box: Sequence[float] | None = None,
        mask2d: np.ndarray | None = None,
        *,
        z_range: tuple[int, int] | None = None,
        direction: str = "both",
        bounded: bool = True,
        span: int | None = None,
        converge: int | None = 3,
        converge_dice: float = 0.98,
        callback: Callback | None = None,
        cancel: threading.Event | None = None,
    ) -> np.ndarray:
        """Correct slice ``z`` of the current object, then re-propagate from it.

        * ``mask2d`` alone (X, Y): the slice becomes exactly that mask (painted / erased slice).
        * ``points`` and/or ``box``: SAM on slice ``z`` with these prompts plus the earlier clicks
          on the slice (a new box clears them) and the current slice mask (or ``mask2d``) as
          the mask prompt; the result becomes the slice's mask.

        The corrected slice becomes a conditioning slice ("anchor"), kept with all earlier ones.
        Re-propagation starts at ``z`` in ``direction`` and, with ``bounded``, stops before the
        next anchor on each side; ``span`` caps the slices per direction; ``z_range`` defaults to
        that of the last :meth:`propagate`. With ``converge`` = k, a pass also stops once k
        consecutive re-propagated slices agree with the current mask (Dice >= ``converge_dice``,
        or both empty): the correction's effect has died out, and the slices beyond keep their
        mask (``last_converged`` says where; ``None`` re-propagates the whole range). Slices not
        visited keep their current mask. Cached slice features are reused (no re-encoding).
        Returns the new uint8 (X, Y, Z) mask.
        """
        v = self._need_volume()
        z = self._check_z(z)
        direction = self._check_direction(direction)
        if points is None and box is None and mask2d is None:
            raise SamPromptError("correct() needs points, a box or a 2D mask")
        if converge is not None and int(converge) < 1:
            raise ValueError(f"converge must be >= 1 or None, got {converge}")
        if z_range is None:
            z_range = self._z_range
        lo, hi = self._check_range(z, z_range)
        current = self._mask if self._mask is not None else np.zeros(v.shape, dtype=bool)

        prior = current[z]
        if mask2d is not None:
            m2 = np.asarray(mask2d)
            if m2.shape != (v.shape[2], v.shape[1]):
                raise SamPromptError(
                    f"mask2d must be (X, Y) = {(v.shape[2], v.shape[1])}, got {m2.shape}"
                )
            prior = m2.T != 0
        prompts = self._prompts.get(z, _SlicePrompts())
        if points is None and box is None:
            new2d = prior.copy()
            new_prompts = _SlicePrompts()
        else:
            old_points = [] if box is not None else list(prompts.points)
            use_box = box if box is not None else prompts.box
            pts, labels, box_t, pt_list = self._prompt_arrays(
                z, use_box, [*old_points, *(points or [])], allow_negative_only=bool(prior.any())
            )
            prior_logits = None
            if prior.any():
                prior_logits = np.where(prior, 10.0, -10.0).astype(np.float32)
            new2d = self._predict_slice(z, pts, labels, prior_logits) > 0
            new_prompts = _SlicePrompts(box=box_t, points=pt_list)

        anchors = dict(self._anchors)
        anchors[z] = _Anchor(mask=new2d)
        f_lo, f_hi = lo, hi
        if bounded:
            above = [a for a in anchors if a > z]
            below = [a for a in anchors if a < z]
            if above:
                f_hi = min(f_hi, min(above) - 1)
            if below:
                f_lo = max(f_lo, max(below) + 1)
        if span is not None:
            f_lo, f_hi = max(f_lo, z - int(span)), min(f_hi, z + int(span))
        f_lo, f_hi = min(f_lo, z), max(f_hi, z)
        conv = None
        if converge and self._mask is not None:
            conv = (current, int(converge), float(converge_dice))
        visited = self._run_passes(z, anchors, f_lo, f_hi, direction, callback, cancel, conv)
        mask = current.copy()
        for zz, m in visited.items():
            mask[zz] = m
        mask[z] = new2d
        if self.keep_largest:
            keep = np.zeros_like(mask)
            for az, a in anchors.items():
                if a.mask is not None:
                    keep[az] = a.mask
            mask = largest_connected_component(mask, keep=keep)
        self._push_undo()
        self._mask = mask
        self._anchors = anchors
        self._prompts = {**self._prompts, z: new_prompts}
        if self._z_range is None and z_range is not None:
            self._z_range = (lo, hi)
        return self.mask

    # ------------------------------------------------------------------ internals
    def _need_volume(self) -> np.ndarray:
        if self._vol is None:
            raise SamStateError("no volume: call set_volume() first")
        return self._vol

    def _check_z(self, z) -> int:
        n = self.num_slices
        try:
            zi = int(z)
        except (TypeError, ValueError) as exc:
            raise SamPromptError(f"slice index {z!r} is not an integer") from exc
        if zi != z or not 0 <= zi < n:
            raise SamPromptError(f"slice {z} outside the volume (0..{n - 1})")
        return zi

    def _check_range(self, z: int, z_range) -> tuple[int, int]:
        n = self.num_slices
        if z_range is None:
            return 0, n - 1
        lo, hi = (int(v) for v in z_range)
        if lo > hi:
            lo, hi = hi, lo
        lo, hi = max(lo, 0), min(hi, n - 1)
        if not lo <= z <= hi:
            raise SamPromptError(f"slice {z} is outside z_range ({lo}, {hi})")
        return lo, hi

    @staticmethod
    def _check_direction(direction: str) -> str:
        d = str(direction).lower()
        aliases = {"reverse": "backward", "backwards": "backward", "forwards": "forward"}
        d = aliases.get(d, d)
        if d not in ("both", "forward", "backward"):
            raise SamPromptError(f"direction must be 'both', 'forward' or 'backward', not {direction!r}")
        return d

    def _prompt_arrays(self, z, box, points, allow_negative_only: bool = False):
        """Validate prompts (X/Y voxel indices) -> sam2 (x, y) points + labels."""
        v = self._need_volume()
        h, w = int(v.shape[1]), int(v.shape[2])  # rows = Y, columns = X
        if box is None and not points:
            raise SamPromptError("no prompts: give a box and/or points")
        if not v[z].any():
            raise SamPromptError(f"slice {z} is empty (all zeros after normalisation): nothing to segment")
        coords: list[tuple[float, float]] = []
        labels: list[int] = []
        box_t = None
        if box is not None:
            try:
                x0, y0, x1, y1 = (float(c) for c in box)
            except (TypeError, ValueError) as exc:
                raise SamPromptError(f"box must be (x0, y0, x1, y1), got {box!r}") from exc
            if not all(np.isfinite([x0, y0, x1, y1])):
                raise SamPromptError(f"box {box!r} is not finite")
            x0, x1 = sorted((x0, x1))
            y0, y1 = sorted((y0, y1))
            if x0 < -0.5 or y0 < -0.5 or x1 > w - 0.5 or y1 > h - 0.5:
                raise SamPromptError(
                    f"box (x0={x0:g}, y0={y0:g}, x1={x1:g}, y1={y1:g}) is outside the slice "
                    f"(x 0..{w - 1}, y 0..{h - 1})"
                )
            if x1 - x0 <= 0 or y1 - y0 <= 0:
                raise SamPromptError(f"box {box!r} has zero area")
            x0, x1 = max(x0, 0.0), min(x1, w - 1.0)
            y0, y1 = max(y0, 0.0), min(y1, h - 1.0)
            box_t = (x0, y0, x1, y1)
            coords += [(x0, y0), (x1, y1)]
            labels += [2, 3]
        pt_list: list[tuple[float, float, int]] = []
        for p in points or []:
            if len(p) != 3:
                raise SamPromptError(f"point {p!r} must be (x, y, +1/-1)")
            x, y = float(p[0]), float(p[1])
            lab = _parse_label(p[2])
            if not (np.isfinite(x) and np.isfinite(y)) or not (
                -0.5 <= x <= w - 0.5 and -0.5 <= y <= h - 0.5
            ):
                raise SamPromptError(
                    f"point (x={x:g}, y={y:g}) is outside the slice (x 0..{w - 1}, y 0..{h - 1})"
                )
            coords.append((x, y))
            labels.append(lab)
            pt_list.append((x, y, 1 if lab else -1))
        if labels and all(lab == 0 for lab in labels) and not allow_negative_only:
            raise SamPromptError("only negative points: add a box or a positive point")
        return (
            np.asarray(coords, dtype=np.float32),
            np.asarray(labels, dtype=np.int32),
            box_t,
            pt_list,
        )

    def _new_state(self):
        v = self._need_volume()
        return self.engine.model.init_state(
            self._frames,
            video_height=int(v.shape[1]),
            video_width=int(v.shape[2]),
            feature_cache=self._cache,
        )

    def _predict_slice(self, z, pts, labels, prior_logits=None) -> np.ndarray:
        import torch

        state = self._new_state()
        prior = torch.from_numpy(prior_logits) if prior_logits is not None else None
        with torch.inference_mode(), self.engine.autocast():
            logits, _ = self.engine.model.predict_slice(state, z, pts, labels, prior)
        return logits.float().cpu().numpy()

    def _add_anchors(self, state, anchors: dict[int, _Anchor]) -> None:
        import torch

        model = self.engine.model
        for az in sorted(anchors):
            a = anchors[az]
            if a.mask is not None:
                model.add_new_mask(state, az, _OBJ_ID, torch.from_numpy(a.mask))
            else:
                model.add_new_points_or_box(
                    state, az, _OBJ_ID, points=a.points, labels=a.labels, clear_old_points=True
                )

    def _run_passes(
        self,
        start: int,
        anchors: dict[int, _Anchor],
        lo: int,
        hi: int,
        direction: str,
        callback: Callback | None,
        cancel: threading.Event | None,
        converge: tuple[np.ndarray, int, float] | None = None,
        stop_after_empty: int = 0,
    ) -> dict[int, np.ndarray]:
        """MedSAM2 two-pass propagation from ``start`` within [lo, hi]; {z: bool (Y, X)}.

        ``converge`` = (previous mask (Z, Y, X), k, dice): end a pass after k consecutive
        slices (other than ``start``) that agree with the previous mask.
        """
        import torch

        self.last_cancelled = False
        self.last_visited = []
        self.last_converged = {}
        self.last_stopped_empty = {}
        passes = []
        if direction in ("both", "forward"):
            passes.append(False)
        if direction in ("both", "backward"):
            passes.append(True)
        total = {"both": hi - lo + 1, "forward": hi - start + 1, "backward": start - lo + 1}[direction]
        results: dict[int, np.ndarray] = {}
        done = 0
        model = self.engine.model
        with torch.inference_mode(), self.engine.autocast():
            for reverse in passes:
                if cancel is not None and cancel.is_set():
                    self.last_cancelled = True
                    break
                # a fresh state per direction == MedSAM2's reset_state + re-adding the prompt
                state = self._new_state()
                self._add_anchors(state, anchors)
                n = (start - lo) if reverse else (hi - start)
                call_reverse = reverse
                if reverse and start == 0:
                    # upstream skips reverse tracking from slice 0; still report the key slice
                    call_reverse, n = False, 0
                gen = model.propagate_in_video(
                    state, start_frame_idx=start, max_frame_num_to_track=n, reverse=call_reverse
                )
                streak = 0
                empty = 0
                try:
                    for fidx, _, logits in gen:
                        m = (logits[0, 0] > 0.0).cpu().numpy()
                        a = anchors.get(fidx)
                        if a is not None and a.mask is not None:
                            m = a.mask.copy()
                        if fidx in results:
                            results[fidx] |= m  # MedSAM2: union of the two passes
                            continue
                        results[fidx] = m
                        self.last_visited.append(int(fidx))
                        done += 1
                        stop = False
                        if callback is not None:
                            stop = callback(fidx, m.T.astype(np.uint8), done, total) is False
                        if stop or (cancel is not None and cancel.is_set()):
                            self.last_cancelled = True
                            break
                        if stop_after_empty and fidx != start:
                            empty = 0 if m.any() else empty + 1
                            if empty >= stop_after_empty:
                                self.last_stopped_empty["backward" if reverse else "forward"] = int(fidx)
                                break
                        if converge is not None and fidx != start:
                            prev, k, dice = converge
                            streak = streak + 1 if masks_agree(m, prev[fidx], dice) else 0
                            if streak >= k:
                                self.last_converged["backward" if reverse else "forward"] = int(fidx)
                                break
                finally:
                    gen.close()
                if self.last_cancelled:
                    break
        return results

    def _push_undo(self, commit: tuple[np.ndarray, np.ndarray, int] | None = None) -> None:
        obj = self._obj
        obj.undo.append(
            _Snapshot(
                mask=obj.mask,
                anchors=dict(obj.anchors),
                prompts={k: _SlicePrompts(v.box, list(v.points)) for k, v in obj.prompts.items()},
                z_range=obj.z_range,
                commit=commit,
            )
        )
        if len(obj.undo) > self.max_undo:
            del obj.undo[0]
