"""In-process backend: exact distributions from logits (checked against plain forward
passes), batching, positions, context limits, chat; on tiny random causal LMs built
from configs and on the embedded SmolLM2."""
from __future__ import annotations

import asyncio
import json
import math

import pytest
import torch

from tests.helpers.tiny_models import make_tiny_model, make_tiny_tokenizer
from tl_concepts.llm import InProcessBackend, Message, PositionError

PROMPT = "Activations:\ncat\t3\ndog\t5\nthe park\t7\n"
CANDS = ["3", "5", "7", "10", " the cat"]


def reference(model, tok, prompt, p, cand):
    """P(cand's tokens follow prompt[:p]) by plain unbatched forward passes."""
    enc = tok(prompt, return_offsets_mapping=True)
    ids = enc["input_ids"]
    ends = [i for i, (s, e) in enumerate(enc["offset_mapping"]) if e == p and e > s]
    idx = ends[-1] if ends else len(ids) - 1
    c = tok(cand, add_special_tokens=False)["input_ids"]
    seq = ids[: idx + 1] + c[:-1]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([seq])).logits[0].float(), -1)
    total = 0.0
    for t, tid in enumerate(c):
        total += float(logp[idx + t, tid])
    return math.exp(total)


@pytest.fixture(params=["llama", "gpt2"])
def tiny(request, tiny_tok):
    model = make_tiny_model(tiny_tok, request.param)
    return InProcessBackend(model=model, tokenizer=tiny_tok, model_id=f"tiny-{request.param}",
                            batch_window_s=0.01), model


def test_distributions_are_exact(tiny, tiny_tok):
    backend, model = tiny
    positions = backend.token_boundaries(PROMPT)[2:]
    assert any(len(tiny_tok(c, add_special_tokens=False)["input_ids"]) > 1 for c in CANDS)
    d = backend.next_token_distributions(PROMPT, positions, CANDS)
    assert d.ok and d.method == "logits" and d.requests == 1
    assert d.prompt_tokens == len(tiny_tok(PROMPT)["input_ids"])
    for p, row in zip(positions, d.probs):
        for c in CANDS:
            assert row[c] == pytest.approx(reference(model, tiny_tok, PROMPT, p, c),
                                           rel=1e-4, abs=1e-7)


def test_batched_equals_one_at_a_time_and_uses_fewer_passes(tiny):
    backend, _ = tiny
    prompts = [PROMPT * k + f"row {k}\t" for k in range(1, 7)]
    pos = [[len(p), len(p) - 1 - len(f"{k + 1}\t")] for k, p in enumerate(prompts)]
    pos = [[q for q in ps if q in backend.token_boundaries(p)] for p, ps in zip(prompts, pos)]

    async def one_by_one():
        return [await backend.anext_token_distributions(p, q, CANDS)
                for p, q in zip(prompts, pos)]

    async def together():
        return await asyncio.gather(*(backend.anext_token_distributions(p, q, CANDS)
                                      for p, q in zip(prompts, pos)))

    n0 = backend.forward_passes
    seq = asyncio.run(one_by_one())
    n1 = backend.forward_passes
    bat = asyncio.run(together())
    n2 = backend.forward_passes
    assert n1 - n0 == len(prompts) and n2 - n1 == 1
    for a, b in zip(seq, bat):
        for ra, rb in zip(a.probs, b.probs):
            assert ra == pytest.approx(rb, rel=1e-4, abs=1e-7)


def test_multi_token_candidates_without_packed_masks(tiny, tiny_tok):
    backend, model = tiny
    packed = backend.next_token_distributions(PROMPT, [len(PROMPT)], CANDS)
    assert backend._packed_ok is True  # the custom-mask pass was verified
    backend._packed_ok = False  # as for a model that refuses 4D masks
    plain = backend.next_token_distributions(PROMPT, [len(PROMPT)], CANDS)
    assert plain.probs[0] == pytest.approx(packed.probs[0], rel=1e-4, abs=1e-7)


