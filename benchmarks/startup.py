"""Start-up cost of the command line: wall seconds of `aekit models`, `aekit --version`,
`aekit --help` and `import aekit` in fresh processes, interleaved, medians and ranges.

    python benchmarks/startup.py --repeats 7
    PYTHONPATH=OLD/src python benchmarks/startup.py --repeats 7 --entry aekit.cli  # before
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers.common import save_result


def commands(entry: str) -> dict[str, list[str]]:
    return {
        "aekit models": [sys.executable, "-m", entry, "models"],
        "aekit --version": [sys.executable, "-m", entry, "--version"],
        "aekit --help": [sys.executable, "-m", entry, "--help"],
        "import aekit": [sys.executable, "-c", "import aekit"],
        "import aekit; aekit.build": [sys.executable, "-c", "import aekit; aekit.build"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--entry",
        default="aekit",
        help="the module `python -m` runs (aekit.cli for versions before aekit.__main__)",
    )
    args = parser.parse_args()
    timed = commands(args.entry)
    seconds: dict[str, list[float]] = {name: [] for name in timed}
    for _ in range(args.repeats):
        for name, command in timed.items():
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            seconds[name].append(time.perf_counter() - start)
    rows = {
        name: {"median": statistics.median(v), "min": min(v), "max": max(v), "seconds": v}
        for name, v in seconds.items()
    }
    for name, row in rows.items():
        print(f"{name:<28} {row['median']:.3f} s  [{row['min']:.3f}-{row['max']:.3f}]")
    name = "startup" if args.entry == "aekit" else f"startup-{args.entry}"
    save_result(name, {"repeats": args.repeats, "entry": args.entry, "commands": rows})


if __name__ == "__main__":
    main()
