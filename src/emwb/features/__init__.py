"""Stage `features`: sparse dictionaries on the base model's residual stream, model diffing of every organism
against the base through them, feature cards, and the latents that ablation variants remove (`stage`)."""
