"""The standard disentanglement metrics, as pure functions of a model's codes and the
ground-truth factors of the examples they encode.

Every metric takes `codes` (N, D), one row per example (a model's representation: the
posterior mean, a deterministic or a quantized code), `factors` (N, K), the integer index of
each ground-truth factor of the example (dSprites: shape 3, scale 6, orientation 40, x 32,
y 32 values, or a sub-grid of it), and a `numpy.random.Generator`, and returns a dict of
floats (plus the lists and matrices each names) with the sample sizes it used.

    beta_vae_score    Higgins et al. 2017, "beta-VAE: learning basic visual concepts with a
                      constrained variational framework"
    factor_vae_score  Kim & Mnih 2018, "Disentangling by factorising"
    mig               Chen et al. 2018, "Isolating sources of disentanglement in VAEs"
    dci               Eastwood & Williams 2018, "A framework for the quantitative evaluation
                      of disentangled representations"
    sap               Kumar et al. 2018, "Variational inference of disentangled latent
                      concepts from unlabeled observations"
    infomec           Hsu et al. 2023, "Disentanglement via latent quantization" (InfoM,
                      InfoC, InfoE)

The first five follow disentanglement_lib (Locatello et al. 2019, "Challenging common
assumptions in the unsupervised learning of disentangled representations"), its estimators
and the sample sizes of its study configs as the keyword defaults. disentanglement_lib draws
factor vectors uniformly and renders them; here the data is a fixed set of rows, so:

- BetaVAE and FactorVAE draw rows with replacement, "factor k fixed to one value" by
  drawing among the rows whose factor k has that value (`FactorIndex`). On a data set that
  is the full factor grid (or a full sub-grid) this is the same distribution.
- MIG, DCI, SAP and InfoMEC draw their rows without replacement, and DCI's and SAP's
  training and test rows are disjoint (disentanglement_lib draws them independently, so on
  a finite data set they may share rows). They need that many rows.

Mutual information is computed here from contingency tables (`mutual_information`) rather
than by scikit-learn, so the values do not drift with its version; they equal
`sklearn.metrics.mutual_info_score`, which disentanglement_lib calls. scikit-learn is
imported inside the functions that fit classifiers.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from aekit.errors import AekitError

BETA_VAE_BATCH = 64
FACTOR_VAE_BATCH = 64
NUM_TRAIN = 10_000
NUM_EVAL = 5_000
NUM_VARIANCE_ESTIMATE = 10_000
NUM_BINS = 20
PRUNE_THRESHOLD = 0.05
"""disentanglement_lib's study configs (unsupervised_study_v1): batch 64, 10,000 training
and 5,000 evaluation points (BetaVAE, FactorVAE, DCI, SAP), 10,000 points for MIG and for
FactorVAE's global variances, 20 histogram bins, and FactorVAE's dims pruned below a
standard deviation of 0.05 (prune_dims.threshold; the function's own default is 0)."""
DCI_EPSILON = 1e-11
"""Added to every importance before the entropies of DCI, as disentanglement_lib does
(scipy.stats.entropy(importance + 1e-11)), so a zero importance does not give log 0."""
SAP_C = 0.01
"""The inverse regularisation of SAP's LinearSVC in disentanglement_lib."""
INFOE_MAX_ITER = 100
"""lbfgs iterations of InfoE's logistic regressions: the InfoMEC authors' value (and
scikit-learn's default)."""
MAX_DISCRETE_VALUES = 1000
"""Most distinct values of one latent that InfoE one-hot encodes when the latents are
discrete (QLAE's scalar codebooks hold about 10); beyond it the codes are continuous."""
CHUNK_ELEMENTS = 1 << 22
"""Code values gathered at once when building BetaVAE and FactorVAE batches (32 MiB of
float64): the batches of all points are drawn up front, their codes read in chunks."""


# ---------------------------------------------------------------- inputs


def check_inputs(
    codes: Any, factors: Any, needed: int, metric: str, sizes: str = ""
) -> tuple[np.ndarray, np.ndarray]:
    """(codes as float64 (N, D), factors as int64 (N, K)), or a one-line AekitError.

    codes must be a 2-D array of finite numbers; factors a 2-D array of integers (floats only
    when every value is integral), with as many rows as codes, at least `needed` of them, and
    every factor column taking at least 2 distinct values. `sizes` names the sample-size
    arguments to lower when there are too few rows (default: "the sample sizes").
    """
    try:
        codes = np.asarray(codes)
        factors = np.asarray(factors)
    except (TypeError, ValueError) as e:  # ragged lists
        raise AekitError(f"{metric}: codes and factors must be arrays ({e})") from None
    if codes.ndim != 2 or codes.shape[1] == 0:
        raise AekitError(
            f"{metric}: codes must be a 2-D array (examples, latents), got shape {codes.shape}"
        )
    if factors.ndim != 2 or factors.shape[1] == 0:
        raise AekitError(
            f"{metric}: factors must be a 2-D array (examples, factors), got shape {factors.shape}"
        )
    if codes.dtype.kind not in "biuf":
        raise AekitError(f"{metric}: codes must be real numbers, got dtype {codes.dtype}")
    codes = codes.astype(np.float64, copy=False)
    if not np.isfinite(codes).all():
        raise AekitError(f"{metric}: the codes hold NaN or infinite values")
    factors = as_discrete(factors, f"{metric}: factors")
    n = len(codes)
    if n == 0:
        raise AekitError(f"{metric}: no examples (codes have 0 rows)")
    if len(factors) != n:
        raise AekitError(
            f"{metric}: codes have {n} rows but factors have {len(factors)}; one row each per "
            "example"
        )
    if n < needed:
        raise AekitError(
            f"{metric} needs at least {needed} examples, got {n}; lower its sample size "
            f"({sizes or 'the sample sizes'}) or use more data"
        )
    for k in range(factors.shape[1]):
        column = factors[:, k]
        if (column == column[0]).all():
            raise AekitError(
                f"{metric}: factor column {k} takes the single value {column[0]}; every factor "
                "needs at least 2 distinct values"
            )
    return codes, factors


def as_discrete(values: Any, what: str = "values") -> np.ndarray:
    """`values` as int64, accepting floats only when every value is integral."""
    values = np.asarray(values)
    if values.dtype.kind in "biu":
        return values.astype(np.int64, copy=False)
    if values.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            integral = np.isfinite(values).all() and (values == np.round(values)).all()
        if integral and (np.abs(values) < 2**62).all():
            return values.astype(np.int64)
    raise AekitError(f"{what} must be discrete (integer values)")


def _positive(metric: str, **sizes: int) -> None:
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise AekitError(f"{metric}: {name} must be a positive integer (got {value!r})")


def _labels(column: np.ndarray) -> tuple[np.ndarray, int]:
    """A discrete column relabelled 0..n-1 (its distinct values in order) and n."""
    values, inverse = np.unique(column, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64, copy=False), len(values)


def _seed(generator: np.random.Generator) -> int:
    """A scikit-learn random_state drawn from the generator."""
    return int(generator.integers(2**31 - 1))


def _subsample(n: int, size: int, generator: np.random.Generator) -> np.ndarray:
    """`size` distinct rows of n, in random order."""
    return generator.permutation(n)[:size]


def _require_varied(labels: np.ndarray, metric: str, sizes: str) -> None:
    """A one-line error when a factor takes one value among the sampled rows (a classifier
    cannot be fitted, an entropy is 0)."""
    for k in range(labels.shape[1]):
        if (labels[:, k] == labels[0, k]).all():
            raise AekitError(
                f"{metric}: factor column {k} takes a single value among the {len(labels)} "
                f"sampled rows; raise {sizes}"
            )


def _held_out(
    codes: Any,
    factors: Any,
    generator: np.random.Generator,
    metric: str,
    num_train: int,
    num_test: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The checked inputs and disjoint training and test rows, drawn without replacement."""
    _positive(metric, num_train=num_train, num_test=num_test)
    codes, factors = check_inputs(
        codes,
        factors,
        num_train + num_test,
        metric,
        f"num_train={num_train} + num_test={num_test}",
    )
    rows = _subsample(len(codes), num_train + num_test, generator)
    train, test = rows[:num_train], rows[num_train:]
    _require_varied(factors[train], metric, "num_train")
    return codes, factors, train, test


class FactorIndex:
    """The rows of each value of each factor, built once per metric call so that batches
    "with factor k fixed to a value" are drawn in one vectorised step.

    `draw(k, label, generator)` draws rows uniformly, with replacement, among those whose
    factor k has the value `values[k][label]` (`labels` holds every row's value indices).
    disentanglement_lib draws a factor vector with factor k fixed and the others uniform, and
    renders it; on a data set that is the full factor grid (each combination once, or
    equally often) the rows with factor k = v are exactly those vectors, so drawing uniformly
    among them is the same distribution. On other data it is the data's conditional
    distribution given factor k = v.
    """

    def __init__(self, factors: np.ndarray) -> None:
        factors = np.asarray(factors)
        n, k = factors.shape
        self.labels = np.empty((n, k), dtype=np.int64)
        self.values: list[np.ndarray] = []
        sizes = []
        for j in range(k):
            values, inverse = np.unique(factors[:, j], return_inverse=True)
            self.labels[:, j] = inverse.reshape(-1)
            self.values.append(values)
            sizes.append(len(values))
        self.sizes = np.asarray(sizes, dtype=np.int64)
        width = int(self.sizes.max())
        # One sorted row order per factor: the rows of value v are a contiguous run
        # order[k, start[k, v] : start[k, v] + count[k, v]].
        self.order = np.argsort(self.labels.T, axis=1, kind="stable")
        self.count = np.zeros((k, width), dtype=np.int64)
        for j in range(k):
            self.count[j, : sizes[j]] = np.bincount(self.labels[:, j], minlength=sizes[j])
        self.start = np.zeros_like(self.count)
        self.start[:, 1:] = np.cumsum(self.count, axis=1)[:, :-1]

    def draw(
        self,
        k: np.ndarray | int,
        label: np.ndarray | int,
        generator: np.random.Generator,
        size: tuple[int, ...] | int | None = None,
    ) -> np.ndarray:
        """Rows with factor k at the value of index `label` (0..n_k-1, an index into
        `values[k]`), uniformly with replacement; k and label broadcast against `size`."""
        k, label = np.asarray(k), np.asarray(label)
        extra = () if size is None else (size,) if isinstance(size, int) else tuple(size)
        shape = np.broadcast_shapes(k.shape, label.shape, extra)
        k, label = np.broadcast_to(k, shape), np.broadcast_to(label, shape)
        count = self.count[k, label]
        if (count < 1).any():
            raise AekitError("no rows hold the requested factor value")
        offset = generator.integers(0, count)
        return self.order[k, self.start[k, label] + offset]


def draw_with_factor(
    factors: np.ndarray, k: int, value: int, n: int, generator: np.random.Generator
) -> np.ndarray:
    """n row indices whose factor k equals `value`, drawn uniformly with replacement (see
    `FactorIndex`, which a metric builds once for all its draws)."""
    factors = as_discrete(factors, "factors")
    if factors.ndim != 2 or not 0 <= k < factors.shape[1]:
        raise AekitError(f"factor column {k} is not a column of factors of shape {factors.shape}")
    rows = np.flatnonzero(factors[:, k] == value)
    if len(rows) == 0:
        raise AekitError(f"no row has factor column {k} equal to {value}")
    return rows[generator.integers(0, len(rows), size=n)]


# ---------------------------------------------------------------- information


def discretize(codes: np.ndarray, num_bins: int = NUM_BINS) -> np.ndarray:
    """Each latent column cut into `num_bins` equal-width bins over its own min..max: bin
    indices 1..num_bins, int64 (N, D).

    disentanglement_lib's `_histogram_discretize`: np.digitize(column,
    np.histogram(column, num_bins)[1][:-1]). For a non-constant column np.histogram's edges
    are np.linspace(min, max, num_bins + 1), which is used directly (np.histogram refuses
    columns whose range is too small for its float spacing); a constant column is one bin
    (index 1).
    """
    codes = np.asarray(codes, dtype=np.float64)
    if codes.ndim != 2:
        raise AekitError(f"discretize needs a 2-D array (examples, latents), got {codes.shape}")
    _positive("discretize", num_bins=num_bins)
    out = np.ones(codes.shape, dtype=np.int64)
    for j in range(codes.shape[1]):
        column = codes[:, j]
        lo, hi = column.min(), column.max()
        if hi > lo:
            out[:, j] = np.digitize(column, np.linspace(lo, hi, num_bins + 1)[:-1])
    return out


def _mi_of_labels(a: np.ndarray, na: int, b: np.ndarray, nb: int) -> float:
    """MI (nats) of two vectors relabelled 0..na-1 and 0..nb-1."""
    if na < 2 or nb < 2:
        return 0.0
    n = len(a)
    count_a = np.bincount(a, minlength=na).astype(np.float64)
    count_b = np.bincount(b, minlength=nb).astype(np.float64)
    # The non-empty cells of the contingency table; np.unique of the pair codes keeps memory
    # at O(N) even when both vectors take thousands of values.
    cells, joint = np.unique(a * nb + b, return_counts=True)
    joint = joint.astype(np.float64)
    row, col = cells // nb, cells % nb
    terms = joint / n * (np.log(joint) + np.log(n) - np.log(count_a[row]) - np.log(count_b[col]))
    return max(float(terms.sum()), 0.0)


def _as_vector(x: Any, what: str) -> np.ndarray:
    x = as_discrete(x, what)
    if x.ndim != 1 or len(x) == 0:
        raise AekitError(f"{what} must be a non-empty 1-D vector, got shape {x.shape}")
    return x


def mutual_information(a: Any, b: Any) -> float:
    """I(a; b) in nats of two discrete (integer) vectors of one length, from their empirical
    joint distribution: sum over cells of p(x, y) log(p(x, y) / (p(x) p(y))).

    The same value as sklearn.metrics.mutual_info_score(a, b) (disentanglement_lib's
    `discrete_mutual_info`), computed here so that it does not change with scikit-learn.
    """
    a, b = _as_vector(a, "a"), _as_vector(b, "b")
    if len(a) != len(b):
        raise AekitError(f"mutual_information of vectors of lengths {len(a)} and {len(b)}")
    return _mi_of_labels(*_labels(a), *_labels(b))


def entropy(a: Any) -> float:
    """H(a) in nats of a discrete vector's empirical distribution (= I(a; a))."""
    a = _as_vector(a, "a")
    counts = np.unique(a, return_counts=True)[1].astype(np.float64)
    if len(counts) < 2:
        return 0.0
    p = counts / len(a)
    return float(-(p * np.log(p)).sum())


def mutual_information_matrix(discrete_codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """I(z_i; s_j) in nats (D, K) of every discrete code column i and factor column j
    (disentanglement_lib's `discrete_mutual_info`)."""
    discrete_codes = as_discrete(discrete_codes, "discrete codes")
    factors = as_discrete(factors, "factors")
    if discrete_codes.ndim != 2 or factors.ndim != 2 or len(discrete_codes) != len(factors):
        raise AekitError(
            f"mutual_information_matrix of shapes {discrete_codes.shape} and {factors.shape}; "
            "both must be 2-D with one row per example"
        )
    codes = [_labels(discrete_codes[:, i]) for i in range(discrete_codes.shape[1])]
    sources = [_labels(factors[:, j]) for j in range(factors.shape[1])]
    return np.array([[_mi_of_labels(*z, *s) for s in sources] for z in codes])


def _entropies(factors: np.ndarray) -> np.ndarray:
    return np.array([entropy(factors[:, j]) for j in range(factors.shape[1])])


# ---------------------------------------------------------------- BetaVAE and FactorVAE


def _need_two_factors(factors: np.ndarray, metric: str) -> None:
    if factors.shape[1] < 2:
        raise AekitError(
            f"{metric} classifies which factor a batch fixes: it needs at least 2 factors, got "
            f"{factors.shape[1]}"
        )


def _chunks(points: int, per_point: int) -> list[slice]:
    step = max(1, CHUNK_ELEMENTS // max(1, per_point))
    return [slice(s, min(s + step, points)) for s in range(0, points, step)]


def _beta_vae_points(
    codes: np.ndarray,
    index: FactorIndex,
    points: int,
    batch_size: int,
    generator: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """(features (points, D), labels (points,)): for each point a factor k, then batch_size
    pairs of rows sharing factor k's value (each pair its own value: row 1 uniform, row 2
    uniform among the rows with row 1's value of factor k, as disentanglement_lib's
    `_generate_training_sample` copies factor k of one factor vector into another), and the
    feature mean over the pairs of |z1 - z2|. All rows are drawn up front."""
    n, k = len(codes), index.labels.shape[1]
    labels = generator.integers(k, size=points)
    first = generator.integers(n, size=(points, batch_size))
    shared = index.labels[first, labels[:, None]]
    second = index.draw(labels[:, None], shared, generator)
    features = np.empty((points, codes.shape[1]))
    for part in _chunks(points, batch_size * codes.shape[1]):
        features[part] = np.abs(codes[first[part]] - codes[second[part]]).mean(axis=1)
    return features, labels


def beta_vae_score(
    codes: Any,
    factors: Any,
    generator: np.random.Generator,
    *,
    batch_size: int = BETA_VAE_BATCH,
    num_train: int = NUM_TRAIN,
    num_eval: int = NUM_EVAL,
) -> dict[str, Any]:
    """The BetaVAE score (Higgins et al. 2017, section 3), disentanglement_lib's
    `compute_beta_vae_sklearn` (defaults batch_size 64, num_train 10,000, num_eval 5,000).

    Each point picks a factor k uniformly and averages |z1 - z2| over batch_size pairs of
    examples that share factor k's value (the other factors free); a linear classifier
    (scikit-learn's LogisticRegression with its defaults, as disentanglement_lib) fitted on
    num_train points to predict k from that feature is scored on num_eval fresh points.
    Chance is 1 / K. score = eval_accuracy.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    metric = "beta_vae_score"
    _positive(metric, batch_size=batch_size, num_train=num_train, num_eval=num_eval)
    codes, factors = check_inputs(codes, factors, 2, metric)
    _need_two_factors(factors, metric)
    index = FactorIndex(factors)
    train_x, train_y = _beta_vae_points(codes, index, num_train, batch_size, generator)
    eval_x, eval_y = _beta_vae_points(codes, index, num_eval, batch_size, generator)
    if len(np.unique(train_y)) < 2:
        raise AekitError(
            f"{metric}: all {num_train} training points fixed one factor; raise num_train"
        )
    model = LogisticRegression(random_state=_seed(generator))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(train_x, train_y)
    train_accuracy = float(np.mean(model.predict(train_x) == train_y))
    eval_accuracy = float(np.mean(model.predict(eval_x) == eval_y))
    return {
        "score": eval_accuracy,
        "train_accuracy": train_accuracy,
        "eval_accuracy": eval_accuracy,
        "converged": not any(issubclass(w.category, ConvergenceWarning) for w in caught),
        "batch_size": batch_size,
        "num_train": num_train,
        "num_eval": num_eval,
    }


def _factor_vae_votes(
    codes: np.ndarray,
    index: FactorIndex,
    points: int,
    batch_size: int,
    generator: np.random.Generator,
    global_variances: np.ndarray,
) -> np.ndarray:
    """Votes (A, K) over the active columns of `codes`: for each point a factor k, a value
    of it (that of a uniform row, as disentanglement_lib takes the first sampled vector's),
    batch_size rows with factor k at that value, and a vote for the latent of least variance
    relative to its global variance."""
    n, k = len(codes), index.labels.shape[1]
    labels = generator.integers(k, size=points)
    fixed = index.labels[generator.integers(n, size=points), labels]
    rows = index.draw(labels[:, None], fixed[:, None], generator, size=(points, batch_size))
    winners = np.empty(points, dtype=np.int64)
    for part in _chunks(points, batch_size * codes.shape[1]):
        local = codes[rows[part]].var(axis=1, ddof=1)
        winners[part] = np.argmin(local / global_variances, axis=1)
    votes = np.zeros((codes.shape[1], k), dtype=np.int64)
    np.add.at(votes, (winners, labels), 1)
    return votes


def factor_vae_score(
    codes: Any,
    factors: Any,
    generator: np.random.Generator,
    *,
    batch_size: int = FACTOR_VAE_BATCH,
    num_train: int = NUM_TRAIN,
    num_eval: int = NUM_EVAL,
    num_variance_estimate: int = NUM_VARIANCE_ESTIMATE,
    prune_threshold: float = PRUNE_THRESHOLD,
) -> dict[str, Any]:
    """The FactorVAE score (Kim & Mnih 2018, section 4), disentanglement_lib's
    `compute_factor_vae` (defaults batch_size 64, num_train 10,000, num_eval 5,000,
    num_variance_estimate 10,000; its study configs prune dims below a standard deviation of
    0.05).

    Each latent is scaled by its global variance (ddof=1, over num_variance_estimate random
    rows); latents whose standard deviation is below prune_threshold are left out (a
    collapsed latent would otherwise win every vote: its variance is ~0 in every batch).
    Each vote fixes a factor k at a random value over a batch of batch_size rows and goes to
    the active latent of least scaled variance; the majority-vote classifier (each latent's
    most frequent factor among the num_train training votes) is scored on the training votes
    and on num_eval fresh votes. Chance is 1 / K. score = eval_accuracy; with no active
    latent every score is 0 and `no_active_dims` is set.

    num_active_dims counts the active latents (disentanglement_lib reports the length of its
    boolean mask, i.e. every latent).
    """
    metric = "factor_vae_score"
    _positive(metric, num_train=num_train, num_eval=num_eval)
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or batch_size < 2
    ):
        raise AekitError(
            f"{metric}: batch_size must be at least 2 (a variance), got {batch_size!r}"
        )
    if not isinstance(num_variance_estimate, (int, np.integer)) or num_variance_estimate < 2:
        raise AekitError(
            f"{metric}: num_variance_estimate must be at least 2, got {num_variance_estimate!r}"
        )
    if not np.isfinite(prune_threshold) or prune_threshold < 0:
        raise AekitError(f"{metric}: prune_threshold must be >= 0, got {prune_threshold!r}")
    codes, factors = check_inputs(codes, factors, 2, metric)
    _need_two_factors(factors, metric)
    index = FactorIndex(factors)
    rows = generator.integers(len(codes), size=num_variance_estimate)
    global_variances = codes[rows].var(axis=0, ddof=1)
    # >= as disentanglement_lib's _prune_dims; a zero variance is never active (the ratio
    # below divides by it), even at threshold 0.
    active = (np.sqrt(global_variances) >= prune_threshold) & (global_variances > 0)
    result: dict[str, Any] = {
        "num_active_dims": int(active.sum()),
        "active_dims": np.flatnonzero(active).tolist(),
        "batch_size": batch_size,
        "num_train": num_train,
        "num_eval": num_eval,
        "num_variance_estimate": num_variance_estimate,
        "prune_threshold": float(prune_threshold),
    }
    if not active.any():
        return {
            "score": 0.0,
            "train_accuracy": 0.0,
            "eval_accuracy": 0.0,
            "no_active_dims": True,
            **result,
        }
    kept, scale = codes[:, active], global_variances[active]
    train_votes = _factor_vae_votes(kept, index, num_train, batch_size, generator, scale)
    eval_votes = _factor_vae_votes(kept, index, num_eval, batch_size, generator, scale)
    classifier = np.argmax(train_votes, axis=1)  # each active latent's majority factor
    dims = np.arange(len(classifier))
    train_accuracy = float(train_votes[dims, classifier].sum() / train_votes.sum())
    eval_accuracy = float(eval_votes[dims, classifier].sum() / eval_votes.sum())
    return {
        "score": eval_accuracy,
        "train_accuracy": train_accuracy,
        "eval_accuracy": eval_accuracy,
        "no_active_dims": False,
        **result,
    }


# ---------------------------------------------------------------- MIG


def mig(
    codes: Any,
    factors: Any,
    generator: np.random.Generator,
    *,
    num_train: int = NUM_TRAIN,
    num_bins: int = NUM_BINS,
    factors_used: Sequence[int] | None = None,
) -> dict[str, Any]:
    """The mutual information gap (Chen et al. 2018, section 4.1) with disentanglement_lib's
    estimator `compute_mig` (defaults num_train 10,000, a 20-bin histogram discretizer).

    On num_train rows (drawn without replacement), each latent is cut into num_bins
    equal-width bins (`discretize`), I(z_i; s_k) is computed from the counts, and for each
    factor k the gap (top-1 - top-2 of I(z_i; s_k) over latents) / H(s_k); mig is the mean
    gap over `factors_used` (default all; the beta-TCVAE authors' code leaves shape out).
    With a single latent the gap is its I(z; s_k) / H(s_k) (the second is taken as 0).

    Returns mig, the per-factor gaps (of the used factors), normalized_mi (D, K: I(z_i;
    s_k) / H(s_k) for every factor) and the settings.
    """
    metric = "mig"
    _positive(metric, num_train=num_train, num_bins=num_bins)
    codes, factors = check_inputs(codes, factors, num_train, metric, f"num_train={num_train}")
    k = factors.shape[1]
    if factors_used is None:
        used = list(range(k))
    else:
        used = [int(j) for j in factors_used]
        if not used or len(set(used)) < len(used) or not all(0 <= j < k for j in used):
            raise AekitError(
                f"{metric}: factors_used must list distinct factor columns of 0..{k - 1}, got "
                f"{list(factors_used)}"
            )
    rows = _subsample(len(codes), num_train, generator)
    sub_codes, sub_factors = codes[rows], factors[rows]
    _require_varied(sub_factors, metric, "num_train")
    information = mutual_information_matrix(discretize(sub_codes, num_bins), sub_factors)
    normalized = information / _entropies(sub_factors)[None, :]
    top = np.sort(normalized, axis=0)[::-1]
    second = top[1] if len(top) > 1 else np.zeros(k)
    gaps = top[0] - second
    return {
        "mig": float(np.mean(gaps[used])),
        "gaps": [float(gaps[j]) for j in used],
        "factors_used": used,
        "normalized_mi": normalized.tolist(),
        "num_train": num_train,
        "num_bins": num_bins,
    }


# ---------------------------------------------------------------- DCI


def _normalized_entropy(p: np.ndarray, axis: int) -> np.ndarray:
    """Entropy along `axis` of the nonnegative weights p + 1e-11 normalised to sum 1, in
    base p.shape[axis] (scipy.stats.entropy(p + 1e-11, base=...), disentanglement_lib)."""
    q = p + DCI_EPSILON
    q = q / q.sum(axis=axis, keepdims=True)
    return -(q * np.log(q)).sum(axis=axis) / np.log(p.shape[axis])


def dci_from_importance(importance: Any) -> tuple[float, float]:
    """(disentanglement, completeness) of an importance matrix R (D codes, K factors),
    Eastwood & Williams 2018, section 3, as disentanglement_lib's `disentanglement` and
    `completeness`:

        D = sum_i (1 - H_K(P_i.)) rho_i,  P_ij = R_ij / sum_k R_ik,  rho_i = sum_k R_ik / sum R
        C = sum_j (1 - H_D(P~_.j)) rho~_j, P~_ij = R_ij / sum_d R_dj,  rho~_j = sum_d R_dj / sum R

    with entropies in base K (resp. D) of the rows (columns) + 1e-11. An all-zero matrix
    weighs codes (factors) uniformly. With one factor D is 1 (every code serves the one
    factor) and with one code C is 1 (base-1 entropies are undefined).
    """
    importance = np.asarray(importance, dtype=np.float64)
    if importance.ndim != 2 or 0 in importance.shape:
        raise AekitError(
            f"an importance matrix must be 2-D (codes, factors), got {importance.shape}"
        )
    if not np.isfinite(importance).all() or (importance < 0).any():
        raise AekitError("an importance matrix must hold finite nonnegative values")
    d, k = importance.shape
    weights = importance if importance.sum() > 0 else np.ones_like(importance)
    if k == 1:
        disentanglement = 1.0
    else:
        per_code = 1.0 - _normalized_entropy(importance, axis=1)
        disentanglement = float((per_code * weights.sum(axis=1) / weights.sum()).sum())
    if d == 1:
        completeness = 1.0
    else:
        per_factor = 1.0 - _normalized_entropy(importance, axis=0)
        completeness = float((per_factor * weights.sum(axis=0) / weights.sum()).sum())
    return disentanglement, completeness


def dci(
    codes: Any,
    factors: Any,
    generator: np.random.Generator,
    *,
    num_train: int = NUM_TRAIN,
    num_test: int = NUM_EVAL,
) -> dict[str, Any]:
    """DCI disentanglement, completeness and informativeness (Eastwood & Williams 2018),
    disentanglement_lib's `compute_dci` (defaults num_train 10,000, num_test 5,000).

    One scikit-learn GradientBoostingClassifier (its defaults, as disentanglement_lib) per
    factor is fitted on num_train rows to predict the factor from all codes; the importance
    matrix (D, K) holds |feature_importances_| column by column, informativeness_train and
    informativeness_test are the mean accuracies on the training rows and on num_test other
    rows (disjoint from them), and disentanglement and completeness come from
    `dci_from_importance`.
    """
    from sklearn.ensemble import GradientBoostingClassifier

    metric = "dci"
    codes, factors, train, test = _held_out(codes, factors, generator, metric, num_train, num_test)
    importance = np.zeros((codes.shape[1], factors.shape[1]))
    train_accuracy, test_accuracy = [], []
    for j in range(factors.shape[1]):
        model = GradientBoostingClassifier(random_state=_seed(generator))
        model.fit(codes[train], factors[train, j])
        importance[:, j] = np.abs(model.feature_importances_)
        train_accuracy.append(np.mean(model.predict(codes[train]) == factors[train, j]))
        test_accuracy.append(np.mean(model.predict(codes[test]) == factors[test, j]))
    disentanglement, completeness = dci_from_importance(importance)
    return {
        "disentanglement": disentanglement,
        "completeness": completeness,
        "informativeness_train": float(np.mean(train_accuracy)),
        "informativeness_test": float(np.mean(test_accuracy)),
        "importance": importance.tolist(),
        "num_train": num_train,
        "num_test": num_test,
    }


# ---------------------------------------------------------------- SAP


def _sap_matrix_discrete(
    codes: np.ndarray,
    factors: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    generator: np.random.Generator,
) -> tuple[np.ndarray, bool]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    scores = np.zeros((codes.shape[1], factors.shape[1]))
    converged = True
    for i in range(codes.shape[1]):
        x_train, x_test = codes[train, i : i + 1], codes[test, i : i + 1]
        constant = x_train.min() == x_train.max()
        for j in range(factors.shape[1]):
            y_train, y_test = factors[train, j], factors[test, j]
            if constant:
                # Nothing to fit on (liblinear may fail on a constant feature); a classifier
                # of a constant can only predict one class, at best the majority one.
                values, counts = np.unique(y_train, return_counts=True)
                scores[i, j] = np.mean(y_test == values[np.argmax(counts)])
                continue
            model = LinearSVC(C=SAP_C, class_weight="balanced", random_state=_seed(generator))
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                model.fit(x_train, y_train)
            converged &= not any(issubclass(w.category, ConvergenceWarning) for w in caught)
            scores[i, j] = np.mean(model.predict(x_test) == y_test)
    return scores, converged


def _sap_matrix_continuous(codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """R^2 of a linear fit of factor j on latent i: cov^2 / (var var), ddof=1, 0 for a
    latent of variance <= 1e-12 (disentanglement_lib's continuous branch)."""
    z = codes - codes.mean(axis=0)
    s = factors - factors.mean(axis=0)
    n = len(codes) - 1
    covariance = z.T @ s / n
    var_z, var_s = (z**2).sum(axis=0) / n, (s**2).sum(axis=0) / n
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = covariance**2 / (var_z[:, None] * var_s[None, :])
    return np.where(var_z[:, None] > 1e-12, scores, 0.0)


def sap(
    codes: Any,
    factors: Any,
    generator: np.random.Generator,
    *,
    num_train: int = NUM_TRAIN,
    num_test: int = NUM_EVAL,
    continuous_factors: bool = False,
) -> dict[str, Any]:
    """The separated attribute predictability (Kumar et al. 2018, section 3),
    disentanglement_lib's `compute_sap` (defaults num_train 10,000, num_test 5,000,
    continuous_factors False in its study).

    Score matrix (D, K): for discrete factors, the accuracy on num_test rows of a
    LinearSVC(C=0.01, class_weight="balanced") fitted on num_train other rows to predict
    factor j from latent i alone (a constant latent scores the majority-class accuracy,
    unfitted); sap = mean over factors of the largest minus the second largest score of
    the factor's column (with one latent, the second is 0).

    Discrete SAP of a perfect code is well below 1: an uninformative latent still scores
    about chance accuracy (1/n_k with balanced classes), and a one-vs-rest linear classifier
    of one feature separates the extreme values of a factor better than its middle ones.
    continuous_factors=True gives disentanglement_lib's other branch: the R^2 of a linear
    fit on the training rows, for which a perfect code scores about 1.
    """
    metric = "sap"
    codes, factors, train, test = _held_out(codes, factors, generator, metric, num_train, num_test)
    converged = True
    if continuous_factors:
        scores = _sap_matrix_continuous(codes[train], factors[train].astype(np.float64))
    else:
        scores, converged = _sap_matrix_discrete(codes, factors, train, test, generator)
    top = np.sort(scores, axis=0)[::-1]
    second = top[1] if len(top) > 1 else np.zeros(scores.shape[1])
    return {
        "sap": float(np.mean(top[0] - second)),
        "score_matrix": scores.tolist(),
        "continuous_factors": bool(continuous_factors),
        "converged": converged,
        "num_train": num_train,
        "num_test": num_test,
    }


# ---------------------------------------------------------------- InfoMEC


def _one_hot(codes: np.ndarray) -> np.ndarray:
    columns = []
    for j in range(codes.shape[1]):
        labels, n = _labels(codes[:, j])
        columns.append(np.eye(n)[labels])
    return np.concatenate(columns, axis=1)


def _log_loss(features: np.ndarray, labels: np.ndarray, seed: int) -> tuple[float, bool]:
    """Training log loss (nats, unweighted) of the InfoMEC authors' logistic regression:
    multinomial, lbfgs, unpenalised, class_weight balanced, 100 iterations, intercept."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    # C = inf is no penalty: scikit-learn >= 1.8 deprecates penalty=None for it.
    model = LogisticRegression(
        C=np.inf,
        solver="lbfgs",
        class_weight="balanced",
        max_iter=INFOE_MAX_ITER,
        fit_intercept=True,
        random_state=seed,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        warnings.simplefilter("ignore", RuntimeWarning)  # overflow of diverging weights
        model.fit(features, labels)
    proba = np.clip(model.predict_proba(features), 1e-15, 1.0)
    column = np.searchsorted(model.classes_, labels)
    loss = float(-np.mean(np.log(proba[np.arange(len(labels)), column])))
    return loss, not any(issubclass(w.category, ConvergenceWarning) for w in caught)


def infomec(
    codes: Any,
    factors: Any,
    generator: np.random.Generator,
    *,
    num_samples: int = NUM_TRAIN,
    num_bins: int = NUM_BINS,
    discrete_latents: bool | None = None,
) -> dict[str, Any]:
    """InfoM, InfoC and InfoE (Hsu et al. 2023, "Disentanglement via latent quantization",
    section 5) on num_samples rows drawn without replacement (default 10,000; the authors
    score a validation set).

    NMI[k, j] = I(s_k; z_j) / H(s_k) (K, D). Discrete latents (QLAE's codes) count each
    distinct value as its own bin, an exact MI as the authors'; continuous latents are cut
    into num_bins equal-width bins (`discretize`), a fixed-binning variant: the authors use
    scikit-learn's k-nearest-neighbour estimator (mutual_info_classif, 10 neighbours) for
    continuous latents. discrete_latents=None decides per call: discrete when every latent
    column takes at most num_bins distinct values.

    Active latents (the authors' pruning): range > 0 when discrete, else range > max range /
    20. With NMI restricted to the A active latents:

        InfoM = (mean_j max_k NMI[k, j] / sum_k NMI[k, j] - 1/K) / (1 - 1/K)
        InfoC = (mean_k max_j NMI[k, j] / sum_j NMI[k, j] - 1/A) / (1 - 1/A)

    A latent informative about no factor (a zero column sum) counts with the ratio 1/K, a
    factor captured by no latent with 1/A: both contribute 0 after normalisation instead of
    the authors' 0/0. With one factor InfoM is 1.0 and with one active latent InfoC is 1.0
    (the normalisations divide by 0); with no active latent both are 0.

    InfoE = mean over factors of (H_null - CE_k) / H_null: CE_k the training log loss of a
    multinomial logistic regression (lbfgs, unpenalised, class_weight balanced, 100
    iterations, intercept) predicting s_k from all the latents (standardised; one-hot when
    discrete), H_null that of the same model fitted on all-zero features.
    """
    metric = "infomec"
    _positive(metric, num_samples=num_samples, num_bins=num_bins)
    codes, factors = check_inputs(codes, factors, num_samples, metric, f"num_samples={num_samples}")
    rows = _subsample(len(codes), num_samples, generator)
    z, s = codes[rows], factors[rows]
    _require_varied(s, metric, "num_samples")
    if discrete_latents is None:
        discrete_latents = all(len(np.unique(z[:, j])) <= num_bins for j in range(z.shape[1]))
    if discrete_latents:
        bins = np.stack([_labels(z[:, j])[0] for j in range(z.shape[1])], axis=1)
    else:
        bins = discretize(z, num_bins)
    nmi = mutual_information_matrix(bins, s).T / _entropies(s)[:, None]  # (K, D)
    ranges = z.max(axis=0) - z.min(axis=0)
    active = ranges > 0 if discrete_latents else ranges > ranges.max() / 20
    k, a = s.shape[1], int(active.sum())
    pruned = nmi[:, active]
    if a == 0:
        infom = infoc = 0.0
    else:
        sums = pruned.sum(axis=0)
        ratio = np.where(sums > 0, pruned.max(axis=0) / np.where(sums > 0, sums, 1), 1 / k)
        infom = 1.0 if k == 1 else float((ratio.mean() - 1 / k) / (1 - 1 / k))
        sums = pruned.sum(axis=1)
        ratio = np.where(sums > 0, pruned.max(axis=1) / np.where(sums > 0, sums, 1), 1 / a)
        infoc = 1.0 if a == 1 else float((ratio.mean() - 1 / a) / (1 - 1 / a))
    if discrete_latents:
        widest = max(len(np.unique(z[:, j])) for j in range(z.shape[1]))
        if widest > MAX_DISCRETE_VALUES:
            raise AekitError(
                f"{metric}: discrete_latents=True but a latent takes {widest} distinct values "
                f"(at most {MAX_DISCRETE_VALUES} are one-hot encoded); pass discrete_latents=False"
            )
        features = _one_hot(z)
    else:
        spread = z.std(axis=0)
        features = (z - z.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    null = np.zeros((len(z), 1))
    explicitness, converged = [], True
    for j in range(k):
        labels = s[:, j]
        loss, ok = _log_loss(features, labels, _seed(generator))
        null_loss, _ = _log_loss(null, labels, _seed(generator))
        converged &= ok
        explicitness.append((null_loss - loss) / null_loss)
    return {
        "infom": infom,
        "infoc": infoc,
        "infoe": float(np.mean(explicitness)),
        "infoe_per_factor": [float(e) for e in explicitness],
        "nmi": nmi.tolist(),
        "active_latents": np.flatnonzero(active).tolist(),
        "discrete_latents": bool(discrete_latents),
        "infoe_converged": converged,
        "num_samples": num_samples,
        "num_bins": num_bins,
    }


# ---------------------------------------------------------------- all of them


def _children(generator: np.random.Generator, n: int) -> list[np.random.Generator]:
    if hasattr(generator, "spawn"):  # numpy >= 1.25
        return generator.spawn(n)
    return [np.random.default_rng(s) for s in generator.integers(2**63, size=n)]


def all_metrics(
    codes: Any,
    factors: Any,
    generator: np.random.Generator,
    *,
    batch_size: int = BETA_VAE_BATCH,
    num_train: int = NUM_TRAIN,
    num_test: int = NUM_EVAL,
    num_variance_estimate: int = NUM_VARIANCE_ESTIMATE,
    prune_threshold: float = PRUNE_THRESHOLD,
    num_bins: int = NUM_BINS,
    num_samples: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Every metric of this module: {"beta_vae", "factor_vae", "mig", "dci", "sap",
    "infomec"}, each with its own generator spawned from `generator` (so that one metric's
    draws do not shift another's, and a metric gives the same value alone from the same
    child). num_train and num_test are every metric's training and evaluation sizes
    (num_test is BetaVAE's and FactorVAE's num_eval); num_bins is MIG's and InfoMEC's;
    num_samples (InfoMEC's) defaults to num_train."""
    codes, factors = check_inputs(codes, factors, 2, "all_metrics")
    children = _children(generator, 6)
    sizes = {"num_train": num_train, "num_eval": num_test}
    return {
        "beta_vae": beta_vae_score(codes, factors, children[0], batch_size=batch_size, **sizes),
        "factor_vae": factor_vae_score(
            codes,
            factors,
            children[1],
            batch_size=batch_size,
            **sizes,
            num_variance_estimate=num_variance_estimate,
            prune_threshold=prune_threshold,
        ),
        "mig": mig(codes, factors, children[2], num_train=num_train, num_bins=num_bins),
        "dci": dci(codes, factors, children[3], num_train=num_train, num_test=num_test),
        "sap": sap(codes, factors, children[4], num_train=num_train, num_test=num_test),
        "infomec": infomec(
            codes,
            factors,
            children[5],
            num_samples=num_train if num_samples is None else num_samples,
            num_bins=num_bins,
        ),
    }
