"""Compare scores as evaluate does, explain's file names and refusals, Ray paths and errors, and
bulk inputs named twice."""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import PATTERN_CLASSES, make_pattern_tree, pattern_image, save_random_model
from ferlab import evaluate
from ferlab.cli import main
from ferlab.errors import ConfigError, FerlabError
from ferlab.evaluation.compare import compare_models
from ferlab.models.artifact import load_model_file, save_model_file


def test_compare_scores_a_class_absent_from_the_split_as_evaluate_does(tmp_path: Path) -> None:
    """A model that never answers "surprise", on a test split without it: the class counts in
    evaluate's macro-F1 (as 0), and so in compare's."""
    model = save_random_model(tmp_path / "model.pt", PATTERN_CLASSES)
    bundle = load_model_file(model)
    last = [module for module in bundle.model.modules() if isinstance(module, torch.nn.Linear)]
    with torch.no_grad():
        last[-1].bias[PATTERN_CLASSES.index("surprise")] -= 1e4
    save_model_file(model, bundle)
    tree = make_pattern_tree(tmp_path / "data", {"train": 4, "val": 2, "test": 4})
    shutil.rmtree(tree / "test" / "surprise")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metrics = evaluate(model, tree, out=tmp_path / "eval").metrics
        (score,) = compare_models([model], tree).scores
    assert metrics["classes"] == list(PATTERN_CLASSES) and metrics["macro_f1"] > 0
    per_class = [metrics["per_class"][name]["f1-score"] for name in PATTERN_CLASSES[:2]]
    assert metrics["macro_f1"] == pytest.approx(sum(per_class) / 3)
    assert score.macro_f1 == pytest.approx(metrics["macro_f1"])
    assert score.accuracy == pytest.approx(metrics["accuracy"])
    assert score.kappa == pytest.approx(metrics["cohen_kappa"])
    assert score.ece == pytest.approx(metrics["ece"])


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'ferlab[ray]'")
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")
    yield
    ray.shutdown()


@pytest.mark.slow
def test_ray_takes_relative_paths_as_the_local_engine_does(
    local_ray: None,
    pattern_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Workers run in another folder: they get absolute paths, the rows keep the given ones."""
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(3):
        Image.fromarray(pattern_image(index, rng)).save(folder / f"pattern{index}.png")
    (folder / "broken.png").write_text("not an image")
    shutil.copy(pattern_model, tmp_path / "m.pt")
    monkeypatch.chdir(tmp_path)
    argv = ["predict", "in", "--model", "m.pt"]
    assert main([*argv, "--out", "local.jsonl"]) == 1
    assert f"{Path('in', 'broken.png')}: not an image file" in capsys.readouterr().err
    assert main([*argv, "--out", "ray.jsonl", "--engine", "ray", "--workers", "1"]) == 1
    assert f"{Path('in', 'broken.png')}: not an image file" in capsys.readouterr().err
    local, remote = (
        [json.loads(line) for line in Path(name).read_text().splitlines()]
        for name in ("local.jsonl", "ray.jsonl")
    )
    assert [record["path"] for record in remote] == [record["path"] for record in local]
    assert [record["path"] for record in local] == [
        str(Path("in", f"pattern{index}.png")) for index in range(3)
    ]
    for got, want in zip(remote, local, strict=True):
        assert [face["label"] for face in got["faces"]] == [f["label"] for f in want["faces"]]


@pytest.mark.slow
def test_a_worker_that_cannot_load_the_model_is_one_error(
    local_ray: None, photos: Path, tmp_path: Path
) -> None:
    from ferlab.inference.batch import ImageFile
    from ferlab.inference.ray_engine import ray_outcomes

    missing = tmp_path / "gone.pt"
    files = [ImageFile(photos / "astronaut.png", Path("astronaut.png"))]
    with pytest.raises(FerlabError, match=r"^a Ray worker failed: .*gone\.pt") as caught:
        list(ray_outcomes(files, {"ref": str(missing)}, workers=1))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("address", ["nonsense:xx", "host:0", "host", "http://x:1", "a b:1"])
def test_a_ray_address_of_another_form_is_refused(address: str) -> None:
    from ferlab.inference.ray_engine import check_address

    with pytest.raises(ConfigError, match="--ray-address: expected auto, HOST:PORT"):
        check_address(address)
    for good in ("auto", "local", "10.0.0.1:6379", "head.example:6379", "ray://head:10001"):
        check_address(good)


def _explain(*argv: str) -> int:
    return main(["explain", *argv, "--target-class", "happy", "--quiet"])


def test_explain_exist_ok_replaces_all_of_a_photos_earlier_pictures(
    pattern_model: Path, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An earlier run with another class and one more face: none of its pictures of the photo
    stay beside the new ones; those of other photos and of a same-named one (-2) do."""
    out = tmp_path / "out"
    argv = [str(photos / "astronaut.png"), "--model", str(pattern_model), "--out", str(out)]
    assert main(["explain", *argv, "--target-class", "sad", "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "astronaut_explained.png",
        "astronaut_face1_sad.png",
    ]
    kept = ["astronaut_face1_sad-2.png", "astronaut_explained-2.png", "other_face1_sad.png"]
    for name in ["astronaut_face2_surprise.png", *kept]:
        (out / name).write_bytes(b"earlier")
    assert _explain(*argv) == 2
    assert "astronaut_explained.png: already exists" in capsys.readouterr().err
    assert _explain(*argv, "--exist-ok") == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["astronaut_explained.png", "astronaut_face1_happy.png", *kept]
    )


def test_explain_numbers_all_pictures_of_a_same_named_input_alike(
    pattern_model: Path, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Photos of different classes: the second one's face picture gets -2 too, not only its
    whole picture (whose name alone collides)."""
    inputs = [tmp_path / "d1" / "f.png", tmp_path / "d2" / "f.jpg"]
    for source, copy in zip(("astronaut.png", "grace_hopper.jpg"), inputs, strict=True):
        copy.parent.mkdir()
        shutil.copy(photos / source, copy)
    out = tmp_path / "out"
    assert (
        main(["explain", *map(str, inputs), "--model", str(pattern_model), "--out", str(out)]) == 0
    )
    written: dict[str, list[str]] = {str(path): [] for path in inputs}
    for line in capsys.readouterr().out.splitlines():
        written[line.rsplit(", ", 1)[1].rstrip(")")].append(Path(line.split("  ")[0]).name)
    first, second = written.values()
    a = first[1].removeprefix("f_face1_").removesuffix(".png")
    b = second[1].removeprefix("f_face1_").removesuffix("-2.png")
    assert first == ["f_explained.png", f"f_face1_{a}.png"]
    assert second == ["f_explained-2.png", f"f_face1_{b}-2.png"] and a != b
    assert sorted(p.name for p in out.iterdir()) == sorted(first + second)


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        (["--method", "eigencam", "--target-class", "sad"], "eigencam gives the same heatmap"),
        (["--target-layer", ""], "--target-layer is empty"),
    ],
)
def test_explain_refuses_options_it_would_ignore(
    flags: list[str],
    problem: str,
    pattern_model: Path,
    photos: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [str(photos / "astronaut.png"), "--model", str(pattern_model), "--out", str(tmp_path)]
    assert main(["explain", *argv, *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ferlab: error: ") and problem in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
