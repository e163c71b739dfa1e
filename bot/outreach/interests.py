"""Patrons' interests as vectors: the mean embedding of their questions and stated interests, kept current."""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol, cast

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import delete, exists, func, literal, select, true
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.elements import ColumnElement

from bot.crm.consent import DEFAULTS
from bot.crm.database import session_scope
from bot.crm.models import Consent, IngestCursor, Interaction, Patron, PatronInterest, utcnow

log = logging.getLogger(__name__)

# The purpose whose consent a patron's interest vector needs: it is a profile built from their words.
PURPOSE = "profiling"
CURSOR_PREFIX = "interests:"
# PatronInterest.model and IngestCursor.source hold at most 200 characters.
_KEY_LENGTH = 200 - len(CURSOR_PREFIX)
# Patrons whose vectors are built from their whole history at once, per transaction.
_PATRON_CHUNK = 500


class QueryEncoder(Protocol):
    """An encoder of short texts as unit vectors, named by what its vectors depend on (`identity`)."""

    @property
    def identity(self) -> str: ...

    def encode_queries(self, texts: Sequence[str]) -> NDArray[np.float32]: ...


# What refresh_interests takes. Patrons' messages are encoded as e5 *queries* ("query: " prefix), not
# passages: e5's authors give the query prefix to both sides of a symmetric comparison, and here a short
# question is compared with a short description ("research data management"), not with a document.
# Measured with multilingual-e5-small: "research data management" against "how do I write a data
# management plan for my grant" and "where is the toilet" scores 0.872 / 0.751 as queries; with the
# questions as passages, 0.856 / 0.716. The margin is alike, and queries are what the bot's NLU already
# computes for every message, so one kind of vector serves both.
PassageEncoder = QueryEncoder


def model_key(encoder: QueryEncoder) -> str:
    """The encoder's identity as stored with its vectors (shortened with a digest when too long)."""
    identity = encoder.identity
    if len(identity) <= _KEY_LENGTH:
        return identity
    digest = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:16]
    return f"{identity[: _KEY_LENGTH - 17]} {digest}"


def cursor_source(model: str) -> str:
    return CURSOR_PREFIX + model


