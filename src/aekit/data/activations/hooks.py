"""Forward hooks that record the activations of sites (see `sites`) during a model's
forward pass.

A module that returns a tuple contributes element 0 (the hidden states, for transformer
blocks), a `ModelOutput` its first field. Every site is recorded in the same forward pass;
the pass stops after the last hooked module has run, so recording layer 3 of 12 costs about
4 layers.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from aekit.data.activations.sites import parse_site
from aekit.errors import AekitError


class _Done(Exception):
    """Raised by the last hook of a pass: nothing after it is needed."""


def _as_tensor(value: Any) -> Any:
    if isinstance(value, tuple | list) and value:
        return value[0]
    if isinstance(value, Mapping) and value:  # a ModelOutput: its first field
        return next(iter(value.values()))
    return value


class SiteHooks:
    """Forward hooks on every site's module; each keeps the rows of `mask` ((B, L) bool) of
    its (B, L, width) activation: a copy, so in-place updates later in the model cannot
    change what was recorded."""

    def __init__(self, model: nn.Module, sites: Sequence[str], stop_early: bool = True) -> None:
        modules = dict(model.named_modules())
        self.targets = []
        for site in sites:
            name, kind = parse_site(site)
            if name not in modules or not name:
                raise AekitError(f"site {site!r} is not a module of {type(model).__name__}")
            self.targets.append((site, modules[name], kind))
        self.sites = list(sites)
        self.stop_early = stop_early
        self.mask: torch.Tensor | None = None
        self.values: dict[str, torch.Tensor] = {}
        self.handles: list[Any] = []

    def _record(self, site: str, value: Any) -> None:
        value = _as_tensor(value)
        mask = self.mask
        assert mask is not None  # set by run() before every forward
        if not torch.is_tensor(value) or not value.is_floating_point():
            what = type(value).__name__ if not torch.is_tensor(value) else str(value.dtype)
            raise AekitError(f"site {site!r} gives {what}, not floating-point activations")
        if value.dim() != 3 or tuple(value.shape[:2]) != tuple(mask.shape):
            raise AekitError(
                f"site {site!r} gives shape {tuple(value.shape)}; capture needs (batch, tokens, "
                f"width) = ({mask.shape[0]}, {mask.shape[1]}, d) activations"
            )
        if site in self.values:
            raise AekitError(
                f"site {site!r} runs more than once per forward pass (shared weights?); "
                "choose a module that runs once"
            )
        self.values[site] = value.detach()[mask]
        if self.stop_early and len(self.values) == len(self.sites):
            raise _Done

    def __enter__(self) -> SiteHooks:
        for site, module, kind in self.targets:
            if kind == "output":

                def hook(mod, args, output, site=site):
                    self._record(site, output)

                self.handles.append(module.register_forward_hook(hook))
            else:

                def pre_hook(mod, args, kwargs, site=site):
                    if args:
                        value = args[0]
                    else:  # called with keywords only: hidden_states, else the first tensor
                        value = kwargs.get("hidden_states")
                        if value is None:
                            value = next((v for v in kwargs.values() if torch.is_tensor(v)), None)
                    self._record(site, value)

                self.handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def run(
        self, model: nn.Module, ids: torch.Tensor, mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        self.mask, self.values = mask, {}
        kwargs = {"use_cache": False} if _accepts(model, "use_cache") else {}
        with contextlib.suppress(_Done):  # the last hook stops the pass: nothing else needed
            model(input_ids=ids, **kwargs)
        missing = [s for s in self.sites if s not in self.values]
        if missing:
            raise AekitError(
                f"site(s) {', '.join(missing)} did not run in the forward pass of "
                f"{type(model).__name__}; choose modules the model uses"
            )
        return self.values


def _accepts(model: nn.Module, name: str) -> bool:
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
