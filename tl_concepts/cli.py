"""``tl-concepts`` command line, generated from the config dataclasses.

Every flag is a field of a stage's config (``CaptureConfig``, ``ExplainConfig``, ...) or of a
small input dataclass below: its name is the field name in kebab case, its type and default
are the field's, and its help is the field's docstring. Nested configs (``ExemplarConfig``,
``FilterConfig``, ``LabelOptions``, ``ProbeOptions``) are flattened with their own field names
(a name the parent already uses gets the parent field as prefix, e.g. ``--filters-seed``).
``--config FILE`` (YAML or JSON) gives defaults by the same names; flags override it.

Example:
    tl-concepts run --out runs/main
    tl-concepts capture --model minilm --corpus lee --hooks blocks.3.mlp.hook_post --out runs/x
    tl-concepts explain --store runs/x --hook blocks.3.mlp.hook_post --units 0:50
    tl-concepts concepts --store runs/x --layer 3 -k 200 --label
    tl-concepts probe --store runs/x --hook blocks.3.hook_resid_post --labels pos
    tl-concepts rank --store runs/x --hook blocks.3.mlp.hook_post --labels pos --methods probeless
    tl-concepts descriptors --store runs/x --hook blocks.3.mlp.hook_post --out runs/x/descriptors
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import logging
import re
import sys
import textwrap
import time
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar, Union

T = TypeVar("T")


# ---------------------------------------------------------------- CLI-only inputs


@dataclass
class ModelArgs:
    """The model whose insides are read."""

    model: str = "minilm"
    """Model to load: ``minilm``, ``smollm2-135m``, a Hugging Face name or a local folder."""
    device: str = "cpu"
    """Device the model is loaded on and runs on."""


@dataclass
class CorpusArgs:
    """The text the model reads."""

    corpus: str = "lee"
    """Corpus: ``lee``, a .txt/.jsonl/.parquet file, or a datasets name or folder."""
    text_column: str = "text"
    """Text column of a .jsonl/.parquet/datasets corpus."""
    encoding: str = "utf-8"
    """Text encoding of a .txt/.jsonl corpus (an undecodable byte is an error)."""
    max_docs: int | None = None
    """Use only the first N documents (None: all)."""


@dataclass
class LLMArgs:
    """The LLM that answers."""

    llm: str | None = None
    """LLM spec: ``in-process``, ``in-process:/path/to/hf-folder`` or ``openai:MODEL`` (None:
    ``$TL_CONCEPTS_LLM`` or the embedded SmolLM2-135M-Instruct in process)."""
    base_url: str | None = None
    """OpenAI-compatible endpoint for ``--llm openai:MODEL``."""
    concurrency: int | None = None
    """LLM requests in flight for an OpenAI-compatible endpoint (None: the backend's default, 16)."""


@dataclass
class ProgressArgs:
    """Progress output."""

    progress: bool = True
    """Show progress bars and progress notes."""


@dataclass
class CaptureArgs:
    """Inputs of ``tl-concepts capture`` that are not capture settings."""

    out: str
    """Store directory to create or resume."""
    overwrite: bool = False
    """Replace a capture of other inputs (or a damaged one) in the output folder."""


@dataclass
class ExplainArgs:
    """Inputs of ``tl-concepts explain`` that are not explanation settings."""

    hook: str
    """Hook point whose units are explained, e.g. ``blocks.5.mlp.hook_post``."""
    units: str = "0:50"
    """Units to explain: ``0:50``, ``3,7,9`` or both (``0:10,42``)."""
    store: str | None = None
    """Existing capture store (None: capture the hook into OUT/store first)."""
    out: str = "runs/explain"
    """Output folder (explanations go to OUT/explain)."""
    retry_failed: bool = False
    """Also retry units whose LLM answer failed for a permanent reason (unparseable, truncated,
    refused); transient failures are always retried."""


@dataclass
class ConceptsArgs:
    """Inputs of ``tl-concepts concepts`` that are not concept settings."""

    label: bool = False
    """Label the concepts with an LLM."""
    judge: bool = False
    """Rate the accepted labels with the LLM as judge."""
    retry_failed: bool = False
    """Ask again for labels that were not accepted (refused, unparseable, rejected by the label
    gate); transient failures are always retried."""
    export_tcn: str | None = None
    """Also write the concepts and labels in the Transformers Concept Net layout under this folder."""


# ---------------------------------------------------------------- the generator


@functools.lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings of a dataclass (the string literal under each field), by field name.

    Example:
        >>> field_docs(ProgressArgs)["progress"]
        'Show progress bars and progress notes.'
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for a, b in zip(body, body[1:]):
            if (isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name) and isinstance(b, ast.Expr)
                    and isinstance(b.value, ast.Constant) and isinstance(b.value.value, str)):
                docs[a.target.id] = inspect.cleandoc(b.value.value)
    return docs


