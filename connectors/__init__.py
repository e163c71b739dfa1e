"""Chat-channel connectors: how patrons' messages come in from each channel and replies go out."""

from bot.runtime.logs import quiet_libraries

# Loaded inside Rasa's server, which sets up its own logging: httpx would log each Telegram request's URL,
# bot token included.
quiet_libraries()
