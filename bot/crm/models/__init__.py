"""The CRM's tables, by domain: patrons, conversations, feedback, outreach, outbox, channels, staff,
knowledge base proposals."""

from bot.crm.models.base import Base, BigId, UTCDateTime, utcnow
from bot.crm.models.conversation import (
    CONVERSATION_STATUSES,
    Conversation,
    ErasedSender,
    IngestCursor,
    Interaction,
    InteractionStat,
)
from bot.crm.models.feedback import Escalation, Feedback, Suggestion
from bot.crm.models.knowledge import PROPOSAL_KINDS, PROPOSAL_STATUSES, KnowledgeProposal
from bot.crm.models.channel import ChannelToken, ChannelUpdate, TurnEffect
from bot.crm.models.outbound import ATTEMPT_OUTCOMES, OUTBOX_STATUSES, DeliveryAttempt, OutboxMessage
from bot.crm.models.outreach import (
    CAMPAIGN_KINDS,
    CAMPAIGN_STATUSES,
    DELIVERY_STATES,
    SKIP_REASONS,
    TRIGGER_EVENTS,
    Campaign,
    CampaignRun,
    Delivery,
    PatronInterest,
    Persona,
    SchedulerLease,
    Segment,
    SegmentMembership,
    SenderWorker,
)
from bot.crm.models.patron import CONSENT_PURPOSES, PATRON_TYPES, ChannelIdentity, Consent, Patron
from bot.crm.models.staff import AuditLog, EscalationNote, LoginAttempt, StaffSession, StaffUser

__all__ = [
    "ATTEMPT_OUTCOMES",
    "OUTBOX_STATUSES",
    "ChannelToken",
    "ChannelUpdate",
    "TurnEffect",
    "DeliveryAttempt",
    "CONSENT_PURPOSES",
    "CONVERSATION_STATUSES",
    "PATRON_TYPES",
    "PROPOSAL_KINDS",
    "PROPOSAL_STATUSES",
    "AuditLog",
    "Base",
    "BigId",
    "CAMPAIGN_KINDS",
    "CAMPAIGN_STATUSES",
    "Campaign",
    "CampaignRun",
    "DELIVERY_STATES",
    "ChannelIdentity",
    "Consent",
    "Conversation",
    "Delivery",
    "ErasedSender",
    "Escalation",
    "EscalationNote",
    "Feedback",
    "IngestCursor",
    "KnowledgeProposal",
    "LoginAttempt",
    "Interaction",
    "InteractionStat",
    "OutboxMessage",
    "Patron",
    "PatronInterest",
    "Persona",
    "SKIP_REASONS",
    "SchedulerLease",
    "Segment",
    "SegmentMembership",
    "SenderWorker",
    "StaffSession",
    "StaffUser",
    "Suggestion",
    "TRIGGER_EVENTS",
    "UTCDateTime",
    "utcnow",
]
