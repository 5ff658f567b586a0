"""Static HTML report of every stage (self-contained, works offline from ``file://``).

Example:
    >>> from tl_concepts.report import build_report                 # doctest: +SKIP
    >>> build_report("runs/x/report", run_dir="runs/x")             # doctest: +SKIP
"""
from .build import build_report, token_cells, unit_file
from .logits import load_logit_effects, logit_effects, save_logit_effects
from .svg import histogram_svg, scatter_svg

__all__ = ["build_report", "histogram_svg", "load_logit_effects", "logit_effects", "save_logit_effects",
           "scatter_svg", "token_cells", "unit_file"]

from tl_concepts._callable import make_callable  # noqa: E402  (tlc.report(...) calls tl_concepts.api.report)

make_callable(__name__, "report")
