"""The one training loop every family shares, over the interface in `train/protocol.py`
(any `Trainable` model, any `DataSource`).

Per epoch: seeded shuffling (and dynamic binarisation), optimisation steps with the global
step driving the model's schedules, validation at the end of those schedules, metrics
appended to `metrics.jsonl`, best weights and a resumable checkpoint written atomically.
Each epoch's randomness is derived from (seed, epoch), and a checkpoint written mid-epoch
carries the random state of the step it was written at, so a run resumed from any checkpoint
continues exactly as an uninterrupted one would.

Launched by `torchrun`, the same loop trains data-parallel: each rank trains on its slice of
every global batch, gradients and running statistics are summed over ranks, so the run is the
single process's (`aekit/distributed.py` says how); validation is split alike, and rank 0
alone writes.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from aekit import distributed
from aekit.data.tensor_data import TensorData
from aekit.errors import AekitError, TrainingDiverged, TrainingInterrupted
from aekit.eval.metrics import evaluate
from aekit.io import append_jsonl, atomic_write_jsonl, read_jsonl
from aekit.precision import training_precision
from aekit.schedules import scheduled_lr
from aekit.train import checkpoint as ckpt
from aekit.train.config import TrainConfig
from aekit.train.protocol import Trainable
from aekit.train.rundir import claim_run_dir, remove_temporaries, writer_lock

log = logging.getLogger(__name__)

STEPS = "steps.jsonl"

Callback = Callable[["Trainer", dict[str, Any]], None]
Evaluator = Callable[..., dict[str, Any]]
"""Validation metrics of a model on data (keyword arguments batch_size and seed); the
record must hold the `loss` that selects the best epoch."""


def derive_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([p & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


def fastest_adam(cls: type, params: Any, **options: Any) -> torch.optim.Optimizer:
    """Adam or AdamW with torch's fused kernel where this torch and device have one (CPU since
    torch 2.4, CUDA, MPS), else torch's default (the foreach or per-parameter loop).

    The fused step is one pass over all parameters instead of a loop of small ops: in the
    textbook VAE loop on Fashion-MNIST it took 6-9 % off a step on 2 shared CPU cores (MLP
    784-512-256-16: 14.6 -> 13.2 ms at 1 thread, 10.1 -> 9.3 ms at 2; conv body: 50.5 ->
    47.7 ms at 1 thread, no gain at 2: 30.3 -> 31.1 ms; `benchmarks/optimizer.py`). The
    update is Adam's, equal to the unfused one up to float rounding."""
    params = list(params)
    try:
        return cls(params, fused=True, **options)
    except (RuntimeError, TypeError, ValueError):  # an older torch, or a device without it
        return cls(params, **options)


def resolve_device(name: str) -> torch.device:
    """The device named (`auto`: CUDA when available); a rank launched by torchrun on CUDA
    gets its node-local GPU."""
    device = _named_device(name)
    if device.type == "cuda" and device.index is None and distributed.launched():
        return distributed.local_cuda_device()
    return device


def _named_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise AekitError(f"unknown device {name!r}; use cpu, cuda, cuda:N, mps or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AekitError("device cuda was asked for but no CUDA device is available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise AekitError("device mps was asked for but MPS is not available")
    return device


def learning_rate(step: int, total_steps: int, config: TrainConfig) -> float:
    return scheduled_lr(
        step, total_steps, config.lr, config.warmup_steps, config.schedule, config.min_lr_ratio
    )


def as_data(data: Any, name: str) -> Any:
    """Arrays become TensorData; anything that already batches itself (TensorData, an
    activation store's view, a model stream) is used as it is."""
    if data is None or hasattr(data, "batches"):
        return data
    return TensorData(data, name=name)


@dataclass
class TrainerState:
    epoch: int = 0
    step: int = 0
    best_val_loss: float | None = None
    best_epoch: int | None = None
    epochs_without_improvement: int = 0
    # Where a mid-epoch checkpoint stands in its epoch, and the epoch's running sums of the
    # training terms, so it resumes to the same weights and the same metrics. None in
    # checkpoints written before 0.3 (the position is then derived from the step).
    epoch_step: int | None = 0
    batch_size: int | None = None
    epoch_sums: dict[str, float] = field(default_factory=dict)
    epoch_seen: int = 0


@dataclass
class FitResult:
    epochs: int
    steps: int
    best_epoch: int | None
    best_val_loss: float | None
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)
    run_dir: Path | None = None


