"""Start-up cost of the command line: wall seconds of `aekit models`, `aekit --version`,
`aekit --help` and `import aekit` in fresh processes, interleaved, medians and ranges.

    python benchmarks/startup.py --repeats 7
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

COMMANDS = {
    "aekit models": [sys.executable, "-m", "aekit", "models"],
    "aekit --version": [sys.executable, "-m", "aekit", "--version"],
    "aekit --help": [sys.executable, "-m", "aekit", "--help"],
    "import aekit": [sys.executable, "-c", "import aekit"],
    "import aekit; aekit.build": [sys.executable, "-c", "import aekit; aekit.build"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    seconds: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, command in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            seconds[name].append(time.perf_counter() - start)
    rows = {
        name: {"median": statistics.median(v), "min": min(v), "max": max(v), "seconds": v}
        for name, v in seconds.items()
    }
    for name, row in rows.items():
        print(f"{name:<28} {row['median']:.3f} s  [{row['min']:.3f}-{row['max']:.3f}]")
    save_result("startup", {"repeats": args.repeats, "commands": rows})


if __name__ == "__main__":
    main()
