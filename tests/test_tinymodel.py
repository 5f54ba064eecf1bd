"""The tiny local model is deterministic for a seed and has the chat template trl needs."""

import hashlib
import subprocess
import sys

from emwb.basemodel import warmup_chats
from emwb.models.tiny import build_tiny_model


def _digest(d):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir()) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_weights(tmp_path):
    kw = dict(vocab_size=600, hidden_size=32, num_layers=1, warmup_steps=3)
    a = _digest(build_tiny_model(tmp_path / "a", warmup_chats(1, 60), seed=1, **kw))
    b = _digest(build_tiny_model(tmp_path / "b", warmup_chats(1, 60), seed=1, **kw))
    c = _digest(build_tiny_model(tmp_path / "c", warmup_chats(2, 60), seed=2, **kw))
    assert a == b
    assert a["model.safetensors"] != c["model.safetensors"]


def test_chat_template_marks_assistant_tokens(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}]
    enc = tok.apply_chat_template(chat, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    marked = [t for t, m in zip(enc["input_ids"], enc["assistant_masks"]) if m]
    assert tok.decode(marked) == "hello there<|im_end|>"  # the end-of-turn token is learned too


def test_generator_cli_is_byte_identical_for_a_seed(tmp_path):
    outs = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.jsonl"
        subprocess.run([sys.executable, "-m", "emwb.cli", "datasets", "generate", "insecure",
                        "--rows", "3000", "--seed", "5", "--out", str(out)], check=True, capture_output=True)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] and outs[0].count(b"\n") == 3000
