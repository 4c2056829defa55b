"""SAM engine: random-weight sam2.1 hiera-tiny at 64 px on a small synthetic volume.

Random weights give arbitrary masks, so the tests check structure: shapes, slices visited,
direction, cancellation, caching (encoder calls), conditioning slices, undo/commit, I/O, errors,
and that the segmenter reproduces the MedSAM2 reference loop exactly.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

from scipy import ndimage  # noqa: E402

from napari_pandg.sam import (  # noqa: E402
    SamCheckpointError,
    SamPromptError,
    SamStateError,
    VolumeSegmenter,
    build_image_predictor,
    largest_connected_component,
    load_sam_model,
    parse_box,
    parse_object,
    parse_points,
    run_sam_cli,
    save_checkpoint,
    stack_to_model_input,
)

SIZE = 64  # model image size for tests
SHAPE = (96, 80, 12)  # (X, Y, Z): non-square slices on purpose
KEY = 6
BOX = (28, 25, 68, 55)  # (x0, y0, x1, y1) around the ellipsoid on the key slice


@pytest.fixture(scope="module", autouse=True)
def _env():
    old_threads = torch.get_num_threads()
    old_hf = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"  # guard: nothing may download
    torch.set_num_threads(1)  # 2 shared cores: 1 thread is much faster under contention
    yield
    torch.set_num_threads(old_threads)
    if old_hf is None:
        os.environ.pop("HF_HUB_OFFLINE", None)
    else:
        os.environ["HF_HUB_OFFLINE"] = old_hf


@pytest.fixture(scope="module")
def engine():
    torch.manual_seed(0)
    return load_sam_model(None, image_size=SIZE, device="cpu", random_init=True)


@pytest.fixture(scope="module")
def volume():
    x, y, z = np.meshgrid(*(np.arange(s) for s in SHAPE), indexing="ij")
    rng = np.random.default_rng(0)
    vol = 100.0 + 30.0 * rng.random(SHAPE)
    ell = ((x - 48) / 18) ** 2 + ((y - 40) / 13) ** 2 + ((z - KEY) / 5) ** 2 < 1
    vol[ell] += 500.0
    return vol.astype(np.float32)


@pytest.fixture()
def seg(engine, volume):
    s = VolumeSegmenter(engine)
    s.set_volume(volume)
    return s


def _n_components(mask):
    _, n = ndimage.label(mask > 0, structure=np.ones((3, 3, 3)))
    return n


# --------------------------------------------------------------------------- model loading
def test_engine_build(engine):
    m = engine.model
    assert type(m).__name__ == "VolumePredictor"
    assert m.image_size == SIZE and engine.device == "cpu" and not engine.use_autocast
    assert m.fill_hole_area == 0  # no CUDA-only hole filling ...
    assert m.hole_fill_area == 8  # ... but MedSAM2's fill_hole_area=8 done with scipy
    assert m.add_all_frames_to_correct_as_cond is True
    assert m.binarize_mask_from_pts_for_mem_enc is True
    assert next(m.parameters()).dtype == torch.float32


def test_random_weights_need_explicit_flag():
    with pytest.raises(SamCheckpointError, match="no SAM checkpoint"):
        load_sam_model(None, image_size=SIZE, device="cpu")


def test_missing_checkpoint(tmp_path):
    p = tmp_path / "nope.pt"
    with pytest.raises(SamCheckpointError, match="not found.*nope.pt"):
        load_sam_model(p, image_size=SIZE, device="cpu")
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(SamCheckpointError, match="cannot read"):
        load_sam_model(bad, image_size=SIZE, device="cpu")


def test_build_twice_after_hydra_reset():
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()  # as another plugin may do
    try:
        a = load_sam_model(None, config="tiny", image_size=SIZE, device="cpu", random_init=True)
        b = load_sam_model(None, config="sam2.1_hiera_t", image_size=SIZE, device="cpu", random_init=True)
        assert a.config == b.config == "sam2.1_hiera_t"
    finally:  # leave hydra as sam2/__init__ set it up
        if not GlobalHydra.instance().is_initialized():
            from hydra import initialize_config_module

            initialize_config_module("sam2", version_base="1.2")


def test_checkpoint_round_trip_and_wrong_config(engine, tmp_path):
    sd = engine.model.state_dict()
    wrapped = save_checkpoint(engine, tmp_path / "medsam2_fake.pt", wrap=True)
    e1 = load_sam_model(wrapped, image_size=SIZE, device="cpu")
    for k in ("image_encoder.trunk.patch_embed.proj.weight", "obj_ptr_proj.layers.0.weight"):
        assert torch.equal(e1.model.state_dict()[k], sd[k])
    del e1
    wrapped.unlink()

    bare = save_checkpoint(engine, tmp_path / "bare.pt", wrap=False)
    e2 = load_sam_model(bare, image_size=SIZE, device="cpu")
    assert torch.equal(e2.model.state_dict()["no_mem_embed"], sd["no_mem_embed"])
    del e2

    # a tiny (MedSAM2) checkpoint loaded with the small config: clear error naming the config
    with pytest.raises(SamCheckpointError) as ei:
        load_sam_model(bare, config="sam2.1_hiera_s", image_size=SIZE, device="cpu")
    msg = str(ei.value)
    assert "bare.pt" in msg and "'sam2.1_hiera_s'" in msg
    assert "missing" in msg and "suggest config 'sam2.1_hiera_t'" in msg
    bare.unlink()

    # tampered: keys dropped and renamed
    bad = {k: v for k, v in sd.items() if not k.startswith("memory_encoder.")}
    bad["foo.bar"] = torch.zeros(1)
    torch.save({"model": bad}, tmp_path / "tampered.pt")
    with pytest.raises(SamCheckpointError, match=r"(?s)missing.*1 unexpected.*sam2\.1_hiera_t"):
        load_sam_model(tmp_path / "tampered.pt", image_size=SIZE, device="cpu")


def test_image_predictor_at_small_size(engine):
    pred = build_image_predictor(engine)
    img = np.zeros((50, 70, 3), np.uint8)
    img[10:40, 20:50] = 200
    pred.set_image(img)
    masks, scores, _ = pred.predict(box=np.array([20, 10, 50, 40]), multimask_output=False)
    assert masks.shape == (1, 50, 70)


# --------------------------------------------------------------------------- fidelity
def _medsam2_reference(engine, vol_zyx_u8, key_z, box):
    """``medsam2_infer_3D_CT.py`` loop: full (D,3,S,S) tensor, no feature cache, box on the key
    slice, forward, reset_state, box again, reverse, union, largest CC."""
    pred = engine.model
    d, h, w = vol_zyx_u8.shape
    imgs = torch.from_numpy(stack_to_model_input(vol_zyx_u8, engine.image_size))
    segs = np.zeros((d, h, w), dtype=np.uint8)
    with torch.inference_mode():
        state = pred.init_state(imgs, h, w)
        pred.add_new_points_or_box(state, frame_idx=key_z, obj_id=1, box=np.array(box))
        for f, _, logits in pred.propagate_in_video(state):
            segs[f, (logits[0] > 0.0).cpu().numpy()[0]] = 1
        pred.reset_state(state)
        pred.add_new_points_or_box(state, frame_idx=key_z, obj_id=1, box=np.array(box))
        for f, _, logits in pred.propagate_in_video(state, reverse=True):
            segs[f, (logits[0] > 0.0).cpu().numpy()[0]] = 1
        pred.reset_state(state)
    try:  # MedSAM2 getLargestCC
        from skimage import measure

        labels = measure.label(segs)
        if labels.max() == 0:
            return segs.astype(bool)
        return labels == np.argmax(np.bincount(labels.flat)[1:]) + 1
    except ImportError:
        return largest_connected_component(segs)


def test_propagate_matches_medsam2_reference(seg, engine):
    ours = seg.propagate(KEY, box=BOX)
    ref = _medsam2_reference(engine, seg.normalized.transpose(2, 1, 0), KEY, BOX)
    assert ours.shape == SHAPE
    assert 0 < ours.sum() < ours.size  # a non-trivial mask, so the comparison means something
    assert np.array_equal(ours, ref.transpose(2, 1, 0).astype(np.uint8))
    # memory features are fp32 on CPU (the bf16 crash fix)
    assert seg.encoded_slices == list(range(SHAPE[2]))


def test_sam2_110_fixes(seg, engine):
    """Propagating towards a later conditioning slice (no object pointer yet) crashed in 1.1.0
    on CPU with a bf16/fp32 mismatch; clear_non_cond_mem_around_input crashed (missing method)."""
    model = engine.model
    state = seg._new_state()
    with torch.inference_mode():
        model.add_new_points_or_box(state, 8, 1, box=np.array(BOX, dtype=np.float32))
        model.propagate_in_video_preflight(state)
        out = list(model.propagate_in_video(state, start_frame_idx=2, max_frame_num_to_track=3))
    assert [o[0] for o in out] == [2, 3, 4, 5]
    mem = state["output_dict_per_obj"][0]["non_cond_frame_outputs"][3]["maskmem_features"]
    assert mem.dtype == torch.float32
    model.clear_non_cond_mem_around_input = True
    try:
        seg.propagate(KEY, box=BOX, z_range=(4, 8))
        seg.correct(8, points=[(48, 40, 1)])
    finally:
        model.clear_non_cond_mem_around_input = False


# --------------------------------------------------------------------------- segmenter
def test_preview_equals_key_slice(engine, volume):
    s = VolumeSegmenter(engine, keep_largest=False)
    s.set_volume(volume)
    p = s.preview(KEY, box=BOX)
    assert p.shape == SHAPE[:2] and p.dtype == np.uint8
    m = s.propagate(KEY, box=BOX, direction="forward", z_range=(KEY, KEY + 1))
    assert np.array_equal(m[:, :, KEY], p)
    pp = s.preview(KEY, box=BOX, points=[(48, 40, 1), (30, 30, -1)])
    assert pp.shape == SHAPE[:2]
    assert s.preview(KEY, points=[(48, 40, "+")]).shape == SHAPE[:2]


def test_propagate_both_directions_callback_and_cache(seg, engine):
    calls = []
    before = engine.encoder_calls
    m = seg.propagate(KEY, box=BOX, callback=lambda z, m2, d, t: calls.append((z, d, t, m2.shape)))
    nz = SHAPE[2]
    assert m.shape == SHAPE and m.dtype == np.uint8
    zs = [c[0] for c in calls]
    assert sorted(zs) == list(range(nz))  # every slice exactly once
    assert zs[0] == KEY
    assert zs[: nz - KEY] == list(range(KEY, nz))  # forward first
    assert zs[nz - KEY :] == list(range(KEY - 1, -1, -1))  # then backward
    assert [c[1] for c in calls] == list(range(1, nz + 1))
    assert all(c[2] == nz and c[3] == SHAPE[:2] for c in calls)
    assert engine.encoder_calls - before == nz  # each slice encoded once
    assert seg.anchors == [KEY]
    assert _n_components(m) <= 1  # largest connected component
    # again: all features cached
    before = engine.encoder_calls
    m2 = seg.propagate(KEY, box=BOX)
    assert engine.encoder_calls == before
    assert np.array_equal(m, m2)  # deterministic


def test_z_range_and_direction(seg):
    calls = []
    m = seg.propagate(KEY, box=BOX, z_range=(4, 8), callback=lambda z, *_: calls.append(z))
    assert sorted(calls) == [4, 5, 6, 7, 8]
    assert not m[:, :, :4].any() and not m[:, :, 9:].any()
    calls.clear()
    seg.propagate(KEY, box=BOX, direction="forward", callback=lambda z, *_: calls.append(z))
    assert calls == list(range(KEY, SHAPE[2]))
    calls.clear()
    seg.propagate(KEY, box=BOX, direction="backward", callback=lambda z, *_: calls.append(z))
    assert calls == list(range(KEY, -1, -1))
    calls.clear()
    seg.propagate(0, box=BOX, direction="reverse", callback=lambda z, *_: calls.append(z))
    assert calls == [0]  # upstream yields nothing for reverse tracking from slice 0


def test_cancellation(seg):
    calls = []

    def cb(z, m2, done, total):
        calls.append(z)
        return done < 3  # stop after the third slice

    m = seg.propagate(KEY, box=BOX, callback=cb)
    assert calls == [KEY, KEY + 1, KEY + 2] and seg.last_cancelled
    assert not m[:, :, :KEY].any() and not m[:, :, KEY + 3 :].any()
    ev = threading.Event()
    calls.clear()

    def cb2(z, *_):
        calls.append(z)
        if len(calls) == 2:
            ev.set()

    seg.propagate(KEY, box=BOX, callback=cb2, cancel=ev)
    assert len(calls) == 2 and seg.last_cancelled
    assert seg.can_undo
    ev.clear()
    seg.propagate(KEY, box=BOX, cancel=ev)
    assert not seg.last_cancelled


def test_fill_holes_cpu():
    from napari_pandg.sam.predictor import fill_holes_cpu

    s = torch.full((1, 1, 12, 12), 5.0)
    s[0, 0, 2:4, 2:4] = -3.0  # 4 px hole -> filled
    s[0, 0, 6:9, 6:10] = -3.0  # 12 px hole -> kept
    s[0, 0, 11, 11] = -1.0  # 1 px at the border -> filled (as upstream)
    s[0, 0, 0, 5] = -1.0  # diagonal neighbours: one 8-connected 2 px component -> filled
    s[0, 0, 1, 6] = -1.0
    out = fill_holes_cpu(s, 8)
    assert torch.all(out[0, 0, 2:4, 2:4] == 0.1) and out[0, 0, 11, 11] == 0.1
    assert out[0, 0, 0, 5] == 0.1 and out[0, 0, 1, 6] == 0.1
    assert torch.all(out[0, 0, 6:9, 6:10] == -3.0)
    assert (out > 0).sum() == 144 - 12
    assert fill_holes_cpu(s, 0) is s


def test_largest_connected_component():
    m = np.zeros((10, 10, 10), np.uint8)
    m[1:4, 1:4, 1:4] = 1  # 27 voxels
    m[6:8, 6:8, 6:8] = 1  # 8 voxels
    m[4, 4, 4] = 1  # diagonal neighbour of the big block: joins it (26-connectivity)
    out = largest_connected_component(m)
    assert out.sum() == 28 and _n_components(out) == 1
    keep = np.zeros_like(m, dtype=bool)
    keep[7, 7, 7] = True
    assert largest_connected_component(m, keep=keep).sum() == 36
    assert not largest_connected_component(np.zeros((3, 3, 3))).any()


def test_correct_reuses_features_and_keeps_anchors(seg, engine):
    m0 = seg.propagate(KEY, box=BOX)
    before = engine.encoder_calls
    calls = []
    m1 = seg.correct(9, points=[(48, 40, 1), (30, 28, -1)], converge=None, callback=lambda z, *_: calls.append(z))
    assert engine.encoder_calls == before  # no re-encoding
    assert seg.anchors == [KEY, 9]
    # bounded re-propagation: from 9 up to the end and down to the slice after the key slice
    assert sorted(calls) == [7, 8, 9, 10, 11] and calls[0] == 9
    # slices below the key slice were not re-propagated (largest-CC can only remove voxels)
    assert not ((m1[:, :, :KEY] > 0) & (m0[:, :, :KEY] == 0)).any()
    # a painted slice is taken as is and becomes a conditioning slice
    paint = np.zeros(SHAPE[:2], np.uint8)
    paint[40:56, 34:46] = 1
    calls.clear()
    m2 = seg.correct(3, mask2d=paint, converge=None, callback=lambda z, *_: calls.append(z))
    assert engine.encoder_calls == before
    assert np.array_equal(m2[:, :, 3], paint)
    assert seg.anchors == [3, KEY, 9]
    assert sorted(calls) == [0, 1, 2, 3, 4, 5]
    # the earlier correction survives the next re-propagation (kept as conditioning slice)
    s9 = m2[:, :, 9].copy()
    m3 = seg.correct(11, points=[(50, 40, 1)], bounded=False, converge=None)
    assert seg.anchors == [3, KEY, 9, 11]
    assert np.array_equal(m3[:, :, 3], paint)
    assert np.array_equal(m3[:, :, 9], s9)
    assert engine.encoder_calls == before
    # undo goes back step by step
    assert np.array_equal(seg.undo(), m2)
    assert seg.anchors == [3, KEY, 9]
    assert np.array_equal(seg.undo(), m1)
    assert np.array_equal(seg.undo(), m0)
    assert seg.anchors == [KEY]


def test_correction_stops_where_the_mask_no_longer_changes(seg, engine):
    seg.propagate(KEY, box=BOX)
    paint = np.zeros(SHAPE[:2], np.uint8)
    paint[40:56, 34:46] = 1
    full = seg.correct(KEY + 1, mask2d=paint, bounded=False, converge=None)
    assert seg.last_converged == {}
    assert sorted(seg.last_visited) == list(range(SHAPE[2]))
    # the same correction again: the anchors are unchanged, so the re-propagated slices equal
    # the current mask and each pass ends after `converge` agreeing slices
    calls = []
    again = seg.correct(KEY + 1, mask2d=paint, bounded=False, converge=2, converge_dice=1.0,
                        callback=lambda z, *_: calls.append(z))  # fmt: skip
    assert sorted(calls) == [KEY - 1, KEY, KEY + 1, KEY + 2, KEY + 3]
    assert seg.last_converged == {"forward": KEY + 3, "backward": KEY - 1}
    assert np.array_equal(again, full)
    # a real change keeps going: on an empty previous mask every non-empty slice disagrees, so
    # a pass runs until its first empty slice
    seg.set_mask(np.zeros(SHAPE, np.uint8))
    seg.keep_largest = False
    new = seg.correct(KEY, mask2d=paint, bounded=False, converge=1, converge_dice=1.0)
    for side, step in (("forward", 1), ("backward", -1)):
        zs = [z for z in seg.last_visited if (z - KEY) * step > 0]
        assert zs == sorted(zs, key=lambda z: z * step)
        for z in zs[:-1]:
            assert new[:, :, z].any()
        if side in seg.last_converged:
            assert seg.last_converged[side] == zs[-1] and not new[:, :, zs[-1]].any()
        else:
            assert not zs or zs[-1] in (0, SHAPE[2] - 1)
    from napari_pandg.sam.segmenter import masks_agree

    assert masks_agree(np.zeros((4, 4)), np.zeros((4, 4)), 1.0)
    assert not masks_agree(np.eye(4), np.zeros((4, 4)), 0.5)
    assert masks_agree(np.eye(4), np.eye(4), 1.0)
    with pytest.raises(ValueError, match="converge"):
        seg.correct(KEY, mask2d=paint, converge=0)


def test_correct_external_mask_and_commit(seg, volume):
    gt = (volume > 400).astype(np.uint8)  # "DG model" mask
    seg.set_mask(gt)
    assert np.array_equal(seg.mask, gt)
    m = seg.correct(KEY, points=[(48, 40, 1)], span=1, converge=None)
    # only slices KEY-1..KEY+1 re-propagated; the rest of the loaded mask is untouched
    far = [z for z in range(SHAPE[2]) if abs(z - KEY) > 1]
    assert np.array_equal(m[:, :, far] > 0, (gt[:, :, far] > 0) & (m[:, :, far] > 0))
    assert seg.anchors == [KEY]
    cur = seg.mask
    committed = seg.commit(label_id=10)
    assert committed.dtype == np.uint8 and committed.shape == SHAPE
    assert np.array_equal(committed == 10, cur > 0)
    assert seg.mask is None and seg.anchors == []
    with pytest.raises(SamStateError):
        seg.commit(3)
    # a second object does not overwrite the first by default
    seg.set_mask(np.ones(SHAPE, np.uint8))
    c2 = seg.commit(label_id=3)
    assert np.array_equal(c2 == 10, cur > 0) and ((c2 == 3) == (cur == 0)).all()
    seg.undo()
    assert np.array_equal(seg.committed == 10, cur > 0) and not (seg.committed == 3).any()
    assert np.array_equal(seg.mask, np.ones(SHAPE, np.uint8))


def test_several_objects_with_their_own_prompts_and_undo(seg, engine):
    """Pancreas + a second object: own prompts, anchors and undo; one label map with both ids;
    the second object encodes no slice again (the features are shared)."""
    assert seg.objects == {10: "pancreas"} and seg.active_object == 10
    m10 = seg.propagate(KEY, box=BOX)
    calls = engine.encoder_calls
    assert seg.add_object(13, "tumour") == 13 and seg.active_object == 13
    assert seg.mask is None and seg.anchors == [] and not seg.can_undo
    m13 = seg.propagate(KEY - 2, box=(40, 30, 60, 50))
    assert engine.encoder_calls == calls  # every slice was encoded for the first object
    assert seg.anchors == [KEY - 2]
    seg.select_object(10)
    assert np.array_equal(seg.mask, m10) and seg.anchors == [KEY]
    both = seg.objects_map()
    assert set(np.unique(both)) <= {0, 10, 13}
    assert np.array_equal(both == 10, m10 > 0)  # the first object keeps overlapping voxels
    assert np.array_equal(both == 13, (m13 > 0) & (m10 == 0))
    # undo is per object: undoing 13's propagation leaves 10 alone
    seg.select_object(13)
    seg.undo()
    assert seg.mask is None and np.array_equal(seg.object_mask(10), m10)
    with pytest.raises(SamStateError, match="nothing to undo for object 13"):
        seg.undo()
    seg.set_mask(np.asarray(m13))
    committed = seg.commit_all()
    assert np.array_equal(committed == 10, m10 > 0)
    assert np.array_equal(committed == 13, (m13 > 0) & (m10 == 0))
    assert seg.object_mask(10) is None and seg.object_mask(13) is None
    # undo 10's commit: its voxels return to the object, 13's committed voxels stay
    seg.select_object(10)
    assert np.array_equal(seg.undo(), m10)
    assert not (seg.committed == 10).any()
    assert np.array_equal(seg.committed == 13, (m13 > 0) & (m10 == 0))
    with pytest.raises(SamPromptError, match="already an object with label 13"):
        seg.add_object(13)
    with pytest.raises(SamStateError, match="no object with label 7"):
        seg.select_object(7)
    with pytest.raises(SamPromptError, match="1..255"):
        seg.add_object(300)
    assert seg.select_object(7, create=True) == 7 and list(seg.objects) == [10, 13, 7]
    seg.remove_object(7)
    assert list(seg.objects) == [10, 13] and seg.active_object == 10


def test_prompt_errors(seg, engine, volume):
    with pytest.raises(SamPromptError, match="outside"):
        seg.preview(KEY, box=(10, 10, 200, 50))
    with pytest.raises(SamPromptError, match="outside"):
        seg.preview(KEY, box=(-5, 10, 20, 50))
    with pytest.raises(SamPromptError, match="zero area"):
        seg.preview(KEY, box=(10, 10, 10, 50))
    with pytest.raises(SamPromptError, match="no prompts"):
        seg.preview(KEY)
    with pytest.raises(SamPromptError, match="no prompts"):
        seg.propagate(KEY, points=[])
    with pytest.raises(SamPromptError, match="outside the slice"):
        seg.preview(KEY, points=[(96, 3, 1)])
    with pytest.raises(SamPromptError, match="negative"):
        seg.preview(KEY, points=[(40, 30, -1)])
    with pytest.raises(SamPromptError, match="'\\+' or '-'"):
        seg.preview(KEY, points=[(40, 30, "x")])
    with pytest.raises(SamPromptError, match="outside the volume"):
        seg.propagate(12, box=BOX)
    with pytest.raises(SamPromptError, match="z_range"):
        seg.propagate(KEY, box=BOX, z_range=(0, 3))
    with pytest.raises(SamPromptError, match="direction"):
        seg.propagate(KEY, box=BOX, direction="sideways")
    with pytest.raises(SamPromptError, match="negative"):  # nothing to refine on this slice
        fresh = VolumeSegmenter(engine)
        fresh.set_volume(volume)
        fresh.correct(KEY, points=[(40, 30, -1)])
    with pytest.raises(SamPromptError, match="needs points"):
        seg.correct(KEY)
    with pytest.raises(SamPromptError, match="mask2d"):
        seg.correct(KEY, mask2d=np.zeros((3, 3)))
    with pytest.raises(SamPromptError, match="mask shape"):
        seg.set_mask(np.zeros((2, 2, 2)))
    with pytest.raises(SamStateError, match="undo"):
        VolumeSegmenter(engine).undo()
    with pytest.raises(SamStateError, match="set_volume"):
        VolumeSegmenter(engine).preview(0, box=BOX)
    s = VolumeSegmenter(engine)
    with pytest.raises(SamPromptError, match="3D"):
        s.set_volume(np.zeros((10, 10)))
    with pytest.raises(SamPromptError, match="3D"):
        s.set_volume(np.zeros((10, 10, 4, 2)))
    v = volume.copy()
    v[:, :, 0] = 0
    s.set_volume(v)
    with pytest.raises(SamPromptError, match="empty"):
        s.propagate(0, box=BOX)


# --------------------------------------------------------------------------- CLI
def test_parse_prompts():
    assert parse_box("6, 28,25,68,55") == (6, (28.0, 25.0, 68.0, 55.0))
    assert parse_points("6,48,40,+;9,48,40,-") == [(6, 48.0, 40.0, 1), (9, 48.0, 40.0, -1)]
    for bad in ("6,1,2,3", "a,1,2,3,4", "6.5,1,2,3,4"):
        with pytest.raises(SamPromptError):
            parse_box(bad)
    for bad in ("6,1,2", "6,1,2,x", ";"):
        with pytest.raises(SamPromptError):
            parse_points(bad)


def test_argparse_wiring(tmp_path, volume):
    import argparse

    nib = pytest.importorskip("nibabel")
    from napari_pandg.sam import add_sam_arguments, run_from_args

    src = tmp_path / "img.nii"
    nib.save(nib.Nifti1Image(volume, np.eye(4)), src)
    p = argparse.ArgumentParser()
    add_sam_arguments(p)
    args = p.parse_args(
        ["--checkpoint", str(tmp_path / "MedSAM2_latest.pt"), "-i", str(src), "-o",
         str(tmp_path / "m.nii.gz"), "--box", "6,28,25,68,55", "--z-range", "2", "9", "--stop-after-empty", "3"]
    )
    assert args.image_size == 512 and args.config == "auto" and args.z_range == [2, 9]
    assert args.stop_after_empty == 3
    with pytest.raises(SamCheckpointError, match="MedSAM2_latest.pt"):
        run_from_args(args)


def test_run_sam_cli_writes_nifti(engine, volume, tmp_path):
    nib = pytest.importorskip("nibabel")
    affine = np.array(
        [[0.0, -0.8, 0.0, 120.0], [0.75, 0.0, 0.0, -80.0], [0.0, 0.0, 3.0, -20.0], [0, 0, 0, 1]]
    )
    src = tmp_path / "t2w.nii.gz"
    nib.save(nib.Nifti1Image(volume, affine), src)
    out = tmp_path / "sub" / "mask.nii.gz"
    seen = []
    p = run_sam_cli(
        None, src, out, box=f"{KEY},{','.join(map(str, BOX))}",
        points=f"{KEY},48,40,+;9,48,40,-", engine=engine,
        progress=lambda z, d, t: seen.append(z),
    )
    assert p == out and out.exists()
    assert not [f for f in out.parent.iterdir() if f.name.startswith(".tmp")]
    img = nib.load(out)
    assert img.shape == SHAPE and np.allclose(img.affine, affine)
    assert img.get_data_dtype() == np.uint8
    data = np.asanyarray(img.dataobj)
    assert set(np.unique(data)) <= {0, 1}
    assert sorted(set(seen)) == list(range(SHAPE[2]))  # propagation + correction on slice 9
    with pytest.raises(FileExistsError):
        run_sam_cli(None, src, out, box=f"{KEY},28,25,68,55", engine=engine)
    run_sam_cli(None, src, out, box=f"{KEY},28,25,68,55", engine=engine, overwrite=True)
    with pytest.raises(SamPromptError, match="outside"):
        run_sam_cli(None, src, tmp_path / "x.nii.gz", box=f"{KEY},0,0,500,20", engine=engine)
    with pytest.raises(SamCheckpointError):
        run_sam_cli(None, src, tmp_path / "y.nii.gz", box=f"{KEY},28,25,68,55", device="cpu")
    four = tmp_path / "4d.nii"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4, 2), np.float32), affine), four)
    with pytest.raises(SamPromptError, match="3D"):
        run_sam_cli(None, four, tmp_path / "z.nii", box="1,1,1,5,5", engine=engine)


def test_run_sam_cli_several_objects_into_one_label_map(engine, volume, tmp_path):
    import argparse

    from napari_pandg.sam.cli import add_sam_arguments

    nib = pytest.importorskip("nibabel")
    src = tmp_path / "img.nii.gz"
    nib.save(nib.Nifti1Image(volume, np.diag([1.5, 1.5, 3.0, 1.0])), src)
    out = tmp_path / "objects.nii.gz"
    objects = [f"10:{KEY},{','.join(map(str, BOX))}", f"13:{KEY - 2},40,30,60,50:{KEY},50,40,+"]
    calls = engine.encoder_calls
    run_sam_cli(None, src, out, box=None, objects=objects, engine=engine)
    assert engine.encoder_calls - calls == SHAPE[2]  # slices encoded once for both objects
    data = np.asanyarray(nib.load(out).dataobj)
    # the same objects through the Python API give the same label map
    seg = VolumeSegmenter(engine)
    seg.set_volume(volume)
    m10 = seg.propagate(KEY, box=BOX)
    seg.add_object(13)
    seg.propagate(KEY - 2, box=(40, 30, 60, 50))
    m13 = seg.correct(KEY, points=[(50, 40, 1)])
    assert np.array_equal(data == 10, m10 > 0)
    assert np.array_equal(data == 13, (m13 > 0) & (m10 == 0))
    assert set(np.unique(data)) <= {0, 10, 13}
    with pytest.raises(SamPromptError, match="not both"):
        run_sam_cli(None, src, tmp_path / "a.nii.gz", box=f"{KEY},28,25,68,55", objects=objects,
                    engine=engine)
    with pytest.raises(SamPromptError, match="labels must differ"):
        run_sam_cli(None, src, tmp_path / "b.nii.gz", box=None, objects=objects[:1] * 2, engine=engine)
    for bad, msg in [("x:6,1,1,5,5", "not an integer"), ("300:6,1,1,5,5", "1..255"),
                     ("10", "must be"), ("10::", "neither a box nor points")]:
        with pytest.raises(SamPromptError, match=msg):
            parse_object(bad)
    p = argparse.ArgumentParser()
    add_sam_arguments(p)
    args = p.parse_args(["--checkpoint", "m.pt", "-i", "a.nii", "-o", "b.nii",
                         "--object", objects[0], "--object", objects[1]])
    assert args.objects == objects and args.box is None


# ---------------------------------------------------------------- on-disk feature cache
def test_feature_cache_on_disk_reused_across_sessions(engine, volume, tmp_path) -> None:
    """A second session on the same volume and model encodes nothing and gives the same mask."""
    s1 = VolumeSegmenter(engine, cache_dir=tmp_path)
    s1.set_volume(volume)
    n0 = engine.encoder_calls
    m1 = s1.propagate(KEY, box=BOX)
    assert engine.encoder_calls - n0 == SHAPE[2]
    assert s1.features_on_disk == list(range(SHAPE[2]))
    folders = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(folders) == 1 and (folders[0] / "meta.json").is_file() and (folders[0] / "pos.pt").is_file()
    assert not list(folders[0].glob("*.tmp"))  # atomic writes leave no temp files

    s2 = VolumeSegmenter(engine, cache_dir=tmp_path)
    s2.set_volume(volume)
    n0 = engine.encoder_calls
    m2 = s2.propagate(KEY, box=BOX)
    assert engine.encoder_calls == n0  # every slice came from disk
    np.testing.assert_array_equal(m1, m2)
    assert s2._cache.store.reads == SHAPE[2]

    # another volume (or a changed one) gets its own folder and is encoded
    s3 = VolumeSegmenter(engine, cache_dir=tmp_path)
    s3.set_volume(volume[::-1].copy())
    assert s3.features_on_disk == []
    s3.preview(KEY, box=BOX)
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2

    # a model with other weights does not read these features
    torch.manual_seed(1)
    other = load_sam_model(None, image_size=SIZE, device="cpu", random_init=True)
    assert other.fingerprint() != engine.fingerprint()
    s4 = VolumeSegmenter(other, cache_dir=tmp_path)
    s4.set_volume(volume)
    assert s4.features_on_disk == []


def test_feature_cache_on_disk_bad_files(engine, volume, tmp_path) -> None:
    s1 = VolumeSegmenter(engine, cache_dir=tmp_path)
    s1.set_volume(volume)
    s1.encode(slices=[KEY, KEY + 1])
    folder = s1._cache.store.path
    (folder / f"z{KEY:04d}.pt").write_bytes(b"not a torch file")  # truncated / corrupted
    s2 = VolumeSegmenter(engine, cache_dir=tmp_path)
    s2.set_volume(volume)
    n0 = engine.encoder_calls
    with pytest.warns(RuntimeWarning, match="cannot read cached features"):
        s2.encode(slices=[KEY, KEY + 1])
    assert engine.encoder_calls - n0 == 1  # the bad slice is encoded again, the good one read
    assert s2.features_on_disk == [KEY, KEY + 1]
    # the corrupted file was replaced by a good one
    s3 = VolumeSegmenter(engine, cache_dir=tmp_path)
    s3.set_volume(volume)
    n0 = engine.encoder_calls
    s3.encode(slices=[KEY])
    assert engine.encoder_calls == n0

    # a folder whose meta.json names other features is not trusted
    (folder / "meta.json").write_text('{"format": "napari-pandg/sam-features/1", "volume": "x", "model": "y"}')
    s4 = VolumeSegmenter(engine, cache_dir=tmp_path)
    with pytest.warns(RuntimeWarning, match="another volume or model"):
        s4.set_volume(volume)
    assert s4.features_on_disk == []

    # a file where the folder should be: a clear error
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        VolumeSegmenter(engine, cache_dir=f).set_volume(volume)


def test_feature_cache_write_failure_keeps_segmenting(engine, volume, tmp_path, monkeypatch) -> None:
    import napari_pandg.sam.predictor as predictor

    def disk_full(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(predictor.torch, "save", disk_full)
    s = VolumeSegmenter(engine, cache_dir=tmp_path / "cache")
    s.set_volume(volume)
    with pytest.warns(RuntimeWarning, match="disk cache is off"):
        m = s.propagate(KEY, box=BOX)
    assert m.shape == SHAPE and s.features_on_disk == []
    assert not list((tmp_path / "cache").rglob("*.tmp"))  # no half-written files left


def test_cli_cache_dir_second_run_encodes_nothing(engine, volume, tmp_path) -> None:
    import nibabel as nib

    img = tmp_path / "img.nii.gz"
    nib.save(nib.Nifti1Image(volume, np.diag([1.5, 1.5, 3.0, 1.0])), img)
    cache = tmp_path / "emb"
    box = f"{KEY},{BOX[0]},{BOX[1]},{BOX[2]},{BOX[3]}"
    run_sam_cli(None, img, tmp_path / "a.nii.gz", box=box, engine=engine, cache_dir=cache)
    n0 = engine.encoder_calls
    run_sam_cli(None, img, tmp_path / "b.nii.gz", box=box, points=f"{KEY + 2},48,40,+",
                engine=engine, cache_dir=cache)
    assert engine.encoder_calls == n0
    a = np.asanyarray(nib.load(tmp_path / "a.nii.gz").dataobj)
    assert a.shape == SHAPE


def test_medsam2_architecture_as_in_its_512_config() -> None:
    """The model built for MedSAM2 has the architecture MedSAM2's hiera-tiny 512 config declares.

    Values transcribed from bowang-lab/MedSAM2 ``sam2/configs/sam2.1_hiera_tiny512_*.yaml`` (and
    sam2.md section 1): every setting that shapes the state dict or the 512-px geometry. The RoPE
    ``feat_sizes`` (32x32 there, 64x64 in the stock yaml) are not parameters: sam2 recomputes them
    from the token count, checked here by running memory attention at 512.
    """
    from napari_pandg.sam.model import build_config, resolve_config

    assert resolve_config("medsam2") == "sam2.1_hiera_t"
    m = build_config("medsam2", 512).model
    trunk = m.image_encoder.trunk
    assert (trunk.embed_dim, trunk.num_heads) == (96, 1)
    assert list(trunk.stages) == [1, 2, 7, 2] and list(trunk.global_att_blocks) == [5, 7, 9]
    assert list(trunk.window_pos_embed_bkg_spatial_size) == [7, 7]
    neck = m.image_encoder.neck
    assert neck.d_model == 256 and list(neck.backbone_channel_list) == [768, 384, 192, 96]
    assert list(neck.fpn_top_down_levels) == [2, 3] and m.image_encoder.scalp == 1
    ma = m.memory_attention
    assert (ma.d_model, ma.num_layers, ma.layer.dim_feedforward, ma.layer.activation) == (256, 4, 2048, "relu")
    assert ma.layer.cross_attention.kv_in_dim == 64 and ma.layer.cross_attention.rope_k_repeat
    assert m.memory_encoder.out_dim == 64 and m.memory_encoder.fuser.num_layers == 2
    assert m.num_maskmem == 7 and m.image_size == 512
    for flag in ("use_high_res_features_in_sam", "use_obj_ptrs_in_encoder", "pred_obj_scores",
                 "pred_obj_scores_mlp", "fixed_no_obj_ptr", "use_mlp_for_obj_ptr_proj",
                 "proj_tpos_enc_in_obj_ptrs", "no_obj_embed_spatial", "directly_add_no_mem_embed"):
        assert m[flag] is True, flag
    assert m.add_all_frames_to_correct_as_cond is True  # as MedSAM2 trains with it

    # a 512-px model runs memory attention on 32x32 tokens although the yaml says 64x64
    engine = load_sam_model(None, config="medsam2", image_size=512, device="cpu", random_init=True)
    ca = engine.model.memory_attention.layers[0].cross_attn_image
    x = torch.zeros(1, 32 * 32, 256)
    mem = torch.zeros(1, 2 * 32 * 32, 64)
    with torch.inference_mode():
        out = ca(q=x, k=mem, v=mem, num_k_exclude_rope=0)
    assert out.shape == (1, 1024, 256) and ca.freqs_cis.shape[0] == 1024


def test_set_cache_dir_keeps_the_work_and_writes_encoded_slices(engine, volume, tmp_path) -> None:
    s = VolumeSegmenter(engine)
    s.set_volume(volume)
    m = s.propagate(KEY, box=BOX)
    assert s.features_on_disk == []
    assert s.set_cache_dir(tmp_path / "emb") == SHAPE[2]  # every encoded slice written
    np.testing.assert_array_equal(s.mask, m)
    assert s.anchors == [KEY] and s.can_undo
    assert s.features_on_disk == list(range(SHAPE[2]))
    assert s.set_cache_dir(tmp_path / "emb") == 0  # nothing new to write
    # a later session reads them
    s2 = VolumeSegmenter(engine, cache_dir=tmp_path / "emb")
    s2.set_volume(volume)
    n0 = engine.encoder_calls
    np.testing.assert_array_equal(s2.propagate(KEY, box=BOX), m)
    assert engine.encoder_calls == n0
    assert s.set_cache_dir(None) == 0 and s._cache.store is None


def test_early_stop_on_empty_slices_skips_encoding_and_keeps_the_mask():
    """``stop_after_empty=k`` ends each pass after k empty slices: fewer slices encoded, the same mask.

    A real sam2 model with random weights (seed 5) that, on this volume, segments the key
    slice only; the premise is checked first, so a change in sam2's numerics fails loudly
    instead of passing vacuously.
    """
    shape, key = (96, 80, 24), 6
    x, y, z = np.meshgrid(*(np.arange(s) for s in shape), indexing="ij")
    vol = 100.0 + 30.0 * np.random.default_rng(0).random(shape)
    vol[((x - 48) / 18) ** 2 + ((y - 40) / 13) ** 2 + ((z - key) / 5) ** 2 < 1] += 500.0
    vol[:, :, 14:] = 0
    torch.manual_seed(5)
    eng = load_sam_model(None, image_size=SIZE, device="cpu", random_init=True)
    full_seg = VolumeSegmenter(eng, keep_largest=False)
    full_seg.set_volume(vol.astype(np.float32))
    c0 = eng.encoder_calls
    full = full_seg.propagate(key, box=BOX)
    assert eng.encoder_calls - c0 == shape[2] and len(full_seg.last_visited) == shape[2]
    area = full.sum((0, 1))
    assert area[key] > 0 and not area[np.arange(shape[2]) != key].any(), area  # premise
    assert full_seg.last_stopped_empty == {}

    seg = VolumeSegmenter(eng, keep_largest=False)
    seg.set_volume(vol.astype(np.float32))
    c0 = eng.encoder_calls
    early = seg.propagate(key, box=BOX, stop_after_empty=2)
    assert seg.last_stopped_empty == {"forward": key + 2, "backward": key - 2}
    assert sorted(seg.last_visited) == list(range(key - 2, key + 3))
    assert eng.encoder_calls - c0 == 5  # 5 of 24 slices encoded
    assert np.array_equal(early, full)
    with pytest.raises(SamPromptError, match="stop_after_empty"):
        seg.propagate(key, box=BOX, stop_after_empty=-1)
