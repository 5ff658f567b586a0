"""Load a published dataset back: from the Hub (:func:`load_from_hub`) or a folder (:func:`load`).

Both read the card's ``tl_concepts.kind`` to know the kind, cast the data to the kind's
features and return a :class:`LoadedDataset`; ``.objects()`` gives the stage's objects.

Example:
    >>> loaded = load_from_hub("me/smollm2-neurons")       # doctest: +SKIP
    >>> loaded.kind, len(loaded.dataset)                    # doctest: +SKIP
    ('explanations', 40)
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cards import parse_metadata
from .push import DATA_FILE, SENTENCES_FILE
from .schemas import SchemaError, check_kind, features, from_dataset


@dataclass
class LoadedDataset:
    """A dataset read back, with its card."""

    kind: str
    """Dataset kind."""
    dataset: Any
    """The ``datasets.Dataset`` (train split), cast to the kind's features."""
    card: str
    """The card text (README.md)."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """The card's YAML metadata."""
    sentences: Any = None
    """For concepts: the (sentence, text) table members point to, when published."""

    def objects(self) -> list[Any]:
        """The stage objects (``Concept``s, explain result dicts, or row dicts)."""
        return from_dataset(self.kind, self.dataset)


def _kind(metadata: dict[str, Any], kind: str | None, where: str) -> str:
    found = (metadata.get("tl_concepts") or {}).get("kind")
    if kind is not None:
        check_kind(kind)
        if found is not None and found != kind:
            raise SchemaError(f"{where} holds a {found} dataset, not {kind}")
        return kind
    if found is None:
        raise SchemaError(f"{where} has no tl_concepts.kind in its card; pass kind=...")
    check_kind(found)
    return found


def load_from_hub(repo_id: str, *, kind: str | None = None, revision: str | None = None,
                  token: str | None = None) -> LoadedDataset:
    """Read a dataset published with :func:`tl_concepts.hub.publish`.

    Example:
        >>> load_from_hub("me/rankings", token=tok).dataset[0]["units"]    # doctest: +SKIP
    """
    from datasets import load_dataset
    from huggingface_hub import hf_hub_download

    readme = Path(hf_hub_download(repo_id, "README.md", repo_type="dataset", revision=revision,
                                  token=token)).read_text(encoding="utf-8")
    metadata = parse_metadata(readme)
    k = _kind(metadata, kind, repo_id)
    ds = load_dataset(repo_id, "default", split="train", revision=revision, token=token)
    ds = _cast(ds, k)
    sentences = None
    if any(c.get("config_name") == "sentences" for c in metadata.get("configs") or []):
        sentences = load_dataset(repo_id, "sentences", split="train", revision=revision, token=token)
    return LoadedDataset(kind=k, dataset=ds, card=readme, metadata=metadata, sentences=sentences)


def load(path: str | os.PathLike, *, kind: str | None = None) -> LoadedDataset:
    """Read a dataset folder written by :func:`tl_concepts.hub.save_local`."""
    from datasets import Dataset

    d = Path(path)
    if not (d / "README.md").is_file() or not (d / DATA_FILE).is_file():
        raise FileNotFoundError(f"{d} is not a tl-concepts dataset folder (needs README.md and {DATA_FILE}); "
                                "write one with tl_concepts.hub.save_local")
    card = (d / "README.md").read_text(encoding="utf-8")
    metadata = parse_metadata(card)
    k = _kind(metadata, kind, str(d))
    ds = _cast(Dataset.from_parquet(str(d / DATA_FILE), keep_in_memory=True), k)
    sentences = Dataset.from_parquet(str(d / SENTENCES_FILE), keep_in_memory=True) \
        if (d / SENTENCES_FILE).is_file() else None
    return LoadedDataset(kind=k, dataset=ds, card=card, metadata=metadata, sentences=sentences)


def _cast(ds: Any, kind: str) -> Any:
    feats = features(kind)
    if set(ds.column_names) != set(feats):
        raise SchemaError(f"the data has columns {sorted(ds.column_names)}, a {kind} dataset has {sorted(feats)}")
    ds = ds.select_columns(list(feats))
    return ds if ds.features == feats else ds.cast(feats)
