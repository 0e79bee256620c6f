"""ISO 3166-1 alpha-2 country codes: the only key a policy may use (never a name).

Hong Kong (HK), Macau (MO) and Taiwan (TW) have codes of their own, distinct from mainland China (CN);
a policy restricting CN restricts none of them.
"""

from __future__ import annotations

import functools

import pycountry

from .errors import InvalidCountryCode

#: User-assigned codes that geolocation databases really return, accepted beside ISO's own list:
#: XK (Kosovo) is used by MaxMind and DB-IP alike.
EXTRA_CODES: frozenset[str] = frozenset({"XK"})


@functools.cache
def all_codes() -> frozenset[str]:
    """Every accepted alpha-2 code (ISO 3166-1 as shipped by pycountry, plus :data:`EXTRA_CODES`)."""
    return frozenset(country.alpha_2 for country in pycountry.countries) | EXTRA_CODES


def is_country_code(code: str) -> bool:
    """Whether ``code`` is an accepted alpha-2 code, exactly as written (upper case)."""
    return code in all_codes()


def country_code(text: str) -> str:
    """Validate and normalise (strip, upper-case) one alpha-2 code, or raise InvalidCountryCode."""
    if not isinstance(text, str):
        raise InvalidCountryCode(f"a country code must be a string, not {type(text).__name__}")
    code = text.strip().upper()
    if len(code) != 2 or not code.isascii() or not code.isalpha():
        raise InvalidCountryCode(f"{text!r} is not an ISO 3166-1 alpha-2 code (two letters, e.g. 'CN')")
    if code not in all_codes():
        raise InvalidCountryCode(f"{text!r} is not an assigned ISO 3166-1 alpha-2 country code")
    return code


def country_name(code: str) -> str:
    """The English name of an accepted code as people say it: pycountry's ``common_name`` when it
    has one ("Taiwan", "South Korea", "Iran"), else ISO's short name ("China", "Russian Federation").

    A refused or ejected participant reads this about itself: ISO's "Taiwan, Province of China" or
    "Korea, Republic of" would be needlessly political or stilted there.
    """
    code = country_code(code)
    if code == "XK":
        return "Kosovo"
    country = pycountry.countries.get(alpha_2=code)
    assert country is not None
    return str(getattr(country, "common_name", None) or country.name)
