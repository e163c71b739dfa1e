"""A patron's turn through the running bot's REST channel: latency, throughput and the CRM write's lag."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import func, select

from benchmarks.common import (
    DATABASES,
    Result,
    Timer,
    percentile,
    postgres_schema,
    postgres_server,
    postgres_unavailable,
    skipped,
)
from bot.crm.database import make_engine
from bot.crm.models import Conversation, Interaction
from bot.runtime.launch import config_with_epochs, launch, stop, train_model
from bot.settings import PROJECT_ROOT

# The model is cached by its training fingerprint, as the tests' model is.
MODEL_CACHE = PROJECT_ROOT / ".bench-models"
EPOCHS = 40
REQUEST_TIMEOUT = 30.0
PERIOD = 2.0  # each conversation sends a message every 2 s
SUSTAINED_SHARE = 0.95  # a rate is sustained when at least 95% of it is completed ...
SUSTAINED_P95_MS = 1000.0  # ... and the p95 stays under 1 s
SEQUENTIAL_MS, LOAD_MS, MIN_RATE, LAG_S = 150.0, 300.0, 20.0, 2.0
NAMES: list[tuple[str, str, float, str]] = [
    ("turn_sequential_p50", "ms", SEQUENTIAL_MS, "<"),
    ("turn_sequential_p95", "ms", SEQUENTIAL_MS, "<"),
    ("turn_load_p50", "ms", LOAD_MS, "<"),
    ("turn_load_p95", "ms", LOAD_MS, "<"),
    ("turn_max_sustained_rate", "messages/s", MIN_RATE, ">="),
    ("crm_ingest_lag_p95", "s", LAG_S, "<"),
]
# What patrons say in the benchmark, written for it: greetings, hours, knowledge-base questions, thanks.
MESSAGES = (
    "你好呀",
    "Hi there!",
    "请问图书馆周六几点开门？",
    "Sunday: from what time can I come in?",
    "今晚图书馆开到几点",
    "Is the building open late tonight?",
    "借的书快到期了，想在网上续借一下",
    "I'd like to renew the books I borrowed",
    "一本书最多能续借几次",
    "How many times may a loan be renewed?",
    "书逾期了要交多少罚款",
    "What does a late book cost me per day?",
    "罚款在哪里缴纳",
    "Where can I settle my library fines?",
    "想预约一间小组讨论室",
    "Could we book a discussion room on Friday?",
    "图书馆的无线网怎么连接",
    "How do I get on the wifi in the building?",
    "在校外怎么访问学校买的数据库",
    "Using the article databases from home",
    "借书证丢了怎么办",
    "My campus card is gone, what now?",
    "被借走的书可以预约吗",
    "Is there a waiting list for a title that is out?",
    "馆际互借一般要多长时间",
    "Interlibrary loan turnaround, roughly?",
    "黑白打印一张多少钱",
    "What do mono prints cost, per sheet?",
    "谢谢你的帮助",
    "Thanks, that helps a lot",
    "再见啦",
    "Bye for now",
)


@dataclass
class Plan:
    """How much of each phase to run."""

    warmup: int
    sequential: int
    load_seconds: float
    step_seconds: float
    rates: tuple[int, ...]

    @classmethod
    def make(cls, *, quick: bool) -> Plan:
        if quick:
            return cls(warmup=20, sequential=30, load_seconds=10, step_seconds=6, rates=(5, 10, 20))
        return cls(
            warmup=20,
            sequential=200,
            load_seconds=60,
            step_seconds=16,
            rates=(4, 6, 8, 10, 15, 20, 25, 30, 40),
        )


# --- the bot ---------------------------------------------------------------------------------------


def trained_model() -> Path:
    """The model `patronbot train` makes with EPOCHS (not retrained when the fingerprint matches): DIET's
    100 epochs once took over 15 minutes on the shared benchmark machine. A turn's cost does not depend
    on the epochs."""
    config = config_with_epochs(epochs=EPOCHS, path=MODEL_CACHE / "config.bench.yml")
    return train_model(config=config, model=MODEL_CACHE / "patronbot-bench.tar.gz")


@contextlib.contextmanager
def running_bot(*, workdir: Path, model: Path, crm_url: str) -> Iterator[str]:
    """`patronbot run --no-train` until the block ends; yields the REST webhook's URL."""
    # The knowledge base's vectors are kept beside the model, so only the first start encodes them.
    env = {"PATRONBOT_DATABASE_URL": crm_url, "PATRONBOT_VECTOR_DIR": str(MODEL_CACHE / "vectors")}
    bot = launch(workdir=workdir, model=model, env=env)
    try:
        yield bot.webhook
    finally:
        stop(bot)


