from aekit.eval.codebook import CodeCounter, codebook_health, codebook_health_of
from aekit.eval.gradients import gradient_snr
from aekit.eval.likelihood import importance_sampled_nll, log_likelihood
from aekit.eval.metrics import encode_all, evaluate

__all__ = [
    "CodeCounter",
    "codebook_health",
    "codebook_health_of",
    "encode_all",
    "evaluate",
    "gradient_snr",
    "importance_sampled_nll",
    "log_likelihood",
]
