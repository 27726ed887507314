"""The shared training loop: reproducibility, resume equivalence, divergence handling,
early stopping, schedules and the run directory."""

import importlib.util
import json
import math

import pytest
import torch

import aekit
from aekit.train import checkpoint as ckpt
from aekit.train.trainer import learning_rate
from conftest import TINY_NET


def data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g)
    return aekit.TensorData(x, torch.arange(n) % 3, binarize=True, name="toy")


def make(recipe="vae", seed=0, **options):
    torch.manual_seed(seed)
    return aekit.build(recipe, (1, 8, 8), 3, **TINY_NET, **options)


def config(tmp_path=None, name="run", **overrides):
    values = {
        "epochs": 4,
        "batch_size": 16,
        "progress": False,
        "schedule": "cosine",
        "warmup_steps": 5,
        "grad_clip": 5.0,
    }
    values.update(overrides)
    if tmp_path is not None:
        values["out"] = str(tmp_path / name)
    return aekit.TrainConfig(**values)


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


class Crash(Exception):
    pass


def crash_after(epoch):
    def callback(trainer, record):
        if record["epoch"] == epoch:
            raise Crash

    return callback


@pytest.mark.parametrize(
    "recipe, options",
    [("vae", {"corruption": "masking"}), ("beta-vae-capacity", {"capacity_steps": 50})],
)
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, recipe, options):
    train, val = data(), data(32, seed=1)
    whole = make(recipe, **options)
    aekit.Trainer(whole, train, val, config(tmp_path, "whole")).fit()

    crashed = make(recipe, **options)
    with pytest.raises(Crash):
        aekit.Trainer(
            crashed, train, val, config(tmp_path, "crashed"), callbacks=[crash_after(2)]
        ).fit()
    resumed = make(recipe, seed=123, **options)  # different init: everything must come from disk
    result = aekit.Trainer(resumed, train, val, config(tmp_path, "crashed")).fit(resume=True)

    assert result.epochs == 4 and result.steps == 4 * math.ceil(96 / 16)
    assert_same(weights(whole), weights(resumed))
    for name in (ckpt.WEIGHTS, ckpt.LAST):
        assert_same(
            ckpt.read_weights(tmp_path / "whole" / name),
            ckpt.read_weights(tmp_path / "crashed" / name),
        )
    records = [json.loads(line) for line in (tmp_path / "crashed" / ckpt.METRICS).open()]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]


def test_a_crash_mid_epoch_resumes_from_the_step_checkpoint(tmp_path):
    # An autoencoder has no sampling noise, so the resumed run must match exactly.
    train, val = data(), data(32, seed=1)
    every = {"epochs": 2, "checkpoint_every": 4, "log_every": 2}
    whole = make("ae")
    aekit.Trainer(whole, train, val, config(tmp_path, "whole", **every)).fit()

    crashed = make("ae")
    calls = {"n": 0}

    def crash_at_step_9(module, inputs, output):
        calls["n"] += module.training
        if calls["n"] == 9:  # epoch 1 has 6 steps: this is step 3 of epoch 2
            raise Crash

    crashed.decoder.register_forward_hook(crash_at_step_9)
    with pytest.raises(Crash):
        aekit.Trainer(crashed, train, val, config(tmp_path, "crashed", **every)).fit()
    saved, _ = ckpt.load_checkpoint(
        tmp_path / "crashed" / ckpt.LAST, make("ae"), torch.optim.Adam(make("ae").parameters())
    )
    assert saved["step"] == 8 and saved["epoch"] == 1
    resumed = make("ae", seed=5)
    result = aekit.Trainer(resumed, train, val, config(tmp_path, "crashed", **every)).fit(
        resume=True
    )
    assert result.steps == 12
    assert_same(weights(whole), weights(resumed))
    steps = [json.loads(line)["step"] for line in (tmp_path / "crashed" / "steps.jsonl").open()]
    assert steps == [2, 4, 6, 8, 10, 12]