# --- the load --------------------------------------------------------------------------------------


@dataclass
class Turn:
    """One message sent, when it was due and when its reply came (event-loop clock, seconds)."""

    sender: str
    text: str
    due: float
    done: float = 0.0
    ok: bool = False
    replies: int = 0
    error: str = ""

    @property
    def latency_ms(self) -> float:
        return (self.done - self.due) * 1000


async def _send(client: aiohttp.ClientSession, webhook: str, turn: Turn) -> None:
    try:
        async with client.post(webhook, json={"sender": turn.sender, "message": turn.text}) as reply:
            body = await reply.json()
            turn.ok = reply.status == 200
            turn.replies = len(body) if isinstance(body, list) else 0
            turn.error = "" if turn.ok else f"HTTP {reply.status}"
    except (aiohttp.ClientError, TimeoutError, ValueError) as error:
        turn.error = type(error).__name__
    turn.done = asyncio.get_running_loop().time()


def _client() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=500), timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    )


async def _sequential(webhook: str, prefix: str, count: int) -> list[Turn]:
    """One conversation at a time: each message sent when the previous reply has come."""
    loop = asyncio.get_running_loop()
    turns = []
    async with _client() as client:
        for number in range(count):
            turn = Turn(f"{prefix}-{number // 10}", MESSAGES[number % len(MESSAGES)], due=loop.time())
            await _send(client, webhook, turn)
            turns.append(turn)
    return turns


async def _open_loop(webhook: str, prefix: str, *, conversations: int, seconds: float) -> list[Turn]:
    """`conversations` patrons, each sending every PERIOD seconds, on schedule whatever the replies."""
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2
    schedule = sorted(
        (start + offset * PERIOD / conversations + round_ * PERIOD, offset, round_)
        for offset in range(conversations)
        for round_ in range(int(seconds / PERIOD))
    )
    turns: list[Turn] = []
    tasks = []
    async with _client() as client:
        for due, offset, round_ in schedule:
            await asyncio.sleep(max(0.0, due - loop.time()))
            text = MESSAGES[(offset * 7 + round_) % len(MESSAGES)]
            turn = Turn(f"{prefix}-{offset}", text, due=due)
            turns.append(turn)
            tasks.append(asyncio.create_task(_send(client, webhook, turn)))
        await asyncio.gather(*tasks)
    return turns


def _latencies(turns: Sequence[Turn]) -> list[float]:
    latencies = [turn.latency_ms for turn in turns if turn.ok]
    if not latencies:
        raise RuntimeError(f"no reply to any of {len(turns)} messages")
    return latencies


