"""The CLI is generated from the config dataclasses: every field is a flag with the field's
docstring as help, one meaning and one default; ``--config`` files give defaults that flags
override; bad values are argparse's one-line error (exit 2)."""
from __future__ import annotations

import dataclasses
import json
import typing

import pytest

from tl_concepts import __version__, cli
from tl_concepts.capture import CaptureConfig, ExemplarConfig
from tl_concepts.concepts.filters import FilterConfig
from tl_concepts.concepts.labelling import LabelOptions
from tl_concepts.concepts.runner import ConceptsConfig
from tl_concepts.descriptors.runner import DescriptorsConfig
from tl_concepts.explain.runner import ExplainConfig
from tl_concepts.pipeline import RunConfig
from tl_concepts.probing.probes import ProbeOptions
from tl_concepts.probing.runner import ProbeConfig, RankConfig

CONFIGS = {"run": RunConfig, "capture": CaptureConfig, "explain": ExplainConfig, "concepts": ConceptsConfig,
           "probe": ProbeConfig, "rank": RankConfig, "descriptors": DescriptorsConfig}
DERIVED = {("explain", "out_dir")}  # the CLI puts it under --out (OUT/explain)
HOOK = "blocks.0.mlp.hook_post"


def _subparsers():
    parser = cli.build_parser()
    return parser._subparsers._group_actions[0].choices


def _helps(subparser) -> dict[str, str]:
    """Help text of every option string of a subcommand, as argparse shows it (%% unescaped)."""
    return {o: (a.help or "").replace("%%", "%") for a in subparser._actions for o in a.option_strings}


def _leaves(cls, path=()):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _leaves(hints[f.name], path + (f.name,))
        else:
            yield cls, path + (f.name,), f.name


def test_docstrings_are_read_from_the_source():
    docs = cli.field_docs(FilterConfig)
    assert docs["min_count"].startswith("Drop word types with fewer occurrences than this")
    assert set(docs) == {f.name for f in dataclasses.fields(FilterConfig)}
    assert cli.first_sentence("Use ``a``. Then b.") == "Use a."


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_config_field_is_a_flag_with_its_docstring(name):
    sub = _subparsers()[name]
    command = sub.get_default("_command")
    helps = _helps(sub)
    seen = 0
    for owner, path, field in _leaves(CONFIGS[name]):
        if (name, field) in DERIVED:
            continue
        dest = command.dest_of.get((CONFIGS[name], path))
        assert dest is not None, f"{name}: {'.'.join(path)} has no flag"
        option = "--" + dest.replace("_", "-")
        doc = cli.field_docs(owner)[field]
        assert helps[option].startswith(cli.first_sentence(doc)), (option, helps[option])
        seen += 1
    assert seen >= 10


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_flag_has_its_fields_docstring_and_default_as_help(name):
    sub = _subparsers()[name]
    helps = _helps(sub)
    for flag in sub.get_default("_command").flags.values():
        text = helps[flag.option]
        assert text.startswith(cli.first_sentence(cli.field_docs(flag.owner)[flag.name])), (flag.option, text)
        assert text.endswith("(required)") if flag.required else "(default: " in text, text


def test_a_literal_field_gets_its_values_as_choices():
    @dataclasses.dataclass
    class Toy:
        """A toy config."""

        placement: typing.Literal["local", "ray"] = "local"
        """Where it runs."""

    command = cli.Command("toy", "toy", "toy", ["tl-concepts toy"], [Toy], lambda inp: 0)
    assert command.flags["placement"].choices == ("local", "ray")


def test_nested_configs_are_flattened_and_a_clash_gets_a_prefix():
    concepts = _subparsers()["concepts"].get_default("_command")
    assert concepts.dest_of[(ConceptsConfig, ("filters", "min_count"))] == "min_count"
    assert concepts.dest_of[(ConceptsConfig, ("seed",))] == "seed"
    assert concepts.dest_of[(ConceptsConfig, ("filters", "seed"))] == "filters_seed"
    assert concepts.dest_of[(ConceptsConfig, ("label", "n_context"))] == "n_context"
    probe = _subparsers()["probe"].get_default("_command")
    assert probe.dest_of[(ProbeConfig, ("options", "c_grid"))] == "c_grid"


