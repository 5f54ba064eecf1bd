"""Models: references to trained variants, loaders, device policy, the vLLM engine, the tiny model builder."""

from emwb.models.ref import ModelRef

__all__ = ["ModelRef"]
