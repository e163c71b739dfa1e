"""The relationship inside a conversation: feedback and suggestions, escalations, the profile."""
