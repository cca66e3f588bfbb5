"""Parallel pattern: branches (or one branch per item of a list) run concurrently, are joined under
a policy, their state writes are combined through reducers (conflicts surfaced and adjudicated),
and their results are merged into one decision record."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from ensemble.workflows.engine import FlowRun, pattern

with workflow.unsafe.imports_passed_through():
    from ensemble.logic.merge import Branch, MergeError, merge
    from ensemble.logic.state import StateError, resolve
    from ensemble.spec import AgentStep, ParallelStep


def _plan(run: FlowRun, step: ParallelStep, path: str) -> list[tuple[str, str, Any, dict[str, Any]]]:
    """(branch name, path prefix, step, branch-local state) for every branch, in declared order."""
    spec = step.parallel
    if spec.for_each is None:
        return [(b.step_name, f"{path}.", b, {}) for b in spec.branches]
    items = run.read(spec.for_each, path)
    if not isinstance(items, list):
        raise ApplicationError(
            f"step '{path}': for_each {spec.for_each} is not a list", type="StateError", non_retryable=True
        )
    return [
        (f"{i}", f"{path}[{i}].", spec.do, {spec.as_: item, f"{spec.as_}_index": i}) for i, item in enumerate(items)
    ]


def _needed(step: ParallelStep, count: int) -> int:
    join = step.parallel.join
    return {"quorum": join.quorum or count, "first_success": 1}.get(join.policy, count)


@pattern(ParallelStep)
async def run_parallel(run: FlowRun, step: ParallelStep, path: str) -> Any:
    spec = step.parallel
    plan = _plan(run, step, path)
    need = min(_needed(step, len(plan)), len(plan))
    limit = asyncio.Semaphore(spec.max_concurrency or max(len(plan), 1))
    forks = [run.fork(local) for _, _, _, local in plan]

    async def branch(i: int) -> Any:
        async with limit:
            return await forks[i].run_step(plan[i][2], plan[i][1])

    tasks = {asyncio.ensure_future(branch(i)): i for i in range(len(plan))}
    timer = (
        asyncio.ensure_future(workflow.sleep(cast(float, spec.join.deadline_s)))
        if spec.join.policy == "deadline"
        else None
    )
    outcomes: dict[int, Branch] = {}
    agent_of = [s.agent if isinstance(s, AgentStep) else name for name, _, s, _ in plan]
    succeeded = 0
    try:
        while tasks and (succeeded < need or spec.join.policy in ("all", "deadline")):
            waiting = set(tasks) | ({timer} if timer else set())
            done, _ = await workflow.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if timer in done:
                break
            for task in sorted(done, key=lambda t: tasks[t]):  # declared order within one wake-up
                i = tasks.pop(task)
                try:
                    outcomes[i] = Branch(plan[i][0], agent_of[i], "completed", output=task.result())
                    succeeded += 1
                except ApplicationError as err:
                    if spec.join.policy == "all":
                        raise ApplicationError(
                            f"step '{path}': branch '{plan[i][0]}' failed under join policy 'all': {err.message}",
                            type="BranchFailed",
                            non_retryable=True,
                        ) from err
                    outcomes[i] = Branch(plan[i][0], agent_of[i], "failed", error=err.message)
            if spec.join.policy in ("quorum", "first_success") and succeeded + len(tasks) < need:
                failed = [b.name for b in outcomes.values() if b.status == "failed"]
                raise ApplicationError(
                    f"step '{path}': {need} successful branches needed, at most {succeeded + len(tasks)} possible "
                    f"(failed: {', '.join(failed)})",
                    type="QuorumNotReached",
                    non_retryable=True,
                )
    finally:
        for task in [*tasks, *([timer] if timer else [])]:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
    for i in tasks.values():
        outcomes[i] = Branch(plan[i][0], agent_of[i], "missing")
    branches = [outcomes[i] for i in range(len(plan))]
    conflicts = await _combine_writes(run, step, path, plan, forks, branches)
    try:
        decision = merge(spec.merge, branches)
    except MergeError as err:
        raise ApplicationError(f"step '{path}': {err}", type="MergeUnsettled", non_retryable=True) from err
    record = {**decision.record, "conflicts": conflicts}
    if decision.needs_adjudication:
        record = await _adjudicate(run, step, path, record, decision.ballots)
    run.write(step.output, step.step_name, record, path)
    run.completed.append(path)
    return record


async def _combine_writes(
    run: FlowRun, step: ParallelStep, path: str, plan: list, forks: list[FlowRun], branches: list[Branch]
) -> list[dict[str, Any]]:
    """Apply the completed branches' state writes to the run, in declared branch order. Keys with a
    combining reducer take every write; any other key written with different values by two
    branches is a conflict, settled by the step's `on_conflict` agent or failing the run."""
    local = {step.parallel.as_, f"{step.parallel.as_}_index"} if step.parallel.for_each else set()
    last: dict[str, list[tuple[int, Any]]] = {}
    for i, b in enumerate(branches):
        if b.status != "completed":
            continue
        for key, value in forks[i].state.journal or []:
            if key in local:
                continue
            if run.state.combines(key):
                run.write(key, key, value, path)
            else:
                writes = last.setdefault(key, [])
                writes[:] = [w for w in writes if w[0] != i] + [(i, value)]
    conflicts = []
    for key, writes in last.items():
        distinct = {json.dumps(v, sort_keys=True, default=str) for _, v in writes}
        if len(distinct) == 1:
            run.write(key, key, writes[-1][1], path)
            continue
        candidates = [{"branch": branches[i].name, "agent": branches[i].agent, "value": v} for i, v in writes]
        if not step.parallel.on_conflict:
            names = ", ".join(c["branch"] for c in candidates)
            raise ApplicationError(
                f"step '{path}': conflict on state key '{key}': branches {names} wrote different values; declare a "
                f"reducer for '{key}' or an on_conflict agent",
                type="StateConflict",
                non_retryable=True,
            )
        agent = step.parallel.on_conflict
        result = await run.call_agent(agent, f"{path}.resolve.{key}", {"key": key, "candidates": candidates})
        resolved = result.output
        value = resolved["value"] if isinstance(resolved, dict) and "value" in resolved else resolved
        run.write(key, key, value, path)
        conflicts.append(
            {
                "key": key,
                "candidates": candidates,
                "resolved_by": agent,
                "value": value,
                "reason": resolved.get("reason") if isinstance(resolved, dict) else None,
            }
        )
    return conflicts


async def _adjudicate(
    run: FlowRun, step: ParallelStep, path: str, record: dict[str, Any], ballots: list[dict[str, Any]]
) -> dict[str, Any]:
    spec = step.parallel.merge
    template = (
        spec.adjudicator_input
        if spec.adjudicator_input is not None
        else {"ballots": "$ballots", "tally": "$tally", "why": "$why"}
    )
    scope = {**run.state.values, "ballots": ballots, "tally": record["tally"], "why": record["reason"]}
    try:
        payload = resolve(template, scope)
    except StateError as err:
        raise ApplicationError(
            f"step '{path}': adjudicator_input: {err}", type="StateError", non_retryable=True
        ) from err
    result = await run.call_agent(cast(str, spec.adjudicator), f"{path}.adjudicate", payload)
    out = result.output
    vote = out.get(spec.vote_field, out.get("vote")) if isinstance(out, dict) else out
    reason = out.get("reason") if isinstance(out, dict) else None
    return {
        **record,
        "decision": vote,
        "adjudicated": True,
        "reason": f"{record['reason']}; adjudicated by '{spec.adjudicator}'" + (f": {reason}" if reason else ""),
    }
