"""Every name that crosses layers, defined once: the custom search attributes Ensemble keeps on its
runs (Temporal visibility), workflow, activity, update, signal and query names, and activity id
conventions, shared by the workflows that write them and the readers that read them back.
Imports nothing but temporalio.common."""

from __future__ import annotations

from typing import Any

from temporalio.common import SearchAttributeKey

# Which flow a run is of.
FLOW = SearchAttributeKey.for_keyword("EnsembleFlow")
# While a run waits on people: the names of its open gates, everyone who may decide on them now,
# and the open gates' details as JSON (what `starter.py pending` lists).
GATES = SearchAttributeKey.for_keyword_list("EnsembleGates")
APPROVERS = SearchAttributeKey.for_keyword_list("EnsembleApprovers")
PENDING = SearchAttributeKey.for_text("EnsemblePending")
# Runs seeded from another one (docs/failures.md): the failed run a redrive resumes, which takes
# that run off the dead-letter queue, and the run a fork starts from.
REDRIVE_OF = SearchAttributeKey.for_keyword("EnsembleRedriveOf")
FORK_OF = SearchAttributeKey.for_keyword("EnsembleForkOf")
# A new run that asks again after people rejected a run (`run FLOW --again RUN_ID`): the rejected run.
ASKS_AGAIN = SearchAttributeKey.for_keyword("EnsembleAsksAgain")

ALL: list[SearchAttributeKey[Any]] = [FLOW, GATES, APPROVERS, PENDING, REDRIVE_OF, FORK_OF, ASKS_AGAIN]

# ---------------------------------------------------------------- names the engine and readers share

# The flow workflow's type, and the group chat's (a child workflow).
FLOW_WORKFLOW = "EnsembleFlow"
CHAT_WORKFLOW = "EnsembleChat"
# Activities a gate runs for itself: resolving its approvers, notifying people.
RESOLVE_APPROVERS = "ensemble.approvers"
RESOLVE_APPROVER_KEYS = "ensemble.approvers.trust"
NOTIFY = "ensemble.notify"
GATE_ACTIVITIES = frozenset({RESOLVE_APPROVERS, RESOLVE_APPROVER_KEYS, NOTIFY})
# Activity id suffixes: `STEP#compensate` undoes STEP (workflows/saga.py), `STEP#fallback` runs its
# fallback agent, `STEP#N` is the Nth run of STEP in a loop (a request-changes round).
COMPENSATE_SUFFIX = "#compensate"
FALLBACK_SUFFIX = "#fallback"
# The marker Temporal's SDK records for a local activity (a `fast` agent's call).
LOCAL_ACTIVITY_MARKER = "core_local_activity"
# Updates, signals and queries of the flow workflow.
DECIDE_UPDATE = "decide"
DECISION_SIGNAL = "decision"
PENDING_QUERY = "pending"
STATE_QUERY = "state"
PROGRESS_QUERY = "progress"
RECOVERY_QUERY = "recovery"

# ---------------------------------------------------------------- payload sizes

# Temporal refuses a payload over `limit.blobSize.error` (2 MB by default; the embedded server and
# deploy/ set 1 MiB, ensemble/runtime/payloads.py INLINE_LIMIT): the workflow task that would send
# one fails, again and again, and the run would hang in `running`.
PAYLOAD_LIMIT = 1024 * 1024
# Without a payload store (docs/operations.md), the largest value in bytes of JSON a run sends
# inline (a step's input, a compensation's, a subtask's, the run's outcome): the limit less room
# for what travels with it (the agent's spec, the step's context), as for an agent's output. The
# starting client puts it in the run's request (`RunRequest.inline_limit`); with a store, large
# values go by reference.
INLINE_VALUE_LIMIT = PAYLOAD_LIMIT - 64 * 1024
# All the commands of one workflow task travel in one gRPC message, which Temporal refuses over
# 4 MiB (and terminates the run): agent inputs in flight together stay under this.
INLINE_TASK_LIMIT = 4 * 1024 * 1024 - 512 * 1024


def step_of(activity_id: str) -> str:
    """The step path an activity id belongs to (`a.b[2]#fallback` -> `a.b[2]`)."""
    return activity_id.split("#")[0]


def idempotency_key(workflow_id: str, activity_id: str) -> str:
    """The key an irreversible agent's call presents unless its run inherited one."""
    return f"{workflow_id}/{activity_id}"