def plain(doc: str) -> str:
    """A field docstring as one line of plain text (reST roles and literals unwrapped; ``None``
    spelled ``none``, as the command line takes it).

    Example:
        >>> plain("Run ``local`` or see :class:`~tl_concepts.x.Y` (None: all).")
        'Run local or see Y (none: all).'
    """
    text = re.sub(r":\w+:`~?([^`]+)`", lambda m: m.group(1).split(".")[-1], doc)
    text = re.sub(r"\bNone\b", "none", text)  # the spelling a flag or --config file takes
    return " ".join(text.replace("``", "").split())


def first_sentence(doc: str) -> str:
    """The first sentence of :func:`plain` text (up to the first '. ' or the end)."""
    text = plain(doc)
    m = re.search(r"\.\s", text)
    return text[: m.start() + 1] if m else text


_ANY = "*"
CHOICES: dict[tuple[str, str], Callable[[], Sequence[str]]] = {
    (_ANY, "executor"): lambda: __import__("tl_concepts.executor", fromlist=["EXECUTORS"]).EXECUTORS,
    (_ANY, "agg"): lambda: ("mean", "first", "last"),
    ("CaptureConfig", "dtype"): lambda: ("float32", "float16"),
    ("CaptureConfig", "nonfinite"): lambda: __import__("tl_concepts.capture.runner",
                                                        fromlist=["x"]).NONFINITE_POLICIES,
    ("CaptureConfig", "exemplars"): lambda: ("default", "bills"),
    ("ConceptsConfig", "mode"): lambda: ("auto", "exact", "micro"),
    ("LabelOptions", "words_as"): lambda: ("tokens", "types"),
    ("LabelOptions", "template"): lambda: sorted(__import__("tl_concepts.concepts.prompts",
                                                             fromlist=["x"]).TEMPLATES),
    ("ExplainConfig", "simulator"): lambda: ("all-at-once", "json"),
    ("DescriptorsConfig", "template"): lambda: sorted(__import__("tl_concepts.descriptors.prompts",
                                                                  fromlist=["x"]).TEMPLATES),
    ("RankConfig", "methods"): lambda: sorted(__import__("tl_concepts.probing.rankers",
                                                          fromlist=["x"]).RANKERS),
}
"""Known values of string fields, by (class name, field name); ``*`` matches any class."""

PRESETS = {("CaptureConfig", "exemplars")}
"""Nested configs that also take a preset name (``--exemplars bills``); their own fields override it."""

ALIASES: dict[tuple[str, str], tuple[str, ...]] = {
    (_ANY, "k"): ("-k",), ("ExemplarConfig", "n_negative"): ("--negative",),
    ("LabelOptions", "n_context"): ("--context",), ("RankConfig", "methods"): ("--method",),
    ("DescriptorsConfig", "k"): ()}
"""Extra spellings of a flag, by (class name, field name): ``-k`` for a number of concepts, and the
names earlier versions used. (``descriptors --k`` is the k of precision@k: no ``-k``.)"""


@dataclass
class Flag:
    """One generated option."""

    dest: str
    """Name in the parsed namespace and in a ``--config`` file."""
    owner: type
    """Dataclass that declares the field."""
    name: str
    """Field name."""
    tp: Any
    """Resolved field type."""
    default: Any
    """Field default (``dataclasses.MISSING`` when required)."""
    choices: Sequence[str] | None = None
    """Allowed values, if known."""

    @property
    def option(self) -> str:
        return "--" + self.dest.replace("_", "-")

    @property
    def required(self) -> bool:
        return self.default is dataclasses.MISSING


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _unwrap(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True)."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], len(args) < len(typing.get_args(tp))
    return tp, False


