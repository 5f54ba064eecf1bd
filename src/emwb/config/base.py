"""The experiment schema's building blocks: strict models, the Field shorthand, slugs, URLs and seeds."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from emwb.secret_urls import display, literal_secrets

SLUG = "letters, digits, '-' or '_'; at most 64 bytes in UTF-8"
SLUG_BYTES = 64  # a name is a folder name, and a variant's folder joins several: far below the 255 a file system allows
# Base models emwb builds locally into the run's base_model/ folder (no model hub).
LOCAL_BASE_MODELS = ("tiny", "smollm2-135m")


def _slug(v: str, what: str) -> str:
    if not v or not v.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"{what} {v!r} must be {SLUG}")
    if len(v.encode("utf-8")) > SLUG_BYTES:
        raise ValueError(f"{what} {v[:24]!r}... is {len(v.encode('utf-8'))} bytes in UTF-8: at most {SLUG_BYTES} (it "
                         "names folders of the run directory)")
    return v


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def F(default: Any = ..., description: str = "", **kw: Any) -> Any:  # noqa: N802 - a Field shorthand
    return Field(default, description=description, **kw)


def _url(v: str) -> str:
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", v):
        raise ValueError(f"{display(v)!r} is not an http:// or https:// URL")
    secrets = literal_secrets(v)
    if secrets:
        raise ValueError(f"{display(v)!r} holds {' and '.join(secrets)}, which would be stored in the run directory: "
                         "write ${NAME} in its place and set NAME in the environment")
    return v


Url = Annotated[str, AfterValidator(_url)]
Seed = Annotated[int, Field(ge=0, lt=2**32)]  # what torch, numpy and vLLM accept as a seed