def test_same_seed_same_run_and_other_seed_other_run():
    runs = []
    for seed in (0, 0, 1):
        model = make(seed=seed)
        aekit.Trainer(model, data(), None, config(epochs=2, seed=seed)).fit()
        runs.append(weights(model))
    assert_same(runs[0], runs[1])
    assert any(not torch.equal(runs[0][k], runs[2][k]) for k in runs[0])


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    model = make()
    trainer = aekit.Trainer(model, data(), data(32, 1), config(tmp_path, epochs=5))

    def poison(module, args, out):
        return out * float("nan") if trainer.state.step >= 14 else out  # epoch 3 of 6-step epochs

    model.decoder.register_forward_hook(poison)
    with pytest.raises(
        aekit.TrainingDiverged, match=r"non-finite loss at step 14 \(epoch 3\).*epoch 2"
    ):
        trainer.fit()
    run = tmp_path / "run"
    saved = ckpt.read_weights(run / ckpt.LAST)
    assert all(torch.isfinite(v).all() for v in saved.values())
    last = [json.loads(line) for line in (run / ckpt.METRICS).open()][-1]
    assert last["epoch"] == 2
    assert aekit.load(run).encode(torch.rand(2, 1, 8, 8)).isfinite().all()


def test_early_stopping_and_best_weights(tmp_path):
    val_losses = iter([3.0, 2.0, 2.5, 2.6, 1.0])
    snapshots = []
    model = make()
    result = aekit.Trainer(
        model,
        data(),
        data(32, 1),
        config(tmp_path, epochs=5, patience=2),
        callbacks=[lambda t, r: snapshots.append(weights(t.model))],
        evaluator=lambda *a, **k: {"loss": next(val_losses)},
    ).fit()
    assert result.stopped_early and result.epochs == 4
    assert result.best_epoch == 2 and result.best_val_loss == 2.0
    assert_same(weights(model), snapshots[1])  # the best weights are restored ...
    assert_same(ckpt.read_weights(tmp_path / "run" / ckpt.WEIGHTS), snapshots[1])  # ... and saved
    last = ckpt.read_weights(tmp_path / "run" / ckpt.LAST)
    assert_same(
        {k[len("model/") :]: v for k, v in last.items() if k.startswith("model/")}, snapshots[3]
    )  # ... while the checkpoint holds the last epoch


def test_step_level_schedules_follow_the_global_step():
    model = make(kl_warmup_steps=20)
    result = aekit.Trainer(model, data(), data(32, 1), config(epochs=3, batch_size=16)).fit()
    for record in result.history:  # 6 steps per epoch
        steps = range(record["step"] - 6, record["step"])
        expected = sum(min(1.0, s / 20) for s in steps) / 6
        assert record["train"]["kl_weight"] == pytest.approx(expected)
        assert record["val"]["kl_weight"] == 1.0  # validation compares the final objective


