"""The prepared GPU check: aekit's fast path on one GPU against its peers, in one JSON.

    python benchmarks/gpu_check.py --out benchmarks/results/gpu_check.json   # one H100/H200
    python benchmarks/gpu_check.py --tiny                                     # any CPU, seconds

What it measures (the full sizes are issue 18's; `--tiny` runs every path at toy sizes on the
CPU, and the test suite runs it so):

1. A TopK SAE, d = 2,048, 65,536 latents, k = 64, batches of 8,192 synthetic activations
   resident on the device, trained by aekit's Trainer in fp32, TF32, bf16 and bf16 with
   torch.compile: tokens/s of the last epoch (the first pays for compiling and warm-up), the
   final FVU, and the model FLOP utilisation of the sparse step. Its FLOPs per token are
   2 d n (the dense encoder product) + 8 k d (the sparse decode, its backward to the values
   and the decoder rows, and the encoder rows' gradient through the k kept latents): the
   work the step must do, not what a dense implementation spends.
2. EleutherAI sparsify's SparseCoder on the same batches, with the same optimiser and lr
   (`sae_learning_rate`), stepped as its own trainer does (benchmarks/gpu_peers.py), in the
   bf16 autocast sparsify trains in.
3. The bf16 SAE fed from an activation store on disk (float16 shards of the same rows)
   through pinned memory, against the resident run.
4. Fashion-MNIST-shaped conv VAE and VQ-VAE (28 x 28, aekit's default bodies): images/s of
   aekit's Trainer against Pythae's model step on the same networks (deep copies), the same
   batches and Adam, data resident on the device. Throughput does not depend on the pixels,
   so the images are uniform noise unless --data-root names Fashion-MNIST.

Goals (issue 18): >= 1.0x sparsify's tokens/s at equal FVU and >= 40 % MFU in bf16; the
store-fed run >= 80 % of the resident one; the small models >= 1.0x Pythae. The JSON holds
the device's name, torch's version and every figure; a markdown table goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import aekit
from aekit.data.activations.store import ActivationStore, StoreView, StoreWriter
from aekit.data.tensor_data import TensorData
from aekit.registry import sae_learning_rate
from aekit.train import TrainConfig, Trainer

sys.path.insert(0, str(Path(__file__).parent))
import gpu_peers

SIZES = {
    "full": {"d": 2048, "latents": 65536, "k": 64, "batch": 8192, "batches": 16, "epochs": 3},
    "tiny": {"d": 32, "latents": 256, "k": 4, "batch": 64, "batches": 4, "epochs": 2},
}
IMAGES = {
    "full": {"n": 60000, "batch": 256, "steps": 200},
    "tiny": {"n": 128, "batch": 32, "steps": 3},
}

PEAK_TFLOPS = {
    # Dense peaks from NVIDIA's data sheets (no 2:4 sparsity): (fp32, tf32, bf16).
    "H100 SXM": (66.9, 494.7, 989.4),
    "H100 PCIe": (51.2, 378.0, 756.0),
    "H100 NVL": (60.0, 417.5, 835.0),
    "H200": (66.9, 494.7, 989.4),
}


def peak_tflops(device: torch.device, precision: str) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    column = {"fp32": 0, "tf32": 1, "bf16": 2}[precision]
    if "H200" in name:
        return PEAK_TFLOPS["H200"][column]
    if "H100" in name:
        kind = "H100 PCIe" if "PCIe" in name else "H100 NVL" if "NVL" in name else "H100 SXM"
        return PEAK_TFLOPS[kind][column]
    return None


def mfu(tokens_per_second: float, flops: float, device: torch.device, precision: str):
    """The model FLOP utilisation against the device's dense peak (None off a known GPU)."""
    peak = peak_tflops(device, precision)
    return None if peak is None else tokens_per_second * flops / (peak * 1e12)


