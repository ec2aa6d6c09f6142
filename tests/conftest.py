"""Shared fixtures: tiny learnable image trees, the real FER2013 location, a quiet CPU."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
FER2013_CANDIDATES = [
    Path(os.environ.get("FERLAB_FER2013", REPO.parent / "shared" / "data" / "fer2013")),
    Path("/work/shared/data/fer2013"),
]
PATTERN_CLASSES = ("happy", "sad", "surprise")

os.environ.setdefault("FERLAB_CACHE", str(REPO / ".cache" / "ferlab"))
os.environ.setdefault(
    "TORCH_HOME", str(REPO / ".cache" / "torch")
)  # tests do not read or fill the user's torch hub cache
torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_configure(config: pytest.Config) -> None:
    """SIGINT as in a terminal, also when the suite runs as a background job (which starts with
    SIGINT ignored, and passes that on to the commands it starts): the tests of Ctrl-C need it."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


class RunsCode:
    """Unpickling this touches ``marker``: a stand-in for a model file that would run code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def fer2013_path() -> Path | None:
    return next((p for p in FER2013_CANDIDATES if (p / "train").is_dir()), None)


@pytest.fixture(scope="session")
def fer2013_dir() -> Path:
    """The canonical FER2013 split; tests that need it skip where it is absent."""
    path = fer2013_path()
    if path is None:
        pytest.skip(
            "FER2013 not found at ../shared/data/fer2013 (set FERLAB_FER2013 to the folder tree)"
        )
    return path


def pattern_image(label: int, rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """A gray image whose class is told by which half is bright: top, bottom or left."""
    image = rng.integers(0, 60, (size, size)).astype(np.uint8)
    half = size // 2
    regions = [(slice(0, half), slice(None)), (slice(half, None), slice(None))]
    regions.append((slice(None), slice(0, half)))
    image[regions[label]] += 150
    return image


def make_pattern_tree(
    root: Path, counts: dict[str, int], classes: tuple[str, ...] = PATTERN_CLASSES, seed: int = 0
) -> Path:
    """root/<split>/<class>/NNN.png with ``counts[split]`` learnable images per class."""
    rng = np.random.default_rng(seed)
    for split, per_class in counts.items():
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(pattern_image(label, rng)).save(folder / f"{i:03d}.png")
    return root


def save_random_model(path: Path, classes: list[str] | tuple[str, ...]) -> Path:
    """A baseline CNN with random weights (seed 0) for 48x48 gray crops, saved as a model file."""
    from ferlab.models.artifact import ModelBundle, save_model_file
    from ferlab.models.registry import create_model
    from ferlab.models.spec import ModelSpec
    from ferlab.preprocessing import Preprocessing

    torch.manual_seed(0)
    bundle = ModelBundle(
        model=create_model("baseline_cnn", len(classes)).eval(),
        spec=ModelSpec("baseline_cnn", tuple(classes), Preprocessing(48, 1, (0.5,), (0.5,))),
    )
    save_model_file(path, bundle)
    return path


def conv_inputs_are_float(path: Path) -> list[bool]:
    """Per Conv node of an ONNX file, in graph order: whether its input and weight come in as
    float (no int8)."""
    import onnx

    graph = onnx.load(path).graph
    dequantized = {node.output[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    return [
        node.input[0] not in dequantized and node.input[1] not in dequantized
        for node in graph.node
        if node.op_type == "Conv"
    ]


@pytest.fixture(scope="session")
def pattern_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-class (``PATTERN_CLASSES``) baseline CNN with random weights, as a model file."""
    return save_random_model(tmp_path_factory.mktemp("model") / "model.pt", PATTERN_CLASSES)


@pytest.fixture(scope="session")
def pattern_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-class tree (train 40, val 8, test 8 per class) that a small net learns in an epoch."""
    return make_pattern_tree(tmp_path_factory.mktemp("pattern"), {"train": 40, "val": 8, "test": 8})


def quick_options(data: Path, runs_dir: Path, **overrides: object) -> dict[str, object]:
    """``ferlab.train`` options for a fast, deterministic CPU run on a tiny tree."""
    values: dict[str, object] = {
        "data": str(data),
        "model": "baseline_cnn",
        "epochs": 4,
        "batch_size": 8,
        "lr": 3e-3,
        "augment": "none",
        "num_workers": 0,
        "runs_dir": str(runs_dir),
        "patience": 0,
    }
    values.update(overrides)
    return values


@pytest.fixture(scope="session")
def pattern_run(pattern_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder of baseline_cnn trained on ``pattern_tree`` (val accuracy > 0.8)."""
    from ferlab import train

    return train(**quick_options(pattern_tree, tmp_path_factory.mktemp("runs"))).run_dir


@pytest.fixture(scope="session")
def photos() -> Path:
    """The demo photos (astronaut.png, grace_hopper.jpg); tests that need them skip without."""
    candidates = [REPO.parent / "shared" / "data" / "photos", Path("/work/shared/data/photos")]
    found = next((p for p in candidates if (p / "astronaut.png").is_file()), None)
    if found is None:
        pytest.skip("test photos not found at ../shared/data/photos (astronaut.png, grace_hopper)")
    return found


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


needs_chromium = pytest.mark.skipif(
    chromium() is None, reason="chromium not installed (apt-get install chromium)"
)


def _headless(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
    ]
    return subprocess.run(
        [browser, *flags, *args], capture_output=True, text=True, timeout=180, check=True
    )


def render_report_in_chromium(report: Path, tmp_path: Path, images: int) -> Path:
    """Open ``report`` in headless Chromium: all ``images`` plots load and a screenshot is drawn."""
    browser, url = str(chromium()), report.resolve().as_uri()
    dom = _headless(browser, tmp_path / "profile", "--virtual-time-budget=10000", "--dump-dom", url)
    assert f'data-images-total="{images}"' in dom.stdout, dom.stdout[-2000:]
    assert f'data-images-loaded="{images}"' in dom.stdout
    screenshot = tmp_path / "report.png"
    _headless(
        browser, tmp_path / "profile", f"--screenshot={screenshot}", "--window-size=1280,4000", url
    )
    print(f"report screenshot: {screenshot}")
    picture = Image.open(screenshot).convert("RGB")
    assert picture.size == (1280, 4000)
    colours = picture.getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 50  # not blank: text, tables and plots drawn
    return screenshot
