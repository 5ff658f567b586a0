import numpy as np
import pytest

from tl_concepts.concepts.inputs import ConceptInput, ConceptInputError, check_same_dim, from_store
from tests.helpers.concepts_fakes import make_input


def test_nan_and_inf_are_refused_with_rows():
    inp = make_input(n_per_type=2)
    x = inp.representations.copy()
    x[3, 0] = np.nan
    x[7, 1] = np.inf
    with pytest.raises(ConceptInputError, match=r"2 word representation\(s\) contain NaN or inf.*\[3, 7\]"):
        ConceptInput(x, inp.words, inp.sentences)


def test_empty_and_ragged_inputs():
    with pytest.raises(ConceptInputError, match="empty"):
        ConceptInput(np.zeros((0, 4), dtype=np.float32), {"word_id": [], "sentence": [], "index": [], "text": []})
    with pytest.raises(ConceptInputError, match="'text' has 1 rows"):
        ConceptInput(np.zeros((2, 4), dtype=np.float32), {"word_id": [0, 1], "sentence": [0, 0], "index": [0, 1],
                                                          "text": ["a"]})


def test_mismatched_layer_dims():
    a, b = make_input(n_per_type=2, dim=8), make_input(n_per_type=2, dim=12)
    assert check_same_dim([a, make_input(n_per_type=2, dim=8)]) == 8
    with pytest.raises(ConceptInputError, match="mismatched dimensions"):
        check_same_dim({"blocks.0.hook_resid_post": a, "blocks.0.mlp.hook_post": b})


class FakeStore:
    def __init__(self, inp):
        self.inp = inp
        self.hooks = ["blocks.3.hook_resid_post", "blocks.3.mlp.hook_post"]

    def words(self):
        return self.inp.words

    def word_representations(self, hook, agg="mean"):
        assert agg == "first"
        return self.inp.representations * (2 if "mlp" in hook else 1)

    def sentence_texts(self):
        return self.inp.sentences


def test_from_store_picks_the_residual_hook_and_slices():
    inp = make_input(n_per_type=2)
    got = from_store(FakeStore(inp), layer=3, agg="first", sentences=[0, 1, 5])
    assert got.hook == "blocks.3.hook_resid_post" and got.layer == 3 and got.n_points == 3
    np.testing.assert_array_equal(got.representations, inp.representations[[0, 1, 5]])
    mlp = from_store(FakeStore(inp), "blocks.3.mlp.hook_post", agg="first")
    np.testing.assert_array_equal(mlp.representations, inp.representations * 2)
    with pytest.raises(ConceptInputError, match="empty"):
        from_store(FakeStore(inp), layer=3, agg="first", sentences=[10_000])
    with pytest.raises(ConceptInputError, match="not in the store"):
        from_store(FakeStore(inp), "blocks.9.hook_resid_post")
