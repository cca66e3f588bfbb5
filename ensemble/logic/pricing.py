"""What model calls cost, and a run's spending against its budget.

Pure and deterministic: the workflow keeps a run's spending with these, so they do no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ensemble.spec import BudgetSpec, Price, Usage


class PriceUnknown(ValueError):
    """A budget in money met a model its price table does not list."""


def price_of(model: str, prices: dict[str, Price]) -> Price | None:
    """The price of 'provider:model': listed exactly, else under 'provider:*', else '*'."""
    provider = model.split(":", 1)[0]
    return prices.get(model) or prices.get(f"{provider}:*") or prices.get("*")


def cost_usd(model: str | None, usage: Usage, prices: dict[str, Price]) -> float:
    price = price_of(model or "", prices)
    if price is None:
        listed = ", ".join(sorted(prices)) or "none"
        raise PriceUnknown(
            f"the budget is in usd but budget.prices has no price for model '{model}' (listed: {listed});"
            f" add '{model}', '{(model or '?').split(':', 1)[0]}:*' or '*'"
        )
    return (usage.prompt_tokens * price.prompt + usage.completion_tokens * price.completion) / 1_000_000


@dataclass
class Spending:
    """A run's model use so far: tokens and, when the budget is in money, USD."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    usd: float = 0.0
    calls: int = field(default=0)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, model: str | None, usage: Usage, budget: BudgetSpec | None) -> None:
        self.prompt_tokens += usage.prompt_tokens
        self.completion_tokens += usage.completion_tokens
        self.calls += 1
        if budget is not None and budget.usd is not None:
            self.usd += cost_usd(model, usage, budget.prices)

    def usage(self) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens, total_tokens=self.tokens
        )

    def add_spent(self, usage: Usage, usd: float) -> None:
        """Count a subtask's model use (already priced by its own run)."""
        self.prompt_tokens += usage.prompt_tokens
        self.completion_tokens += usage.completion_tokens
        self.usd += usd
        self.calls += 1

    def remaining(self, budget: BudgetSpec | None) -> BudgetSpec | None:
        """The part of `budget` not spent yet, for a subtask's own run (zero when it is spent: the
        subtask's first model call then stops, or waits at its budget gate)."""
        if budget is None:
            return None
        update: dict = {}
        if budget.tokens is not None:
            update["tokens"] = max(budget.tokens - self.tokens, 0)
        if budget.usd is not None:
            update["usd"] = max(budget.usd - self.usd, 0.0)
        return budget.model_copy(update=update)

    def exhausted(self, budget: BudgetSpec | None) -> str | None:
        """Why the budget allows no further model calls, or None while it does."""
        if budget is None:
            return None
        if budget.tokens == 0 or budget.usd == 0:
            return "nothing was left of the run's budget when this subtask or chat started"
        if budget.tokens is not None and self.tokens >= budget.tokens:
            return f"the run has used {self.tokens} of its {budget.tokens} tokens"
        if budget.usd is not None and self.usd >= budget.usd:
            return f"the run has spent ${self.usd:.4f} of its ${budget.usd:.4f}"
        return None
