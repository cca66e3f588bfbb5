"""The shapes of a group chat run (the `EnsembleChat` child workflow): its input, which is also the
state it carries across continue-as-new, its messages and the record it returns.

Kept out of the workflow module so that the sandbox passes it through instead of re-importing it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ensemble.spec import compact
from ensemble.spec.models import BudgetSpec, ChatSpec, Usage

ChatEnd = Literal["keyword", "consensus", "max_turns"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ChatMessage(_Strict):
    """One turn of the transcript. `vote` is null when the speaker gave none."""

    turn: int = Field(ge=1)
    speaker: str
    message: str
    vote: Any = None


class ChatInput(_Strict):
    """The chat workflow's input and the whole state it carries when it continues as new."""

    spec: ChatSpec
    agents: compact.Agents = Field(description="the participants' and the selector's specs (written compact)")
    topic: Any = None
    run_id: str = Field(description="the flow run's workflow id (agents see it in their context)")
    flow: str
    path: str = Field(description="the chat step's path in the flow")
    task_queue: str
    transcript: list[ChatMessage] = Field(default_factory=list, description="every message so far, in turn order")
    budget: BudgetSpec | None = Field(None, description="what is left of the flow run's budget for this chat")
    spent: Usage = Field(default_factory=Usage, description="the participants' model use so far")
    spent_usd: float = 0.0
    inline_limit: int | None = Field(
        None,
        description="the flow run's RunRequest.inline_limit: without a payload store, the largest value the chat "
        "sends inline (a turn's input, the transcript it continues as new with, its record)",
        exclude_if=lambda limit: limit is None,  # written as before the field when there is a store
    )

    @property
    def turns(self) -> int:
        """Turns taken so far: each turn adds exactly one message."""
        return len(self.transcript)


class ChatRecord(_Strict):
    """What a chat step writes to the run state."""

    ended_by: ChatEnd
    turns: int
    decision: Any = None
    final_message: str
    transcript: list[ChatMessage]
    spent: Usage | None = None
    spent_usd: float = 0.0