def synthetic_activations(rows: int, d: int, seed: int = 0) -> torch.Tensor:
    """Sparse combinations of random unit directions plus noise (made on the CPU, float32)."""
    g = torch.Generator().manual_seed(seed)
    features = 4 * d
    directions = torch.nn.functional.normalize(torch.randn(features, d, generator=g), dim=1)
    out = torch.empty(rows, d)
    for i in range(0, rows, 8192):
        n = min(8192, rows - i)
        active = torch.rand(n, features, generator=g) < 16 / features
        out[i : i + n] = (active * torch.rand(n, features, generator=g)) @ directions
    return out + 0.05 * torch.randn(rows, d, generator=g)


def sae_flops_per_token(d: int, latents: int, k: int) -> float:
    return 2 * d * latents + 8 * k * d


def train_sae(data: Any, size: dict, device: torch.device, precision: str, compile: bool):
    torch.manual_seed(0)
    model = aekit.build("sae-topk", (size["d"],), latent_dim=size["latents"], k=size["k"])
    config = TrainConfig(
        epochs=size["epochs"],
        batch_size=size["batch"],
        lr=sae_learning_rate(size["latents"]),
        device=str(device),
        precision=precision,
        compile=compile,
        progress=False,
    )
    result = Trainer(model, data, None, config).fit()
    last = result.history[-1]
    return model, {
        "tokens_per_second": last["examples_per_second"],
        "fvu": last["train"]["fvu"],
        "epoch_seconds": last["train_seconds"],
    }


def sae_section(size: dict, device: torch.device, tiny: bool) -> dict[str, Any]:
    rows = size["batch"] * size["batches"]
    x = synthetic_activations(rows, size["d"])
    resident = TensorData(x.to(device), name="synthetic activations")
    flops = sae_flops_per_token(size["d"], size["latents"], size["k"])
    runs: dict[str, Any] = {}
    modes = [("fp32", False), ("tf32", False), ("bf16", False), ("bf16", True)]
    for precision, compile in modes:
        name = precision + ("+compile" if compile else "")
        if compile and tiny:
            runs[name] = {"skipped": "torch.compile takes minutes on a CPU (tested in the suite)"}
            continue
        _, run = train_sae(resident, size, device, precision, compile)
        runs[name] = run | {"mfu": mfu(run["tokens_per_second"], flops, device, precision)}
    batches = [x[i : i + size["batch"]].to(device) for i in range(0, rows, size["batch"])]
    try:
        peer = gpu_peers.sparsify_topk(
            batches, size["d"], size["latents"], size["k"], device=device,
            repeats=size["epochs"] - 1,
        )  # fmt: skip
        runs["sparsify"] = peer | {"mfu": mfu(peer["tokens_per_second"], flops, device, "bf16")}
    except gpu_peers.PeerMissing as e:
        runs["sparsify"] = {"skipped": str(e)}
    runs["store bf16"] = store_fed(x, size, device)
    return {"size": size, "flops_per_token": flops, "runs": runs}


