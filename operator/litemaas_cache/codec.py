"""Result documents as stored and served: the JSON bytes compressed once (zstd, and gzip for clients without zstd),
and the Redis entry that carries them behind a header holding the day versions they were computed from.

An HTTP hit serves the stored bytes as they are (Content-Encoding); only in-process callers decode them.
"""

from __future__ import annotations

import gzip
import zlib
from typing import Any, Final, get_args

import orjson
import zstandard

from .vocabulary import ContentEncoding

MAGIC = b"LMC2"
MAX_DECOMPRESSED_BYTES = 256 * 1024 * 1024
ENCODINGS: tuple[ContentEncoding, ...] = get_args(ContentEncoding)
_KIND: dict[ContentEncoding, bytes] = {"zstd": b"z", "gzip": b"g"}
_LENGTH_BYTES = 4
ZSTD_LEVEL = 3  # smaller and faster than gzip's default; decompresses at memory speed
GZIP_LEVEL = 6  # zlib's default: a computation pays it once per result, every gzip client gains on every hit
_UNSET: Final = object()


class CorruptValue(ValueError):
    """A value that is not ours, truncated or otherwise undecodable: the caller treats it as a miss."""


def compress(data: bytes, encoding: ContentEncoding) -> bytes:
    if encoding == "zstd":
        return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)
    return gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)


def decompress(data: bytes, encoding: ContentEncoding) -> bytes:
    """The JSON bytes of a compressed body (at most MAX_DECOMPRESSED_BYTES); CorruptValue when undecodable."""
    try:
        if encoding == "zstd":
            out: bytes = zstandard.ZstdDecompressor().decompress(data, max_output_size=MAX_DECOMPRESSED_BYTES)
            return out
        inflater = zlib.decompressobj(wbits=31)  # 31: a gzip member
        out = inflater.decompress(data, MAX_DECOMPRESSED_BYTES)
        if not inflater.eof or inflater.unconsumed_tail:
            raise CorruptValue("truncated or oversized gzip body")
        return out
    except (zstandard.ZstdError, zlib.error) as exc:
        raise CorruptValue(f"undecodable {encoding} body: {type(exc).__name__}") from None


class Body:
    """One JSON document: its value, its JSON bytes and its compressed encodings, each made at most once and only
    when asked for. A Redis hit starts from one encoding; a computation starts from the value."""

    def __init__(self, value: Any = _UNSET, encoded: dict[ContentEncoding, bytes] | None = None) -> None:
        if value is _UNSET and not encoded:
            raise ValueError("a Body needs its value or one of its encodings")
        self._value = value
        self._json: bytes | None = None
        self._encoded: dict[ContentEncoding, bytes] = dict(encoded or {})

    @classmethod
    def of(cls, value: Any) -> Body:
        return cls(value)

    def json(self) -> bytes:
        """The identity bytes (for a client that accepts no encoding)."""
        if self._json is None:
            if self._value is not _UNSET:
                self._json = orjson.dumps(self._value)
            else:
                encoding, data = next(iter(self._encoded.items()))
                self._json = decompress(data, encoding)
        return self._json

    def value(self) -> Any:
        """The document decoded (for in-process callers: the CLI, warming, pagination)."""
        if self._value is _UNSET:
            try:
                self._value = orjson.loads(self.json())
            except orjson.JSONDecodeError as exc:
                raise CorruptValue(f"undecodable JSON body: {exc.msg}") from None
        return self._value

    def has(self, encoding: ContentEncoding | None) -> bool:
        """Whether the bytes of `encoding` (None: the identity JSON) are at hand, without any (de)compression."""
        return (self._json if encoding is None else self._encoded.get(encoding)) is not None

    def encoded(self, encoding: ContentEncoding) -> bytes:
        if encoding not in self._encoded:
            self._encoded[encoding] = compress(self.json(), encoding)
        return self._encoded[encoding]


def encode_entry(vector: list[int], body: Body, encoding: ContentEncoding) -> bytes:
    """A Redis result entry: MAGIC, the encoding's kind byte, the lengths of the version vector and of the body, the
    vector (JSON), then the compressed body."""
    header = orjson.dumps(vector)
    data = body.encoded(encoding)
    return MAGIC + _KIND[encoding] + _length(header) + _length(data) + header + data


def _length(data: bytes) -> bytes:
    return len(data).to_bytes(_LENGTH_BYTES, "big")


def decode_entry(data: bytes, encoding: ContentEncoding) -> tuple[list[int], bytes]:
    """The version vector and the compressed body of an entry of `encoding`. The body is not decompressed (a hit
    serves it as it is), but its length is checked, so a truncated entry is refused; CorruptValue for anything
    else that is not such an entry."""
    kind_at = len(MAGIC)
    start = kind_at + 1 + 2 * _LENGTH_BYTES
    if len(data) < start or not data.startswith(MAGIC):
        raise CorruptValue("missing header: not a litemaas-cache result entry")
    if data[kind_at : kind_at + 1] != _KIND[encoding]:
        raise CorruptValue(f"not a {encoding} entry")
    vector_length = int.from_bytes(data[kind_at + 1 : kind_at + 1 + _LENGTH_BYTES], "big")
    body_length = int.from_bytes(data[kind_at + 1 + _LENGTH_BYTES : start], "big")
    if body_length == 0 or len(data) != start + vector_length + body_length:
        raise CorruptValue("truncated entry (its length differs from its header's)")
    try:
        vector = orjson.loads(data[start : start + vector_length])
    except orjson.JSONDecodeError:
        raise CorruptValue("undecodable version vector") from None
    if not isinstance(vector, list) or not all(type(v) is int for v in vector):
        raise CorruptValue("the version vector is not a list of integers")
    return vector, data[start + vector_length :]
