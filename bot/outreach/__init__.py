"""Outreach (next): patron segments, personas, follow-up campaigns and the scheduler that sends them."""
