"""Frozen tables of defaults for compact run requests (ensemble.spec.compact_run), by version.

Data, not code: never edit a version once a release has written it (a replay reads runs recorded
with it). A release that changes a default adds a version: `derive(RunRequest)` prints the new
table, and tests/spec/test_compact_run.py keeps the latest equal to the models.
"""

from typing import Any

_V1: dict[str, dict[str, Any]] = {
    "RunRequest": {
        "one": {"flow": "FlowSpec", "asks_again": "AskedAgain"},
        "defaults": {
            "input": None,
            "task_queue": "ensemble",
            "inbox": True,
            "reuse": {},
            "idempotency_keys": {},
            "origin": None,
            "asks_again": None,
            "inline_limit": None,
        },
        "each": {"reuse": "AgentResult"},
    },
    "FlowSpec": {
        "defaults": {
            "description": "",
            "version": 1,
            "input_schema": None,
            "imports": [],
            "agents": [],
            "state": {},
            "output": None,
            "example_input": None,
            "task_queue": None,
            "tools": [],
            "mcp_servers": [],
            "llm": {},
            "budget": None,
            "versioning": None,
            "identity": "proven",
        },
        "many": {
            "agents": "AgentSpec",
            "steps": "@agent|sequence|parallel|chat|supervisor|gate",
            "tools": "ToolSpec",
            "mcp_servers": "McpServerSpec",
        },
        "each": {"state": "StateKey", "llm": "LlmSpec"},
        "one": {"budget": "BudgetSpec"},
    },
    "AgentSpec": {
        "defaults": {
            "description": "",
            "role": "",
            "kind": "function",
            "handler": None,
            "url": None,
            "headers": {},
            "input_schema": None,
            "output_schema": None,
            "timeout_s": 60.0,
            "schedule_to_close_s": None,
            "heartbeat_s": None,
            "retry": {
                "initial_interval_s": 1.0,
                "backoff_coefficient": 2.0,
                "max_interval_s": 30.0,
                "max_attempts": 3,
                "non_retryable_errors": [],
            },
            "tools": [],
            "effect": "read",
            "task_queue": None,
            "model": None,
            "llm": None,
            "tool_specs": [],
            "fast": False,
        },
        "one": {"retry": "RetrySpec", "llm": "LlmSpec"},
        "many": {"tool_specs": "ToolSpec"},
    },
    "RetrySpec": {
        "defaults": {
            "initial_interval_s": 1.0,
            "backoff_coefficient": 2.0,
            "max_interval_s": 30.0,
            "max_attempts": 3,
            "non_retryable_errors": [],
        }
    },
    "LlmSpec": {
        "defaults": {
            "instructions": "",
            "prompt": None,
            "output_model": None,
            "max_tool_turns": 8,
            "max_reasks": 2,
            "temperature": None,
            "max_tokens": 2048,
        }
    },
    "ToolSpec": {
        "defaults": {
            "description": "",
            "kind": "function",
            "handler": None,
            "server": None,
            "remote": None,
            "approval": None,
            "url": None,
            "headers": {},
            "input_schema": None,
            "effect": "read",
            "timeout_s": 30.0,
        },
        "one": {"approval": "ToolApproval"},
    },
    "ToolApproval": {"defaults": {"quorum": 1, "timeout": None}},
    "StateKey": {"defaults": {"reducer": "replace", "default": None, "description": ""}},
    "AgentStep": {
        "defaults": {
            "name": None,
            "input": None,
            "output": None,
            "fallback": None,
            "compensate": None,
            "compensate_input": None,
        }
    },
    "SequenceStep": {"many": {"sequence": "@agent|sequence|parallel|chat|supervisor|gate"}},
    "ParallelStep": {"one": {"parallel": "ParallelSpec"}, "defaults": {"output": None}},
    "ParallelSpec": {
        "defaults": {
            "branches": [],
            "for_each": None,
            "as": "item",
            "do": None,
            "max_concurrency": None,
            "join": {"policy": "all", "quorum": None, "deadline_s": None},
            "merge": {
                "strategy": "collect",
                "vote_field": "vote",
                "confidence_field": None,
                "weights": {},
                "order": [],
                "veto_value": "reject",
                "tie_break": "fail",
                "tie_value": None,
                "adjudicator": None,
                "adjudicator_input": None,
            },
            "on_conflict": None,
        },
        "many": {"branches": "@agent|sequence|parallel|chat|supervisor|gate"},
        "one": {"do": "@agent|sequence|parallel|chat|supervisor|gate", "join": "JoinSpec", "merge": "MergeSpec"},
    },
    "ChatStep": {"one": {"chat": "ChatSpec"}, "defaults": {"output": None}},
    "ChatSpec": {
        "defaults": {
            "selector": "round_robin",
            "topic": None,
            "max_turns": 12,
            "until": {"keyword": None, "consensus": False},
            "window": 20,
            "turns_per_run": 50,
        },
        "one": {"until": "ChatUntil"},
    },
    "ChatUntil": {"defaults": {"keyword": None, "consensus": False}},
    "SupervisorStep": {"one": {"supervisor": "SupervisorSpec"}, "defaults": {"output": None}},
    "SupervisorSpec": {
        "defaults": {
            "planner_input": None,
            "fallbacks": {},
            "max_subtasks": 20,
            "max_depth": 10,
            "max_parallel": None,
            "max_replans": 1,
            "assembler": None,
            "assembler_input": None,
        }
    },
    "GateStep": {"one": {"gate": "GateSpec"}, "defaults": {"output": None}},
    "GateSpec": {
        "defaults": {
            "when": None,
            "approvers": [],
            "quorum": 1,
            "timeout": None,
            "escalate": [],
            "on_timeout": "fail",
            "on_reject": "fail",
            "changes_to": None,
            "max_rounds": 3,
            "show": None,
        },
        "one": {"when": "GateWhen"},
        "many": {"escalate": "GateTier"},
    },
    "GateWhen": {
        "defaults": {
            "equals": None,
            "not_equals": None,
            "gt": None,
            "gte": None,
            "lt": None,
            "lte": None,
            "in": None,
            "contains": None,
        }
    },
    "GateTier": {"defaults": {"quorum": 1, "timeout": None}},
    "@agent|sequence|parallel|chat|supervisor|gate": {
        "union": {
            "agent": "AgentStep",
            "sequence": "SequenceStep",
            "parallel": "ParallelStep",
            "chat": "ChatStep",
            "supervisor": "SupervisorStep",
            "gate": "GateStep",
        }
    },
    "JoinSpec": {"defaults": {"policy": "all", "quorum": None, "deadline_s": None}},
    "MergeSpec": {
        "defaults": {
            "strategy": "collect",
            "vote_field": "vote",
            "confidence_field": None,
            "weights": {},
            "order": [],
            "veto_value": "reject",
            "tie_break": "fail",
            "tie_value": None,
            "adjudicator": None,
            "adjudicator_input": None,
        }
    },
    "McpServerSpec": {"defaults": {"command": None, "env": {}, "url": None, "headers": {}, "timeout_s": 30.0}},
    "BudgetSpec": {
        "defaults": {
            "tokens": None,
            "usd": None,
            "prices": {},
            "approvers": [],
            "quorum": 1,
            "timeout": None,
            "raise_tokens": None,
            "raise_usd": None,
        },
        "each": {"prices": "Price"},
    },
    "Price": {},
    "AgentResult": {
        "defaults": {"output": None, "usage": None, "model": None, "refusals": [], "held": None},
        "one": {"usage": "Usage", "held": "ToolHold"},
        "many": {"refusals": "ToolRefusal"},
    },
    "Usage": {"defaults": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}},
    "ToolRefusal": {},
    "ToolHold": {"defaults": {"arguments": None, "quorum": 1, "timeout": None, "checkpoint": {}}},
    "AskedAgain": {"defaults": {"why": "", "at": None}},
}

TABLES: dict[int, dict[str, dict[str, Any]]] = {1: _V1}
