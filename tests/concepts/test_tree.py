import numpy as np
from scipy.cluster.hierarchy import linkage

from tl_concepts.concepts.tree import ConceptTree


def test_hierarchy_is_consistent_across_cuts():
    x = np.random.default_rng(5).normal(size=(80, 6))
    t = ConceptTree(linkage(x, "ward"))
    for k in (3, 10, 40):
        nodes = t.cut(k)
        assert len(nodes) == k
        members = [set(t.members(n).tolist()) for n in nodes]
        assert sum(map(len, members)) == 80 and set().union(*members) == set(range(80))
        for n in nodes:
            kids = t.children(n)
            if kids:
                assert set(t.members(n)) == set(t.members(kids[0])) | set(t.members(kids[1]))
                assert all(t.parent_of(c) == n for c in kids)
            p = t.parent_of(n)
            if p is not None:  # the super-concept exists at a coarser cut and contains n
                assert n in t.children(p)
                k_parent = t.n_leaves - int(t.created[p]) - 1
                assert k_parent < k and p in t.cut(k_parent) and set(t.members(n)) < set(t.members(p))
    # the single merge between K and K-1 joins two concepts of the K cut
    a, b = set(t.cut(10).tolist()), set(t.cut(9).tolist())
    assert len(a - b) == 2 and len(b - a) == 1
    assert set(t.children((b - a).pop())) == a - b
