"""Side-by-side runners for the GPU check (benchmarks/gpu_check.py): EleutherAI sparsify's
TopK SparseCoder and Pythae's VAE / VQ-VAE, timed on what aekit is timed on.

The comparison is kept fair by construction: the same networks (Pythae gets deep copies of
aekit's own encoder and decoder; sparsify's SparseCoder is the same TopK SAE shape), the same
batches, already resident on the device (no loader in the timed loop), and the same
optimiser, torch's Adam built by aekit's `fastest_adam` (the fused kernel aekit's Trainer
uses), at a constant learning rate, so the sides differ in the model step only.

The peers are optional (the `bench` extra); each runner raises PeerMissing when its peer is
not importable. Both work on the CPU at toy sizes: `python benchmarks/gpu_peers.py`.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import importlib.metadata
import time

import torch
from torch import nn

from aekit.train.trainer import fastest_adam


class PeerMissing(RuntimeError):
    """A peer library is not importable (pip install aekit[bench])."""


def _peer(module: str, dist: str):
    """The peer's module and its installed version, or PeerMissing."""
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise PeerMissing(
            f"{dist} is not importable ({e}); pip install {dist} (or aekit[bench])"
        ) from e
    return mod, importlib.metadata.version(dist)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sparsify_topk(
    batches: list[torch.Tensor],
    d: int,
    latents: int,
    k: int,
    *,
    device: torch.device,
    repeats: int = 1,
) -> dict:
    """Train sparsify's SparseCoder(d, num_latents=latents, k=k) on `batches` (resident on
    `device`, float32) the way sparsify's Trainer steps it, with the project's one mirror of
    that step (`sae_minilm.SparsifyStep`: b_dec from the first batch, decoder rows renormalised
    before each forward, fvu + AuxK/32 + multi-TopK/8, the decoder gradient's parallel part
    removed, the firing counters, a host read of each step's FVU) and Adam at aekit's
    `sae_learning_rate(latents)`, constant. As its Trainer does, float32 matmuls may use TF32
    and, on CUDA, SparseCoder's own bfloat16 autocast runs the forward (on a CPU it is
    float32). One pass over the batches is warm-up, then `repeats` passes are timed. Returns
    tokens_per_second, fvu (the mean per-batch FVU of the last pass), peer and version."""
    _, version = _peer("sparsify", "eai-sparsify")
    from sae_minilm import NO_DEAD, SparsifyStep

    if repeats < 1:
        raise ValueError(f"repeats must be at least 1 (got {repeats})")
    args = argparse.Namespace(seed=0, k=k, expansion=None, dead_tokens=NO_DEAD)
    runner = SparsifyStep(d, args, "adam", device=device, latents=latents)
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")  # sparsify's Trainer.fit sets it
    try:
        for x in batches:  # warm-up pass, not timed
            runner.step(x)
        _sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            fvus = []
            for x in batches:
                runner.step(x)
                fvus.append(runner.last["fvu"])
        _sync(device)
        seconds = time.perf_counter() - start
    finally:
        torch.set_float32_matmul_precision(before)
    tokens = repeats * sum(x.shape[0] for x in batches)
    return {
        "tokens_per_second": tokens / seconds,
        "fvu": sum(fvus) / len(fvus),
        "peer": "sparsify",
        "version": version,
        "lr": runner.lr,
    }