def store_fed(x: torch.Tensor, size: dict, device: torch.device) -> dict[str, Any]:
    """The same rows from float16 shards on disk, read through pinned memory to the device."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "store"
        n = x.shape[0]
        with StoreWriter(path, {"site": size["d"]}, shard_rows=max(1, n // 4)) as writer:
            index = torch.arange(n)
            writer.add({"site": x}, index, torch.zeros_like(index), torch.zeros_like(index))
        view = StoreView(ActivationStore(path), ("site",), 0, n, device=device)
        _, run = train_sae(view, size, device, "bf16", False)
    return run


def image_section(args: argparse.Namespace, device: torch.device, tiny: bool) -> dict[str, Any]:
    spec = IMAGES["tiny" if tiny else "full"]
    g = torch.Generator().manual_seed(0)
    images = torch.rand(spec["n"], 1, 28, 28, generator=g)
    source = "uniform noise of Fashion-MNIST's shape"
    if args.data_root:
        from aekit.data import DataConfig, load_data

        splits = load_data(DataConfig(source="fashion-mnist", root=args.data_root))
        images, source = splits.train.x[: spec["n"]], "Fashion-MNIST train images"
    out: dict[str, Any] = {"images": source, **spec}
    steps, batch = spec["steps"], spec["batch"]
    # One epoch of aekit's is `steps` batches, as many as Pythae's timed steps.
    rows = steps * batch
    data = TensorData(images.repeat(math.ceil(rows / len(images)), 1, 1, 1)[:rows]).to(device)
    for recipe, kind in (("vae", "vae"), ("vqvae-ema", "vqvae")):
        torch.manual_seed(0)
        model = aekit.build(recipe, (1, 28, 28))
        code_shape = None
        if kind == "vqvae":
            depth = model.bottleneck.options.code_dim
            side = math.isqrt(model.latent_dim // depth)
            code_shape = (depth, side, side)
        row: dict[str, Any] = {}
        try:  # first, on copies of the untrained bodies
            row["pythae"] = gpu_peers.pythae_images_per_second(
                kind,
                model.encoder,
                model.decoder,
                model.latent_dim,
                images.to(device),
                batch_size=batch,
                steps=steps,
                device=device,
                code_shape=code_shape,
                codebook_size=getattr(model.bottleneck.options, "codebook_size", 512),
            )
        except gpu_peers.PeerMissing as e:
            row["pythae"] = {"skipped": str(e)}
        config = TrainConfig(epochs=2, batch_size=batch, device=str(device), progress=False)
        result = Trainer(model, data, None, config).fit()
        row["aekit_images_per_second"] = result.history[-1]["examples_per_second"]
        if "images_per_second" in row["pythae"]:
            row["ratio"] = row["aekit_images_per_second"] / row["pythae"]["images_per_second"]
        out[kind] = row
    return out


def goals(sae: dict[str, Any], images: dict[str, Any]) -> dict[str, Any]:
    runs = sae["runs"]
    best = max(
        (r for name, r in runs.items() if name.startswith("bf16") and "tokens_per_second" in r),
        key=lambda r: r["tokens_per_second"],
    )
    peer = runs.get("sparsify", {})
    met: dict[str, Any] = {}
    if "tokens_per_second" in peer:
        met["vs_sparsify_tokens_per_second"] = best["tokens_per_second"] / peer["tokens_per_second"]
        met["fvu_aekit_vs_sparsify"] = [best["fvu"], peer["fvu"]]
    met["bf16_mfu"] = best["mfu"]
    met["store_over_resident"] = (
        runs["store bf16"]["tokens_per_second"] / runs["bf16"]["tokens_per_second"]
    )
    for kind in ("vae", "vqvae"):
        met[f"{kind}_vs_pythae"] = images[kind].get("ratio")
    return met


def table(result: dict[str, Any]) -> str:
    lines = [
        f"Device: {result['device']} (torch {result['torch']})",
        "",
        "| run | tokens/s | FVU | MFU |",
        "|---|---:|---:|---:|",
    ]
    for name, r in result["sae"]["runs"].items():
        if "skipped" in r:
            lines.append(f"| {name} | skipped: {r['skipped']} | | |")
            continue
        mfu = "n/a" if r.get("mfu") is None else f"{100 * r['mfu']:.1f} %"
        lines.append(f"| {name} | {r['tokens_per_second']:,.0f} | {r['fvu']:.4f} | {mfu} |")
    lines += ["", "| model | aekit images/s | Pythae images/s | ratio |", "|---|---:|---:|---:|"]
    for kind in ("vae", "vqvae"):
        r = result["images"][kind]
        peer = r["pythae"].get("images_per_second")
        shown = "skipped" if peer is None else f"{peer:,.0f}"
        ratio = "" if r.get("ratio") is None else f"{r['ratio']:.2f}x"
        lines.append(f"| {kind} | {r['aekit_images_per_second']:,.0f} | {shown} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="toy sizes on the CPU (the suite)")
    parser.add_argument("--out", help="the JSON result")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-root", help="folder holding Fashion-MNIST (else noise images)")
    args = parser.parse_args(argv)
    from aekit.train.trainer import resolve_device

    device = torch.device("cpu") if args.tiny else resolve_device(args.device)
    start = time.perf_counter()
    size = SIZES["tiny" if args.tiny else "full"]
    sae = sae_section(size, device, args.tiny)
    images = image_section(args, device, args.tiny)
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "tiny": args.tiny,
        "sae": sae,
        "images": images,
    }
    result["goals"] = goals(sae, images)
    result["seconds"] = time.perf_counter() - start
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    return result


if __name__ == "__main__":
    main()
