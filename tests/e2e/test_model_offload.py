"""Rasa's model runs in the model threads, not on the event loop (rasa_server/model_offload.py): a real
trained model answers a real turn, and every run of its graph (the NLU parse and each prediction) happens
in a `patronbot-model` thread; with Rasa's own coroutines put back, the same turn runs it on the loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rasa.core.agent import Agent
from rasa.core.channels.channel import CollectingOutputChannel, UserMessage

from rasa_server import model_offload


@pytest.fixture(scope="module")
def agent(trained_model: Path) -> Iterator[Agent]:
    loaded = Agent.load(str(trained_model))
    yield loaded
    model_offload.uninstall()


def graph_threads(agent: Agent, text: str, sender: str) -> tuple[list[threading.Thread], threading.Thread]:
    """The threads that ran the model's graph during one turn, and the event loop's thread."""
    runner = agent.processor.graph_runner
    original = runner.run
    threads: list[threading.Thread] = []

    def run(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread())
        return original(*args, **kwargs)

    async def turn() -> threading.Thread:
        await agent.handle_message(UserMessage(text, CollectingOutputChannel(), sender))
        return threading.current_thread()

    runner.run = run
    try:
        loop_thread = asyncio.run(turn())
    finally:
        runner.run = original
    return threads, loop_thread


def test_a_turn_runs_the_model_in_the_model_threads(agent: Agent) -> None:
    model_offload.install()
    threads, loop_thread = graph_threads(agent, "图书馆几点开门？", "offload-1")
    assert len(threads) >= 2  # the parse, and at least one prediction
    assert all(thread is not loop_thread for thread in threads)
    assert {thread.name.split("_")[0] for thread in threads} == {"patronbot-model"}


def test_without_it_the_same_turn_runs_the_model_on_the_loop(agent: Agent) -> None:
    model_offload.uninstall()
    threads, loop_thread = graph_threads(agent, "图书馆几点开门？", "offload-2")
    assert threads
    assert all(thread is loop_thread for thread in threads)


def test_a_parse_gives_the_same_result_either_way(agent: Agent) -> None:
    model_offload.uninstall()
    stock = asyncio.run(agent.parse_message("how do I renew a book"))
    model_offload.install()
    offloaded = asyncio.run(agent.parse_message("how do I renew a book"))
    assert offloaded["intent"] == stock["intent"]
    assert offloaded["entities"] == stock["entities"]
