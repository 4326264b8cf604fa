"""Value encoding of Redis result entries: orjson, zstd-compressed above a
size threshold, behind a magic header."""

from __future__ import annotations

from typing import Any

import orjson
import zstandard

MAGIC = b"LMC1"
_RAW = b"j"
_ZSTD = b"z"
MAX_DECOMPRESSED_BYTES = 256 * 1024 * 1024


class CorruptValue(ValueError):
    """A value that is not ours, truncated or otherwise undecodable: the caller treats it as a miss."""


class Codec:
    def __init__(self, compress_threshold: int = 1024, level: int = 1) -> None:
        self.compress_threshold = compress_threshold
        self._compressor = zstandard.ZstdCompressor(level=level)
        self._decompressor = zstandard.ZstdDecompressor()

    def encode(self, value: Any) -> bytes:
        raw = orjson.dumps(value)
        if len(raw) >= self.compress_threshold:
            return MAGIC + _ZSTD + self._compressor.compress(raw)
        return MAGIC + _RAW + raw

    def decode(self, data: bytes) -> Any:
        if len(data) < len(MAGIC) + 1 or not data.startswith(MAGIC):
            raise CorruptValue("missing header: not a litemaas-cache value")
        kind, body = data[len(MAGIC) : len(MAGIC) + 1], data[len(MAGIC) + 1 :]
        try:
            if kind == _ZSTD:
                body = self._decompressor.decompress(body, max_output_size=MAX_DECOMPRESSED_BYTES)
            elif kind != _RAW:
                raise CorruptValue(f"unknown encoding {kind!r}")
            return orjson.loads(body)
        except (zstandard.ZstdError, orjson.JSONDecodeError) as exc:
            raise CorruptValue(f"undecodable value: {type(exc).__name__}") from None