def _scalar(tp: Any, optional: bool) -> Callable[[str], Any]:
    """A converter argparse can call (its ``__name__`` appears in argparse's error line)."""
    base = tp if tp in (int, float, str) else str

    def convert(text: str) -> Any:
        if optional and text.strip().lower() in ("none", "null"):
            return None
        return base(text)

    convert.__name__ = base.__name__
    return convert


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, (list, tuple)):
        return " ".join(map(str, v))
    return "none" if v is None else str(v)


class Command:
    """One subcommand: its generated flags and the function that runs it."""

    def __init__(self, name: str, summary: str, description: str, examples: Sequence[str],
                 sources: Sequence[type], func: Callable[["Inputs"], int],
                 skip: Sequence[tuple[type, str]] = ()) -> None:
        self.name, self.summary, self.description = name, summary, description
        self.examples, self.sources, self.func, self.skip = list(examples), list(sources), func, set(skip)
        self.flags: dict[str, Flag] = {}
        self.dest_of: dict[tuple[type, tuple[str, ...]], str] = {}
        for root in self.sources:
            self._walk(root, root, ())

    def _walk(self, root: type, cls: type, path: tuple[str, ...]) -> None:
        hints = typing.get_type_hints(cls)
        nested = []
        for f in dataclasses.fields(cls):
            if (cls, f.name) in self.skip:
                continue
            tp = hints[f.name]
            if isinstance(tp, type) and dataclasses.is_dataclass(tp):
                nested.append((f, tp))
                if (cls.__name__, f.name) not in PRESETS:
                    continue
            self._add(root, cls, path + (f.name,), f, tp, prefix=path[-1] if path else "")
        for f, tp in nested:  # after the parent's own fields, so the parent keeps plain names
            self._walk(root, tp, path + (f.name,))

    def _add(self, root: type, cls: type, path: tuple[str, ...], f: dataclasses.Field, tp: Any,
             prefix: str) -> None:
        dest = f.name
        if dest in self.flags:
            if root.__module__ == __name__:  # a CLI input a config already declares: the config's flag
                self.dest_of[(root, path)] = dest
                return
            dest = f"{prefix}_{f.name}" if prefix else f"{root.__name__.lower()}_{f.name}"
        if dataclasses.is_dataclass(tp):  # a preset name
            tp, default = str, "default"
        else:
            default = _default(f)
        key = (cls.__name__, f.name)
        chooser = CHOICES.get(key) or CHOICES.get((_ANY, f.name))
        choices = tuple(chooser()) if chooser else None
        if typing.get_origin(_unwrap(tp)[0]) is typing.Literal:  # a Literal field lists its own values
            choices = tuple(str(v) for v in typing.get_args(_unwrap(tp)[0]))
        self.flags[dest] = Flag(dest, cls, f.name, tp, default, choices)
        self.dest_of[(root, path)] = dest

    # -- argparse

    def add_to(self, sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
        epilog = "examples:\n" + "\n".join(f"  {e}" for e in self.examples)
        description = textwrap.fill(self.description, 100)
        p = sub.add_parser(self.name, help=self.summary, description=description, epilog=epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           argument_default=argparse.SUPPRESS)
        p.add_argument("--config", metavar="FILE", default=None,
                       help="YAML or JSON file of settings by flag name (snake_case or kebab-case); "
                            "flags given on the command line override it")
        for flag in self.flags.values():
            self._argument(p, flag)
        p.set_defaults(_command=self, _parser=p)
        return p

    def _argument(self, p: argparse.ArgumentParser, flag: Flag) -> None:
        doc = plain(field_docs(flag.owner).get(flag.name, ""))
        if not doc:
            raise TypeError(f"{flag.owner.__name__}.{flag.name} has no docstring")  # a bug, caught by tests
        note = "required" if flag.required else f"default: {_fmt(flag.default)}"
        kw: dict[str, Any] = {"help": f"{doc} ({note})".replace("%", "%%"), "dest": flag.dest}
        aliases = ALIASES.get((flag.owner.__name__, flag.name), ALIASES.get((_ANY, flag.name), ()))
        names = sorted([flag.option, *aliases], key=lambda n: n.startswith("--"))
        tp, optional = _unwrap(flag.tp)
        origin = typing.get_origin(tp)
        if tp is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif origin in (list, tuple):
            args = typing.get_args(tp)
            fixed = origin is tuple and args and args[-1] is not Ellipsis
            kw["nargs"] = len(args) if fixed else "+"
            kw["type"] = _scalar(args[0] if args else str, False)
        else:
            kw["type"] = _scalar(tp, optional)
        if flag.choices:
            kw["choices"] = flag.choices
        if flag.choices and "nargs" not in kw:
            kw["metavar"] = "{" + ",".join(flag.choices) + "}"
        elif flag.choices:
            kw["metavar"] = flag.dest.upper().rstrip("S")
            kw["help"] = kw["help"][:-1] + f"; choices: {', '.join(flag.choices)})"
        elif tp is not bool:
            elem = typing.get_args(tp)[0] if origin in (list, tuple) else tp
            kw["metavar"] = {int: "N", float: "X"}.get(elem, flag.dest.upper())
        p.add_argument(*names, **kw)

    # -- values

    def coerce(self, flag: Flag, value: Any) -> Any:
        """A ``--config`` file value checked as the flag would check it (ValueError if bad)."""
        tp, optional = _unwrap(flag.tp)
        if value is None:
            if optional or flag.default is None:
                return None
            raise ValueError("must not be empty")
        if tp is bool:
            if not isinstance(value, bool):
                raise ValueError(f"invalid boolean value: {value!r} (use true or false)")
            return value
        origin = typing.get_origin(tp)
        if origin in (list, tuple):
            items = value if isinstance(value, list) else [value]
            conv = _scalar((typing.get_args(tp) or (str,))[0], False)
            out = [self._one(conv, flag, v) for v in items]
            args = typing.get_args(tp)
            if origin is tuple and args and args[-1] is not Ellipsis and len(out) != len(args):
                raise ValueError(f"expected {len(args)} values, got {len(out)}")
            return out
        if isinstance(value, (dict, list)) or (isinstance(value, bool) and tp is not str):
            raise ValueError(f"invalid {getattr(tp, '__name__', 'str')} value: {value!r}")
        return self._one(_scalar(tp, optional), flag, value)

    @staticmethod
    def _one(conv: Callable[[str], Any], flag: Flag, v: Any) -> Any:
        try:
            out = conv(str(v))
        except (TypeError, ValueError):
            raise ValueError(f"invalid {conv.__name__} value: {v!r}") from None
        if flag.choices and out not in flag.choices:
            raise ValueError(f"invalid choice: {v!r} (choose from {', '.join(map(str, flag.choices))})")
        return out

    def read_config(self, path: str) -> dict[str, Any]:
        """Values of a YAML/JSON settings file, by dest; ValueError (one line) for anything wrong."""
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as e:
            raise ValueError(f"cannot read {path}: {e.strerror or e}") from None
        except yaml.YAMLError as e:
            raise ValueError(f"{path} is not valid YAML/JSON: {' '.join(str(e).split())}") from None
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a mapping of setting: value")
        nested = {path_[-1]: (root, path_) for (root, path_) in self._nested_paths()}
        given: dict[str, Any] = {}

        def put(key: str, value: Any, where: str) -> None:
            dest = str(key).replace("-", "_")
            if dest in nested and isinstance(value, dict):
                root, p = nested[dest]
                for k, v in value.items():
                    sub = self.dest_of.get((root, p + (str(k).replace("-", "_"),)))
                    if sub is None:
                        raise ValueError(f"{path}: unknown setting '{where}{dest}.{k}'; valid settings: "
                                         + ", ".join(self._nested_names(root, p)))
                    put(sub, v, "")
                return
            if dest not in self.flags:
                raise ValueError(f"{path}: unknown setting '{where}{key}' for '{self.name}'; valid settings: "
                                 + ", ".join(self.flags))
            try:
                given[dest] = self.coerce(self.flags[dest], value)
            except ValueError as e:
                raise ValueError(f"{path}: setting '{key}': {e}") from None

        for k, v in data.items():
            put(k, v, "")
        return given

    def _nested_paths(self) -> list[tuple[type, tuple[str, ...]]]:
        return sorted({(root, p[:-1]) for (root, p) in self.dest_of if len(p) > 1}, key=lambda x: x[1])

    def _nested_names(self, root: type, prefix: tuple[str, ...]) -> list[str]:
        return [p[-1] for (r, p) in self.dest_of if r is root and p[:-1] == prefix]


class Inputs:
    """The parsed values of one invocation: file values, then flags; builds the dataclasses."""

    def __init__(self, command: Command, given: dict[str, Any]) -> None:
        self.command, self.given = command, given

    def build(self, cls: type[T], path: tuple[str, ...] = (), root: type | None = None, **extra: Any) -> T:
        """An instance of source ``cls`` from the given values (unset fields keep their defaults)."""
        root = root or cls
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]  # every source is a dataclass
            p = path + (f.name,)
            tp = hints[f.name]
            dest = self.command.dest_of.get((root, p))
            if isinstance(tp, type) and dataclasses.is_dataclass(tp):
                sub: Any = self.build(tp, p, root)
                if dest is not None and dest in self.given:  # a preset, with the nested flags on top
                    overrides = {g.name: getattr(sub, g.name) for g in dataclasses.fields(tp)
                                 if self.command.dest_of.get((root, p + (g.name,))) in self.given}
                    sub = getattr(tp, "preset")(self.given[dest], **overrides)
                kwargs[f.name] = sub
            elif dest is not None and dest in self.given:
                v = self.given[dest]
                kwargs[f.name] = tuple(v) if isinstance(v, list) and typing.get_origin(_unwrap(tp)[0]) is tuple else v
        kwargs.update(extra)
        return cls(**kwargs)

    def __getitem__(self, cls: type[T]) -> T:
        return self.build(cls)