def test_flags_build_the_configs():
    _, inp = cli.parse(["concepts", "--store", "s", "--layer", "2", "-k", "7", "--min-count", "3",
                        "--max-per-type", "none", "--filters-seed", "4", "--context", "2", "--no-progress"])
    cfg = inp[ConceptsConfig]
    assert (cfg.store, cfg.layer, cfg.k, cfg.hook) == ("s", 2, 7, None)
    assert cfg.filters == FilterConfig(min_count=3, max_per_type=None, seed=4)
    assert cfg.label == LabelOptions(n_context=2) and cfg.seed == 0
    assert inp[cli.ProgressArgs].progress is False
    _, inp = cli.parse(["probe", "--store", "s", "--hook", HOOK, "--c-grid", "0.5", "2", "--no-control",
                        "--split", "0.5", "0.25", "0.25"])
    assert inp[ProbeConfig].options == ProbeOptions(split=(0.5, 0.25, 0.25), c_grid=(0.5, 2.0), control=False)
    _, inp = cli.parse(["rank", "--store", "s", "--hook", HOOK, "--method", "probeless", "probe_weights"])
    assert inp[RankConfig].methods == ("probeless", "probe_weights")


def test_exemplar_preset_with_single_overrides():
    _, inp = cli.parse(["capture", "--hooks", HOOK, "--out", "s", "--exemplars", "bills", "--negative", "3"])
    assert inp[CaptureConfig].exemplars == ExemplarConfig.bills(n_negative=3)
    _, inp = cli.parse(["capture", "--hooks", HOOK, "--out", "s", "--n-test-random", "7"])
    assert inp[CaptureConfig].exemplars == ExemplarConfig(n_test_random=7)


def test_run_keeps_its_own_defaults_and_says_so():
    helps = _helps(_subparsers()["run"])
    assert "(default: 5)" in helps["--min-count"] and "concepts command's 10" in helps["--min-count"]
    assert "(default: 10)" in _helps(_subparsers()["concepts"])["--min-count"]
    _, inp = cli.parse(["run"])
    assert inp[RunConfig] == RunConfig()
    # --units is a spec in explain; run counts neurons with --n-units
    assert "--units" not in helps and "--n-units" in helps
    _, inp = cli.parse(["run", "--n-units", "2", "--max-docs", "none", "--device", "cpu"])
    assert (inp[RunConfig].n_units, inp[RunConfig].max_docs) == (2, None)


@pytest.mark.parametrize("name", ["run", "capture", "explain"])
def test_device_wherever_a_model_is_loaded(name):
    assert "--device" in _helps(_subparsers()[name])


def test_config_file_gives_defaults_and_flags_override(tmp_path):
    f = tmp_path / "capture.yaml"
    f.write_text("hooks: [blocks.0.mlp.hook_post]\nout: runs/x\ncontext-tokens: 32\nexemplars: bills\n"
                 "n_negative: 2\nexecutor: ray\nray_address: auto\nprogress: false\n", encoding="utf-8")
    _, inp = cli.parse(["capture", "--config", str(f)])
    cfg = inp[CaptureConfig]
    assert (cfg.hooks, cfg.context_tokens, cfg.executor, cfg.ray_address) == ([HOOK], 32, "ray", "auto")
    assert cfg.exemplars == ExemplarConfig.bills(n_negative=2)
    assert inp[cli.CaptureArgs].out == "runs/x" and inp[cli.ProgressArgs].progress is False
    _, inp = cli.parse(["capture", "--config", str(f), "--context-tokens", "16", "--executor", "local",
                        "--exemplars", "default", "--progress"])
    cfg = inp[CaptureConfig]
    assert (cfg.context_tokens, cfg.executor) == (16, "local") and inp[cli.ProgressArgs].progress is True
    assert cfg.exemplars == ExemplarConfig(n_negative=2)  # the file's override stays, on the flag's preset


