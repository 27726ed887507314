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

import copy
import importlib
import importlib.metadata
import time
import types

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
    precision: str,
    device: torch.device,
    lr: float,
    repeats: int = 1,
    auxk_alpha: float = 1 / 32,
    dead_feature_threshold: int = 10_000_000,
) -> dict:
    """Train sparsify's SparseCoder(d, num_latents=latents, k=k) on `batches` as sparsify's
    Trainer steps it (sparsify/trainer.py, `fit` and its hook, loss "fvu", one micro-batch,
    no gradient accumulation), and time it.

    Mirrored from that trainer, per batch: on the very first batch b_dec is set to the batch
    mean; the decoder rows are renormalised to unit norm before every forward; the loss is
    fvu + auxk_alpha * auxk (+ multi-TopK FVU / 8, zero here), its FVU denominator the
    batch's total variance computed outside the forward as the trainer does; the decoder
    gradient's component parallel to the rows is removed before the step; then step,
    zero_grad, and the tokens-since-fired counters that make the AuxK dead mask (the default
    alpha 1/32 and threshold of 10M tokens are aekit sae-topk's; sparsify's own alpha default
    is 0, i.e. no AuxK). Like the trainer it reads each step's FVU to the host (a sync per
    step), and with auxk_alpha > 0 SparseCoder counts the dead latents on the host too.
    Its encoder is sparsify's FusedEncoder (a custom autograd function of plain torch ops:
    dense linear + ReLU + topk forward, index_add backward, so the same on CPU and GPU); its
    decoder is the Triton embedding-bag kernel where Triton imports, else torch's
    embedding_bag ('decoder' in the result says which).

    Not mirrored: its optimiser (signum by default; its Adam adds a 1,000-step warm-up and a
    linear decay, or bitsandbytes' 8-bit Adam when installed). Here: fused Adam at a constant
    `lr`, as aekit trains.

    precision: 'bf16' is how sparsify trains: TF32 matmuls (the trainer sets float32 matmul
    precision 'high') and SparseCoder.forward under its bfloat16 autocast (hard-wired on
    CUDA; added here on the CPU). 'tf32' and 'fp32' run the same forward without that
    autocast, with matmul precision 'high' and 'highest'; the setting is restored after.

    One pass over the batches is warm-up, then `repeats` passes are timed. Returns
    tokens_per_second, fvu (the mean per-batch FVU of the last pass), peer and version.
    """
    sparsify, version = _peer("sparsify", "eai-sparsify")
    if precision not in ("fp32", "tf32", "bf16"):
        raise ValueError(f"precision must be fp32, tf32 or bf16 (got {precision!r})")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1 (got {repeats})")
    torch.manual_seed(0)  # the trainer seeds each coder with its init seed, 0 by default
    coder = sparsify.SparseCoder(
        d, sparsify.SparseCoderConfig(num_latents=latents, k=k), device, dtype=torch.float32
    )
    if precision != "bf16":  # bypass the bf16 autocast that decorates SparseCoder.forward
        coder.forward = types.MethodType(sparsify.SparseCoder.forward.__wrapped__, coder)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    opt = fastest_adam(torch.optim.Adam, coder.parameters(), lr=lr)
    since_fired = torch.zeros(latents, dtype=torch.long, device=device)
    did_fire = torch.zeros(latents, dtype=torch.bool, device=device)
    first = True

    def step(x: torch.Tensor) -> float:
        nonlocal first
        if first:  # the trainer's global step 0
            coder.b_dec.data = x.mean(0).to(coder.dtype)
            first = False
        coder.set_decoder_norm_to_unit_norm()
        dead = since_fired > dead_feature_threshold if auxk_alpha > 0 else None
        total_variance = (x - x.mean(0)).pow(2).sum()
        with autocast:
            out = coder(x=x, y=x, dead_mask=dead, total_variance=total_variance)
        did_fire[out.latent_indices.flatten()] = True
        fvu = float(out.fvu.detach())
        (out.fvu + auxk_alpha * out.auxk_loss + out.multi_topk_fvu / 8).backward()
        coder.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
        with torch.no_grad():
            since_fired.add_(x.shape[0])
            since_fired[did_fire] = 0
            did_fire.zero_()
        return fvu

    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest" if precision == "fp32" else "high")
    try:
        for x in batches:  # warm-up pass, not timed
            step(x)
        _sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            fvus = [step(x) for x in batches]
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
        "precision": precision,
        "decoder": sparsify.utils.decoder_impl.__name__,
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
    for precision in ("fp32", "bf16"):
        print(sparsify_topk(batches, 32, 256, 4, precision=precision, device=cpu, lr=1e-3))
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
