"""Country names as people say them: what a refused or ejected participant reads about itself."""

from __future__ import annotations

import pytest

from sfu_geofence.core.countries import country_name


@pytest.mark.parametrize(
    ("code", "name"),
    [
        ("TW", "Taiwan"),  # not ISO's "Taiwan, Province of China"
        ("CN", "China"),
        ("HK", "Hong Kong"),
        ("KR", "South Korea"),  # not "Korea, Republic of"
        ("RU", "Russian Federation"),  # pycountry has no common name for it: ISO's short name
        ("IR", "Iran"),  # not "Iran, Islamic Republic of"
        ("XK", "Kosovo"),
    ],
)
def test_a_country_is_named_by_its_common_name_when_it_has_one(code: str, name: str) -> None:
    assert country_name(code) == name
    assert country_name(code.lower()) == name
