"""Resident memory and throughput of one shuffled pass over a large activation store.

Writes a synthetic store (default 10,000,000 rows x 384, float16: about 7.7 GB) of
sparse-dictionary data (every row a sum of 16 of 4,096 unit directions with exponential
magnitudes and Zipf-like feature frequencies, plus a shared offset and noise), then streams
one full shuffled pass at batch 4096 with the default shuffle buffer, and optionally (--train)
feeds the stream to a TopK sparse autoencoder. Each phase runs in its own process, so each
peak resident memory (ru_maxrss, and VmRSS sampled every 10 ms from /proc/self/status) is
that phase's own; "growth" is the peak minus the resident memory after imports and opening
the store. The bound the store promises for the pass is

    (max(buffer_rows, 2 * batch) + shard_rows) * width * 2 bytes  (+ the permutation, a batch)

    python benchmarks/sae_store_memory.py                     # 10M rows (needs ~16 GB free)
    python benchmarks/sae_store_memory.py --rows 200000 --train --keep
    python benchmarks/sae_store_memory.py --phase stream --out STORE   # an existing store

Results are printed and written as JSON (--json, default benchmarks/results/).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROW_EXTRA_BYTES = 8 + 4 + 4  # context int64, position int32, token int32


def _proc_status(field: str) -> int | None:
    """A memory field of /proc/self/status in bytes (Linux), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class RssSampler:
    """Samples VmRSS in a background thread: the peak of what is resident while it runs."""

    def __init__(self, every: float = 0.01) -> None:
        self.every, self.peak, self._stop = every, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _proc_status("VmRSS") or 0)
            time.sleep(self.every)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _proc_status("VmRSS") or 0)


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux: write 5 to clear_refs); False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _maxrss_bytes() -> int:
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _mib(n: int | None) -> float | None:
    return None if n is None else round(n / 2**20, 1)


def store_bytes(rows: int, width: int, itemsize: int) -> int:
    return rows * (width * itemsize + ROW_EXTRA_BYTES)


# ----------------------------------------------------------------------------- phases


