"""Ex-post density estimation for deterministic autoencoders.

A plain or regularised autoencoder learns no p(z), so it cannot be sampled. Ghosh et al. 2020
("From variational to deterministic autoencoders") fit a Gaussian mixture to the codes of the
training set after training and sample z from it; decoding those z gives the samples. This
module fits, samples, scores and stores that mixture. Parameters are kept in float64 on the
CPU so that scores match scikit-learn's and a save/load round trip is exact.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from aekit.errors import AekitError
from aekit.io import read_aekit_safetensors, write_safetensors

if TYPE_CHECKING:  # the model may itself import this module to sample from a fitted density
    from aekit.data.tensor_data import TensorData
    from aekit.models.autoencoder import Autoencoder

log = logging.getLogger(__name__)

LATENT_DENSITY = "latent_density.safetensors"
"""File name of a fitted latent density in a run directory."""
COVARIANCE_TYPES = ("full", "diag")
FORMAT = "aekit-latent-gmm"
"""The `format` entry of the safetensors metadata, to recognise our files."""


@dataclass
class LatentGMM:
    """A Gaussian mixture over latent codes: K components in D dimensions.

    `covariances` is (K, D, D) for covariance_type "full" and the variances (K, D) for
    "diag". `fitted_on` is the number of codes it was fitted on (0 when unknown).
    """

    weights: torch.Tensor
    means: torch.Tensor
    covariances: torch.Tensor
    covariance_type: str = "full"
    fitted_on: int = 0

    def __post_init__(self) -> None:
        self.weights = torch.as_tensor(self.weights, dtype=torch.float64).cpu()
        self.means = torch.as_tensor(self.means, dtype=torch.float64).cpu()
        self.covariances = torch.as_tensor(self.covariances, dtype=torch.float64).cpu()
        self._check()

    def _check(self) -> None:
        if self.covariance_type not in COVARIANCE_TYPES:
            raise AekitError(
                f"covariance_type must be one of {', '.join(COVARIANCE_TYPES)} "
                f"(got {self.covariance_type!r})"
            )
        if self.means.ndim != 2 or self.means.shape[0] == 0 or self.means.shape[1] == 0:
            raise AekitError(f"means must be (K, D) with K, D >= 1; got {tuple(self.means.shape)}")
        k, d = self.means.shape
        cov_shape = (k, d, d) if self.covariance_type == "full" else (k, d)
        if tuple(self.weights.shape) != (k,) or tuple(self.covariances.shape) != cov_shape:
            raise AekitError(
                f"a {self.covariance_type} mixture with means {(k, d)} needs weights {(k,)} and "
                f"covariances {cov_shape}; got {tuple(self.weights.shape)} and "
                f"{tuple(self.covariances.shape)}"
            )
        tensors = (self.weights, self.means, self.covariances)
        if not all(bool(torch.isfinite(t).all()) for t in tensors):
            raise AekitError("mixture parameters must be finite")
        if bool((self.weights <= 0).any()):
            raise AekitError("mixture weights must be positive")

    @property
    def components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def _scale(self) -> torch.Tensor:
        """The Cholesky factors L (K, D, D), or the standard deviations (K, D) for diag."""
        if self.covariance_type == "diag":
            return self.covariances.sqrt()
        factor, info = torch.linalg.cholesky_ex(self.covariances)
        if bool(info.any()):
            raise AekitError("a covariance matrix of the mixture is not positive definite")
        return factor

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws z ~ the mixture, (n, D) float32 on the CPU. The component of each draw,
        then its noise, come from `generator` (a CPU generator), so a seeded generator gives
        the same draws every time."""
        if n < 1:
            raise AekitError(f"number of samples must be at least 1 (got {n})")
        which = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        scale = self._scale()[which]
        if self.covariance_type == "diag":
            offset = scale * eps
        else:
            offset = (scale @ eps.unsqueeze(-1)).squeeze(-1)
        return (self.means[which] + offset).float()

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """The exact log-density of the mixture at each row of z (n, D): (n,) float64 on
        z's device, log sum_k w_k N(z; mu_k, Sigma_k) computed with logsumexp."""
        if z.ndim != 2 or z.shape[1] != self.dim:
            raise AekitError(f"latents have shape {tuple(z.shape)}; expected (N, {self.dim})")
        diff = z.detach().to("cpu", torch.float64).unsqueeze(1) - self.means  # (n, K, D)
        scale = self._scale()
        if self.covariance_type == "diag":
            mahalanobis = (diff / scale).pow(2).sum(-1)
            log_det = 2 * scale.log().sum(-1)
        else:
            # Solving L y = diff gives |y|^2 = diff^T Sigma^-1 diff without inverting Sigma.
            y = torch.linalg.solve_triangular(scale, diff.unsqueeze(-1), upper=False)
            mahalanobis = y.squeeze(-1).pow(2).sum(-1)
            log_det = 2 * scale.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        log_normal = -0.5 * (self.dim * math.log(2 * math.pi) + log_det + mahalanobis)
        log_weights = self.weights.log() - self.weights.sum().log()
        return torch.logsumexp(log_weights + log_normal, dim=1).to(z.device)

    def save(self, path: str | Path) -> Path:
        """Write the mixture as safetensors (parameters as tensors, the rest as metadata),
        atomically; return the path."""
        path = Path(path)
        tensors = {
            "weights": self.weights.contiguous(),
            "means": self.means.contiguous(),
            "covariances": self.covariances.contiguous(),
        }
        return write_safetensors(
            path,
            tensors,
            FORMAT,
            covariance_type=self.covariance_type,
            components=str(self.components),
            fitted_on=str(self.fitted_on),
        )

    @classmethod
    def load(cls, path: str | Path) -> LatentGMM:
        """Read a mixture written by `save`; a missing, corrupt or foreign file raises
        AekitError naming the path."""
        path = Path(path)
        tensors, metadata = read_aekit_safetensors(
            path,
            "latent density",
            FORMAT,
            tensors=("weights", "means", "covariances"),
            metadata=("covariance_type",),
            written_by="LatentGMM.save",
        )
        try:
            return cls(
                tensors["weights"],
                tensors["means"],
                tensors["covariances"],
                covariance_type=metadata["covariance_type"],
                fitted_on=int(metadata.get("fitted_on", 0)),
            )
        except (AekitError, ValueError) as e:
            raise AekitError(f"latent density {path} is invalid: {e}") from None