def test_json_config_with_nested_sections(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"store": "s", "hook": "blocks.1.hook_resid_post", "filters": {"min_count": 2, "seed": 9},
                             "label": {"template": "label-general", "words_as": "types"}}), encoding="utf-8")
    _, inp = cli.parse(["concepts", "--config", str(f), "--min-count", "4"])
    cfg = inp[ConceptsConfig]
    assert cfg.filters == FilterConfig(min_count=4, seed=9)
    assert cfg.label == LabelOptions(template="label-general", words_as="types")


def _error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [x for x in err.splitlines() if "error:" in x]
    assert len(lines) == 1, err
    return lines[0]


def test_unknown_config_key_is_one_line_naming_the_valid_ones(tmp_path, capsys):
    f = tmp_path / "bad.yaml"
    f.write_text("hooks: [x]\nout: o\ncontext_tokenz: 3\n", encoding="utf-8")
    line = _error(capsys, ["capture", "--config", str(f)])
    assert "context_tokenz" in line and "context_tokens" in line and "n_negative" in line
    f.write_text("store: s\nfilters: {min_cnt: 3}\n", encoding="utf-8")
    line = _error(capsys, ["concepts", "--config", str(f)])
    assert "filters.min_cnt" in line and "min_count" in line


@pytest.mark.parametrize("text, expect", [
    ("hooks: [x]\nout: o\ncontext_tokens: many\n", "invalid int value: 'many'"),
    ("hooks: [x]\nout: o\noverwrite: 3\n", "invalid boolean value"),
    ("hooks: [x]\nout: o\nexecutor: dask\n", "invalid choice: 'dask'"),
    ("- a\n- b\n", "mapping"),
    ("hooks: [x\n", "not valid YAML"),
])
def test_bad_config_values_are_one_line(tmp_path, capsys, text, expect):
    f = tmp_path / "bad.yaml"
    f.write_text(text, encoding="utf-8")
    assert expect in _error(capsys, ["capture", "--config", str(f)])


def test_bad_flag_values_are_argparse_errors(capsys, tmp_path):
    assert "invalid int value: 'abc'" in _error(capsys, ["capture", "--hooks", HOOK, "--out", "o",
                                                         "--context-tokens", "abc"])
    line = _error(capsys, ["explain", "--hook", HOOK, "--executor", "dask"])
    assert "invalid choice: 'dask'" in line and "'ray'" in line
    line = _error(capsys, ["capture", "--out", str(tmp_path / "s")])
    assert "required: --hooks" in line
    assert not (tmp_path / "s").exists()


