"""The CRM's tables, by domain: patrons and consent, conversations, feedback, outreach, outbox, staff."""

from bot.models.base import Base, BigId, UTCDateTime, utcnow
from bot.models.conversation import (
    CONVERSATION_STATUSES,
    Conversation,
    ErasedSender,
    IngestCursor,
    Interaction,
    InteractionStat,
)
from bot.models.feedback import Escalation, Feedback, Suggestion
from bot.models.outbound import OutboxMessage
from bot.models.outreach import Campaign, Delivery, Segment, SegmentMembership
from bot.models.patron import CONSENT_PURPOSES, PATRON_TYPES, ChannelIdentity, Consent, Patron
from bot.models.staff import AuditLog, StaffUser

__all__ = [
    "CONSENT_PURPOSES",
    "CONVERSATION_STATUSES",
    "PATRON_TYPES",
    "AuditLog",
    "Base",
    "BigId",
    "Campaign",
    "ChannelIdentity",
    "Consent",
    "Conversation",
    "Delivery",
    "ErasedSender",
    "Escalation",
    "Feedback",
    "IngestCursor",
    "Interaction",
    "InteractionStat",
    "OutboxMessage",
    "Patron",
    "Segment",
    "SegmentMembership",
    "StaffUser",
    "Suggestion",
    "UTCDateTime",
    "utcnow",
]
