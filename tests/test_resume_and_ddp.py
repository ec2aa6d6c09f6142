"""A run killed mid-epoch resumes to the same end; 2-process DDP runs on the CPU, on one "node"
and on two launched as on separate machines."""

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
from ferlab.cli import main
from ferlab.run_folder import RunFolder

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
    """A run with everything a resume must repeat: shuffling, augmentation in 2 persistent data
    loader workers, and dropout in the main process."""
    return [
        "train",
        f"--data={data}",
        "--model=baseline_cnn",
        "--augment=standard",
        "--dropout=0.3",
        "--epochs=3",
        "--batch-size=8",
        "--num-workers=2",
        "--patience=0",
        f"--runs-dir={runs}",
        f"--name={name}",
    ]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def epoch_metrics(run_dir: Path) -> list[dict[str, float]]:
    """metrics.csv without its timing columns."""
    with (run_dir / "metrics.csv").open(newline="") as handle:
        return [{k: float(row[k]) for k in SAME_IN_A_RESUME} for row in csv.DictReader(handle)]


SAME_IN_A_RESUME = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_f1", "lr")


def wait_for(path: Path, process: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, process.communicate()[0][-3000:]
        assert time.monotonic() < deadline, f"no {path.name} after {seconds} s"
        time.sleep(0.02)


def test_run_killed_mid_epoch_resumes_to_the_same_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The uninterrupted run and the resume run in this process (a start costs ~20 s here), the
    killed one in a process of its own with the same number of threads."""
    data = make_pattern_tree(tmp_path / "data", {"train": 16, "val": 8})
    runs = tmp_path / "runs"
    assert main(train_args(data, runs, "whole")) == 0

    threads = {"OMP_NUM_THREADS": str(torch.get_num_threads())}
    process = ferlab(*train_args(data, runs, "killed"), env={**os.environ, **threads})
    last = runs / "killed" / "checkpoints" / "last.ckpt"
    wait_for(last, process)
    time.sleep(0.2)  # into the second epoch
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert torch.load(last, weights_only=True)["epoch"] == 0, "killed after its second epoch"
    assert [row["epoch"] for row in epoch_metrics(runs / "killed")] == [0]

    capsys.readouterr()
    assert main(["train", "--resume", str(runs / "killed")]) == 0
    assert "epochs: 3" in capsys.readouterr().out

    whole, resumed = runs / "whole", runs / "killed"
    sessions = json.loads((resumed / "run.json").read_text())["sessions"]
    assert [s["start_epoch"] for s in sessions] == [0, 1]
    assert sessions[1]["resumed_from"] == "checkpoints/last.ckpt"
    assert sessions[1]["end_epoch"] == 3
    expected_rows, rows = epoch_metrics(whole), epoch_metrics(resumed)
    assert [row["epoch"] for row in rows] == [0, 1, 2]
    for expected_row, row in zip(expected_rows, rows, strict=True):
        assert row == pytest.approx(expected_row, rel=1e-4, abs=1e-6), row["epoch"]
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
    assert [row["epoch"] for row in epoch_metrics(run_dir)] == [0, 1]
    summary = json.loads((run_dir / "run.json").read_text())
    assert summary["epochs_completed"] == 2 and len(summary["sessions"]) == 1
    assert (run_dir / "model.pt").is_file()
    assert summary["sessions"][0]["end_epoch"] == 2


def test_sigint_and_sigterm_stop_training_in_one_line(tmp_path: Path) -> None:
    """Ctrl+C (SIGINT to the process group, data loader workers included) after an epoch, and
    SIGTERM to the main process in the first epoch; both runs side by side to share start-up."""
    data = make_pattern_tree(tmp_path / "data", {"train": 16, "val": 8})
    # 150 batches an epoch: SIGTERM lands in the first epoch even on a quiet, fast machine
    long_epochs = make_pattern_tree(tmp_path / "long", {"train": 400, "val": 8})
    runs = tmp_path / "runs"
    interrupted = ferlab(*train_args(data, runs, "int"), start_new_session=True)
    terminated = ferlab(*train_args(long_epochs, runs, "term"))
    wait_for(runs / "int" / "checkpoints" / "last.ckpt", interrupted)
    os.killpg(interrupted.pid, signal.SIGINT)
    wait_for(runs / "term" / "config.yaml", terminated)
    terminated.send_signal(signal.SIGTERM)

    expected = {
        interrupted: (130, f"interrupted; continue with: ferlab train --resume {runs}/int"),
        terminated: (
            143,
            f"terminated; no epoch finished, so nothing can be resumed; {runs}/term can be removed",
        ),
    }
    for process, (code, message) in expected.items():
        output = process.communicate(timeout=300)[0]
        assert process.returncode == code, output[-3000:]
        assert [line for line in output.splitlines() if "ferlab:" in line] == [f"ferlab: {message}"]
        assert "Traceback" not in output

    for run_dir in (runs / "int", runs / "term"):
        assert not (run_dir / "model.pt").exists()
        names = [p.name for p in run_dir.rglob("*")]
        assert not [n for n in names if n.startswith(".") or n.endswith(".tmp")], names
    assert not (runs / "term" / "checkpoints").exists()
    last = torch.load(runs / "int" / "checkpoints" / "last.ckpt", weights_only=True)
    rows = epoch_metrics(runs / "int")
    assert [row["epoch"] for row in rows] == list(range(last["epoch"] + 1))


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
        RunFolder(nodes_dir).metrics_rows(), RunFolder(single_dir).metrics_rows(), strict=True
    ):
        for column in ("train_loss", "train_acc", "val_loss", "val_acc"):
            assert float(got[column]) == pytest.approx(float(want[column]), abs=1e-4), column
    expected, got = weights(single_dir), weights(nodes_dir)
    for key in expected:
        assert torch.allclose(expected[key].float(), got[key].float(), atol=1e-5), key
