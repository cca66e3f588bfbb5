"""The data converter every Ensemble client, worker and replayer uses: pydantic models on the
wire. One place, so that payload encoding (encryption, large payloads by reference) is the same
for every process that reads or writes a run.

With encryption keys configured (ENSEMBLE_CODEC_KEYS or ENSEMBLE_CODEC_KEY_FILE, see codec.py)
every payload is encrypted by the AES-256-GCM codec, and failure messages and stack traces are
moved into an encoded payload too (Temporal's `DefaultFailureConverterWithEncodedAttributes`), so
the server stores neither inputs, outputs nor error text in the clear. Search attributes are never
encrypted: Ensemble puts only ids and names there.

With ENSEMBLE_PAYLOAD_COMPRESSION=deflate payloads are also written compressed (compression.py,
before they are encrypted); every process reads compressed payloads whatever its own setting.
"""

from __future__ import annotations

import dataclasses
import json
import os

from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes

from ensemble.runtime import compression
from ensemble.runtime.codec import KEY_FILE_ENV, KEYS_ENV, AesGcmCodec, configured_keys
from ensemble.runtime.payloads import external_storage, visit_messages

_cache: dict[tuple[str, str, str], DataConverter] = {}


def codec() -> AesGcmCodec | None:
    """The payload codec of this process, or None when encryption is off."""
    codec = data_converter().payload_codec
    return codec if isinstance(codec, AesGcmCodec) else None


def data_converter() -> DataConverter:
    """The converter for this process, as its environment configures it."""
    config = (os.environ.get(KEYS_ENV, ""), os.environ.get(KEY_FILE_ENV, ""), os.environ.get(compression.ENV, ""))
    if config not in _cache:
        keys = configured_keys()
        plain = DataConverter(payload_converter_class=compression.converter_class(compression.min_bytes_setting()))
        _cache[config] = (
            plain
            if not keys
            else dataclasses.replace(
                plain,
                payload_codec=AesGcmCodec(keys),
                failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
            )
        )
    converter = _cache[config]
    store = external_storage()  # large values by reference (ensemble/runtime/payloads.py)
    if store is not None:
        converter = dataclasses.replace(converter, external_storage=store)
    return converter


def encrypted() -> bool:
    return codec() is not None


def compressing() -> bool:
    return compression.min_bytes_setting() is not None


def decode_payload(payload: Payload) -> Payload:
    """One payload as the JSON converter wrote it (decrypted, then inflated, where it is encrypted
    or compressed)."""
    c = codec()
    return compression.inflate(c.decode_one(payload) if c is not None else payload)


def decode_failure(failure: Failure) -> Failure:
    """A failure (and its causes) with an encoded message and stack trace restored, read from a
    history without a client (the CLI's readers, exported files)."""
    if not failure.HasField("encoded_attributes") and not failure.HasField("cause"):
        return failure
    plain = Failure()
    plain.CopyFrom(failure)
    node: Failure | None = plain
    while node is not None:
        if node.HasField("encoded_attributes"):
            try:
                attrs = json.loads(decode_payload(node.encoded_attributes).data)
            except Exception:  # a key this process lacks: keep what the server shows
                attrs = None
            if isinstance(attrs, dict):
                node.message = str(attrs.get("message", node.message))
                node.stack_trace = str(attrs.get("stack_trace", node.stack_trace))
                node.ClearField("encoded_attributes")
        node = node.cause if node.HasField("cause") else None
    return plain


_PAYLOAD = Payload.DESCRIPTOR.full_name
_FAILURE = Failure.DESCRIPTOR.full_name


def decode_message(message: Message) -> None:
    """Decrypt, in place, every payload and encoded failure inside a protobuf message (a history
    event, a whole history): what `history --decode` exports for a key holder."""
    visit_messages(message, _decode_item)


def _decode_item(item: Message, type_name: str) -> bool:
    if type_name == _PAYLOAD:
        item.CopyFrom(decode_payload(item))  # type: ignore[arg-type]
        return True
    if type_name == _FAILURE:
        item.CopyFrom(decode_failure(item))  # type: ignore[arg-type]
    return False
