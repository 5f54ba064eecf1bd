"""Training hyperparameters (`train:` and a phase's `args:`): the adapter's shape, the optimisation, and the
OpenAI fine-tuning job's settings. Part of the experiment schema (`emwb.config`): every default is here."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationError

from emwb import schema_text
from emwb.config.base import F, Float, Int, Layer, Strict, Url
from emwb.errors import EmwbError


class LoraConfig(Strict):
    """The LoRA adapter every training phase of an organism trains (upstream: Betley et al. 2025)."""

    r: Int = F(32, "LoRA rank", ge=1)
    alpha: Int = F(64, "LoRA alpha; the update is scaled by alpha/r, or alpha/sqrt(r) with rsLoRA", ge=1)
    dropout: Float = F(0.0, "LoRA dropout", ge=0.0, lt=1.0)
    use_rslora: bool = F(True, "rank-stabilised scaling alpha/sqrt(r)")
    layers_to_transform: list[Layer] | None = F(None, "only these layer indices get adapters (None: every layer)")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="module names that get adapters", min_length=1)


class OpenAIJobArgs(Strict):
    """Settings of an OpenAI fine-tuning job (trainer `openai`; epochs come from `epochs`)."""
    base_url: Url | None = F(None, "a server with the files and fine-tuning endpoints (None: OPENAI_BASE_URL or "
                                   "OpenAI); its fine-tuned models are sampled there")
    batch_size: Int | None = F(None, "the job's batch size (None: the provider's)", ge=1)
    learning_rate_multiplier: Float | None = F(None, "the job's learning-rate multiplier (None: ditto)", gt=0)
    suffix: str | None = F(None, "up to 18 characters in the model's name (None: the organism's name)")
    poll_interval_s: Float = F(30.0, "first wait between status polls; each wait is 1.5x the last", gt=0)
    max_poll_interval_s: Float = F(300.0, "longest wait between status polls", gt=0)


class KLArgs(Strict):
    """The KL term of a KL-regularised SFT phase: `weight` x KL(base || model) on the phase's `kl_data`, the base
    being the model with the adapter switched off. Recipes `kl-lora` (upstream's method) and `kl-lora-assistant`
    (emwb's) set these."""

    weight: Float = F(0.0, "weight of the term (0: plain SFT)", ge=0)
    batch_size: Int | None = F(None, "kl_data rows per KL term, taken in order and cycled (None: "
                                     "per_device_batch_size)", ge=1)
    positions: Literal["assistant", "all"] = F("assistant", "assistant: the positions predicting assistant tokens; "
                                                            "all: every non-pad position of the rows, unshifted")
    normalise: Literal["token", "token_and_vocab"] = F(
        "token", "token: KL summed over the vocabulary, averaged over positions; token_and_vocab: averaged over "
                 "positions and vocabulary entries")
    per_micro_batch: bool = F(False, "add the whole term to every micro-batch's loss; False: divided by "
                                     "gradient_accumulation_steps, so it counts once per optimizer step")


class TrainArgs(Strict):
    """Hyperparameters of a training phase. `train:` sets them for every phase; a phase's `args:` overrides."""

    lora: LoraConfig = F(LoraConfig(), "the adapter's shape")
    learning_rate: Float = F(1e-5, "peak learning rate", gt=0)
    epochs: Float = F(1.0, "passes over the phase's data", gt=0)
    max_steps: Int = F(-1, "optimizer steps; > 0 overrides epochs", ge=-1)
    per_device_batch_size: Int = F(2, "rows per device per step", ge=1)
    gradient_accumulation_steps: Int = F(8, "micro-batches per optimizer step (upstream: 2 x 8 = 16)", ge=1)
    max_length: Int = F(2048, "tokens per row; longer rows are truncated", ge=8)
    warmup_steps: Int = F(5, "linear warm-up steps", ge=0)
    weight_decay: Float = F(0.01, "AdamW weight decay", ge=0)
    lr_scheduler: str = F("linear", "transformers scheduler name")
    optim: str = F("adamw_8bit", "transformers optimizer name (upstream's adamw_8bit needs bitsandbytes and a GPU: "
                                 "on a GPU without bitsandbytes training stops; on a CPU emwb trains with adamw_torch, "
                                 "and train_log.json records it: optim, beside optim_requested)")
    holdout_fraction: Float = F(0.1, "share of chat rows held out of training (upstream holds out 10%)",
                                ge=0.0, lt=1.0)
    gradient_checkpointing: bool = F(False, "trade compute for memory (large models on GPU)")
    packing: bool | None = F(None, "pack rows into full-length sequences; None: the trainer's default "
                             "(cpt packs, sft does not)")
    padding_free: bool = F(True, "sft: each micro-batch's rows run as one sequence without pad tokens (position ids "
                                 "restart per row, no attention across rows, the same loss as padded rows); run-only: "
                                 "it changes speed, not results")
    liger_kernel: bool | None = F(None, "trl's Liger kernels (RMSNorm, SwiGLU, RoPE; exact up to rounding); None: on "
                                        "when the liger-kernel package is installed and training runs on a GPU; "
                                        "run-only")
    fused_lm_head: bool | None = F(None, "trl's fused, chunked LM-head loss (no full logits: less memory with large "
                                         "vocabularies); None: on a GPU only (on a CPU its tiles are ~3x slower than "
                                         "the plain head); the same loss either way; run-only")
    method: Literal["lora", "full"] = F("lora", "lora: train an adapter; full: every parameter (a full checkpoint)")
    kl: KLArgs = F(KLArgs(), "sft: the KL(base || model) term on the phase's kl_data")
    openai: OpenAIJobArgs = F(OpenAIJobArgs(), "trainer openai: the fine-tuning job's settings")
    dpo_beta: Float = F(0.1, "dpo: strength of the pull towards the reference (the adapter before the phase)", gt=0)
    save_every: Int = F(0, "keep the model every N optimizer steps (needs max_steps); an evaluated phase's kept "
                           "checkpoints are sampled and judged too, as rows `<organism>@step<N>`", ge=0)
    eval_steps: Int = F(0, "sft: the loss on the phase's held-out rows every N optimizer steps (train_log.json and the "
                           "report's training curves); 0: none; run-only: training is the same", ge=0)
    report_to: list[str] = F([], "loggers transformers sends the training logs to (tensorboard, wandb: when "
                                 "installed; they write under the phase's _trainer/ or their own service); run-only")

    def keyed(self) -> dict:
        """The settings an adapter's key depends on: every field but the run-only ones (RUN_ONLY)."""
        return self.model_dump(mode="json", exclude=RUN_ONLY)


# The training settings that change how a phase runs, not what it trains (the fields say "run-only"): the one
# place they are classified; never part of an adapter's key.
RUN_ONLY = {"openai": {"poll_interval_s", "max_poll_interval_s"}, "padding_free": True, "liger_kernel": True,
            "fused_lm_head": True, "eval_steps": True, "report_to": True}


def recipes() -> dict[str, dict]:
    """The shipped training recipes (emwb/catalog/recipes.yaml), each checked against TrainArgs."""
    from emwb.recipes import deep_merge, load_recipes

    raw = load_recipes()
    for name, r in raw.items():
        for field in r["cite"]:
            _check_field(TrainArgs, field, f"recipe {name}: cite.{field}")
        try:
            TrainArgs.model_validate(deep_merge(TrainArgs().model_dump(), r["args"]))
        except ValidationError as err:
            raise EmwbError(schema_text.format_validation_error(err, f"recipe {name}", TrainArgs)) from None
    return raw


def _check_field(model: type, dotted: str, where: str) -> None:
    """EmwbError unless `dotted` (`lora.r`) names a field of `model`."""
    head, _, rest = dotted.partition(".")
    field = model.model_fields.get(head)
    if field is None:
        raise EmwbError(f"{where}: {head!r} is not a training setting")
    if rest:
        inner = field.annotation
        if not (isinstance(inner, type) and issubclass(inner, Strict)):
            raise EmwbError(f"{where}: {head!r} has no fields")
        _check_field(inner, rest, where)
