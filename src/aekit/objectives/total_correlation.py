"""Penalising the total correlation TC(z) = KL(q(z) || prod_d q(z_d)) of the aggregate
posterior q(z) = E_x q(z|x): the two ways of the papers to estimate it.

beta-TCVAE (Chen et al. 2018, "Isolating sources of disentanglement in VAEs") splits the
ELBO's KL term, averaged over the data, into three parts and weights each,

    E_x KL(q(z|x) || p(z)) = I_q(x; z) + TC(z) + sum_d KL(q(z_d) || p(z_d))
                             index-code MI   total corr.   dimension-wise KL

estimating log q(z_i) and log q(z_i^d) for the draw z_i of example i from the batch: q(z_i)
is a mixture over the whole data set of N examples, of which the batch holds M.

    mws  minibatch-weighted sampling (the paper's section 4.1):
         log q(z_i) ~ logsumexp_j log q(z_i | x_j) - log(N M)
    mss  minibatch-stratified sampling (appendix C.2): example i's own posterior has its
         weight 1/N in the mixture, the other M - 1 stand for the other N - 1 examples,
         each weighted (N - 1) / (N (M - 1)); the estimate is exact when the batch is the
         whole data set

The three estimated terms sum to the single-draw KL estimate log q(z_i|x_i) - log p(z_i)
whatever the estimate of q (the sum telescopes), so the ELBO reported beside them is the
usual one.

FactorVAE (Kim & Mnih 2018, "Disentangling by factorising") estimates TC by the density-ratio
trick: a discriminator D tells draws of q(z) from draws of prod_d q(z_d) (the batch's codes
with each dimension permuted across the batch independently, which keeps every marginal and
breaks the dependence), and TC ~ E[logit D(z)]. The VAE minimises nll + KL + gamma * TC; D is
trained by its own optimiser inside the one training loop (`auxiliary_loss`, run by the
Trainer after each step of the model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from aekit import distributed
from aekit.bottlenecks.base import BottleneckOutput
from aekit.errors import AekitError
from aekit.objectives.base import (
    OBJECTIVES,
    ForwardPass,
    Objective,
    ObjectiveOutput,
    TrainsAuxiliary,
    auxiliary,
)
from aekit.priors import LOG_2PI

ESTIMATORS = ("mws", "mss")


def gaussian_log_density_matrix(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor):
    """log q(z_i^d | x_j) for every draw i, example j and dimension d, (B, B, D)."""
    diff = z.unsqueeze(1) - mu.unsqueeze(0)
    return -0.5 * (LOG_2PI + logvar.unsqueeze(0) + diff.pow(2) * torch.exp(-logvar).unsqueeze(0))


def log_mixture_weights(batch: int, dataset_size: int, estimator: str) -> torch.Tensor:
    """log w_ij, the weight of example j's posterior in the estimate of q(z_i), (B, B)."""
    if estimator == "mws":
        return torch.full((batch, batch), -math.log(dataset_size * batch))
    if batch == 1:
        return torch.full((1, 1), -math.log(dataset_size))
    others = math.log(dataset_size - 1) - math.log(dataset_size * (batch - 1))
    weights = torch.full((batch, batch), others)
    weights.fill_diagonal_(-math.log(dataset_size))
    return weights


@dataclass
class TCTerms:
    """The three parts of the KL, per example (B,), nats."""

    mutual_information: torch.Tensor
    total_correlation: torch.Tensor
    dimension_kl: torch.Tensor


