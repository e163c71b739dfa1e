"""A message's e5 vector, handed from the NLU to the action server so that a turn encodes it once."""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

import numpy as np
from numpy.typing import NDArray

# The key in a message's parse data (Rasa keeps a component's output properties there, and sends
# them to the action server as the tracker's latest_message).
PARSE_KEY = "e5_query_vector"
MODEL = "multilingual-e5-small"
DIMENSIONS = 384


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def quantise(vector: NDArray[Any]) -> NDArray[np.float32]:
    """The vector as it travels: half precision (a cosine moves by about 1e-4). Retrieval passes every
    e5 query vector through this, handed over or not, so that the bot and `faq eval` score alike."""
    return np.asarray(vector, dtype=np.float16).astype(np.float32)


def pack(text: str, vector: NDArray[Any]) -> dict[str, str]:
    """The parse-data value for the vector of `text` (the exact string encoded, after normalising)."""
    raw = np.asarray(vector, dtype="<f2").tobytes()
    return {"model": MODEL, "text_sha256": _digest(text), "float16": base64.b64encode(raw).decode("ascii")}


def unpack(value: Any, text: str) -> NDArray[np.float32] | None:
    """The vector, if `value` is one `pack` made for this very text; else None (encode it again)."""
    if not isinstance(value, dict) or value.get("model") != MODEL:
        return None
    if value.get("text_sha256") != _digest(text) or not isinstance(value.get("float16"), str):
        return None
    try:
        raw = base64.b64decode(value["float16"], validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) != DIMENSIONS * 2:
        return None
    vector = np.frombuffer(raw, dtype="<f2").astype(np.float32)
    return vector if bool(np.isfinite(vector).all()) else None
