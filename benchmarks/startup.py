"""Start-up cost of the command line: wall seconds of `aekit models`, `aekit --version`,
`aekit --help`, `import aekit`, `import torch` and torch's first optimiser (which imports
torch._dynamo), loading Fashion-MNIST with `--limit 1000`, and a whole
`aekit train vae --data fashion-mnist --limit 1000 --epochs 1 --no-eval --no-report` (conv
body, 16 steps, the validation ELBO on 6,000 images), in fresh processes, interleaved,
medians and ranges. With `--before SRC` every command also runs against the aekit source
tree SRC (PYTHONPATH), interleaved with the current one, and the ratios are printed.

    python benchmarks/startup.py --repeats 7
    git archive OLD | tar -x -C /tmp/old
    python benchmarks/startup.py --repeats 7 --before /tmp/old/src
    PYTHONPATH=OLD/src python benchmarks/startup.py --repeats 7 --entry aekit.cli  # pre-0.2

The Fashion-MNIST commands read `--data-dir` (default: ../shared/data/fashion-mnist from the
repository) and are skipped when it is missing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers.common import save_result

ROOT = Path(__file__).resolve().parent.parent


def commands(entry: str, data_dir: Path | None, scratch: Path) -> dict[str, list[str]]:
    python = sys.executable
    timed = {
        "aekit models": [python, "-m", entry, "models"],
        "aekit --version": [python, "-m", entry, "--version"],
        "aekit --help": [python, "-m", entry, "--help"],
        "import aekit": [python, "-c", "import aekit"],
        "import aekit; aekit.build": [python, "-c", "import aekit; aekit.build"],
        "import torch": [python, "-c", "import torch"],
        # torch's first optimiser imports torch._dynamo (Optimizer._patch_step_function)
        "import torch; a first torch.optim.Adam": [
            *(python, "-c", "import torch; torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])"),
        ],
    }
    if data_dir is not None:
        load = (
            "from aekit.data import DataConfig, load_data; "
            f"load_data(DataConfig(source='fashion-mnist', data_dir={str(data_dir)!r}, limit=1000))"
        )
        timed["load fashion-mnist --limit 1000"] = [python, "-c", load]
        timed["aekit train vae --limit 1000 --epochs 1"] = [
            *(python, "-m", entry, "train", "vae", "--data", "fashion-mnist"),
            *("--data-dir", str(data_dir), "--limit", "1000", "--epochs", "1"),
            *("--no-eval", "--no-report", "--quiet", "--overwrite", "--out", str(scratch / "run")),
        ]
    return timed


def summary(v: list[float]) -> dict:
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "seconds": v}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--entry",
        default="aekit",
        help="the module `python -m` runs (aekit.cli for versions before aekit.__main__)",
    )
    parser.add_argument("--before", help="an older aekit source tree (its src/) to compare")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared/data/fashion-mnist"))
    args = parser.parse_args()
    data_dir = Path(args.data_dir)
    if not data_dir.is_dir():
        print(f"{data_dir} is missing: the Fashion-MNIST commands are skipped")
    trees = {"current": str(ROOT / "src")}
    if args.before:
        trees["before"] = str(Path(args.before).resolve())
    with tempfile.TemporaryDirectory() as scratch:
        timed = commands(args.entry, data_dir if data_dir.is_dir() else None, Path(scratch))
        seconds = {tree: {name: [] for name in timed} for tree in trees}
        for _ in range(args.repeats):
            for name, command in timed.items():
                for tree, path in trees.items():
                    env = {**os.environ, "PYTHONPATH": path}
                    start = time.perf_counter()
                    subprocess.run(command, check=True, capture_output=True, env=env)
                    seconds[tree][name].append(time.perf_counter() - start)
    rows = {tree: {name: summary(v) for name, v in by.items()} for tree, by in seconds.items()}
    for name in timed:
        line = f"{name:<42}"
        for tree in trees:
            r = rows[tree][name]
            line += f" {tree} {r['median']:.3f} s [{r['min']:.3f}-{r['max']:.3f}]"
        if args.before:
            ratio = rows["current"][name]["median"] / rows["before"][name]["median"]
            line += f"  current/before {ratio:.2f}"
        print(line)
    name = "startup" if args.entry == "aekit" else f"startup-{args.entry}"
    payload = {"repeats": args.repeats, "entry": args.entry, "commands": rows["current"]}
    if args.before:
        payload["before"] = {"tree": trees["before"], "commands": rows["before"]}
    save_result(name, payload)


if __name__ == "__main__":
    main()