def _merge(command: Command, ns: argparse.Namespace, parser: argparse.ArgumentParser) -> Inputs:
    given: dict[str, Any] = {}
    if ns.config:
        try:
            given.update(command.read_config(ns.config))
        except ValueError as e:
            parser.error(f"--config {e}")
    given.update({d: getattr(ns, d) for d in command.flags if hasattr(ns, d)})
    missing = [f.option for f in command.flags.values() if f.required and f.dest not in given]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    return Inputs(command, given)


# ---------------------------------------------------------------- the subcommands


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GB"


def _llm(a: LLMArgs) -> Any:
    from tl_concepts.llm import get_llm

    kw: dict[str, Any] = {k: v for k, v in (("base_url", a.base_url), ("max_concurrency", a.concurrency)) if v}
    return get_llm(a.llm, **kw)


def _cmd_capture(inp: Inputs) -> int:
    from tl_concepts import models
    from tl_concepts.capture import CaptureConfig, capture
    from tl_concepts.corpus import load_corpus

    m, c, a = inp[ModelArgs], inp[CorpusArgs], inp[CaptureArgs]
    cfg = inp[CaptureConfig]
    cfg.hooks = [h for item in cfg.hooks for h in item.split(",") if h]
    t0 = time.time()
    corpus = load_corpus(c.corpus, text_column=c.text_column, max_docs=c.max_docs, encoding=c.encoding)
    model = models.load(m.model, device=cfg.device or "cpu")
    store = capture(model, corpus, cfg.hooks, a.out, config=cfg, overwrite=a.overwrite,
                    progress=inp[ProgressArgs].progress, model_name=m.model, encoding=c.encoding)
    s = store.summary()
    print(f"\nstore     {store.path}")
    print(f"model     {store.manifest['model']['id']}")
    print(f"corpus    {store.manifest['corpus']['name']} ({store.manifest['corpus']['n_docs']} docs, "
          f"fingerprint {store.manifest['corpus']['fingerprint']})")
    print(f"tokens    {s['tokens']:,} in {s['contexts']:,} contexts")
    for h, d in s["units"].items():
        print(f"units     {h}: {d:,}")
    zeroed = {h: i.get("nonfinite_zeroed", 0) for h, i in store.manifest["hooks"].items()}
    for h, n in zeroed.items():
        if n:
            print(f"nonfinite {h}: {n:,} values stored as 0 (--nonfinite zero)")
    print(f"time      {time.time() - t0:.1f} s (capture {s['seconds']:.1f} s)")
    print(f"disk      {_human_bytes(s['disk_bytes'])}")
    return 0


