"""A response body's `Content-Encoding` undone a bounded step at a time.

httpx's own decoders inflate whatever one network chunk holds in a single call: 3.5 KB marked
`Content-Encoding: gzip, gzip` becomes 2 GiB before anyone can count it. Here every layer hands
on at most `STEP` bytes per call (zlib's `max_length`, the rest of its input kept for the next
call), so whoever pulls the decoded pieces can count them against a cap and stop pulling: the
memory a bomb costs is the cap plus a few steps, whatever its ratio.

Only what pomabotd asks for (`Accept-Encoding: gzip, deflate`) is decoded; any other encoding
is refused rather than passed on still encoded.
"""

from __future__ import annotations

import zlib
from collections.abc import Generator, Iterable, Iterator
from typing import Final

__all__ = ["ACCEPT_ENCODING", "STEP", "BodyDecoder", "DecodeFailed"]

#: What the sources ask servers for; exactly the encodings `BodyDecoder` undoes.
ACCEPT_ENCODING: Final = "gzip, deflate"
#: The most one layer hands on per call.
STEP: Final = 64 * 1024

_GZIP_WBITS: Final = zlib.MAX_WBITS | 16
_ZLIB_WBITS: Final = zlib.MAX_WBITS
_RAW_DEFLATE_WBITS: Final = -zlib.MAX_WBITS


class DecodeFailed(Exception):
    """The body is not what its `Content-Encoding` says, or is in an encoding pomabotd did not
    ask for; the message says which."""


class _Layer:
    """One `gzip` or `deflate` layer. A gzip body may hold several members one after another
    (RFC 1952); `deflate` is the zlib format, or raw deflate as some servers send it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._wbits = _GZIP_WBITS if name == "gzip" else _ZLIB_WBITS
        self._inflater = zlib.decompressobj(self._wbits)
        self._started = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The decoded pieces of `data`, each at most `STEP` bytes."""
        while data:
            if self._inflater.eof:
                if self.name != "gzip":
                    raise DecodeFailed(f"data follows the end of its {self.name} stream")
                self._inflater = zlib.decompressobj(self._wbits)  # the next gzip member
            data = yield from self._step(data)

    def finish(self) -> Iterator[bytes]:
        """What is left once the body has ended; a stream cut short is refused."""
        if not self._started:
            return
        tail = self._inflater.flush()
        if tail:
            yield tail
        if not self._inflater.eof:
            raise DecodeFailed(f"the {self.name} stream ends before it is complete")

    def _step(self, data: bytes) -> Generator[bytes, None, bytes]:
        """Decode what `STEP` allows of `data`; returns the input still to decode."""
        try:
            out = self._inflater.decompress(data, STEP)
        except zlib.error as exc:
            if self.name == "deflate" and not self._started and self._wbits == _ZLIB_WBITS:
                self._wbits = _RAW_DEFLATE_WBITS  # raw deflate, without the zlib header
                self._inflater = zlib.decompressobj(self._wbits)
                return data
            raise DecodeFailed(f"not valid {self.name} data ({exc})") from None
        self._started = True
        if out:
            yield out
        if self._inflater.unconsumed_tail:
            return self._inflater.unconsumed_tail
        return self._inflater.unused_data if self._inflater.eof else b""


class BodyDecoder:
    """Undoes a response's `Content-Encoding` values (as listed, outermost last), step by
    step: `feed` each received chunk, then `finish`; both yield decoded pieces of at most
    `STEP` bytes. Raises `DecodeFailed` for an encoding it does not know or data that is not
    what it claims."""

    def __init__(self, encodings: Iterable[str]) -> None:
        layers = []
        for raw in encodings:
            name = raw.strip().lower()
            if name in ("", "identity"):
                continue
            if name == "x-gzip":
                name = "gzip"
            if name not in ("gzip", "deflate"):
                raise DecodeFailed(
                    f"Content-Encoding {raw.strip()!r} is not one pomabotd decodes (it asks "
                    f"for {ACCEPT_ENCODING})"
                )
            layers.append(_Layer(name))
        self._layers = layers[::-1]  # the last encoding applied is undone first

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The decoded pieces of one received chunk."""
        return self._through(0, data)

    def finish(self) -> Iterator[bytes]:
        """The last decoded pieces, once the body has ended."""
        for index, layer in enumerate(self._layers):
            for piece in layer.finish():
                yield from self._through(index + 1, piece)

    def _through(self, index: int, data: bytes) -> Iterator[bytes]:
        if index == len(self._layers):
            if data:
                yield data
            return
        for piece in self._layers[index].feed(data):
            yield from self._through(index + 1, piece)
