"""Helpers shared by the LLM roles: message building and answer extraction."""

from __future__ import annotations

import re
from collections.abc import Sequence

from agentgraph import ChatMessage, Message

_ANSWER = re.compile(r"(?im)^\W*(?:final\s+)?answer\s*:\s*(.+?)\s*$")


def chat(system: str | None, user: str) -> list[ChatMessage]:
    msgs = [ChatMessage("system", system)] if system else []
    msgs.append(ChatMessage("user", user))
    return msgs


def extract_answer(text: str) -> str:
    """The text after the last ``Answer:`` line, else the whole text, stripped."""
    found = _ANSWER.findall(text)
    return found[-1].strip() if found else text.strip()


def format_candidates(inputs: Sequence[Message]) -> str:
    """Numbered candidate answers from the successful inputs."""
    ok = [m for m in inputs if m.ok]
    return "\n".join(f"{i}. {m.content.strip()}" for i, m in enumerate(ok, 1))