def _cmd_run(inp: Inputs) -> int:
    from tl_concepts.pipeline import RunConfig, run

    result = run(inp[RunConfig])
    print(result["summary"])
    return 0


def _cmd_explain(inp: Inputs) -> int:
    from tl_concepts import models
    from tl_concepts.capture import ActivationStore, capture
    from tl_concepts.corpus import load_corpus
    from tl_concepts.explain import ExplainConfig, explain_store, parse_units, summary_table
    from tl_concepts.explain.runner import check_units, check_units_for_model

    a, m, c = inp[ExplainArgs], inp[ModelArgs], inp[CorpusArgs]
    out = Path(a.out)
    cfg = inp.build(ExplainConfig, out_dir=str(out / "explain"))
    units = parse_units(a.units)
    llm = _llm(inp[LLMArgs])
    if a.store:
        store = ActivationStore.open(a.store)
        check_units(store, a.hook, units)  # before any work
    else:
        model = models.load(m.model, device=m.device)
        check_units_for_model(model, a.hook, units)
        corpus = load_corpus(c.corpus, text_column=c.text_column, max_docs=c.max_docs, encoding=c.encoding)
        store = capture(model, corpus, [a.hook], out / "store", model_name=m.model, progress=cfg.progress,
                        device=m.device)
    res = explain_store(store, a.hook, units, llm, cfg, retry_failed=a.retry_failed)
    print(summary_table(res))
    print(llm.ledger.summary_table())
    crashed = [u.id for u in res if u.status == "error"]
    if crashed:
        print(f"tl-concepts: {len(crashed)} unit(s) hit an error (details in {cfg.out_dir}/errors/); "
              "rerun the same command to retry them", file=sys.stderr)
        return 1
    return 0


