"""Static HTML report of explanations and concepts (self-contained, works offline).

Example:
    >>> from tl_concepts.report import build_report                                    # doctest: +SKIP
    >>> build_report("runs/x/report", explanations="runs/x/explain", concepts=cs)     # doctest: +SKIP
"""
from .build import build_report, unit_file
from .svg import histogram_svg, scatter_svg

__all__ = ["build_report", "histogram_svg", "scatter_svg", "unit_file"]

from tl_concepts._callable import make_callable  # noqa: E402  (tlc.report(...) calls tl_concepts.api.report)

make_callable(__name__, "report")
