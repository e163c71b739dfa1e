"""Rasa's model runs in worker threads, not on the server's event loop, so webhooks answer during turns.

Rasa 3.6's `MessageProcessor` runs its model graph synchronously inside coroutines: `parse_message` calls
`_parse_message_with_graph` (the NLU pipeline: tokenizers, featurizers, DIET) and `_run_prediction_loop`
calls `predict_next_with_tracker_if_should` (the policies) for each action. While they run, nothing else
on the event loop moves: a Telegram update that only has to be recorded and answered 200 waited behind
every turn under way (the webhook's p95 at 50 updates/s was 55-83 ms, most of it waiting). `install`
replaces those two coroutines with copies of Rasa's own that await the same synchronous calls in
MODEL_THREADS worker threads. A conversation's turns still run one at a time (Rasa's lock store), so
one tracker is never touched by two threads; TensorFlow and PyTorch inference are thread-safe.
The Rasa process installs it when it loads the REST channel (connectors/rest.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import functools
import logging
from typing import Any

import structlog
from rasa.core.channels.channel import OutputChannel, UserMessage
from rasa.core.processor import MessageProcessor
from rasa.exceptions import ActionLimitReached
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.shared.nlu.constants import ENTITIES, INTENT, TEXT

logger = logging.getLogger("rasa.core.processor")
structlogger = structlog.get_logger("rasa.core.processor")

# Threads that run the model: one per core of the machine this is sized for. More would only queue
# inside TensorFlow and PyTorch, which already use the cores for one inference.
MODEL_THREADS = 2

# Rasa's own coroutines, kept to compare with and to restore in tests.
STOCK_PARSE_MESSAGE = MessageProcessor.parse_message
STOCK_RUN_PREDICTION_LOOP = MessageProcessor._run_prediction_loop


@functools.cache
def _pool() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(MODEL_THREADS, thread_name_prefix="patronbot-model")


async def off_the_loop(function: Any, *args: Any) -> Any:
    """`function(*args)` in a model thread, awaited."""
    return await asyncio.get_running_loop().run_in_executor(_pool(), function, *args)


async def parse_message(
    self: MessageProcessor,
    message: UserMessage,
    tracker: DialogueStateTracker | None = None,
    only_output_properties: bool = True,
) -> dict[str, Any]:
    """Rasa's `MessageProcessor.parse_message`, with the NLU graph run off the loop."""
    if self.http_interpreter:
        parse_data = await self.http_interpreter.parse(message)
    else:
        if tracker is None:
            tracker = DialogueStateTracker.from_events(message.sender_id, [])
        parse_data = await off_the_loop(
            self._parse_message_with_graph, message, tracker, only_output_properties
        )
    self._update_full_retrieval_intent(parse_data)
    structlogger.debug(
        "processor.message.parse",
        parse_data_text=copy.deepcopy(parse_data[TEXT]),
        parse_data_intent=parse_data[INTENT],
        parse_data_entities=copy.deepcopy(parse_data[ENTITIES]),
    )
    self._check_for_unseen_features(parse_data)
    return parse_data  # type: ignore[no-any-return]


async def run_prediction_loop(
    self: MessageProcessor, output_channel: OutputChannel, tracker: DialogueStateTracker
) -> None:
    """Rasa's `MessageProcessor._run_prediction_loop`, with each prediction made off the loop."""
    should_predict_another_action = True
    while should_predict_another_action and self._should_handle_message(tracker):
        try:
            action, prediction = await off_the_loop(self.predict_next_with_tracker_if_should, tracker)
        except ActionLimitReached:
            logger.warning(
                f"Circuit breaker tripped. Stopped predicting more actions for sender '{tracker.sender_id}'."
            )
            if self.on_circuit_break:
                self.on_circuit_break(tracker, output_channel, self.nlg)
            break
        if prediction.is_end_to_end_prediction:
            tracker = await self.run_action_extract_slots(output_channel, tracker)
        should_predict_another_action = await self._run_action(
            action, tracker, output_channel, self.nlg, prediction
        )


def install() -> None:
    """Replace the two coroutines (idempotent)."""
    MessageProcessor.parse_message = parse_message
    MessageProcessor._run_prediction_loop = run_prediction_loop


def uninstall() -> None:
    """Put Rasa's own back (tests)."""
    MessageProcessor.parse_message = STOCK_PARSE_MESSAGE
    MessageProcessor._run_prediction_loop = STOCK_RUN_PREDICTION_LOOP
