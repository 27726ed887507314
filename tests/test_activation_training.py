"""Models of a network's activations end to end: capture -> train -> eval/report/browser
through the command line, resume after a crash, the folded saved model, transcoders,
streaming from a model, groups of models over several sites, and the errors a user can
cause."""

import copy
import json

import pytest
import torch

import aekit
from aekit.cli import main
from aekit.data.activations import ActivationSource, ActivationStore, open_source
from aekit.errors import AekitError
from aekit.models import Autoencoder, GroupMember, ModelGroup
from aekit.registry import RECIPES
from aekit.train import checkpoint as ckpt
from aekit.train.runs import MEMBERS, model_for_source, train_on_source
from sae_fixtures import WORDS, tiny_models  # noqa: F401

SAE_RECIPES = [name for name, recipe in RECIPES.items() if recipe.activations]


def train_sae(recipe, source, train, *, resume=False, **options):
    """A recipe's model trained on an activation source, as `aekit train` does."""
    if resume:
        model = ckpt.model_from_config(ckpt.read_config(train["out"]))
    else:
        opened = open_source(source, seed=train.get("seed", 0))
        model = model_for_source(recipe, opened, options, seed=train.get("seed", 0))
    result, opened = train_on_source(model, source, train, resume=resume)
    return model, result, opened


pytest.importorskip("transformers")

FAST = ["--expansion", "2", "--batch-size", "64", "--val-rows", "64"]
"""Small and quick; k-sparse recipes add K4."""
K4 = ["--k", "4"]


def write_texts(path, n=40):
    words = [
        "the",
        "cat",
        "sat",
        "on",
        "the",
        "mat",
        "and",
        "the",
        "dog",
        "ran",
        "over",
        "the",
        "big",
        "red",
        "tree",
    ]
    docs = [" ".join(words[(i * 3) % 7 :] + words[: (i * 5) % 11]) for i in range(n)]
    path.write_text("\n\n".join(docs))
    return path


