"""Patrons' rights over their data: export, erasure (asked by command or in the chat), retention."""
