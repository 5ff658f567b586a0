"""Publish tl-concepts results as ``datasets.Dataset``s with dataset cards, on the Hub or on disk.

Example:
    >>> from tl_concepts.hub import CardMeta, publish, load_from_hub, save_local, load   # doctest: +SKIP
    >>> meta = meta_from_manifest(store.manifest, pretty_name="SmolLM2 neurons")         # doctest: +SKIP
    >>> publish("explanations", "runs/explain", meta, "me/smollm2-neurons", token=tok)   # doctest: +SKIP
    >>> load_from_hub("me/smollm2-neurons").objects()[0]["llm"]["explanation"]["text"]   # doctest: +SKIP
"""
from .cards import CardError, CardMeta, meta_from_manifest, render_card, templates_dir
from .load import LoadedDataset, load, load_from_hub
from .push import (EmptyDatasetError, HubAuthError, HubError, HubPermissionError, PublishResult, publish,
                   publish_all, repo_urls, save_local)
from .schemas import KINDS, SchemaError, features, from_dataset, to_dataset

__all__ = [
    "CardError", "CardMeta", "EmptyDatasetError", "HubAuthError", "HubError", "HubPermissionError", "KINDS",
    "LoadedDataset", "PublishResult", "SchemaError", "features", "from_dataset", "load", "load_from_hub",
    "meta_from_manifest", "publish", "publish_all", "render_card", "repo_urls", "save_local", "templates_dir", "to_dataset",
]