def test_learning_rate_schedules():
    cfg = aekit.TrainConfig(lr=1.0, warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
    assert learning_rate(0, 110, cfg) == pytest.approx(0.1)
    assert learning_rate(9, 110, cfg) == pytest.approx(1.0)
    assert learning_rate(10, 110, cfg) == pytest.approx(1.0)
    assert learning_rate(60, 110, cfg) == pytest.approx(0.55)
    assert learning_rate(110, 110, cfg) == pytest.approx(0.1)
    constant = aekit.TrainConfig(lr=0.5)
    assert {learning_rate(s, 100, constant) for s in range(100)} == {0.5}


def test_run_directory_contents_and_protection(tmp_path):
    model = make()
    aekit.Trainer(model, data(), data(32, 1), config(tmp_path, epochs=2)).fit()
    run = tmp_path / "run"
    saved = json.loads((run / ckpt.CONFIG).read_text())
    assert saved["model"] == model.config.to_dict() and saved["train"]["epochs"] == 2
    records = [json.loads(line) for line in (run / ckpt.METRICS).open()]
    assert {"epoch", "step", "lr", "train", "val", "examples_per_second"} <= records[0].keys()
    assert {"loss", "nll", "kl", "elbo"} <= records[0]["val"].keys()
    before = (run / ckpt.WEIGHTS).read_bytes()
    with pytest.raises(aekit.AekitError, match="already holds a run"):
        aekit.Trainer(make(), data(), None, config(tmp_path, epochs=2)).fit()
    assert (run / ckpt.WEIGHTS).read_bytes() == before
    with pytest.raises(aekit.AekitError, match="no checkpoint to resume"):
        aekit.Trainer(make(), data(), None, config(tmp_path, "empty")).fit(resume=True)


def test_out_never_reuses_a_folder_that_holds_something_else(tmp_path):
    def fit(name, **overrides):
        aekit.Trainer(make(), data(), None, config(tmp_path, name, epochs=1, **overrides)).fit()

    # Files that are not a run: refused, even with --overwrite, and left as they were.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    for overwrite in (False, True):
        with pytest.raises(aekit.AekitError, match="not an aekit run"):
            fit("mine", overwrite=overwrite)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "precious"
    # A finished run whose checkpoints were removed keeps its weights.
    fit("done")
    run = tmp_path / "done"
    (run / ckpt.LAST).unlink()
    before = (run / ckpt.WEIGHTS).read_bytes()
    with pytest.raises(aekit.AekitError, match="holds a finished run"):
        fit("done")
    assert (run / ckpt.WEIGHTS).read_bytes() == before
    # Another model's unfinished run is not this one's to start over.
    (tmp_path / "other").mkdir()
    ckpt.write_config(tmp_path / "other", {"kind": "autoencoder", "model": {"recipe": "ae"}})
    with pytest.raises(aekit.AekitError, match="holds another run"):
        fit("other")
    # An unfinished run of the same model and data (a first epoch cut short) starts over...
    crashed = make()
    crashed.decoder.register_forward_hook(CrashAtStep(3))
    with pytest.raises(Crash):
        aekit.Trainer(crashed, data(), None, config(tmp_path, "cut", epochs=1)).fit()
    fit("cut", lr=2e-3)
    assert len((tmp_path / "cut" / ckpt.METRICS).read_text().splitlines()) == 1
    # ... and --overwrite replaces a run explicitly, with nothing of the old one left.
    (run / ckpt.EVAL).write_text("{}")
    fit("done", overwrite=True)
    assert (run / ckpt.LAST).is_file() and not (run / ckpt.EVAL).exists()


def test_bad_training_data_is_refused():
    with pytest.raises(aekit.AekitError, match="expects"):
        aekit.Trainer(make(), torch.rand(10, 1, 9, 9))
    with pytest.raises(aekit.AekitError, match="needs values in"):
        aekit.Trainer(make(), torch.rand(10, 1, 8, 8) * 3)
    with pytest.raises(aekit.AekitError, match="empty"):
        aekit.Trainer(make(), torch.rand(0, 1, 8, 8))
    with pytest.raises(aekit.AekitError, match="NaN"):
        aekit.Trainer(make(), torch.full((4, 1, 8, 8), float("nan")))


def test_progress_bar_can_be_turned_off(capsys):
    aekit.Trainer(make(), data(), None, config(epochs=1, progress=False)).fit()
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_optional_tensorboard_and_missing_devices_are_clear_errors(tmp_path):
    if importlib.util.find_spec("tensorboard") is None:
        with pytest.raises(aekit.AekitError, match=r"pip install 'aekit\[tensorboard\]'"):
            aekit.Trainer(make(), data(), None, config(tmp_path, tensorboard=True)).fit()
    if not torch.cuda.is_available():
        with pytest.raises(aekit.AekitError, match="no CUDA device"):
            aekit.Trainer(make(), data(), None, config(device="cuda"))
    with pytest.raises(aekit.AekitError, match="unknown device"):
        aekit.Trainer(make(), data(), None, config(device="tpu9"))


class CrashAtStep:
    """A forward hook that raises at training step `n` (counting from 1), mid-epoch."""

    def __init__(self, n):
        self.n, self.calls = n, 0

    def __call__(self, module, inputs, output):
        self.calls += module.training
        if self.calls == self.n:
            raise Crash


@pytest.mark.parametrize("recipe", ["vae", "dae", "iwae"])
def test_a_stochastic_model_resumed_mid_epoch_matches_the_uninterrupted_run(tmp_path, recipe):
    # Reparameterisation noise, input corruption and binarisation: the checkpoint carries the
    # random state of its step, so the rest of the epoch draws what the whole run drew.
    train, val = data(), data(32, seed=1)
    every = {"epochs": 2, "checkpoint_every": 4}
    whole = make(recipe)
    aekit.Trainer(whole, train, val, config(tmp_path, "whole", **every)).fit()
    crashed = make(recipe)
    crashed.decoder.register_forward_hook(CrashAtStep(6))  # resumes at step 4 of epoch 1
    with pytest.raises(Crash):
        aekit.Trainer(crashed, train, val, config(tmp_path, "crashed", **every)).fit()
    resumed = make(recipe, seed=9)
    aekit.Trainer(resumed, train, val, config(tmp_path, "crashed", **every)).fit(resume=True)
    assert_same(weights(whole), weights(resumed))
    # The epoch's training means include the steps before the crash, as in the whole run.
    metrics = [
        [json.loads(line)["train"] for line in (tmp_path / run / ckpt.METRICS).open()]
        for run in ("whole", "crashed")
    ]
    assert metrics[0] == metrics[1]


def test_the_batch_size_may_change_at_an_epoch_end_but_not_mid_epoch(tmp_path):
    train, val = data(), data(32, seed=1)
    model = make("ae")
    aekit.Trainer(model, train, val, config(tmp_path, epochs=1)).fit()
    # 16 -> 32 and then 32 -> 8: each resumed epoch trains all of its steps.
    for epochs, batch_size in ((2, 32), (3, 8)):
        result = aekit.Trainer(
            make("ae"), train, val, config(tmp_path, epochs=epochs, batch_size=batch_size)
        ).fit(resume=True)
        assert result.history[-1]["train"], "the resumed epoch trained no step"
    assert result.steps == 6 + 3 + 12
    # Mid-epoch the rest of the epoch cannot be batched otherwise: refused, saying why.
    crashed = make("ae")
    crashed.decoder.register_forward_hook(CrashAtStep(5))
    every = {"epochs": 2, "checkpoint_every": 2}
    with pytest.raises(Crash):
        aekit.Trainer(crashed, train, val, config(tmp_path, "mid", **every)).fit()
    with pytest.raises(aekit.AekitError, match="resume with --batch-size 16"):
        aekit.Trainer(make("ae"), train, val, config(tmp_path, "mid", **every, batch_size=8)).fit(
            resume=True
        )
    result = aekit.Trainer(make("ae"), train, val, config(tmp_path, "mid", **every)).fit(
        resume=True
    )
    assert result.steps == 12


def test_a_nan_between_finiteness_checks_never_reaches_a_checkpoint(tmp_path):
    # Off the CPU the loss is checked every 25 steps; a mid-epoch checkpoint must check what
    # happened since, or a NaN would replace the last good checkpoint.
    model = make("ae")
    trainer = aekit.Trainer(
        model, data(), data(32, 1), config(tmp_path, epochs=3, checkpoint_every=4)
    )
    trainer.check_every = 1000

    def poison(module, args, out):
        return out * float("nan") if trainer.state.step == 9 else out  # step 10, epoch 2

    model.decoder.register_forward_hook(poison)
    with pytest.raises(aekit.TrainingDiverged, match=r"step 8 \(epoch 1 done\) is kept"):
        trainer.fit()
    saved, _ = ckpt.load_checkpoint(
        tmp_path / "run" / ckpt.LAST, make("ae"), torch.optim.Adam(make("ae").parameters())
    )
    assert saved["step"] == 8
    good = ckpt.read_weights(tmp_path / "run" / ckpt.LAST)
    assert all(torch.isfinite(v).all() for v in good.values())


def test_ctrl_c_says_which_checkpoint_is_kept(tmp_path):
    def interrupt_at(step):
        def hook(module, args, out):
            if trainer.state.step == step:
                raise KeyboardInterrupt
            return out

        return hook

    model = make("ae")
    trainer = aekit.Trainer(model, data(), None, config(tmp_path, epochs=2))
    model.decoder.register_forward_hook(interrupt_at(2))
    with pytest.raises(aekit.TrainingInterrupted, match="no checkpoint was written yet"):
        trainer.fit()
    model = make("ae")
    trainer = aekit.Trainer(model, data(), None, config(tmp_path, "two", epochs=2))
    model.decoder.register_forward_hook(interrupt_at(8))
    with pytest.raises(aekit.TrainingInterrupted, match=r"step 6 \(epoch 1 done\) is kept"):
        trainer.fit()
