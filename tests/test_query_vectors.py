"""The e5 vector handed from the NLU to the action server: packed, checked and unpacked."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pytest

from bot.knowledge import query_vectors


def _unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).normal(size=query_vectors.DIMENSIONS).astype(np.float32)
    return vector / np.linalg.norm(vector)


def test_packed_vector_comes_back_for_the_same_text_in_half_precision() -> None:
    vector = _unit(1)
    packed = query_vectors.pack("wifi login", vector)
    unpacked = query_vectors.unpack(packed, "wifi login")
    assert unpacked is not None
    assert unpacked.dtype == np.float32
    assert np.array_equal(unpacked, query_vectors.quantise(vector))
    assert float(unpacked @ vector) > 0.9999
    assert len(packed["float16"]) < 1100  # what each message adds to the tracker


def test_vector_of_another_text_is_not_used() -> None:
    packed = query_vectors.pack("wifi login", _unit(2))
    assert query_vectors.unpack(packed, "wifi  login") is None
    assert query_vectors.unpack(packed, "Wifi login") is None


@pytest.mark.parametrize(
    "value",
    [
        None,
        "text",
        [],
        {},
        {"model": "other-model", "text_sha256": "x", "float16": ""},
        {"model": query_vectors.MODEL, "float16": "AAAA"},
        {"model": query_vectors.MODEL, "text_sha256": "WRONG", "float16": "AAAA"},
        {"model": query_vectors.MODEL, "text_sha256": None, "float16": None},
    ],
)
def test_anything_else_is_ignored(value: Any) -> None:
    assert query_vectors.unpack(value, "t") is None


def test_damaged_payload_is_ignored() -> None:
    good = query_vectors.pack("t", _unit(3))
    short = {**good, "float16": base64.b64encode(b"\0" * 10).decode()}
    not_base64 = {**good, "float16": "%%%"}
    infinite = {**good, "float16": base64.b64encode(np.full(384, np.inf, dtype="<f2").tobytes()).decode()}
    for value in (short, not_base64, infinite):
        assert query_vectors.unpack(value, "t") is None
