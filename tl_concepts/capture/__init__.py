"""Hook points -> activations: streaming capture, on-disk store, exemplar mining."""
from tl_concepts.capture.exemplars import ExemplarConfig, select_exemplars
from tl_concepts.capture.records import ActivationRecord, UnitRecords
from tl_concepts.capture.runner import CaptureConfig, RayCapture, capture
from tl_concepts.capture.store import ActivationStore

__all__ = ["ActivationRecord", "ActivationStore", "CaptureConfig", "ExemplarConfig", "RayCapture", "UnitRecords",
           "capture", "select_exemplars"]

from tl_concepts._callable import make_callable  # noqa: E402  (tlc.capture(...) calls tl_concepts.api.capture)

make_callable(__name__, "capture")