def _cmd_concepts(inp: Inputs) -> int:
    import os

    from tl_concepts.concepts.runner import ConceptsConfig, discover_concepts, evaluate, label, labels_path, summary
    from tl_concepts.errors import ConfigError

    cfg, a = inp[ConceptsConfig], inp[ConceptsArgs]
    if (cfg.layer is None) == (cfg.hook is None):
        raise ConfigError("give one of --layer or --hook (the layer picks blocks.L.hook_resid_post)")
    progress = inp[ProgressArgs].progress
    cs = discover_concepts(cfg, progress=progress)
    labels: list[Any] = []
    llm = None
    if a.label or a.judge:
        llm = _llm(inp[LLMArgs])
        if a.label or os.path.exists(labels_path(cfg, cs, llm)):
            labels = label(cs, cfg, llm, retry_failed=a.retry_failed, progress=progress)
    report = evaluate(cs, cfg, labels=labels, judge=llm if a.judge else None)
    print(summary(cs, labels, report, llm))
    print(f"written to {cfg.out_dir(cs.layer)}")
    if a.export_tcn:
        from tl_concepts.concepts.tcn import write_tcn

        print(f"TCN release written to {write_tcn(cs, a.export_tcn).parent.parent}")
    return 0


def _cmd_probe(inp: Inputs) -> int:
    from tl_concepts.probing.runner import ProbeConfig, default_out, probe_summary_table, run_probes

    cfg = inp[ProbeConfig]
    ds = run_probes(cfg, progress=inp[ProgressArgs].progress)
    print(probe_summary_table(ds))
    print(f"written to {cfg.out or default_out(cfg.store, cfg.hook, cfg.labels)}")
    return 0


def _cmd_rank(inp: Inputs) -> int:
    from tl_concepts.probing.runner import RankConfig, default_out, rank_summary_table, run_rankings

    cfg = inp[RankConfig]
    out = run_rankings(cfg, progress=inp[ProgressArgs].progress)
    print(rank_summary_table(out))
    if out.resumed:
        print(f"{out.resumed} rankings read back from an earlier run")
    print(f"written to {cfg.out or default_out(cfg.store, cfg.hook, cfg.labels)}")
    return 0


