"""Hook points -> activations: streaming capture, on-disk store, exemplar mining."""
from tl_concepts.capture.records import ActivationRecord, UnitRecords

__all__ = ["ActivationRecord", "UnitRecords"]
