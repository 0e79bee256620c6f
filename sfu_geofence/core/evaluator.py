"""One policy version turned into decisions, prebuilt once per location and shared.

The admission hot path is a dictionary lookup here: a Decision is built the first time a
(country, field, database build) is met under a policy version, then returned as the same value.
``by_code`` lets the hot path skip the Location too: a DB-IP record's code straight to its Decision.
"""

from __future__ import annotations

from .decision import Decision, DecisionReason, Verdict
from .geolocation import Location, normalise_address
from .policy import Enforcement, Mode, RelayedRule, RoomPolicy


class Evaluator:
    """Decides for one policy version. Replaced (not mutated) when the policy or database changes."""

    __slots__ = ("by_code", "cache", "enforced", "exempting", "policy", "rule", "shared", "version")

    def __init__(self, policy: RoomPolicy, version: int) -> None:
        self.policy = policy
        self.version = version
        self.rule = policy.describe()
        self.enforced = policy.enforcement is Enforcement.ENFORCE
        self.exempting = bool(policy.exempt_participants or policy.exempt_networks)
        """Whether decisions may depend on the participant, not only on the location."""
        self.cache: dict[int, Decision] = {}
        """Decisions by ``Location.key``."""
        self.shared: dict[int, Decision] = {} if self.exempting else self.cache
        """What the hot path reads directly: the decisions that hold for anyone at a location. All
        of ``cache`` without exemptions; with them, only admissions (an exemption only ever turns a
        refusal into an admission), so that a hit needs no further test."""
        self.by_code: dict[str, Decision] = {}
        """The decisions of ``shared`` whose location came from a record's ``country_code`` (DB-IP),
        by that code: what a record ``{"country_code": code}`` decides, without building its Location.
        Valid for one database build: evaluators are rebuilt when the database is reloaded."""

    def decide(self, location: Location, address: str, identity: str | None = None) -> Decision:
        """The decision for a participant at ``address``, located at ``location``."""
        key = location.key
        decision = self.cache.get(key) if key >= 0 else None
        if decision is None:
            decision = self._build(location)
            if key >= 0:  # interned by a Locator; a Location built by hand is not cached
                self.cache[key] = decision
                if decision.verdict is Verdict.ADMIT:
                    self.shared[key] = decision
                if key in self.shared and location.source == "country_code" and location.country:
                    self.by_code[location.country] = decision
        if self.exempting and decision.verdict is Verdict.REFUSE:
            return self._exempted(decision, location, address, identity)
        return decision

    def decide_relayed(
        self,
        relay: Location,
        relay_address: str,
        signaling: Location,
        signaling_address: str,
        identity: str | None,
    ) -> Decision:
        """The decision for media relayed through TURN at ``relay_address``."""
        rule = self.policy.relayed
        if rule is RelayedRule.SIGNALING_COUNTRY:
            return self.decide(signaling, signaling_address, identity)
        if rule is RelayedRule.ADMIT:
            return self._make(Verdict.ADMIT, DecisionReason.RELAYED_ADMITTED, relay)
        refused = self._make(Verdict.REFUSE, DecisionReason.RELAYED_REFUSED, relay)
        return self._exempted(refused, relay, relay_address, identity) if self.exempting else refused

    def lookup_failed(self, location: Location) -> Decision:
        """The decision when the database's data for an address is corrupt: as for unknown."""
        verdict = Verdict.REFUSE if self.policy.restricts(None) else Verdict.ADMIT
        return self._make(verdict, DecisionReason.LOOKUP_FAILED, location)

    def _build(self, location: Location) -> Decision:
        country = location.country
        if not self.policy.restricts(country):
            reason = (
                DecisionReason.COUNTRY_NOT_RESTRICTED
                if country is not None
                else DecisionReason.UNKNOWN_ADMITTED
            )
            return self._make(Verdict.ADMIT, reason, location)
        if country is None:
            return self._make(Verdict.REFUSE, DecisionReason.UNKNOWN_REFUSED, location)
        reason = (
            DecisionReason.COUNTRY_DENIED
            if self.policy.mode is Mode.DENY
            else DecisionReason.COUNTRY_NOT_ALLOWED
        )
        return self._make(Verdict.REFUSE, reason, location)

    def _exempted(
        self, refused: Decision, location: Location, address: str, identity: str | None
    ) -> Decision:
        policy = self.policy
        if identity is not None and identity in policy.exempt_participants:
            return self._make(Verdict.ADMIT, DecisionReason.EXEMPT_PARTICIPANT, location)
        if policy.exempt_networks and policy.exempts(None, normalise_address(address)):
            return self._make(Verdict.ADMIT, DecisionReason.EXEMPT_NETWORK, location)
        return refused

    def _make(self, verdict: Verdict, reason: DecisionReason, location: Location) -> Decision:
        return Decision(
            verdict=verdict,
            enforced=self.enforced,
            reason=reason,
            country=location.country,
            source=location.source,
            database=location.database.label,
            policy_version=self.version,
            rule=self.rule,
        )
