"""Figures and the HTML report of a run."""

from aekit.report.html import build_report
from aekit.report.images import image_grid, is_image_shape, save_png

__all__ = ["build_report", "image_grid", "is_image_shape", "save_png"]
