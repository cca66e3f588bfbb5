"""A program that uses Ensemble as a library ends with its own exit code, not an abort in
interpreter teardown (ensemble.runtime.connection.EXIT_SETTLE_S)."""

from __future__ import annotations

import asyncio
import sys

PROGRAM = """
import asyncio
from ensemble import EnsembleClient

async def main():
    ensemble = await EnsembleClient.connect()
    print(isinstance(await ensemble.dead_letters(limit=1), list))  # the last thing the program does is a call

asyncio.run(main())
"""


async def _exits(env: dict[str, str], cwd: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PROGRAM, cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_a_short_program_that_ends_on_a_call_exits_cleanly_every_time(dev_server, tmp_path):
    # Three at a time on purpose: a loaded machine is where teardown used to catch the SDK's
    # threads (11 aborts in 40 exits without the wait at exit, none with it).
    env = dev_server.env()
    results: list[tuple[int, str, str]] = []
    for _ in range(10):
        results += await asyncio.gather(*(_exits(env, str(tmp_path)) for _ in range(3)))
    failed = [(code, err) for code, _, err in results if code != 0]
    assert not failed, f"{len(failed)} of {len(results)} exits failed; the first: {failed[0][0]} {failed[0][1][-600:]}"
    assert all(out.strip() == "True" for _, out, _ in results)
