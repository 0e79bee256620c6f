"""An m-line that stopped carrying a track is reused only once the client has seen it end."""

from __future__ import annotations

from dataclasses import dataclass

from sfu_geofence.sfu.mlines import MLineRecycler


@dataclass(frozen=True)
class Line:
    name: str
    kind: str


AUDIO, VIDEO, AUDIO2 = Line("0", "audio"), Line("1", "video"), Line("2", "audio")


def test_a_retired_line_is_not_reusable_before_an_answer_to_an_offer_that_shows_it_inactive() -> None:
    lines: MLineRecycler[Line] = MLineRecycler()
    lines.retire(AUDIO, offers_made=3)  # offer 3 was made before it went inactive: it shows it active
    assert (lines.reusable(), lines.retiring(), lines.take("audio")) == (0, 1, None)
    lines.answered(3)
    assert (lines.reusable(), lines.take("audio")) == (0, None)
    lines.answered(4)  # offer 4, made after, showed it inactive
    assert (lines.reusable(), lines.retiring()) == (1, 0)
    assert lines.take("audio") is AUDIO
    assert (lines.reusable(), lines.take("audio")) == (0, None)


def test_a_line_is_taken_only_for_its_own_kind_oldest_freed_first() -> None:
    lines: MLineRecycler[Line] = MLineRecycler()
    lines.retire(AUDIO, 1)
    lines.retire(VIDEO, 1)
    lines.retire(AUDIO2, 1)
    lines.answered(2)
    assert (lines.reusable(), lines.reusable("audio"), lines.reusable("video")) == (3, 2, 1)
    assert lines.take("video") is VIDEO
    assert lines.take("video") is None
    assert [lines.take("audio"), lines.take("audio")] == [AUDIO, AUDIO2]


def test_an_answer_frees_only_the_lines_retired_before_its_offer() -> None:
    lines: MLineRecycler[Line] = MLineRecycler()
    lines.retire(AUDIO, 1)
    lines.retire(AUDIO2, 2)
    lines.answered(2)
    assert (lines.reusable(), lines.retiring()) == (1, 1)
    assert lines.take("audio") is AUDIO
    lines.answered(3)
    assert lines.take("audio") is AUDIO2
