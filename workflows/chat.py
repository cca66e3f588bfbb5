"""Group chat pattern: participants take turns on a shared transcript, picked round robin or by a
selector agent, until a keyword, a consensus of votes or `max_turns` ends it.

A chat step runs as a child workflow (`EnsembleChat`) so that a long chat continues as new on its
own history without restarting the flow run. Deterministic: only `workflow.*` APIs, no I/O."""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError
from temporalio.workflow import ParentClosePolicy

from ensemble.workflows.activity import execute_agent
from ensemble.workflows.engine import FlowRun, failure_message, pattern

with workflow.unsafe.imports_passed_through():
    from ensemble.logic.inline import inline_size, oversize_reason
    from ensemble.logic.pricing import PriceUnknown, Spending, cost_usd
    from ensemble.spec import AgentCall, AgentContext, AgentSpec, ChatStep, Usage, protocol
    from ensemble.spec.chat import ChatEnd, ChatInput, ChatMessage, ChatRecord


@pattern(ChatStep)
async def run_chat(run: FlowRun, step: ChatStep, path: str) -> dict[str, Any]:
    spec = step.chat
    names = [*spec.participants, *([spec.selector] if spec.selector != "round_robin" else [])]
    chat = ChatInput(
        spec=spec,
        agents={name: run.request.agents[name] for name in names},
        topic=run.read(spec.topic, path) if spec.topic is not None else None,
        run_id=workflow.info().workflow_id,
        flow=run.flow.name,
        path=path,
        task_queue=run.request.task_queue,
        budget=run.spending.remaining(run.budget),
        inline_limit=run.request.inline_limit,
    )
    if (size := run.too_large(chat.topic)) is not None:  # without a payload store (docs/operations.md)
        raise ApplicationError(
            f"step '{path}' (group chat) not started: "
            + run.too_large_reason("its topic", size, "give it a smaller `topic:`"),
            type="PayloadTooLarge",
            non_retryable=True,
        )
    run.running.append(path)
    try:
        record = await workflow.execute_child_workflow(
            EnsembleChat.run,
            chat,
            id=f"{workflow.info().workflow_id}/{path}",
            task_queue=run.request.task_queue,
            parent_close_policy=ParentClosePolicy.TERMINATE,  # a chat never outlives its flow run
            static_summary=f"group chat · step {path} · {', '.join(spec.participants)}",
        )
    except ChildWorkflowError as err:
        raise ApplicationError(
            f"step '{path}': {failure_message(err.cause or err)}", type="ChatFailed", non_retryable=True
        ) from err
    finally:
        run.running.remove(path)
    if record.spent is not None:
        run.spending.add_spent(record.spent, record.spent_usd)
    value = record.model_dump(exclude={"spent", "spent_usd"})
    run.write(step.output, step.step_name, value, path)
    run.completed.append(path)
    return value


def _window(chat: ChatInput) -> list[dict[str, Any]]:
    """The last `window` messages: all a turn sees of the transcript."""
    return [m.model_dump() for m in chat.transcript[-chat.spec.window :]]


def _ending(chat: ChatInput) -> tuple[ChatEnd, Any] | None:
    """Why the chat ends after its latest message (and the decision), or None to go on."""
    if not chat.transcript:
        return None
    spec, last = chat.spec, chat.transcript[-1]
    if spec.until.keyword and spec.until.keyword in last.message:
        return "keyword", None
    if spec.until.consensus:
        latest = {m.speaker: m.vote for m in chat.transcript}  # each speaker's latest vote
        votes = [latest[name] for name in spec.participants if name in latest]
        if len(votes) == len(spec.participants) and votes[0] is not None and all(v == votes[0] for v in votes):
            return "consensus", votes[0]
    if chat.turns >= spec.max_turns:
        return "max_turns", None
    return None