def consent_in_force(purpose: str, patron_id: Any) -> ColumnElement[Any]:
    """SQL that is true where the patron's consent for `purpose` is in force: their latest decision
    (by recorded_at, then id), else the default (bot.crm.consent.DEFAULTS). One probe of the index
    ix_consent_patron_id_purpose_recorded_at per patron."""
    decision = aliased(Consent)
    latest = (
        select(decision.granted)
        .where(decision.patron_id == patron_id, decision.purpose == purpose)
        .order_by(decision.recorded_at.desc(), decision.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    return func.coalesce(latest, literal(DEFAULTS[purpose])) == true()


def _normalised(vector: NDArray[np.float64]) -> NDArray[np.float32]:
    norm = float(np.linalg.norm(vector))
    return np.asarray(vector / norm if norm > 0 else vector, dtype=np.float32)


def _stated(value: object) -> list[str]:
    """A patron's stated interests (a JSON list of strings; anything else in it is ignored)."""
    if not isinstance(value, list):
        return []
    return [item.strip() for item in value if isinstance(item, str) and item.strip()]


def _questions(
    session: Session,
    *,
    patron_ids: Iterable[int] | None = None,
    after: int = 0,
    upto: int | None = None,
    limit: int | None = None,
) -> Any:
    """Patrons' inbound messages with words (a tap's payload, "/subscribe", says nothing of interests)."""
    statement = select(Interaction.id, Interaction.patron_id, Interaction.text).where(
        Interaction.direction == "in",
        Interaction.text.is_not(None),
        Interaction.text != "",
        ~Interaction.text.startswith("/"),
        Interaction.id > after,
    )
    if patron_ids is not None:
        statement = statement.where(Interaction.patron_id.in_(sorted(patron_ids)))
    if upto is not None:
        statement = statement.where(Interaction.id <= upto)
    return session.execute(statement.order_by(Interaction.id).limit(limit))


class _Encoded:
    """Each distinct text encoded once, however many patrons or times it was said."""

    def __init__(self, encoder: QueryEncoder, texts: Iterable[str], batch: int) -> None:
        unique = list(dict.fromkeys(texts))
        self.vectors: dict[str, NDArray[np.float32]] = {}
        for start in range(0, len(unique), batch):
            chunk = unique[start : start + batch]
            encoded = np.asarray(encoder.encode_queries(chunk), dtype=np.float32)
            self.vectors.update(zip(chunk, encoded, strict=True))
        self.count = len(unique)

    def total(self, texts: Sequence[str]) -> NDArray[np.float64]:
        return np.asarray(np.sum([self.vectors[text] for text in texts], axis=0), dtype=np.float64)


def _locked_position(session: Session, source: str) -> int:
    """The cursor's position, locked until the transaction ends (SQLite's BEGIN IMMEDIATE locks all)."""
    row = session.execute(
        select(IngestCursor.position).where(IngestCursor.source == source).with_for_update()
    ).scalar_one_or_none()
    if row is None:
        session.add(IngestCursor(source=source, position=0))
        session.flush()
        return 0
    return int(row)


def _store(
    session: Session, *, patron_id: int, vector: NDArray[np.float32], model: str, messages: int, now: Any
) -> None:
    row = session.get(PatronInterest, patron_id)
    if row is None:
        row = PatronInterest(patron_id=patron_id)
        session.add(row)
    row.vector, row.dims, row.model = vector.tobytes(), int(vector.shape[0]), model
    row.messages, row.updated_at = messages, now


def _consented(session: Session, patron_ids: Iterable[int]) -> set[int]:
    wanted = sorted(set(patron_ids))
    found: set[int] = set()
    for start in range(0, len(wanted), _PATRON_CHUNK):
        chunk = wanted[start : start + _PATRON_CHUNK]
        found.update(
            session.execute(
                select(Patron.id).where(Patron.id.in_(chunk), consent_in_force(PURPOSE, Patron.id))
            ).scalars()
        )
    return found


def _histories(session: Session, patron_ids: set[int], upto: int) -> dict[int, list[str]]:
    """Each patron's stated interests and inbound questions up to interaction `upto`."""
    texts: dict[int, list[str]] = defaultdict(list)
    for patron_id, interests in session.execute(
        select(Patron.id, Patron.interests).where(Patron.id.in_(sorted(patron_ids)))
    ):
        texts[int(patron_id)].extend(_stated(interests))
    for _id, patron_id, text in _questions(session, patron_ids=patron_ids, upto=upto):
        texts[int(patron_id)].append(str(text))
    return {patron_id: found for patron_id, found in texts.items() if found}


def refresh_interests(
    *,
    engine: Engine,
    encoder: PassageEncoder,
    batch: int = 256,
    now: Any = None,
    rebuild: bool = False,
) -> int:
    """Bring every consenting patron's interest vector up to date; returns how many texts were encoded.

    Only patrons whose `profiling` consent is in force have a vector; the vectors of the others are
    deleted first. A patron's vector is built whole (stated interests and every question so far) when
    they first get one for this encoder, then moves incrementally with each new question:
    (mean * n + sum) / (n + k), renormalised. Stated interests changed later are not folded in until
    `rebuild` (which recomputes every vector of this encoder from the start): the patron table does not
    say when they changed. The position in the interaction table is kept in `ingest_cursor`
    ("interests:<encoder identity>") and moves in the transaction that stores the vectors; texts are
    encoded between transactions, so the CRM is never locked while the model runs.
    """
    now = now or utcnow()
    model = model_key(encoder)
    source = cursor_source(model)
    batch = max(1, batch)
    with session_scope(engine) as session:
        if rebuild:
            session.execute(delete(PatronInterest).where(PatronInterest.model == model))
            session.execute(delete(IngestCursor).where(IngestCursor.source == source))
        # A withdrawn (or never given) profiling consent leaves no profile behind.
        session.execute(
            delete(PatronInterest)
            .where(~consent_in_force(PURPOSE, PatronInterest.patron_id))
            .execution_options(synchronize_session=False)
        )
        position = _locked_position(session, source)
    encoded = _catch_up(engine=engine, encoder=encoder, model=model, source=source, batch=batch, now=now)
    while True:
        step = _next_batch(engine=engine, encoder=encoder, model=model, source=source, batch=batch, now=now)
        if step is None:
            break
        encoded += step
    log.info("interest vectors: %d texts encoded with %s (from interaction %d)", encoded, model, position)
    return encoded


def _catch_up(*, engine: Engine, encoder: QueryEncoder, model: str, source: str, batch: int, now: Any) -> int:
    """Vectors for consenting patrons who have none of this encoder yet (new consent, new stated
    interests, a first run): built from everything up to the cursor, a chunk of patrons at a time."""
    encoded = 0
    done: set[int] = set()
    while True:
        with session_scope(engine) as session:
            position = _locked_position(session, source)
            lacking = (
                select(Patron.id)
                .where(
                    consent_in_force(PURPOSE, Patron.id),
                    ~exists()
                    .where(PatronInterest.patron_id == Patron.id)
                    .where(PatronInterest.model == model),
                )
                .order_by(Patron.id)
            )
            if done:  # patrons with nothing to build from stay without a vector: skip them
                lacking = lacking.where(Patron.id > max(done))
            chunk = set(session.execute(lacking.limit(_PATRON_CHUNK)).scalars())
            histories = _histories(session, chunk, position) if chunk else {}
        if not chunk:
            return encoded
        done |= chunk
        vectors = _Encoded(encoder, (text for texts in histories.values() for text in texts), batch)
        with session_scope(engine) as session:
            if _locked_position(session, source) != position:
                done -= chunk  # another refresh moved on meanwhile: build these again from there
                continue
            for patron_id, texts in histories.items():
                vector = _normalised(vectors.total(texts) / len(texts))
                _store(session, patron_id=patron_id, vector=vector, model=model, messages=len(texts), now=now)
        encoded += vectors.count


def _next_batch(
    *, engine: Engine, encoder: QueryEncoder, model: str, source: str, batch: int, now: Any
) -> int | None:
    """Fold the next `batch` new questions into their patrons' vectors; None when there are none."""
    with session_scope(engine) as session:
        position = _locked_position(session, source)
        rows = list(_questions(session, after=position, limit=batch))
        if not rows:
            return None
        last = int(rows[-1][0])
        consented = _consented(session, (int(row[1]) for row in rows))
        existing = {
            int(row.patron_id): row
            for row in session.execute(
                select(PatronInterest).where(
                    PatronInterest.patron_id.in_(sorted(consented)), PatronInterest.model == model
                )
            ).scalars()
        }
        # A patron without a vector of this encoder gets one built from everything up to `last`.
        fresh = _histories(session, consented - set(existing), last) if consented - set(existing) else {}
    new_texts: dict[int, list[str]] = defaultdict(list)
    for _id, patron_id, text in rows:
        if int(patron_id) in existing:
            new_texts[int(patron_id)].append(str(text))
    vectors = _Encoded(
        encoder,
        [text for texts in new_texts.values() for text in texts]
        + [text for texts in fresh.values() for text in texts],
        batch,
    )
    with session_scope(engine) as session:
        if _locked_position(session, source) != position:
            return 0  # another refresh took this batch meanwhile
        for patron_id, texts in new_texts.items():
            row = session.get(PatronInterest, patron_id)
            if row is None or row.model != model:
                continue  # deleted meanwhile (consent withdrawn): rebuilt whole if it comes back
            n = int(row.messages or 0)
            mean = np.frombuffer(cast(bytes, row.vector), dtype=np.float32).astype(np.float64)
            vector = _normalised((mean * n + vectors.total(texts)) / (n + len(texts)))
            _store(session, patron_id=patron_id, vector=vector, model=model, messages=n + len(texts), now=now)
        for patron_id, texts in fresh.items():
            vector = _normalised(vectors.total(texts) / len(texts))
            _store(session, patron_id=patron_id, vector=vector, model=model, messages=len(texts), now=now)
        cursor = session.get(IngestCursor, source)
        assert cursor is not None  # made by _locked_position
        cursor.position = last
    return vectors.count


def interest_vectors(
    *, session: Session, model: str, patron_ids: Any = None, chunk: int = 5000
) -> Iterator[tuple[NDArray[np.int64], NDArray[np.float32]]]:
    """The stored vectors of `model` (of patrons whose profiling consent is in force), `chunk` rows at a
    time: patron ids and a matrix of one row per patron. `patron_ids` (a select of ids, or a list)
    restricts them."""
    statement = (
        select(PatronInterest.patron_id, PatronInterest.vector)
        .where(PatronInterest.model == model, consent_in_force(PURPOSE, PatronInterest.patron_id))
        .order_by(PatronInterest.patron_id)
    )
    if patron_ids is not None:
        statement = statement.where(PatronInterest.patron_id.in_(patron_ids))
    result = session.execute(statement, execution_options={"stream_results": True, "yield_per": chunk})
    for rows in result.partitions(chunk):
        ids = np.fromiter((int(row[0]) for row in rows), dtype=np.int64, count=len(rows))
        matrix = np.stack([np.frombuffer(row[1], dtype=np.float32) for row in rows])
        yield ids, matrix


def interest_matrix(*, session: Session, model: str) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Every stored vector of `model` (of patrons whose profiling consent is in force) as patron ids and
    one float32 matrix, row i being patron ids[i]'s unit vector."""
    parts = list(interest_vectors(session=session, model=model))
    if not parts:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    return np.concatenate([ids for ids, _ in parts]), np.concatenate([matrix for _, matrix in parts])
