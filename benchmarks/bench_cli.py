"""CPU time of the light commands, as a user runs them (the installed ``onnx-run``).

The goal (docs/guide.md): < 0.5 s of CPU for ``--version``, ``--help``, ``plugins``,
``config show`` and ``--dry-run``. Each command runs ``--repeat`` times in a fresh process;
the median user + system CPU of the child is printed beside the goal. ``--check`` (the deep
dry run: it builds the optics, reads the data and builds the models) is printed for reference,
with the floor of anything that builds a model: ``import torch`` alone.

    python benchmarks/bench_cli.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile

COMMANDS = {
    "--version": ["--version"],
    "--help": ["--help"],
    "plugins": ["plugins"],
    "config show": ["config", "show", "--optics", "4f", "--task", "classification"],
    "--dry-run": ["--optics", "4f", "--task", "classification", "--dry-run"],
}
#: not light, and not meant to be: printed beside the others for reference
REFERENCE = {"--check": ["--optics", "4f", "--task", "classification", "--check"]}
GOAL_S = 0.5


def cpu_seconds(args: list[str], cwd: str, *, command: list[str] | None = None) -> float:
    """User + system CPU of one run of ``onnx-run ARGS`` (or of ``command``) in a fresh process."""
    exe = shutil.which("onnx-run") or os.path.join(os.path.dirname(sys.executable), "onnx-run")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command or [exe, *args], cwd=cwd, check=True, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"| command | median CPU (s), {args.repeat} runs | goal (s) | ratio to goal |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as cwd:  # --dry-run writes nothing; config show neither
        for name, argv in COMMANDS.items():
            cpu = statistics.median(cpu_seconds(argv, cwd) for _ in range(args.repeat))
            print(f"| `onnx-run {name}` | {cpu:.2f} | {GOAL_S} | {cpu / GOAL_S:.1f}x |")
        for name, argv in REFERENCE.items():
            cpu = statistics.median(cpu_seconds(argv, cwd) for _ in range(args.repeat))
            print(f"| `onnx-run {name}` (reads the data, builds the models) | {cpu:.2f} | - | {cpu / GOAL_S:.1f}x |")
        floor = [sys.executable, "-c", "import torch"]
        cpu = statistics.median(cpu_seconds([], cwd, command=floor) for _ in range(args.repeat))
        print(f"| `python -c 'import torch'` (the floor of a model) | {cpu:.2f} | - | {cpu / GOAL_S:.1f}x |")


if __name__ == "__main__":
    main()
