"""The Performance pane: live pyqtgraph charts of the metrics."""

from .pane import PerformancePane

__all__ = ["PerformancePane"]
