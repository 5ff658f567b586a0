"""In-process backend on a ``transformers`` causal LM: the offline default.

* Default model: the embedded SmolLM2-135M-Instruct (``tl_concepts.models.embedded``);
  any local Hugging Face folder works (``InProcessBackend("/path/to/folder")``), and so do
  a model and tokenizer already in memory (``InProcessBackend(model=m, tokenizer=t)``).
* Next-token distributions are exact, from the logits: concurrent calls are gathered
  into one batched forward pass (right-padded; only the needed positions go through the
  LM head). A candidate of several tokens (e.g. "10" for a tokenizer that splits digits)
  gets its exact chain probability P(t1) P(t2|t1)...; its extra tokens ride in the same
  pass behind a custom attention mask (checked once against plain passes; if the model
  does not take such masks, they get passes of their own).
* Shared prefixes are computed once: the longest token prefix a prompt shares with
  another prompt of its batch (the simulator's instructions, few-shot examples and
  explanation) or with a prefix cached from an earlier batch has its key/value states
  computed once (extending the longest cached prefix of it), and the batch's pass runs
  only the tokens after it. Prefixes are compared as token ids of each full prompt, so
  a split always falls on a token boundary of that prompt's own tokenization.
* Chat uses the tokenizer's chat template (a plain "Role: text" layout when it has none);
  concurrent chats with the same settings are generated as one left-padded batch.
  Greedy at temperature 0.
* Positions are character offsets; ``prompt[:p]`` must end on a token boundary of the
  tokenized prompt, else :class:`PositionError`. Position 0 needs a BOS token (SmolLM2's
  tokenizer adds none). The model loads on first use, so building the backend is cheap
  and a fully cached run never loads it.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .base import LLM, ChatResult, Distributions, Failure, Message, PositionError
from .util import JSON_HINT, as_messages, check_distribution_args, parse_json_answer

log = logging.getLogger("tl_concepts.llm")

EMBEDDED_NAME = "SmolLM2-135M-Instruct"


@dataclass
class _DistJob:
    ids: list[int]
    index: list[int]                 # per position: token index whose output predicts next
    cand_ids: list[list[int]]        # per candidate: its token ids
    probs: list[dict[str, float]] | None = None
    cands: list[str] = field(default_factory=list)


@dataclass
class _Row:
    seq: list[int]                   # tokens of the pass (after the cached prefix)
    pos: list[int]                   # their position ids
    segs: list[tuple[int, int]]      # continuation segments: (start in seq, anchor)
    past: int = 0                    # cached prefix tokens this row sees


_GQA_ATTENTION = "tl_concepts_sdpa_gqa"
"""Name under which :func:`_sdpa_gqa` is registered with ``transformers``."""


def _sdpa_gqa(module: Any, query: Any, key: Any, value: Any, attention_mask: Any,
              dropout: float = 0.0, scaling: float | None = None, **kwargs: Any) -> tuple[Any, None]:
    """SDPA under our custom 4D mask that attends grouped key/value heads in place
    (``enable_gqa``) instead of copying them once per query head, which ``transformers``
    does whenever a mask is given; same numbers, and on CPU about half the attention time.
    Anything unusual (soft-capping, sliding windows, sinks) goes to the stock function."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if (kwargs.get("softcap") is not None or kwargs.get("sliding_window") is not None
            or kwargs.get("s_aux") is not None or kwargs.get("position_bias") is not None
            or attention_mask is None or query.shape[1] == key.shape[1]):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=0.0, scale=scaling, enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


_MIN_PREFIX_SAVING = 64
"""Batched-pass tokens a prefix of its own must save to be worth its batch-1 pass."""


def _common_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token id sequences."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass
class _ChatJob:
    ids: list[int]
    temperature: float
    max_tokens: int
    text: str | None = None
    n_generated: int = 0
    finish: str = "stop"


