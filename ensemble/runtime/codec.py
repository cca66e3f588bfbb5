"""Encryption at rest: a payload codec, AES-256-GCM with key ids (the `cryptography` package).

Keys come from `ENSEMBLE_CODEC_KEYS=kid:base64key,kid:base64key` or from a key file named by
`ENSEMBLE_CODEC_KEY_FILE` (the same `kid:base64key` entries, one per line or comma separated;
the file must be owner-only, mode 0600 or stricter). Each key is 32 random bytes, base64
(`python starter.py codec-key` prints a new one). The FIRST key encrypts; every key decrypts, so a
key is rotated by putting the new one first and keeping the old ones until no run needs them.

An encrypted payload is `binary/encrypted` with the key id in its metadata; its data is a 12-byte
nonce followed by the ciphertext of the original payload (metadata and data), the key id bound as
associated data. Payloads that are not encrypted (written before encryption was turned on) are
read as they are.
"""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from ensemble.spec.errors import EnsembleError, InputError

KEYS_ENV = "ENSEMBLE_CODEC_KEYS"
KEY_FILE_ENV = "ENSEMBLE_CODEC_KEY_FILE"
ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
CIPHER = "encryption-cipher"
CIPHER_NAME = b"AES256-GCM"
ENDPOINT_ENV = "ENSEMBLE_CODEC_ENDPOINT"
DEFAULT_ENDPOINT_PORT = 8234


def endpoint_port() -> int:
    """The port `starter.py codec-server` serves on by default."""
    raw = os.environ.get("ENSEMBLE_CODEC_PORT", "").strip()
    return int(raw) if raw.isdigit() else DEFAULT_ENDPOINT_PORT


def endpoint() -> str:
    """Where the codec endpoint is (ENSEMBLE_CODEC_ENDPOINT, else `codec-server`'s default)."""
    return os.environ.get(ENDPOINT_ENV, "").strip() or f"http://127.0.0.1:{endpoint_port()}"


class CodecError(EnsembleError):
    """A payload this process cannot decrypt (no key with its id, or tampered data)."""


def new_key() -> str:
    """A fresh 256-bit key, base64."""
    return base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()


def parse_keys(text: str, where: str) -> list[tuple[str, bytes]]:
    """`kid:base64key` entries (comma or newline separated) as (kid, 32-byte key), in order."""
    keys: list[tuple[str, bytes]] = []
    for item in text.replace("\n", ",").split(","):
        item = item.strip()
        if not item or item.startswith("#"):
            continue
        kid, sep, b64 = item.partition(":")
        if not sep or not kid.strip():
            raise InputError(
                f"{where}: an entry is not kid:base64key; generate a key with `python starter.py codec-key`"
            )
        try:
            key = base64.b64decode(b64.strip(), validate=True)
        except ValueError:
            raise InputError(f"{where}: the key of '{kid.strip()}' is not base64") from None
        if len(key) != 32:
            raise InputError(f"{where}: the key of '{kid.strip()}' has {len(key)} bytes, AES-256 needs 32")
        keys.append((kid.strip(), key))
    return keys


def configured_keys() -> list[tuple[str, bytes]]:
    """The keys this process is configured with (empty: encryption is off)."""
    if os.environ.get(KEYS_ENV, "").strip():
        return parse_keys(os.environ[KEYS_ENV], KEYS_ENV)
    path = os.environ.get(KEY_FILE_ENV, "").strip()
    if not path:
        return []
    try:
        info = os.stat(path)
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise InputError(
                f"{KEY_FILE_ENV}: {path} is readable by others (mode {stat.S_IMODE(info.st_mode):04o}); chmod 600 {path}"
            )
        text = Path(path).read_text()
    except OSError as err:
        raise InputError(f"{KEY_FILE_ENV}: cannot read {path}: {err.strerror or err}") from None
    keys = parse_keys(text, path)
    if not keys:
        raise InputError(f"{KEY_FILE_ENV}: {path} holds no key")
    return keys


class AesGcmCodec(PayloadCodec):
    """Encrypts with the first key, decrypts with whichever key a payload names."""

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        if not keys:
            raise ValueError("AesGcmCodec needs at least one key")
        self.kid = keys[0][0]
        self._ciphers = {kid: AESGCM(key) for kid, key in keys}

    @property
    def key_ids(self) -> list[str]:
        return list(self._ciphers)

    def encode_one(self, payload: Payload) -> Payload:
        nonce = os.urandom(12)
        sealed = self._ciphers[self.kid].encrypt(nonce, payload.SerializeToString(), self.kid.encode())
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID: self.kid.encode(), CIPHER: CIPHER_NAME},
            data=nonce + sealed,
        )

    def decode_one(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        kid = payload.metadata.get(KEY_ID, b"").decode()
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise CodecError(
                f"a payload is encrypted with key '{kid}', which this process does not have "
                f"(it has {', '.join(self._ciphers)}): add it to {KEYS_ENV}"
            )
        try:
            plain = cipher.decrypt(payload.data[:12], payload.data[12:], kid.encode())
        except InvalidTag:
            raise CodecError(
                f"a payload encrypted with key '{kid}' does not decrypt: the key or the data is wrong"
            ) from None
        return Payload.FromString(plain)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encode_one(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decode_one(p) for p in payloads]
