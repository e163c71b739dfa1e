"""Telegram: the webhook's time to 200 at 50 updates/s on a real `patronbot run`, and the send rate
against the fake Bot API limited as Telegram is (30 messages/s overall, one a second per chat)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks.common import DATABASES, Result, crm_database, percentile, postgres_unavailable, skipped
from bot.crm.models import OutboxMessage
from bot.runtime.launch import launch, stop
from connectors.telegram_send import make_bot, outbox_sender
from tests.fakes.telegram_api import FakeTelegramAPI, text_update

TOKEN = "555555:BENCH-token"
SECRET = "bench-secret"
WEBHOOK_RATE = 50.0  # updates a second, open loop
WEBHOOK_P95_MS = 50.0
SEND_LIMIT = 30.0  # the fake's overall limit, as Telegram's
SEND_TARGET = 28.5
WARM_UP_S = 2.0  # the limiter's first burst is left out of the sustained rate
NAMES: list[tuple[str, str, float, str]] = [
    ("telegram_webhook_p95_at_50_per_s", "ms", WEBHOOK_P95_MS, "<"),
    ("telegram_send_rate_at_30_per_s_limit", "messages/s", SEND_TARGET, ">="),
    ("telegram_send_429s_steady_state", "429s", 1.0, "<"),
]
QUESTIONS = ["hello", "what are your opening hours?", "图书馆几点开门？", "how do I renew a book", "thanks"]


def _post(url: str, body: bytes) -> float:
    request = urllib.request.Request(
        url,
        data=body,
        headers={"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": SECRET},
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as answer:
        answer.read()
        assert answer.status == 200
    return (time.perf_counter() - started) * 1000


def webhook_latencies(*, model: Path, seconds: float, database: str) -> list[float]:
    """Updates POSTed at WEBHOOK_RATE for `seconds` to a running bot (the turns run meanwhile), its CRM
    (where each update is recorded before the 200) on `database`."""
    with (
        FakeTelegramAPI(token=TOKEN) as api,
        tempfile.TemporaryDirectory(prefix="bench-telegram-") as work,
        crm_database(database, Path(work), "telegram") as crm_url,
    ):
        env = {
            "PATRONBOT_TELEGRAM_TOKEN": TOKEN,
            "PATRONBOT_TELEGRAM_WEBHOOK_SECRET": SECRET,
            "PATRONBOT_TELEGRAM_API_URL": api.url,
            "PATRONBOT_DATABASE_URL": crm_url,
        }
        bot = launch(workdir=Path(work), model=model, env=env)
        url = bot.webhook.replace("/webhooks/rest/webhook", "/webhooks/telegram/webhook")
        try:
            for n in range(5):  # the first turns load what Rasa loads lazily
                _post(url, json.dumps(text_update(n + 1, 9000 + n, "hello")).encode())
            count = int(seconds * WEBHOOK_RATE)
            bodies = [
                json.dumps(text_update(1000 + n, 1000 + n % 50, QUESTIONS[n % len(QUESTIONS)])).encode()
                for n in range(count)
            ]
            start = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
                futures = []
                for index, body in enumerate(bodies):
                    time.sleep(max(0.0, start + index / WEBHOOK_RATE - time.perf_counter()))
                    futures.append(pool.submit(_post, url, body))
                return [future.result() for future in futures]
        finally:
            stop(bot)


async def _send_all(count: int) -> tuple[float, int, int]:
    """`count` staff replies to distinct chats through the outbox sender, all at once; the rate after
    the first WARM_UP_S, the 429s then, and the messages sent."""
    with FakeTelegramAPI(token=TOKEN) as api:
        api.limit(per_second=SEND_LIMIT, per_chat_seconds=1.0)
        bot = make_bot(token=TOKEN, api_url=api.url)
        async with bot:
            sender = outbox_sender(bot)
            messages = [
                OutboxMessage(
                    id=n, channel="telegram", recipient=f"telegram:{100 + n % (count // 2)}", text=f"m{n}"
                )
                for n in range(count)
            ]
            start = time.monotonic()
            outcomes = await asyncio.gather(*(sender(message) for message in messages))
        sent = sum(1 for outcome in outcomes if outcome.outcome == "sent")
        steady = [call for call in api.sent() if call.at - start >= WARM_UP_S]
        rejected = [
            call
            for call in api.calls_of("sendMessage")
            if call.status == 429 and call.at - start >= WARM_UP_S
        ]
        duration = (steady[-1].at - steady[0].at) if len(steady) > 1 else 0.0
        rate = (len(steady) - 1) / duration if duration > 0 else 0.0
        return rate, len(rejected), sent


def run(*, quick: bool) -> list[Result]:
    from benchmarks.turn import trained_model

    given = os.environ.get("PATRONBOT_BENCH_MODEL")  # an already trained model, for a quick check
    seconds, messages = (6.0, 240) if quick else (40.0, 1200)
    rate, rejected, sent = asyncio.run(_send_all(messages))
    send_params = {"messages": messages, "chats": messages // 2, "sent": sent, "limit_per_s": SEND_LIMIT}
    model = Path(given) if given else trained_model()
    results: list[Result] = []
    for database in DATABASES:
        reason = postgres_unavailable() if database == "postgresql" else None
        if reason:
            results += skipped(NAMES[:1], database, reason, {})
            continue
        latencies = webhook_latencies(model=model, seconds=seconds, database=database)
        results.append(
            Result(
                name=NAMES[0][0],
                database=database,
                value=round(percentile(latencies, 95), 3),
                unit="ms",
                target=WEBHOOK_P95_MS,
                comparison="<",
                params={
                    "updates": len(latencies),
                    "rate_per_s": WEBHOOK_RATE,
                    "chats": 50,
                    "p50_ms": round(percentile(latencies, 50), 3),
                },
            )
        )
    return [
        *results,
        Result(
            name=NAMES[1][0],
            database="-",
            value=round(rate, 3),
            unit="messages/s",
            target=SEND_TARGET,
            comparison=">=",
            params=send_params,
        ),
        Result(
            name=NAMES[2][0],
            database="-",
            value=float(rejected),
            unit="429s",
            target=1.0,
            comparison="<",
            params=send_params,
        ),
    ]
