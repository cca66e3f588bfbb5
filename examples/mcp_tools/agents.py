"""The agent of the mcp_tools flow: `price_in` prices an order in the buyer's currency with the
`convert` tool of the bundled MCP server (server.py).

Without a model it is a plain function that calls the tool itself (offline, deterministic); with
ENSEMBLE_LLM set on the worker it is the model-backed version of the flow's `llm:` section, and the
model calls the same tool, under the same allow-list.
"""

from __future__ import annotations

from pydantic import BaseModel

from ensemble import AgentContext, agent
from ensemble.activities.mcp import call_tool


class Order(BaseModel):
    item: str
    amount: float
    currency: str
    buyer_currency: str


class Price(BaseModel):
    item: str
    amount: float
    currency: str
    note: str


@agent(description="Prices an order in the buyer's currency", tools=["convert"], timeout_s=60)
async def price_in(order: Order, ctx: AgentContext) -> Price:
    converted = await call_tool(
        "rates",
        "convert",
        {"amount": order.amount, "currency_from": order.currency, "currency_to": order.buyer_currency},
        who=f"agent '{ctx.agent}'",
    )
    return Price(
        item=order.item,
        amount=converted["amount"],
        currency=converted["currency"],
        note=f"{order.amount:g} {order.currency} at {converted['rate']:g}",
    )
