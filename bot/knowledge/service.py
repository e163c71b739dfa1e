"""The knowledge base as the bot uses it: rebuilt when a librarian edits the file or its tuning."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from bot.knowledge.encoders import CachedEncoder, Encoder, MultilingualEncoder, SentenceEncoder
from bot.knowledge.entries import Entry, KnowledgeError, load_entries
from bot.knowledge.retrieval import Retriever, load_tuning, make_encoders

if TYPE_CHECKING:
    from bot.settings import Settings


class KnowledgeService:
    """The knowledge base as the bot uses it: rebuilt when the file or its tuning changes on disk,
    so librarians' edits apply without retraining or restarting."""

    def __init__(
        self,
        *,
        kb_path: Path,
        tuning_path: Path,
        model: str = "",
        multilingual: bool = True,
        vector_dir: Path | None = None,
    ) -> None:
        self.kb_path = kb_path
        self.tuning_path = tuning_path
        self.vector_dir = vector_dir  # where passage vectors are kept between runs (None: memory only)
        self.model = model
        self.multilingual = multilingual
        self._stamp: tuple[int, int] | None = None
        self._retriever: Retriever | None = None
        self._encoders: dict[str, Encoder] = {}
        self._model_in_use = ""
        self._entries: tuple[tuple[int, int], list[Entry]] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> KnowledgeService:
        """The knowledge base, tuning and models the settings name."""
        return cls(
            kb_path=settings.path(settings.knowledge_base),
            tuning_path=settings.path(settings.retrieval_tuning),
            model=settings.embedding_model,
            multilingual=settings.multilingual_model,
            vector_dir=settings.vector_path,
        )

    def _vector_file(self, name: str, encoder: SentenceEncoder | MultilingualEncoder) -> Path | None:
        """The file for one encoder's passage vectors, named by what they depend on (its `identity`),
        so vectors of one model are never read as another's."""
        if self.vector_dir is None:
            return None
        digest = hashlib.sha256(f"{name} {encoder.identity}".encode()).hexdigest()[:16]
        return self.vector_dir / f"{name}-{digest}.npz"

    def _current_stamp(self) -> tuple[int, int]:
        try:
            kb = self.kb_path.stat().st_mtime_ns
        except OSError as error:
            raise KnowledgeError(
                f"{self.kb_path}: cannot read the knowledge base ({error.strerror})"
            ) from None
        tuning = self.tuning_path.stat().st_mtime_ns if self.tuning_path.is_file() else 0
        return kb, tuning

    def entries(self) -> list[Entry]:
        """The entries as the file holds them now, without loading any model."""
        stamp = self._current_stamp()
        if self._retriever is not None and stamp == self._stamp:
            return self._retriever.entries
        if self._entries is None or self._entries[0] != stamp:
            self._entries = (stamp, load_entries(self.kb_path))
        return self._entries[1]

    def retriever(self) -> Retriever:
        stamp = self._current_stamp()
        if self._retriever is None or stamp != self._stamp:
            tuned_model, tuning = load_tuning(self.tuning_path)
            model = self.model or tuned_model
            if not self._encoders or self._model_in_use != model:
                made = make_encoders(sentence_model=model, multilingual=self.multilingual)
                self._encoders = {
                    name: CachedEncoder(encoder, path=self._vector_file(name, encoder))
                    for name, encoder in made.items()
                }
                self._model_in_use = model
            cached = [encoder for encoder in self._encoders.values() if isinstance(encoder, CachedEncoder)]
            for encoder in cached:
                encoder.start_round()
            self._retriever = Retriever(load_entries(self.kb_path), encoders=self._encoders, tuning=tuning)
            for encoder in cached:
                encoder.finish_round()
            self._stamp = stamp
        return self._retriever
