"""Codebook health: the closed forms of usage, perplexity and dead codes, the accumulator, its
place in `evaluate` and in the report of a quantizer run."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import aekit
from aekit.cli import main
from aekit.data import TensorData
from aekit.errors import AekitError
from aekit.eval import CodeCounter, codebook_health, codebook_health_of, evaluate
from aekit.eval.codebook import MAX_COUNTED_CODES, perplexity
from aekit.report import figures
from aekit.report.html import codebook_remedy, codebook_warning
from conftest import TINY_NET

SUMMARY = {"codebook_usage", "codebook_perplexity", "dead_codes", "quantization_error"}
PER_SLOT = {
    "codebook_size",
    "codebook_usage_per_slot",
    "codebook_perplexity_per_slot",
    "dead_codes_per_slot",
    "code_counts",
}


def tiny_vqvae(**options):
    return aekit.build("vqvae", (1, 8, 8), codebook_size=16, code_dim=4, **TINY_NET, **options)


def test_perplexity_is_the_number_of_codes_in_use_when_uniform_and_one_for_a_single_code():
    assert perplexity(torch.full((16,), 7)) == pytest.approx(16)
    assert perplexity(torch.tensor([0, 0, 5, 0])) == pytest.approx(1)
    # Uniform over 3 of 8 codes: exp(log 3) = 3 regardless of the dead ones.
    assert perplexity(torch.tensor([2, 0, 2, 0, 0, 2, 0, 0])) == pytest.approx(3)


def test_usage_dead_codes_and_perplexity_of_hand_made_indices():
    counter = CodeCounter((8,))
    counter.update(torch.tensor([[[0], [2], [2]], [[5], [2], [0]]]))  # (2 examples, 3, 1)
    health = counter.health(detailed=True)
    assert health["codebook_usage"] == pytest.approx(3 / 8)
    assert health["dead_codes"] == 5 and health["dead_codes_per_slot"] == [5]
    p = torch.tensor([2, 3, 1]) / 6
    assert health["codebook_perplexity"] == pytest.approx(math.exp(-(p * p.log()).sum()))
    assert health["codebook_size"] == [8]
    assert "quantization_error" not in health  # no errors were given


def test_slots_aggregate_by_mean_and_dead_codes_by_sum():
    health = codebook_health([[3, 3, 3, 3], [0, 0, 12, 0, 0, 0, 0, 0]], detailed=True)
    assert health["codebook_usage_per_slot"] == [1.0, 1 / 8]
    assert health["codebook_perplexity_per_slot"] == pytest.approx([4.0, 1.0])
    assert health["codebook_usage"] == pytest.approx((1 + 1 / 8) / 2)
    assert health["codebook_perplexity"] == pytest.approx(2.5)
    assert health["dead_codes"] == 7 and health["codebook_size"] == [4, 8]
    assert not PER_SLOT & set(codebook_health([[1, 0]]))  # the lists only when detailed


def test_counter_equals_one_bincount_over_the_concatenation():
    generator = torch.Generator().manual_seed(0)
    sizes = (5, 11)
    batches = [
        torch.stack([torch.randint(k, (b, 3), generator=generator) for k in sizes], -1)
        for b in (4, 1, 7)
    ]
    errors = [torch.rand(len(b), generator=generator) for b in batches]
    counter = CodeCounter(sizes, latent_dim=6)
    for indices, error in zip(batches, errors, strict=True):
        counter.update(indices, error)
    every = torch.cat(batches)
    for s, k in enumerate(sizes):
        assert torch.equal(
            counter.counts[s], torch.bincount(every[..., s].reshape(-1), minlength=k)
        )
    health = counter.health()
    total = float(torch.cat(errors).sum())
    assert health["quantization_error"] == pytest.approx(total / 12)
    assert health["quantization_error_per_dim"] == pytest.approx(total / (12 * 6))


def test_counter_refuses_oversized_codebooks_and_misshapen_indices():
    with pytest.raises(AekitError, match="2\\^24"):
        CodeCounter((4, MAX_COUNTED_CODES + 1))
    with pytest.raises(AekitError, match=r"expected \(B, positions, 2\)"):
        CodeCounter((4, 4)).update(torch.zeros(3, 2, 1, dtype=torch.long))
    with pytest.raises(AekitError, match="at least one example"):
        CodeCounter((4,)).health()


@pytest.mark.parametrize(
    ("recipe", "options", "slots"),
    [
        ("vqvae", {"codebook_size": 16, "code_dim": 4}, 1),
        ("rqvae", {"codebook_size": 8, "code_dim": 4, "stages": 2}, 2),
        ("fsq", {"levels": (3, 3)}, 1),
    ],
)
def test_evaluate_adds_codebook_health_of_quantizers(recipe, options, slots):
    model = aekit.build(recipe, (1, 8, 8), **TINY_NET, **options).train()
    data = TensorData(torch.rand(40, 1, 8, 8))
    quick = evaluate(model, data, batch_size=16)
    assert set(quick) >= SUMMARY and not PER_SLOT & set(quick)
    assert all(isinstance(quick[k], int | float) for k in quick)  # metrics.jsonl stays flat
    sizes = model.quantizer.codebook_sizes
    assert 0 < quick["codebook_usage"] <= 1
    assert 1 - 1e-9 <= quick["codebook_perplexity"] <= max(sizes) + 1e-9
    assert isinstance(quick["dead_codes"], int) and 0 <= quick["dead_codes"] < sum(sizes)
    assert quick["quantization_error"] >= 0
    assert quick["quantization_error_per_dim"] == pytest.approx(
        quick["quantization_error"] / model.latent_dim
    )

    full = evaluate(model, data, batch_size=16, detailed=True)
    assert set(full) >= PER_SLOT and full["codebook_size"] == list(sizes)
    assert len(full["code_counts"]) == len(full["codebook_usage_per_slot"]) == slots
    positions = model.quantizer.positions
    assert all(sum(c) == 40 * positions for c in full["code_counts"])
    assert model.training  # evaluate restores the mode

    of = codebook_health_of(model, data, batch_size=7)  # other batches, same counts
    assert of["code_counts"] == full["code_counts"]
    for key in SUMMARY:
        assert of[key] == pytest.approx(full[key], rel=1e-5)
    assert model.training


def test_evaluate_of_a_continuous_model_has_no_codebook_keys():
    model = aekit.build("vae", (1, 8, 8), 2, **TINY_NET)
    metrics = evaluate(model, TensorData(torch.rand(20, 1, 8, 8)), detailed=True)
    assert not (SUMMARY | PER_SLOT | {"quantization_error_per_dim"}) & set(metrics)
    with pytest.raises(AekitError, match="continuous"):
        codebook_health_of(model, TensorData(torch.rand(4, 1, 8, 8)))


def test_collapse_warning_and_remedies():
    counts = [[0] * 15 + [40]]
    health = codebook_health(counts, detailed=True) | {"code_counts": counts}
    remedy = codebook_remedy(tiny_vqvae())
    assert "--restart" in remedy and "--kmeans-init" in remedy
    warning = codebook_warning(health, remedy)
    assert warning.startswith("Codebook collapse: 15 of 16 codes dead; try --restart")
    few = [[0] * 15 + [10]]  # 10 vectors cannot use 16 codes: no verdict on the codebook
    assert codebook_warning(codebook_health(few, detailed=True) | {"code_counts": few}, "") is None
    assert codebook_warning(codebook_health([[5] * 8 + [0] * 8], detailed=True), "") is None
    lfq = aekit.build("lfq", (1, 8, 8), bits=4, **TINY_NET)
    assert "--entropy-weight" in codebook_remedy(lfq)
    assert "--levels" in codebook_remedy(aekit.build("fsq", (1, 8, 8), **TINY_NET))


def test_codebook_usage_figure(tmp_path):
    counts = [[0, 3, 1, 0], [5, 5, 5, 5], [0, 0, 0, 9], [1, 2, 3, 4], [9, 0, 0, 0]]
    path = figures.codebook_usage(counts, tmp_path / "usage.png")
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.size[0] > 3 * image.size[1]  # four panels side by side, not five rows
    with pytest.raises(AekitError, match="no code counts"):
        figures.codebook_usage([], tmp_path / "none.png")


def test_quantizer_run_records_codebook_health_and_reports_it(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", (rng.random((80, 8, 8)) * 255).astype(np.uint8))
    run = tmp_path / "run"
    args = ["train", "vqvae", "--data", tmp_path / "x.npy", "--out", run, "--epochs", "1"]
    args += ["--batch-size", "16", "--channels", "4,8", "--hidden", "16", "--no-progress"]
    args += ["--codebook-size", "16", "--code-dim", "4"]
    assert main([str(a) for a in args]) == 0
    assert "codebook_usage" in capsys.readouterr().out
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert set(record["val"]) >= SUMMARY
    metrics = json.loads((run / "eval.json").read_text())["metrics"]
    assert set(metrics) >= PER_SLOT and metrics["codebook_size"] == [16]
    page = (run / "report.html").read_text()
    assert "<h2>Codebook</h2>" in page and 'src="figures/codebook_usage.png"' in page
    assert "perplexity" in page and "dead codes" in page
    with Image.open(run / "figures" / "codebook_usage.png") as image:
        image.verify()
