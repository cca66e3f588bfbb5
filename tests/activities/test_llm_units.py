"""The pure parts of llm agents: prompt rendering, answer parsing, tool signatures, prices, and
flow-file validation of llm agents, tools and budgets (through the CLI, as a user meets it)."""

from __future__ import annotations

import textwrap

import pytest
from pydantic import BaseModel
from temporalio.exceptions import ApplicationError

from ensemble.activities.llm.agent import render
from ensemble.activities.llm.output import Output
from ensemble.authoring.tools import ToolContext, signature
from ensemble.logic.pricing import PriceUnknown, Spending, price_of
from ensemble.spec import BudgetSpec, Price, Usage
from tests.conftest import run_cli
from tests.llm_agents import Triage


def test_prompt_placeholders_read_the_step_input():
    data = {"text": "Hello", "fields": {"total": {"value": 12}}, "items": [{"n": 1}, {"n": 2}], "notes": None}
    assert render("Doc: {text} / {fields.total.value} / {items.*.n}", data, "a") == "Doc: Hello / 12 / [\n  1,\n  2\n]"
    assert (
        render('Keep {"json": 1} and {{braces}}; {missing?}{notes?}!', data, "a") == 'Keep {"json": 1} and {braces}; !'
    )
    assert render("{notes}", data, "a") == "null"
    assert render(None, "plain text", "a") == "plain text"
    assert render(None, {"a": 1}, "a") == 'Input:\n{\n  "a": 1\n}'
    with pytest.raises(ApplicationError, match=r"prompt placeholder \{nope\} is not in the step input") as err:
        render("{nope}", data, "agent 'a'")
    assert err.value.non_retryable


def test_answers_are_parsed_from_json_fences_and_prose_and_validated():
    out = Output.of_model(Triage)
    assert out.parse('```json\n{"label": "billing", "priority": 1}\n```') == {"label": "billing", "priority": 1}
    assert out.parse('Sure! {"label": "other", "priority": 0} Hope that helps.') == {"label": "other", "priority": 0}
    with pytest.raises(ValueError, match="the reply is not valid JSON"):
        out.parse("billing, priority one")
    with pytest.raises(
        ValueError, match="label: Input should be 'billing', 'outage' or 'other'; priority: Field required"
    ):
        out.parse({"label": "x"})
    listed = Output.of_schema({"type": "array", "items": {"type": "string"}})
    assert listed.wrapped and listed.schema["properties"]["value"]["type"] == "array"
    assert listed.parse({"value": ["a", "b"]}) == ["a", "b"]
    with pytest.raises(ValueError, match=r"value.0: 3 is not of type 'string'"):
        listed.parse({"value": [3]})


class Query(BaseModel):
    order_id: str
    limit: int = 5


def test_tool_signatures_become_json_schemas():
    def plain(order_id: str, ctx: ToolContext, limit: int = 5) -> dict: ...

    def modelled(query: Query) -> dict: ...

    schema = signature(plain).schema()
    assert schema["required"] == ["order_id"] and set(schema["properties"]) == {"order_id", "limit"}
    assert schema["additionalProperties"] is False
    ctx = ToolContext(run_id="r", step="s", agent="a", tool="t")
    assert signature(plain).call_args({"order_id": "A"}, ctx) == {"order_id": "A", "limit": 5, "ctx": ctx}
    assert signature(modelled).schema() == Query.model_json_schema()
    assert signature(modelled).call_args({"order_id": "A"}, ctx) == {"query": Query(order_id="A")}


def test_prices_and_spending():
    prices = {
        "openai:gpt-4o": Price(prompt=2.5, completion=10),
        "openai:*": Price(prompt=1, completion=1),
        "*": Price(prompt=9, completion=9),
    }
    assert price_of("openai:gpt-4o", prices).prompt == 2.5
    assert price_of("openai:other", prices).prompt == 1
    assert price_of("anthropic:x", prices).prompt == 9
    budget = BudgetSpec(usd=0.02, tokens=10_000, prices=prices)
    spent = Spending()
    spent.add("openai:gpt-4o", Usage(prompt_tokens=2000, completion_tokens=1000), budget)
    assert spent.tokens == 3000 and spent.usd == pytest.approx(0.015) and spent.exhausted(budget) is None
    spent.add("openai:gpt-4o", Usage(prompt_tokens=2000, completion_tokens=0), budget)
    assert spent.exhausted(budget) == "the run has spent $0.0200 of its $0.0200"
    with pytest.raises(PriceUnknown):
        Spending().add(
            "azure:x", Usage(prompt_tokens=1), BudgetSpec(usd=1, prices={"openai:*": Price(prompt=1, completion=1)})
        )


