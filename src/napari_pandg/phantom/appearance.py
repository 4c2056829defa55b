"""Appearance randomisation: random-contrast MR-like images of a phantom anatomy.

SynthSeg-style domain randomisation (Billot et al., Med Image Anal 2023) done with this
phantom's own acquisition model, so that the rendered images carry the effects real scans
have and a per-patch intensity shuffle does not:

1. **contrast** (:func:`random_contrast`, fine grid): every (label, tissue) region gets a random
   water intensity (a Gaussian mixture over *all* structures, not only the labelled ones),
   every fat-bearing tissue its fat fraction with one random fat intensity per image and a
   random water-fat phase (0: in phase / fat bright or suppressed; pi: opposed phase, so
   sub-voxel water-fat mixing cancels at organ borders -- the India-ink line -- after the PSF;
   random: anything between), a random per-region texture, and failed fat suppression as a
   smooth field that lets fat back in at the periphery. Air, gas, lung and cortical bone have
   no MR signal in any sequence and stay dark.
2. **acquisition** (:func:`random_acquisition`): a random voxel grid (in-plane 1.5-3 mm,
   slices 1.5-8 mm thick with a random gap, field of view that may crop the body, slab of
   80-220 mm at a random level), the separable complex PSF of
   :mod:`napari_pandg.phantom.acquisition` (windowed sinc in-plane, slice profile with
   respiratory blur), magnitude last; then respiratory ghosts along the phase axis, Gibbs
   ringing (k-space truncation), smooth coil shading, Rician noise of random level and a
   random monotone intensity non-linearity. Labels follow on the same grid by partial-volume
   argmax (:func:`napari_pandg.phantom.acquisition.resample_labels`).

Both are pure numpy/scipy functions of their ``rng``. The ranges are listed in
``docs/phantom.md`` (section *Appearance randomisation*).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from napari_pandg.phantom import tissues as T
from napari_pandg.phantom._grid import apply_separable, psf_matrix, smooth_noise
from napari_pandg.phantom.acquisition import resample_labels
from napari_pandg.phantom.anatomy import Anatomy

#: tissues without MR signal in any sequence
DARK_TISSUES = (T.AIR, T.GAS, T.LUNG, T.CORT_BONE)


@dataclass(frozen=True)
class AppearanceOptions:
    """Ranges of the randomisation (defaults: the full ranges used for training)."""

    opposed_phase_prob: float = 0.3
    random_phase_prob: float = 0.1
    fat_suppressed_prob: float = 0.4
    failed_fat_sat_prob: float = 0.2
    texture_max: float = 0.2
    inplane_spacing: tuple[float, float] = (1.5, 3.0)
    slice_thickness: tuple[float, float] = (1.5, 8.0)
    slab_mm: tuple[float, float] = (80.0, 220.0)
    crop_fov_prob: float = 0.25
    motion_prob: float = 0.3
    ghost_prob: float = 0.15
    gibbs_prob: float = 0.15
    bias_max: float = 0.6
    noise: tuple[float, float] = (0.005, 0.08)
    nonlinear_prob: float = 0.3


def _fat_fraction(anat: Anatomy) -> np.ndarray:
    ff = np.zeros(T.N_TISSUES, np.float32)
    for t, row in T._TABLE.items():
        ff[t] = row[7]
    ff[T.PANCREAS] = 0.04
    ff[T.LIVER] = 0.03
    return ff[anat.tissue]


def random_contrast(anat: Anatomy, rng: np.random.Generator, opts: AppearanceOptions | None = None) -> np.ndarray:
    """Complex fine-grid signal (complex64, shape of ``anat.label``) with a random contrast."""
    o = opts or AppearanceOptions()
    key = anat.label.astype(np.int32) * 64 + anat.tissue.astype(np.int32)
    uniq = np.flatnonzero(np.bincount(key.ravel(), minlength=256 * 64))  # the (label, tissue) regions
    lut = np.zeros(256 * 64, np.int32)
    lut[uniq] = np.arange(len(uniq), dtype=np.int32)
    inv = lut[key]
    tissue_of = (uniq % 64).astype(np.int64)
    n = len(uniq)
    water = rng.uniform(0.0, 1.0, n).astype(np.float32)
    # a mixture: one random "tissue class" intensity shared by a random subset of regions, so
    # neighbours sometimes have the same contrast (as pancreas and liver on many sequences)
    share = rng.random(n) < 0.25
    if share.any():
        water[share] = rng.uniform(0, 1, 3).astype(np.float32)[rng.integers(0, 3, int(share.sum()))]
    dark = np.isin(tissue_of, DARK_TISSUES)
    water[dark] = rng.uniform(0.0, 0.04, int(dark.sum()))
    ff = _fat_fraction(anat)
    fat_level = float(rng.uniform(0.0, 0.15) if rng.random() < o.fat_suppressed_prob else rng.uniform(0.2, 1.0))
    u = rng.random()
    if u < o.opposed_phase_prob:
        phase = np.pi
    elif u < o.opposed_phase_prob + o.random_phase_prob:
        phase = float(rng.uniform(0, 2 * np.pi))
    else:
        phase = 0.0
    w = water[inv]
    amp = rng.uniform(0.0, o.texture_max, n).astype(np.float32)
    tex_field = smooth_noise(rng, anat.axes, float(rng.uniform(4.0, 12.0)))
    w = w * np.clip(1.0 + amp[inv] * tex_field, 0.2, 2.0)
    w += rng.normal(0.0, 0.01, w.shape).astype(np.float32)  # within-region variation
    fat = np.float32(fat_level) * np.ones_like(w)
    if rng.random() < o.failed_fat_sat_prob:  # fat returns where the suppression fails (periphery, B0)
        field = smooth_noise(rng, anat.axes, 60.0)
        fat = fat + np.float32(rng.uniform(0.2, 0.8)) * np.clip(field, 0.0, None)
    sig = (w * (1.0 - ff)).astype(np.complex64)
    sig += (fat * ff).astype(np.float32) * np.complex64(np.exp(1j * phase))
    return sig


def _axes(centre: float, n: int, spacing: float, sign: float) -> np.ndarray:
    return centre + sign * (np.arange(n) - (n - 1) / 2.0) * spacing


def random_acquisition(
    anat: Anatomy, signal: np.ndarray, rng: np.random.Generator, opts: AppearanceOptions | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image float32, labels uint8, affine) of one random acquisition of ``signal``.

    The grid is axis-aligned with random flips (RAS/LPS/LAS-like storage), so the image goes
    through the same reorientation and resampling as a file at inference time.
    """
    o = opts or AppearanceOptions()
    body = anat.body
    sx = float(rng.uniform(*o.inplane_spacing))
    sy = sx * float(rng.uniform(0.9, 1.15))
    thick = float(rng.uniform(*o.slice_thickness))
    sz = thick * float(rng.uniform(1.0, 1.25))  # spacing >= thickness (gaps) or contiguous
    res = (sx * float(rng.uniform(1.0, 1.4)), sy * float(rng.uniform(1.0, 1.6)))
    width = 2 * body["a"] + 20.0
    depth = body["y_ant"] - body["y_post"] + 20.0
    if rng.random() < o.crop_fov_prob:  # a field of view that cuts the flanks / the front
        width *= float(rng.uniform(0.7, 0.95))
        depth *= float(rng.uniform(0.8, 1.0))
    slab = float(rng.uniform(*o.slab_mm))
    zc = float(rng.normal(0.0, 25.0))
    yc = 0.5 * (body["y_post"] + body["y_ant"])
    shape = (max(8, int(round(width / sx))), max(8, int(round(depth / sy))), max(4, int(round(slab / sz))))
    signs = (float(rng.choice([-1, 1])), float(rng.choice([-1, 1])), 1.0)
    axes = (_axes(0.0, shape[0], sx, signs[0]), _axes(yc, shape[1], sy, signs[1]), _axes(zc, shape[2], sz, 1.0))
    motion = float(rng.uniform(2.0, 12.0)) if rng.random() < o.motion_prob else 0.0
    mats = [psf_matrix(anat.axes[0], axes[0], "sinc", res[0]), psf_matrix(anat.axes[1], axes[1], "sinc", res[1]),
            psf_matrix(anat.axes[2], axes[2], "slice", thick, motion=motion)]  # fmt: skip
    img = apply_separable(signal, mats)
    if rng.random() < o.ghost_prob:
        k = shape[1] // int(rng.integers(2, 6))
        a = float(rng.uniform(0.05, 0.25))
        img = img + 0.5 * a * (np.roll(img, k, axis=1) + np.roll(img, -k, axis=1))
    mag = np.abs(img).astype(np.float32)
    del img
    if rng.random() < o.gibbs_prob:  # k-space truncation along one in-plane axis
        ax = int(rng.integers(0, 2))
        f = np.fft.fftshift(np.fft.fft(mag, axis=ax), axes=ax)
        keep = int(shape[ax] * float(rng.uniform(0.35, 0.7)) / 2)
        c = shape[ax] // 2
        sl = [slice(None)] * 3
        sl[ax] = np.r_[0 : max(c - keep, 0), min(c + keep, shape[ax]) : shape[ax]]
        f[tuple(sl)] = 0
        mag = np.abs(np.fft.ifft(np.fft.ifftshift(f, axes=ax), axis=ax)).astype(np.float32)
    # coil shading: smooth random field plus a brighter periphery (surface coils)
    u = (axes[0] / max(body["a"], 1.0)).astype(np.float32)[:, None, None]
    v = ((axes[1] - yc) / max(0.5 * depth, 1.0)).astype(np.float32)[None, :, None]
    coarse = rng.normal(0.0, 1.0, (4, 4, 3)).astype(np.float32)
    field = ndi.zoom(coarse, [s / c for s, c in zip(shape, coarse.shape, strict=True)], order=1)[
        : shape[0], : shape[1], : shape[2]
    ]
    b = float(rng.uniform(0.0, o.bias_max))
    bias = np.exp(b * field + float(rng.uniform(0.0, 0.5)) * (u * u + v * v)).astype(np.float32)
    mag *= bias
    ref = float(np.percentile(mag, 90)) + 1e-6
    sigma = ref * float(rng.uniform(*o.noise))
    n1 = rng.standard_normal(mag.shape, dtype=np.float32) * np.float32(sigma)
    n2 = rng.standard_normal(mag.shape, dtype=np.float32) * np.float32(sigma)
    mag = np.sqrt((mag + n1) ** 2 + n2 * n2)  # Rician magnitude
    mag /= float(np.percentile(mag, 99.5)) + 1e-6
    mag = np.clip(mag, 0.0, None)
    mag = mag ** np.float32(np.exp(rng.normal(0.0, 0.3)))
    if rng.random() < o.nonlinear_prob:  # a random monotone curve
        xs = np.sort(rng.uniform(0.0, 1.0, 3))
        ys = np.sort(rng.uniform(0.0, 1.0, 3))
        mag = np.interp(mag, np.r_[0.0, xs, mag.max() + 1e-6], np.r_[0.0, ys, 1.0]).astype(np.float32)
    mag *= np.float32(rng.uniform(100.0, 3000.0))  # storage scale
    labels = resample_labels(anat.label, [psf_matrix(anat.axes[0], axes[0], "box", sx),
                                          psf_matrix(anat.axes[1], axes[1], "box", sy),
                                          psf_matrix(anat.axes[2], axes[2], "box", thick)])  # fmt: skip
    aff = np.diag([signs[0] * sx, signs[1] * sy, sz, 1.0])
    aff[:3, 3] = [axes[0][0], axes[1][0], axes[2][0]]
    return mag.astype(np.float32), labels, aff
