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
import weakref
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
        self._dist_batcher = _Batcher(self._run_dist_batch, self._dist_cost, self)
        self._chat_batcher = _Batcher(self._run_chat_batch, self._chat_cost, self)
        self.forward_passes = 0
        """Forward passes / generate calls made (for tests and benchmarks)."""

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
                    self._model_obj = m.to(self.device).eval()
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
        return ids, offsets, special  # type: ignore[return-value]

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

        model = self.hf_model
        multi = any(len(c) > 1 for j in jobs for c in j.cand_ids)
        with self._run_lock, torch.inference_mode():
            if multi and self._packed_ok is None:
                self._packed_ok = self._check_packed()
            if multi and not self._packed_ok:
                self._run_dist_unpacked(jobs)
                return
            rows: list[tuple[list[int], list[int], list[tuple[int, int]]]] = []
            for j in jobs:
                seq = list(j.ids)
                pos_ids = list(range(len(j.ids)))
                segs: list[tuple[int, int]] = []  # (start in seq, anchor prefix length)
                if multi:
                    for idx in j.index:
                        for c in j.cand_ids:
                            if len(c) > 1:
                                segs.append((len(seq), idx + 1))
                                seq.extend(c[:-1])
                                pos_ids.extend(range(idx + 1, idx + len(c)))
                rows.append((seq, pos_ids, segs))
            hidden, _ = self._forward(rows, packed=multi)
            lm = model.get_output_embeddings()
            for b, j in enumerate(jobs):
                seq, _, segs = rows[b]
                need = list(j.index)
                seg_iter = iter(segs)
                seg_of: list[list[int | None]] = []
                for idx in j.index:
                    per = []
                    for c in j.cand_ids:
                        if len(c) > 1:
                            start, _anchor = next(seg_iter)
                            per.append(len(need))
                            need.extend(range(start, start + len(c) - 1))
                        else:
                            per.append(None)
                    seg_of.append(per)
                logp = self._logprobs(lm, hidden[b, need])
                j.probs = []
                for k, idx in enumerate(j.index):
                    row = {}
                    for ci, (cname, c) in enumerate(zip(j.cands, j.cand_ids)):
                        total = logp[k, c[0]]
                        first = seg_of[k][ci]
                        for t in range(1, len(c)):
                            total = total + logp[first + t - 1, c[t]]
                        row[cname] = float(torch.exp(total))
                    j.probs.append(row)
            self.forward_passes += 1

    def _logprobs(self, lm: Any, h: Any) -> Any:
        import torch

        logits = lm(h).float()
        cfg = self.hf_model.config
        scale = getattr(cfg, "logit_scale", None)
        if isinstance(scale, (int, float)) and scale:
            logits = logits * scale
        cap = getattr(cfg, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return torch.log_softmax(logits, dim=-1)

    def _forward(self, rows: list[tuple[list[int], list[int], list[tuple[int, int]]]],
                 packed: bool) -> tuple[Any, Any]:
        """Base-model hidden states for right-padded rows. ``packed``: rows carry
        continuation segments that see only their anchor prefix (4D additive mask)."""
        import torch

        model = self.hf_model
        T = max(len(r[0]) for r in rows)
        B = len(rows)
        pad = self._pad_id()
        ids = torch.full((B, T), pad, dtype=torch.long)
        pos = torch.zeros((B, T), dtype=torch.long)
        for b, (seq, p, _) in enumerate(rows):
            ids[b, :len(seq)] = torch.tensor(seq)
            pos[b, :len(p)] = torch.tensor(p)
        if packed:
            dtype = next(model.parameters()).dtype
            allowed = torch.zeros((B, T, T), dtype=torch.bool)
            for b, (seq, p, segs) in enumerate(rows):
                n_main = segs[0][0] if segs else len(seq)
                allowed[b, :n_main, :n_main] = torch.tril(torch.ones(n_main, n_main,
                                                                     dtype=torch.bool))
                bounds = [s for s, _ in segs] + [len(seq)]
                for (start, anchor), end in zip(segs, bounds[1:]):
                    L = end - start
                    allowed[b, start:end, :anchor] = True
                    allowed[b, start:end, start:end] = torch.tril(torch.ones(L, L,
                                                                             dtype=torch.bool))
                for t in range(len(seq), T):  # padding: attend to itself only
                    allowed[b, t, t] = True
            mask = torch.zeros((B, 1, T, T), dtype=dtype)
            mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)
        else:
            mask = torch.zeros((B, T), dtype=torch.long)
            for b, (seq, _, _) in enumerate(rows):
                mask[b, :len(seq)] = 1
        out = model.base_model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                               position_ids=pos.to(self.device), use_cache=False)
        return out.last_hidden_state, mask

    def _run_dist_unpacked(self, jobs: list[_DistJob]) -> None:
        """Fallback for models without custom 4D masks: one row per continuation."""
        import torch

        lm = self.hf_model.get_output_embeddings()
        for j in jobs:
            rows = [(list(j.ids), list(range(len(j.ids))), [])]
            extra: dict[tuple[int, int], int] = {}
            for k, idx in enumerate(j.index):
                for ci, c in enumerate(j.cand_ids):
                    if len(c) > 1:
                        seq = j.ids[:idx + 1] + c[:-1]
                        extra[(k, ci)] = len(rows)
                        rows.append((seq, list(range(len(seq))), []))
            hidden, _ = self._forward(rows, packed=False)
            self.forward_passes += 1
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
            rows = [(seq, list(range(len(ids))) + [anchor, anchor + 1],
                     [(len(ids), anchor)])]
            packed, _ = self._forward(rows, packed=True)
            plain_seq = ids[:anchor] + cont
            plain, _ = self._forward([(plain_seq, list(range(len(plain_seq))), [])],
                                     packed=False)
            a = packed[0, len(ids):len(ids) + 2]
            b = plain[0, anchor:anchor + 2]
            ok = bool(torch.allclose(a.float(), b.float(), atol=1e-3, rtol=1e-3))
            main_ok = bool(torch.allclose(packed[0, :len(ids)].float(),
                                          self._forward([(ids, list(range(len(ids))), [])],
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


class _Batcher:
    """Gathers concurrent jobs of one event loop into batches run in a worker thread."""

    def __init__(self, run: Callable[[list[Any]], None], cost: Callable[[Any], int],
                 owner: InProcessBackend) -> None:
        self.run = run
        self.cost = cost
        self.owner = owner
        self._state: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Any]]" = (
            weakref.WeakKeyDictionary())

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
