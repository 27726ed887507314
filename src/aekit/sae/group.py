"""Several SAEs trained on one stream of activations: other sites of the same forward pass,
or other hyper-parameters on the same site. Reading the store (or running the model) once for
all of them is what a sweep costs once instead of N times.

The group is one module for the shared trainer: its loss is the sum of the members' losses,
which share no parameters, so each member gets exactly the gradient it would get alone (Adam
is per parameter). A group run directory holds the group's checkpoint and metrics, and one
ordinary SAE run directory per member (`RUN/members/NAME`), loadable with `aekit.load`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aekit.components import SavedConfig
from aekit.data.tensor_data import Batch
from aekit.errors import AekitError
from aekit.io import atomic_write_json
from aekit.sae.config import SAEConfig
from aekit.sae.model import SAEOutput, SparseAutoencoder
from aekit.sae.train import ActivationSource, build_sae, open_source, sae_train_config, validate
from aekit.train import checkpoint as ckpt
from aekit.train.config import TrainConfig
from aekit.train.trainer import FitResult, Trainer

MEMBERS = "members"


@dataclass
class Member:
    """One SAE of a group: its name, recipe, site(s) and options (SAEConfig fields)."""

    name: str
    recipe: str = "sae-topk"
    site: str | None = None
    """The input site (default: the source's first site)."""
    target_site: str | None = None
    """A transcoder's target site."""
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class GroupConfig(SavedConfig):
    members: list[dict[str, Any]] = field(default_factory=list)
    """Each member's name, sites and resolved SAEConfig."""
    recipe: str = "sae-group"


class SiteView:
    """One member's view of a several-site source: batches of its input (and target)."""

    def __init__(self, data: Any, site: str, target: str | None) -> None:
        self.data, self.site, self.target = data, site, target
        self.name = f"{getattr(data, 'name', 'activations')}:{site}"
        self.spec = None

    def __len__(self) -> int:
        return len(self.data)

    def batches(self, batch_size: int, shuffle: bool = False, generator: Any = None) -> Any:
        for batch in self.data.batches(batch_size, shuffle=shuffle, generator=generator):
            yield pick(batch, self.site, self.target)


def pick(batch: Any, site: str, target: str | None) -> Batch:
    sites = batch.by_site
    return Batch(sites[site], None if target is None else sites[target])


class SAEGroup(nn.Module):
    def __init__(self, members: dict[str, SparseAutoencoder], sites: dict[str, tuple]) -> None:
        super().__init__()
        self.members = nn.ModuleDict(members)
        self.sites = sites
        """name -> (input site, target site or None)."""
        self.config = GroupConfig(
            [
                {"name": n, "site": s, "target_site": t, "sae": members[n].config.to_dict()}
                for n, (s, t) in sites.items()
            ]
        )

    def check_data(self, data: Any) -> None:
        given = set(getattr(data, "sites", ()))
        missing = {s for pair in self.sites.values() for s in pair if s is not None} - given
        if missing:
            raise AekitError(f"{data.name} does not give the sites {sorted(missing)}")

    def schedule_end(self) -> int:
        return max(m.schedule_end() for m in self.members.values())

    def step_forward(self, batch: Any, step: int) -> SAEOutput:
        outs = {
            name: self.members[name].step_forward(pick(batch, site, target), step)
            for name, (site, target) in self.sites.items()
        }
        loss = sum(out.loss for out in outs.values())
        terms = {f"{name}/{k}": v for name, out in outs.items() for k, v in out.terms.items()}
        terms["loss"] = loss.detach()
        return SAEOutput(
            reconstruction=torch.empty(0),
            values=None,
            indices=None,
            latents=None,
            loss=loss,
            terms=terms,
        )

    def backward(self, out: SAEOutput) -> None:
        out.loss.backward()
        for member in self.members.values():
            member.project_decoder_gradient()

    def after_step(self) -> None:
        for member in self.members.values():
            member.after_step()

    def folded_state_dict(self) -> dict[str, torch.Tensor]:
        return {
            f"members.{name}.{k}": v
            for name, member in self.members.items()
            for k, v in member.folded_state_dict().items()
        }


def validate_group(group: SAEGroup, data: Any, *, batch_size: int = 4096, seed: int = 0) -> dict:
    """Each member's `validate` on its own site of the held-out rows; `loss` is their sum."""
    record: dict[str, Any] = {}
    for name, (site, target) in group.sites.items():
        member = validate(group.members[name], SiteView(data, site, target), batch_size=batch_size)
        record.update({f"{name}/{k}": v for k, v in member.items()})
    record["loss"] = sum(record[f"{name}/loss"] for name in group.sites)
    return record


def train_group(
    members: list[Member],
    source: ActivationSource,
    train: dict[str, Any] | None = None,
    *,
    resume: bool = False,
) -> tuple[dict[str, SparseAutoencoder], FitResult]:
    """Train every member on one pass of `source` (whose sites must cover theirs: give the
    store, or a model stream's sites, in `source.site` as a comma-separated list). The run
    directory `train["out"]` gets one SAE run directory per member."""
    names = [m.name for m in members]
    if not members or len(set(names)) != len(names):
        raise AekitError(f"a group needs members with distinct names (got {names})")
    for name in names:
        if not name or "." in name or "/" in name:
            raise AekitError(f"member name {name!r} must be non-empty, without '.' or '/'")
    values = dict(train or {})
    opened = open_source(source, seed=values.get("seed", TrainConfig.seed), group=True)
    saes, sites = {}, {}
    for m in members:
        site = m.site or opened.sites[0]
        for s in (site, m.target_site):
            if s is not None and s not in opened.sites:
                raise AekitError(
                    f"member {m.name!r} reads site {s!r}, which the source does not give "
                    f"({', '.join(opened.sites)})"
                )
        sites[m.name] = (site, m.target_site)
        if resume:
            config = ckpt.read_config(values["out"])["model"]["members"]
            saved = next(c for c in config if c["name"] == m.name)
            saes[m.name] = SparseAutoencoder(SAEConfig.from_dict(saved["sae"]))
            continue
        d_in = opened.widths[site]
        d_out = opened.widths[m.target_site] if m.target_site else 0
        saes[m.name] = build_sae(m.recipe, d_in, d_out, **m.options)
        sample = opened.samples[site]
        saes[m.name].initialise(sample, opened.samples[m.target_site] if m.target_site else None)
    group = SAEGroup(saes, sites)
    largest = max(s.n_latents for s in saes.values())
    trainer = Trainer(
        group,
        opened.train,
        opened.val,
        sae_train_config(largest, **values),
        extra_config={"activation_source": source.to_dict()},
        evaluator=validate_group,
    )
    result = trainer.fit(resume=resume)
    if result.run_dir is not None:
        write_member_runs(Path(result.run_dir), group, source, trainer.config)
    return saes, result


def write_member_runs(
    run: Path, group: SAEGroup, source: ActivationSource, train: TrainConfig
) -> None:
    """RUN/members/NAME: config.json (the member's site as its activation source) and its
    folded weights, so each member loads and evaluates as an ordinary SAE run."""
    for name, (site, target) in group.sites.items():
        member_dir = run / MEMBERS / name
        member_dir.mkdir(parents=True, exist_ok=True)
        member_source = {**source.to_dict(), "site": site, "target_site": target}
        atomic_write_json(
            member_dir / ckpt.CONFIG,
            {
                "model": group.members[name].config.to_dict(),
                "train": train.to_dict(),
                "activation_source": member_source,
                "group": str(run),
            },
        )
        ckpt.save_weights(member_dir / ckpt.WEIGHTS, group.members[name])
