"""Every bad input is one line and exit code 2: a seeded fuzzer over the bundled flow files, and the
specific inputs that used to end in a traceback, an `unexpected ...` or a long stall."""

from __future__ import annotations

import contextlib
import io
import json
import random
import time
from pathlib import Path

import pytest

from ensemble.cli.app import main
from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.reliability

# Not a speed target (those are figures, printed): a bound that tells a refusal from a hang or a
# blow-up (an alias bomb took 41 s, ten times more per level) even on a loaded 2-core machine.
HANG_S = 5.0

SEED = 15
MUTANTS = 320
SOURCES = sorted((ROOT / "examples").glob("*/flow.yaml"))
NOISE = [
    b"\xff",
    b"\xfe\xff",
    b"\x00",
    b"\t",
    b"&a ",
    b"*a",
    b"*b",
    b"[",
    b"{",
    b"]",
    b"}",
    b": ",
    b"- ",
    b"!!python/object:os.system ",
    b"\x1b[31m",
    b"'",
    b'"',
    b"%YAML 1.1\n",
    b"---\n",
    b"? ",
    b"|",
    b">",
    b"@",
    b"`",
    b"$",
    b"$input.",
    b"\xc3",
    b"\xe2\x82",
    b"\n  - agent: x\n",
    b"\n    input: ",
    b"steps: ",
    b"0x",
    b"1e999",
    b"-.inf",
    b"~",
    b"<<: *a\n",
]


def mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(8)
        pos = rng.randrange(len(out) + 1)
        if op == 0 and out:  # flip a byte
            out[min(pos, len(out) - 1)] = rng.randrange(256)
        elif op == 1:  # insert noise
            out[pos:pos] = rng.choice(NOISE)
        elif op == 2:  # delete a span
            del out[pos : pos + rng.randint(1, 40)]
        elif op == 3:  # truncate
            del out[pos:]
        elif op == 4:  # duplicate a line
            lines = bytes(out).split(b"\n")
            i = rng.randrange(len(lines))
            lines.insert(i, lines[i])
            out = bytearray(b"\n".join(lines))
        elif op == 5:  # swap two lines
            lines = bytes(out).split(b"\n")
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
            out = bytearray(b"\n".join(lines))
        elif op == 6:  # re-indent a line
            lines = bytes(out).split(b"\n")
            i = rng.randrange(len(lines))
            lines[i] = b" " * rng.randint(0, 7) + lines[i].lstrip()
            out = bytearray(b"\n".join(lines))
        else:  # an alias bomb or deep nesting spliced in
            extra = rng.choice(
                [alias_bomb(rng.randint(3, 9)), b"x: " + b"[" * 300 + b"]" * 300 + b"\n", b"y: " + b"{a: " * 200]
            )
            out[pos:pos] = b"\n" + extra
    return bytes(out)


def alias_bomb(levels: int) -> bytes:
    lines = [b'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [".encode() + b",".join([f"*a{i - 1}".encode()] * 9) + b"]")
    return b"\n".join(lines) + b"\n"


def validate_in_process(path: Path) -> tuple[int, str, str, float]:
    out, err = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["validate", str(path)])
        except SystemExit as exit_:  # argparse
            code = exit_.code
    return code, out.getvalue(), err.getvalue(), time.perf_counter() - started


