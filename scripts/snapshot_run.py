"""Copy a run's records and compact checkpoints to a folder that can be committed.

    python scripts/snapshot_run.py runs/default-model recipes/default-model/resume

To continue on another machine: copy the folder back to runs/<name> and run
``ferlab train --resume runs/<name>``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ferlab.errors import FerlabError
from ferlab.training.checkpoint import snapshot_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("target", type=Path)
    args = parser.parse_args()
    try:
        written = snapshot_run(args.run_dir, args.target)
    except FerlabError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    for path in written:
        print(f"{path}  {path.stat().st_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
