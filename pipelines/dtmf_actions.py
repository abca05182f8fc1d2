"""Keypad shortcuts from the campaign (e.g. 0 = talk to a human, 9 = end the call).

Not a pipeline stage of its own: the input transport hands each key to the call's CallTap,
which runs its action (one processor fewer for every frame of the call to cross)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from loguru import logger
from pipecat.frames.frames import Frame, TTSSpeakFrame

from pipelines.call_control import CallControl


class DTMFActions:
    """Runs the campaign's action for a pressed key; other keys pass on to the LLM side."""

    def __init__(self, mapping: Mapping[str, str], control: CallControl):
        self._mapping = mapping
        self._control = control

    async def on_key(self, key: str, push: Callable[[Frame], Awaitable[None]]) -> None:
        """`push` sends a frame downstream from where the key was seen."""
        action = self._mapping.get(key)
        if action is None:
            return
        logger.info(f"DTMF {key}: {action}")
        if action == "transfer_to_human":
            await self._control.transfer_to_human(f"caller pressed {key}")
        elif action == "end_call":
            await self._control.end_call("not_interested", f"caller pressed {key} to end")
        elif action == "repeat":
            last = next((t["text"] for t in reversed(self._control.session.transcript)
                         if t["role"] == "assistant"), None)
            if last:
                await push(TTSSpeakFrame(last, append_to_context=False))
