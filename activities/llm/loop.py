"""The model loop of one llm agent attempt: model calls, tool calls, structured output, re-asks.

Durability: the transcript is the state. After every finished model call and tool call it is
heartbeated (`activity.heartbeat(checkpoint)`), and an attempt that Temporal retries starts from
the last checkpoint it finds in `activity.info().heartbeat_details`, so a call that finished is
not paid for or done again. What to do next is read from the transcript's last entry:

    user / complete tool results   -> call the model
    assistant with tool calls      -> run the calls that have no result yet
    assistant with a final answer  -> validate it: done, or re-ask with the validation error

Transcript entries (JSON): {"role": "user", "text"}, {"role": "assistant", "text",
"tool_calls": [{"id", "name", "arguments"}]}, {"role": "tool", "results": [{"id", "name",
"content", "is_error"}]}.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from temporalio import activity

from ensemble.activities.errors import permanent
from ensemble.activities.llm.endpoints import Endpoint
from ensemble.activities.llm.output import Output
from ensemble.activities.llm.providers import complete
from ensemble.activities.llm.tools import Outcome, run_tool
from ensemble.activities.llm.wire import Reply, Request
from ensemble.activities.scrub import clip
from ensemble.authoring.tools import ToolContext
from ensemble.logic.proofs import digest
from ensemble.spec import OUTPUT_TOOL, AgentResult, LlmSpec, ToolRefusal, ToolSpec, Usage
from ensemble.spec.llm import held_call
from ensemble.spec.records import ToolHold, ToolVerdict

CHECKPOINT_VERSION = 1
MAX_CHECKPOINT_BYTES = 1_000_000  # heartbeat details must stay well under Temporal's 2 MB payload limit
log = logging.getLogger("ensemble.llm")
tracer = trace.get_tracer("ensemble")


@dataclass
class Job:
    who: str
    endpoint: Endpoint
    agent: str
    llm: LlmSpec
    system: str
    prompt: str
    output: Output | None
    tools: dict[str, ToolSpec]  # the tools this agent may call
    run_id: str
    step: str
    key_base: str  # idempotency keys of irreversible tool calls start with this
    timeout_s: float
    verdict: ToolVerdict | None = None  # people decided about a held tool call: continue from its checkpoint


class Hold(Exception):
    """The model called a tool that needs approval: the attempt ends and the run waits at a gate."""

    def __init__(self, call: dict[str, Any], spec: ToolSpec) -> None:
        super().__init__(call["name"])
        self.call, self.spec = call, spec


class Loop:
    def __init__(self, job: Job) -> None:
        self.job = job
        self.cp = (
            self._resume()
            or self._continue()
            or {
                "v": CHECKPOINT_VERSION,
                "agent": job.agent,
                "model": job.endpoint.name,
                "transcript": [{"role": "user", "text": job.prompt}],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0},
                "calls": 0,
                "turns": 0,
                "reasks": 0,
                "refusals": [],
                "final_notice": False,
            }
        )
        # Keys of irreversible calls stay those of the first attempt when a continuation after an
        # approval runs as another activity.
        self.cp.setdefault("key_base", job.key_base)
        self.cp.setdefault("verdicts", {})
        self.cp.setdefault("billed", {"prompt_tokens": 0, "completion_tokens": 0})

    def _continue(self) -> dict[str, Any] | None:
        """After people decided about a held tool call: its checkpoint, with their verdict."""
        v = self.job.verdict
        if v is None:
            return None
        cp = copy.deepcopy(v.checkpoint)
        if cp.get("v") != CHECKPOINT_VERSION or cp.get("agent") != self.job.agent:
            raise permanent(
                f"{self.job.who}: the held tool call's checkpoint is not this agent's", kind="BadCheckpoint"
            )
        cp.setdefault("verdicts", {})[v.call_id] = v.model_dump(exclude={"checkpoint"})
        log.info("%s continues after a decision on tool call %s: %s", self.job.who, v.call_id, v.outcome)
        return cp

    def _resume(self) -> dict[str, Any] | None:
        details = activity.info().heartbeat_details
        cp = details[0] if details else None
        if (
            isinstance(cp, dict)
            and cp.get("v") == CHECKPOINT_VERSION
            and cp.get("agent") == self.job.agent
            and cp.get("model") == self.job.endpoint.name
        ):
            log.info("%s resumes from its transcript: %d model call(s) already done", self.job.who, cp["calls"])
            return cp
        return None

    # ------------------------------------------------------------ checkpoints

    def beat(self) -> None:
        details: dict[str, Any] | None = copy.deepcopy(self.cp)
        if len(json.dumps(details)) > MAX_CHECKPOINT_BYTES:
            details = None  # too big to keep: a retry starts over
        activity.heartbeat(details)

    @contextlib.asynccontextmanager
    async def alive(self) -> AsyncIterator[None]:
        """Heartbeat the latest checkpoint while a model or tool call is under way, so a long call
        does not miss the heartbeat timeout."""
        timeout = activity.info().heartbeat_timeout
        if not timeout:
            yield
            return

        async def tick() -> None:
            while True:
                await asyncio.sleep(max(timeout.total_seconds() / 3, 0.2))
                self.beat()

        ticker = asyncio.create_task(tick())
        try:
            yield
        finally:
            ticker.cancel()

    # ------------------------------------------------------------ the loop

    async def run(self) -> AgentResult:
        try:
            return await self._loop()
        except Hold as held:
            return self._held(held)

    def _held(self, held: Hold) -> AgentResult:
        """End this attempt: the workflow waits for people, then a new activity continues."""
        approval = held.spec.approval
        assert approval is not None
        result = self._result(None)
        self.cp["billed"] = dict(self.cp["usage"])  # the usage and refusals so far are reported now, once
        self.cp["refusals"] = []
        result.held = ToolHold(
            tool=held.spec.name,
            call_id=held.call["id"],
            arguments=held.call["arguments"],
            digest=digest(held_call(held.spec.name, held.call["arguments"])),
            approvers=list(approval.approvers),
            quorum=approval.quorum,
            timeout=approval.timeout,
            checkpoint=copy.deepcopy(self.cp),
        )
        log.info("%s: tool call %s (%s) waits for approval", self.job.who, held.call["id"], held.spec.name)
        return result

    async def _loop(self) -> AgentResult:
        transcript = self.cp["transcript"]
        while True:
            last = transcript[-1]
            if last["role"] == "assistant":
                if self._final_call(last) is not None or not last.get("tool_calls"):
                    done = self._evaluate(last)
                    if done is not None:
                        return done
                else:
                    await self._run_tools(len(transcript) - 1, transcript.append)
            elif last["role"] == "tool" and len(last["results"]) < len(transcript[-2]["tool_calls"]):
                await self._run_tools(len(transcript) - 2, None)
            else:
                await self._call_model()

    def _final_call(self, entry: dict[str, Any]) -> dict[str, Any] | None:
        return next((c for c in entry.get("tool_calls") or [] if c["name"] == OUTPUT_TOOL), None)

    def _result(self, output: Any) -> AgentResult:
        u, b = self.cp["usage"], self.cp.get("billed") or {}
        prompt, completion = (
            u["prompt_tokens"] - b.get("prompt_tokens", 0),
            u["completion_tokens"] - b.get("completion_tokens", 0),
        )
        usage = Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)
        refusals = [ToolRefusal(**r) for r in self.cp["refusals"]]
        return AgentResult(output=output, usage=usage, model=self.job.endpoint.name, refusals=refusals)

    def _evaluate(self, entry: dict[str, Any]) -> AgentResult | None:
        """The final answer of `entry` if it is valid; otherwise re-ask (None) or fail."""
        job, final = self.job, self._final_call(entry)
        if job.output is None:
            return self._result(entry.get("text") or "")
        try:
            return self._result(job.output.parse(final["arguments"] if final else entry.get("text") or ""))
        except ValueError as err:
            problem = str(err)
        if self.cp["reasks"] >= job.llm.max_reasks:
            raise permanent(
                f"{job.who}: the model's answer does not match the output schema after {self.cp['reasks']} re-ask(s): {problem}",
                kind="InvalidModelOutput",
            )
        self.cp["reasks"] += 1
        ask = f"Your answer does not match the required schema: {problem}. Answer again with corrected JSON only."
        log.info("%s: re-asking the model (%d of %d): %s", job.who, self.cp["reasks"], job.llm.max_reasks, problem)
        if final is not None:  # the answer came as a tool call: it is answered as one
            results = [
                {
                    "id": c["id"],
                    "name": c["name"],
                    "content": ask if c is final else "not run: you gave your final answer",
                    "is_error": True,
                }
                for c in entry["tool_calls"]
            ]
            self.cp["transcript"].append({"role": "tool", "results": results})
        else:
            self.cp["transcript"].append({"role": "user", "text": ask})
        self.beat()
        return None

    async def _call_model(self) -> None:
        job, cp = self.job, self.cp
        final = not job.tools or cp["turns"] >= job.llm.max_tool_turns
        if final and job.tools and cp["turns"] and not cp["final_notice"]:
            cp["final_notice"] = True
            cp["transcript"].append(
                {
                    "role": "user",
                    "text": f"You have used all {job.llm.max_tool_turns} tool turns. Give your final answer now, without calling tools.",
                }
            )
        request = Request(
            system=job.system,
            transcript=cp["transcript"],
            tools=list(job.tools.values()),
            output_schema=job.output.schema if job.output else None,
            final=final,
            temperature=job.llm.temperature,
            max_tokens=job.llm.max_tokens,
            timeout_s=job.timeout_s,
        )
        ep = job.endpoint
        attrs = {"ensemble.llm.provider": ep.provider, "ensemble.llm.model": ep.model, "ensemble.agent": job.agent}
        with tracer.start_as_current_span(f"llm {ep.name}", attributes=attrs) as span:
            try:
                async with self.alive():
                    reply = await complete(ep, request, job.who)
            except Exception as err:
                span.set_attribute("ensemble.outcome", getattr(err, "type", None) or type(err).__name__)
                raise
            span.set_attributes(
                {
                    "ensemble.tokens.prompt": reply.usage.prompt_tokens,
                    "ensemble.tokens.completion": reply.usage.completion_tokens,
                    "ensemble.outcome": reply.finish,
                }
            )
        self._take(reply, final)

    def _take(self, reply: Reply, final: bool) -> None:
        job, cp = self.job, self.cp
        cp["usage"]["prompt_tokens"] += reply.usage.prompt_tokens
        cp["usage"]["completion_tokens"] += reply.usage.completion_tokens
        cp["calls"] += 1
        if reply.finish == "refusal":
            self.beat()
            raise permanent(
                f"{job.who}: the model refused to answer: {clip(reply.refusal or '', 300)}", kind="ContentRefused"
            )
        if reply.finish == "length" and not reply.tool_calls:
            self.beat()
            raise permanent(
                f"{job.who}: the reply was cut off at llm.max_tokens={job.llm.max_tokens}; raise it",
                kind="OutputTruncated",
            )
        at, seen, calls = len(cp["transcript"]), set(), []
        for i, call in enumerate(reply.tool_calls):
            call_id = call.id if call.id and call.id not in seen else f"call_{at}_{i}"  # ids must tell results apart
            seen.add(call_id)
            calls.append({"id": call_id, "name": call.name, "arguments": call.arguments})
        entry = {"role": "assistant", "text": reply.text, "tool_calls": calls}
        if calls and not any(c["name"] == OUTPUT_TOOL for c in calls):
            if final:
                raise permanent(
                    f"{job.who}: the model still calls tools after its {job.llm.max_tool_turns} tool turns",
                    kind="ToolTurnsExceeded",
                )
            cp["turns"] += 1
        cp["transcript"].append(entry)
        if calls and not any(c["name"] == OUTPUT_TOOL for c in calls):
            self.beat()
        # A final answer is not heartbeated here: it is evaluated at once, and the attempt either
        # completes with it (its result is the record) or re-asks, which heartbeats. This saves a
        # heartbeat round trip to the server per model-backed step (docs/performance.md).

    async def _run_tools(self, at: int, append: Any) -> None:
        """Run the calls of the assistant entry at `at` that have no result yet, checkpointing each."""
        transcript = self.cp["transcript"]
        if append is not None:
            append({"role": "tool", "results": []})
        results = transcript[at + 1]["results"]
        done = {r["id"] for r in results}
        for index, call in enumerate(transcript[at]["tool_calls"]):
            if call["id"] in done:
                continue
            outcome = await self._tool(call, at, index)
            results.append(
                {"id": call["id"], "name": call["name"], "content": outcome.content, "is_error": outcome.is_error}
            )
            self.beat()

    async def _tool(self, call: dict[str, Any], at: int, index: int) -> Outcome:
        job = self.job
        turn = sum(1 for e in self.cp["transcript"][: at + 1] if e["role"] == "assistant")
        spec = job.tools.get(call["name"])
        with tracer.start_as_current_span(
            f"tool {call['name']}", attributes={"ensemble.tool": call["name"], "ensemble.agent": job.agent}
        ) as span:
            if spec is None:
                allowed = ", ".join(sorted(job.tools)) or "none"
                reason = f"agent '{job.agent}' may not call tool '{call['name']}' (its tools: {allowed})"
                self.cp["refusals"].append({"tool": call["name"], "reason": reason, "turn": turn})
                log.warning("%s: refused a tool call: %s", job.who, reason)
                span.set_attribute("ensemble.outcome", "refused")
                return Outcome(f"refused: {reason}", True)
            span.set_attribute("ensemble.tool.effect", spec.effect)
            if spec.approval is not None:
                decided = self._decided(call, spec, turn)
                if decided is not None:
                    span.set_attribute("ensemble.outcome", "not approved")
                    return decided
            key = f"{self.cp['key_base']}/tool{turn}.{index}" if spec.effect == "irreversible" else None
            ctx = ToolContext(
                run_id=job.run_id,
                step=job.step,
                agent=job.agent,
                tool=spec.name,
                call_id=call["id"],
                idempotency_key=key,
            )
            try:
                async with self.alive():
                    outcome = await run_tool(spec, call["arguments"], ctx, job.who)
            except Exception as err:
                span.set_attribute("ensemble.outcome", getattr(err, "type", None) or type(err).__name__)
                raise
            span.set_attribute("ensemble.outcome", "error" if outcome.is_error else "ok")
            return outcome

    def _decided(self, call: dict[str, Any], spec: ToolSpec, turn: int) -> Outcome | None:
        """A gated call: None when people approved exactly these arguments (run it), the answer
        the model gets when they did not, or Hold when nobody has decided yet."""
        verdict = self.cp["verdicts"].get(call["id"])
        if verdict is None:
            raise Hold(call, spec)
        if verdict["digest"] != digest(held_call(spec.name, call["arguments"])):
            raise permanent(
                f"{self.job.who}: the decision on tool call {call['id']} ({spec.name}) is for other arguments",
                kind="DigestMismatch",
            )
        outcome, by, comment = verdict["outcome"], verdict.get("by") or "?", verdict.get("comment") or ""
        if outcome == "approved":
            return None
        if outcome == "changes_requested":
            return Outcome(f"not run: {by} asks for changes before this call may run: {comment}", True)
        reason = f"{by} did not approve this call of '{spec.name}'" + (f": {comment}" if comment else "")
        if outcome == "timed_out" or by == "timeout":
            reason = f"nobody approved this call of '{spec.name}' in time"
        self.cp["refusals"].append({"tool": spec.name, "reason": reason, "turn": turn})
        return Outcome(f"refused: {reason}", True)