def _cmd_descriptors(inp: Inputs) -> int:
    from tl_concepts.descriptors.runner import DescriptorsConfig, run_descriptors, summary_table

    cfg = inp[DescriptorsConfig]
    cfg.check()  # bad settings fail before the LLM is set up
    res = run_descriptors(cfg, llm=_llm(inp[LLMArgs]), progress=inp[ProgressArgs].progress)
    print(summary_table(res))
    print(f"written to {cfg.out}")
    return 0


def commands() -> list[Command]:
    """Every subcommand, its flags generated from its dataclasses."""
    from tl_concepts.capture import CaptureConfig
    from tl_concepts.concepts.runner import ConceptsConfig
    from tl_concepts.descriptors.runner import DescriptorsConfig
    from tl_concepts.explain.runner import ExplainConfig
    from tl_concepts.pipeline import RunConfig
    from tl_concepts.probing.runner import ProbeConfig, RankConfig

    return [
        Command("run", "the main job: every stage on the embedded defaults",
                "capture -> concepts -> labels -> explanations -> scores -> probes -> datasets with cards -> "
                "HTML report (-> the Hub). Offline by default; rerun to resume.",
                ["tl-concepts run --out runs/main",
                 "tl-concepts run --out runs/big --max-docs none -k 100 --n-units 20 --llm openai:gpt-4o-mini",
                 "tl-concepts run --config run.yaml --executor ray --ray-address auto"],
                [RunConfig], _cmd_run),
        Command("capture", "capture activations from hook points into a store",
                "Capture activations of hook points over a corpus into an on-disk store and mine exemplars "
                "for every unit, in one pass. Rerun the same command to resume.",
                ["tl-concepts capture --model minilm --corpus lee --hooks blocks.3.mlp.hook_post --out runs/x",
                 "tl-concepts capture --model smollm2-135m --corpus notes.txt --encoding latin-1 "
                 "--hooks blocks.5.mlp.hook_post,blocks.5.hook_resid_post --out runs/y --exemplars bills",
                 "tl-concepts capture --config capture.yaml --device cuda"],
                [CaptureConfig, ModelArgs, CorpusArgs, CaptureArgs, ProgressArgs], _cmd_capture),
        Command("explain", "explain, simulate and score units (Bills et al. 2023)",
                "Explain units with an LLM, simulate their activations from the explanation and score the "
                "simulation on held-out contexts, beside a token-lookup baseline. Resumable per unit.",
                ["tl-concepts explain --store runs/x --hook blocks.3.mlp.hook_post --units 0:50",
                 "tl-concepts explain --model smollm2-135m --hook blocks.5.mlp.hook_post --units 0:10 "
                 "--llm openai:gpt-4o-mini --n-explanations 3"],
                [ExplainConfig, ExplainArgs, ModelArgs, CorpusArgs, LLMArgs], _cmd_explain,
                skip=[(ExplainConfig, "out_dir")]),
        Command("concepts", "discover latent concepts (Ward clustering), label them with an LLM, evaluate",
                "Cluster the word representations of one layer of a capture store into K latent concepts "
                "(Ward; ConceptX / Mousi et al. 2023), optionally label them with an LLM, and report "
                "alignment with POS/NER/gold tags.",
                ["tl-concepts concepts --store runs/x --layer 3 -k 200 --label",
                 "tl-concepts concepts --store runs/x --layer 3 -k 200 --label --retry-failed --export-tcn release/"],
                [ConceptsConfig, ConceptsArgs, LLMArgs, ProgressArgs], _cmd_concepts),
        Command("probe", "linear probes with control tasks for every label of a source",
                "Train one binary probe per label (label vs a balanced sample of the rest) and a multi-class "
                "probe over all labels, 60/20/20 split, with a control task (random label per word type) and "
                "selectivity. Results go under the store unless --out is given.",
                ["tl-concepts probe --store runs/x --hook blocks.3.hook_resid_post --labels pos",
                 "tl-concepts probe --store runs/x --hook blocks.3.hook_resid_post "
                 "--labels concepts:runs/x/concepts/layer3 --c-grid 0.1 1"],
                [ProbeConfig, ProgressArgs], _cmd_probe),
        Command("rank", "rank neurons for every label (Probeless, probe weights, average precision)",
                "Rank the neurons of a hook for every label of a source (label vs rest) and over all labels; "
                "with a concept set, also the super/sub-concept top-n alignment. Each ranking is saved under "
                "the store as it finishes, so a rerun resumes.",
                ["tl-concepts rank --store runs/x --hook blocks.3.mlp.hook_post --labels pos --methods probeless",
                 "tl-concepts rank --store runs/x --hook blocks.3.mlp.hook_post --labels ner "
                 "--methods probeless probe_weights --top-n 10"],
                [RankConfig, ProgressArgs], _cmd_rank),
        Command("descriptors", "LLM sentence descriptors -> vocabulary -> neuron descriptors",
                "Ask an LLM for short descriptors of every sentence (resumable), cluster them into a vocabulary "
                "with MiniLM embeddings, map each neuron to the descriptors over-represented among its top "
                "sentences (Mondal et al.), and report calibration/validation Jaccard and precision/recall@k.",
                ["tl-concepts descriptors --store runs/x --hook blocks.3.mlp.hook_post --out runs/x/descriptors",
                 "tl-concepts descriptors --store runs/x --hook blocks.3.mlp.hook_post --out runs/x/descriptors "
                 "--llm openai:gpt-4o-mini --max-sentences 200"],
                [DescriptorsConfig, LLMArgs, ProgressArgs], _cmd_descriptors),
    ]


