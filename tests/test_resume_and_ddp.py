"""A run killed after its first epoch resumes to the same end; 2-process DDP runs on the CPU, on
one "node" and on two launched as on separate machines."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import make_pattern_tree
from ferlab.training.run import read_epoch_metrics

pytestmark = pytest.mark.slow


def ferlab(*args: str, env: dict[str, str] | None = None, **popen: object) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "ferlab", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


def run_ok(*args: str) -> str:
    process = ferlab(*args)
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]
    return output


def train_args(data: Path, runs: Path, name: str) -> list[str]:
    return [
        "train",
        f"--data={data}",
        "--model=resnet18",
        "--pretrained=false",
        "--input-size=64",
        "--dropout=0",
        "--augment=none",
        "--epochs=4",
        "--batch-size=8",
        "--num-workers=0",
        "--patience=0",
        f"--runs-dir={runs}",
        f"--name={name}",
    ]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    return last["state_dict"]


def logged_epochs(run_dir: Path) -> list[int]:
    with (run_dir / "metrics.csv").open(newline="") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def test_killed_run_resumes_to_the_same_end(tmp_path: Path) -> None:
    data = make_pattern_tree(tmp_path / "data", {"train": 40, "val": 8})
    runs = tmp_path / "runs"
    run_ok(*train_args(data, runs, "whole"))

    process = ferlab(*train_args(data, runs, "killed"))
    last = runs / "killed" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not last.exists():
        assert process.poll() is None, process.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    killed_at = torch.load(last, weights_only=False)["epoch"]
    assert killed_at < 3, "the run finished before it could be killed"

    output = run_ok("train", "--resume", str(runs / "killed"))
    assert "epochs: 4" in output

    whole, resumed = runs / "whole", runs / "killed"
    assert logged_epochs(resumed) == logged_epochs(whole) == [0, 1, 2, 3]
    sessions = json.loads((resumed / "run.json").read_text())["sessions"]
    assert [s["start_epoch"] for s in sessions] == [0, killed_at + 1]
    assert sessions[1]["resumed_from"] == "checkpoints/last.ckpt"
    assert sessions[1]["end_epoch"] == 4
    assert torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 3
    expected, got = weights(whole), weights(resumed)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.allclose(expected[key].float(), got[key].float(), atol=1e-5), key


def test_two_process_ddp_on_cpu(tmp_path: Path) -> None:
    data = make_pattern_tree(tmp_path / "data", {"train": 16, "val": 4})
    runs = tmp_path / "runs"
    output = run_ok(
        "train",
        f"--data={data}",
        "--model=baseline_cnn",
        "--epochs=2",
        "--batch-size=8",
        "--num-workers=0",
        "--accelerator=cpu",
        "--devices=2",
        "--strategy=ddp",
        f"--runs-dir={runs}",
        "--name=ddp",
    )
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in output
    assert [p.name for p in runs.iterdir()] == ["ddp"]
    run_dir = runs / "ddp"
    assert logged_epochs(run_dir) == [0, 1]
    summary = json.loads((run_dir / "run.json").read_text())
    assert summary["epochs_completed"] == 2 and len(summary["sessions"]) == 1
    assert (run_dir / "model.pt").is_file()
    assert summary["sessions"][0]["end_epoch"] == 2


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_nodes_on_localhost_give_one_run_and_the_single_process_result(
    tmp_path: Path,
) -> None:
    """Two "nodes" of one CPU process each, launched as on two machines (Lightning's variables,
    gloo), against one process on the same global batch. Lightning's distributed sampler
    reshuffles each process's share, so the steps are full-batch (24 images a node, 48 in the
    single process) and only the head trains (frozen backbone, batch norm in eval mode): the
    same gradients, so the same weights."""
    data = make_pattern_tree(tmp_path / "data", {"train": 16, "val": 8})
    runs = tmp_path / "runs"
    common = [
        "train",
        f"--data={data}",
        "--model=resnet18",
        "--pretrained=false",
        "--strategy=frozen",
        "--input-size=64",
        "--dropout=0",
        "--augment=none",
        "--epochs=3",
        "--lr=0.003",
        "--num-workers=0",
        "--accelerator=cpu",
        "--patience=0",
        f"--runs-dir={runs}",
    ]
    cluster = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": "2"}
    launch = [*common, "--batch-size=24", "--num-nodes=2", "--devices=1", "--distributed=ddp"]
    nodes = [
        ferlab(*launch, "--name=nodes", env={**cluster, "NODE_RANK": str(rank)}) for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    for node, output in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, output[-3000:]
        assert f"run: {runs / 'nodes'}\n" in output  # the node that came second too
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in outputs[1]
    run_ok(*common, "--batch-size=48", "--name=single")
    assert sorted(p.name for p in runs.iterdir()) == ["nodes", "single"]

    nodes_dir, single_dir = runs / "nodes", runs / "single"
    assert json.loads((nodes_dir / "run.json").read_text())["epochs_completed"] == 3
    assert (nodes_dir / "model.pt").is_file()
    for got, want in zip(
        read_epoch_metrics(nodes_dir), read_epoch_metrics(single_dir), strict=True
    ):
        for column in ("train_loss", "train_acc", "val_loss", "val_acc"):
            assert float(got[column]) == pytest.approx(float(want[column]), abs=1e-4), column
    expected, got = weights(single_dir), weights(nodes_dir)
    for key in expected:
        assert torch.allclose(expected[key].float(), got[key].float(), atol=1e-5), key