def test_positions(tiny_tok):
    model = make_tiny_model(tiny_tok)
    b = InProcessBackend(model=model, tokenizer=tiny_tok)
    bounds = b.token_boundaries(PROMPT)
    assert bounds[-1] == len(PROMPT) and 0 not in bounds
    enc = tiny_tok(PROMPT, return_offsets_mapping=True)
    inside = next(s + 1 for s, e in enc["offset_mapping"] if e - s > 1)
    with pytest.raises(PositionError, match="inside the token"):
        b.next_token_distributions(PROMPT, [inside], CANDS)
    with pytest.raises(PositionError, match="no BOS"):
        b.next_token_distributions(PROMPT, [0], CANDS)
    # with a tokenizer that adds BOS, position 0 is the distribution of the first token
    tok_bos = make_tiny_tokenizer(bos=True)
    bb = InProcessBackend(model=make_tiny_model(tok_bos), tokenizer=tok_bos)
    d = bb.next_token_distributions(PROMPT, [0], ["A"])
    with torch.no_grad():
        logits = bb.hf_model(torch.tensor([[tok_bos.bos_token_id]])).logits[0, -1]
    a_id = tok_bos("A", add_special_tokens=False)["input_ids"][0]
    assert d.probs[0]["A"] == pytest.approx(float(torch.softmax(logits, -1)[a_id]), rel=1e-4)


def test_context_overflow_is_refused_with_numbers(tiny_tok):
    b = InProcessBackend(model=make_tiny_model(tiny_tok, max_positions=64), tokenizer=tiny_tok)
    long = "the cat sat on the mat " * 40
    d = b.next_token_distributions(long, [len(long)], ["a"])
    assert d.failure.kind == "context_overflow" and "> context length 64" in d.failure.message
    r = b.chat([Message("user", "hello")], max_tokens=60)
    assert r.failure.kind == "context_overflow" and "max_tokens 60" in r.failure.message
    assert b.forward_passes == 0


def test_chat_batches_and_matches_single_generation(tiny_tok):
    model = make_tiny_model(tiny_tok)
    b = InProcessBackend(model=model, tokenizer=tiny_tok, batch_window_s=0.01)
    asks = [[Message("user", w)] for w in ("the cat", "a dog ran in the park", "numbers 1 2")]

    async def together():
        return await asyncio.gather(*(b.achat(m, max_tokens=6) for m in asks))

    singles = [b.chat(m, max_tokens=6) for m in asks]
    n = b.forward_passes
    batched = asyncio.run(together())
    assert b.forward_passes - n == 1
    for s, t in zip(singles, batched):
        assert (s.text, s.completion_tokens, s.failure) == (t.text, t.completion_tokens,
                                                            t.failure)
        assert 1 <= s.completion_tokens <= 6 and s.requests == 1
    sampled = b.chat(asks[0], max_tokens=4, temperature=1.0)
    assert sampled.requests == 1 and sampled.completion_tokens <= 4
    # a random model's answer never ends: cut at max_tokens, it is a failure with the raw
    # text, never a placeholder
    r = b.chat(asks[0], max_tokens=6, json_output=True)
    assert r.text is None and r.failure.kind == "truncated" and r.failure.raw


def test_chat_cut_at_max_tokens_is_truncated_and_eos_is_a_clean_stop(tiny_tok):
    model = make_tiny_model(tiny_tok)
    b = InProcessBackend(model=model, tokenizer=tiny_tok)
    ask = [Message("user", "the cat")]
    cut = b.chat(ask, max_tokens=2)
    assert cut.failure.kind == "truncated" and cut.text is None
    assert cut.failure.raw and cut.completion_tokens == 2 and "max_tokens=2" in cut.failure.message
    steps: list[int] = []

    def eos_from_third_step(module, args, out):  # the model ends its answer after 2 tokens
        steps.append(1)
        if len(steps) >= 3:
            out.logits[..., tiny_tok.eos_token_id] = 1e4
        return out

    hook = model.register_forward_hook(eos_from_third_step)
    try:
        done = b.chat(ask, max_tokens=8)
    finally:
        hook.remove()
    assert done.ok and done.text == cut.failure.raw and done.completion_tokens == 3

    async def notebook_cell():  # the sync API inside a running event loop (Jupyter)
        return b.chat(ask, max_tokens=2), b.next_token_distributions(PROMPT, [len(PROMPT)],
                                                                     ["3"])

    again, d = asyncio.run(notebook_cell())
    assert again.failure.raw == cut.failure.raw and d.ok


def test_cache_identity_tracks_the_weights(tiny_tok):
    m1, m2 = make_tiny_model(tiny_tok, seed=0), make_tiny_model(tiny_tok, seed=1)
    id1 = InProcessBackend(model=m1, tokenizer=tiny_tok).cache_identity()
    id1b = InProcessBackend(model=make_tiny_model(tiny_tok, seed=0),
                            tokenizer=tiny_tok).cache_identity()
    id2 = InProcessBackend(model=m2, tokenizer=tiny_tok).cache_identity()
    assert id1 == id1b and id1["weights"] != id2["weights"]


