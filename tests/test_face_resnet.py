"""dlib's face-recognition ResNet: its file reader, its weights in our backbone, its outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ferlab.errors import ConfigError, ModelError
from ferlab.models import create_model
from ferlab.models.dlib_file import read_dlib_layers, read_dlib_state
from ferlab.models.face_resnet import FACE_RESNET_WEIGHTS, ChannelAffine, rebalance_convolutions
from ferlab.models.imagenet_files import find_imagenet_file
from ferlab.models.registry import check_input_size


def _int(value: int) -> bytes:
    """dlib's integer: a byte count (high bit: negative), then little-endian bytes."""
    body = abs(value).to_bytes(max(1, (abs(value).bit_length() + 7) // 8), "little")
    return bytes([len(body) | (0x80 if value < 0 else 0)]) + body


def _string(text: str) -> bytes:
    return _int(len(text)) + text.encode()


def _tensor(values: np.ndarray) -> bytes:
    flat = values.astype("<f4").ravel()
    header = b"".join(_int(v) for v in (2, len(flat), 1, 1, 1))
    return header + flat.tobytes()


def _dlib_net_file(path: Path, layers: list[nn.Module], fc: torch.Tensor) -> None:
    """A file laid out as dlib serialises a network: records for the parameter layers between
    records without parameters, each parameter tensor flat as dlib keeps it."""
    parts = [_int(1), _string("loss_metric_2"), _string("input_rgb_image_sized")]
    parts += [_int(16), _int(-4)]  # a dlib float (16 * 2^-4), as the input layer's means are
    for module in layers:
        if isinstance(module, nn.Conv2d):
            values = torch.cat([module.weight.detach().ravel(), module.bias.detach().ravel()])
            out, _, rows, columns = module.weight.shape
            sizes = b"".join(_int(v) for v in (out, rows, columns, 1, 1, 1, 1))
            parts += [_string("con_4"), _tensor(values.numpy()), sizes, _int(16), _int(-4)]
        else:
            values = torch.cat([module.weight.detach(), module.bias.detach()])
            parts += [_string("affine_"), _tensor(values.numpy()), _int(1)]
            parts += [_string("relu_"), _int(0), _string("add_prev_")]
    outputs, inputs = fc.shape
    parts += [_string("fc_2"), _int(outputs), _int(inputs), _tensor(fc.t().numpy())]
    path.write_bytes(b"".join(parts))


def _param_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d | ChannelAffine)]


def test_a_dlib_file_loads_into_the_backbone(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = create_model("face_resnet29", num_classes=8).backbone
    with torch.no_grad():
        for module in _param_layers(source):
            for p in module.parameters():
                p.normal_()
    fc = torch.randn(128, 256)
    file = tmp_path / "net.dat"
    _dlib_net_file(file, _param_layers(source), fc)

    layers = read_dlib_layers(file)
    assert [layer.kind for layer in layers] == ["con", "affine"] * 29 + ["fc"]
    assert layers[0].sizes == (32, 7, 7)
    state = read_dlib_state(file)
    assert state["con.0.weight"].shape == (32, 3, 7, 7)
    assert state["affine.28.bias"].shape == (256,)
    torch.testing.assert_close(state["fc.0.weight"], fc)

    loaded = create_model("face_resnet29", num_classes=8, pretrained=file).backbone
    rebalance_convolutions(source)
    for name, value in source.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], value, msg=name)


