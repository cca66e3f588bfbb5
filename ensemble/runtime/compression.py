"""Compressed payloads: what Ensemble writes to a run's history, deflated (opt-in).

`ENSEMBLE_PAYLOAD_COMPRESSION=deflate` (or `deflate:MIN`, MIN bytes, default 64) makes every
process that writes payloads deflate each one of at least MIN bytes, and keep it only where that
makes it smaller. The compressed payload is `binary/ensemble-deflate-1`: its data is the original
payload (metadata and data, protobuf) as raw deflate with a preset dictionary of the words every
Ensemble payload repeats (JSON keys, encodings), so that even a step's few hundred bytes shrink.

Reading needs no setting: every Ensemble process inflates such payloads, whatever its own setting,
so compression is turned on at the clients and workers in any order once all of them run this
revision, and a run written compressed stays readable with compression turned off again. Inflating
is bounded (`MAX_INFLATED`), so a payload crafted to inflate without end is refused, not followed.

The dictionary is part of the format: a payload names the dictionary it was written with
(`-1`), and a new dictionary would be a new encoding next to this one, never a change to it.

It is done in the payload converter (`CompressingPayloadConverter`), not in a payload codec: a
codec makes the worker walk every workflow activation to find payloads even when nothing is
compressed, the converter costs one metadata lookup per payload. With encryption on, payloads are
compressed first and encrypted after (the codec runs on the converter's output).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import PydanticPayloadConverter

from ensemble.spec.errors import EnsembleError, InputError

ENV = "ENSEMBLE_PAYLOAD_COMPRESSION"
ENCODING = b"binary/ensemble-deflate-1"
DEFAULT_MIN_BYTES = 64
MAX_INFLATED = 64 * 1024 * 1024  # as large as a stored run input may be (runtime/payloads.py)
_LEVEL = 6
_WBITS = -15  # raw deflate: the payload's protobuf and (with encryption) AES-GCM check it

# The preset dictionary, version 1. Never change it: payloads written with it name it. The words
# that come last are the cheapest to refer to, so the most frequent ones are at the end.
DICTIONARY_1 = (
    b'"approvers":"quorum":"escalate_after_s":"decision":"approved":"rejected":"comment":'
    b'"tools":"mcp":"http":"url":"method":"headers":"retry":"max_attempts":"backoff_s":'
    b'"merge":"conflict":"parallel":"branches":"when":"then":"else":"loop":"until":"max_turns":'
    b'"supervisor":"members":"chat":"speakers":"transcript":"messages":"role":"assistant",'
    b'"user","system","content":"tool_calls":"arguments":"error":"message":"kind":"function",'
    b'"output_schema":{"type":"object","properties":{"type":"string"},"required":["'
    b'"state":{"steps":{"status":"completed","outputs":{"spent":{"tokens":"cost":'
    b'"kind":"llm","timeout_s":300.0,"heartbeat_s":20.0,"model":"openai:'
    b'"llm":{"instructions":"","prompt":"{text}","max_tokens":1024}},'
    b'{"~":1,"flow":{"name":"","steps":[{"name":"","agent":"","input":{"text":"$input.text"}}],'
    b'"output":"$"},"agents":{"":{"~":1,"name":"'
    b'"task_queue":"ensemble"}'
    b'"output":"","usage":[,"model":"openai:"}'
    b'{"agent":"#","context":{"flow":"","run_id":"","keyed":true},"input":{"text":"'
    b"\n\x16\n\x08encoding\x12\njson/plain\x12"
)


class CompressionError(EnsembleError):
    """A compressed payload this process cannot read (corrupt, or inflating past MAX_INFLATED)."""


def min_bytes_setting() -> int | None:
    """The smallest payload this process compresses, from ENSEMBLE_PAYLOAD_COMPRESSION (None: off)."""
    raw = os.environ.get(ENV, "").strip().lower()
    if raw in ("", "off", "0", "no", "false"):
        return None
    name, _, size = raw.partition(":")
    if name not in ("deflate", "on"):
        raise InputError(f"{ENV}={raw!r}: use deflate, deflate:MIN_BYTES or off")
    if not size:
        return DEFAULT_MIN_BYTES
    if not size.isdigit():
        raise InputError(f"{ENV}={raw!r}: MIN_BYTES is a whole number of bytes, e.g. deflate:256")
    return int(size)


def deflate(payload: Payload, min_bytes: int) -> Payload:
    """`payload` compressed, or as it is where that does not make it smaller (or it is small,
    or already compressed or encrypted)."""
    if payload.metadata.get("encoding", b"").startswith(b"binary/"):
        return payload
    size = payload.ByteSize()
    if size < min_bytes:
        return payload
    packer = zlib.compressobj(_LEVEL, zlib.DEFLATED, _WBITS, zdict=DICTIONARY_1)
    packed = Payload(
        metadata={"encoding": ENCODING}, data=packer.compress(payload.SerializeToString()) + packer.flush()
    )
    return packed if packed.ByteSize() < size else payload


def inflate(payload: Payload) -> Payload:
    """`payload` as it was written, where it is compressed; any other payload as it is."""
    if payload.metadata.get("encoding") != ENCODING:
        return payload
    unpacker = zlib.decompressobj(_WBITS, zdict=DICTIONARY_1)
    try:
        plain = unpacker.decompress(payload.data, MAX_INFLATED)
        if unpacker.unconsumed_tail:
            raise CompressionError(f"a compressed payload inflates past {MAX_INFLATED // 2**20} MiB: refused")
        plain += unpacker.flush()
        return Payload.FromString(plain)
    except CompressionError:
        raise
    except Exception as err:  # zlib.error, protobuf's DecodeError
        raise CompressionError(f"a compressed payload does not inflate: {err}") from None


def inflate_all(payloads: Sequence[Payload]) -> Sequence[Payload]:
    if any(p.metadata.get("encoding") == ENCODING for p in payloads):
        return [inflate(p) for p in payloads]
    return payloads


class EnsemblePayloadConverter(PydanticPayloadConverter):
    """Pydantic models on the wire; reads compressed payloads, writes them as they are."""

    min_bytes: int | None = None

    def from_payloads(self, payloads: Sequence[Payload], type_hints: list[type] | None = None) -> list[Any]:
        return super().from_payloads(inflate_all(payloads), type_hints)


class CompressingPayloadConverter(EnsemblePayloadConverter):
    """Also writes every payload of `min_bytes` or more compressed, where that makes it smaller."""

    min_bytes: int | None = DEFAULT_MIN_BYTES

    def to_payloads(self, values: Sequence[Any]) -> list[Payload]:
        payloads = super().to_payloads(values)
        floor = self.min_bytes
        return payloads if floor is None else [deflate(p, floor) for p in payloads]


def converter_class(min_bytes: int | None) -> type[EnsemblePayloadConverter]:
    """The payload converter class for a setting (a nullary class, as Temporal's converter needs)."""
    if min_bytes is None:
        return EnsemblePayloadConverter
    if min_bytes == DEFAULT_MIN_BYTES:
        return CompressingPayloadConverter
    return type(f"CompressingPayloadConverter{min_bytes}", (CompressingPayloadConverter,), {"min_bytes": min_bytes})