def test_local_folder_backend(tiny_tok, tiny_llama_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    b = InProcessBackend(tiny_llama_dir)
    ident = b.cache_identity()  # computed without loading the model
    assert b._model_obj is None and ident["model"] == "tiny-llama"
    d = b.next_token_distributions(PROMPT, [len(PROMPT)], ["3", "5"])
    assert d.probs[0]["3"] == pytest.approx(reference(model, tiny_tok, PROMPT, len(PROMPT),
                                                      "3"), rel=1e-4)


# ------------------------------------------------------------------ embedded SmolLM2


@pytest.mark.slow
def test_smollm2_chat_and_json(smollm2):
    r = smollm2.chat([Message("user", "What is the capital of France? One word.")],
                     max_tokens=12)
    assert r.ok and "paris" in r.text.lower()
    assert r.backend == "in-process" and r.model == "SmolLM2-135M-Instruct"
    assert r.prompt_tokens > 10 and 1 <= r.completion_tokens <= 12
    r = smollm2.chat([Message("user", "Give a JSON object with key name for Bob.")],
                     max_tokens=40, json_output=True)
    assert r.ok and isinstance(json.loads(r.text), dict)


@pytest.mark.slow
def test_smollm2_distributions(smollm2):
    tok = smollm2.tokenizer
    assert tok("cat")["input_ids"][0] != tok.bos_token_id  # no BOS is prepended
    prompt = "Rate each word from 0 to 10.\ncat\t7\ndog\t"
    cands = [str(i) for i in range(11)]
    d = smollm2.next_token_distributions(prompt, [len(prompt), prompt.index("7")], cands)
    assert d.ok and d.method == "logits" and d.absent == [[], []]
    for row in d.probs:
        assert 0.0 < sum(row.values()) <= 1.0 + 1e-6
        assert row["10"] <= row["1"]  # "10" is "1" then "0" for this tokenizer
    ev = d.expected_values()
    assert all(0.0 <= v <= 10.0 for v in ev)
    ref = reference(smollm2.hf_model, tok, prompt, len(prompt), "10")
    assert d.probs[0]["10"] == pytest.approx(ref, rel=1e-3)
    with pytest.raises(PositionError):
        smollm2.next_token_distributions(prompt, [0], cands)
    over = smollm2.next_token_distributions("word " * 9000, [10], cands)
    assert over.failure.kind == "context_overflow" and "8192" in over.failure.message


# ------------------------------------------------------------------ shared-prefix cache

HEAD = "Activations:\ncat\t3\ndog\t5\nthe park\t7\n" * 3


def _gather(backend, prompts, positions, cands):
    async def go():
        return await asyncio.gather(*(backend.anext_token_distributions(p, q, cands)
                                      for p, q in zip(prompts, positions)))
    return asyncio.run(go())


def _max_diff(a, b, cands):
    return max(abs(ra[c] - rb[c]) for x, y in zip(a, b) for ra, rb in zip(x.probs, y.probs)
               for c in cands)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_prefix_cache_equals_uncached_forward(arch, tiny_tok):
    model = make_tiny_model(tiny_tok, arch, max_positions=512)
    # two "explanations", several records each: prefixes shared by all, and per explanation
    prompts = [HEAD + f"explanation {e}: the cat\n" + "dog\t5\n" * k + "the cat sat\t"
               for e in ("one", "two") for k in range(1, 5)]
    positions = [[len(p), len(p) - len(" sat\t")] for p in prompts]
    cached = InProcessBackend(model=model, tokenizer=tiny_tok, batch_window_s=0.01)
    plain = InProcessBackend(model=model, tokenizer=tiny_tok, batch_window_s=0.01,
                             prefix_cache=False)
    got = _gather(cached, prompts, positions, CANDS)
    want = _gather(plain, prompts, positions, CANDS)
    assert cached._prefix_ok is True and cached.forward_passes == 1
    assert plain.prefix_passes == 0
    n_tokens = sum(len(tiny_tok(p)["input_ids"]) for p in prompts)
    # the shared head went through the model once, not once per prompt
    assert 0 < cached.prefix_tokens_computed < n_tokens / 4
    assert _max_diff(got, want, CANDS) < 1e-5
    for p, q, d in zip(prompts[:2], positions[:2], got[:2]):
        for pos, row in zip(q, d.probs):
            for c in CANDS:
                assert row[c] == pytest.approx(reference(model, tiny_tok, p, pos, c), abs=1e-5)


def test_prefix_cache_reused_across_calls_and_split_on_token_ids(tiny_tok):
    model = make_tiny_model(tiny_tok, max_positions=512)
    cached = InProcessBackend(model=model, tokenizer=tiny_tok, batch_window_s=0.01)
    plain = InProcessBackend(model=model, tokenizer=tiny_tok, prefix_cache=False)
    first = [HEAD + "the cat\t", HEAD + "dog ran\t"]
    _gather(cached, first, [[len(p)] for p in first], CANDS)
    computed = cached.prefix_tokens_computed
    assert computed == len(tiny_tok(HEAD)["input_ids"])  # the batch's shared head
    # a later lone prompt extends the cached head instead of recomputing it; its text
    # shares "...the ca" with "the cat" but " cat" is one token there: the split must be
    # on token ids, not characters
    lone = HEAD + "the cab\t"
    char_common = len(HEAD + "the ca")
    assert char_common not in cached.token_boundaries(HEAD + "the cat\t")
    got = cached.next_token_distributions(lone, [len(lone), len(HEAD + "the")], CANDS)
    want = plain.next_token_distributions(lone, [len(lone), len(HEAD + "the")], CANDS)
    assert cached.prefix_tokens_computed == computed  # reused: only the suffix was run
    assert _max_diff([got], [want], CANDS) < 1e-5
    again = cached.next_token_distributions(first[0], [len(first[0])], CANDS)
    want0 = plain.next_token_distributions(first[0], [len(first[0])], CANDS)
    assert _max_diff([again], [want0], CANDS) < 1e-5


def test_prefix_cache_mixed_prompts_in_one_batch(tiny_tok):
    """Prompts with different prefixes (and one sharing nothing) in one pass: each row
    sees only its own cached prefix."""
    model = make_tiny_model(tiny_tok, max_positions=512)
    other = "The quick brown fox jumps over the lazy dog.\n" * 3
    prompts = [HEAD + "the cat\t", HEAD + "dog\t", other + "cat\t", other + "dog ran\t",
               "numbers 0 1 2\t"]
    positions = [[len(p)] for p in prompts]
    cached = InProcessBackend(model=model, tokenizer=tiny_tok, batch_window_s=0.01)
    plain = InProcessBackend(model=model, tokenizer=tiny_tok, prefix_cache=False,
                             batch_window_s=0.01)
    got = _gather(cached, prompts, positions, CANDS)
    want = _gather(plain, prompts, positions, CANDS)
    assert cached.forward_passes == 1 and cached.prefix_passes == 2
    assert _max_diff(got, want, CANDS) < 1e-5


def test_prefix_cache_is_bounded(tiny_tok):
    model = make_tiny_model(tiny_tok, max_positions=512)
    b = InProcessBackend(model=model, tokenizer=tiny_tok, batch_window_s=0.01,
                         prefix_cache_tokens=200)
    for k in range(4):
        head = f"run {k}\n" + HEAD
        _gather(b, [head + "cat\t", head + "dog\t"], [[len(head) + 4], [len(head) + 4]], CANDS)
    assert sum(len(k) for k in b._prefix_store) <= 200 and len(b._prefix_store) >= 1


@pytest.mark.slow
def test_smollm2_simulation_with_prefix_cache_equals_uncached(smollm2):
    """The all-at-once simulator's prompts (instructions, few-shot, explanation, then the
    record) and detection prompts on the embedded SmolLM2: cached prefixes change no
    probability by more than 1e-5."""
    from tl_concepts.explain.prompts import detection_prompt, simulation_prompt

    records = [["On", " Monday", " we", " met", "."], ["Friday", " night", " was", " fun"],
               ["The", " cat", " sat", " on", " Sunday"]]
    cands = [str(i) for i in range(11)]
    plain = InProcessBackend(model=smollm2.hf_model, tokenizer=smollm2.tokenizer,
                             prefix_cache=False, batch_window_s=0.01)
    cached = InProcessBackend(model=smollm2.hf_model, tokenizer=smollm2.tokenizer,
                              batch_window_s=0.01)
    sims = [simulation_prompt("days of the week", r) for r in records]
    dets = [detection_prompt("days of the week", r) for r in records]
    prompts = [s.text for s in sims] + dets
    positions = [s.positions for s in sims] + [[len(d)] for d in dets]
    got = _gather(cached, prompts, positions, cands)
    want = _gather(plain, prompts, positions, cands)
    assert cached._prefix_ok is True and cached.prefix_passes >= 2
    header = len(smollm2.tokenizer(sims[0].text)["input_ids"]) - 40
    assert cached.prefix_tokens_computed < header + 60  # one shared head, not three
    assert _max_diff(got, want, cands) < 1e-5
