"""Several models trained on one stream of data: sparse autoencoders of other sites of the
same forward pass, or other hyper-parameters on the same site. Reading the store (or running
the network) once for all of them is what a sweep then costs once instead of N times.

The group is one module for the shared trainer: its loss is the sum of the members' losses,
which share no parameters, so each member gets exactly the gradient it would get alone (Adam
is per parameter). A group's run directory holds the group's checkpoint and metrics, and one
ordinary run directory per member (`RUN/members/NAME`), loadable on its own.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from aekit import distributed
from aekit.components import AuxiliaryStep
from aekit.data.activations.source import pick
from aekit.data.tensor_data import Batch
from aekit.errors import AekitError
from aekit.models.autoencoder import Autoencoder

MEMBERS = "members"
"""The folder of a group run that holds one run directory per member."""


@dataclass
class GroupMember:
    """Where one member reads its input (and a transcoder's target) in the group's batches."""

    name: str
    site: str
    target_site: str | None = None

    @property
    def sites(self) -> tuple[str, ...]:
        """(site,) or (site, target site): what the member reads, in order."""
        return (self.site,) if self.target_site is None else (self.site, self.target_site)


@dataclass
class GroupConfig:
    members: list[dict[str, Any]] = field(default_factory=list)
    """Each member's name, site, target site and model config."""

    @property
    def recipe(self) -> str:
        """The members' recipes ("sae-topk", or "sae-topk+sae-relu" for a mixed group)."""
        return "+".join(dict.fromkeys(m["model"]["recipe"] for m in self.members))

    def to_dict(self) -> dict[str, Any]:
        return {"members": self.members}


@dataclass
class GroupOutput:
    loss: torch.Tensor
    terms: dict[str, torch.Tensor]
    """Each member's terms as NAME/TERM, and the summed loss."""
    members: dict[str, Any]
    """Each member's own output."""


def check_member_name(name: str) -> None:
    if not name or "." in name or "/" in name:
        raise AekitError(f"member name {name!r} must be non-empty, without '.' or '/'")


class ModelGroup(nn.Module):
    """Models trained side by side on one data stream; each reads its own site."""

    run_kind = "group"

    def __init__(self, models: dict[str, Autoencoder], members: list[GroupMember]) -> None:
        super().__init__()
        names = [m.name for m in members]
        if not members or len(set(names)) != len(names) or set(names) != set(models):
            raise AekitError(f"a group needs members with distinct names (got {names})")
        for name in names:
            check_member_name(name)
        self.models = nn.ModuleDict(models)
        self.members = list(members)
        self.trained_here: set[str] | None = None
        """With sites placed on ranks (`place_sites`), the members this rank trains; the
        others' gradients and statistics come from their ranks. None: every member."""
        self.config = GroupConfig(
            [
                {
                    "name": m.name,
                    "site": m.site,
                    "target_site": m.target_site,
                    "model": models[m.name].config.to_dict(),
                }
                for m in members
            ]
        )

    def __getitem__(self, name: str) -> Autoencoder:
        if name not in self.models:
            raise AekitError(f"the group has no member {name!r} ({', '.join(self.models)})")
        return self.models[name]

    @property
    def sites(self) -> list[str]:
        """Every site the members read, in order."""
        return list(dict.fromkeys(site for m in self.members for site in m.sites))

    def check_data(self, data: Any) -> None:
        given = set(getattr(data, "sites", ()))
        missing = [s for s in self.sites if s not in given]
        if missing:
            raise AekitError(f"{data.name} does not give the sites {missing}")

    def schedule_end(self) -> int:
        return max(model.schedule_end() for model in self.models.values())

    def see_training_data(self, data: Any) -> None:
        for model in self.models.values():
            model.see_training_data(data)

    def auxiliary_steps(self) -> list[AuxiliaryStep]:
        """The members' auxiliary steps, each on its member's output of the step."""

        def on_member(name: str, step: AuxiliaryStep) -> AuxiliaryStep:
            def loss(out: GroupOutput) -> Any:
                return step.loss(out.members[name])

            return dataclasses.replace(step, name=f"{name}/{step.name}", loss=loss)

        return [
            on_member(name, step)
            for name, model in self.models.items()
            for step in model.auxiliary_steps()
        ]

    def owner(self, name: str) -> int:
        """The rank that trains member `name` when sites are placed on ranks: round robin."""
        return [m.name for m in self.members].index(name) % distributed.world_size()

    def place_on_ranks(self) -> None:
        """From now on this rank trains only its members (`owner`), on whole batches."""
        if distributed.world_size() > len(self.members):
            raise AekitError(
                f"{distributed.world_size()} ranks cannot each train sites of a group of "
                f"{len(self.members)}: use as many ranks as sites at most, or no --place-sites"
            )
        if self.auxiliary_steps():
            raise AekitError("members with auxiliary optimisers cannot be placed on ranks")
        self.trained_here = {
            m.name for m in self.members if self.owner(m.name) == distributed.rank()
        }

    def share_statistics(self) -> None:
        """Each member's buffers (firing counters, thresholds) as its rank computed them."""
        if self.trained_here is None:
            return
        for m in self.members:
            distributed.broadcast_tensors(list(self.models[m.name].buffers()), self.owner(m.name))

    def step_forward(self, batch: Batch, step: int) -> GroupOutput:
        for m in self.members:  # the initialisation of another rank's member, made alike
            model = self.models[m.name]
            if self.trained_here is not None and not model.is_initialised():
                part = pick(batch, m.site, m.target_site)
                model.initialise(part.x, part.y if model.paired else None)
        outs = {
            m.name: self.models[m.name].step_forward(pick(batch, m.site, m.target_site), step)
            for m in self.members
            if self.trained_here is None or m.name in self.trained_here
        }
        loss = sum(out.loss for out in outs.values())
        terms = {f"{name}/{k}": v for name, out in outs.items() for k, v in out.terms.items()}
        terms["loss"] = loss.detach()
        return GroupOutput(loss, terms, outs)

    def backward(self, out: GroupOutput) -> None:
        """Each member's own backward: the members share no parameters, so this is the
        gradient of the summed loss, with each member's projections and two-pass objectives."""
        for name, member_out in out.members.items():
            self.models[name].backward(member_out)

    def after_step(self) -> None:
        self.share_statistics()
        for model in self.models.values():
            model.after_step()

    def calibrate(self, batches: Iterable[Batch]) -> None:
        """Each member that calibrates does so on its own site, from the same batches (held
        only as far as the members' reading of them differs)."""
        members = [m for m in self.members if self.models[m.name].calibrates]
        for m, copy in zip(members, itertools.tee(batches, len(members)), strict=True):
            self.models[m.name].calibrate(pick(b, m.site, m.target_site) for b in copy)

    def folded_state_dict(self) -> dict[str, torch.Tensor]:
        return {
            f"models.{name}.{k}": v
            for name, model in self.models.items()
            for k, v in model.folded_state_dict().items()
        }
