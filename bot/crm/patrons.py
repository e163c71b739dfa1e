"""Patrons and their channel identities: finding, creating and naming them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.crm.models import ChannelIdentity, Patron, utcnow


@dataclass(frozen=True)
class PatronKey:
    """A patron as a channel knows them: the channel's name and its own id for the patron."""

    channel: str
    external_id: str

    def __str__(self) -> str:
        return f"{self.channel}:{self.external_id}"


def patron_key(sender_id: str, input_channel: str | None) -> PatronKey:
    """The channel and the channel's own id behind a Rasa sender id.

    patronbot's connectors name conversations ``CHANNEL:ID`` (``rest:abc``, ``telegram:4242``) so that
    the same id on two channels never shares a Rasa tracker; other senders keep their id as it is.
    """
    channel, sep, external = sender_id.partition(":")
    if sep and channel and external and channel.isidentifier():
        return PatronKey(channel=channel, external_id=external)
    return PatronKey(channel=input_channel or "unknown", external_id=sender_id)


class PatronNotFoundError(LookupError):
    """No patron matches the reference given."""


def find_patron_ids(*, session: Session, keys: Iterable[PatronKey]) -> dict[PatronKey, int]:
    """The patron ids already known for these channel identities."""
    wanted = list(set(keys))
    found: dict[PatronKey, int] = {}
    for start in range(0, len(wanted), 200):
        chunk = wanted[start : start + 200]
        condition = or_(
            *(
                and_(ChannelIdentity.channel == key.channel, ChannelIdentity.external_id == key.external_id)
                for key in chunk
            )
        )
        rows = session.execute(
            select(ChannelIdentity.channel, ChannelIdentity.external_id, ChannelIdentity.patron_id).where(
                condition
            )
        )
        for channel, external_id, patron_id in rows:
            found[PatronKey(channel, external_id)] = int(patron_id)
    return found


def get_or_create_patron(
    *, session: Session, key: PatronKey, source: str | None = None, language: str | None = None
) -> int:
    """The patron id for a channel identity, creating the patron on first contact.

    Safe when two processes meet a new patron at once: the loser of the race reads the winner's row.
    """
    existing = find_patron_ids(session=session, keys=[key])
    if key in existing:
        return existing[key]
    now = utcnow()
    try:
        with session.begin_nested():
            patron = Patron(language=language, created_at=now, last_seen_at=now)
            patron.identities.append(
                ChannelIdentity(
                    channel=key.channel, external_id=key.external_id, source=source, created_at=now
                )
            )
            session.add(patron)
            session.flush()
            return int(patron.id)
    except IntegrityError:
        return find_patron_ids(session=session, keys=[key])[key]


def touch_patrons(
    *,
    session: Session,
    keys: Iterable[PatronKey],
    last_seen: Mapping[PatronKey, dt.datetime],
    languages: Mapping[PatronKey, str],
    sources: Mapping[PatronKey, str] | None = None,
) -> dict[PatronKey, int]:
    """Patron ids for all keys (creating new patrons), with last-seen time and language updated, and
    each identity's source (how the patron arrived) set where it has none yet.

    Works in bulk (the ingester calls it once per batch of events): one lookup, one flush for the new
    patrons, one executemany for the updates. A concurrent writer creating the same patron makes the
    bulk flush fail; then each new patron is created on its own, safely.
    """
    wanted = set(keys)
    ids = find_patron_ids(session=session, keys=wanted)
    missing = wanted - set(ids)
    if missing:
        now = utcnow()
        created: dict[PatronKey, Patron] = {}
        try:
            with session.begin_nested():
                for key in missing:
                    # Last seen when their message was sent, not now: a later message ingested in the next
                    # batch (sent before this one was ingested) must still update the language.
                    seen = min(last_seen.get(key, now), now)
                    patron = Patron(language=languages.get(key), created_at=now, last_seen_at=seen)
                    patron.identities.append(
                        ChannelIdentity(
                            channel=key.channel,
                            external_id=key.external_id,
                            source=(sources or {}).get(key),
                            created_at=now,
                        )
                    )
                    created[key] = patron
                session.add_all(created.values())
                session.flush()
            ids.update({key: int(patron.id) for key, patron in created.items()})
        except IntegrityError:
            for key in missing:
                ids[key] = get_or_create_patron(
                    session=session, key=key, language=languages.get(key), source=(sources or {}).get(key)
                )
    if sources:
        identities = ChannelIdentity.__table__
        session.execute(
            update(identities)
            .where(
                identities.c.channel == bindparam("b_channel"),
                identities.c.external_id == bindparam("b_external"),
                identities.c.source.is_(None),
            )
            .values(source=bindparam("b_source")),
            [
                {"b_channel": key.channel, "b_external": key.external_id, "b_source": source}
                for key, source in sources.items()
            ],
        )
    table = Patron.__table__
    for with_language in (True, False):
        batch = [
            {"b_id": ids[key], "b_seen": seen, **({"b_language": languages[key]} if with_language else {})}
            for key, seen in last_seen.items()
            if (key in languages) == with_language
        ]
        if not batch:
            continue
        values: dict[str, Any] = {"last_seen_at": bindparam("b_seen")}
        if with_language:
            values["language"] = bindparam("b_language")
        session.execute(
            update(table)
            .where(table.c.id == bindparam("b_id"), table.c.last_seen_at <= bindparam("b_seen"))
            .values(**values),
            batch,
        )
    return ids


def parse_patron_ref(ref: str) -> int | PatronKey:
    """A patron reference as staff type it: an internal id (``42``) or ``CHANNEL:ID``."""
    ref = ref.strip()
    if ref.isdigit():
        return int(ref)
    channel, sep, external = ref.partition(":")
    if not sep or not channel or not external:
        raise ValueError(f"{ref!r} is neither a patron id nor CHANNEL:ID (like telegram:4242)")
    return PatronKey(channel=channel, external_id=external)


def resolve_patron(*, session: Session, ref: str) -> Patron:
    """The patron a reference names, or PatronNotFoundError."""
    parsed = parse_patron_ref(ref)
    if isinstance(parsed, int):
        patron = session.get(Patron, parsed)
    else:
        ids = find_patron_ids(session=session, keys=[parsed])
        patron = session.get(Patron, ids[parsed]) if parsed in ids else None
    if patron is None:
        raise PatronNotFoundError(f"no patron {ref!r}")
    return patron
