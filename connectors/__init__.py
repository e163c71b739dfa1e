"""Chat-channel connectors: how patrons' messages come in from each channel and replies go out."""