class InProcessBackend(LLM):
    """A local ``transformers`` causal LM.

    Args:
        path: HF folder (default: the embedded SmolLM2-135M-Instruct).
        model, tokenizer: objects already loaded (instead of ``path``).
        model_id: name shown in results and the ledger (default: the folder name).
        device: torch device (default ``"cpu"``).
        dtype: ``"float32"`` (default), ``"bfloat16"``, ``"float16"``.
        batch_size: most prompts in one forward pass / generation batch.
        max_batch_tokens: most padded tokens in one forward pass.
        batch_window_s: how long a first request waits for others to join its batch.
        context_length: override the model's context window.
        prefix_cache: reuse the key/value states of token prefixes shared by the prompts
            of a batch or seen in earlier batches (same distributions; checked once
            against plain passes).
        min_prefix_tokens: shortest shared prefix worth caching.
        prefix_cache_tokens: most prefix tokens kept cached between batches (least
            recently used go first).
    """

    name = "in-process"

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        model: Any = None,
        tokenizer: Any = None,
        model_id: str | None = None,
        device: str = "cpu",
        dtype: str = "float32",
        batch_size: int = 16,
        max_batch_tokens: int = 16384,
        batch_window_s: float = 0.005,
        context_length: int | None = None,
        prefix_cache: bool = True,
        min_prefix_tokens: int = 16,
        prefix_cache_tokens: int = 8192,
    ) -> None:
        if (model is None) != (tokenizer is None):
            raise ValueError("pass both model= and tokenizer=, or neither")
        if model is not None and path is not None:
            raise ValueError("pass a path or model=/tokenizer=, not both")
        self._embedded = path is None and model is None
        self.path = Path(path) if path is not None else None
        if self.path is not None and not (self.path / "config.json").exists():
            raise FileNotFoundError(f"{self.path} is not a Hugging Face model folder "
                                    "(no config.json)")
        self._model_obj = model
        self._tok_obj = tokenizer
        if model_id:
            self.model = model_id
        elif self._embedded:
            self.model = EMBEDDED_NAME
        elif self.path is not None:
            self.model = self.path.name
        else:
            self.model = f"{getattr(model.config, 'model_type', 'model')}-in-memory"
        self.device = device
        self.dtype = dtype
        self.batch_size = max(1, int(batch_size))
        self.max_batch_tokens = int(max_batch_tokens)
        self.batch_window_s = batch_window_s
        self._context_override = context_length
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()
        self._fingerprint: str | None = None
        self._config_json: dict[str, Any] | None = None
        self._packed_ok: bool | None = None
        self.prefix_cache = prefix_cache
        self.min_prefix_tokens = max(1, int(min_prefix_tokens))
        self.prefix_cache_tokens = int(prefix_cache_tokens)
        self._prefix_store: "OrderedDict[tuple[int, ...], list[tuple[Any, Any]]]" = OrderedDict()
        self._prefix_ok: bool | None = None
        self.prefix_passes = 0
        """Passes that computed a shared prefix's key/value states."""
        self.prefix_tokens_computed = 0
        """Prompt tokens run through those passes."""
        self._dist_batcher = _Batcher(self._run_dist_batch, self._dist_cost, self, "dist")
        self._chat_batcher = _Batcher(self._run_chat_batch, self._chat_cost, self, "chat")
        self.cpu_seconds: dict[str, float] = {"dist": 0.0, "chat": 0.0}
        """CPU time of the thread running the batches, per kind (distributions, chat):
        the model's compute when torch uses one thread (for benchmarks)."""
        self.forward_passes = 0
        """Forward passes / generate calls made (for tests and benchmarks)."""
        self.dist_tokens_computed = 0
        """Prompt tokens of distribution requests run in their batches' passes (after any
        cached prefix; padding and candidates' later tokens not counted)."""
        self.chat_prompt_tokens = 0
        """Prompt tokens of chat requests run through ``generate``."""
        self.chat_generated_tokens = 0
        """Tokens generated for chat requests (up to and including the end token)."""

    def __repr__(self) -> str:
        return f"InProcessBackend(model={self.model!r})"

    # ------------------------------------------------------------------ loading
    def _folder(self) -> Path:
        if self.path is None:
            from tl_concepts.models.embedded import smollm2_hf_dir

            self.path = smollm2_hf_dir()
        return self.path

    @property
    def tokenizer(self) -> Any:
        if self._tok_obj is None:
            with self._load_lock:
                if self._tok_obj is None:
                    from transformers import AutoTokenizer

                    self._tok_obj = AutoTokenizer.from_pretrained(str(self._folder()))
        return self._tok_obj

    @property
    def hf_model(self) -> Any:
        """The ``transformers`` model (loaded on first use)."""
        if self._model_obj is None:
            with self._load_lock:
                if self._model_obj is None:
                    import torch
                    from transformers import AutoModelForCausalLM

                    m = AutoModelForCausalLM.from_pretrained(
                        str(self._folder()), dtype=getattr(torch, self.dtype))
                    # transformers wraps ``to`` in a decorator whose type takes the
                    # device for the model
                    self._model_obj = m.to(self.device).eval()  # type: ignore[arg-type]
        return self._model_obj

    @property
    def context_length(self) -> int | None:  # type: ignore[override]
        if self._context_override:
            return self._context_override
        cfg = self._config()
        for attr in ("max_position_embeddings", "n_positions", "max_sequence_length",
                     "seq_length"):
            v = cfg.get(attr) if isinstance(cfg, dict) else getattr(cfg, attr, None)
            if isinstance(v, int) and v > 0:
                return v
        return None

    def _config(self) -> Any:
        if self._model_obj is not None:
            return self._model_obj.config
        if self._config_json is None:
            self._config_json = json.loads((self._folder() / "config.json").read_text())
        return self._config_json

    def cache_identity(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model, "weights": self.fingerprint(),
                "dtype": self.dtype}

    def fingerprint(self) -> str:
        """sha256 of what determines the answers: config, tokenizer files and weights
        (small files by content, weight files by name and size; in-memory models by a
        sample of every parameter). Computed without loading a model from a folder."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            if self._model_obj is not None and self.path is None:
                import torch

                for name, p in sorted(self._model_obj.state_dict().items()):
                    flat = p.detach().reshape(-1).float().cpu()
                    sample = torch.cat([flat[:64], flat[-64:]]) if flat.numel() > 128 else flat
                    h.update(f"{name}:{tuple(p.shape)}:{float(flat.sum())}".encode())
                    h.update(sample.numpy().tobytes())
                vocab = self._tok_obj.get_vocab()
                h.update(json.dumps(sorted(vocab.items())[:50000]).encode())
                h.update(str(getattr(self._tok_obj, "chat_template", "")).encode())
            else:
                folder = self._folder()
                for f in sorted(folder.iterdir()):
                    if not f.is_file() or f.name == "COMPLETE":
                        continue
                    size = f.stat().st_size
                    h.update(f"{f.name}:{size}".encode())
                    if size < 8 << 20:
                        h.update(f.read_bytes())
            self._fingerprint = h.hexdigest()[:32]
        return self._fingerprint

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    async def aclose(self) -> None:
        return None

    # ------------------------------------------------------------------ positions
    def token_boundaries(self, prompt: str) -> list[int]:
        """The character offsets ``p`` accepted as positions for this prompt."""
        ids, offsets, special = self._encode(prompt)
        out = set()
        if special and special[0]:
            out.add(0)
        for i, (s, e) in enumerate(offsets):
            if not special[i] and e > s and self._index_for(e, offsets, special, len(prompt)) \
                    is not None:
                out.add(e)
        out.add(len(prompt))
        return sorted(out)

    def _encode(self, prompt: str) -> tuple[list[int], list[tuple[int, int]], list[bool]]:
        tok = self.tokenizer
        enc = tok(prompt, return_offsets_mapping=True, add_special_tokens=True)
        ids = list(enc["input_ids"])
        offsets = [tuple(o) for o in enc["offset_mapping"]]
        special_ids = set(getattr(tok, "all_special_ids", []) or [])
        special = [(i in special_ids and s == e) for i, (s, e) in zip(ids, offsets)]
        return ids, offsets, special

    @staticmethod
    def _index_for(p: int, offsets: list[tuple[int, int]], special: list[bool],
                   n_chars: int) -> int | None:
        """Index of the token whose output predicts the token after ``prompt[:p]``."""
        best = None
        for i, (s, e) in enumerate(offsets):
            if special[i]:
                if s == e == 0 and p == 0 and i == 0:
                    best = 0
                continue
            if s < p < e:
                return None  # p is inside this token
            if e == p and e > s:
                best = i
        if p == n_chars and best is None and offsets:
            best = len(offsets) - 1
        return best

    def _positions_to_indices(self, prompt: str, ids: list[int], offsets: list[tuple[int, int]],
                              special: list[bool], positions: list[int]) -> list[int]:
        out = []
        for p in positions:
            idx = self._index_for(p, offsets, special, len(prompt))
            if idx is None:
                if p == 0:
                    raise PositionError(
                        "position 0: this tokenizer adds no BOS token, so there is no "
                        "distribution for the first token; use a position after some text")
                inside = next(((s, e) for (s, e), sp in zip(offsets, special)
                               if not sp and s < p < e), None)
                where = (f"inside the token {prompt[inside[0]:inside[1]]!r} (chars "
                         f"{inside[0]}-{inside[1]})" if inside else "not at the end of a token")
                raise PositionError(
                    f"position {p} ({prompt[max(0, p - 10):p]!r}|{prompt[p:p + 10]!r}) is "
                    f"{where}; positions must fall on token boundaries (see "
                    "token_boundaries(prompt))")
            out.append(idx)
        return out

    # ------------------------------------------------------------------ distributions
    async def anext_token_distributions(self, prompt: str, positions: Sequence[int],
                                        candidates: Sequence[str], *,
                                        stage: str = "default") -> Distributions:
        pos, cands = check_distribution_args(prompt, positions, candidates)
        await asyncio.to_thread(lambda: self.tokenizer)
        ids, offsets, special = self._encode(prompt)
        cand_ids = []
        for c in cands:
            t = self.tokenizer(c, add_special_tokens=False)["input_ids"]
            if not t:
                raise ValueError(f"candidate {c!r} encodes to no token")
            cand_ids.append(list(t))
        ctx = self.context_length
        need = len(ids) + max(len(c) for c in cand_ids) - 1  # a candidate's later tokens
        if ctx is not None and need > ctx:
            extra = need - len(ids)
            return Distributions(None, failure=Failure(
                "context_overflow", f"prompt is {len(ids)} tokens"
                + (f" + {extra} for the longest candidate" if extra else "")
                + f" > context length {ctx} of {self.model}"),
                model=self.model, backend=self.name, prompt_tokens=len(ids))
        index = self._positions_to_indices(prompt, ids, offsets, special, pos)
        job = _DistJob(ids, index, cand_ids, cands=cands)
        await self._dist_batcher.submit(job)
        return Distributions(job.probs, method="logits", model=self.model, backend=self.name,
                             prompt_tokens=len(ids), requests=1, absent=[[] for _ in pos])

    def _dist_cost(self, job: Any) -> int:
        extra = sum(len(c) - 1 for c in job.cand_ids) * len(job.index)
        return len(job.ids) + extra

    def _run_dist_batch(self, jobs: list[_DistJob]) -> None:
        import torch

        multi = any(len(c) > 1 for j in jobs for c in j.cand_ids)
        with self._run_lock, torch.inference_mode():
            self.hf_model  # noqa: B018 - load before the checks
            if multi and self._packed_ok is None:
                self._packed_ok = self._check_packed()
            if multi and not self._packed_ok:
                self._run_dist_unpacked(jobs)
                return
            if self.prefix_cache and self._prefix_ok is None:
                self._prefix_ok = self._check_prefix()
            self._compute_dists(jobs, multi, use_prefix=bool(self.prefix_cache and self._prefix_ok))
            self.forward_passes += 1

    def _compute_dists(self, jobs: list[_DistJob], multi: bool, use_prefix: bool) -> None:
        """Fill ``job.probs`` for every job with one batched pass over the prompts' suffixes
        (after their cached shared prefixes when ``use_prefix``)."""
        import torch

        model = self.hf_model
        starts = self._prefix_plan(jobs) if use_prefix else [0] * len(jobs)
        past = self._batch_past(jobs, starts) if any(starts) else None
        rows: list[_Row] = []
        for j, p in zip(jobs, starts):
            seq = list(j.ids[p:])
            pos_ids = list(range(p, len(j.ids)))
            segs: list[tuple[int, int]] = []  # (start in seq, anchor: suffix tokens it sees)
            if multi:
                for idx in j.index:
                    for c in j.cand_ids:
                        if len(c) > 1:
                            segs.append((len(seq), idx + 1 - p))
                            seq.extend(c[:-1])
                            pos_ids.extend(range(idx + 1, idx + len(c)))
            rows.append(_Row(seq, pos_ids, segs, p))
        self.dist_tokens_computed += sum(len(j.ids) - p for j, p in zip(jobs, starts))
        hidden, _ = self._forward(rows, packed=multi, past=past)
        lm = model.get_output_embeddings()
        for b, j in enumerate(jobs):
            row = rows[b]
            nc = len(j.cand_ids)
            need = [idx - row.past for idx in j.index]  # hidden states that go to the LM head
            # log P(candidate) = sum over its tokens of (logit - logsumexp) at the state that
            # predicts it: ``terms`` lists (state, token id, candidate slot) per token
            at: list[int] = []
            tok_ids: list[int] = []
            group: list[int] = []
            seg_iter = iter(row.segs)
            for k in range(len(j.index)):
                for ci, c in enumerate(j.cand_ids):
                    g = k * nc + ci
                    at.append(k)
                    tok_ids.append(c[0])
                    group.append(g)
                    if len(c) > 1:
                        start, _anchor = next(seg_iter)
                        first = len(need)
                        need.extend(range(start, start + len(c) - 1))
                        for t in range(1, len(c)):
                            at.append(first + t - 1)
                            tok_ids.append(c[t])
                            group.append(g)
            logits, lse = self._logits_lse(lm, hidden[b, need])
            at_t = torch.tensor(at, device=logits.device)
            terms = logits[at_t, torch.tensor(tok_ids, device=logits.device)] - lse[at_t]
            total = terms.new_zeros(len(j.index) * nc).index_add_(
                0, torch.tensor(group, device=logits.device), terms)
            probs = torch.exp(total).tolist()
            j.probs = [dict(zip(j.cands, probs[k * nc:(k + 1) * nc]))
                       for k in range(len(j.index))]

    # ------------------------------------------------------------------ shared-prefix cache
    def _prefix_plan(self, jobs: list[_DistJob]) -> list[int]:
        """Per job, how many leading tokens come from a cached prefix: the longest token
        prefix it shares with another prompt of the batch or with a cached entry, cut
        before its first wanted position (0 when shorter than ``min_prefix_tokens``).
        Token ids of the full prompt are compared, so a split is always at a token
        boundary of that prompt's own tokenization."""
        n = len(jobs)
        share = [0] * n
        order = sorted(range(n), key=lambda i: jobs[i].ids)
        for a, b in zip(order, order[1:]):
            common = _common_length(jobs[a].ids, jobs[b].ids)
            share[a] = max(share[a], common)
            share[b] = max(share[b], common)
        starts = []
        cached_at: list[list[int]] = []  # per job: lengths of cached keys that prefix it
        for j, s in zip(jobs, share):
            lens = [len(key) for key in self._prefix_store
                    if len(key) <= len(j.ids) and tuple(j.ids[:len(key)]) == key]
            cached_at.append(lens)
            s = max([s, *lens])
            s = min(s, min(j.index), len(j.ids) - 1)
            starts.append(s if s >= self.min_prefix_tokens else 0)
        return self._drop_small_extensions(jobs, starts, cached_at)

    def _drop_small_extensions(self, jobs: list[_DistJob], starts: list[int],
                               cached_at: list[list[int]]) -> list[int]:
        """Shorten prefixes that would cost a pass of their own for little: a prefix that
        extends a shorter usable one (cached, or shared with other jobs of the batch) by
        ``e`` tokens for ``n`` jobs saves ``n * e`` tokens of the batched pass but costs a
        batch-1 pass, worth about :data:`_MIN_PREFIX_SAVING` batched tokens. Records that
        happen to begin alike are then run in the batched pass instead."""
        out = list(starts)
        for i, (j, s) in enumerate(zip(jobs, starts)):
            if not s:
                continue
            key = j.ids[:s]
            n = 0
            base = max([c for c in cached_at[i] if c <= s] or [0])
            if base == s:
                continue  # cached already: free
            for o, t in zip(jobs, starts):
                common = _common_length(key, o.ids[:max(t, 1)])
                if common >= s:
                    n += 1
                elif common >= self.min_prefix_tokens and t >= common:
                    base = max(base, common)
            if base >= self.min_prefix_tokens and n * (s - base) < _MIN_PREFIX_SAVING:
                out[i] = base
        return out

    def _batch_past(self, jobs: list[_DistJob], starts: list[int]) -> list[tuple[Any, Any]]:
        """Key/value states of each job's prefix, right-padded to the longest, per layer
        as ``(keys, values)`` of shape (batch, heads, longest prefix, head dim)."""

        keys = sorted({tuple(j.ids[:p]) for j, p in zip(jobs, starts) if p})
        if len(keys) > 1:  # compute the part they all share once
            common = min(_common_length(keys[0], k) for k in keys[1:])
            if common >= self.min_prefix_tokens and keys[0][:common] not in self._prefix_store:
                self._prefix_entry(keys[0][:common])
        entries = {k: self._prefix_entry(k) for k in keys}
        longest = max(starts)
        proto = next(iter(entries.values()))
        if len(keys) == 1 and all(starts):  # one prefix for every row: broadcast, no copies
            n = len(jobs)
            return [(k0.expand(n, -1, -1, -1), v0.expand(n, -1, -1, -1)) for k0, v0 in proto]
        past = []
        for layer, (k0, v0) in enumerate(proto):
            K = k0.new_zeros((len(jobs), k0.shape[1], longest, k0.shape[3]))
            V = v0.new_zeros((len(jobs), v0.shape[1], longest, v0.shape[3]))
            for b, (j, p) in enumerate(zip(jobs, starts)):
                if p:
                    ek, ev = entries[tuple(j.ids[:p])][layer]
                    K[b, :, :p] = ek[0]
                    V[b, :, :p] = ev[0]
            past.append((K, V))
        return past

    def _prefix_entry(self, key: tuple[int, ...]) -> list[tuple[Any, Any]]:
        """Key/value states of the token prefix ``key`` (batch 1), from the cache or
        computed by extending the longest cached prefix of it."""
        import torch

        store = self._prefix_store
        if key in store:
            store.move_to_end(key)
            return store[key]
        base: tuple[int, ...] = ()
        for k in store:
            if len(base) < len(k) < len(key) and key[:len(k)] == k:
                base = k
        if not base:  # a cached key sharing its start (the instructions and few-shot
            # examples before another explanation): those states are the same, take them
            best, src = 0, None
            for k in store:
                c = _common_length(k, key)
                if c > best:
                    best, src = c, k
            if src is not None and self.min_prefix_tokens <= best < len(key):
                base = key[:best]
                store[base] = [(k_[:, :, :best].clone(), v_[:, :, :best].clone())
                               for k_, v_ in store[src]]
        model = self.hf_model
        new = list(key[len(base):])
        kw: dict[str, Any] = {}
        if base:
            kw[self._cache_kwarg()] = self._make_cache(store[base])
        out = model.base_model(input_ids=torch.tensor([new], device=self.device),
                               position_ids=torch.arange(len(base), len(key),
                                                         device=self.device)[None],
                               use_cache=True, **kw)
        cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        if cache is None:
            raise RuntimeError(f"{self.model} returned no key/value cache")  # caught by _check_prefix
        entry = [(layer.keys, layer.values) for layer in cache.layers]
        self.prefix_passes += 1
        self.prefix_tokens_computed += len(new)
        store[key] = entry
        total = sum(len(k) for k in store)
        while len(store) > 1 and total > self.prefix_cache_tokens:
            old, _ = store.popitem(last=False)
            total -= len(old)
        return entry

    def _cache_kwarg(self) -> str:
        import inspect

        params = inspect.signature(self.hf_model.base_model.forward).parameters
        return "cache" if "cache" in params else "past_key_values"

    @staticmethod
    def _make_cache(layers: list[tuple[Any, Any]]) -> Any:
        from transformers import DynamicCache

        return DynamicCache(ddp_cache_data=[(k, v) for k, v in layers])

    def _check_prefix(self) -> bool:
        """Does a pass after cached prefixes (4D mask, explicit positions) give the same
        distributions as a plain pass? Checked once on a short text."""
        try:
            ids = self.tokenizer("The quick brown fox jumps over the lazy dog, and the cat "
                                 "sat on the mat", add_special_tokens=True)["input_ids"]
            if len(ids) < 10:
                return False
            single = [ids[3]]
            cand_sets = [[single]]
            if self._packed_ok:
                cand_sets.append([single, [ids[4], ids[5]]])
            saved, min_saved = self._prefix_store, self.min_prefix_tokens
            counts = (self.prefix_passes, self.prefix_tokens_computed, self.dist_tokens_computed)
            self._prefix_store, self.min_prefix_tokens = OrderedDict(), 2
            try:
                for cands in cand_sets:
                    names = [str(i) for i in range(len(cands))]
                    def jobs() -> list[_DistJob]:
                        return [_DistJob(ids[:9], [6, 8], cands, cands=names),
                                _DistJob(ids[:5] + ids[6:10], [5, 7], cands, cands=names),
                                _DistJob(ids[:7], [6], cands, cands=names)]
                    plain, cached = jobs(), jobs()
                    multi = len(cands) > 1
                    self._compute_dists(plain, multi, use_prefix=False)
                    self._compute_dists(cached, multi, use_prefix=True)
                    for a, b in zip(plain, cached):
                        for ra, rb in zip(a.probs or [], b.probs or []):
                            for name in names:
                                if abs(ra[name] - rb[name]) > 1e-4 * max(ra[name], 1e-3):
                                    log.info("%s: cached-prefix passes differ from plain "
                                             "ones; prefixes are recomputed", self.model)
                                    return False
            finally:
                self._prefix_store, self.min_prefix_tokens = saved, min_saved
                self.prefix_passes, self.prefix_tokens_computed, self.dist_tokens_computed = counts
            return True
        except Exception as e:  # the model rejects caches with custom masks
            log.info("%s: shared-prefix cache unavailable (%s)", self.model, e)
            return False

    def _logits_lse(self, lm: Any, h: Any) -> tuple[Any, Any]:
        """Logits of hidden states ``h`` (scaled and soft-capped as the model does) and
        their log-sum-exp over the vocabulary: log P(token) = logit - lse, without
        writing a full log-softmax."""
        import torch

        logits = self._logits(lm, h)
        return logits, torch.logsumexp(logits, dim=-1)

    def _logprobs(self, lm: Any, h: Any) -> Any:
        import torch

        return torch.log_softmax(self._logits(lm, h), dim=-1)

    def _logits(self, lm: Any, h: Any) -> Any:
        import torch

        logits = lm(h).float()
        cfg = self.hf_model.config
        scale = getattr(cfg, "logit_scale", None)
        if isinstance(scale, (int, float)) and scale:
            logits = logits * scale
        cap = getattr(cfg, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    def _forward(self, rows: list["_Row"], packed: bool,
                 past: list[tuple[Any, Any]] | None = None) -> tuple[Any, Any]:
        """Base-model hidden states for right-padded rows. ``packed``: rows carry
        continuation segments that see only their anchor prefix. ``past``: per layer,
        key/value states of each row's cached prefix (``row.past`` tokens, right-padded);
        the rows then hold only the tokens after it. Both use a 4D additive mask."""
        import torch

        model = self.hf_model
        T = max(len(r.seq) for r in rows)
        B = len(rows)
        P = past[0][0].shape[2] if past else 0
        pad = self._pad_id()
        ids = torch.full((B, T), pad, dtype=torch.long)
        pos = torch.zeros((B, T), dtype=torch.long)
        for b, r in enumerate(rows):
            ids[b, :len(r.seq)] = torch.tensor(r.seq)
            pos[b, :len(r.pos)] = torch.tensor(r.pos)
            pos[b, len(r.pos):] = r.pos[-1] if r.pos else 0
        kw: dict[str, Any] = {}
        if packed or past:
            dtype = next(model.parameters()).dtype
            allowed = torch.zeros((B, T, P + T), dtype=torch.bool)
            for b, r in enumerate(rows):
                n = len(r.seq)
                n_main = r.segs[0][0] if r.segs else n
                allowed[b, :n, :r.past] = True  # the row's own cached prefix
                allowed[b, :n_main, P:P + n_main] = torch.tril(
                    torch.ones(n_main, n_main, dtype=torch.bool))
                bounds = [s for s, _ in r.segs] + [n]
                for (start, anchor), end in zip(r.segs, bounds[1:]):
                    L = end - start
                    allowed[b, start:end, P:P + anchor] = True
                    allowed[b, start:end, P + start:P + end] = torch.tril(
                        torch.ones(L, L, dtype=torch.bool))
                for t in range(n, T):  # padding: attend to itself only
                    allowed[b, t, P + t] = True
            if getattr(model.config, "_attn_implementation", None) == "sdpa":
                mask = allowed[:, None]  # SDPA takes boolean masks (faster than additive)
            else:
                mask = torch.zeros((B, 1, T, P + T), dtype=dtype)
                mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)
            if past:
                kw[self._cache_kwarg()] = self._make_cache(past)
        else:
            mask = torch.zeros((B, T), dtype=torch.long)
            for b, r in enumerate(rows):
                mask[b, :len(r.seq)] = 1
        gqa = bool(packed or past) and self._use_gqa_attention()
        cfg = model.config
        saved = cfg._attn_implementation
        if gqa:
            cfg._attn_implementation = _GQA_ATTENTION
        try:
            out = model.base_model(input_ids=ids.to(self.device),
                                   attention_mask=mask.to(self.device),
                                   position_ids=pos.to(self.device), use_cache=bool(past), **kw)
        finally:
            if gqa:
                cfg._attn_implementation = saved
        return out.last_hidden_state, mask

    def _use_gqa_attention(self) -> bool:
        """Attend grouped key/value heads in place under custom masks? Only for a model on
        CPU using ``sdpa`` with fewer key/value heads than query heads (on GPUs a mask with
        grouped heads falls back to a slow kernel)."""
        cfg = self.hf_model.config
        if (getattr(cfg, "_attn_implementation", None) != "sdpa" or str(self.device) != "cpu"
                or not getattr(cfg, "num_key_value_heads", None)
                or cfg.num_key_value_heads >= getattr(cfg, "num_attention_heads", 0)):
            return False
        from transformers import AttentionInterface

        if _GQA_ATTENTION not in AttentionInterface._global_mapping:
            AttentionInterface.register(_GQA_ATTENTION, _sdpa_gqa)
        return True

    def _run_dist_unpacked(self, jobs: list[_DistJob]) -> None:
        """Fallback for models without custom 4D masks: one row per continuation."""
        import torch

        lm = self.hf_model.get_output_embeddings()
        for j in jobs:
            rows = [_Row(list(j.ids), list(range(len(j.ids))), [])]
            extra: dict[tuple[int, int], int] = {}
            for k, idx in enumerate(j.index):
                for ci, c in enumerate(j.cand_ids):
                    if len(c) > 1:
                        seq = j.ids[:idx + 1] + c[:-1]
                        extra[(k, ci)] = len(rows)
                        rows.append(_Row(seq, list(range(len(seq))), []))
            hidden, _ = self._forward(rows, packed=False)
            self.forward_passes += 1
            self.dist_tokens_computed += len(j.ids)
            main = self._logprobs(lm, hidden[0, j.index])
            j.probs = []
            for k, idx in enumerate(j.index):
                row = {}
                for ci, (cname, c) in enumerate(zip(j.cands, j.cand_ids)):
                    total = main[k, c[0]]
                    if len(c) > 1:
                        r = extra[(k, ci)]
                        L = idx + 1
                        lp = self._logprobs(lm, hidden[r, L:L + len(c) - 1])
                        for t in range(1, len(c)):
                            total = total + lp[t - 1, c[t]]
                    row[cname] = float(torch.exp(total))
                j.probs.append(row)

    def _check_packed(self) -> bool:
        """Does this model honour a custom 4D mask with explicit position ids?"""
        import torch

        try:
            ids = self.tokenizer("The quick brown fox jumps over", add_special_tokens=False)[
                "input_ids"][:6]
            if len(ids) < 4:
                return False
            cont = ids[1:3]
            anchor = 2
            seq = ids + cont
            rows = [_Row(seq, list(range(len(ids))) + [anchor, anchor + 1],
                     [(len(ids), anchor)])]
            packed, _ = self._forward(rows, packed=True)
            plain_seq = ids[:anchor] + cont
            plain, _ = self._forward([_Row(plain_seq, list(range(len(plain_seq))), [])],
                                     packed=False)
            a = packed[0, len(ids):len(ids) + 2]
            b = plain[0, anchor:anchor + 2]
            ok = bool(torch.allclose(a.float(), b.float(), atol=1e-3, rtol=1e-3))
            main_ok = bool(torch.allclose(packed[0, :len(ids)].float(),
                                          self._forward([_Row(ids, list(range(len(ids))), [])],
                                                        packed=False)[0][0].float(),
                                          atol=1e-3, rtol=1e-3))
            if not (ok and main_ok):
                log.info("%s ignores custom attention masks; multi-token candidates get "
                         "passes of their own", self.model)
            return ok and main_ok
        except Exception as e:  # the model rejects 4D masks
            log.info("%s: custom attention masks unavailable (%s)", self.model, e)
            return False

    def _pad_id(self) -> int:
        tok = self.tokenizer
        for v in (tok.pad_token_id, tok.eos_token_id, 0):
            if v is not None:
                return int(v)
        return 0

    # ------------------------------------------------------------------ chat
    def render_chat(self, messages: Sequence[Message]) -> str:
        """The prompt text the model sees for ``messages``."""
        tok = self.tokenizer
        as_dicts = [{"role": m.role, "content": m.content} for m in messages]
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template(as_dicts, tokenize=False,
                                           add_generation_prompt=True)
        lines = [f"{m.role.capitalize()}: {m.content}" for m in messages]
        return "\n\n".join(lines) + "\n\nAssistant:"

    async def achat(self, messages: Sequence[Message], *, temperature: float = 0.0,
                    max_tokens: int = 256, json_output: bool = False,
                    stage: str = "default") -> ChatResult:
        msgs = as_messages(messages)
        if max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        if json_output:
            if msgs[0].role == "system":
                msgs = [Message("system", msgs[0].content.rstrip() + "\n\n" + JSON_HINT),
                        *msgs[1:]]
            else:
                msgs = [Message("system", JSON_HINT), *msgs]
        await asyncio.to_thread(lambda: self.tokenizer)
        text = self.render_chat(msgs)
        templated = bool(getattr(self.tokenizer, "chat_template", None))
        ids = list(self.tokenizer(text, add_special_tokens=not templated)["input_ids"])
        ctx = self.context_length
        if ctx is not None and len(ids) + max_tokens > ctx:
            return ChatResult(None, Failure(
                "context_overflow", f"prompt is {len(ids)} tokens + max_tokens {max_tokens} = "
                f"{len(ids) + max_tokens} > context length {ctx} of {self.model}"),
                model=self.model, backend=self.name, prompt_tokens=len(ids))
        job = _ChatJob(ids, float(temperature), int(max_tokens))
        await self._chat_batcher.submit(job)
        out = job.text
        failure = None
        from .util import json_closed_before_cut

        if job.finish == "length" and not (json_output and json_closed_before_cut(out)):
            # stopped at max_tokens without EOS (and not after a whole JSON value)
            failure = Failure("truncated", f"the answer was cut at max_tokens={max_tokens} "
                              "without an end of text; raise max_tokens", raw=out)
        elif out is None or not out.strip():
            failure = Failure("unparseable", f"empty answer (finish={job.finish})", raw=out)
        elif json_output:
            try:
                json.loads(out)
            except ValueError:
                try:
                    out = json.dumps(parse_json_answer(out), ensure_ascii=False)
                except ValueError as e:
                    reason = "answer cut at max_tokens" if job.finish == "length" else str(e)
                    failure = Failure("unparseable", f"not JSON: {reason}", raw=job.text)
        return ChatResult(None if failure else out, failure, model=self.model,
                          backend=self.name, prompt_tokens=len(ids),
                          completion_tokens=job.n_generated, requests=1)

    def _chat_cost(self, job: Any) -> int:
        return len(job.ids) + job.max_tokens

    def _run_chat_batch(self, jobs: list[_ChatJob]) -> None:
        groups: dict[tuple[float, int], list[_ChatJob]] = {}
        for j in jobs:
            groups.setdefault((j.temperature, j.max_tokens), []).append(j)
        for (temperature, max_tokens), group in groups.items():
            self._generate(group, temperature, max_tokens)

    def _generate(self, jobs: list[_ChatJob], temperature: float, max_tokens: int) -> None:
        import torch
        from transformers import GenerationConfig

        model = self.hf_model
        tok = self.tokenizer
        eos: list[int] = []
        for v in (tok.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
            if isinstance(v, int):
                eos.append(v)
            elif isinstance(v, (list, tuple)):
                eos.extend(int(x) for x in v)
        eos = sorted(set(eos))
        pad = self._pad_id()
        T = max(len(j.ids) for j in jobs)
        ids = torch.full((len(jobs), T), pad, dtype=torch.long)
        mask = torch.zeros((len(jobs), T), dtype=torch.long)
        for b, j in enumerate(jobs):  # left padding
            ids[b, T - len(j.ids):] = torch.tensor(j.ids)
            mask[b, T - len(j.ids):] = 1
        kw: dict[str, Any] = dict(max_new_tokens=max_tokens, pad_token_id=pad,
                                  eos_token_id=eos or None)
        if temperature > 0:
            kw.update(do_sample=True, temperature=temperature, top_p=1.0, top_k=0)
        else:
            kw.update(do_sample=False)
        gen_cfg = GenerationConfig(**kw)
        with self._run_lock, torch.inference_mode():
            out = model.generate(input_ids=ids.to(self.device),
                                 attention_mask=mask.to(self.device),
                                 generation_config=gen_cfg)
            self.forward_passes += 1
        for b, j in enumerate(jobs):
            new = out[b, T:].tolist()
            cut = next((i for i, t in enumerate(new) if t in eos), None)
            if cut is None:
                j.finish = "length" if len(new) >= max_tokens else "stop"
                body = [t for t in new if t != pad] if not eos else new
                j.n_generated = len(new)
            else:
                j.finish = "stop"
                body = new[:cut]
                j.n_generated = cut + 1
            j.text = tok.decode(body, skip_special_tokens=True)
        self.chat_prompt_tokens += sum(len(j.ids) for j in jobs)
        self.chat_generated_tokens += sum(j.n_generated for j in jobs)


class _Batcher:
    """Gathers concurrent jobs of one event loop into batches run in a worker thread."""

    def __init__(self, run: Callable[[list[Any]], None], cost: Callable[[Any], int],
                 owner: InProcessBackend, kind: str) -> None:
        self._run = run
        self.kind = kind
        self.cost = cost
        self.owner = owner
        self._state: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Any]]" = (
            weakref.WeakKeyDictionary())

    def run(self, jobs: list[Any]) -> None:
        c0 = time.thread_time()
        try:
            self._run(jobs)
        finally:
            self.owner.cpu_seconds[self.kind] += time.thread_time() - c0

    async def submit(self, job: Any) -> None:
        loop = asyncio.get_running_loop()
        st = self._state.get(loop)
        if st is None:
            st = self._state[loop] = {"pending": [], "worker": None}
        fut = loop.create_future()
        st["pending"].append((job, fut))
        if st["worker"] is None or st["worker"].done():
            st["worker"] = loop.create_task(self._work(st))
        await fut

    async def _work(self, st: dict[str, Any]) -> None:
        if self.owner.batch_window_s > 0:
            await asyncio.sleep(self.owner.batch_window_s)
        while st["pending"]:
            pending = [p for p in st["pending"] if not p[1].done()]
            pending.sort(key=lambda p: self.cost(p[0]))
            batch: list[tuple[Any, asyncio.Future[Any]]] = []
            longest = 0
            for item in pending:
                c = self.cost(item[0])
                if batch and (len(batch) >= self.owner.batch_size
                              or max(longest, c) * (len(batch) + 1) > self.owner.max_batch_tokens):
                    break
                batch.append(item)
                longest = max(longest, c)
            taken = {id(x) for x in batch}
            st["pending"] = [p for p in pending if id(p) not in taken]
            if not batch:
                break
            try:
                await asyncio.to_thread(self.run, [job for job, _ in batch])
            except BaseException as e:  # noqa: BLE001 - handed to every waiter
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                if isinstance(e, asyncio.CancelledError):
                    raise
                continue
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(None)
