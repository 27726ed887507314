"""The GPU fast path, checked on the CPU: bf16 autocast of the bodies with float32 losses,
TF32 as a CUDA-only switch, torch.compile equal to eager, pinned reads only toward a GPU."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import aekit
from aekit.errors import AekitError
from aekit.precision import bodies, full, training_precision
from aekit.train import TrainConfig

sys.path.insert(0, str(Path(__file__).parent))
import distributed_cases as cases


def test_bf16_autocasts_the_bodies_and_keeps_the_objective_in_float32():
    torch.manual_seed(0)
    model = aekit.build("vae", (1, 8, 8), latent_dim=3, **cases.TINY_NET)
    seen = {}
    model.encoder.register_forward_hook(
        lambda m, i, o: seen.setdefault("encoder", o.dtype) and None
    )
    model.decoder.register_forward_hook(
        lambda m, i, o: seen.setdefault("decoder", o.dtype) and None
    )
    x = cases.images(8)
    with training_precision("bf16", torch.device("cpu")):
        out = model(x, step=0)
    assert seen == {"encoder": torch.bfloat16, "decoder": torch.bfloat16}
    assert out.loss.dtype == torch.float32 and out.params.dtype == torch.float32
    assert all(v.dtype == torch.float32 for v in out.terms.values())
    assert out.bottleneck.kl.dtype == torch.float32
    out.loss.backward()
    assert all(p.grad.dtype == torch.float32 for p in model.parameters() if p.grad is not None)
    # Outside training's context the bodies run in float32 again.
    seen.clear()
    model(x, step=0)
    assert seen == {"encoder": torch.float32, "decoder": torch.float32}


def test_a_bf16_sae_selects_in_bfloat16_and_reports_float32():
    torch.manual_seed(0)
    model = aekit.build("sae-topk", (16,), latent_dim=64, k=4)
    with training_precision("bf16", torch.device("cpu")):
        out = model(cases.activations(), step=0)
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    assert out.terms["fvu"].dtype == torch.float32
    # The dense product that ranks the latents ran in bfloat16; the kept values are float32.
    assert out.bottleneck.features.detached().dtype == torch.bfloat16
    assert out.bottleneck.sparse.values.dtype == torch.float32


def test_bf16_training_ends_near_fp32():
    """The bf16 run's validation ELBO after 8 epochs is within 1 % of fp32's (benchmarks/
    precision.py measures the gap against the seed-to-seed spread on digits)."""
    elbos = {}
    for precision in ("fp32", "bf16"):
        _, result = cases.train("vae", None, epochs=8, precision=precision)
        elbos[precision] = result.history[-1]["val"]["elbo"]
    assert elbos["bf16"] == pytest.approx(elbos["fp32"], rel=0.01)
    assert elbos["bf16"] != elbos["fp32"]  # bf16 did run


def test_tf32_is_a_cuda_switch_restored_after_training():
    before = torch.backends.cuda.matmul.allow_tf32
    with training_precision("tf32", torch.device("cuda")):
        assert torch.backends.cuda.matmul.allow_tf32
    assert torch.backends.cuda.matmul.allow_tf32 == before
    a, _ = cases.train("vae", None, epochs=1)
    b, _ = cases.train("vae", None, epochs=1, precision="tf32")  # on a CPU: fp32
    assert all(torch.equal(a.model.state_dict()[k], v) for k, v in b.model.state_dict().items())


def test_full_and_bodies_leave_float32_alone():
    t = torch.ones(2)
    assert full(t) is t and full(t.bfloat16()).dtype == torch.float32 and full(None) is None
    with bodies(torch.device("cpu")):
        assert torch.nn.functional.linear(t, torch.ones(2, 2)).dtype == torch.float32


def test_an_unknown_precision_is_refused_in_one_line():
    with pytest.raises(AekitError, match="precision must be one of fp32, tf32, bf16"):
        TrainConfig(precision="fp16")


def test_the_command_line_trains_in_bf16(tmp_path):
    from aekit.cli import main

    code = main(
        ["train", "vae", "--epochs", "1", "--precision", "bf16", "--device", "cpu", "--out",
         str(tmp_path / "run"), "--no-report", "--nll-k", "0", "--quiet"]
    )  # fmt: skip
    assert code == 0
    assert '"precision": "bf16"' in (tmp_path / "run" / "config.json").read_text()


def test_compiled_training_equals_eager():
    """One epoch of the VAE (reparameterisation noise included: compiled kernels draw from the
    eager generator) compiled and not: the same weights to float rounding."""
    eager, _ = cases.train("vae", None, epochs=1)
    compiled, _ = cases.train("vae", None, epochs=1, compile=True)
    for k, v in eager.model.state_dict().items():
        assert torch.allclose(compiled.model.state_dict()[k], v, atol=1e-6), k


def test_store_batches_are_pinned_only_toward_a_gpu(monkeypatch):
    from aekit.data.activations.store import to_batch

    pinned = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: pinned.append(1) or self)
    cols = [torch.ones(4, 3, dtype=torch.float16)]
    batch = to_batch(cols, torch.device("cpu"), ("a",))
    assert batch.x.dtype == torch.float32 and not pinned