def test_rebalancing_keeps_the_function_and_gives_convolutions_he_scale() -> None:
    torch.manual_seed(0)
    backbone = create_model("face_resnet29", num_classes=8).backbone.eval()
    with torch.no_grad():
        for index, module in enumerate(_param_layers(backbone)):
            if isinstance(module, nn.Conv2d):
                module.weight.mul_(0.02 * (1 + index % 5))
                module.bias.uniform_(-0.01, 0.01)
            else:
                module.weight.uniform_(3.0, 14.0)
                module.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        before = backbone(x)
        rebalance_convolutions(backbone)
        after = backbone(x)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5 * float(before.abs().max()))
    for module in backbone.modules():
        if isinstance(module, nn.Conv2d):
            he_std = (2.0 / module.weight[0].numel()) ** 0.5
            assert float(module.weight.detach().std()) == pytest.approx(he_std, rel=1e-4)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x00" * 64, "no layer with parameters found"),
        (_string("con_4") + _int(2) + _int(1000) + _int(1) * 3 + b"\x00" * 40, "file ends inside"),
        (_string("con_4") + _int(3), "tensor version other than 2"),
        (_string("affine_") + _tensor(np.ones(4)), "do not fit model"),
    ],
)
def test_bad_dlib_files_are_refused_naming_the_file(
    tmp_path: Path, content: bytes, message: str
) -> None:
    file = _write(tmp_path / "bad.dat", content)
    with pytest.raises(ModelError) as info:
        create_model("face_resnet29", num_classes=8, pretrained=file)
    assert message in str(info.value)
    assert str(file) in str(info.value)
    assert "\n" not in str(info.value)


def test_smaller_branch_is_zero_padded_as_in_dlib() -> None:
    model = create_model("face_resnet29", num_classes=8).eval()
    block = model.backbone.features.level1[0]  # 128 -> 256 channels, 6 px -> 2 or 3 px
    x = torch.randn(1, 128, 6, 6)
    out = block(x)
    assert out.shape == (1, 256, 3, 3)
    with torch.no_grad():
        short = nn.functional.avg_pool2d(x, 2)
        main = block.affine2(block.conv2(torch.relu(block.affine1(block.conv1(x)))))
    expected = torch.zeros(1, 256, 3, 3)
    expected[:, :128] += short
    expected[:, :, :2, :2] += main
    torch.testing.assert_close(out, torch.relu(expected))


DLIB_WEIGHTS = find_imagenet_file(FACE_RESNET_WEIGHTS)
# dlib 20.0.1's face_recognition_model_v1.compute_face_descriptor on the chip below
DLIB_DESCRIPTOR_HEAD = [
    -0.0696087,
    0.1646732,
    0.0825798,
    -0.0805449,
    -0.0861064,
    -0.0352679,
    -0.1038181,
    -0.0172421,
]
DLIB_DESCRIPTOR_NORM = 1.3262448


@pytest.mark.skipif(
    DLIB_WEIGHTS is None,
    reason=f"{FACE_RESNET_WEIGHTS} not installed (make weights: face-recognition-models)",
)
def test_the_shipped_dlib_weights_give_dlibs_own_descriptor() -> None:
    assert DLIB_WEIGHTS is not None
    model = create_model("face_resnet29", num_classes=8, pretrained=True).eval()
    info = model.info
    i, j, c = np.meshgrid(np.arange(150), np.arange(150), np.arange(3), indexing="ij")
    chip = ((i * 7 + j * 13 + c * 50 + (i * j) % 31) % 256).astype(np.float32)
    x = torch.from_numpy(chip).permute(2, 0, 1)[None] / 255
    x = (x - torch.tensor(info.mean).view(1, 3, 1, 1)) / torch.tensor(info.std).view(1, 3, 1, 1)
    fc = read_dlib_state(DLIB_WEIGHTS)["fc.0.weight"]
    with torch.no_grad():
        descriptor = (model.backbone(x) @ fc.t())[0].numpy()
    np.testing.assert_allclose(descriptor[:8], DLIB_DESCRIPTOR_HEAD, atol=2e-6)
    assert np.linalg.norm(descriptor) == pytest.approx(DLIB_DESCRIPTOR_NORM, abs=1e-5)


def test_pretrained_weights_name_their_package_when_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from ferlab.models import imagenet_files

    monkeypatch.setattr(imagenet_files, "find_imagenet_file", lambda name: None)
    monkeypatch.setattr("ferlab.models.weights.find_imagenet_file", lambda name: None)
    with pytest.raises(ModelError, match=r"face-recognition-models==0\.3\.0"):
        create_model("face_resnet29", num_classes=8, pretrained=True)


def test_an_input_too_small_for_the_strides_is_a_config_error() -> None:
    model = create_model("face_resnet29", num_classes=8)
    check_input_size(model, 103, 3)
    with pytest.raises(ConfigError, match="input-size 96: model 'face_resnet29' cannot take it"):
        check_input_size(model, 96, 3)
    assert model.training
