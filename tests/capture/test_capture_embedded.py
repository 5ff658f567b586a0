"""Integration: capture from the embedded MiniLM and SmolLM2 on a slice of the Lee corpus."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tl_concepts.capture import capture
from tl_concepts.corpus import lee_corpus

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lee_slice():
    return lee_corpus().head(3)


@pytest.mark.parametrize("name,fixture,hook,n_units", [("minilm", "minilm_tl", "blocks.3.mlp.hook_post", 1536),
                                                       ("smollm2-135m", "smollm2_tl", "blocks.3.mlp.hook_post", 1536)])
def test_embedded_capture_equals_run_with_cache(name, fixture, hook, n_units, lee_slice, tmp_path, request):
    model = request.getfixturevalue(fixture)
    store = capture(model, lee_slice, [hook, "blocks.1.hook_resid_post"], tmp_path / name,
                    context_tokens=48, progress=False, model_name=name)
    assert store.d(hook) == n_units
    prefix = store.manifest["tokenizer"]["prefix_ids"]
    suffix = store.manifest["tokenizer"]["suffix_ids"]
    if name == "minilm":
        assert prefix == [101] and suffix == [102]  # [CLS] ... [SEP]
    else:
        assert len(prefix) == 1 and suffix == []  # BOS only
    tok = store.tokens()
    acts = store.activations(hook)
    for c in (0, store.n_windows - 1):
        rows = store.context_rows(c)
        ids = prefix + tok["token_id"][rows].tolist() + suffix
        _, cache = model.run_with_cache(torch.tensor([ids]), names_filter=[hook])
        want = cache[hook][0, len(prefix): len(ids) - len(suffix)].numpy()
        np.testing.assert_allclose(acts[rows], want, rtol=1e-4, atol=1e-4)
    # tagged corpus: POS and NER travel into the word table
    words = store.words()
    assert "NNP" in words["pos"] and any(words["ner"])
    ur = store.unit_records(hook, 0)
    assert len(ur.train_top) == 10 and ur.max_activation > 0