def decomposed_kl(b: BottleneckOutput, dataset_size: int, estimator: str) -> TCTerms:
    """The index-code MI, TC and dimension-wise KL of a Gaussian bottleneck's single draws."""
    mu, logvar = b.params["mu"], b.params["logvar"]
    z = b.z[: mu.shape[0]]
    log_w = log_mixture_weights(mu.shape[0], dataset_size, estimator).to(z)
    per_dim = gaussian_log_density_matrix(z, mu, logvar)  # (i, j, d)
    log_qz = torch.logsumexp(log_w + per_dim.sum(2), dim=1)
    log_prod_qzd = torch.logsumexp(log_w.unsqueeze(2) + per_dim, dim=1).sum(1)
    log_q = b.log_q[0]
    return TCTerms(
        mutual_information=log_q - log_qz,
        total_correlation=log_qz - log_prod_qzd,
        dimension_kl=log_prod_qzd - b.log_prior[0],
    )


@dataclass
class BetaTCOptions:
    alpha: float = 1.0
    """Weight of the index-code mutual information I(x; z) (1 in the paper)."""
    beta: float = 6.0
    """Weight of the total correlation (the paper's dSprites experiments use 6)."""
    gamma: float = 1.0
    """Weight of the dimension-wise KL (1 in the paper)."""
    tc_estimator: str = "mss"
    """How log q(z) is estimated from the batch: mws (minibatch-weighted sampling, the
    paper's main estimator) or mss (minibatch-stratified sampling, its appendix C.2)."""
    dataset_size: int = 0
    """N, the training examples that q(z) mixes over (0: taken from the training data)."""

    def __post_init__(self) -> None:
        if min(self.alpha, self.beta, self.gamma) < 0:
            raise AekitError("alpha, beta and gamma must be non-negative")
        if self.tc_estimator not in ESTIMATORS:
            raise AekitError(
                f"tc_estimator must be one of {', '.join(ESTIMATORS)} (got {self.tc_estimator!r})"
            )
        if self.dataset_size < 0:
            raise AekitError(f"dataset_size must be >= 0 (got {self.dataset_size})")


def require_gaussian(objective: str, bottleneck) -> None:
    if bottleneck.kind != "gaussian":
        raise AekitError(
            f"objective {objective!r} estimates the total correlation of a diagonal-Gaussian "
            f"posterior: use --bottleneck gaussian (got {bottleneck.kind!r})"
        )


@OBJECTIVES.register("beta-tcvae")
class BetaTCVAE(Objective):
    """nll + alpha * MI + beta * TC + gamma * dimension-wise KL."""

    Options = BetaTCOptions
    needs_density = True

    def attach(self, bottleneck, decoder, likelihood=None) -> None:
        super().attach(bottleneck, decoder, likelihood)
        require_gaussian(self.kind, bottleneck)  # type: ignore[attr-defined]

    def __call__(self, f: ForwardPass, step: int | None) -> ObjectiveOutput:
        o = self.options
        if o.dataset_size < 1:
            raise AekitError(
                "objective 'beta-tcvae' needs the number of training examples: train it with "
                "aekit's Trainer (which takes it from the data) or pass dataset_size="
            )
        t = decomposed_kl(f.bottleneck, o.dataset_size, o.tc_estimator)
        penalty = (
            o.alpha * t.mutual_information + o.beta * t.total_correlation
            + o.gamma * t.dimension_kl
        )  # fmt: skip
        loss = f.nll.mean() + penalty.mean() + auxiliary(f.bottleneck)
        terms = {
            "mutual_information": t.mutual_information.mean(),
            "total_correlation": t.total_correlation.mean(),
            "dimension_kl": t.dimension_kl.mean(),
        }
        return ObjectiveOutput(loss, self.report(f, loss, **terms))


def permute_dims(z: torch.Tensor) -> torch.Tensor:
    """Each column of z permuted across the batch on its own (Kim & Mnih 2018, Algorithm 1):
    draws of the product of the marginals, with every marginal kept exactly."""
    b, d = z.shape
    # Each rank permutes its own rows; the draw keeps the ranks' random states alike.
    noise = distributed.rand_rows((b, d), device=z.device)
    order = torch.argsort(noise, dim=0)
    return torch.gather(z, 0, order)