def build_parser() -> argparse.ArgumentParser:
    """The ``tl-concepts`` parser with every generated subcommand."""
    from tl_concepts import __version__

    parser = argparse.ArgumentParser(
        prog="tl-concepts",
        description="Ask an LLM what the insides of a language model mean, and score every answer.\n\n"
                    "Every subcommand takes --config FILE (YAML or JSON, settings by flag name; flags override "
                    "it).\nWrite 'none' for an empty value (e.g. --max-docs none).",
        epilog="examples:\n" + "\n".join(f"  {x.strip()}" for x in __doc__.split("Example:")[1].splitlines()
                                          if x.strip()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"tl-concepts {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd in commands():
        p = cmd.add_to(sub)
        p.set_defaults(func=cmd.func)
    return parser


def _is_user_error(e: BaseException) -> bool:
    """Errors raised on purpose for bad input: ours (``TLConceptsError``, and the stages'
    ``ValueError`` subclasses), or a file the user named that is missing or in the way."""
    from tl_concepts.errors import TLConceptsError

    if isinstance(e, TLConceptsError):
        return True
    if isinstance(e, (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
                      PermissionError)):
        return True
    return isinstance(e, ValueError) and type(e).__module__.startswith("tl_concepts")


def parse(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, Inputs]:
    """Parse a command line (``--config`` file first, flags on top) without running it.

    Example:
        >>> _, inp = parse(["capture", "--hooks", "blocks.0.mlp.hook_post", "--out", "s", "--exemplars", "bills"])
        >>> from tl_concepts.capture import CaptureConfig
        >>> inp[CaptureConfig].exemplars.n_train_top
        5
    """
    ns = build_parser().parse_args(argv)
    return ns, _merge(ns._command, ns, ns._parser)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI. A bad flag or ``--config`` value is argparse's one-line error (exit 2); a
    user error prints one line and exits 2 (bad input) or 1 (a failed run, e.g. a wrong API
    key); a bug prints its full traceback and exits 1."""
    ns, inp = parse(argv)
    if not logging.getLogger().handlers:  # the library logs; the CLI shows its progress notes
        logging.basicConfig(format="[tl-concepts] %(message)s", level=logging.WARNING)
        logging.getLogger("tl_concepts").setLevel(
            logging.INFO if inp.given.get("progress", True) else logging.WARNING)
    try:
        if inp.given.get("executor") == "ray":  # a wrong Ray address is refused before anything is written
            from tl_concepts.executor import check_reachable

            check_reachable(inp.given.get("ray_address"))
        return int(ns.func(inp) or 0)
    except KeyboardInterrupt:
        print("tl-concepts: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as e:
        if not _is_user_error(e):
            raise  # a bug: the traceback is the report
        print(f"tl-concepts: error: {e}", file=sys.stderr)
        return int(getattr(e, "exit_code", 2))


if __name__ == "__main__":
    sys.exit(main())
