"""aekit's default detector on outlier sets outside the ODDS table it is benchmarked on, under
the same protocol as `aekit bench odds` (PyOD's), beside PyOD's detectors when installed: a check
that the label-free defaults were not fitted to those 17 sets.

ADBench's classical sets (`Minqi824/ADBench`, `adbench/datasets/Classical/*.npz`, keys X and
y) are the natural source; the ones that duplicate an ODDS set are skipped by name:

    python benchmarks/detector_unseen.py --data-dir ADBENCH/adbench/datasets/Classical \\
        --seeds 0,1,2 --threads 2

Results: benchmarks/results/detector_unseen/{results.jsonl, table.md}.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import torch

from aekit.bench.odds import ODDS_SETS, PROTOCOL, odds_table, run_odds
from aekit.io import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results" / "detector_unseen"
IN_ODDS = {re.sub(r"[^a-z0-9]", "", name) for name in ODDS_SETS} | {
    "lymphography",
    "satimage2",
    "breastw",  # ODDS has it too (not among PyOD's 17): kept out so "unseen" stays unseen
    "wbc",
}
SIZE_LIMIT = 20_000
"""Sets with more rows are skipped (CPU time); ADBench has a handful."""


def unseen_sets(folder: Path) -> dict[str, Path]:
    files = {}
    for path in sorted(folder.glob("*.npz")):
        name = re.sub(r"^\d+_", "", path.stem)
        if re.sub(r"[^a-z0-9]", "", name.lower()) in IN_ODDS:
            continue
        import numpy as np

        with np.load(path, allow_pickle=False) as contents:
            if len(contents["y"]) > SIZE_LIMIT:
                continue
        files[name] = path
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="a folder of ADBench-style .npz sets")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-peers", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    files = unseen_sets(Path(args.data_dir))
    print(f"{len(files)} sets: {', '.join(files)}", flush=True)
    start = time.perf_counter()
    rows = run_odds(
        files,
        RESULTS,
        [int(s) for s in args.seeds.split(",")],
        peers=not args.no_peers,
        on_row=lambda r: print(r["data"], r["seed"], r["detector"], r.get("roc_auc"), flush=True),
    )
    command = "python benchmarks/detector_unseen.py " + " ".join(sys.argv[1:])
    protocol = PROTOCOL.replace("each set", "each ADBench set outside the ODDS table")
    atomic_write_text(RESULTS / "table.md", odds_table(rows, command, protocol))
    print(f"{len(rows)} rows in {time.perf_counter() - start:.0f} s -> {RESULTS / 'table.md'}")


if __name__ == "__main__":
    main()
