"""Network construction from a (name, kwargs) description.

Three architectures are known:

* ``"UNet"``: :class:`monai.networks.nets.UNet` (``spatial_dims=3``; kwargs such as
  ``channels``, ``strides``, ``num_res_units``, ``norm``).
* ``"DynUNet"``: :class:`monai.networks.nets.DynUNet` (kwargs ``kernel_size``, ``strides``,
  ``upsample_kernel_size``, ``filters``, ``norm_name``, ...).
* ``"PlainUnet"``: the plain double-conv 3D UNet used by anatomix and MaskGen/DropGen
  (batch norm, ReLU, max-pool, nearest upsampling, reflect padding, concatenated skips). Its
  parameters live in one ``nn.Sequential`` called ``model`` with the same layer order as
  the published checkpoints, so ``anatomix.pth`` and a MaskGen ``best.pth`` load with
  ``strict=True``.

:class:`FeatureConcatNet` wraps a frozen feature extractor and a segmentation network:
``seg(cat([x, features(x)]))`` (MaskGen inference; no channel masking).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from napari_pandg.models.description import ARCHITECTURES
from napari_pandg.models.errors import ModelError


class PlainUnet(nn.Module):
    """Plain 3D UNet with the anatomix / MaskGen layer layout.

    ``num_downs`` pooling levels; encoder widths ``ngf, 2ngf, 4ngf, ...``; bottleneck
    ``ngf * 2**num_downs``. Input sizes must be divisible by ``2**num_downs``.
    """

    def __init__(
        self,
        input_nc: int = 1,
        output_nc: int = 16,
        num_downs: int = 4,
        ngf: int = 16,
        norm: str = "batch",
        pad_type: str = "reflect",
    ) -> None:
        super().__init__()
        if norm not in ("batch", "instance", "none"):
            raise ModelError(f"PlainUnet: unknown norm {norm!r}; use batch, instance or none")
        self.num_downs = int(num_downs)
        bias = norm == "instance"
        layers: list[nn.Module] = []

        def conv_unit(cin: int, cout: int) -> None:
            layers.append(
                nn.Conv3d(cin, cout, 3, stride=1, padding="same", bias=bias, padding_mode=pad_type)
            )
            if norm == "batch":
                layers.append(nn.BatchNorm3d(cout))
            elif norm == "instance":
                layers.append(nn.InstanceNorm3d(cout))
            layers.append(nn.ReLU(inplace=True))

        conv_unit(input_nc, ngf)
        self._skip_out: list[int] = []  # layer ids whose output is kept for a skip
        self._skip_in: list[int] = []  # layer ids (upsamplers) whose output gets the skip
        width = ngf
        for level in range(num_downs):
            out = width if level == 0 else width * 2
            conv_unit(width, out)
            conv_unit(out, out)
            self._skip_out.append(len(layers) - 1)
            layers.append(nn.MaxPool3d(2))
            width = out
        conv_unit(width, width * 2)
        conv_unit(width * 2, width * 2)
        mult = 2**num_downs
        for _ in range(num_downs):
            self._skip_in.append(len(layers))
            layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
            conv_unit(ngf * (mult + mult // 2), ngf * (mult // 2))
            conv_unit(ngf * (mult // 2), ngf * (mult // 2))
            mult //= 2
        layers.append(
            nn.Conv3d(
                ngf * mult, output_nc, 3, stride=1, padding="same", bias=bias, padding_mode=pad_type
            )
        )
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips: list[torch.Tensor] = []
        skip_out, skip_in = set(self._skip_out), set(self._skip_in)
        for i, layer in enumerate(self.model):
            x = layer(x)
            if i in skip_in:
                x = torch.cat((skips.pop(), x), dim=1)
            if i in skip_out:
                skips.append(x)
        return x


class FeatureConcatNet(nn.Module):
    """``seg(cat([x, features(x)], dim=1))`` with the feature extractor frozen."""

    def __init__(self, features: nn.Module, seg: nn.Module) -> None:
        super().__init__()
        self.features = features
        self.seg = seg
        for p in self.features.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> FeatureConcatNet:  # features stay in eval mode
        super().train(mode)
        self.features.eval()
        return self

    def compute_features(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seg(torch.cat([x, self.compute_features(x)], dim=1))


def build_network(
    architecture: str, kwargs: Mapping[str, Any], in_channels: int, out_channels: int
) -> nn.Module:
    """Instantiate ``architecture`` with ``kwargs`` (3D, given input/output channels)."""
    kw = dict(kwargs)
    for k in ("spatial_dims", "in_channels", "out_channels", "input_nc", "output_nc"):
        kw.pop(k, None)
    try:
        if architecture == "UNet":
            from monai.networks.nets import UNet

            kw.setdefault("channels", (16, 32, 64, 128))
            kw.setdefault("strides", (2,) * (len(kw["channels"]) - 1))
            return UNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels, **kw)
        if architecture == "DynUNet":
            from monai.networks.nets import DynUNet

            kw.setdefault("kernel_size", [3, 3, 3, 3])
            kw.setdefault("strides", [1, 2, 2, 2])
            kw.setdefault("upsample_kernel_size", kw["strides"][1:])
            return DynUNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels, **kw)
        if architecture == "PlainUnet":
            return PlainUnet(input_nc=in_channels, output_nc=out_channels, **kw)
    except TypeError as exc:
        raise ModelError(f"cannot build {architecture} with arguments {kw}: {exc}") from exc
    raise ModelError(
        f"unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}"
    )


class PatchMinMax(nn.Module):
    """Per-sample min-max rescaling to [0, 1] (anatomix expects [0, 1] inputs)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lo = x.amin(dim=tuple(range(1, x.ndim)), keepdim=True)
        hi = x.amax(dim=tuple(range(1, x.ndim)), keepdim=True)
        return (x - lo) / (hi - lo + 1e-6)


