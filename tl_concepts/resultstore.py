"""One resumable-results store for the LLM stages (explanations, concept labels, descriptors).

A stage's results are records (JSON dicts), one per item, each carrying the **input key**
of what produced it (a :func:`tl_concepts.fingerprint.fingerprint` of the item, prompt
template, LLM identity, sampling settings and stage config). The rules, the same for every
stage:

* :meth:`ResultStore.get` serves a record only when its input key equals the current one:
  an answer computed from other inputs is never served (it is recomputed and replaced);
* :meth:`ResultStore.reusable` also applies the failure rule: a record that failed for a
  transient reason (:func:`tl_concepts.llm.base.is_transient`) is recomputed on the next
  run by itself; a permanent failure is kept with its reason until ``retry_failed=True``;
* every write is atomic (:mod:`tl_concepts.atomic`): a reader sees the old record or the
  new one, never half of one; a crash loses at most what was not yet flushed.

Two layouts of the same records:

* ``files`` (a folder): one ``<item id>.json`` per item, written as each item finishes
  (explanations: ``units/<unit id>.json``, read by the report and the hub);
* ``lines`` (a ``.jsonl`` file): one record per line (labels, descriptors: many small
  items). :meth:`ResultStore.flush` appends the new records (fsynced; a torn last line left
  by a crash is closed off first and skipped on reading; the last line of an item wins);
  :meth:`ResultStore.compact` rewrites the file atomically, one line per item sorted by id
  (the stages call it when they finish, so a file does not depend on the order in which
  items finished, e.g. on Ray).

Example:
    >>> import tempfile, os
    >>> st = ResultStore(os.path.join(tempfile.mkdtemp(), "r.jsonl"), failed=lambda r: None)
    >>> st.put({"id": "a", "input_key": "k1", "answer": 1})
    >>> st.get("a", "k1")["answer"], st.get("a", "k2")
    (1, None)
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from tl_concepts.atomic import write_json, write_text
from tl_concepts.errors import StoreError
from tl_concepts.llm.base import is_transient

log = logging.getLogger("tl_concepts.resultstore")

Record = dict[str, Any]
FailureKinds = Callable[[Record], "Sequence[str] | None"]
"""``failed(record)``: None when the record is a final answer (accepted or not worth asking
again, e.g. too few activations), else the LLM failure kinds that made it fail."""


def needs_compute(record: Record | None, failed: FailureKinds, retry_failed: bool = False) -> bool:
    """True when an item must be (re)computed: no record of the current inputs, a failure
    with a transient kind, or, with ``retry_failed``, any failure."""
    if record is None:
        return True
    kinds = failed(record)
    if kinds is None:
        return False
    return retry_failed or not kinds or any(is_transient(k) for k in kinds)


class ResultStore:
    """Records of one stage keyed by item id, each with the input key that produced it.

    Args:
        path: a ``.jsonl`` file (``lines`` layout) or a folder (``files`` layout).
        failed: ``failed(record)`` -> None for a final answer, else its failure kinds.
        id_field: the record field holding the item id.
        key_field: the record field holding the input key.
        layout: ``"files"`` or ``"lines"`` (default: ``lines`` for a ``.jsonl`` path).
        dumps: JSON settings of the ``files`` layout (``write_json`` keyword arguments).
    """

    def __init__(self, path: str | os.PathLike[str], *, failed: FailureKinds, id_field: str = "id",
                 key_field: str = "input_key", layout: str | None = None, **dumps: Any) -> None:
        self.path = Path(path)
        self.layout = layout or ("lines" if self.path.suffix == ".jsonl" else "files")
        if self.layout not in ("files", "lines"):
            raise ValueError(f"unknown layout {self.layout!r}: use 'files' or 'lines'")
        self.failed = failed
        self.id_field, self.key_field = id_field, key_field
        self.dumps = dumps
        self.ignored = 0
        """Lines read without an item id or input key (older formats): never served."""
        self._lines: dict[str, Record] = {}
        self._pending: list[Record] = []
        self._n_read = 0
        if self.layout == "lines":
            self._read_lines()

    # -- reading
    def _read_lines(self) -> None:
        if not self.path.exists():
            return
        for line in self.path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            self._n_read += 1
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn line from an interrupted write
            if not isinstance(rec, dict):
                continue
            if rec.get(self.id_field) and rec.get(self.key_field):
                self._lines[str(rec[self.id_field])] = rec
            else:
                self.ignored += 1

    def file(self, item_id: str) -> Path:
        """The file of ``item_id`` (``files`` layout)."""
        return self.path / f"{item_id}.json"

    def latest(self, item_id: str) -> Record | None:
        """The stored record of ``item_id`` whatever its inputs (None when absent or
        unreadable: an unreadable file is recomputed and rewritten)."""
        if self.layout == "lines":
            return self._lines.get(str(item_id))
        try:
            rec = json.loads(self.file(item_id).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return rec if isinstance(rec, dict) else None

    def get(self, item_id: str, input_key: str) -> Record | None:
        """The record of ``item_id`` computed from ``input_key``'s inputs, else None."""
        rec = self.latest(item_id)
        if rec is None or rec.get(self.key_field) != input_key:
            return None
        return rec

    def reusable(self, item_id: str, input_key: str, retry_failed: bool = False) -> Record | None:
        """The record to reuse for this item and inputs, or None when it must be computed
        (see :func:`needs_compute`)."""
        rec = self.get(item_id, input_key)
        return None if needs_compute(rec, self.failed, retry_failed) else rec

    def ids(self) -> list[str]:
        """Item ids stored, sorted."""
        if self.layout == "lines":
            return sorted(self._lines)
        if not self.path.is_dir():
            return []
        return sorted(p.name[:-5] for p in self.path.glob("*.json"))

    def records(self, ids: Sequence[str] | None = None, *, strict: bool = False) -> list[Record]:
        """Records (all sorted by id, or those of ``ids`` that exist, in that order).
        ``strict``: an unreadable file raises :class:`StoreError` instead of being skipped."""
        wanted = self.ids() if ids is None else list(ids)
        out = []
        for i in wanted:
            if self.layout == "files" and strict and self.file(i).exists():
                try:
                    rec = json.loads(self.file(i).read_text(encoding="utf-8"))
                except (OSError, ValueError) as e:
                    raise StoreError(f"cannot read {self.file(i)} ({e}); delete it and rerun the same "
                                     "command to recompute that item") from None
            else:
                rec = self.latest(i)
            if rec is not None:
                out.append(rec)
        return out

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records())

    def __len__(self) -> int:
        return len(self.ids())

    # -- writing
    def put(self, record: Record, *, flush: bool = True) -> None:
        """Store ``record`` (it needs its item id and input key). ``files``: written at once;
        ``lines``: appended on :meth:`flush` (at once with ``flush=True``)."""
        item_id, key = record.get(self.id_field), record.get(self.key_field)
        if not item_id or not key:
            raise ValueError(f"a stored result needs its {self.id_field!r} and {self.key_field!r}")
        if self.layout == "files":
            write_json(self.file(str(item_id)), record, **self.dumps)
            return
        self._lines[str(item_id)] = record
        self._pending.append(record)
        if flush:
            self.flush()

    def put_many(self, records: Sequence[Record]) -> None:
        """Store several records, then flush once."""
        for r in records:
            self.put(r, flush=False)
        self.flush()

    def remove(self, item_id: str) -> None:
        """Forget ``item_id`` (never leave an older result standing in for a newer one)."""
        if self.layout == "files":
            self.file(item_id).unlink(missing_ok=True)
        elif self._lines.pop(str(item_id), None) is not None:
            self._pending = [r for r in self._pending if str(r[self.id_field]) != str(item_id)]
            self.compact()

    def flush(self) -> None:
        """Append the pending ``lines`` records (fsynced). No-op for ``files``."""
        if self.layout != "lines" or not self._pending:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        torn = False
        if self.path.exists() and self.path.stat().st_size:
            with self.path.open("rb") as f:
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"  # an interrupted write left half a line: close it off
        with self.path.open("a", encoding="utf-8") as f:
            f.write(("\n" if torn else "") + "".join(json.dumps(r, ensure_ascii=False) + "\n"
                                                    for r in self._pending))
            f.flush()
            os.fsync(f.fileno())
        self._n_read += len(self._pending)
        self._pending = []

    def compact(self) -> None:
        """Rewrite a ``lines`` file atomically: one line per item, sorted by id (older lines of
        an item, torn lines and lines without a key are dropped). No-op when already so."""
        if self.layout != "lines":
            return
        self.flush()
        if self._n_read == len(self._lines) and list(self._lines) == sorted(self._lines):
            return
        text = "".join(json.dumps(self._lines[k], ensure_ascii=False) + "\n" for k in sorted(self._lines))
        write_text(self.path, text)
        self._lines = {k: self._lines[k] for k in sorted(self._lines)}
        self._n_read = len(self._lines)

    def __repr__(self) -> str:
        return f"ResultStore({str(self.path)!r}, {self.layout}, {len(self)} records)"


__all__ = ["ResultStore", "needs_compute"]
