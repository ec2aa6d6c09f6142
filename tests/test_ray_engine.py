"""`--engine ray` on a local Ray of 2 worker processes gives what the local engine gives."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import pattern_image
from ferlab.cli import main

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'ferlab[ray]'")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")
    yield
    ray.shutdown()


def records(path: Path) -> dict[str, list[dict]]:
    lines = path.read_text().splitlines()
    return {record["path"]: record["faces"] for record in map(json.loads, lines)}


def test_ray_predict_equals_the_local_engine_file_by_file(
    local_ray: None,
    pattern_model: Path,
    photos: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("astronaut.png", "grace_hopper.jpg"):
        shutil.copy(photos / name, folder / name)
    rng = np.random.default_rng(0)
    for index in range(9):
        Image.fromarray(pattern_image(index % 3, rng)).save(folder / f"pattern{index}.png")
    (folder / "broken.png").write_text("not an image")
    argv = ["predict", str(folder), "--model", str(pattern_model), "--batch-size", "4"]
    assert main([*argv, "--out", str(tmp_path / "local.jsonl")]) == 1
    local_err = capsys.readouterr().err
    ray_out = tmp_path / "ray.jsonl"
    assert main([*argv, "--out", str(ray_out), "--engine", "ray", "--workers", "2"]) == 1
    assert "broken.png: not an image file" in capsys.readouterr().err
    assert "broken.png: not an image file" in local_err
    local, remote = records(tmp_path / "local.jsonl"), records(ray_out)
    assert list(remote) == list(local) and len(local) == 11
    assert len(local[str(folder / "astronaut.png")]) == 1  # a face found, the patterns none
    for path, faces in local.items():
        assert len(remote[path]) == len(faces), path
        for got, want in zip(remote[path], faces, strict=True):
            assert got["box"] == want["box"] and got["label"] == want["label"], path
            assert got["probs"] == pytest.approx(want["probs"], abs=1e-5), path


def _noise_video(path: Path, frames: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (160, 120))
    rng = np.random.default_rng(len(path.name))
    for _ in range(frames):
        writer.write(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
    writer.release()
    return path


def test_ray_video_runs_one_task_per_video(
    local_ray: None, pattern_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    videos = [_noise_video(tmp_path / f"{name}.mp4", 6 + 2 * k) for k, name in enumerate("ab")]
    broken = tmp_path / "c.mp4"
    broken.write_text("not a video")
    argv = ["video", *map(str, [*videos, broken]), "--model", str(pattern_model), "--smooth", "0"]
    assert main([*argv, "--out-dir", str(tmp_path / "local")]) == 1
    local_out = capsys.readouterr().out
    assert main([*argv, "--out-dir", str(tmp_path / "ray"), "--engine", "ray"]) == 1
    captured = capsys.readouterr()
    assert "c.mp4" in captured.err and "1 of 3 videos failed" in captured.err
    for video, frames in zip(videos, (6, 8), strict=True):
        assert f"{video}: {frames} frames, 160x120" in captured.out
        assert f"{video}: {frames} frames, 160x120" in local_out
        table = (tmp_path / "ray" / f"{video.stem}.csv").read_text()
        assert table == (tmp_path / "local" / f"{video.stem}.csv").read_text()
        assert len(table.splitlines()) == frames + 1  # no face: a row per frame
