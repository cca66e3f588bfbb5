"""A small MCP server shipped with Ensemble (the `mcp_tools` flow starts it over stdio):

    python server.py            # stdio
    python server.py --http 8931 # streamable HTTP on 127.0.0.1:8931/mcp

Its tools work offline from a fixed table: `convert` (read) turns an amount from one currency into
another; `list_currencies` (read) names the currencies it knows.
"""

from __future__ import annotations

import sys

from mcp.server.mcpserver import MCPServer

RATES_TO_EUR = {"EUR": 1.0, "USD": 0.92, "GBP": 1.17, "CHF": 1.05, "JPY": 0.0061}

app = MCPServer("ensemble-rates", instructions="Currency conversion from a fixed offline table.", log_level="WARNING")


@app.tool(description="Converts an amount from one currency to another (fixed offline rates)")
def convert(amount: float, currency_from: str, currency_to: str) -> dict:
    source, target = currency_from.upper(), currency_to.upper()
    for code in (source, target):
        if code not in RATES_TO_EUR:
            raise ValueError(f"unknown currency {code}: use one of {', '.join(sorted(RATES_TO_EUR))}")
    value = round(amount * RATES_TO_EUR[source] / RATES_TO_EUR[target], 2)
    return {"amount": value, "currency": target, "rate": round(RATES_TO_EUR[source] / RATES_TO_EUR[target], 6)}


@app.tool(description="The currencies `convert` knows")
def list_currencies() -> list[str]:
    return sorted(RATES_TO_EUR)


if __name__ == "__main__":
    if "--http" in sys.argv:
        app.run("streamable-http", host="127.0.0.1", port=int(sys.argv[sys.argv.index("--http") + 1]))
    else:
        app.run()
