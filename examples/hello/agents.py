"""The agents of the hello flow: greeter -> word_stats, letter_stats.

Tiny and deterministic on purpose: they show how agents are written, not what agents can do.
"""

from __future__ import annotations

from pydantic import BaseModel

from ensemble import AgentContext, agent


class Person(BaseModel):
    name: str
    punctuation: str | None = None


class Greeting(BaseModel):
    text: str


class Report(BaseModel):
    """Numbers about a text, and one line for the run's log."""

    stats: dict[str, int]
    note: str


@agent(description="Greets a person by name", timeout_s=10)
def greeter(person: Person) -> Greeting:
    return Greeting(text=f"Hello, {person.name}{person.punctuation or '!'}")


@agent(description="Counts the words of a text")
def word_stats(data: Greeting, ctx: AgentContext) -> Report:
    words = data.text.split()
    return Report(
        stats={"words": len(words), "longest_word": max(len(w.strip(",.!?")) for w in words)},
        note=f"{ctx.step}: {len(words)} words",
    )


@agent(description="Counts the letters and vowels of a text")
async def letter_stats(data: Greeting) -> Report:
    letters = [c for c in data.text.lower() if c.isalpha()]
    vowels = sum(c in "aeiou" for c in letters)
    return Report(stats={"letters": len(letters), "vowels": vowels}, note=f"{len(letters)} letters, {vowels} vowels")
