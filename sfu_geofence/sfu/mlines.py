"""When a subscriber's m-line may carry another track: m-lines are recycled, never removed.

An m-line that stops carrying a track goes ``inactive`` in the next offer; it becomes reusable only once
an answer to an offer made after it went inactive has been applied, so that a client always sees one
track end before another starts on the same m-line. Generic over the line (a transceiver in the SFU).
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar


class Line(Protocol):
    """An m-line, as far as recycling cares: its media kind."""

    @property
    def kind(self) -> str: ...


L = TypeVar("L", bound=Line)


class MLineRecycler(Generic[L]):
    """Retiring and free m-lines of one connection; offers are numbered 1, 2, ... as they are made."""

    __slots__ = ("_free", "_retiring")

    def __init__(self) -> None:
        self._free: list[L] = []
        self._retiring: list[tuple[L, int]] = []

    def retire(self, line: L, offers_made: int) -> None:
        """``line`` went inactive after ``offers_made`` offers: the next offer shows it so."""
        self._retiring.append((line, offers_made))

    def answered(self, offer_number: int) -> None:
        """The answer to offer ``offer_number`` was applied: what it showed inactive is free."""
        still = [(line, at) for line, at in self._retiring if at >= offer_number]
        self._free.extend(line for line, at in self._retiring if at < offer_number)
        self._retiring = still

    def take(self, kind: str) -> L | None:
        """A free m-line of ``kind`` (the oldest freed), no longer free; None if there is none."""
        for line in self._free:
            if line.kind == kind:
                self._free.remove(line)
                return line
        return None

    def reusable(self, kind: str | None = None) -> int:
        """How many m-lines (of ``kind``, or of any) a new subscription may take now."""
        return sum(1 for line in self._free if kind is None or line.kind == kind)

    def retiring(self) -> int:
        """How many m-lines went inactive and wait for an answer that shows it."""
        return len(self._retiring)
