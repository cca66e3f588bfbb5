"""Several hosts, made with network namespaces: the Temporal dev server on one, a worker on each of
two others, the Ensemble service (`starter.py serve`) on a fourth, each linked to the server's host
by a veth pair with addresses this test assigns (no traffic leaves the test's namespaces). The
service connects to the server over its link; an HTTP client on the server's host starts 50 runs
through the service's REST API and follows them on its status endpoint. One worker host's link
goes down while the runs are in flight: every run completes on the other host, no agent that
finished runs again, and the irreversible effect (a charge, deduplicated by its idempotency key as
a payment service does) happens once per run."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from ensemble.runtime import server
from tests.conftest import ROOT, run_cli
from tests.failure_agents import rows

RUNS = 50
HOLD = 4.0  # seconds a charge holds after its effect, so charges are in flight when the link goes down
NET = "10.213"  # 10.213.<link>.1 is the server's end of a link, .2 the other host's
SERVICE_PORT = 8000
FLOW = """
name: multihost
agents:
  - name: mh_tally
    handler: "tests.failure_agents:tally"
    timeout_s: 10
    retry: {initial_interval_s: 0.2, backoff_coefficient: 1, max_attempts: 30}
  - name: mh_charge
    handler: "tests.failure_agents:charge"
    effect: irreversible
    timeout_s: 10
    retry: {initial_interval_s: 0.2, backoff_coefficient: 1, max_attempts: 30}
steps:
  - name: first
    agent: mh_tally
    input: {ledger: $input.ledger, value: $input.n}
  - name: pay
    agent: mh_charge
    input: {ledger: $input.ledger, amount: $input.n, hold: $input.hold}
  - name: last
    agent: mh_tally
    input: {ledger: $input.ledger, value: $pay.charged}
output: {n: $last.value, key: $pay.key}
"""


def ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


class Hosts:
    def __init__(self, tag: str) -> None:
        self.ns = {name: f"ens-{tag}-{name}" for name in ("srv", "w1", "w2", "svc")}
        self.links = {name: (f"v{tag}{i}s", f"v{tag}{i}h", i) for i, name in enumerate(("w1", "w2", "svc"), 1)}
        self.procs: list[subprocess.Popen] = []

    def up(self) -> None:
        for ns in self.ns.values():
            made = ip("netns", "add", ns)
            if made.returncode != 0:
                raise PermissionError(made.stderr.strip())
            self._ok(ip("-n", ns, "link", "set", "lo", "up"))
        srv = self.ns["srv"]
        for host, (here, there, i) in self.links.items():
            self._ok(ip("-n", srv, "link", "add", here, "type", "veth", "peer", "name", there, "netns", self.ns[host]))
            self._ok(ip("-n", srv, "addr", "add", f"{NET}.{i}.1/24", "dev", here))
            self._ok(ip("-n", self.ns[host], "addr", "add", f"{NET}.{i}.2/24", "dev", there))
            self._ok(ip("-n", srv, "link", "set", here, "up"))
            self._ok(ip("-n", self.ns[host], "link", "set", there, "up"))

    @staticmethod
    def _ok(result: subprocess.CompletedProcess) -> None:
        assert result.returncode == 0, result.stderr

    def server_address(self, host: str) -> str:
        """The server's address on `host`'s link."""
        return f"{NET}.{self.links[host][2]}.1:7233"

    def address(self, host: str) -> str:
        """`host`'s own address on its link (reachable from the server's host)."""
        return f"{NET}.{self.links[host][2]}.2"

    def run(self, host: str, cmd: list[str], *, env: dict[str, str], log: Path) -> subprocess.Popen:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns[host], *cmd],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def reachable(self, host: str) -> bool:
        address, port = self.server_address(host).split(":")
        probe = ["ip", "netns", "exec", self.ns[host], "bash", "-c", f"echo > /dev/tcp/{address}/{port}"]
        return subprocess.run(probe, capture_output=True, timeout=10).returncode == 0

    def cut(self, host: str) -> None:
        self._ok(ip("-n", self.ns["srv"], "link", "set", self.links[host][0], "down"))

    def down(self) -> None:
        """Kill what this test started (each process by its own group, then anything still inside
        the test's namespaces, which only this test made) and delete the namespaces, which takes
        their veth pairs with them."""
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        for ns in self.ns.values():
            for pid in ip("netns", "pids", ns).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            ip("netns", "del", ns)

    def left(self) -> list[str]:
        """The test's namespaces that still exist."""
        listed = {line.split()[0] for line in ip("netns", "list").stdout.splitlines() if line.strip()}
        return sorted(listed & set(self.ns.values()))


async def wait_for(predicate, timeout: float, what: str) -> None:
    for _ in range(int(timeout / 0.1)):
        if predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout}s")


