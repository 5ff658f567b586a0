"""In-process backend at its compute floor: grouped key/value heads attended in place,
no batch-1 pass for prefixes that save little, a new explanation's prefix started from the
cached instructions. Every path gives the probabilities of a plain forward (to 1e-5)."""
from __future__ import annotations

import asyncio

import pytest

from tests.helpers.tiny_models import make_tiny_model
from tests.llm.test_llm_inprocess import reference
from tl_concepts.llm import InProcessBackend
from tl_concepts.llm import inprocess

HEAD = "Activations:\ncat\t3\ndog\t5\nthe park\t7\n" * 3
CANDS = ["3", "5", "7", "10", " the cat"]


def _gather(backend, prompts, positions, cands=CANDS):
    async def go():
        return await asyncio.gather(*(backend.anext_token_distributions(p, q, cands)
                                      for p, q in zip(prompts, positions)))
    return asyncio.run(go())


def _max_diff(a, b, cands=CANDS):
    return max(abs(ra[c] - rb[c]) for x, y in zip(a, b) for ra, rb in zip(x.probs, y.probs)
               for c in cands)


def _backends(model, tok):
    cached = InProcessBackend(model=model, tokenizer=tok, batch_window_s=0.01)
    plain = InProcessBackend(model=model, tokenizer=tok, batch_window_s=0.01, prefix_cache=False)
    return cached, plain


def test_grouped_heads_attended_in_place_equal_plain_forwards(tiny_tok, monkeypatch):
    """A llama with 2 key/value heads for 4 query heads: passes with custom masks go
    through the in-place grouped attention, and give the plain unbatched numbers."""
    from transformers import AttentionInterface

    model = make_tiny_model(tiny_tok, "llama", max_positions=512)
    cached, _ = _backends(model, tiny_tok)
    assert cached._use_gqa_attention()
    calls = []

    def spy(*args, **kwargs):
        calls.append(args[1].shape)  # the query
        return inprocess._sdpa_gqa(*args, **kwargs)

    monkeypatch.setitem(AttentionInterface._global_mapping, inprocess._GQA_ATTENTION, spy)
    prompts = [HEAD + f"explanation {e}: the cat\n" + "dog\t5\n" * k + "the cat sat\t"
               for e in ("one", "two") for k in range(1, 4)]
    positions = [[len(p), len(p) - len(" sat\t")] for p in prompts]
    got = _gather(cached, prompts, positions)
    assert cached._prefix_ok is True
    n_layers = model.config.num_hidden_layers
    assert calls and len(calls) % n_layers == 0
    assert all(q[1] == model.config.num_attention_heads for q in calls)
    assert model.config._attn_implementation == "sdpa"  # restored after each pass
    for p, q, d in zip(prompts, positions, got):
        for pos, row in zip(q, d.probs):
            for c in CANDS:
                assert row[c] == pytest.approx(reference(model, tiny_tok, p, pos, c), abs=1e-5)


def test_models_without_grouped_heads_keep_the_stock_attention(tiny_tok):
    gpt2 = make_tiny_model(tiny_tok, "gpt2")
    assert not InProcessBackend(model=gpt2, tokenizer=tiny_tok)._use_gqa_attention()


def test_records_that_begin_alike_get_no_prefix_pass_of_their_own(tiny_tok):
    """Two records of one explanation share their first tokens: one shared prefix is
    computed (the instructions and explanation), not one more per pair of records."""
    model = make_tiny_model(tiny_tok, "llama", max_positions=512)
    cached, plain = _backends(model, tiny_tok)
    head = HEAD + "explanation: animals\n"
    records = ["the cat sat\t", "the cat ran\t", "dog\t5\ndog\t", "park\t"]
    prompts = [head + r for r in records]
    positions = [[len(p)] for p in prompts]
    got = _gather(cached, prompts, positions)
    want = _gather(plain, prompts, positions)
    assert cached.forward_passes == 1
    assert cached.prefix_passes == 1
    assert cached.prefix_tokens_computed == len(tiny_tok(head)["input_ids"])
    assert _max_diff(got, want) < 1e-5


def test_records_sharing_a_long_start_still_share_it(tiny_tok):
    """A shared start long enough to pay for its own pass keeps its cached prefix."""
    model = make_tiny_model(tiny_tok, "llama", max_positions=512)
    cached, plain = _backends(model, tiny_tok)
    head = HEAD + "explanation: animals\n"
    long_start = "the park dog cat " * 12
    prompts = [head + long_start + "sat\t", head + long_start + "ran\t", head + "park\t",
               head + "dog\t"]
    positions = [[len(p)] for p in prompts]
    got = _gather(cached, prompts, positions)
    want = _gather(plain, prompts, positions)
    assert cached.prefix_passes == 2  # the head, then the long start shared by two records
    assert _max_diff(got, want) < 1e-5


def test_new_explanation_starts_from_the_cached_instructions(tiny_tok):
    """The second explanation's prefix takes the states of the instructions from the
    first one's cached prefix and computes only its own tokens."""
    model = make_tiny_model(tiny_tok, "llama", max_positions=512)
    cached, plain = _backends(model, tiny_tok)
    records = ["the cat sat\t", "dog\t5\ndog\t", "park\t"]
    first = [HEAD + "explanation: cats and dogs\n" + r for r in records]
    _gather(cached, first, [[len(p)] for p in first])
    computed = cached.prefix_tokens_computed
    second_head = HEAD + "explanation: parks\n"
    second = [second_head + r for r in records]
    got = _gather(cached, second, [[len(p)] for p in second])
    want = _gather(plain, second, [[len(p)] for p in second])
    ids_first = tiny_tok(first[0])["input_ids"]
    ids_second = tiny_tok(second_head)["input_ids"]
    shared = next(i for i, (a, b) in enumerate(zip(ids_first, ids_second)) if a != b)
    assert cached.prefix_tokens_computed - computed == len(ids_second) - shared
    assert _max_diff(got, want) < 1e-5
