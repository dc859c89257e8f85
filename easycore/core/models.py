"""Models. Every model takes inputs in [0, 1] and normalises inside.

Common API (used by AIGN tracking, coresets and attacks):
    model(x)            -> logits [B, K]            x: float in [0, 1], [B, C, H, W]
    model.features(x)   -> penultimate features [B, d]
    model.fc            -> the final nn.Linear (logits = model.fc(model.features(x)))
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from easycore.registry import Registry


class Normalize(nn.Module):
    """(x - mean) / std with per-channel constants stored as buffers (they follow .to())."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


class Classifier(nn.Module):
    """normalise -> body (-> [B, d] features) -> fc."""

    def __init__(self, body: nn.Module, feat_dim: int, num_classes: int, mean, std):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.body = body
        self.fc = nn.Linear(feat_dim, num_classes)
        self.feat_dim = feat_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


# ----------------------------------------------------------------------------- small CNN
def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def cnn_small_body(in_channels: int, width: int = 32) -> tuple[nn.Module, int]:
    """A fast CNN for CPU demos: 4 conv-BN-ReLU blocks, 3 poolings, global average pool."""
    w = width
    body = nn.Sequential(
        _conv_bn(in_channels, w),
        _conv_bn(w, 2 * w), nn.MaxPool2d(2),
        _conv_bn(2 * w, 4 * w), nn.MaxPool2d(2),
        _conv_bn(4 * w, 4 * w), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )
    return body, 4 * w


# ----------------------------------------------------------------------------- ResNet-18 (CIFAR)
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        sc = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + sc


class ResNetBody(nn.Module):
    """CIFAR ResNet-18 body: 3x3 stem, no max-pool, 4 stages (64..512), global average pool."""

    def __init__(self, block: Callable, in_channels: int, preact: bool, widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2)):
        super().__init__()
        self.preact = preact
        self.stem = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.stem_bn = None if preact else nn.BatchNorm2d(widths[0])
        layers, cin = [], widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            for j in range(n):
                layers.append(block(cin, w, 2 if (j == 0 and i > 0) else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.final_bn = nn.BatchNorm2d(cin) if preact else None
        self.out_dim = cin

    def forward(self, x):
        out = self.stem(x)
        if self.stem_bn is not None:
            out = F.relu(self.stem_bn(out))
        out = self.layers(out)
        if self.final_bn is not None:
            out = F.relu(self.final_bn(out))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)


# ----------------------------------------------------------------------------- WideResNet
class WideBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, drop: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.drop = drop
        self.shortcut = None if (cin == cout and stride == 1) else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        o = F.relu(self.bn1(x))
        sc = x if self.shortcut is None else self.shortcut(o)
        o = self.conv1(o)
        o = F.relu(self.bn2(o))
        if self.drop > 0:
            o = F.dropout(o, p=self.drop, training=self.training)
        return self.conv2(o) + sc


class WideResNetBody(nn.Module):
    def __init__(self, depth: int, widen: int, in_channels: int):
        super().__init__()
        assert (depth - 4) % 6 == 0, "WideResNet depth must be 6n+4"
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.stem = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        layers, cin = [], widths[0]
        for i, w in enumerate(widths[1:]):
            for j in range(n):
                layers.append(WideBlock(cin, w, (1 if i == 0 else 2) if j == 0 else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(cin)
        self.out_dim = cin

    def forward(self, x):
        out = F.relu(self.bn(self.layers(self.stem(x))))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)


# ----------------------------------------------------------------------------- registry
MODELS = Registry("model", "models")
"""name -> Entry(fn): fn(in_channels) -> (body module mapping [B, C, H, W] to [B, d] features, d)."""


@MODELS.register("cnn_small")
def _cnn_small(c):
    """A fast CNN for CPU demos: 4 conv-BN-ReLU blocks at width 32."""
    return cnn_small_body(c, 32)


@MODELS.register("cnn_tiny")
def _cnn_tiny(c):
    """cnn_small at width 16: the CPU demo and study model."""
    return cnn_small_body(c, 16)


@MODELS.register("resnet_tiny")
def _resnet_tiny(c):
    """ResNet-18 shape at 1/4 width with one block per stage: a second CPU-demo architecture."""
    b = ResNetBody(BasicBlock, c, preact=False, widths=(16, 32, 64, 128), blocks=(1, 1, 1, 1))
    return b, b.out_dim


@MODELS.register("resnet18")
def _resnet18(c):
    """CIFAR ResNet-18 (3x3 stem, no max-pool)."""
    b = ResNetBody(BasicBlock, c, preact=False)
    return b, b.out_dim


@MODELS.register("preact_resnet18")
def _preact18(c):
    """CIFAR PreAct ResNet-18."""
    b = ResNetBody(PreActBlock, c, preact=True)
    return b, b.out_dim


def _wrn(depth, widen):
    def make(c):
        b = WideResNetBody(depth, widen, c)
        return b, b.out_dim
    make.__doc__ = f"WideResNet-{depth}-{widen}."
    return make


MODELS.register("wrn28_10")(_wrn(28, 10))
MODELS.register("wrn34_10")(_wrn(34, 10))


def _torchvision_resnet(arch: str):
    def make(c):
        import torchvision

        m = getattr(torchvision.models, arch)(weights=None)
        if c != 3:
            m.conv1 = nn.Conv2d(c, m.conv1.out_channels, 7, 2, 3, bias=False)
        dim = m.fc.in_features
        m.fc = nn.Identity()  # the body ends at the pooled features; build_model adds the classifier
        return m, dim
    make.__doc__ = f"torchvision's {arch} (ImageNet stem: 7x7 stride-2 conv + max-pool), random init."
    return make


MODELS.register("tv_resnet18")(_torchvision_resnet("resnet18"))
MODELS.register("tv_resnet50")(_torchvision_resnet("resnet50"))


def build_model(name: str, num_classes: int, in_channels: int, mean, std) -> Classifier:
    """Build a model by name (see MODELS). mean/std: per-channel input normalisation constants."""
    body, dim = MODELS.get(name).fn(in_channels)
    return Classifier(body, dim, num_classes, mean, std)
