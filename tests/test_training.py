"""Training runs on tiny generated data: run folder contents, strategies, options, bad input."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import quick_options
from ferlab import evaluate, train
from ferlab.config import load_config
from ferlab.errors import ConfigError, DataError, ModelError
from ferlab.models import create_model
from ferlab.models.artifact import load_model_file
from ferlab.training.module import FERClassifier


def quick(pattern_tree: Path, tmp_path: Path, **overrides: object) -> dict[str, object]:
    """Options for a fast run on the pattern tree: 2 epochs of batch 16 unless overridden."""
    return {**quick_options(pattern_tree, tmp_path / "runs", epochs=2, batch_size=16), **overrides}


def epochs_logged(run_dir: Path) -> list[int]:
    with (run_dir / "metrics.csv").open(newline="") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def test_run_folder_has_config_classes_metrics_checkpoints_and_model(
    pattern_tree: Path, tmp_path: Path
) -> None:
    result = train(**quick(pattern_tree, tmp_path, epochs=4, batch_size=8))
    run = result.run_dir
    assert run == tmp_path / "runs" / "baseline_cnn-finetune"
    assert result.epochs_completed == 4
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"] == "baseline_cnn" and saved["epochs"] == 4
    assert json.loads((run / "classes.json").read_text())["names"] == ["happy", "sad", "surprise"]
    assert epochs_logged(run) == [0, 1, 2, 3]
    assert (run / "checkpoints" / "best.ckpt").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "logs").glob("session0/metrics.csv"))
    assert list((run / "tensorboard" / "session0").glob("events.out.tfevents.*"))
    summary = json.loads((run / "run.json").read_text())
    assert summary["epochs_completed"] == 4
    assert summary["sessions"][0]["resumed_from"] is None
    assert result.best_val_acc is not None and result.best_val_acc > 0.8
    bundle = load_model_file(result.model_file)
    assert bundle.classes == ["happy", "sad", "surprise"]
    assert bundle.prep.input_size == 48 and bundle.prep.in_channels == 1
    payload = torch.load(result.model_file, weights_only=True)
    assert payload["format"] == "ferlab-model"


def test_second_run_gets_a_new_folder(pattern_tree: Path, tmp_path: Path) -> None:
    first = train(**quick(pattern_tree, tmp_path, epochs=1))
    second = train(**quick(pattern_tree, tmp_path, epochs=1))
    assert first.run_dir != second.run_dir
    assert second.run_dir.name == "baseline_cnn-finetune-2"
    train(**quick(pattern_tree, tmp_path, epochs=1, name="mine", max_steps_per_epoch=1))
    with pytest.warns(UserWarning, match=r"mine is an earlier run; this one is .*mine-2"):
        named = train(**quick(pattern_tree, tmp_path, epochs=1, name="mine", max_steps_per_epoch=1))
    assert named.run_dir.name == "mine-2"


def _backbone_snapshot(model: torch.nn.Module, stage: str) -> dict[str, torch.Tensor]:
    module = model.backbone.get_submodule(stage)
    return {k: v.clone() for k, v in module.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize(
    ("strategy", "expect_low", "expect_top"),
    [("frozen", False, False), ("progressive", False, True), ("finetune", True, True)],
)
def test_strategies_train_the_right_parts(
    pattern_tree: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    strategy: str,
    expect_low: bool,
    expect_top: bool,
) -> None:
    """frozen: head only; progressive (1 stage after 1 epoch): top stage too; finetune: all."""
    import ferlab.training.run as run_module

    captured: dict[str, object] = {}
    original = run_module.prepare

    def spy(config):  # keep a handle on the model to compare weights before and after
        prepared = original(config)
        model = prepared.model
        captured["model"] = model
        captured["low"] = _backbone_snapshot(model, "features.stem")
        captured["top"] = _backbone_snapshot(model, "features.layer4")
        captured["head"] = {k: v.clone() for k, v in model.head.state_dict().items()}
        return prepared

    monkeypatch.setattr(run_module, "prepare", spy)
    result = train(
        **quick(
            pattern_tree,
            tmp_path,
            model="resnet18",
            pretrained=False,
            input_size=32,
            strategy=strategy,
            unfreeze_every=1,
            unfreeze_stages=1,
        )
    )
    model = captured["model"]  # model.pt holds the best epoch; compare the last one
    last = torch.load(result.run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    model.load_state_dict(
        {k[6:]: v for k, v in last["state_dict"].items() if k.startswith("model.")}
    )
    assert _changed(captured["head"], model.head.state_dict())
    assert _changed(captured["low"], _backbone_snapshot(model, "features.stem")) is expect_low
    assert _changed(captured["top"], _backbone_snapshot(model, "features.layer4")) is expect_top


@pytest.mark.parametrize(
    "options",
    [
        {"balance": "sampler"},
        {"balance": "loss", "scheduler": "plateau"},
        {"augment": "strong", "head": "mlp", "scheduler": "none"},
        {"mixup": 0.4, "label_smoothing": 0.1},
    ],
)
def test_training_options_run(pattern_tree: Path, tmp_path: Path, options: dict) -> None:
    result = train(**quick(pattern_tree, tmp_path, epochs=1, **options))
    assert epochs_logged(result.run_dir) == [0]
    assert result.model_file.is_file()


def test_mixup_blends_images_and_targets_by_one_beta_weight() -> None:
    torch.manual_seed(0)
    model = create_model("baseline_cnn", 3).eval()  # eval: no dropout draws in the forward
    module = FERClassifier(model, 3, mixup=0.5, label_smoothing=0.0, channels_last=False)
    images, labels = torch.randn(4, 1, 48, 48), torch.tensor([0, 1, 2, 0])
    votes = torch.tensor([[0.8, 0.2, 0.0], [0.0, 1.0, 0.0], [0.1, 0.0, 0.9], [0.5, 0.5, 0.0]])
    torch.manual_seed(2)
    loss, _, scored = module._step((images, labels, votes), "train")
    torch.manual_seed(2)
    lam = float(torch.distributions.Beta(torch.tensor(0.5), torch.tensor(0.5)).sample())
    order = torch.randperm(4)
    assert 0 < lam < 1 and not torch.equal(order, torch.arange(4))
    mixed = lam * images + (1 - lam) * images[order]
    target = lam * votes + (1 - lam) * votes[order]
    with torch.no_grad():
        expected = -(target * torch.log_softmax(model(mixed), dim=1)).sum(dim=1).mean()
    torch.testing.assert_close(loss.detach(), expected)
    assert torch.equal(scored, labels)  # lam > 0.5: the unshuffled image weighs more
    torch.manual_seed(5)  # lam 0.09: the shuffled one weighs more
    _, _, scored = module._step((images, labels, votes), "train")
    torch.manual_seed(5)
    torch.distributions.Beta(torch.tensor(0.5), torch.tensor(0.5)).sample()
    assert torch.equal(scored, labels[torch.randperm(4)])
    val_loss, _, _ = module._step((images, labels, votes), "val")  # val batches are not mixed
    with torch.no_grad():
        plain = -(votes * torch.log_softmax(model(images), dim=1)).sum(dim=1).mean()
    torch.testing.assert_close(val_loss.detach(), plain)


def test_class_options_shape_the_model(pattern_tree: Path, tmp_path: Path) -> None:
    result = train(
        **quick(pattern_tree, tmp_path, epochs=1, keep="happy,wow", rename="surprise=wow")
    )
    bundle = load_model_file(result.model_file)
    assert bundle.classes == ["happy", "wow"]
    assert bundle.model(torch.zeros(1, 1, 48, 48)).shape == (1, 2)


def test_yaml_config_with_overrides(pattern_tree: Path, tmp_path: Path) -> None:
    file = tmp_path / "recipe.yaml"
    file.write_text(yaml.safe_dump(quick(pattern_tree, tmp_path, epochs=5)))
    config = load_config(file, epochs=1, name="from-yaml")
    result = train(config)
    assert result.run_dir.name == "from-yaml"
    assert yaml.safe_load((result.run_dir / "config.yaml").read_text())["epochs"] == 1


@pytest.mark.parametrize(
    ("overrides", "error", "text"),
    [
        ({"model": "resnet1000"}, ModelError, "unknown model 'resnet1000'"),
        ({"data": "/no/such/folder"}, DataError, "/no/such/folder"),
        ({"strategy": "sideways"}, ConfigError, "strategy"),
        ({"keep": "happy,joy"}, ConfigError, "joy"),
        ({"head": "tower"}, ModelError, "tower"),
        ({"mixup": -0.2}, ConfigError, r"mixup \(--mixup\) must be in"),
        ({"mixup": 0.2, "head": "multitask"}, ConfigError, "mixup: not with head multitask"),
    ],
)
def test_bad_input_fails_before_any_run_folder(
    pattern_tree: Path, tmp_path: Path, overrides: dict, error: type, text: str
) -> None:
    with pytest.raises(error, match=text):
        train(**quick(pattern_tree, tmp_path, **overrides))
    assert not (tmp_path / "runs").exists()


def test_corrupt_images_are_skipped_or_fail_by_option(tmp_path: Path) -> None:
    from conftest import make_pattern_tree

    tree = make_pattern_tree(tmp_path / "data", {"train": 8, "val": 4})
    (tree / "train" / "happy" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (tree / "train" / "sad" / "text.jpg").write_text("hello")
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable file\(s\).*broken.png"):
        result = train(**quick(tree, tmp_path, epochs=1, cache_dir=str(tmp_path / "c1")))
    assert result.model_file.is_file()
    assert result.data_note is not None and "skipped 2 " in result.data_note
    assert str(tree / "train" / "happy" / "broken.png") in result.data_note
    assert result.data_note.count("broken.png") == 1
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable file\(s\)"):
        cached = train(**quick(tree, tmp_path, epochs=1, cache_dir=str(tmp_path / "c1")))
    assert cached.data_note == result.data_note
    with pytest.raises(DataError, match=r"broken.png: cannot read image"):
        train(
            **quick(
                tree,
                tmp_path,
                epochs=1,
                on_bad_file="error",
                cache_dir=str(tmp_path / "c2"),
                runs_dir=str(tmp_path / "runs-error"),
            )
        )
    assert not (tmp_path / "runs-error").exists()


def test_resume_of_a_finished_run_needs_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a ferlab run folder"):
        train(resume=tmp_path)


def _pattern_rows(per_class: int, seed: int) -> list[tuple[int, np.ndarray]]:
    from conftest import pattern_image

    rng = np.random.default_rng(seed)
    return [(label, pattern_image(label, rng)) for label in range(3) for _ in range(per_class)]


def test_train_and_evaluate_from_the_fer2013_csv(tmp_path: Path) -> None:
    lines = ["emotion,pixels,Usage"]
    for usage, per_class in (("Training", 20), ("PublicTest", 4), ("PrivateTest", 4)):
        for label, image in _pattern_rows(per_class, seed=len(lines)):
            code = (3, 4, 5)[label]  # happy, sad, surprise in the FER2013 code order
            lines.append(f"{code},{' '.join(map(str, image.ravel()))},{usage}")
    csv_file = tmp_path / "fer2013.csv"
    csv_file.write_text("\n".join(lines) + "\n")
    result = train(**quick(csv_file, tmp_path, epochs=1, batch_size=8))
    assert load_model_file(result.model_file).classes == ["happy", "sad", "surprise"]
    report = evaluate(result.run_dir, csv_file, split="test")
    assert report.metrics["samples"] == 12


def test_train_from_a_manifest_csv(tmp_path: Path) -> None:
    from PIL import Image

    rows = ["path,label"]
    for index, (label, image) in enumerate(_pattern_rows(12, seed=1)):
        name = f"img/{index:03d}.png"
        (tmp_path / "img").mkdir(exist_ok=True)
        Image.fromarray(image).save(tmp_path / name)
        rows.append(f"{name},{('happy', 'sad', 'surprise')[label]}")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    result = train(**quick(manifest, tmp_path, epochs=1, batch_size=8))
    summary = json.loads((result.run_dir / "run.json").read_text())
    assert summary["classes"] == ["happy", "sad", "surprise"]
    assert epochs_logged(result.run_dir) == [0]


def test_compact_snapshot_resumes(pattern_tree: Path, tmp_path: Path) -> None:
    from ferlab.training.checkpoint import snapshot_run

    first = train(**quick(pattern_tree, tmp_path, epochs=2, scheduler="none", name="long"))
    snapshot = tmp_path / "snapshot"
    written = snapshot_run(first.run_dir, snapshot)
    assert {p.name for p in written} >= {"config.yaml", "metrics.csv", "last.ckpt", "best.ckpt"}
    original = first.run_dir / "checkpoints" / "last.ckpt"
    compact = snapshot / "checkpoints" / "last.ckpt"
    assert compact.stat().st_size < 0.75 * original.stat().st_size
    resumed = train(resume=snapshot, epochs=3)
    assert resumed.epochs_completed == 3
    assert epochs_logged(snapshot) == [0, 1, 2]
    assert load_model_file(resumed.model_file).classes == ["happy", "sad", "surprise"]


def test_onecycle_resume_refuses_other_epochs(pattern_tree: Path, tmp_path: Path) -> None:
    result = train(**quick(pattern_tree, tmp_path, epochs=1))
    with pytest.raises(ConfigError, match="same --epochs"):
        train(resume=result.run_dir, epochs=5)


def _files(folder: Path) -> dict[Path, bytes]:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _model_weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}


def test_moved_and_copied_run_folders_resume_from_their_own_files(
    pattern_tree: Path, tmp_path: Path
) -> None:
    first = train(**quick(pattern_tree, tmp_path, epochs=1, scheduler="none", name="orig"))
    copied = tmp_path / "copied"
    shutil.copytree(first.run_dir, copied)
    moved = first.run_dir.rename(tmp_path / "moved")
    for run_dir in (moved, copied):
        resumed = train(resume=run_dir, epochs=2)
        assert resumed.epochs_completed == 2 and epochs_logged(run_dir) == [0, 1]
        assert [s["start_epoch"] for s in resumed.history] == [0, 1]
        for name in ("last.ckpt", "best.ckpt"):
            assert str(first.run_dir) not in repr(
                torch.load(run_dir / "checkpoints" / name, weights_only=True)
            )
        best = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
        exported = load_model_file(run_dir / "model.pt").model.state_dict()
        for key, value in _model_weights(best["state_dict"]).items():
            assert torch.equal(exported[key], value), key
    assert not first.run_dir.exists()


def test_a_run_given_relative_paths_resumes_from_another_folder(
    pattern_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(pattern_tree, tmp_path / "project" / "data")
    monkeypatch.chdir(tmp_path / "project")
    options = quick(Path("data"), tmp_path, epochs=1, scheduler="none", runs_dir="runs")
    first = train(**options)
    saved = yaml.safe_load((first.run_dir / "config.yaml").read_text())
    assert saved["data"] == str(tmp_path / "project" / "data")
    assert saved["runs_dir"] == str(tmp_path / "project" / "runs")
    monkeypatch.chdir(tmp_path)
    resumed = train(resume=Path("project/runs/baseline_cnn-finetune"), epochs=2)
    assert resumed.epochs_completed == 2
    assert epochs_logged(resumed.run_dir) == [0, 1]
    moved = (tmp_path / "project" / "data").rename(tmp_path / "moved")
    with pytest.raises(DataError, match=r"no such file or folder; .* resume with --data PATH"):
        train(resume=resumed.run_dir, epochs=3)
    again = train(resume=resumed.run_dir, epochs=3, data=str(moved))
    assert epochs_logged(again.run_dir) == [0, 1, 2]
    assert yaml.safe_load((again.run_dir / "config.yaml").read_text())["data"] == str(moved)


def test_a_failed_resume_changes_no_file(pattern_tree: Path, tmp_path: Path) -> None:
    first = train(**quick(pattern_tree, tmp_path, epochs=1, scheduler="none"))
    before = _files(first.run_dir)
    bad = (
        ({"head": "mlp", "epochs": 2}, r"--head mlp \(the run's: linear\) would make another run"),
        ({"seed": 7, "epochs": 2}, r"--seed 7 \(the run's: 0\)"),  # other held-out splits
        ({"lr": 0.5, "runs_dir": "x", "epochs": 2}, "--lr 0.5 .*, --runs-dir x"),
        ({}, r"already finished \(1 of 1 epochs\); nothing to resume"),
    )
    for overrides, text in bad:
        with pytest.raises(ConfigError, match=text):
            train(resume=first.run_dir, **overrides)
        assert _files(first.run_dir) == before
    with pytest.raises(ConfigError, match="no such run folder"):
        train(resume=tmp_path / "nowhere")
    with pytest.raises(ConfigError, match=r"model\.pt: a file; --resume takes the run folder"):
        train(resume=first.run_dir / "model.pt")


def test_a_loss_that_stops_being_finite_stops_training_and_exports_nothing(
    pattern_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ferlab.errors import DivergedError

    step = FERClassifier._step

    def diverging(self: FERClassifier, batch: tuple, stage: str) -> tuple:
        loss, logits, labels = step(self, batch, stage)
        late = stage == "train" and self.current_epoch == 1
        return (loss * float("nan") if late else loss), logits, labels

    monkeypatch.setattr(FERClassifier, "_step", diverging)
    with pytest.raises(DivergedError) as raised:
        train(**quick(pattern_tree, tmp_path, epochs=3, scheduler="none", name="nan"))
    run = tmp_path / "runs" / "nan"
    assert str(raised.value).startswith("the training loss became nan in epoch 2, batch 1")
    assert f"continue with: ferlab train --resume {run}" in str(raised.value)
    assert not (run / "model.pt").exists() and epochs_logged(run) == [0]


def test_a_class_left_without_training_images_is_warned_about(
    pattern_tree: Path, tmp_path: Path
) -> None:
    with pytest.warns(UserWarning, match="no training image of .* left by --limit/--limit-per-cl"):
        train(**quick(pattern_tree, tmp_path, epochs=1, limit=2))


def test_a_resume_takes_the_run_s_own_values_and_hardware_changes(
    pattern_tree: Path, tmp_path: Path
) -> None:
    first = train(**quick(pattern_tree, tmp_path, epochs=1, scheduler="none"))
    resumed = train(resume=first.run_dir, epochs=2, seed=0, lr=3e-3, num_workers=1)
    assert resumed.epochs_completed == 2
    assert yaml.safe_load((first.run_dir / "config.yaml").read_text())["num_workers"] == 1


def test_a_run_ended_by_early_stopping_is_finished(pattern_tree: Path, tmp_path: Path) -> None:
    options = quick(pattern_tree, tmp_path, epochs=6, patience=1, lr=1e-12, scheduler="none")
    stopped = train(**options)  # val accuracy cannot rise: stopped after the second epoch
    assert stopped.epochs_completed == 2
    assert json.loads((stopped.run_dir / "run.json").read_text())["stopped_early"] is True
    before = _files(stopped.run_dir)
    with pytest.raises(ConfigError, match=r"early stopping ended it after 2 epochs \(--patience 1"):
        train(resume=stopped.run_dir)
    assert _files(stopped.run_dir) == before


def test_running_out_of_memory_is_one_line(
    pattern_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def exhausted(self: FERClassifier, batch: tuple, stage: str) -> tuple:
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB")

    monkeypatch.setattr(FERClassifier, "_step", exhausted)
    message = r"out of memory while training baseline_cnn at batch 16, input 48 px; try a smaller"
    with pytest.raises(ConfigError, match=message):
        train(**quick(pattern_tree, tmp_path, epochs=1))


def test_a_failed_fit_ends_the_processes_it_started() -> None:
    import multiprocessing
    import signal
    import time

    from ferlab.training.run import _workers_ended_on_failure

    with pytest.raises(RuntimeError, match="failed"), _workers_ended_on_failure():
        worker = multiprocessing.get_context("fork").Process(target=_deaf_sleeper, daemon=True)
        worker.start()
        time.sleep(0.5)
        worker_pid = worker.pid
        raise RuntimeError("failed")
    assert not worker.is_alive()
    assert worker.exitcode == -signal.SIGKILL and worker_pid is not None


def _deaf_sleeper() -> None:
    """A data loader worker's stand-in: it ignores stop signals."""
    import signal
    import time

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(60)