@pytest.mark.parametrize(
    "body, expected",
    [
        (
            """
         agents:
           - name: helper
             kind: llm
             model: openai:gpt-4o-mini
             tools: [lookup_order, nope]
         steps:
           - agent: helper
         """,
            "flow.yaml:7: agents[0].tools[1]: agent 'helper' lists unknown tool 'nope': declare it under 'tools' or register it with @tool",
        ),
        (
            """
         agents:
           - name: helper
             kind: llm
             model: gpt-4o-mini
         steps:
           - agent: helper
         """,
            "flow.yaml:6: agents[0].model: model 'gpt-4o-mini' is not 'provider:model' (e.g. openai:gpt-4o-mini)",
        ),
        (
            """
         agents:
           - name: helper
             kind: llm
             model: mistral:large
         steps:
           - agent: helper
         """,
            "flow.yaml:6: agents[0].model: model 'mistral:large': the provider is one of openai, anthropic, azure, ollama",
        ),
        (
            """
         llm:
           shout: {instructions: hi}
           nobody: {instructions: hi}
         steps:
           - agent: shout
         """,
            "flow.yaml:5: llm.nobody: 'nobody' is not an agent of this flow's steps",
        ),
        (
            """
         budget: {usd: 5}
         steps:
           - agent: shout
         """,
            "flow.yaml:3: budget: a budget in usd needs prices",
        ),
        (
            """
         tools:
           - {name: final_answer, handler: tests.llm_agents:lookup_order}
         steps:
           - agent: shout
         """,
            "flow.yaml:4: tools[0]: tool name 'final_answer' is reserved",
        ),
        (
            """
         tools:
           - {name: broken, handler: tests.no_such_module:fn}
         steps:
           - agent: shout
         """,
            "flow.yaml:4: tools[0].handler: cannot load tool handler 'tests.no_such_module:fn': ModuleNotFoundError",
        ),
    ],
    ids=[
        "unknown-tool",
        "model-format",
        "provider",
        "llm-unknown-agent",
        "budget-prices",
        "reserved-tool",
        "tool-handler",
    ],
)
def test_flow_files_with_llm_mistakes_get_one_line_naming_the_place(tmp_path, body, expected):
    path = tmp_path / "flow.yaml"
    path.write_text("name: llm_check\nimports: [tests.agents, tests.llm_agents]\n" + textwrap.dedent(body).lstrip("\n"))
    result = run_cli(["validate", "--import", str(path)], env=_env())  # the mistakes need the imports to be seen
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {path.parent}/{expected}"), line


def test_a_valid_llm_flow_validates(tmp_path):
    path = tmp_path / "flow.yaml"
    path.write_text(
        textwrap.dedent("""
        name: llm_ok
        imports: [tests.llm_agents]
        tools:
          - {name: crm, kind: http, url: "http://127.0.0.1:9/crm", effect: idempotent}
        budget: {tokens: 20000}
        agents:
          - name: helper
            kind: llm
            model: anthropic:claude-sonnet-4-5
            tools: [lookup_order, crm]
            llm: {instructions: Help., prompt: "{text}", output_model: "tests.llm_agents:Triage"}
        steps:
          - agent: helper
            input: {text: $input.text}
        """)
    )
    result = run_cli(["validate", str(path)], env=_env())
    assert result.returncode == 0, result.stderr


def _env() -> dict[str, str]:
    import os

    from tests.conftest import ROOT

    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "ENSEMBLE_"))},
        "PYTHONPATH": str(ROOT),
    }
