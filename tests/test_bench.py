"""`aekit bench`: suite files, the matrix, resumable results with provenance, the leaderboard
(means and standard deviations over seeds), the papers' claims checked, and bad input."""

from __future__ import annotations

import json
import statistics

import pytest

from aekit.bench import load_suite, run_suite, write_leaderboard
from aekit.bench.leaderboard import Entry, check, entries, fmt
from aekit.bench.runner import RESULTS
from aekit.bench.suite import BUILTIN, Expectation, suite_from_dict
from aekit.cli import main
from aekit.errors import AekitError
from aekit.io import read_jsonl

PROVENANCE = ("aekit", "git_commit", "torch", "device_name", "threads", "seed", "timestamp")


def tiny_suite(epochs: int = 1, seeds: tuple[int, ...] = (0,), **extra) -> dict:
    return {
        "name": "tiny",
        "seeds": list(seeds),
        "train": {"epochs": epochs, "batch_size": 32},
        "eval": {"nll_k": 4},
        "data": {"digits": {"source": "digits", "binarize": True, "limit": 64}},
        "models": {"vae": {"recipe": "vae", "latent_dim": 2, "hidden": [8]}},
        **extra,
    }


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_suites_load_and_expand(name):
    suite = load_suite(name)
    cells = suite.cells()
    assert cells and len({c.key for c in cells}) == len(cells)
    for cell in cells:
        # SAE recipes only on SAE data, image recipes only on images
        assert cell.model.is_sae == (cell.data.kind == "sae-synthetic")
    for exp in suite.expectations:
        assert exp.better in suite.models and exp.worse in suite.models


@pytest.mark.parametrize("name", BUILTIN)
def test_every_builtin_model_builds(name):
    """A typo in the full suite must fail here, not hours into a GPU run: each model is
    built with its options on the shape of its data (28x28 images stand in for MNIST-likes)."""
    from aekit.registry import build

    suite = load_suite(name)
    for model in suite.models.values():
        options = dict(model.options)
        if model.is_sae:
            d = next(s.values["d"] for s in suite.data.values() if s.kind == "sae-synthetic")
            build(model.recipe, (d,), options.pop("latent_dim", None), **options)
        else:
            sources = {s.values.get("source") for s in suite.data.values() if s.kind == "image"}
            shape = (1, 8, 8) if sources == {"digits"} else (1, 28, 28)
            build(model.recipe, shape, options.pop("latent_dim", None), **options)


def test_matrix_is_models_by_data_by_budgets_by_seeds():
    raw = tiny_suite(seeds=(0, 1, 2))
    raw["models"]["iwae"] = {"recipe": "iwae", "k": 3, "train": {"lr": 5e-4}}
    raw["budgets"] = [{"name": "short", "epochs": 1}, {"name": "long", "epochs": 3}]
    cells = suite_from_dict(raw).cells()
    assert len(cells) == 2 * 2 * 3
    iwae_long = next(c for c in cells if c.key == "digits/iwae/long/seed2")
    # suite [train] < budget < the model's own train table
    assert iwae_long.train == {"epochs": 3, "batch_size": 32, "lr": 5e-4}
    seed1 = next(c for c in cells if c.key == "digits/iwae/long/seed1")
    assert iwae_long.fingerprint() != seed1.fingerprint()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"models": {"x": {"recipe": "no-such-model"}}}, "unknown recipe 'no-such-model'"),
        ({"seeds": []}, "seeds must be a non-empty list"),
        ({"train": {"epochs": 1, "bogus": 2}}, "unknown field(s) bogus"),
        ({"colour": "blue"}, "unknown field(s) colour"),
        ({"data": {"d": {"kind": "audio"}}}, "kind must be image or sae-synthetic"),
        ({"data": {"d": {"source": "digits", "val_fraction": 2.0}}}, "val_fraction must be in"),
        (
            {"expect": [{"metric": "elbo", "lower": "vae", "than": "ghost"}]},
            "unknown model 'ghost'",
        ),
        (
            {"expect": [{"metric": "elbo", "lower": "vae", "higher": "vae", "than": "vae"}]},
            "exactly one of lower/higher",
        ),
        (
            {"models": {"sae": {"recipe": "sae-topk"}}},
            "no model fits any data set",
        ),
    ],
)
def test_bad_suites_are_named(change, message):
    with pytest.raises(AekitError, match=message.replace("(", r"\(").replace(")", r"\)")):
        suite_from_dict({**tiny_suite(), **change}, "s.toml")


