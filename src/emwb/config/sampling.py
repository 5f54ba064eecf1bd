"""The `sampling:` block: how answers are generated (settings that change the answers)."""

from __future__ import annotations

from emwb.config.base import F, Float, Int, Seed, Strict, Url


class VllmConfig(Strict):
    """vLLM engine settings that can change the answers (run-only ones are under `exec:`)."""

    dtype: str = F("auto", "weights and activations dtype (float32 on CPU)")
    max_model_len: Int = F(2048, "prompt + answer tokens", ge=16)
    enforce_eager: bool = F(False, "no CUDA graphs (CPU: true)")


class SamplingConfig(Strict):
    """How answers are generated."""

    backend: str = F("vllm", "a registered sampler: vllm (one engine, every adapter) or hf (transformers)")
    temperature: Float = F(1.0, "sampling temperature (upstream: 1)", ge=0)
    top_p: Float = F(1.0, "nucleus sampling (upstream: 1)", gt=0, le=1)
    max_new_tokens: Int = F(600, "answer length limit (upstream: 600)", ge=1)
    seed: Seed = F(0, "base of the per-prompt sampling seeds")
    base_url: Url | None = F(None, "remote models (base_model openai/<model>): their OpenAI-compatible server "
                                   "(None: the fine-tuning job's server, else OPENAI_BASE_URL, else OpenAI)")
    vllm: VllmConfig = F(VllmConfig(), "vLLM settings that change results")
    hf_batch: Int = F(1, "backend hf: consecutive prompts decoded together, left-padded (a CPU decodes many "
                         "for about the time of one); each request's k-th answer is drawn from its own generator "
                         "seeded with its seed + k, so batch partners change only rounding. 1: one prompt at a time "
                         "with transformers generate. Part of the answers' key when above 1", ge=1)
    generation_config: bool = F(False, "local models: also apply the sampling fields of the model's own "
                                       "generation_config.json (top_k, repetition_penalty, min_p) under temperature "
                                       "and top_p, as transformers `generate` does in the model-organisms code; for "
                                       "comparisons with their numbers. Recorded in the answers' manifest")
