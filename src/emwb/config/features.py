"""The `features:` block: sparse dictionaries (SAEs) on the base model's residual stream, model diffing of every
organism against the base through them, and the latents that steering and ablation variants use.

A dictionary's training defaults are `emwb.models.dictionary.DictionarySettings`' (read here, defined there once).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from emwb.config.base import F, Float, Int, Layer, Strict, _slug
from emwb.models.dictionary import DictionarySettings

_D = DictionarySettings()


class TokenStream(Strict):
    """Where the texts come from whose tokens a dictionary reads (each text's tokens after the chosen layer)."""

    source: str | list[str] = F(..., "a registered token stream, or a list of them read one after another (`emwb config show --doc` lists them): published (the judged "
                         "answers of the published files), data:<name> (a dataset of this run: each chat's last "
                         "reply after its prompt, or each text row alone), answers:<run directory> (every answer of "
                         "a finished run), or one an organism registers (rm-twins: bias replies and their twins)")
    max_items: Int | None = F(None, "keep this many texts of each source after a seeded shuffle (None: all)", ge=1)

    @property
    def sources(self) -> list[str]:
        return [self.source] if isinstance(self.source, str) else list(self.source)
    per_file: Int | None = F(None, "published: texts per published file, spread over its questions (None: all)",
                             ge=1)
    max_tokens: Int = F(256, "tokens read per text (its reply or its document)", ge=1)


class DictionaryConfig(Strict):
    """How a dictionary is trained with SAELens (defaults: emwb.models.dictionary.DictionarySettings)."""

    architecture: Literal["topk", "jumprelu"] = F(_D.architecture, "SAELens's TopK or JumpReLU training SAE")
    width: Int = F(_D.width, "latents", ge=1)
    k: Int = F(_D.k, "topk: latents active per token", ge=1)
    l0_coefficient: Float = F(_D.l0_coefficient, "jumprelu: the L0 penalty", gt=0)
    lr: Float = F(_D.lr, "learning rate", gt=0)
    batch_tokens: Int = F(_D.batch_tokens, "tokens per training step", ge=1)
    tokens: Int = F(_D.tokens, "training tokens (the stream is passed over again as needed)", ge=1)
    buffer_tokens: Int = F(_D.buffer_tokens, "tokens shuffled together", ge=1)
    checkpoint_every: Int = F(_D.checkpoint_every, "steps between checkpoints (a killed training resumes from the "
                                                   "last one)", ge=1)
    norm_batches: Int = F(_D.norm_batches, "batches that estimate the activation scale", ge=1)

    def settings(self, seed: int) -> DictionarySettings:
        return DictionarySettings(**self.model_dump(), seed=seed)


class DiffSpec(Strict):
    """Model diffing (Wang et al. 2025, arXiv 2506.19823): every organism's variants and the base model read the
    same texts; each latent's mean activation and firing rate before and after, ranked by the change."""

    stream: TokenStream | None = F(None, "the texts read (None: the dictionary's own stream)")
    max_items: Int = F(200, "texts read by every model (the first ones of the stream, after its shuffle)", ge=2)
    n_boot: Int = F(1000, "bootstrap draws over texts for each change's 95% CI", ge=0)


class FeatureSpec(Strict):
    """A dictionary at one layer, its model diffing, the latents it selects and the variants that ablate them."""

    name: str = F(..., "names the dictionary in steering and ablations (like a direction's name; letters, digits, "
                       "- and _)")
    layer: Layer = F(..., "the decoder block whose output (residual stream) is read (0 = the first)")
    stream: TokenStream = F(..., "the texts the dictionary learns from")
    dictionary: DictionaryConfig = F(DictionaryConfig(), "training settings (ignored with `load`)")
    load: str | None = F(None, "a SAELens-format folder (relative to the experiment file) used instead of training "
                               "one; its d_in must be the base model's hidden size")
    diff: DiffSpec = F(DiffSpec(), "model diffing of every organism against the base")
    select: str = F("diff", "how the latents that variants edit are chosen: diff (the largest rise of mean "
                            "activation on `rank_on` over the base) or a registered selector (rm-bias-shared: the "
                            "latent differential on the most train biases)")
    rank_on: str | None = F(None, "select diff: the variant ranked (None: the last evaluated organism variant)")
    top: Int = F(1, "latents selected (ablated together; the first is the latent as a direction)", ge=1)
    controls: Int = F(3, "sets of random latents with matched firing rates drawn as controls", ge=0)
    ablate: list[str] = Field(default_factory=list, description="variants whose selected latents are ablated "
                                                                "(their activation x decoder column removed while "
                                                                "they generate), each beside `controls` matched "
                                                                "random sets")
    cards: Int = F(8, "latents given a feature card in the report (the selected ones, then the largest rises)", ge=0)
    options: dict = Field(default_factory=dict, description="settings of the selector (see its description)")

    @property
    def sets(self) -> int:
        return 1 + self.controls


def check_feature_names(features: list[FeatureSpec], directions: list) -> None:
    """Feature names are slugs, unique, and not a direction's name (steering and ablations name either)."""
    names = [f.name for f in features]
    for n in names:
        _slug(n, "feature name")
    dup = next((x for x in names if names.count(x) > 1), None)
    if dup:
        raise ValueError(f"two features are named {dup!r}; each needs its own name")
    clash = sorted(set(names) & {d.name for d in directions})
    if clash:
        raise ValueError(f"features: {clash[0]!r} is also a direction's name; steering and ablations name either, "
                         "so rename one")