def test_executor_flags_reach_every_stage_config():
    for name, argv in [("run", []), ("capture", ["--hooks", HOOK, "--out", "o"]), ("explain", ["--hook", HOOK]),
                       ("concepts", ["--store", "s", "--layer", "1"]),
                       ("descriptors", ["--store", "s", "--hook", HOOK, "--out", "o"])]:
        sub = _subparsers()[name]
        action = next(a for a in sub._actions if "--executor" in a.option_strings)
        assert tuple(action.choices) == ("local", "ray")
        _, inp = cli.parse([name, *argv, "--executor", "ray", "--ray-address", "ray://head:10001"])
        cfg = inp.build(CONFIGS[name], out_dir="x") if name == "explain" else inp[CONFIGS[name]]
        assert (cfg.executor, cfg.ray_address) == ("ray", "ray://head:10001")


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_help_of_every_subcommand_shows_examples(name, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([name, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"tl-concepts {name} " in out.split("examples:")[1]
    assert "--config FILE" in out


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"tl-concepts {__version__}"


def test_concepts_needs_one_of_layer_and_hook(capsys):
    assert cli.main(["concepts", "--store", "s"]) == 2
    assert "--layer or --hook" in capsys.readouterr().err


def test_capture_from_a_config_file_end_to_end(tiny_gpt2_dir, tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("The cat sat on the mat.\nA dog ran in the park.\nRain fell all day long.\n", encoding="utf-8")
    f = tmp_path / "capture.yaml"
    f.write_text(f"model: {tiny_gpt2_dir}\ncorpus: {corpus}\nhooks: {HOOK}\ncontext_tokens: 8\n"
                 f"exemplars: bills\nprogress: false\n", encoding="utf-8")
    assert cli.main(["capture", "--config", str(f), "--out", str(tmp_path / "s"), "--n-negative", "1"]) == 0
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["settings"]["context_tokens"] == 8
    assert manifest["exemplars"] == ExemplarConfig.bills(n_negative=1).to_dict()
    assert "tokens " in capsys.readouterr().out


ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def _documented_commands() -> list[str]:
    """Every ``tl-concepts <command> ...`` line of README.md and docs/*.md (continuations joined)."""
    lines = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text(encoding="utf-8").replace("\\\n", " ")
        for line in text.splitlines():
            line = line.strip().strip("`").split("  #")[0].strip()
            if line.startswith("time "):
                line = line[5:]
            for prefix in (".venv/bin/tl-concepts ", "tl-concepts "):
                if line.startswith(prefix) and "`" not in line and "<" not in line:
                    lines.append(line[len(prefix) - len("tl-concepts "):])
    return lines


def test_documented_command_lines_and_help_examples_parse(capsys, tmp_path, monkeypatch):
    import shlex

    monkeypatch.chdir(tmp_path)  # the examples' --config files: README's capture.yaml, an empty run.yaml
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (tmp_path / "capture.yaml").write_text(readme.split("```yaml\n", 1)[1].split("```", 1)[0], encoding="utf-8")
    (tmp_path / "run.yaml").write_text("", encoding="utf-8")
    docs = _documented_commands()
    assert len(docs) >= 10
    examples = [e for p in _subparsers().values() for e in p.epilog.splitlines()[1:]]
    for line in docs + [e.strip() for e in examples]:
        argv = shlex.split(line)[1:]
        if argv in (["--version"], []):
            continue
        try:
            cli.parse(argv)
        except SystemExit:
            pytest.fail(f"documented command does not parse: {line}\n{capsys.readouterr().err}")


def test_every_flag_of_the_readme_cli_section_exists():
    import re

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Command line"):text.index("## The other stages")]
    known = {o for p in _subparsers().values() for a in p._actions for o in a.option_strings} | {"--version"}
    used = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", section))
    assert used and used <= known, used - known


def test_the_readme_config_example_parses(tmp_path):
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    f = tmp_path / "capture.yaml"
    f.write_text(block, encoding="utf-8")
    _, inp = cli.parse(["capture", "--config", str(f), "--context-tokens", "128"])
    cfg = inp[CaptureConfig]
    assert cfg.context_tokens == 128 and cfg.exemplars == ExemplarConfig.bills(n_negative=5)
    assert inp[cli.CorpusArgs].encoding == "latin-1" and len(cfg.hooks) == 2


@pytest.mark.parametrize("name", sorted(_subparsers()))
def test_help_texts_speak_in_flags_not_python(name):
    """A user reads flags and values, not class names, Python literals or Sphinx roles."""
    import re

    python_words = re.compile(r"Config\b|Options\b|ConceptInput|TEMPLATES|default_k|default_template|get_llm|"
                              r"load_corpus|:class:|:func:|:data:|\bNone\b|\bTrue\b|\bFalse\b|=\"")
    bad = {flag: text for flag, text in _helps(_subparsers()[name]).items() if python_words.search(text)}
    assert not bad, bad


@pytest.mark.parametrize("argv", [
    ["explain", "--store", "s", "--hook", HOOK, "--units", "0:1"],
    ["descriptors", "--store", "s", "--hook", HOOK],
    ["concepts", "--store", "s", "--layer", "0", "--label"],
])
def test_unreachable_ray_address_is_refused_before_anything_is_written(argv, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main([*argv, "--out", str(out), "--executor", "ray", "--ray-address", "127.0.0.1:1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cannot reach the Ray cluster at '127.0.0.1:1'" in err[0]
    assert not out.exists()
