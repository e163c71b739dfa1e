"""Fakes of services outside this machine (the Telegram Bot API, WeChat's API): real local HTTP servers."""
