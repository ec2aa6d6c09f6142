"""The shell and Python examples of README.md and MODEL_CARD.md, run as written.

Every fenced ``bash``, ``console`` and ``python`` block is one test, run in document order in one
workspace that looks like a fresh clone after ``make demo``: a temporary folder with the
repository's files linked or copied in and ``../shared`` next to it, ``ferlab`` and ``python``
from this interpreter's environment with this repository's ``src`` first. Later blocks use what
earlier ones wrote (``photos/``, ``runs/demo``), as a reader going down the page would.

- ``bash``: the block is one script, run with ``bash -e``.
- ``console``: each line starting with ``$ `` (and the lines its trailing ``\\`` continues onto)
  is a command; the other lines are its output and are not run. A command whose output shows
  ``ferlab: error:`` must fail, every other one must succeed.
- ``python``: the block is one script.

Absolute ``/tmp/`` paths in examples are moved into the workspace. HTML comments right above a
block change how it runs (``slow``, ``hours`` and ``skip`` say why):

- ``<!-- docs-test: slow: REASON -->``: marked ``slow`` (long trainings, all of FER2013,
  benchmarks); CI runs it.
- ``<!-- docs-test: hours: REASON -->``: slow, and run only where ``FERLAB_DOCS_HOURS=1`` (the
  trainings on all of FER2013 that take hours on a CPU).
- ``<!-- docs-test: skip: REASON -->``: not run (it needs what a test cannot have: a network,
  several machines, or it replaces the shipped model).
- ``<!-- docs-test: serve -->``: each command starts a server, which must answer ``/healthz``
  on its port; it is then stopped.
- ``<!-- docs-test: server: COMMAND -->``: the block runs while COMMAND serves.
- ``<!-- docs-test: setup -->``: the workspace runs the block when it is made too, so that the
  slow examples that read its files run under ``-m slow`` too.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import REPO, fer2013_path

DOCS = ("README.md", "MODEL_CARD.md")
LANGUAGES = ("bash", "console", "python")
MARKER = re.compile(r"<!--\s*docs-test:\s*([a-z]+)\s*(?::\s*(.*?))?\s*-->")
KINDS_WITH_TEXT = {"slow", "hours", "skip", "server"}
KINDS = KINDS_WITH_TEXT | {"serve", "setup"}
FAST_TIMEOUT_S = 300
SERVER_START_S = 300
LINKED = ("src", "configs", "tests", "checkpoints", "docs", *DOCS)
COPIED = ("scripts",)  # they find ../shared from their own resolved path


@dataclass
class Block:
    doc: str
    line: int
    language: str
    text: str
    markers: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.doc}:{self.line}"


def parse_blocks(doc: str) -> list[Block]:
    """The fenced blocks of ``doc`` (every language), each with the markers right above it."""
    blocks: list[Block] = []
    lines = (REPO / doc).read_text().splitlines()
    index = 0
    while index < len(lines):
        if not lines[index].startswith("```"):
            index += 1
            continue
        start = index
        end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("```"))
        markers: dict[str, str] = {}
        above = start - 1
        while above >= 0 and (match := MARKER.fullmatch(lines[above].strip())):
            kind, text = match.group(1), match.group(2) or ""
            assert kind in KINDS, f"{doc}:{above + 1}: unknown docs-test marker {kind!r}"
            assert (kind in KINDS_WITH_TEXT) == bool(text), f"{doc}:{above + 1}: {kind}: {text!r}"
            markers[kind] = text
            above -= 1
        language = lines[start][3:].strip()
        blocks.append(Block(doc, start + 1, language, "\n".join(lines[start + 1 : end]), markers))
        index = end + 1
    return blocks


def console_commands(text: str) -> list[tuple[str, bool]]:
    """Each ``$`` command of a console block and whether its output shows a ferlab error."""
    commands: list[tuple[str, bool]] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        if not lines[index].startswith("$ "):
            index += 1
            continue
        command = [lines[index][2:]]
        while command[-1].endswith("\\"):
            index += 1
            command.append(lines[index])
        index += 1
        output_end = next((i for i in range(index, len(lines)) if lines[i].startswith("$ ")), None)
        output = lines[index:output_end]
        commands.append(("\n".join(command), any(o.startswith("ferlab: error:") for o in output)))
    return commands


EXAMPLES = [b for doc in DOCS for b in parse_blocks(doc) if b.language in LANGUAGES]


def _param(block: Block) -> pytest.param:
    marks = []
    if "skip" in block.markers:
        marks.append(pytest.mark.skip(reason=block.markers["skip"]))
    if "hours" in block.markers and not os.environ.get("FERLAB_DOCS_HOURS"):
        reason = f"{block.markers['hours']} (FERLAB_DOCS_HOURS=1 runs it)"
        marks.append(pytest.mark.skip(reason=reason))
    if "slow" in block.markers or "hours" in block.markers:
        marks.append(pytest.mark.slow)
    return pytest.param(block, id=block.name, marks=marks)


@dataclass
class Workspace:
    repo: Path
    tmp: Path
    env: dict[str, str]

    def prepare(self, text: str) -> str:
        return text.replace("/tmp/", f"{self.tmp}/")

    def run(self, command: list[str], block: Block) -> subprocess.CompletedProcess[str]:
        timeout = None if {"slow", "hours"} & block.markers.keys() else FAST_TIMEOUT_S
        return subprocess.run(
            command,
            cwd=self.repo,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def start(self, command: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["bash", "-c", self.prepare(command)],
            cwd=self.repo,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """A fresh clone's layout: the repository's files, linked or copied, beside ``shared``.

    The examples write converted copies of FER2013 (hundreds of MB): the folder is removed after
    the module, so a run of the suite does not fill a small disk.
    """
    fer2013 = fer2013_path()
    shared = fer2013.parent.parent if fer2013 is not None else None
    if shared is None or not (shared / "data" / "photos" / "astronaut.png").is_file():
        pytest.skip("the examples need ../shared/data/fer2013 and ../shared/data/photos")
    root = tmp_path_factory.mktemp("docs")
    (root / "shared").symlink_to(shared)
    repo = root / "repo"
    repo.mkdir()
    for name in LINKED:
        (repo / name).symlink_to(REPO / name)
    for name in COPIED:
        shutil.copytree(REPO / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    tmp = root / "tmp"
    tmp.mkdir()
    bin_dir = str(Path(sys.executable).parent)
    activate = (
        repo / ".venv" / "bin" / "activate"
    )  # what `make demo` makes, for `. .venv/bin/activate`
    activate.parent.mkdir(parents=True)
    activate.write_text(f"export PATH={shlex.quote(bin_dir)}:$PATH\n")
    env = {
        **os.environ,
        "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])
        ),
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    workspace = Workspace(repo, tmp, env)
    try:
        for block in EXAMPLES:
            if "setup" in block.markers:
                _run_block(block, workspace)
        yield workspace
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _port(command: str) -> int:
    words = shlex.split(command)
    return int(words[words.index("--port") + 1]) if "--port" in words else 8000


def _wait_healthy(server: subprocess.Popen[str], port: int) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"server exited with {server.returncode}: {server.stderr.read()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"no answer on port {port} within {SERVER_START_S} s")


def _stop(server: subprocess.Popen[str]) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def _serving(workspace: Workspace, command: str) -> subprocess.Popen[str]:
    server = workspace.start(command)
    try:
        _wait_healthy(server, _port(command))
    except BaseException:
        _stop(server)
        raise
    return server


def _check(result: subprocess.CompletedProcess[str], what: str, should_fail: bool = False) -> None:
    failed = result.returncode != 0
    if failed != should_fail:
        expected = "to fail" if should_fail else "to succeed"
        pytest.fail(
            f"{what}\nexpected {expected}, exit code {result.returncode}\n"
            f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
        )


def _run_block(block: Block, workspace: Workspace) -> None:
    if block.language == "bash":
        script = workspace.prepare(block.text)
        _check(workspace.run(["bash", "-e", "-c", script], block), script)
    elif block.language == "console":
        commands = console_commands(block.text)
        assert commands, f"{block.name}: a console block without a $ command"
        for command, should_fail in commands:
            command = workspace.prepare(command)
            _check(workspace.run(["bash", "-c", command], block), command, should_fail)
    else:
        script = workspace.tmp / f"{block.doc}-{block.line}.py"
        script.write_text(workspace.prepare(block.text))
        _check(workspace.run([sys.executable, str(script)], block), block.text)


@pytest.mark.parametrize("block", [_param(b) for b in EXAMPLES])
def test_example_runs(block: Block, workspace: Workspace) -> None:
    if "serve" in block.markers:
        for line in block.text.splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                _stop(_serving(workspace, line.split("  #")[0]))
        return
    server = _serving(workspace, block.markers["server"]) if "server" in block.markers else None
    try:
        _run_block(block, workspace)
    finally:
        if server is not None:
            _stop(server)


def test_every_command_block_is_labelled() -> None:
    """A fence with ``$`` commands but no language would be skipped silently."""
    for doc in DOCS:
        for block in parse_blocks(doc):
            if block.language in ("", "text") and block.text.startswith("$ "):
                pytest.fail(f"{block.name}: commands in a block without a language (```console)")


def test_slow_and_skipped_blocks_say_why() -> None:
    for block in EXAMPLES:
        for kind in ("slow", "hours", "skip"):
            if kind in block.markers:
                assert len(block.markers[kind].split()) >= 3, f"{block.name}: say why it is {kind}"