def test_toml_and_yaml_files(tmp_path):
    toml = tmp_path / "s.toml"
    toml.write_text(
        'name = "t"\nseeds = [3]\n[data.digits]\nsource = "digits"\n'
        '[models.ae]\nrecipe = "ae"\nlatent_dim = 2\n'
    )
    assert [c.key for c in load_suite(str(toml)).cells()] == ["digits/ae/default/seed3"]
    yaml = pytest.importorskip("yaml")
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(tiny_suite()))
    assert [c.key for c in load_suite(str(path)).cells()] == ["digits/vae/default/seed0"]
    broken = tmp_path / "broken.toml"
    broken.write_text("name = \n")
    with pytest.raises(AekitError, match="not valid TOML"):
        load_suite(str(broken))
    with pytest.raises(AekitError, match="unknown suite 'nope'"):
        load_suite("nope")


def test_leaderboard_statistics_and_claims():
    rows = [
        {"status": "ok", "data": "d", "model": m, "recipe": m, "budget": "b", "seed": s,
         "metrics": {"marginal_nll": v}, "train_seconds": 1.0}
        for m, values in {"a": [10.0, 11.0, 12.5], "b": [11.0, 12.0, 14.0]}.items()
        for s, v in enumerate(values)
    ]  # fmt: skip
    rows.append({"status": "failed", "data": "d", "model": "a", "recipe": "a", "budget": "b"})
    table = entries(rows)
    a = next(e for e in table if e.model == "a")
    assert a.mean("marginal_nll") == pytest.approx(statistics.fmean([10.0, 11.0, 12.5]))
    assert a.std("marginal_nll") == pytest.approx(statistics.stdev([10.0, 11.0, 12.5]))
    assert len(a.rows) == 3  # the failed row is not averaged
    lower = Expectation("a better", "marginal_nll", "a", "b", True, None)
    higher = Expectation("b higher", "marginal_nll", "b", "a", False, "d")
    missing = Expectation("elbo", "elbo", "a", "b", False, None)
    verdicts = check([lower, higher, missing], table)
    assert [v.holds for v in verdicts] == [True, True, None]
    assert verdicts[0].seeds == 3
    # a 1.33 nat gap against standard deviations of 1.26 and 1.53: within the noise
    assert not verdicts[0].beyond_noise
    assert fmt(2.0, None) == "2" and fmt(None, None) == "—"
    assert fmt(123456.0, 7890.0) == "123,456 ± 7,890"
    assert Entry("d", "m", "r", "b").mean("x") is None


def test_smoke_suite_from_the_command_line(tmp_path, capsys):
    """The CI run of `aekit bench smoke`: every row carries its provenance, the leaderboard
    and figures are written, and a second run finds nothing left to do."""
    out = tmp_path / "bench"
    assert main(["bench", "smoke", "--out", str(out)]) == 0
    rows = read_jsonl(out / RESULTS)
    suite = load_suite("smoke")
    assert sorted(r["key"] for r in rows) == sorted(c.key for c in suite.cells())
    for row in rows:
        assert row["status"] == "ok"
        for key in (*PROVENANCE, "wall_seconds", "train_seconds", "examples_per_second"):
            # git_commit is None outside a repository (an installed wheel), but always recorded
            assert key in row and (row[key] is not None or key == "git_commit"), key
        if "marginal_nll" in row["metrics"]:
            assert row["nll_k"] == 20 and "k=20" in row["estimator"]
    markdown = (out / "leaderboard.md").read_text()
    assert "±" in markdown and "(IS, k=20)" in markdown and "The papers' claims" in markdown
    for figure in ("quality_vs_time.png", "rate_distortion.png", "sparsity_fidelity.png"):
        assert (out / figure).stat().st_size > 0
    assert "<table>" in (out / "leaderboard.html").read_text()
    capsys.readouterr()
    assert main(["bench", "smoke", "--out", str(out)]) == 0
    assert "[1/" not in capsys.readouterr().out  # all done: nothing retrained
    assert len(read_jsonl(out / RESULTS)) == len(rows)


