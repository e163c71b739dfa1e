"""`patronbot chat`: a terminal conversation with the running bot through its REST webhook."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


def send(*, url: str, sender: str, text: str, timeout: float = 30) -> list[dict[str, Any]]:
    """Post one message to the REST webhook and return the bot's replies."""
    body = json.dumps({"sender": sender, "message": text}).encode("utf-8")
    request = urllib.request.Request(  # noqa: S310 (the bot's own http URL)
        url, data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as reply:  # noqa: S310 (the bot's own URL)
        result: list[dict[str, Any]] = json.loads(reply.read())
    return result


def show(replies: list[dict[str, Any]]) -> None:
    for reply in replies:
        if reply.get("text"):
            print(f"bot> {reply['text']}")
        for number, button in enumerate(reply.get("buttons") or [], start=1):
            print(f"     [{number}] {button.get('title')}")


def chat(*, url: str, sender: str) -> int:
    print(f"Talking to {url} as {sender!r}. Type a message; Ctrl-D or /quit ends.")
    while True:
        try:
            text = input("you> ")
        except EOFError:
            print()
            return 0
        if text.strip() in ("/quit", "/exit"):
            return 0
        if not text.strip():
            continue
        try:
            show(send(url=url, sender=sender, text=text))
        except urllib.error.HTTPError as error:
            print(f"bot answered {error.code}: {error.read().decode('utf-8', 'replace')}")
        except (urllib.error.URLError, OSError) as error:
            print(f"cannot reach the bot at {url} ({error}); is `patronbot run` running?")
            return 1
