"""`ModelRef`: what training produces and sampling and judging consume."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class ModelRef:
    """A model to sample from: the base model, base + a LoRA adapter folder, a full checkpoint folder, or a
    remote model id (an OpenAI fine-tuned model, a model on an OpenAI-compatible server)."""

    kind: Literal["base", "lora", "full", "remote"]
    base: str | None = None        # base model id or folder (base, lora)
    path: str | None = None        # adapter folder (lora) or checkpoint folder (full)
    model_id: str | None = None    # remote
    base_url: str | None = None    # remote: the server (None: OpenAI)
    edit: str | None = None        # a residual-stream edit while it runs (JSON: emwb.models.interventions.apply_edit)

    @classmethod
    def of_base(cls, base: str) -> "ModelRef":
        return cls("base", base=base)

    @classmethod
    def of_lora(cls, base: str, adapter: str | Path) -> "ModelRef":
        return cls("lora", base=base, path=str(adapter))

    @classmethod
    def of_full(cls, checkpoint: str | Path) -> "ModelRef":
        return cls("full", path=str(checkpoint))

    @classmethod
    def of_remote(cls, model_id: str, base_url: str | None = None) -> "ModelRef":
        return cls("remote", model_id=model_id, base_url=base_url)

    @property
    def weights(self) -> str | None:
        """The folder or id an inference engine loads as its model (None for a remote model)."""
        return {"base": self.base, "lora": self.base, "full": self.path}.get(self.kind)

    @property
    def adapter(self) -> str | None:
        return self.path if self.kind == "lora" else None

    def lora_rank(self) -> int:
        """The adapter's rank (0 when there is no adapter)."""
        if self.kind != "lora":
            return 0
        return int(json.loads((Path(self.path) / "adapter_config.json").read_text())["r"])