def fit_latent_gmm(
    codes: torch.Tensor, components: int = 10, covariance_type: str = "full", seed: int = 0
) -> LatentGMM:
    """Fit a Gaussian mixture to codes (N, D) with scikit-learn's EM (k-means start, seeded
    by `seed`). With fewer codes than components, one component per code is fitted. At
    least 2 finite codes are needed."""
    from sklearn.mixture import GaussianMixture  # slow to import; only fitting needs it

    if covariance_type not in COVARIANCE_TYPES:
        raise AekitError(
            f"covariance_type must be one of {', '.join(COVARIANCE_TYPES)} "
            f"(got {covariance_type!r})"
        )
    if components < 1:
        raise AekitError(f"the mixture needs at least 1 component (got {components})")
    if codes.ndim != 2 or codes.shape[1] == 0:
        raise AekitError(f"latent density: codes must be (N, D); got {tuple(codes.shape)}")
    if codes.shape[0] < 2:  # EM (and scikit-learn) needs two points to estimate a spread
        raise AekitError(
            f"latent density: at least 2 codes are needed to fit a mixture (got {len(codes)})"
        )
    x = codes.detach().to("cpu", torch.float64).numpy()
    if not np.isfinite(x).all():
        raise AekitError("latent density: the codes contain NaN or infinite values")
    if len(x) < components:
        log.warning(
            "only %d codes for %d mixture components: fitting %d", len(x), components, len(x)
        )
        components = len(x)
    gmm = GaussianMixture(components, covariance_type=covariance_type, random_state=seed).fit(x)
    return LatentGMM(
        torch.from_numpy(gmm.weights_),
        torch.from_numpy(gmm.means_),
        torch.from_numpy(gmm.covariances_),
        covariance_type=covariance_type,
        fitted_on=len(x),
    )


@torch.no_grad()
def fit_for_model(
    model: Autoencoder,
    data: TensorData,
    components: int = 10,
    seed: int = 0,
    batch_size: int = 1000,
    covariance_type: str = "full",
) -> LatentGMM:
    """Fit the mixture to the codes of `data.x` (normally the training set) under `model`."""
    from aekit.eval.metrics import encode_all

    return fit_latent_gmm(encode_all(model, data, batch_size), components, covariance_type, seed)
