"""JSON-lines text for generated markets and signals, built a column at a time with numpy.

The stress workload (`pomabotd.sources.workload`) and the living world
(`pomabotd.sources.world`) write their records as wire lines (`pomabotd.wire`) without ever
making a `Market` or `Signal` object: each field becomes a column of text, looked up in a
table where the values are few (prices to the tenth, categories, the middle of a signal line)
and formatted once per distinct value where they are many (times), and the columns are joined.
A million markets cost seconds this way, where objects would cost minutes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

import numpy as np

from pomabotd.domain.models import CATEGORIES, SIGNAL_TYPES

__all__ = [
    "CATEGORY_TEXT",
    "CRITERIA",
    "DIRECTIONS",
    "QUESTIONS",
    "SIGNAL_MIDDLE",
    "TENTHS",
    "cents",
    "extras",
    "micros",
    "signal_middle",
    "times",
]

_TOPICS: Final = {
    "politics": ("Will the incumbent win the {n} district race?", "Will the {n} bill pass?"),
    "crypto": ("Will BTC close above ${n}k this month?", "Will token #{n} list on an exchange?"),
    "sports": ("Will team {n} win the final?", "Will player #{n} score in the next match?"),
    "economics": ("Will CPI print above {n}.0% YoY?", "Will the central bank cut {n} bp?"),
    "entertainment": ("Will film #{n} top the box office?", "Will album #{n} debut at number one?"),
    "weather": ("Will city #{n} see over 30°C on Friday?", "Will storm #{n} make landfall?"),
    "technology": ("Will device #{n} ship before Q4?", "Will model #{n} top the leaderboard?"),
    "world": ("Will summit #{n} end with a signed accord?", "Will ceasefire #{n} hold a month?"),
    "other": ("Will event #{n} happen by year end?", "Will record #{n} be broken?"),
}
#: Every question, by (category, template, number) in that order: index
#: `(category * 2 + template) * 1000 + number`.
QUESTIONS: Final = np.array(
    [_TOPICS[category][template].format(n=n) for category in CATEGORIES
     for template in (0, 1) for n in range(1000)],
    object,
)
CRITERIA: Final = "Resolves per the official published result."
CATEGORY_TEXT: Final = np.array([f'","category":"{c}"' for c in CATEGORIES], object)
#: Prices to the tenth of a point, by tenths.
TENTHS: Final = np.array([f',"price":{n // 10}.{n % 10}' for n in range(1001)], object)
_CENTS: Final = np.array([f".{n:02d}" for n in range(100)], object)
DIRECTIONS: Final = ("up", "down", "neutral")
#: The middle of a signal line, by (type, direction, strength, conflicting) in that order:
#: index with `signal_middle`.
SIGNAL_MIDDLE: Final = np.array(
    [f'{kind}","direction":"{direction}","strength":{strength}'
     + (',"conflicts_with_existing":true' if conflicting else "") + ',"timestamp":"'
     for kind in SIGNAL_TYPES for direction in DIRECTIONS
     for strength in range(1, 6) for conflicting in (False, True)],
    object,
)
_UNKNOWNS: Final = np.array(["", ',"unknowns":1', ',"unknowns":2', ',"unknowns":3'], object)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def signal_middle(kind: Any, direction: Any, strength: Any, conflicts: Any) -> Any:
    """`SIGNAL_MIDDLE` for columns of type and direction indexes, strengths 1-5 and flags."""
    return SIGNAL_MIDDLE[((kind * 3 + direction) * 5 + strength - 1) * 2 + conflicts]


def extras(
    unclear: Any, subjective: Any, unknowns: Any, resolved: Any, outcome: Any
) -> Any:
    """The fields a market line carries only when they differ from their defaults, and the
    line's end; `unknowns` 0-3, `outcome` 1 for YES where `resolved`."""
    parts = np.where(unclear, ',"authority_is_clear":false', "").astype(object)
    parts = parts + np.where(subjective, ',"outcome_is_objective":false', "")
    parts = parts + _UNKNOWNS[unknowns]
    parts = parts + np.where(resolved, np.where(outcome == 1, ',"outcome":"YES"',
                                                ',"outcome":"NO"'), "")
    return parts + "}\n"


def micros(moment: datetime) -> int:
    """Microseconds since 1970 (UTC), exactly."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def times(micros: Any, before: str, after: str) -> Any:
    """RFC 3339 UTC times between `before` and `after`, to the second when every one is
    whole; each distinct time is written once."""
    distinct, which = np.unique(micros, return_inverse=True)
    whole = not (distinct % 1_000_000).any()
    text = np.datetime_as_string(distinct.astype("datetime64[us]"), unit="s" if whole else "us")
    return np.array([f"{before}{value}Z{after}" for value in text.tolist()], object)[which]


def cents(values: Any, before: str) -> Any:
    """Amounts to the cent as JSON numbers after `before`: three columns of text."""
    amounts = np.rint(values * 100).astype(np.int64)
    columns = np.empty((len(amounts), 3), object)
    columns[:, 0] = before
    columns[:, 1] = list(map(str, (amounts // 100).tolist()))
    columns[:, 2] = _CENTS[amounts % 100]
    return columns
