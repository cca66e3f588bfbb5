"""A long group chat of model-backed participants: how big does any one run's history get?

    python -m bench.longchat [--turns 1000] [--reply-bytes 400] [--turns-per-run 50] [--window 20] [--varied]

It starts what a user's machine runs: the embedded Temporal server (in a temporary state
directory, so with the local payload store on), the loopback model server (bench/modelserver.py)
answering every participant with a `{"message": ...}` of `reply-bytes` characters, and an in-process
worker. One run of a flow whose only step is a group chat of two `llm` participants that never
agree, so it takes every turn; then every run of the chat workflow (it continues as new every
`turns-per-run` turns) and the flow run itself are read back, and the figures printed:
turns taken, model calls paid, the largest history of any run (bytes, events), the chat's total,
and how much of it went by reference to the payload store. Target (issue: long conversations): no
run's history over 5 MB at 1,000 turns. Writes bench/out/longchat.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LIMIT_BYTES = 5 * 1024 * 1024


def chat_flow(turns: int, turns_per_run: int, window: int) -> dict[str, Any]:
    schema = {"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]}
    participant = {
        "kind": "llm",
        "model": "openai:bench-model",
        "llm": {
            "instructions": "You are one side of a long negotiation. Answer with your next message.",
            "prompt": "{participant} turn {turn}\nTopic: {topic}\nSo far: {transcript}",
            "max_tokens": 1024,
        },
        "output_schema": schema,
    }
    return {
        "name": "bench_long_chat",
        "agents": [{"name": "seller", **participant}, {"name": "buyer", **participant}],
        "steps": [
            {
                "name": "talk",
                "chat": {
                    "participants": ["seller", "buyer"],
                    "topic": "$input.topic",
                    "max_turns": turns,
                    "turns_per_run": turns_per_run,
                    "window": window,
                },
            }
        ],
    }


async def history_size(client: Any, workflow_id: str, run_id: str | None = None) -> dict[str, Any]:
    """Bytes and events of one run's history, and how many payloads in it are references."""
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    events = [e async for e in handle.fetch_history_events()]
    refs = sum(1 for e in events for p in _payloads(e) if p.external_payloads)
    return {"bytes": sum(e.ByteSize() for e in events), "events": len(events), "references": refs}


def _payloads(event: Any) -> list[Any]:
    """Every Payload message anywhere in an event (walks the protobuf)."""
    from temporalio.api.common.v1 import Payload

    found: list[Any] = []

    def walk(msg: Any) -> None:
        for field, value in msg.ListFields():
            if field.type != field.TYPE_MESSAGE:
                continue
            if hasattr(value, "ListFields"):
                items = [value]
            elif field.message_type.GetOptions().map_entry:
                items = list(value.values())
            else:
                items = list(value)
            for item in items:
                if isinstance(item, Payload):
                    found.append(item)
                elif hasattr(item, "ListFields"):
                    walk(item)

    walk(event)
    return found


async def measure(
    turns: int, reply_bytes: int, turns_per_run: int, window: int, home: Path, varied: bool = False
) -> dict[str, Any]:
    from bench.modelbound import ModelServerProcess
    from ensemble.authoring.flows import parse_flow
    from ensemble.client import EnsembleClient
    from ensemble.runtime import server

    model = ModelServerProcess(home)
    try:
        model.control(reply_bytes=reply_bytes, varied=varied)
        os.environ.update(model.worker_env())
        async with await EnsembleClient.connect() as ens, ens.worker():
            loaded = parse_flow(chat_flow(turns, turns_per_run, window), "bench long chat")
            started = time.perf_counter()
            run = await ens.start(loaded, {"topic": "the price of 10,000 lamps"})
            outcome = await ens.wait(run.run_id, until="end", timeout=3600)
            seconds = time.perf_counter() - started
            if outcome.status != "completed":
                raise RuntimeError(f"the chat run ended {outcome.status}: {outcome.error}")
            temporal = ens.temporal
            chat_id = f"{run.run_id}/talk"
            chat_runs = [
                await history_size(temporal, chat_id, ex.run_id)
                async for ex in temporal.list_workflows(f'WorkflowId = "{chat_id}"')
            ]
            flow_run = await history_size(temporal, run.run_id)
        result = outcome.result if isinstance(outcome.result, dict) else {}
        record = result.get("talk", result)
        largest = max([flow_run, *chat_runs], key=lambda h: h["bytes"])
        return {
            "turns": turns,
            "reply_bytes": reply_bytes,
            "turns_per_run": turns_per_run,
            "window": window,
            "seconds": round(seconds, 1),
            "turns_taken": record.get("turns"),
            "transcript_messages": len(record.get("transcript") or []),
            "model_calls": len(model.keys()),
            "chat_runs": len(chat_runs),
            "flow_run": flow_run,
            "largest_chat_run": max(chat_runs, key=lambda h: h["bytes"]),
            "largest_run_bytes": largest["bytes"],
            "chat_total_bytes": sum(h["bytes"] for h in chat_runs),
            "references": flow_run["references"] + sum(h["references"] for h in chat_runs),
            "limit_bytes": LIMIT_BYTES,
            "met": largest["bytes"] <= LIMIT_BYTES,
        }
    finally:
        model.stop()
        server.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.longchat", description=__doc__.split("\n\n")[0])
    p.add_argument("--turns", type=int, default=1000)
    p.add_argument("--reply-bytes", type=int, default=400, help="characters of every participant's message")
    p.add_argument("--turns-per-run", type=int, default=50, help="the chat's turns_per_run")
    p.add_argument("--window", type=int, default=20, help="the chat's window")
    p.add_argument(
        "--no-store", action="store_true", help="no payload store (ENSEMBLE_PAYLOAD_STORE=off): everything inline"
    )
    p.add_argument(
        "--varied",
        action="store_true",
        help="messages of words drawn at random (deflate about 2.3x, like prose) instead of one sentence repeated",
    )
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "out" / "longchat.json")
    args = p.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="ensemble-bench-chat-"))
    for name in ("TEMPORAL_ADDRESS", "ENSEMBLE_PAYLOAD_STORE", "ENSEMBLE_SERVER_PORT", "ENSEMBLE_UI_PORT"):
        os.environ.pop(name, None)
    os.environ["ENSEMBLE_HOME"] = str(home / "state")
    if args.no_store:
        os.environ["ENSEMBLE_PAYLOAD_STORE"] = "off"
    try:
        out = asyncio.run(measure(args.turns, args.reply_bytes, args.turns_per_run, args.window, home, args.varied))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    out["payload_store"] = not args.no_store
    out["varied"] = args.varied
    out["compression"] = os.environ.get("ENSEMBLE_PAYLOAD_COMPRESSION", "off") or "off"
    out["finished_at"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    mb = 1024 * 1024
    print(
        f"{out['turns_taken']} turns ({out['model_calls']} model calls, {out['reply_bytes']}-character messages) in "
        f"{out['seconds']} s over {out['chat_runs']} chat runs; largest history of any run "
        f"{out['largest_run_bytes'] / mb:.2f} MB (target <= 5 MB: {'met' if out['met'] else 'MISSED'}); "
        f"chat total {out['chat_total_bytes'] / mb:.2f} MB; flow run {out['flow_run']['bytes'] / 1024:.0f} KB; "
        f"{out['references']} payloads by reference{'' if out['payload_store'] else ' (no payload store)'}; wrote {args.json}"
    )
    return 0 if out["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