@workflow.defn(name=protocol.CHAT_WORKFLOW)
class EnsembleChat:
    def __init__(self) -> None:
        self._chat: ChatInput | None = None

    @workflow.run
    async def run(self, chat: ChatInput) -> ChatRecord:
        self._chat = chat
        started_at = chat.turns
        while (ending := _ending(chat)) is None:
            taken = chat.turns - started_at  # turns in this run: at least one, so every run makes progress
            if taken >= chat.spec.turns_per_run or (taken > 0 and workflow.info().is_continue_as_new_suggested()):
                await workflow.wait_condition(workflow.all_handlers_finished)
                _check_inline(chat, chat.model_dump(mode="json"), "the transcript it continues as new with")
                workflow.continue_as_new(chat)  # carries the whole transcript; raises
            await self._take_turn(chat)
        await workflow.wait_condition(workflow.all_handlers_finished)
        ended_by, decision = ending
        _check_inline(chat, [m.model_dump(mode="json") for m in chat.transcript], "its record (the whole transcript)")
        return ChatRecord(
            ended_by=ended_by,
            turns=chat.turns,
            decision=decision,
            final_message=chat.transcript[-1].message,
            transcript=chat.transcript,
            spent=chat.spent if chat.spent.total_tokens else None,
            spent_usd=chat.spent_usd,
        )

    @workflow.query
    def transcript(self) -> list[ChatMessage]:
        """Every message so far, including those of earlier runs of this chat."""
        return list(self._chat.transcript) if self._chat else []

    async def _take_turn(self, chat: ChatInput) -> None:
        turn = chat.turns + 1
        speaker = await self._next_speaker(chat, turn)
        payload = {"topic": chat.topic, "participant": speaker, "turn": turn, "transcript": _window(chat)}
        out = await _call(chat, speaker, f"{chat.path}.turn{turn}", payload, f"turn {turn}: participant")
        if not isinstance(out, dict) or not isinstance(out.get("message"), str):
            raise ApplicationError(
                f"turn {turn}: participant '{speaker}' returned {_short(out)}; a participant returns "
                '{"message": str, "vote": optional}',
                type="ChatReplyInvalid",
                non_retryable=True,
            )
        chat.transcript.append(ChatMessage(turn=turn, speaker=speaker, message=out["message"], vote=out.get("vote")))

    async def _next_speaker(self, chat: ChatInput, turn: int) -> str:
        spec = chat.spec
        if spec.selector == "round_robin":
            return spec.participants[(turn - 1) % len(spec.participants)]
        payload = {
            "topic": chat.topic,
            "participants": list(spec.participants),
            "turn": turn,
            "transcript": _window(chat),
        }
        out = await _call(chat, spec.selector, f"{chat.path}.turn{turn}.select", payload, f"turn {turn}: selector")
        choice = out.get("next") if isinstance(out, dict) else None
        if isinstance(choice, str) and choice in spec.participants:
            return choice
        said = (
            f"named '{choice}', who is not a participant"
            if isinstance(choice, str)
            else f'returned {_short(out)}, not {{"next": NAME}}'
        )
        raise ApplicationError(
            f"turn {turn}: selector '{spec.selector}' {said} (participants: {', '.join(spec.participants)})",
            type="ChatSelectorInvalid",
            non_retryable=True,
        )


async def _call(chat: ChatInput, agent_name: str, activity_id: str, payload: Any, label: str) -> Any:
    """Run one agent as an activity whose type is its name, with the options the engine gives
    every agent step (timeouts and retries from its spec); its output."""
    agent = chat.agents[agent_name]
    call = AgentCall(
        agent=agent,
        input=payload,
        context=AgentContext(run_id=chat.run_id, flow=chat.flow, step=activity_id, agent=agent.name),
    )
    _check_budget(chat, agent, activity_id)
    _check_inline(chat, payload, f"{label} '{agent.name}''s input (the last {chat.spec.window} messages)")
    try:
        result = await execute_agent(agent, call, activity_id, chat.task_queue)
    except ActivityError as err:
        raise ApplicationError(
            f"{label} '{agent.name}' failed: {failure_message(err)}", type="ChatTurnFailed", non_retryable=True
        ) from err
    if result.usage is not None:  # the chat counts its participants' model use against the run's budget
        try:
            usd = (
                cost_usd(result.model, result.usage, chat.budget.prices)
                if chat.budget and chat.budget.usd is not None
                else 0.0
            )
        except PriceUnknown as err:
            raise ApplicationError(str(err), type="PriceUnknown", non_retryable=True) from err
        chat.spent = Usage(
            **{
                k: getattr(chat.spent, k) + getattr(result.usage, k)
                for k in ("prompt_tokens", "completion_tokens", "total_tokens")
            }
        )
        chat.spent_usd += usd
    return result.output


CHAT_INLINE_PATCH = "ensemble-chat-inline-limit"


def _check_inline(chat: ChatInput, value: Any, what: str) -> None:
    """Without a payload store, fail the chat (and so its flow run, into the DLQ) when a value it is
    about to send is over what Temporal takes inline: sent, it would fail every workflow task and
    the chat would hang. With a store (`inline_limit` None) such values go by reference."""
    if chat.inline_limit is None:
        return
    size = inline_size(value)
    if size > chat.inline_limit and workflow.patched(CHAT_INLINE_PATCH):
        raise ApplicationError(
            f"chat '{chat.path}' at turn {chat.turns}: "
            + oversize_reason(what, size, chat.inline_limit, "keep messages shorter, or lower `window` or `max_turns`"),
            type="PayloadTooLarge",
            non_retryable=True,
        )


def _check_budget(chat: ChatInput, agent: AgentSpec, activity_id: str) -> None:
    """Before a model-backed participant speaks: stop the chat when the run's budget is spent."""
    if chat.budget is None or (agent.kind != "llm" and agent.llm is None):
        return
    spending = Spending(
        prompt_tokens=chat.spent.prompt_tokens, completion_tokens=chat.spent.completion_tokens, usd=chat.spent_usd
    )
    why = spending.exhausted(chat.budget)
    if why is not None:
        raise ApplicationError(
            f"turn '{activity_id}' (agent '{agent.name}') not started: the run's budget is exhausted: {why}",
            type="BudgetExhausted",
            non_retryable=True,
        )


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}…"