def phase_write(args: argparse.Namespace) -> dict:
    import torch
    import torch.nn.functional as F

    from aekit.data.activations.store import StoreWriter

    torch.manual_seed(args.seed)
    n_features, active = 4096, 16
    directions = F.normalize(torch.randn(n_features, args.width), dim=1)
    offset = torch.randn(args.width) * 0.5
    freq = 1.0 / torch.arange(1, n_features + 1).float() ** 0.8  # Zipf-like feature use
    chunk = args.shard_rows
    start = time.perf_counter()
    with RssSampler() as rss, StoreWriter(
        args.out, {"x": args.width}, dtype=args.dtype, shard_rows=args.shard_rows,
        meta={"model": "synthetic sparse dictionary", "n_features": n_features,
              "active_features": active},
        overwrite=True,
    ) as writer:  # fmt: skip
        for first in range(0, args.rows, chunk):
            n = min(chunk, args.rows - first)
            index = torch.multinomial(freq, n * active, replacement=True).view(n, active)
            magnitude = torch.empty(n, active).exponential_()
            x = F.embedding_bag(index, directions, per_sample_weights=magnitude, mode="sum")
            x += offset + 0.05 * torch.randn(n, args.width)
            rows = torch.arange(first, first + n)
            writer.add({"x": x}, rows // 128, rows % 128, torch.randint(0, 30_000, (n,)))
        store = writer.close()
    seconds = time.perf_counter() - start
    on_disk = sum(p.stat().st_size for p in Path(args.out).iterdir())
    return {
        "phase": "write",
        "rows": len(store),
        "width": args.width,
        "dtype": args.dtype,
        "shards": store.n_shards,
        "store_mib": _mib(on_disk),
        "seconds": round(seconds, 2),
        "rows_per_s": round(len(store) / seconds),
        "peak_rss_mib": _mib(max(rss.peak, _maxrss_bytes())),
    }


def phase_stream(args: argparse.Namespace) -> dict:
    import torch

    from aekit.data.activations.store import ActivationStore

    torch.set_num_threads(args.threads)
    store = ActivationStore(args.out)
    view = store.stream(store.sites[0], buffer_rows=args.buffer_rows)
    reset = _reset_peak()
    baseline = _proc_status("VmRSS")
    generator = torch.Generator().manual_seed(args.seed)
    rows = batches = 0
    checksum = 0.0
    start = time.perf_counter()
    with RssSampler() as rss:
        for batch in view.batches(args.batch_size, shuffle=True, generator=generator):
            rows += batch.x.shape[0]
            batches += 1
            checksum += float(batch.x[0, 0])  # touch the data
    seconds = time.perf_counter() - start
    itemsize = store.torch_dtype.itemsize
    width = store.widths[store.sites[0]]
    buffer_cap = max(args.buffer_rows, 2 * args.batch_size)
    shard_rows = max(s["rows"] for s in store.manifest["shards"])
    bound = (buffer_cap + shard_rows) * width * itemsize
    hwm = _proc_status("VmHWM") if reset else None
    peak = max(rss.peak, hwm or 0)
    return {
        "phase": "stream",
        "rows": rows,
        "complete_pass": rows == len(store),
        "batches": batches,
        "batch_size": args.batch_size,
        "buffer_rows": args.buffer_rows,
        "shard_rows": shard_rows,
        "threads": torch.get_num_threads(),
        "store_mib": _mib(sum(s["bytes"] for s in store.manifest["shards"])),
        "seconds": round(seconds, 2),
        "rows_per_s": round(rows / seconds),
        "mib_per_s": round(rows * width * itemsize / seconds / 2**20, 1),
        "baseline_rss_mib": _mib(baseline),
        "peak_rss_mib": _mib(peak),
        "peak_rss_sampled_mib": _mib(rss.peak),
        "vm_hwm_mib": _mib(hwm),
        "ru_maxrss_mib": _mib(_maxrss_bytes()),
        "growth_mib": _mib(peak - (baseline or 0)),
        "buffer_bound_mib": _mib(bound),
        "buffered_rows_peak": view.last_stats.get("peak_rows"),
        "checksum": checksum,
    }


def phase_train(args: argparse.Namespace) -> dict:
    import torch

    import aekit
    from aekit.data.activations.store import ActivationStore

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    store = ActivationStore(args.out)
    site = store.sites[0]
    view = store.stream(site, buffer_rows=args.buffer_rows)
    sae = aekit.build("sae-topk", (store.widths[site],), expansion=args.expansion, k=args.k)
    sae.initialise(store.sample(site, 32_768, seed=args.seed))
    optimizer = torch.optim.Adam(sae.parameters(), lr=args.lr)
    reset = _reset_peak()
    baseline = _proc_status("VmRSS")
    generator = torch.Generator().manual_seed(args.seed)
    limit = args.train_rows or len(store)
    rows = steps = 0
    fvu = []
    start = time.perf_counter()
    with RssSampler() as rss:
        for batch in view.batches(args.batch_size, shuffle=True, generator=generator):
            out = sae.step_forward(batch, steps)
            optimizer.zero_grad(set_to_none=True)
            sae.backward(out)
            optimizer.step()
            sae.after_step()
            rows += batch.x.shape[0]
            steps += 1
            if steps % 20 == 0:
                fvu.append(float(out.terms["fvu"]))
            if rows >= limit:
                break
    seconds = time.perf_counter() - start
    peak = max(rss.peak, (_proc_status("VmHWM") if reset else 0) or 0)
    return {
        "phase": "train",
        "rows": rows,
        "steps": steps,
        "n_latents": sae.latent_dim,
        "k": args.k,
        "threads": torch.get_num_threads(),
        "seconds": round(seconds, 2),
        "rows_per_s": round(rows / seconds),
        "fvu_first": fvu[0] if fvu else None,
        "fvu_last": fvu[-1] if fvu else None,
        "baseline_rss_mib": _mib(baseline),
        "peak_rss_mib": _mib(peak),
        "growth_mib": _mib(peak - (baseline or 0)),
    }


PHASES = {"write": phase_write, "stream": phase_stream, "train": phase_train}


# ----------------------------------------------------------------------------- driver


def _child(args: argparse.Namespace, phase: str) -> dict:
    argv = [sys.executable, __file__, "--phase", phase, "--child"]
    for key in ("rows", "width", "dtype", "shard_rows", "batch_size", "buffer_rows", "out",
                "seed", "threads", "k", "expansion", "lr", "train_rows"):  # fmt: skip
        value = getattr(args, key)
        if value is not None:
            argv += ["--" + key.replace("_", "-"), str(value)]
    done = subprocess.run(argv, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the {phase} phase failed (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--dtype", default="float16", choices=("float16", "bfloat16", "float32"))
    parser.add_argument("--shard-rows", type=int, default=65_536)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--buffer-rows", type=int, default=262_144)
    parser.add_argument("--out", default="/tmp/aekit-sae-store-bench", help="store directory")
    parser.add_argument("--json", help="results file (default benchmarks/results/...)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (stream/train)")
    parser.add_argument("--train", action="store_true", help="also train a TopK SAE on it")
    parser.add_argument("--train-rows", type=int, help="train on this many rows (default: all)")
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--expansion", type=int, default=8)
    parser.add_argument("--lr", type=float, default=4e-4)
    parser.add_argument("--keep", action="store_true", help="keep the store afterwards")
    parser.add_argument(
        "--phase", choices=("all", *PHASES), default="all",
        help="stream/train: use the existing store at --out",
    )  # fmt: skip
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(PHASES[args.phase](args)), flush=True)
        return

    import torch

    results: dict = {"device": "cpu", "torch": torch.__version__, "cpus": os.cpu_count()}
    phases = ["write", "stream"] + (["train"] if args.train else [])
    if args.phase != "all":
        phases = [args.phase]
    if "write" in phases:
        itemsize = torch.empty((), dtype=getattr(torch, args.dtype)).element_size()
        need = store_bytes(args.rows, args.width, itemsize)
        parent = Path(args.out).resolve().parent
        parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(parent).free
        if free < 2 * need:
            raise SystemExit(
                f"refusing to write a {need / 2**30:.1f} GiB store under {parent}: only "
                f"{free / 2**30:.1f} GiB free, and 2x the store size ({2 * need / 2**30:.1f} "
                "GiB) is required; choose --out elsewhere or fewer --rows"
            )
        results["disk_free_gib"] = round(free / 2**30, 1)
    try:
        for phase in phases:
            results[phase] = _child(args, phase)
            print(json.dumps({phase: results[phase]}), flush=True)
    finally:
        if not args.keep and args.phase == "all":
            from aekit.data.activations.store import remove_store

            remove_store(args.out)
    out = Path(args.json or HERE / "results" / f"sae_store_memory-{args.rows}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