class FeatureExtractor(nn.Module):
    """``[min-max] -> network -> [InstanceNorm]``; parameters live under ``net.``."""

    def __init__(self, net: nn.Module, out_channels: int, input_minmax: bool, instance_norm: bool):
        super().__init__()
        self.pre = PatchMinMax() if input_minmax else nn.Identity()
        self.net = net
        self.post = nn.InstanceNorm3d(out_channels) if instance_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(self.net(self.pre(x)))


def build_feature_extractor(spec: Mapping[str, Any]) -> nn.Module:
    """Frozen feature extractor from a description dict.

    ``spec``: ``architecture`` (default PlainUnet), ``kwargs``, ``in_channels`` (1),
    ``out_channels`` (16), ``input_norm`` (``"minmax"``: per-patch [0, 1] rescaling before the
    network, as anatomix expects; ``"none"``) and ``instance_norm`` (True: a non-affine
    ``InstanceNorm3d`` on the output, as MaskGen does).
    """
    out_ch = int(spec.get("out_channels", 16))
    net = build_network(
        spec.get("architecture", "PlainUnet"),
        spec.get("kwargs", {}),
        int(spec.get("in_channels", 1)),
        out_ch,
    )
    fx = FeatureExtractor(
        net, out_ch, spec.get("input_norm", "minmax") == "minmax", bool(spec.get("instance_norm", True))
    )
    fx.eval()
    for p in fx.parameters():
        p.requires_grad_(False)
    return fx


def size_divisor(architecture: str, kwargs: Mapping[str, Any]) -> int:
    """The factor every input size must be divisible by for ``architecture``."""
    if architecture == "PlainUnet":
        return 2 ** int(kwargs.get("num_downs", 4))
    strides = kwargs.get("strides", (2, 2, 2))
    out = 1
    for s in strides:
        s = max(s) if isinstance(s, (list, tuple)) else int(s)
        out *= s
    return out


def count_parameters(net: nn.Module) -> int:
    return int(sum(p.numel() for p in net.parameters()))