def _summary(turns: Sequence[Turn]) -> dict[str, Any]:
    latencies = _latencies(turns)
    return {
        "messages": len(turns),
        "failed": dict(Counter(turn.error for turn in turns if not turn.ok)),
        "without_reply_text": sum(1 for turn in turns if turn.ok and not turn.replies),
        "p50_ms": round(percentile(latencies, 50), 1),
        "p95_ms": round(percentile(latencies, 95), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "max_ms": round(max(latencies), 1),
    }


def _step(webhook: str, rate: int, seconds: float) -> dict[str, Any]:
    """One offered rate: the replies per second in the sending window after its first second, and the p95."""
    turns = asyncio.run(_open_loop(webhook, f"bench-step{rate}", conversations=rate * 2, seconds=seconds))
    start = min(turn.due for turn in turns)
    sending = int(seconds / PERIOD) * PERIOD  # the last round of messages is due just before this
    window = [turn for turn in turns if turn.ok and start + 1 <= turn.done <= start + sending]
    completed = len(window) / (sending - 1)
    summary = _summary(turns)
    return summary | {
        "offered_per_s": rate,
        "completed_per_s": round(completed, 2),
        "sustained": completed >= SUSTAINED_SHARE * rate and summary["p95_ms"] < SUSTAINED_P95_MS,
    }


# --- the CRM write ---------------------------------------------------------------------------------


def _ingested(crm_url: str, turns: Sequence[Turn]) -> tuple[list[float | None], int]:
    """For each turn, when the last of its rows was recorded in the CRM (time.time() clock), or None.

    Waits (up to a minute) for the ingester to catch up first. The patron's message starts a turn's
    rows and the bot's messages until the next one belong to it. The turns of a sender whose count of
    messages in the CRM differs from its count of replies stay None; the second value counts those senders.
    """
    senders = {turn.sender for turn in turns}
    # The REST channel gives Rasa the sender id with the channel's name in front ("rest:<sender>").
    by_rasa_id = {rasa_id: sender for sender in senders for rasa_id in (sender, f"rest:{sender}")}
    joined = (
        select(Conversation.rasa_sender_id, Interaction.direction, Interaction.recorded_at)
        .join(Conversation, Interaction.conversation_id == Conversation.id)
        .where(Conversation.rasa_sender_id.in_(by_rasa_id))
    )
    expected = sum(1 for turn in turns if turn.ok)
    count = select(func.count()).select_from(joined.where(Interaction.direction == "in").subquery())
    engine = make_engine(crm_url)
    try:
        deadline = time.monotonic() + 60
        with engine.connect() as connection:
            while connection.execute(count).scalar_one() < expected and time.monotonic() < deadline:
                time.sleep(0.5)
            rows = connection.execute(joined.order_by(Interaction.id)).all()
    finally:
        engine.dispose()
    recorded: dict[str, list[float]] = {}  # sender -> when each of its turns was complete in the CRM
    for rasa_id, direction, recorded_at in rows:
        sender = by_rasa_id[rasa_id]
        at = (recorded_at if recorded_at.tzinfo else recorded_at.replace(tzinfo=dt.UTC)).timestamp()
        times = recorded.setdefault(sender, [])
        if direction == "in" or not times:
            times.append(at)
        else:
            times[-1] = max(times[-1], at)
    result: list[float | None] = [None] * len(turns)
    left_out = 0
    for sender in senders:
        positions = [n for n, turn in enumerate(turns) if turn.sender == sender and turn.ok]
        if len(positions) != len(recorded.get(sender, ())):
            left_out += 1
            continue
        for position, at in zip(positions, recorded.get(sender, ()), strict=True):
            result[position] = at
    return result, left_out


def _lags(
    turns: Sequence[Turn], recorded: Sequence[float | None], *, clock: float, after_reply: bool
) -> list[float]:
    """Seconds from each turn's send (or reply) until its rows were in the CRM."""
    return [
        at - clock - (turn.done if after_reply else turn.due)
        for turn, at in zip(turns, recorded, strict=True)
        if at is not None
    ]


# --- the measurement -------------------------------------------------------------------------------


def _measure(*, database: str, webhook: str, crm_url: str, plan: Plan) -> list[Result]:
    clock = time.time() - time.monotonic()  # the wall clock less the event loop's (monotonic) clock
    asyncio.run(_sequential(webhook, "bench-warmup", plan.warmup))
    sequential = asyncio.run(_sequential(webhook, "bench-seq", plan.sequential))
    load = asyncio.run(_open_loop(webhook, "bench-load", conversations=20, seconds=plan.load_seconds))
    steps: list[dict[str, Any]] = []
    for rate in plan.rates:
        time.sleep(2)  # let the replies and the ingester's backlog of the previous phase drain
        steps.append(_step(webhook, rate, plan.step_seconds))
        if not steps[-1]["sustained"]:
            break
    sustained = max((step["offered_per_s"] for step in steps if step["sustained"]), default=0)
    recorded, left_out = _ingested(crm_url, [*sequential, *load])
    seq_lag = _lags(sequential, recorded[: len(sequential)], clock=clock, after_reply=False)
    load_lag = _lags(load, recorded[len(sequential) :], clock=clock, after_reply=False)
    load_after_reply = _lags(load, recorded[len(sequential) :], clock=clock, after_reply=True)
    lag_phase = "load"
    if not load_lag:
        # Every load conversation had a timed-out turn, so none can be matched with its CRM rows:
        # the lag is then the sequential phase's, and the parameters say so.
        load_lag, load_after_reply, lag_phase = seq_lag, seq_lag, "sequential (no load turn could be matched)"
    if not load_lag:
        raise RuntimeError(f"none of {len(sequential)} sequential turns was found in the CRM")
    common: dict[str, Any] = {"crm": "PostgreSQL schema" if database == "postgresql" else "SQLite file"}
    if database == "postgresql":
        common["server"] = postgres_server()
    sequential_params = common | {"warmup": plan.warmup} | _summary(sequential)
    load_params = (
        common | {"conversations": 20, "period_s": PERIOD, "seconds": plan.load_seconds} | _summary(load)
    )
    step_params = common | {
        "step_seconds": plan.step_seconds,
        "period_s": PERIOD,
        "rule": "highest offered rate completed at >= 95% with p95 < 1 s",
        "steps": steps,
    }
    lag_params = common | {
        "phase": lag_phase,
        "turns": len(load_lag),
        "measured_from": "the message's scheduled send, 20 conversations x 1 message / 2 s",
        "p50_s": round(percentile(load_lag, 50), 3),
        "after_reply_p50_s": round(percentile(load_after_reply, 50), 3),
        "after_reply_p95_s": round(percentile(load_after_reply, 95), 3),
        "sequential_p50_s": round(percentile(seq_lag, 50), 3),
        "sequential_p95_s": round(percentile(seq_lag, 95), 3),
        "senders_left_out": left_out,
    }
    seq, lod = _latencies(sequential), _latencies(load)
    figures = [
        (percentile(seq, 50), sequential_params),
        (percentile(seq, 95), sequential_params),
        (percentile(lod, 50), load_params),
        (percentile(lod, 95), load_params),
        (float(sustained), step_params),
        (percentile(load_lag, 95), lag_params),
    ]
    return [
        Result(
            name=name,
            database=database,
            value=round(value, 3),
            unit=unit,
            target=target,
            comparison=comparison,
            params=params,
        )
        for (name, unit, target, comparison), (value, params) in zip(NAMES, figures, strict=True)
    ]


@contextlib.contextmanager
def _crm(database: str, workdir: Path) -> Iterator[str]:
    if database == "sqlite":
        yield f"sqlite:///{workdir / 'crm.db'}"
        return
    with postgres_schema("turn_crm") as url:
        yield url


def run(*, quick: bool) -> list[Result]:
    plan = Plan.make(quick=quick)
    with Timer() as training:
        model = trained_model()
    reduced = "epochs" in (MODEL_CACHE / "config.bench.yml").read_text(encoding="utf-8")
    model_note = (
        f"config.yml{f' with {EPOCHS} epochs' if reduced else ' (it sets no epochs)'}; "
        f"trained or found up to date in {training.elapsed:.0f} s"
    )
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="patronbot-bench-turn-") as tmp:
        for database in DATABASES:
            reason = postgres_unavailable() if database == "postgresql" else None
            if reason:
                results += skipped(NAMES, database, reason, {})
                continue
            workdir = Path(tmp) / database
            workdir.mkdir()
            with (
                _crm(database, workdir) as crm_url,
                running_bot(workdir=workdir, model=model, crm_url=crm_url) as webhook,
            ):
                results += _measure(database=database, webhook=webhook, crm_url=crm_url, plan=plan)
    for result in results:
        result.params["model"] = model_note
    return results
