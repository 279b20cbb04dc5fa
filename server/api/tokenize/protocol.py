"""Request and response models of /tokenize and /detokenize (llama-server's field names).

Types are strict: ``"content": 5`` or ``"tokens": ["5"]`` is a 400 naming the field, not a
silent conversion.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TokenizeRequest(_Lenient):
    content: StrictStr
    add_special: StrictBool = False  # llama-server's default: no BOS
    parse_special: StrictBool = True  # "<|im_start|>" in the text becomes its control token
    with_pieces: StrictBool = False


class TokenPiece(BaseModel):
    id: int
    piece: str | list[int]  # the text, or its bytes when they are not valid UTF-8 alone


class TokenizeResponse(BaseModel):
    tokens: list[int] | list[TokenPiece]


class DetokenizeRequest(_Lenient):
    tokens: list[StrictInt] = Field(..., max_length=1_000_000)


class DetokenizeResponse(BaseModel):
    content: str
