"""Shared by the console's tests: a console on the test CRM, staff who can sign in, an escalated patron."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.engine import Engine
from starlette.testclient import TestClient

from bot.crm.database import session_scope
from bot.crm.models import ChannelIdentity, Conversation, Escalation, Interaction, Patron, utcnow
from console.accounts import add_staff

PASSWORD = "correct horse battery"


def staff(crm: Engine, username: str, role: str) -> None:
    with session_scope(crm) as session:
        add_staff(session=session, username=username, role=role, password=PASSWORD)


def escalated_patron(
    crm: Engine, *, sender: str = "telegram:4242", words: str = "I need a librarian", priority: str = "normal"
) -> tuple[int, int]:
    """A patron on Telegram who asked for a librarian: (patron id, escalation id)."""
    channel, _, external = sender.partition(":")
    now = utcnow()
    with session_scope(crm) as session:
        patron = Patron(language="en", display_name="Amy")
        session.add(patron)
        session.flush()
        session.add(ChannelIdentity(patron_id=patron.id, channel=channel, external_id=external))
        conversation = Conversation(
            patron_id=patron.id, channel=channel, rasa_sender_id=sender, status="with_staff"
        )
        session.add(conversation)
        session.flush()
        session.add(
            Interaction(
                patron_id=patron.id,
                conversation_id=conversation.id,
                channel=channel,
                direction="in",
                text=words,
                intent="human_handoff",
                confidence=0.93,
                event_key=f"test:{sender}:{words}",
                occurred_at=now - dt.timedelta(minutes=3),
            )
        )
        escalation = Escalation(
            patron_id=patron.id,
            conversation_id=conversation.id,
            channel=channel,
            rasa_sender_id=sender,
            reason="requested",
            priority=priority,
            status="open",
            created_at=now - dt.timedelta(minutes=3),
            due_at=now + dt.timedelta(minutes=40),
        )
        session.add(escalation)
        session.flush()
        return int(patron.id), int(escalation.id)


def signed_in(client: TestClient, username: str) -> str:
    """Sign `client` in as `username`; the CSRF token."""
    answer = client.post("/api/session", json={"username": username, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["csrf_token"]
    return token