def assert_one_line_error(code: int, stderr: str, what: str) -> None:
    assert code == 2, f"{what}: exit {code}: {stderr}"
    lines = [ln for ln in stderr.splitlines() if not ln.startswith("  also: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{what}: {stderr!r}"
    assert "Traceback" not in stderr and "unexpected" not in stderr, f"{what}: {stderr!r}"


def test_fuzzed_flow_files_are_one_line_each(tmp_path: Path, figure) -> None:
    rng = random.Random(SEED)
    originals = [p.read_bytes() for p in SOURCES]
    valid = refused = 0
    slowest, slow = 0.0, 0
    problems: list[str] = []
    for n in range(MUTANTS):
        path = tmp_path / f"mutant{n}.yaml"
        path.write_bytes(mutate(rng, rng.choice(originals)))
        code, _, stderr, took = validate_in_process(path)
        slowest = max(slowest, took)
        if code == 0:
            valid += 1
        else:
            refused += 1
            try:
                assert_one_line_error(code, stderr, path.name)
            except AssertionError as err:
                problems.append(str(err)[:300])
        if took > HANG_S:
            problems.append(f"{path.name}: took {took:.2f}s")
        slow += took > 1.0
    figure("mutated flow files", MUTANTS)
    figure("valid / refused", f"{valid} / {refused}")
    figure("tracebacks or unexpected", sum("unexpected" in p or "Traceback" in p for p in problems))
    figure("slowest validate (s)", f"{slowest:.3f}")
    figure("validates over 1 s (the target: 0; a loaded machine can add some)", slow)
    assert not problems, "\n".join(problems[:10])
    # a few exactly as a user types them
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("TEMPORAL_", "ENSEMBLE_"))}
    env["PYTHONPATH"] = str(ROOT)
    for n in range(0, MUTANTS, MUTANTS // 5):
        done = run_cli(["validate", str(tmp_path / f"mutant{n}.yaml")], env, timeout=30)
        assert "Traceback" not in done.stderr and "unexpected" not in done.stderr, done.stderr
        assert done.returncode in (0, 2), done.stderr
        if done.returncode == 2:
            assert_one_line_error(done.returncode, done.stderr, f"mutant{n} (subprocess)")


CASES = {
    "latin-1 text": (b"name: caf\xe9\nsteps: []\n", "not UTF-8"),
    "deep YAML": (b"name: x\nsteps: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested more than"),
    "deep mapping": (b"name: x\nsteps:\n" + b"".join(b"  " * i + b"k:\n" for i in range(1, 300)), "nested more than"),
    "alias bomb (515 bytes, 9 levels)": (alias_bomb(9), "expands to more than"),
    "3 MB flow": (b"name: x\nsteps: []\ndescription: '" + b"x" * 3_000_000 + b"'\n", "must be under"),
    "two-line YAML error": (b"name: x\nsteps:\n  - agent: a\n - b\n", ":4: not valid YAML"),
    "tab indent": (b"name: x\nsteps:\n\t- agent: a\n", ":3: not valid YAML"),
    "NUL byte": (b"name: x\x00\nsteps: []\n", "flow.yaml:1: not valid YAML"),
    "self-referencing alias": (b"name: x\nsteps: &s [*s]\n", "not valid YAML"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_flow_file_is_one_line(tmp_path: Path, case: str) -> None:
    data, expected = CASES[case]
    path = tmp_path / "flow.yaml"
    path.write_bytes(data)
    code, _, stderr, took = validate_in_process(path)
    assert_one_line_error(code, stderr, case)
    assert expected in stderr, stderr
    assert took < HANG_S, f"{case}: {took:.2f}s"


def test_deep_json_flow_file(tmp_path: Path) -> None:
    path = tmp_path / "flow.json"
    path.write_text('{"name": "x", "steps": ' + "[" * 100_000 + "]" * 100_000 + "}")
    code, _, stderr, _ = validate_in_process(path)
    assert_one_line_error(code, stderr, "deep JSON")


def test_bad_run_inputs_are_refused_before_a_run_starts(tmp_path: Path) -> None:
    """Inputs no worker could carry: refused in one line, exit 2, without contacting any server
    (TEMPORAL_ADDRESS points nowhere, so a run that got as far as starting would say so)."""
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("TEMPORAL_", "ENSEMBLE_"))}
    env.update(PYTHONPATH=str(ROOT), TEMPORAL_ADDRESS="127.0.0.1:1", ENSEMBLE_HOME=str(tmp_path / "home"))
    deep = tmp_path / "deep.json"
    deep.write_text(json.dumps({"text": "x", "n": json.loads("[" * 200 + "]" * 200)}))
    latin = tmp_path / "doc.txt"
    latin.write_bytes(b"Vertrag \xfcber 10 \x80\n")
    huge = tmp_path / "huge.txt"
    huge.write_bytes(b"a" * (3 * 2**20))
    cases = [
        (["run", "hello", "--input", "@" + str(deep)], "nested more than"),
        (["run", "hello", "--input", "[" * 2000 + "]" * 2000], "nested"),
        (["run", "document_pipeline", "--input", "@" + str(latin)], "not UTF-8"),
        (["run", "document_pipeline", "--input", "@" + str(huge)], "MiB"),
        (["approve", "some-run", "--gate", "legal", "--by", ""], "--by"),
        (["approve", "some-run", "--gate", "legal", "--by", "  "], "--by"),
    ]
    for args, expected in cases:
        done = run_cli(args, env, timeout=60)
        assert_one_line_error(done.returncode, done.stderr, " ".join(args)[:80])
        assert expected in done.stderr, done.stderr


def test_status_view_escapes_terminal_sequences() -> None:
    """Agent output and errors reach a terminal with control characters written out."""
    from rich.console import Console

    from ensemble.runs.status import render
    from ensemble.spec import RunStatusView, StepRecord

    evil = "ok\x1b[2J\x1b]0;pwned\x07\rINJECT\x9b31m"
    view = RunStatusView(
        run_id="r\x1b[5m",
        flow="f",
        status="failed",
        error=evil,
        steps=[
            StepRecord(name="s", agent="a", status="completed", summary=evil),
            StepRecord(name="t", agent="b", status="failed", error=evil),
        ],
    )
    out = io.StringIO()
    Console(file=out, force_terminal=True, width=200, color_system="standard").print(render(view, width=200))
    text = out.getvalue()
    for raw in ("\x1b[2J", "\x1b]0;", "\x07", "\rINJECT", "\x9b", "\x1b[5m"):
        assert raw not in text, repr(raw)
    assert "\\x1b[2J" in text and "\\x0dINJECT" in text
