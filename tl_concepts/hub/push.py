"""Publish a dataset kind with its card: to the Hub (:func:`publish`) or a folder (:func:`save_local`).

Publishing order: build the dataset and render the card (both fail here, before any
network call, on bad data or a bad template) -> check the token (``whoami``) -> create the
repo -> let the Hub validate the card's YAML -> push the parquet data (``datasets`` writes
``dataset_info``/``configs`` into README.md) -> upload our card merged with that metadata.
Only when every step succeeded is a :class:`PublishResult` returned; otherwise a
:class:`HubError` says which step failed and what was already on the Hub.

The token is passed to the clients only; it is never written to disk, logs, cards or errors.

Example:
    >>> from tl_concepts.hub import CardMeta, publish                                # doctest: +SKIP
    >>> publish("explanations", "runs/explain", CardMeta(pretty_name="SmolLM2 neurons"),
    ...         "me/smollm2-neurons", token=os.environ["HF_TOKEN"])                      # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from tl_concepts.atomic import replacing_dir

from .cards import CardMeta, card_body, merge_with_hub_readme, parse_metadata, render_card, stage_info
from .schemas import stage_metrics, to_dataset

DATA_FILE = "data/train-00000-of-00001.parquet"
SENTENCES_FILE = "sentences/train-00000-of-00001.parquet"


class HubError(RuntimeError):
    """Publishing failed; the message says at which step and what to do."""


class HubAuthError(HubError):
    """No token, or the Hub rejected it."""


class HubPermissionError(HubError):
    """The token may not write to that repo (e.g. it belongs to someone else)."""


class EmptyDatasetError(HubError, ValueError):
    """Nothing to publish."""


@dataclass
class PublishResult:
    """A dataset that is fully on the Hub: data and card."""

    repo_id: str
    """``owner/name`` of the dataset repo."""
    kind: str
    """Dataset kind (``explanations``, ``concepts``, ...)."""
    url: str
    """Web address of the repo."""
    data_commit: str
    """Commit that added the parquet data."""
    card_commit: str
    """Commit that added the card (the head after publishing)."""
    n_rows: int
    """Rows published."""
    private: bool
    """Whether the repo is private."""


def _prepare(kind: str, data: Any, meta: CardMeta, repo_id: str, templates: Any,
             configs: list[str] | None = None) -> tuple[Any, str]:
    ds = to_dataset(kind, data)
    if not meta.metrics:
        found = stage_metrics(kind, data)
        if found:
            meta = dataclasses.replace(meta, metrics=found)
    if not meta.stage_settings or not meta.results:
        settings, results = stage_info(kind, data)
        meta = dataclasses.replace(meta, stage_settings=meta.stage_settings or settings,
                                   results=meta.results or results)
    if len(ds) == 0:
        raise EmptyDatasetError(f"the {kind} dataset is empty: nothing to publish (run the {kind} stage first)")
    return ds, render_card(kind, ds, meta, repo_id, templates=templates, configs=configs)


def _sentences(kind: str, data: Any, sentences: Any) -> Any:
    """The sentence table of a concept set (members point into it), or None."""
    if kind != "concepts":
        return None
    if sentences is None:
        from tl_concepts.concepts.model import ConceptSet

        if isinstance(data, ConceptSet) and data.sentences:
            from tl_concepts.concepts.dataset import sentences_dataset

            return sentences_dataset(data)
        return None
    from datasets import Dataset

    return sentences if isinstance(sentences, Dataset) else Dataset.from_list(list(sentences))


def _http_status(e: BaseException) -> int | None:
    resp = getattr(e, "response", None)
    return getattr(resp, "status_code", None)


def publish(kind: str, data: Any, meta: CardMeta, repo_id: str, *, private: bool = False,
            token: str | None = None, sentences: Any = None, templates: str | os.PathLike | None = None,
            commit_message: str | None = None) -> PublishResult:
    """Push ``data`` as a ``kind`` dataset with its card to the Hub repo ``repo_id``.

    ``data``: whatever :func:`tl_concepts.hub.schemas.to_dataset` accepts. ``token``: a Hub
    write token (default: ``HF_TOKEN`` / the stored login). For concepts, the sentence texts
    members point to go in a second config ``sentences`` (from the ``ConceptSet`` or
    ``sentences``).

    Example:
        >>> publish("rankings", rows, CardMeta(pretty_name="Rankings"), "me/rankings", token=tok)  # doctest: +SKIP
    """
    from huggingface_hub import DatasetCard, HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError

    sent = _sentences(kind, data, sentences)
    ds, card = _prepare(kind, data, meta, repo_id, templates, ["default"] + (["sentences"] if sent is not None else []))
    token = token or get_token()
    if not token:
        raise HubAuthError("no Hugging Face token: pass token=..., set HF_TOKEN, or run `hf auth login` "
                           "(a token with write access, from https://huggingface.co/settings/tokens)")
    api = HfApi(token=token)
    step = "checking the token"
    data_commit = ""
    try:
        try:
            user = api.whoami()["name"]
        except HfHubHTTPError as e:
            if _http_status(e) == 401:
                raise HubAuthError("the Hub rejected the token (401): it is wrong, expired or revoked; "
                                   "create a write token at https://huggingface.co/settings/tokens") from None
            raise
        step = "creating the repo"
        try:
            url = str(api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True))
        except HfHubHTTPError as e:
            if _http_status(e) == 403:
                raise HubPermissionError(f"{user} may not create or write {repo_id} (403): it belongs to another "
                                         "namespace; publish under your own name or an organisation you "
                                         "can write to") from None
            raise
        step = "validating the card"
        DatasetCard(card).validate(repo_type="dataset")
        step = "pushing the data"
        info = ds.push_to_hub(repo_id, private=private, token=token,
                              commit_message=commit_message or f"tl-concepts: {kind} data")
        data_commit = info.oid
        if sent is not None:
            info = sent.push_to_hub(repo_id, config_name="sentences", data_dir="sentences", token=token,
                                    commit_message="tl-concepts: sentence texts of concept members")
            data_commit = info.oid
        step = "uploading the card"
        from huggingface_hub import hf_hub_download

        readme = Path(hf_hub_download(repo_id, "README.md", repo_type="dataset", revision=data_commit,
                                      token=token)).read_text(encoding="utf-8")
        final = merge_with_hub_readme(card, readme)
        card_info = api.upload_file(path_or_fileobj=final.encode("utf-8"), path_in_repo="README.md",
                                    repo_id=repo_id, repo_type="dataset",
                                    commit_message=f"tl-concepts: {kind} dataset card")
    except HubError:
        raise
    except HfHubHTTPError as e:
        status = _http_status(e)
        where = (f"; the data is on the Hub at commit {data_commit} but the card is not, so the dataset is NOT "
                 "published: rerun publish") if data_commit else "; nothing was published"
        if status == 403:
            raise HubPermissionError(f"the Hub refused {step} for {repo_id} (403){where}") from None
        if status == 401:
            raise HubAuthError(f"the Hub rejected the token while {step} (401){where}") from None
        raise HubError(f"Hub error while {step} for {repo_id} (HTTP {status}): {_short(e)}{where}") from None
    return PublishResult(repo_id=repo_id, kind=kind, url=url, data_commit=data_commit,
                         card_commit=card_info.oid, n_rows=len(ds), private=private)


def _short(e: BaseException) -> str:
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    return msg[:300]


def save_local(kind: str, data: Any, meta: CardMeta, out_dir: str | os.PathLike, *, repo_id: str | None = None,
               sentences: Any = None, templates: str | os.PathLike | None = None) -> Path:
    """Write ``data`` as a ``kind`` dataset folder: ``data/*.parquet`` + ``README.md`` (the card).

    The folder is written next to ``out_dir`` and moved into place, so a crash leaves the old
    folder (or none), never half of one. ``load_dataset(out_dir)`` and :func:`tl_concepts.hub.load`
    both read it. ``repo_id`` only sets the name in the card's loading example.

    Example:
        >>> save_local("rankings", rows, CardMeta(pretty_name="Rankings"), "runs/x/rankings")  # doctest: +SKIP
    """
    out = Path(out_dir)
    sent = _sentences(kind, data, sentences)
    ds, card = _prepare(kind, data, meta, repo_id or f"<you>/{out.name}", templates,
                        ["default"] + (["sentences"] if sent is not None else []))
    meta_yaml = parse_metadata(card)
    configs = [{"config_name": "default", "data_files": [{"split": "train", "path": DATA_FILE}]}]
    if sent is not None:
        configs.append({"config_name": "sentences", "data_files": [{"split": "train", "path": SENTENCES_FILE}]})
    meta_yaml["configs"] = configs
    text = f"---\n{yaml.safe_dump(meta_yaml, sort_keys=False, allow_unicode=True)}---\n{card_body(card)}"
    with replacing_dir(out) as tmp:
        (tmp / "data").mkdir()
        ds.to_parquet(str(tmp / DATA_FILE))
        if sent is not None:
            (tmp / "sentences").mkdir()
            sent.to_parquet(str(tmp / SENTENCES_FILE))
        (tmp / "README.md").write_text(text, encoding="utf-8")
    return out


def publish_all(datasets: "dict[str, tuple[Any, CardMeta]]", repo_prefix: str, *, private: bool = False,
                token: str | None = None) -> dict[str, PublishResult]:
    """Publish several kinds, each to ``<repo_prefix>-<kind>``; returns kind -> :class:`PublishResult`.

    Stops at the first failure (a :class:`HubError` naming the kind); kinds published before it
    stay published.

    Example:
        >>> res = publish_all({"probes": (probes, meta)}, "me/run1", token=tok)   # doctest: +SKIP
        >>> repo_urls(res)                                                         # doctest: +SKIP
        {'probes': 'https://huggingface.co/datasets/me/run1-probes'}
    """
    out: dict[str, PublishResult] = {}
    for kind, (data, meta) in datasets.items():
        try:
            out[kind] = publish(kind, data, meta, f"{repo_prefix}-{kind}", private=private, token=token)
        except EmptyDatasetError:
            raise
        except HubError as e:
            done = ", ".join(r.url for r in out.values()) or "none"
            raise type(e)(f"{kind}: {e} (already published: {done})") from None
    return out


def repo_urls(results: "dict[str, PublishResult] | list[PublishResult]") -> dict[str, str]:
    """Kind -> web address of each published dataset repo (for ``run --push-to-hub`` to print).

    Example:
        >>> repo_urls([PublishResult("me/x-probes", "probes", "https://huggingface.co/datasets/me/x-probes",
        ...                          "a", "b", 3, False)])
        {'probes': 'https://huggingface.co/datasets/me/x-probes'}
    """
    items = results.values() if isinstance(results, dict) else results
    return {r.kind: r.url for r in items}
