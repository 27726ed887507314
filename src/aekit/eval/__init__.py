from aekit.eval.metrics import evaluate

__all__ = ["evaluate"]