class Trainer:
    def __init__(
        self,
        model: Trainable,
        train_data: TensorData | torch.Tensor | np.ndarray,
        val_data: TensorData | torch.Tensor | np.ndarray | None = None,
        config: TrainConfig | None = None,
        *,
        callbacks: Sequence[Callback] = (),
        extra_config: dict[str, Any] | None = None,
        evaluator: Evaluator = evaluate,
    ) -> None:
        self.config = config or TrainConfig()
        self.model = model
        self.train_data = as_data(train_data, "training data")
        self.val_data = as_data(val_data, "validation data")
        if self.train_data is None or len(self.train_data) == 0:
            raise AekitError("the training data is empty")
        for data in (self.train_data, self.val_data):
            if data is not None and len(data) > 0:
                model.check_data(data)
        self.callbacks = list(callbacks)
        self.evaluator = evaluator
        self.extra_config = extra_config or {}
        self.run_dir = Path(self.config.out) if self.config.out else None
        self.device = resolve_device(self.config.device)
        distributed.start(self.device)
        self.writes = distributed.is_writer()
        """Only rank 0 writes the run directory; every rank reads it to resume."""
        self.check_every = 1 if self.device.type == "cpu" else 25
        """Steps between finiteness checks of the loss: each check waits for the device, so
        off the CPU it is sparse (a checkpoint checks everything since the last one)."""
        self.state = TrainerState()
        self.best_state: dict[str, torch.Tensor] | None = None
        self.history: list[dict[str, Any]] = []
        self.random_state: dict[str, torch.Tensor] = {}
        self.checkpointed: tuple[int, int] | None = None
        """(epoch, step) of the latest checkpoint on disk: what a crash would resume from."""
        self.auxiliary = model.auxiliary_steps()
        """Parts stepped by optimisers of their own after each step (a discriminator)."""
        self.auxiliary_optimizers: dict[str, torch.optim.Optimizer] = {}
        self._compiled: Callable[[Any, int], Any] | None = None
        self.placed = False
        """Whether ranks train disjoint members of a group on whole batches (place_sites)."""

    # ---------------------------------------------------------------- run directory
    def _config_sections(self) -> dict[str, Any]:
        spec = getattr(self.train_data, "spec", None)
        return {
            "kind": getattr(self.model, "run_kind", "autoencoder"),
            "model": self.model.config.to_dict(),
            "train": self.config.to_dict(),
            "data": spec.to_dict() if spec is not None else None,
            **self.extra_config,
        }

    def _start_run_dir(self) -> None:
        assert self.run_dir is not None
        claim_run_dir(self.run_dir, self._config_sections(), overwrite=self.config.overwrite)
        # Without a checkpoint nothing here can be resumed: a first epoch cut short starts over.
        (self.run_dir / ckpt.METRICS).unlink(missing_ok=True)
        (self.run_dir / STEPS).unlink(missing_ok=True)
        ckpt.write_config(self.run_dir, self._config_sections())

    def _resume(self, optimizer: torch.optim.Optimizer) -> None:
        if self.run_dir is None:
            raise AekitError("resuming needs the run directory (TrainConfig.out)")
        path = self.run_dir / ckpt.LAST
        if not path.is_file():
            raise AekitError(f"{self.run_dir} has no checkpoint to resume ({ckpt.LAST} is missing)")
        from aekit.compress.versions import keep_version

        # The weights (and prior) that compressed files name.
        coded = getattr(getattr(self.model, "bottleneck", None), "has_rate", False)
        distributed.on_writer(lambda: keep_version(self.run_dir, entropy_coded=coded))
        saved, self.random_state = ckpt.load_checkpoint(
            path, self.model, optimizer, self.auxiliary_optimizers
        )
        known = {f.name for f in dataclasses.fields(TrainerState)}
        if not isinstance(saved, dict) or not {"epoch", "step"} <= set(saved) <= known:
            raise AekitError(f"{path}: the trainer state in its metadata is not aekit's")
        saved.setdefault("epoch_step", None)
        self.state = TrainerState(**saved)
        if not self.writes:  # the epoch's sums so far are the global ones: rank 0 holds them
            self.state.epoch_sums, self.state.epoch_seen = {}, 0
        self.checkpointed = (self.state.epoch, self.state.step)
        if (self.run_dir / ckpt.WEIGHTS).is_file() and self.state.best_epoch is not None:
            path = self.run_dir / ckpt.WEIGHTS
            self.best_state = ckpt.read_model_weights(path, self.model)
            ckpt.check_state(self.model, self.best_state, path)
        # Epochs after the checkpoint (a crash between metrics and checkpoint) are redone.
        self.history = [
            r
            for r in read_jsonl(self.run_dir / ckpt.METRICS, ckpt.METRICS_FIELDS)
            if r["epoch"] <= self.state.epoch
        ]
        distributed.on_writer(self._truncate_logs)
        log.info(
            "resuming %s after epoch %d (step %d)", self.run_dir, self.state.epoch, self.state.step
        )

    def _truncate_logs(self) -> None:
        """The records after the checkpoint go: the resumed run writes them again."""
        assert self.run_dir is not None
        atomic_write_jsonl(self.run_dir / ckpt.METRICS, self.history)
        if (self.run_dir / STEPS).is_file():
            kept = [
                r
                for r in read_jsonl(self.run_dir / STEPS, ckpt.STEPS_FIELDS)
                if r["step"] <= self.state.step
            ]
            atomic_write_jsonl(self.run_dir / STEPS, kept)
        ckpt.write_config(self.run_dir, self._config_sections())

    def _model_parameters(self) -> list[torch.nn.Parameter]:
        """The parameters the model's optimiser steps: all but its auxiliary parts'."""
        own = {id(p) for step in self.auxiliary for p in step.parameters}
        return [p for p in self.model.parameters() if id(p) not in own]

    def _make_optimizer(self) -> torch.optim.Optimizer:
        cls = torch.optim.AdamW if self.config.optimizer == "adamw" else torch.optim.Adam
        self.auxiliary_optimizers = {
            step.name: step.make_optimizer(step.parameters) for step in self.auxiliary
        }
        return fastest_adam(
            cls, self._model_parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay
        )

    # ---------------------------------------------------------------- the loop
    def fit(self, resume: bool = False) -> FitResult:
        with training_precision(self.config.precision, self.device):
            if self.run_dir is None or not self.writes:
                return self._fit(resume)
            with writer_lock(self.run_dir):
                remove_temporaries(self.run_dir)
                return self._fit(resume)

    def steps_per_epoch(self, examples: int) -> int:
        """Global batches per epoch. On ranks, a last batch of fewer rows than ranks is left
        out (some rank would have no row of it); every rank takes the same steps."""
        steps = math.ceil(examples / self.config.batch_size)
        if 0 < examples % self.config.batch_size < distributed.world_size():
            steps -= 1
        return steps

    def _fit(self, resume: bool) -> FitResult:
        cfg = self.config
        model = self.model.to(self.device)
        train = self.train_data.to(self.device)
        val = (
            self.val_data.to(self.device)
            if self.val_data is not None and len(self.val_data)
            else None
        )
        steps_per_epoch = self.steps_per_epoch(len(train))
        ranks = distributed.world_size()
        if cfg.batch_size < ranks or steps_per_epoch == 0:
            raise AekitError(
                f"{ranks} ranks need batches of at least {ranks} rows and as many training "
                f"examples (batch size {cfg.batch_size}, {len(train)} examples)"
            )
        self.placed = cfg.place_sites and ranks > 1
        if self.placed:
            if not hasattr(model, "place_on_ranks"):
                raise AekitError("--place-sites places the members of a group (--site A,B,...)")
            model.place_on_ranks()
        optimizer = self._make_optimizer()
        model.see_training_data(train)
        if resume:
            self._resume(optimizer)
        elif self.run_dir is not None:
            distributed.on_writer(self._start_run_dir)

        done = self._position_in_epoch(steps_per_epoch)
        # Steps already taken (at whatever batch size) plus the steps still to come.
        total_steps = (
            self.state.step - done + max(0, cfg.epochs - self.state.epoch) * steps_per_epoch
        )
        schedule_end = model.schedule_end()
        if schedule_end > total_steps:
            log.warning(
                "the %s schedule ends at step %d but this run has %d steps: it will stop at "
                "%.0f%% of its final value",
                model.config.recipe,
                schedule_end,
                total_steps,
                100 * total_steps / schedule_end,
            )
        if self.state.epoch >= cfg.epochs:
            log.info("already trained %d epochs; raise --epochs to train longer", self.state.epoch)
        writer = self._tensorboard()
        stopped_early = False
        try:
            for epoch in range(self.state.epoch + 1, cfg.epochs + 1):
                record = self._train_epoch(
                    epoch, train, optimizer, steps_per_epoch, total_steps, writer, done
                )
                done = 0
                self._calibrate(epoch, train)
                if val is not None:
                    # Split across the ranks; rank 0's record decides for all.
                    with distributed.evaluating():
                        record["val"] = self.evaluator(
                            model,
                            val,
                            batch_size=cfg.eval_batch_size,
                            seed=derive_seed(cfg.seed, epoch, 2),
                        )
                    record["val"] = distributed.broadcast(record["val"])
                stop = self._end_epoch(epoch, record, optimizer, writer)
                if stop:
                    stopped_early = True
                    log.info(
                        "early stopping: no better validation loss for %d epochs", cfg.patience
                    )
                    break
        except KeyboardInterrupt:
            raise TrainingInterrupted(self._kept()) from None
        finally:
            if writer is not None:
                writer.close()
        if self.best_state is not None:
            model.load_state_dict(self.best_state)
        return FitResult(
            epochs=self.state.epoch,
            steps=self.state.step,
            best_epoch=self.state.best_epoch,
            best_val_loss=self.state.best_val_loss,
            stopped_early=stopped_early,
            history=self.history,
            run_dir=self.run_dir,
        )

    def _train_epoch(
        self,
        epoch: int,
        train: TensorData,
        optimizer: torch.optim.Optimizer,
        steps_per_epoch: int,
        total_steps: int,
        writer: Any,
        done: int,
    ) -> dict[str, Any]:
        """One epoch, or the rest of one: `done` steps of it were trained before the
        checkpoint this run resumed from."""
        cfg, model, state = self.config, self.model, self.state
        model.train()
        seed = derive_seed(cfg.seed, epoch, 1)
        torch.manual_seed(seed)  # reparameterisation noise and input corruption
        generator = torch.Generator().manual_seed(seed)  # shuffling and binarisation
        sums: dict[str, Any] = {k: torch.tensor(v) for k, v in state.epoch_sums.items()}
        seen = state.epoch_seen if done else 0
        lr = learning_rate(self.state.step, total_steps, cfg)
        bar = tqdm(
            total=steps_per_epoch,
            desc=f"epoch {epoch}/{cfg.epochs}",
            unit="step",
            leave=False,
            disable=not (cfg.progress and self.writes),
            dynamic_ncols=True,
        )
        # A checkpoint written mid-epoch resumes here: the epoch's batch order (and the
        # binarisation) is a function of (seed, epoch), so drawing the batches already
        # trained on and dropping them continues it; the noise of the steps to come is the
        # random state saved with the checkpoint.
        bar.update(done)
        batches = itertools.islice(
            train.batches(cfg.batch_size, shuffle=True, generator=generator), steps_per_epoch
        )
        if done:
            for _ in itertools.islice(batches, done):
                pass
            self._restore_random_state()
        start = time.perf_counter()
        parameters = self._model_parameters()
        with bar:
            for i, batch in enumerate(batches, start=done):
                lr = learning_rate(self.state.step, total_steps, cfg)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                # Placed sites: each rank its own members on whole batches, nothing sliced.
                sharding = nullcontext() if self.placed else distributed.sharded(batch.x.shape[0])
                with sharding as shard:
                    if shard is not None:
                        batch = batch.rows(shard.start, shard.stop)
                    out = self.forward(batch, self.state.step)
                    optimizer.zero_grad(set_to_none=True)
                    model.backward(out)
                    weight = 1.0 if self.placed else distributed.fraction()
                    loss = distributed.reduce_gradients(parameters, out.loss, weight)
                    if (i + 1) % self.check_every == 0 and not torch.isfinite(loss):
                        self._diverged(epoch, out.terms)
                    if cfg.grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(parameters, cfg.grad_clip)
                    optimizer.step()
                    model.after_step()
                    terms = {**out.terms, **self._auxiliary_step(out)}
                self.state.step += 1
                n = batch.x.shape[0]
                seen += n
                for name, value in terms.items():
                    sums[name] = sums.get(name, 0.0) + value * n
                state.epoch_step = i + 1
                if bar.disable is False and (i % 10 == 0 or i == steps_per_epoch - 1):
                    rate = seen / max(time.perf_counter() - start, 1e-9)
                    bar.set_postfix(loss=f"{loss.item():.4g}", ex_s=f"{rate:.0f}")
                bar.update(1)
                if writer is not None and self.state.step % 50 == 0:
                    writer.add_scalar("train_step/loss", loss.item(), self.state.step)
                self._every_steps(epoch, terms, n, optimizer, sums, seen)
        seconds = time.perf_counter() - start
        state.epoch_step, state.epoch_sums, state.epoch_seen = 0, {}, 0
        sums, seen = self._global_sums(sums, seen)
        means = {name: float(total) / seen for name, total in sums.items()} if seen else {}
        if not all(math.isfinite(v) for v in means.values()):
            self._diverged(epoch, means)
        return {
            "epoch": epoch,
            "step": self.state.step,
            "lr": lr,
            "train": means,
            "train_seconds": seconds,
            "examples_per_second": seen / max(seconds, 1e-9),
        }

    @property
    def forward(self) -> Callable[[Any, int], Any]:
        """The model's training forward, compiled once with `compile`."""
        if not self.config.compile:
            return self.model.step_forward
        if self._compiled is None:
            import torch._inductor.config

            # Compiled kernels would draw their own random numbers: the eager generator keeps
            # a compiled run's noise (and so its weights) the uncompiled run's.
            torch._inductor.config.fallback_random = True
            self._compiled = torch.compile(self.model.step_forward)
        return self._compiled

    def _global_sums(self, sums: dict[str, Any], seen: int) -> tuple[dict[str, Any], int]:
        """The epoch's running sums of the terms (and rows seen) over every rank. With placed
        sites each rank has its members' terms of whole batches: the rows are not summed."""
        if distributed.world_size() == 1:
            return sums, seen
        names = sorted(sums)
        if self.placed:
            names = sorted(set().union(*distributed.all_gather_object(names)))
        total = distributed.sum_numbers([float(sums.get(k, 0.0)) for k in names] + [float(seen)])
        rows = seen if self.placed else int(total[-1])
        return dict(zip(names, total[:-1], strict=True)), rows

    def _auxiliary_step(self, out: Any) -> dict[str, torch.Tensor]:
        """One step of each auxiliary part on the model's output of this step (its codes,
        detached by the part's loss); their terms join the model's."""
        terms: dict[str, torch.Tensor] = {}
        for step in self.auxiliary:
            optimizer = self.auxiliary_optimizers[step.name]
            aux = step.loss(out)
            optimizer.zero_grad(set_to_none=True)
            aux.loss.backward()
            distributed.reduce_gradients(step.parameters, aux.loss, distributed.fraction())
            optimizer.step()
            terms.update(aux.terms)
        return terms

    def _calibrate(self, epoch: int, train: Any) -> None:
        """Statistics that the model fixes from the epoch's final weights, before they are
        validated and saved (BatchTopK's inference threshold), from shuffled training batches
        drawn by (seed, epoch), so a resumed run calibrates alike."""
        generator = torch.Generator().manual_seed(derive_seed(self.config.seed, epoch, 3))
        self.model.calibrate(
            train.batches(self.config.batch_size, shuffle=True, generator=generator)
        )

    def _every_steps(
        self,
        epoch: int,
        terms: dict[str, torch.Tensor],
        n: int,
        optimizer: torch.optim.Optimizer,
        sums: dict[str, Any],
        seen: int,
    ) -> None:
        cfg, state = self.config, self.state
        if self.run_dir is None:
            return
        if cfg.log_every and state.step % cfg.log_every == 0:
            if distributed.world_size() == 1:
                values = {name: float(value) for name, value in terms.items()}
            else:  # the global batch's means: each rank's weighted by its rows
                totals, rows = self._global_sums({k: v * n for k, v in terms.items()}, n)
                values = {name: float(total) / rows for name, total in totals.items()}
            if self.writes:
                append_jsonl(self.run_dir / STEPS, {"step": state.step, **values})
        if cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0:
            # Off the CPU finiteness is checked only every few steps: a NaN since then must
            # not replace the last good checkpoint. The epoch's sums hold every step's terms.
            epoch_sums, state.epoch_seen = self._global_sums(sums, seen)
            state.epoch_sums = {name: float(total) for name, total in epoch_sums.items()}
            if not all(math.isfinite(v) for v in state.epoch_sums.values()) or not all(
                bool(torch.isfinite(p).all()) for p in self.model.parameters()
            ):
                self._diverged(epoch, terms)
            self._save_checkpoint(optimizer)

    def _save_checkpoint(self, optimizer: torch.optim.Optimizer) -> None:
        assert self.run_dir is not None
        if not self.writes:
            self.checkpointed = (self.state.epoch, self.state.step)
            return
        self.state.batch_size = self.config.batch_size
        ckpt.save_checkpoint(
            self.run_dir / ckpt.LAST,
            self.model,
            optimizer,
            dataclasses.asdict(self.state),
            random_state=self._random_state(),
            auxiliary=self.auxiliary_optimizers,
        )
        self.checkpointed = (self.state.epoch, self.state.step)

    def _random_state(self) -> dict[str, torch.Tensor]:
        state = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def _restore_random_state(self) -> None:
        if "torch" not in self.random_state:  # a checkpoint of aekit < 0.3
            log.warning(
                "this checkpoint predates saved random states: the rest of epoch %d draws "
                "other noise than an uninterrupted run",
                self.state.epoch + 1,
            )
            return
        torch.set_rng_state(self.random_state["torch"])
        if self.device.type == "cuda" and "cuda" in self.random_state:
            torch.cuda.set_rng_state(self.random_state["cuda"], self.device)

    def _position_in_epoch(self, steps_per_epoch: int) -> int:
        """Steps of the unfinished epoch that the checkpoint already holds (0 at an epoch's
        end), refusing a batch size that cannot continue it."""
        state = self.state
        if state.epoch_step is None:  # aekit < 0.3: the batch size cannot have changed
            return min(max(0, state.step - state.epoch * steps_per_epoch), steps_per_epoch)
        if state.epoch_step and state.batch_size != self.config.batch_size:
            raise AekitError(
                f"the checkpoint was written {state.epoch_step} steps into epoch "
                f"{state.epoch + 1} with batch size {state.batch_size}: resume with "
                f"--batch-size {state.batch_size} (the rest of an epoch cannot be cut into "
                "batches of another size and stay the same run); the size may change at an "
                "epoch's end"
            )
        return state.epoch_step

    def _kept(self) -> str:
        if self.run_dir is None:
            return "nothing was saved (no run directory)"
        if self.checkpointed is None:
            return f"no checkpoint was written yet, so {self.run_dir} cannot be resumed"
        epoch, step = self.checkpointed
        return (
            f"the checkpoint of step {step} (epoch {epoch} done) is kept: "
            f"aekit train --resume {self.run_dir}"
        )

    def _diverged(self, epoch: int, terms: dict[str, Any]) -> None:
        shown = ", ".join(f"{k}={float(v):.4g}" for k, v in terms.items())
        kept = f"; {self._kept()}" if self.run_dir is not None else ""
        raise TrainingDiverged(
            f"non-finite loss at step {self.state.step} (epoch {epoch}): {shown}{kept}; "
            "try a lower --lr or --grad-clip"
        )

    def _end_epoch(
        self, epoch: int, record: dict[str, Any], optimizer: torch.optim.Optimizer, writer: Any
    ) -> bool:
        cfg, state = self.config, self.state
        state.epoch = epoch
        improved = False
        if "val" in record:
            val_loss = record["val"]["loss"]
            if not math.isfinite(val_loss):
                self._diverged(epoch, record["val"])
            if state.best_val_loss is None or val_loss < state.best_val_loss:
                state.best_val_loss, state.best_epoch = val_loss, epoch
                state.epochs_without_improvement = 0
                improved = True
                self.best_state = {
                    k: v.detach().to("cpu").clone() for k, v in self.model.state_dict().items()
                }
            else:
                state.epochs_without_improvement += 1
        record["best"] = improved
        self.history.append(record)
        if self.writes:
            self._log_epoch(record)
        if writer is not None:
            for split in ("train", "val"):
                for name, value in record.get(split, {}).items():
                    if isinstance(value, int | float):
                        writer.add_scalar(f"{split}/{name}", value, state.step)
        if self.run_dir is not None and self.writes:
            # Metrics first, then the checkpoint: a crash in between only repeats this epoch.
            append_jsonl(self.run_dir / ckpt.METRICS, record)
            if improved or "val" not in record:
                ckpt.save_weights(self.run_dir / ckpt.WEIGHTS, self.model)
            self._save_checkpoint(optimizer)
        for callback in self.callbacks:
            callback(self, record)
        return cfg.patience > 0 and state.epochs_without_improvement >= cfg.patience

    def _log_epoch(self, record: dict[str, Any]) -> None:
        # About ten lines per run; metrics.jsonl has every epoch.
        epoch, epochs = record["epoch"], self.config.epochs
        if epoch not in (1, epochs) and epoch % max(1, epochs // 10):
            return
        train, val = record["train"], record.get("val", {})
        parts = [f"epoch {record['epoch']}/{self.config.epochs}"]
        if "loss" in train:
            parts.append(f"train loss {train['loss']:.4g}")
        if "elbo" in val:
            parts.append(f"val elbo {val['elbo']:.4g} nats")
        elif "loss" in val:
            parts.append(f"val loss {val['loss']:.4g}")
        parts.append(f"{record['examples_per_second']:.0f} ex/s")
        log.info("  ".join(parts) + ("  *" if record["best"] else ""))

    def _tensorboard(self) -> Any:
        if not self.config.tensorboard or not self.writes:
            return None
        if self.run_dir is None:
            raise AekitError("TensorBoard logging needs a run directory (--out)")
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise AekitError(
                "TensorBoard logging needs the tensorboard package: "
                "pip install 'aekit[tensorboard]'"
            ) from None
        return SummaryWriter(str(self.run_dir / "tensorboard"))
