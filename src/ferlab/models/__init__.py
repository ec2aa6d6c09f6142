"""Model zoo: from-scratch gray nets and torchvision ImageNet backbones behind one factory.

Example::

    model = create_model("mobilenet_v2", num_classes=7, pretrained=True, head="mlp")
    model_info("mobilenet_v2").stages  # for progressive unfreezing, input side first
"""

from . import backbones as _backbones  # noqa: F401  (registers the ImageNet models)
from . import face_resnet as _face_resnet  # noqa: F401  (registers dlib's face ResNet)
from . import small as _small  # noqa: F401  (registers the from-scratch models)
from .info import ModelInfo
from .registry import FERModel, create_model, list_models, model_info, register_model
from .weights import resolve_pretrained_state

__all__ = [
    "FERModel",
    "ModelInfo",
    "create_model",
    "list_models",
    "model_info",
    "register_model",
    "resolve_pretrained_state",
]
