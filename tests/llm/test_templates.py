"""One prompt-template type for every stage: provenance, keys, registry lookups."""
from __future__ import annotations

import dataclasses

import pytest

from tl_concepts.concepts.prompts import TEMPLATES as LABEL_TEMPLATES
from tl_concepts.concepts.prompts import LabelTemplate, parse_general
from tl_concepts.descriptors.prompts import TEMPLATES as DESCRIPTOR_TEMPLATES
from tl_concepts.descriptors.prompts import DescriptorTemplate
from tl_concepts.errors import NotFoundError
from tl_concepts.explain.prompts import TEMPLATES as EXPLAIN_TEMPLATES
from tl_concepts.llm.templates import PromptTemplate, TemplateRegistry, all_templates, get_template

# The text digest of every shipped template at its current version. A failure here means a
# template's wording, examples or parser changed without a version bump: bump the version in
# the template and put the new id and digest here.
DIGESTS = {
    "agree@v1": "18b55692d640bb88",
    "descriptors@v2": "07211c6a7f0af187",
    "explain/revise@1": "3c0f3d1ddbe00bb4",
    "explain/token-activation@2": "234844d0409193d9",
    "judge@v2": "7423df85da888d6b",
    "judge-json@v1": "a93dc7e8b232833a",
    "label-fewshot@v1": "440817739a128a17",
    "label-general@v1": "5d40e1cacfe67a92",
    "label-lexical@v1": "f391df1506eec224",
    "label-pos@v1": "59eb9cb7ca0e0a9e",
    "score/detection@1": "c7b47a84451c5484",
    "score/fuzzing@1": "9461b1f83f143f76",
    "simulate/all-at-once@1": "73f214469cb97448",
    "simulate/json@1": "992673f67566961e",
}


def test_every_stage_uses_the_one_type_and_user_names_resolve():
    everything = all_templates()
    assert all(isinstance(t, PromptTemplate) for t in everything.values())
    assert isinstance(LABEL_TEMPLATES["label-fewshot"], LabelTemplate)
    assert isinstance(DESCRIPTOR_TEMPLATES["descriptors"], DescriptorTemplate)
    for name in ["label-fewshot", "label-general", "descriptors", "explain/token-activation", "simulate/all-at-once"]:
        assert get_template(name).name == name
    assert set(LABEL_TEMPLATES) | set(DESCRIPTOR_TEMPLATES) | set(EXPLAIN_TEMPLATES) <= set(everything)


def test_shipped_text_matches_its_version():
    got = {t.id: t.digest() for t in all_templates().values()}
    changed = {i: d for i, d in got.items() if i in DIGESTS and DIGESTS[i] != d}
    assert not changed, f"template text changed without a version bump: {changed}"
    assert set(got) == set(DIGESTS), "a template was added or renamed: add its id and digest to DIGESTS"


@pytest.mark.parametrize("name", sorted(DIGESTS))
def test_a_changed_text_changes_the_key_but_not_the_provenance(name):
    t = get_template(name.split("@")[0])
    for field in ["system", "task"]:
        changed = dataclasses.replace(t, **{field: getattr(t, field) + " "})
        assert changed.key() != t.key() and changed.key()["version"] == t.key()["version"]
        assert changed.provenance() == t.provenance() == {"template": t.name, "template_version": t.version}
    assert dataclasses.replace(t, version=t.version + "x").key() != t.key()
    assert t.id == f"{t.name}@{t.version}"


def test_the_parser_is_part_of_a_label_templates_key():
    t = LABEL_TEMPLATES["label-pos"]
    assert dataclasses.replace(t, parse=parse_general).digest() != t.digest()
    assert dataclasses.replace(t, max_tokens=t.max_tokens + 1).digest() != t.digest()


def test_unknown_names_list_the_known_ones():
    with pytest.raises(NotFoundError, match="unknown label prompt template 'label-nope'; choose one of: "
                                            "label-fewshot, label-general, label-lexical, label-pos"):
        LABEL_TEMPLATES["label-nope"]
    with pytest.raises(KeyError):  # a Mapping: KeyError, so `in` and `.get` behave
        DESCRIPTOR_TEMPLATES["nope"]
    assert "nope" not in DESCRIPTOR_TEMPLATES and DESCRIPTOR_TEMPLATES.get("nope") is None
    with pytest.raises(NotFoundError, match="choose one of: .*descriptors.*label-fewshot"):
        get_template("nope")


def test_a_name_cannot_be_taken_twice():
    t = PromptTemplate("label-fewshot", "9")
    with pytest.raises(ValueError, match="used twice"):
        TemplateRegistry("test-dup", [t])
    with pytest.raises(ValueError, match="used twice"):
        TemplateRegistry("test-dup", [PromptTemplate("x-test", "1"), PromptTemplate("x-test", "2")])
