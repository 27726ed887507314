"""Data-parallel training on two gloo ranks (torchrun, one thread a rank) equals one process on
the same global batches: weights and losses, for a VAE (reparameterisation noise per row), a
VQ-VAE (EMA codebook, k-means initialisation, dead-code restarts), a TopK SAE with dead latents
and AuxK (FVU over the global batch) and a BatchTopK SAE (the selection over the global batch).
Also: a last batch of fewer rows than ranks terminates, only rank 0 writes, an interrupted
distributed run resumes to the uninterrupted one's weights, and `torchrun -m aekit train`."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
import aekit
import distributed_cases as cases
from aekit import distributed
from aekit.errors import AekitError

TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
CASES = ("vae", "vqvae", "sae_topk", "sae_batchtopk", "vae_short", "vae-writer", "vae-first")
TOLERANCE = 2e-6
"""Float32 sums in another order: the runs differ by about 1e-7 (the checks' scale)."""


def torchrun(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    return subprocess.run(
        [TORCHRUN, "--standalone", "--nproc_per_node", "2", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> Path:
    """Every case on two ranks, in one launch; then the interrupted run resumed in another."""
    out = tmp_path_factory.mktemp("ranks")
    script = str(Path(cases.__file__))
    for names in (CASES, ("vae-resumed",)):
        done = torchrun(script, str(out), *names, cwd=out)
        assert done.returncode == 0, done.stderr[-3000:]
        if names == CASES:  # the interrupted run, to resume in one process too
            shutil.copytree(out / "vae.run", out / "vae.run.single")
    return out


@pytest.fixture(scope="module")
def single() -> dict[str, tuple[dict[str, torch.Tensor], list[float]]]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = {}
        for case in ("vae", "vqvae", "sae_topk", "sae_batchtopk"):
            trainer, result = cases.train(case, None)
            losses = [r["train"]["loss"] for r in result.history]
            results[case] = (cases.state(trainer.model), losses, result.history)
        return results
    finally:
        torch.set_num_threads(threads)


def rank_result(out: Path, case: str, rank: int) -> tuple[dict[str, torch.Tensor], list]:
    history = json.loads((out / f"{case}.rank{rank}.json").read_text())
    return load_file(out / f"{case}.rank{rank}.safetensors"), history


def largest_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


@pytest.mark.parametrize("case", ["vae", "vqvae", "sae_topk", "sae_batchtopk"])
def test_two_ranks_train_the_single_process_run(ranks, single, case):
    weights, losses, history = single[case]
    for rank in (0, 1):
        got, got_history = rank_result(ranks, case, rank)
        assert largest_difference(got, weights) < TOLERANCE
        got_losses = [r["train"]["loss"] for r in got_history]
        assert got_losses == pytest.approx(losses, rel=1e-6)
        for got_record, record in zip(got_history, history, strict=True):
            # The validation record is rank 0's, sent to rank 1.
            assert got_record.get("val", {}) == pytest.approx(record.get("val", {}), rel=1e-5)


def test_the_cases_exercise_the_statistics_they_claim(single):
    """Not vacuous: latents die and AuxK trains them, the VQ codebook was initialised by
    k-means and restarted codes moved, and a differently cut batch gives other weights."""
    _, _, sae = single["sae_topk"]
    assert sae[-1]["train"]["dead"] > 0 and sae[-1]["train"]["auxk"] > 0
    vq, _, _ = single["vqvae"]
    assert bool(vq["bottleneck.initialised"]) and vq["bottleneck.usage"].min() < 1 / 16
    trainer, _ = cases.train("vqvae", None, batch_size=4)
    assert largest_difference(cases.state(trainer.model), vq) > 100 * TOLERANCE


def test_a_last_batch_smaller_than_the_ranks_terminates_and_is_left_out(ranks):
    for rank in (0, 1):
        _, history = rank_result(ranks, "vae_short", rank)
        assert [r["step"] for r in history] == [4, 8]  # 33 rows: 4 batches of 8, 1 left out


def test_only_rank_0_writes(ranks):
    written = ranks / "vae-writer.run.rank0"
    assert (written / "config.json").is_file() and (written / "checkpoints").is_dir()
    assert not (ranks / "vae-writer.run.rank1").exists()


def test_an_interrupted_distributed_run_resumes_to_the_same_weights(ranks):
    uninterrupted, history = rank_result(ranks, "vae", 0)
    for rank in (0, 1):
        resumed, resumed_history = rank_result(ranks, "vae-resumed", rank)
        assert largest_difference(resumed, uninterrupted) == 0
        # The epoch's sums so far come back from the checkpoint as float64: equal to rounding.
        for got, want in zip(resumed_history, history, strict=True):
            assert got["train"] == pytest.approx(want["train"], rel=1e-6)
            assert got["val"] == pytest.approx(want["val"], rel=1e-6)


def test_a_distributed_run_resumes_in_one_process(ranks, single):
    trainer, _ = cases.train("vae", ranks / "vae.run.single", resume=True)
    assert largest_difference(cases.state(trainer.model), single["vae"][0]) < TOLERANCE


def test_torchrun_runs_the_command_line(tmp_path):
    done = torchrun(
        "-m", "aekit", "train", "vae", "--epochs", "1", "--out", "run", "--no-report",
        "--nll-k", "0", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "run" / "eval.json").is_file()
    assert done.stdout.count("run: run") == 1  # rank 0 alone reports


def test_a_group_of_saes_from_a_store_trains_alike_on_two_ranks(tmp_path):
    """The command line, activations streamed from a store, one SAE per site on one pass:
    every rank on a slice of each batch, or (--place-sites) each rank its own site's SAE."""
    from aekit.cli import main
    from sae_fixtures import write_synthetic_store

    write_synthetic_store(tmp_path / "store", rows=600, sites={"a": 16, "b": 8})
    flags = ["train", "sae-topk", "--activations", str(tmp_path / "store"), "--site", "a,b",
             "--k", "4", "--expansion", "2", "--epochs", "1", "--batch-size", "64",
             "--val-rows", "64", "--no-splice", "--no-report", "--no-eval", "--quiet"]  # fmt: skip
    for out, placed in (("ranks", []), ("placed", ["--place-sites"])):
        done = torchrun("-m", "aekit", *flags, *placed, "--out", out, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([*flags, "--out", str(tmp_path / "single")]) == 0
    finally:
        torch.set_num_threads(threads)
    single = load_file(tmp_path / "single" / "model.safetensors")
    ranks = load_file(tmp_path / "ranks" / "model.safetensors")
    assert largest_difference(ranks, single) < TOLERANCE
    # Sites placed on ranks: each member's gradient is its one rank's, plus exact zeros.
    placed = load_file(tmp_path / "placed" / "model.safetensors")
    assert largest_difference(placed, single) == 0


def test_batches_smaller_than_the_ranks_are_refused_in_one_line(tmp_path):
    done = torchrun(
        "-m", "aekit", "train", "vae", "--epochs", "1", "--batch-size", "1", "--out", "run",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode != 0
    assert "aekit: error: 2 ranks need batches of at least 2 rows" in done.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_rows_split_in_rank_order_and_sizes_differ_by_at_most_one():
    for total in range(0, 40):
        for world in (1, 2, 3, 8):
            bounds = [distributed.split(total, r, world) for r in range(world)]
            assert bounds[0][0] == 0 and bounds[-1][1] == total
            assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
            sizes = [stop - start for start, stop in bounds]
            assert max(sizes) - min(sizes) <= 1


def test_sites_are_placed_on_ranks_round_robin(monkeypatch):
    from aekit.models.group import GroupMember, ModelGroup

    models = {n: aekit.build("sae-topk", (8,), latent_dim=16, k=2) for n in "abc"}
    group = ModelGroup(models, [GroupMember(n, n) for n in "abc"])
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    assert [group.owner(n) for n in "abc"] == [0, 1, 0]
    group.place_on_ranks()
    assert group.trained_here == {"b"}
    monkeypatch.setattr(distributed, "world_size", lambda: 4)
    with pytest.raises(AekitError, match="4 ranks cannot each train sites of a group of 3"):
        group.place_on_ranks()


def test_helpers_are_the_identity_in_one_process():
    t = torch.arange(6.0).reshape(3, 2)
    assert distributed.current() is None
    with distributed.sharded(3) as shard:
        assert shard is None
        assert distributed.sum_(t) is t and distributed.gather_rows(t) is t
        assert distributed.fraction() == 1.0
        draw = distributed.per_row(lambda s: torch.zeros(s), (3, 2))
        assert draw.shape == (3, 2)