class Discriminator(nn.Module):
    """The paper's discriminator: an MLP of 6 layers of 1,000 units, leaky ReLU (0.2), two
    logits (from q(z), from the permuted product of marginals)."""

    def __init__(self, latent_dim: int, width: int, layers: int) -> None:
        super().__init__()
        parts: list[nn.Module] = []
        d = latent_dim
        for _ in range(layers):
            parts += [nn.Linear(d, width), nn.LeakyReLU(0.2)]
            d = width
        parts.append(nn.Linear(d, 2))
        self.net = nn.Sequential(*parts)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


@dataclass
class FactorVAEOptions:
    gamma: float = 35.0
    """Weight of the total-correlation estimate: mid-range of the 10-100 that Kim & Mnih 2018
    sweep on dSprites (disentanglement_lib's study sweeps the same range)."""
    discriminator_width: int = 1000
    """Units of each hidden layer of the discriminator (1,000 in the paper)."""
    discriminator_layers: int = 6
    """Hidden layers of the discriminator (6 in the paper)."""
    discriminator_lr: float = 1e-4
    """Adam learning rate of the discriminator (the paper: 1e-4, betas (0.5, 0.9))."""

    def __post_init__(self) -> None:
        if self.gamma < 0:
            raise AekitError(f"gamma must be non-negative (got {self.gamma})")
        if self.discriminator_width < 1 or self.discriminator_layers < 0:
            raise AekitError("discriminator_width must be >= 1 and discriminator_layers >= 0")
        if not self.discriminator_lr > 0:
            raise AekitError(f"discriminator_lr must be positive (got {self.discriminator_lr})")


DISCRIMINATOR_BETAS = (0.5, 0.9)
"""Adam's betas for the discriminator (Kim & Mnih 2018, appendix: beta1 0.5, beta2 0.9)."""


@OBJECTIVES.register("factor-vae")
class FactorVAE(TrainsAuxiliary):
    """nll + KL + gamma * E[logit D(z)], the discriminator D trained alongside."""

    Options = FactorVAEOptions
    needs_kl = True
    auxiliary_name = "discriminator"

    def __init__(self, options: FactorVAEOptions, dims) -> None:
        super().__init__(options, dims)
        self.auxiliary = Discriminator(
            dims.latent_dim, options.discriminator_width, options.discriminator_layers
        )

    def __call__(self, f: ForwardPass, step: int | None) -> ObjectiveOutput:
        b = f.bottleneck
        z = b.dense_z()[: b.dense_code().shape[0]]
        logits = self.auxiliary(z)
        tc = logits[:, 0] - logits[:, 1]  # log D(z) / (1 - D(z)), the density ratio
        kl = b.kl_per_example()
        loss = f.nll.mean() + kl.mean() + self.options.gamma * tc.mean() + auxiliary(b)
        return ObjectiveOutput(loss, self.report(f, loss, total_correlation=tc.mean()))

    def auxiliary_loss(self, b: BottleneckOutput) -> ObjectiveOutput:
        """The discriminator's cross-entropy on the step's codes (label 0) and the same codes
        permuted per dimension (label 1); the codes are detached, so only D learns from it.
        (The paper permutes the codes of a second batch; those of the same batch have the
        same distribution and cost no second encoder pass.)"""
        z = b.dense_z()[: b.dense_code().shape[0]].detach()
        both = torch.cat([z, permute_dims(z)])
        labels = torch.cat([torch.zeros(len(z)), torch.ones(len(z))]).long().to(z.device)
        logits = self.auxiliary(both)
        loss = F.cross_entropy(logits, labels)
        accuracy = (logits.argmax(1) == labels).float().mean()
        terms = {"discriminator_loss": loss.detach(), "discriminator_accuracy": accuracy}
        return ObjectiveOutput(loss, terms)

    def auxiliary_optimizer(self, parameters: list[nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.Adam(
            parameters, lr=self.options.discriminator_lr, betas=DISCRIMINATOR_BETAS
        )