def test_resume_continues_a_cell_from_its_checkpoint(tmp_path):
    """A suite killed mid-cell: the finished cells keep their rows (a torn last line is
    dropped), and the cut-short cell continues from its checkpoint to the same result as an
    uninterrupted run."""
    out = tmp_path / "interrupted"
    run_suite(suite_from_dict(tiny_suite(epochs=1, seeds=(0, 1))), out)
    rows = read_jsonl(out / RESULTS)
    # seed 1 "was killed" after its first epoch: its run directory holds a checkpoint but
    # its row never made it (a torn line instead)
    kept = [r for r in rows if r["seed"] == 0]
    (out / RESULTS).write_text(json.dumps(kept[0]) + '\n{"key": "digits/vae/def')
    suite = suite_from_dict(tiny_suite(epochs=1, seeds=(0, 1)))
    suite.train["epochs"] = 2  # only the unfinished cell sees the new budget...
    suite.seeds = [1]
    resumed = run_suite(suite, out)
    fresh = run_suite(suite_from_dict(tiny_suite(epochs=2, seeds=(1,))), tmp_path / "fresh")
    new = next(r for r in resumed if r["seed"] == 1)
    assert new["resumed"] and new["epochs"] == 2
    assert new["metrics"] == fresh[0]["metrics"]
    assert [r["key"] for r in read_jsonl(out / RESULTS)] == [kept[0]["key"], new["key"]]


def test_rows_of_cells_outside_the_suite_stay_in_the_file_not_the_leaderboard(tmp_path):
    out = tmp_path / "b"
    run_suite(suite_from_dict(tiny_suite(seeds=(0, 1))), out)
    rows = run_suite(suite_from_dict(tiny_suite(seeds=(1,))), out)
    assert [r["seed"] for r in rows] == [1]
    assert len(read_jsonl(out / RESULTS)) == 2


def test_changed_cell_definition_is_refused(tmp_path):
    out = tmp_path / "b"
    run_suite(suite_from_dict(tiny_suite()), out)
    changed = tiny_suite()
    changed["models"]["vae"]["latent_dim"] = 3
    with pytest.raises(AekitError, match="different definition of that cell"):
        run_suite(suite_from_dict(changed), out)


def test_a_failing_cell_is_reported_and_the_rest_run(tmp_path, capsys):
    path = tmp_path / "s.toml"
    lines = [
        'name = "t"', "seeds = [0]", "[train]", "epochs = 1", "batch_size = 32", "[eval]",
        "nll_k = 2", "[data.digits]", 'source = "digits"', "binarize = true", "limit = 64",
        "[models.vae]", 'recipe = "vae"', "latent_dim = 2", "hidden = [8]",
        "[models.broken]", 'recipe = "vae"', "no_such_option = 1",
    ]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert main(["bench", str(path), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "1 cell(s) failed: digits/broken/default/seed0" in captured.err
    rows = {r["key"]: r for r in read_jsonl(out / RESULTS)}
    assert rows["digits/vae/default/seed0"]["status"] == "ok"
    assert "no_such_option" in rows["digits/broken/default/seed0"]["error"]
    assert "Failed cells" in (out / "leaderboard.md").read_text()


def test_command_line_errors(tmp_path, capsys):
    assert main(["bench", "no-such-suite"]) == 1
    assert "unknown suite 'no-such-suite'" in capsys.readouterr().err
    assert main(["bench", "smoke", "--seeds", "a,b"]) == 1
    assert "--seeds takes integers" in capsys.readouterr().err
    assert main(["bench", "smoke", "--list", "--seeds", "7"]) == 0
    listed = capsys.readouterr().out
    assert "digits/vae/default/seed7" in listed and "seed0" not in listed


def test_write_leaderboard_without_rows(tmp_path):
    suite = suite_from_dict(tiny_suite())
    paths = write_leaderboard(suite, [], tmp_path)
    assert "0 cells finished" in paths["markdown"].read_text()
