"""The experiment schema's building blocks: strict models, the Field shorthand, numbers, slugs, URLs and seeds."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic import Strict as _Exact

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
# Every number field of the schema is one of these: a number and nothing else. pydantic's default (lax) mode would
# read YAML's true/yes/on as 1, a quoted "3" as 3 and 2.0 as an int 2; here each is an error naming the key. An
# int is also a valid Float (`temperature: 1`); YAML exponents without a dot (3e-4) are numbers (emwb.yamlio).
Int = Annotated[int, _Exact()]
Float = Annotated[float, _Exact()]
Layer = Annotated[int, _Exact(), Field(ge=0)]  # a decoder block's index, 0 = the first (checked against the model
# before work: emwb.models.shape)
Seed = Annotated[int, _Exact(), Field(ge=0, lt=2**32)]  # what torch, numpy and vLLM accept as a seed