def deliveries(ledger: Path) -> int:
    return rows(ledger, "select count(*) from deliveries")[0][0] if ledger.exists() else 0


@pytest.mark.chaos
async def test_a_worker_host_cut_off_mid_run_loses_nothing_and_repeats_nothing(tmp_path):
    hosts = Hosts(uuid.uuid4().hex[:6])
    try:
        hosts.up()
    except PermissionError as err:
        hosts.down()
        pytest.skip(
            f"the kernel refuses network namespaces here ({err}): the multi-host test needs root and `ip netns`"
        )
    except BaseException:
        hosts.down()
        raise
    try:
        queue, ledger, out = f"mh-{uuid.uuid4().hex[:8]}", tmp_path / "ledger.db", tmp_path / "report.json"
        info = server.ServerInfo(pid=0, port=7233, ui_port=8233, db=str(tmp_path / "temporal.db"), log="")
        cmd = server.command(info)
        cmd[cmd.index("--ip") + 1] = "0.0.0.0"  # every link of the server's host
        cmd += ["--headless"]
        base = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "ENSEMBLE_", "OTEL_"))}
        base.update(PYTHONPATH=str(ROOT), ENSEMBLE_HOME=str(tmp_path / "home"))
        hosts.run("srv", cmd, env=base, log=tmp_path / "server.log")

        # Only deployed code runs: the workers are deployed with the flow file, and the service
        # finds it on its flow path (it starts flows by name only).
        flows = tmp_path / "flows"
        flows.mkdir()
        (flows / "multihost.flow.yaml").write_text(FLOW)
        # The service's callers: ops, with a local key (`keys init`), a bearer token (`keys token`)
        # and the role to start this flow and read runs.
        made = run_cli(["keys", "init", "ops"], base)
        assert made.returncode == 0, made.stderr
        token = run_cli(["keys", "token", "ops", "--ttl", "900"], base)
        assert token.returncode == 0, token.stderr
        roles = tmp_path / "roles.yaml"
        roles.write_text('users:\n  ops: [read, "start:multihost"]\n')
        await wait_for(
            lambda: hosts.reachable("w1") and hosts.reachable("w2") and hosts.reachable("svc"),
            60,
            "the server on every link",
        )

        workers = {}
        for host in ("w1", "w2"):
            env = {**base, "TEMPORAL_ADDRESS": hosts.server_address(host), "ENSEMBLE_TASK_QUEUE": queue}
            cmd = [sys.executable, "worker.py", "--flows", str(flows / "multihost.flow.yaml")]
            workers[host] = hosts.run(host, cmd, env=env, log=tmp_path / f"worker-{host}.log")
        service_env = {
            **base,
            "TEMPORAL_ADDRESS": hosts.server_address("svc"),
            "ENSEMBLE_TASK_QUEUE": queue,
            "ENSEMBLE_FLOW_PATH": str(flows),
            "ENSEMBLE_SERVICE_ROLES": str(roles),
            "ENSEMBLE_SERVICE_RATE_START": f"{RUNS}/60",
        }
        serve = [sys.executable, "starter.py", "serve", "--host", hosts.address("svc"), "--port", str(SERVICE_PORT)]
        service = hosts.run("svc", [*serve, "--log-level", "warning"], env=service_env, log=tmp_path / "service.log")
        # The HTTP client runs on the server's host, the one host linked to every other: its
        # requests reach the service over the service host's link, and only through the API.
        url = f"http://{hosts.address('svc')}:{SERVICE_PORT}"
        args = [url, token.stdout.strip(), "multihost", str(ledger), str(RUNS), str(HOLD), f"mh-{queue}", str(out)]
        client_cmd = [sys.executable, "-m", "tests.deploy.netns_http_client", *args]
        client = hosts.run("srv", client_cmd, env=base, log=tmp_path / "client.log")

        # Mid-run: charges are holding (done, not yet reported) on both hosts when w1's link goes down.
        await wait_for(
            lambda: deliveries(ledger) >= RUNS // 2 or client.poll() is not None, 120, "half the charges in flight"
        )
        assert client.poll() is None, (tmp_path / "client.log").read_text()[-3000:]
        hosts.cut("w1")
        assert not hosts.reachable("w1") and hosts.reachable("w2") and hosts.reachable("svc")
        await wait_for(lambda: client.poll() is not None, 200, "every run to end")
        logs = "\n".join((tmp_path / f).read_text()[-2000:] for f in ("client.log", "service.log"))
        assert client.returncode == 0, logs
        assert service.poll() is None, f"the service died: {logs}"
        assert workers["w2"].poll() is None, "the worker on the connected host died"
        w1, w2 = (f"{workers[h].pid}@" for h in ("w1", "w2"))
    finally:
        hosts.down()
    assert not hosts.left(), f"namespaces left behind: {hosts.left()}"

    report = json.loads(out.read_text())
    assert len(report) == RUNS
    failed = {r: (v["status"], v["output"]) for r, v in report.items() if not v["ok"]}
    assert not failed, failed
    # The service started every run under the id the client chose, on the workers' queue.
    assert sorted(report) == sorted(f"mh-{queue}-{i}" for i in range(RUNS))
    # Both hosts did work (the retried charges below finished on w2).
    identities = [s["identity"] for v in report.values() for s in v["steps"].values()] + [
        t for v in report.values() for t in v["workflow_tasks"]
    ]
    assert any(i.startswith(w1) for i in identities) and any(i.startswith(w2) for i in identities)
    # No agent that finished ran again: for every step, each attempt executed at most once and the
    # last one executed is the attempt that completed it (an attempt lost on the cut host, or
    # handed to it after the cut and never executed, is retried; a finished one never runs again).
    # The status endpoint's attempt count agrees with the history's.
    executed: dict[tuple[str, str], list[int]] = {}
    for run_id, step, attempt in rows(ledger, "select run_id, step, attempt from execs order by id"):
        executed.setdefault((run_id, step), []).append(attempt)
    for run_id, v in report.items():
        for step in ("first", "pay", "last"):
            attempts, done = executed[(run_id, step)], v["steps"][step]["attempt"]
            assert len(set(attempts)) == len(attempts) and max(attempts) == done == v["attempts"][step], (
                run_id,
                step,
                attempts,
                v["steps"][step],
                v["attempts"],
            )
    retried = [r for r, v in report.items() if v["steps"]["pay"]["attempt"] > 1]
    assert retried, "no charge was in flight on the cut host: the cut tested nothing"
    assert all(report[r]["steps"]["pay"]["identity"].startswith(w2) for r in retried)
    # The irreversible effect happened once per run, under the one key each run presented.
    assert rows(ledger, "select count(*), count(distinct run_id) from effects") == [(RUNS, RUNS)]
    assert all(n == 1 for _, n in rows(ledger, "select run_id, count(distinct key) from deliveries group by run_id"))
    assert sorted(v["output"]["key"] for v in report.values()) == sorted(f"{r}/pay" for r in report)
    print(
        f"\nmulti-host: {RUNS} runs started and followed through the service, {len(retried)} charges retried "
        f"on w2 after w1's link went down, {deliveries(ledger)} deliveries, {RUNS} effects"
    )