def pythae_images_per_second(
    kind: str,
    encoder: nn.Module,
    decoder: nn.Module,
    latent_dim: int,
    images: torch.Tensor,
    *,
    batch_size: int,
    steps: int,
    device: torch.device,
    code_shape: tuple[int, int, int] | None = None,
    codebook_size: int = 512,
    lr: float = 1e-3,
) -> dict:
    """Images/s of Pythae's VAE (kind 'vae') or VQ-VAE with EMA codebook ('vqvae') built on
    deep copies of aekit's `encoder` and `decoder` (the caller's modules are not trained).

    The wrappers only reshape, so Pythae runs the very same layers. 'vae': the aekit encoder
    gives (B, 2 * latent_dim), its halves Pythae's mean and log-variance; the decoder gives
    Bernoulli logits, so the wrapper returns their sigmoid and Pythae's 'bce' loss reads it
    (the same likelihood as aekit's, through probabilities instead of logits). 'vqvae': the
    aekit encoder gives (B, H * W * D) position-major, code_shape = (D, H, W); the wrapper
    hands Pythae (B, D, H, W), and the decoder wrapper flattens Pythae's quantized
    (B, D, H, W) back to what the aekit decoder takes. Pythae's VQVAE with use_ema=True,
    `codebook_size` codes, decay 0.99 and commitment 0.25 (aekit's vqvae-ema values); its
    loss is the summed-pixel MSE on the decoder's sigmoid (Pythae's VQ-VAE has no other).
    Pythae has no dead-code restarts, which aekit's vqvae-ema does.

    The timed step is Pythae's model step as its trainer runs it (zero_grad, model({'data':
    x}).loss, backward, step) on consecutive slices of `images` (resident on the device),
    with fused Adam at `lr`; its trainer's DataLoader and per-step loss.item() are left out.
    3 warm-up steps, then `steps` timed ones.
    """
    models, version = _peer("pythae.models", "pythae")
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    class Encoder(BaseEncoder):
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> ModelOutput:
            h = self.net(x)
            if kind == "vae":
                mu, logvar = h.chunk(2, dim=-1)
                return ModelOutput(embedding=mu, log_covariance=logvar)
            depth, height, width = code_shape
            grid = h.view(h.shape[0], height, width, depth).permute(0, 3, 1, 2)
            return ModelOutput(embedding=grid)

    class Decoder(BaseDecoder):
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, z: torch.Tensor) -> ModelOutput:
            if z.dim() == 4:  # Pythae's quantized grid (B, D, H, W)
                z = z.permute(0, 2, 3, 1).reshape(z.shape[0], -1)
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)))

    shape = tuple(images.shape[1:])
    # Built on the CPU: Pythae's VQVAE probes the encoder with a CPU batch when it is made.
    enc = Encoder(copy.deepcopy(encoder).cpu())
    dec = Decoder(copy.deepcopy(decoder).cpu())
    if kind == "vae":
        config = models.VAEConfig(input_dim=shape, latent_dim=latent_dim, reconstruction_loss="bce")
        model = models.VAE(config, encoder=enc, decoder=dec)
    elif kind == "vqvae":
        if code_shape is None:
            raise ValueError("kind 'vqvae' needs code_shape=(D, H, W)")
        config = models.VQVAEConfig(
            input_dim=shape,
            latent_dim=latent_dim,
            num_embeddings=codebook_size,
            use_ema=True,
            decay=0.99,
            commitment_loss_factor=0.25,
        )
        model = models.VQVAE(config, encoder=enc, decoder=dec)
    else:
        raise ValueError(f"kind must be 'vae' or 'vqvae' (got {kind!r})")
    model = model.to(device).train()
    opt = fastest_adam(torch.optim.Adam, model.parameters(), lr=lr)
    n_batches = max(1, len(images) // batch_size)

    def step(i: int) -> None:
        j = (i % n_batches) * batch_size
        opt.zero_grad()
        model({"data": images[j : j + batch_size]}).loss.backward()
        opt.step()

    for i in range(3):
        step(i)
    _sync(device)
    start = time.perf_counter()
    for i in range(3, 3 + steps):
        step(i)
    _sync(device)
    seconds = time.perf_counter() - start
    return {
        "images_per_second": steps * min(batch_size, len(images)) / seconds,
        "peer": "pythae",
        "version": version,
        "kind": kind,
    }


if __name__ == "__main__":
    import aekit

    cpu = torch.device("cpu")
    torch.manual_seed(0)
    batches = [torch.randn(64, 32) for _ in range(4)]
    print(sparsify_topk(batches, 32, 256, 4, device=cpu))
    images = torch.rand(64, 1, 28, 28)
    for recipe, kind in (("vae", "vae"), ("vqvae-ema", "vqvae")):
        model = aekit.build(recipe, (1, 28, 28))
        code_shape = (model.bottleneck.options.code_dim, 7, 7) if kind == "vqvae" else None
        print(
            pythae_images_per_second(
                kind,
                model.encoder,
                model.decoder,
                model.latent_dim,
                images,
                batch_size=32,
                steps=2,
                device=cpu,
                code_shape=code_shape,
            )
        )
