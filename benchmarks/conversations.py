"""Realistic conversations for the benchmarks: bilingual turns and the Rasa events a conversation makes."""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from typing import Any

from rasa.shared.core.events import ActionExecuted, BotUttered, SessionStarted, UserUttered

# --- realistic conversations -----------------------------------------------------------------------


@dataclass(frozen=True)
class Turn:
    """One exchange: what a patron asks (in Chinese, English or a mix) and what the bot answers."""

    intent: str
    zh: str
    en: str
    mixed: str
    action: str
    answer_zh: str
    answer_en: str

    def user_text(self, language: str) -> str:
        return {"zh": self.zh, "en": self.en}.get(language, self.mixed)

    def answer(self, language: str) -> str:
        return self.answer_en if language == "en" else self.answer_zh


GREET = Turn(
    "greet",
    "你好",
    "Hello there",
    "hi 你好呀",
    "utter_greet",
    "您好！我是图书馆的智能助手。可以问我开放时间、地址和联系方式等问题。",
    "Hello! I'm the library's assistant. Ask me about opening hours, where we are, or how to reach us.",
)
QUESTIONS = (
    Turn(
        "ask_hours",
        "图书馆今天几点关门？",
        "What time does the library close today?",
        "周末 library 几点开门",
        "action_opening_hours",
        "本周开放时间：周一至周五 8:00–22:00，周六、周日 9:00–21:00。",
        "Opening hours this week: Monday to Friday 8:00–22:00, Saturday and Sunday 9:00–21:00.",
    ),
    Turn(
        "ask_contact",
        "怎么联系馆员？",
        "How can I reach a librarian?",
        "咨询台 email 是多少",
        "action_library_contact",
        "您可以拨打咨询台电话 010-6275 1234，或发邮件至 ask@lib.example.edu.cn。",
        "Call the help desk on 010-6275 1234 or write to ask@lib.example.edu.cn.",
    ),
    Turn(
        "bot_challenge",
        "你是真人还是机器人？",
        "Am I talking to a bot?",
        "你是 bot 吗",
        "utter_iamabot",
        "我是图书馆的智能助手（机器人），不是真人。需要时我可以为您转接馆员。",
        "I'm the library's virtual assistant, a bot, not a person. I can put you in touch with a librarian.",
    ),
    Turn(
        "out_of_scope",
        "帮我写一篇关于宋代经济的论文",
        "Can you write my essay on Song dynasty trade?",
        "图书馆 wifi 密码是多少",
        "utter_out_of_scope",
        "抱歉，这个问题超出了图书馆的服务范围，我无法回答。您可以问我开放时间、地址和联系方式。",
        "Sorry, that is outside what the library can help with. You can ask me about opening hours.",
    ),
)
CLOSINGS = (
    Turn(
        "thanks",
        "谢谢！",
        "Thanks a lot!",
        "thanks 谢谢",
        "utter_youre_welcome",
        "不客气！还有其他可以帮您的吗？",
        "You're welcome! Is there anything else I can help with?",
    ),
    Turn(
        "goodbye",
        "再见",
        "Bye!",
        "bye 拜拜",
        "utter_goodbye",
        "再见！欢迎随时再来咨询。",
        "Goodbye! Come back any time.",
    ),
)
TURNS = (GREET, *QUESTIONS, *CLOSINGS)


def pick_language(rng: random.Random) -> str:
    """A patron's language: mostly Chinese, often English, sometimes a mix of both."""
    return rng.choices(("zh", "en", "mixed"), weights=(55, 35, 10))[0]


def plan_turns(rng: random.Random, count: int) -> list[Turn]:
    """A plausible conversation: a greeting, questions, and a thank-you or goodbye at the end."""
    if count <= 1:
        return [GREET][:count]
    middle = [rng.choice(QUESTIONS) for _ in range(count - 2)]
    return [GREET, *middle, rng.choice(CLOSINGS)]


def conversation_events(
    rng: random.Random, *, sender: str, start: float, turns: int, channel: str = "rest"
) -> list[dict[str, Any]]:
    """One Rasa session as its event broker publishes it, made with Rasa's own event classes.

    action_session_start, session_started, action_listen, then per turn: the patron's message, the
    action that answers, the bot's message and action_listen. Each dict carries ``sender_id``.
    """
    language = pick_language(rng)
    events: list[dict[str, Any]] = []

    def add(event: Any) -> None:
        events.append({"sender_id": sender, **event.as_dict()})

    at = start
    add(ActionExecuted("action_session_start", timestamp=at))
    add(SessionStarted(timestamp=at))
    add(ActionExecuted("action_listen", timestamp=at))
    for number, turn in enumerate(plan_turns(rng, turns)):
        at += rng.uniform(5, 60) if number else 0.5
        entities = []
        if rng.random() < 0.2:  # the language detector's entity on some messages
            entities = [{"entity": "language", "value": "en" if language == "en" else "zh"}]
        confidence = round(rng.uniform(0.55, 0.99), 4)
        add(
            UserUttered(
                turn.user_text(language),
                {"name": turn.intent, "confidence": confidence},
                entities,
                input_channel=channel,
                timestamp=at,
                message_id=f"{rng.getrandbits(128):032x}",
            )
        )
        add(ActionExecuted(turn.action, policy="RulePolicy", confidence=1.0, timestamp=at + 0.2))
        metadata = {"utter_action": turn.action} if turn.action.startswith("utter_") else {}
        add(BotUttered(turn.answer(language), metadata=metadata, timestamp=at + 0.25))
        add(ActionExecuted("action_listen", policy="RulePolicy", confidence=1.0, timestamp=at + 0.3))
    return events


def utc(timestamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC)
