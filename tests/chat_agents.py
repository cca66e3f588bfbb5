"""Deterministic agents for group chat tests: a price negotiation, fixed voters and selectors.

Participants get `{"topic", "participant", "turn", "transcript"}` and return `{"message", "vote"?}`;
selectors get `{"topic", "participants", "turn", "transcript"}` and return `{"next": NAME}`. The
negotiators read the topic `{"item", "list_price"}`.
"""

from __future__ import annotations

from typing import Any

from ensemble import agent


def _votes(transcript: list[dict[str, Any]], speaker: str) -> list[Any]:
    return [m["vote"] for m in transcript if m["speaker"] == speaker]


@agent(description="Asks the list price, then comes down 10 a turn, never below the buyer's offer")
def seller(data: dict) -> dict:
    topic, asks, offers = data["topic"], _votes(data["transcript"], "seller"), _votes(data["transcript"], "buyer")
    ask = max(asks[-1] - 10, offers[-1] if offers else 0) if asks else topic["list_price"]
    return {"message": f"The {topic['item']} is yours for {ask}.", "vote": ask}


@agent(description="Offers half the list price, then goes up 10 a turn; approves once the ask is met")
def buyer(data: dict) -> dict:
    topic, asks, offers = data["topic"], _votes(data["transcript"], "seller"), _votes(data["transcript"], "buyer")
    offer = offers[-1] + 10 if offers else topic["list_price"] // 2
    if asks and offer >= asks[-1]:
        return {"message": f"APPROVED at {asks[-1]}.", "vote": asks[-1]}
    return {"message": f"I offer {offer}.", "vote": offer}


@agent(description="Always approves; says how many messages it was shown")
def yes_man(data: dict) -> dict:
    return {"message": f"I agree ({len(data['transcript'])} messages seen).", "vote": "approve"}


@agent(description="Never agrees")
def stubborn(data: dict) -> dict:
    return {"message": "No.", "vote": "reject"}


@agent(description="Takes notes; never votes")
def scribe(data: dict) -> dict:
    return {"message": f"Noted turn {data['turn']}."}


@agent(description="Selector: the participant who spoke least in the window, the last listed on a tie")
def chair(data: dict) -> dict:
    spoken = {name: 0 for name in data["participants"]}
    for message in data["transcript"]:
        spoken[message["speaker"]] += 1
    fewest = min(spoken.values())
    return {"next": [name for name in data["participants"] if spoken[name] == fewest][-1]}


@agent(description="Selector that names someone who is not in the chat")
def bad_chair(data: dict) -> dict:
    return {"next": "mallory"}