@pytest.fixture(scope="module")
def store(tiny_models, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("sae-store")
    texts = write_texts(root / "docs.txt")
    out = root / "store"
    code = main(
        [
            "sae",
            "capture",
            "--model",
            str(tiny_models.bert),
            "--layer",
            "encoder.layer.0",
            "encoder.layer.1",
            "encoder.layer.1.intermediate:input",
            "encoder.layer.1.output.dense",
            "--texts",
            str(texts),
            "--context-length",
            "16",
            "--shard-rows",
            "100",
            "--dtype",
            "float32",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    return out


def test_capture_train_eval_report_and_the_saved_model(store, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "sae-topk", "--activations", str(store), "--site", "encoder.layer.1"]
    assert main([*argv, *FAST, *K4, "--epochs", "2", "--log-every", "2", "--out", str(run)]) == 0
    shown = capsys.readouterr().out
    assert "fvu" in shown and "embedding_recovered" in shown

    config = json.loads((run / "config.json").read_text())
    assert config["model"]["recipe"] == "sae-topk" and config["model"]["bottleneck"]["k"] == 4
    assert config["activations"]["site"] == "encoder.layer.1"
    metrics = json.loads((run / "eval.json").read_text())["metrics"]
    assert metrics["l0"] == pytest.approx(4.0)  # TopK: exactly k active latents
    assert 0 < metrics["fvu"] < 1.5 and metrics["n"] == 64
    assert metrics["splice"]["kind"] == "embedding"
    assert (run / "report.html").is_file() and (run / "features" / "index.html").is_file()
    steps = [json.loads(line) for line in (run / "steps.jsonl").open()]
    assert steps and {"loss", "fvu", "l0"} <= set(steps[0])

    # The saved weights have the normalisation folded in: raw activations in and out, the
    # same outputs as the model as trained (the last checkpoint, scales kept apart).
    x = ActivationStore(store).read("encoder.layer.1", 0, 50)
    saved = aekit.load(run)
    assert saved.decoder.input_scale.item() == 1.0
    trained = aekit.load(run, checkpoint="last")
    assert trained.decoder.input_scale.item() != 1.0
    assert torch.allclose(saved.reconstruct(x), trained.reconstruct(x), rtol=1e-4, atol=1e-5)
    fvu = (saved.reconstruct(x) - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    assert fvu < 1.5

    # aekit eval and aekit report work on SAE runs too, and the run resumes for longer.
    assert main(["eval", str(run)]) == 0
    assert main(["report", str(run)]) == 0
    assert main(["train", "--resume", str(run), "--epochs", "3", "--no-report"]) == 0
    assert [json.loads(r)["epoch"] for r in (run / ckpt.METRICS).open()] == [1, 2, 3]


def test_a_crashed_run_resumes_and_matches_an_uninterrupted_one(store, tmp_path, monkeypatch):
    source = ActivationSource(activations=str(store), site="encoder.layer.0", val_rows=64)
    values = {"epochs": 2, "batch_size": 32, "progress": False, "checkpoint_every": 3}
    whole, _, _ = train_sae("sae-topk", source, {**values, "out": str(tmp_path / "a")}, k=4)

    real_step, calls = Autoencoder.step_forward, {"n": 0}

    def crash(self, batch, step):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt
        return real_step(self, batch, step)

    monkeypatch.setattr(Autoencoder, "step_forward", crash)
    with pytest.raises(KeyboardInterrupt):
        train_sae("sae-topk", source, {**values, "out": str(tmp_path / "b")}, k=4)
    monkeypatch.setattr(Autoencoder, "step_forward", real_step)
    resumed, result, _ = train_sae(
        "sae-topk", source, {**values, "out": str(tmp_path / "b")}, resume=True
    )
    assert result.steps == whole_steps(tmp_path / "a")
    for name, value in whole.state_dict().items():
        assert torch.allclose(value, resumed.state_dict()[name], atol=1e-6), name


def whole_steps(run):
    return json.loads((run / ckpt.METRICS).read_text().splitlines()[-1])["step"]


@pytest.mark.parametrize("recipe", sorted(set(SAE_RECIPES) - {"transcoder"}))
def test_every_recipe_trains_on_a_store(store, recipe):
    source = ActivationSource(activations=str(store), site="encoder.layer.1", val_rows=64)
    k_sparse = RECIPES[recipe].kinds["bottleneck"] in ("topk", "batchtopk", "abstopk")
    options = {"expansion": 4, **({"k": 4} if k_sparse else {})}
    model, result, _ = train_sae(
        recipe, source, {"epochs": 1, "batch_size": 64, "progress": False}, **options
    )
    assert result.steps > 0 and result.history[-1]["val"]["fvu"] < 2
    assert model.config.recipe == recipe


def test_a_transcoder_predicts_the_mlp_output_from_its_input(store, tmp_path):
    argv = [
        "train",
        "transcoder",
        "--activations",
        str(store),
        "--site",
        "encoder.layer.1.intermediate:input",
        "--target-site",
        "encoder.layer.1.output.dense",
        "--skip",
        "--out",
        str(tmp_path / "tc"),
        *FAST,
    ]
    assert main(argv) == 0
    sae = aekit.load(tmp_path / "tc")
    assert sae.paired and sae.config.body.options.skip
    splice = json.loads((tmp_path / "tc" / "eval.json").read_text())["metrics"]["splice"]
    assert splice["site"] == ["encoder.layer.1.intermediate:input", "encoder.layer.1.output.dense"]


def test_training_streams_straight_from_the_model(tiny_models, tmp_path):  # noqa: F811
    texts = write_texts(tmp_path / "docs.txt")
    source = ActivationSource(
        model=str(tiny_models.bert),
        site="encoder.layer.0",
        texts=str(texts),
        context_length=16,
        val_rows=32,
    )
    values = {"epochs": 1, "batch_size": 32, "progress": False, "out": str(tmp_path / "s")}
    _, result, opened = train_sae("sae-topk", source, values, expansion=2, k=4)
    assert result.steps > 0 and opened.store is None
    assert len(opened.train) + len(opened.val) > 32


def test_bad_input_gets_one_line_errors(store, tmp_path, capsys):
    def error(argv):
        assert main(argv) == 1
        message = capsys.readouterr().err.strip()
        assert message.startswith("aekit: error:") and "\n" not in message
        return message

    base = ["train", "sae-topk", "--activations", str(store), "--out", str(tmp_path / "x")]
    assert "larger than the number of latents" in error([*base, "--k", "999", "--expansion", "1"])
    assert "has no site 'nope'" in error([*base, "--site", "nope"])
    assert "unknown" in error(["train", "sae-nope", "--activations", str(store)])
    assert "--target-site" in error(["train", "transcoder", "--activations", str(store)])
    assert "give the activations" in error(["train", "sae-topk"])
    run = tmp_path / "ok"
    assert (
        main(["train", "sae-topk", "--activations", str(store), "--out", str(run), *FAST, *K4]) == 0
    )
    capsys.readouterr()
    assert "sparse autoencoder run" in error(["sample", str(run)])

    broken = tmp_path / "broken"
    broken.mkdir()
    for item in store.iterdir():
        (broken / item.name).write_bytes(item.read_bytes())
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["shards"][0]["rows"] += 1
    (broken / "manifest.json").write_text(json.dumps(manifest))
    message = error(["train", "sae-topk", "--activations", str(broken)])
    assert "shard-00000" in message

    capture = ["sae", "capture", "--texts", "python-docs", "--out", str(tmp_path / "c")]
    assert "has no config.json" in error([*capture, "--model", str(store), "--layer", "x"])
    message = error([*capture, "--model", str(tiny_models_bert(store)), "--layer", "nope.*"])
    assert "nope.*" in message and "encoder.layer" in message  # lists the modules that exist
    assert not (tmp_path / "c").exists()


def tiny_models_bert(store):
    """The tiny BERT the store was captured from (its manifest names it)."""
    return json.loads((store / "manifest.json").read_text())["model"]


def test_building_a_transcoder_needs_a_target():
    with pytest.raises(AekitError, match="--target-site"):
        aekit.build("transcoder", (8,))
    matryoshka = aekit.build("sae-matryoshka", (16,), expansion=16)
    assert matryoshka.config.objective.options.matryoshka == (64,)


def group_of(sites_and_k, widths):
    """Top-k SAEs (expansion 2) named NAME reading SITE, one per (NAME, SITE, K)."""
    members = [GroupMember(name, site) for name, site, _ in sites_and_k]
    models = {
        name: aekit.build("sae-topk", (widths[site],), k=k, expansion=2)
        for name, site, k in sites_and_k
    }
    return ModelGroup(models, members)


def test_a_group_trains_several_saes_on_one_pass(store, tmp_path):
    source = ActivationSource(
        activations=str(store), site="encoder.layer.0,encoder.layer.1", val_rows=64
    )
    opened = open_source(source, group=True)
    specs = [("l0-k4", "encoder.layer.0", 4), ("l1-k4", "encoder.layer.1", 4),
             ("l1-k8", "encoder.layer.1", 8)]  # fmt: skip
    group = group_of(specs, opened.widths)
    values = {"epochs": 1, "batch_size": 64, "progress": False, "out": str(tmp_path / "g")}
    result, _ = train_on_source(group, source, values, opened=opened)
    val = result.history[-1]["val"]
    assert val["l1-k4/l0"] == pytest.approx(4) and val["l1-k8/l0"] == pytest.approx(8)
    assert val["loss"] == pytest.approx(sum(val[f"{name}/loss"] for name, _, _ in specs))
    for name, site, k in specs:
        loaded = aekit.load(tmp_path / "g" / MEMBERS / name)
        assert loaded.bottleneck.options.k == k
        config = json.loads((tmp_path / "g" / MEMBERS / name / "config.json").read_text())
        assert config["activations"]["site"] == site
    assert isinstance(aekit.load(tmp_path / "g"), ModelGroup)
    stray = group_of(
        [("x", "encoder.layer.1.output.dense", 4)], {"encoder.layer.1.output.dense": 32}
    )
    with pytest.raises(AekitError, match="does not give"):
        train_on_source(stray, source, {**values, "out": str(tmp_path / "h")}, opened=opened)


def test_a_group_calibrates_each_member_on_its_own_site_as_it_would_alone():
    from aekit.data.tensor_data import Batch

    g = torch.Generator().manual_seed(0)
    batches = [
        Batch(
            None, None, {"a": torch.randn(32, 6, generator=g), "b": torch.rand(32, 8, generator=g)}
        )
        for _ in range(3)
    ]
    members = [GroupMember("x", "a"), GroupMember("y", "b"), GroupMember("z", "b")]
    torch.manual_seed(0)
    models = {
        "x": aekit.build("sae-batchtopk", (6,), k=2, expansion=4),
        "y": aekit.build("sae-topk", (8,), k=2, expansion=4),  # nothing to calibrate
        "z": aekit.build("sae-batchtopk", (8,), k=3, expansion=4),
    }
    alone = {name: copy.deepcopy(m) for name, m in models.items()}
    ModelGroup(models, members).calibrate(iter(batches))
    for name, site in (("x", "a"), ("z", "b")):
        alone[name].calibrate(Batch(b.by_site[site], None) for b in batches)
        threshold = models[name].bottleneck.threshold
        torch.testing.assert_close(threshold, alone[name].bottleneck.threshold)
        assert threshold > 0


def test_the_command_line_trains_one_sae_per_site_in_one_pass(store, tmp_path, capsys):
    run = tmp_path / "sites"
    argv = ["train", "sae-topk", "--activations", str(store), "--out", str(run)]
    assert main([*argv, "--site", "encoder.layer.0,encoder.layer.1", *FAST, *K4]) == 0
    assert "encoder.layer.1: fvu" in capsys.readouterr().out
    for name in ("encoder_layer_0", "encoder_layer_1"):
        assert main(["eval", str(run / "members" / name)]) == 0
        assert (run / "members" / name / "report.html").is_file()
    # A group run is a run like any other: it evaluates (every flag honoured), reports,
    # resumes and loads.
    out = tmp_path / "group-eval.json"
    assert main(["eval", str(run), "--out", str(out), "--batch-size", "16", "--seed", "3"]) == 0
    metrics = json.loads(out.read_text())["metrics"]
    assert metrics["encoder_layer_0/n"] == 64 and "encoder_layer_1/fvu" in metrics
    assert not (run / "eval-store-test.json").exists()
    # Another store of the same sites (here the same one, named): every row by default.
    assert main(["eval", str(run), "--data", str(store), "--no-splice", "--device", "cpu"]) == 0
    every = json.loads((run / "eval-store-all.json").read_text())
    assert every["split"] == "all rows"
    assert every["metrics"]["encoder_layer_0/n"] == ActivationStore(store).rows
    assert "encoder_layer_0/splice" not in every["metrics"]
    assert main(["report", str(run)]) == 0 and (run / "report.html").is_file()
    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-report"]) == 0
    assert [json.loads(r)["epoch"] for r in (run / ckpt.METRICS).open()] == [1, 2]
    group = aekit.load(run)
    assert isinstance(group, ModelGroup) and group["encoder_layer_1"].latent_dim == 2 * 32
    with pytest.raises(AekitError, match="checkpoint must be best or last"):
        aekit.load(run, checkpoint="nonsense")
