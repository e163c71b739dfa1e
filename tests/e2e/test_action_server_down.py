"""Killing the action server mid-conversation loses no patron message, and the supervisor restarts it."""

from __future__ import annotations

import os
import signal
import time
import urllib.request

import pytest

from bot.knowledge.facts import load_facts
from bot.settings import PROJECT_ROOT
from connectors.replies import APOLOGY
from tests.e2e.conftest import RunningBot
from tests.e2e.test_rest_conversation import crm_rows, sender

pytestmark = pytest.mark.rasa

FACTS = load_facts(PROJECT_ROOT / "knowledge" / "library.yml")


def action_server_answers(bot: RunningBot) -> bool:
    url = f"http://127.0.0.1:{bot.env['PATRONBOT_ACTION_PORT']}/health"
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def test_killing_the_action_server_loses_no_patron_message(running_bot: RunningBot) -> None:
    patron = sender()
    assert running_bot.say(patron, "你好")
    before_restart = len(running_bot.process_log.read_text(errors="replace"))
    os.kill(running_bot.child_pid("actions"), signal.SIGKILL)
    assert not action_server_answers(running_bot)

    # Questions that need the action server: an apology in the patron's language, not an error.
    assert running_bot.say(patron, "图书馆几点开门？") == [APOLOGY["zh"]]
    assert running_bot.say(patron, "When do you open on Saturday?") == [APOLOGY["en"]]
    # Replies Rasa serves itself still work.
    assert running_bot.say(patron, "谢谢")

    rows = crm_rows(running_bot, patron, 5)
    said = [row.text for row in rows if row.direction == "in"]
    assert said == ["你好", "图书馆几点开门？", "When do you open on Saturday?", "谢谢"]

    # The supervisor restarts the action server and answers come back.
    deadline = time.monotonic() + 120
    while not action_server_answers(running_bot) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert action_server_answers(running_bot), running_bot.log.read_text(errors="replace")[-3000:]
    assert FACTS.weekly["saturday"].span() in running_bot.say(patron, "周六几点开门")[0]
    # It read the knowledge base's vectors from disk instead of encoding them again.
    since_restart = running_bot.process_log.read_text(errors="replace")[before_restart:]
    assert "started action server" in since_restart
    assert "knowledge-base texts" not in since_restart, since_restart[-3000:]
