"""The names of the search sink's indices and aliases, and the layout read back from the cluster.

One physical index per asset per period (a year by default, or a month):

    people_search-2026                     the physical index of 2026: every version of every day of that year
    people_search-2026.01.05               day alias: filtered to the published version of that day
    people_search                          read alias: on every period index, filtered to its published versions
    people_search-2026.01.05@c.<token>     a write's claim on the day (the last writer to take its lock)
    people_search-2026.01.05@p.<token>     the day's published version (`<day>@<token>`)
    people_search-2026@<token>             the period index's generation: changes with every publish into it

Every document carries `idem_version` (`<day>@<write token>`), unique per write of a day; a filtered alias selects
one version per day. Markers and generations are plain alias names, so a publish can make them conditions of its
one `_aliases` request (`remove ... must_exist: true`): the request fails whole if another writer claimed the day
since this one did (its claim is gone), published the day since this one saw it (the published marker it saw is
gone), or published into the index since it was read (the generation is gone). Aliases are read in one `GET <asset>-*/_alias`.

Days published by the earlier layout (one physical index per day and write, `people_search-2026.01.05-<run>-<hex>`,
the day alias and read alias without filters) read the same; their version is the physical index's name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

VERSION_FIELD = "idem_version"
PERIODS = ("year", "month")
_DAY = re.compile(r"\d{4}\.\d{2}\.\d{2}")


@dataclass(frozen=True)
class SearchNames:
    """The names of one asset's indices and aliases (`base`: the asset key, `.`-joined, lower-cased)."""

    base: str
    period: str = "year"

    def __post_init__(self) -> None:
        if self.period not in PERIODS:
            raise ValueError(f"index period must be one of {PERIODS}, not {self.period!r}")

    @property
    def read_alias(self) -> str:
        return self.base

    @property
    def pattern(self) -> str:
        """Every index and alias of the asset (no asset name holds a `-`, so no other asset's)."""
        return f"{self.base}-*"

    def day_alias(self, day: str) -> str:
        return f"{self.base}-{day.replace('-', '.')}"

    def period_index(self, day: str) -> str:
        year, month, _ = day.split("-")
        return f"{self.base}-{year}" if self.period == "year" else f"{self.base}-{year}.{month}"

    def day_of_alias(self, name: str) -> str | None:
        """The day a day alias names (None: not a day alias of this asset)."""
        rest = name[len(self.base) + 1:] if name.startswith(self.base + "-") else ""
        return rest.replace(".", "-") if _DAY.fullmatch(rest) else None

    @staticmethod
    def marker(name: str, token: str) -> str:
        return f"{name}@{token}"


@dataclass
class SearchLayout:
    """What the cluster holds for an asset, from one alias read.

    - `days[day]`: the physical indices under the day alias and the version each publishes (the filter's
      `idem_version`, or the index name for a day of the earlier layout);
    - `markers[day]`: the day's marker aliases; `generations[index]`: the index's generation aliases;
    - `read_alias_on`: the indices the read alias is on; `indices`: every physical index of the asset.
    """

    names: SearchNames
    days: dict[str, dict[str, str]] = field(default_factory=dict)
    markers: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    generations: dict[str, list[str]] = field(default_factory=dict)
    read_alias_on: set[str] = field(default_factory=set)
    indices: set[str] = field(default_factory=set)

    @classmethod
    def parse(cls, names: SearchNames, found: Mapping[str, Mapping]) -> SearchLayout:
        layout = cls(names)
        for index, info in found.items():
            layout.indices.add(index)
            for alias, spec in (info.get("aliases") or {}).items():
                if alias == names.read_alias:
                    layout.read_alias_on.add(index)
                    continue
                base, at, _ = alias.partition("@")
                if at and base == index:
                    layout.generations.setdefault(index, []).append(alias)
                    continue
                day = names.day_of_alias(base)
                if day is None:
                    continue
                if at:
                    layout.markers.setdefault(day, []).append((index, alias))
                else:
                    layout.days.setdefault(day, {})[index] = _filtered_version(spec) or index
        return layout

    def version(self, day: str) -> str | None:
        """The version the day alias publishes (None: never published; several, comma-joined, only if someone
        else added the day alias to more indices)."""
        held = self.days.get(day)
        return ",".join(sorted(held.values())) if held else None

    def published_versions(self, index: str) -> dict[str, str]:
        """day -> version of every day whose day alias is on `index`."""
        return {day: held[index] for day, held in self.days.items() if index in held}

    def earlier_layout_indices(self, days: Sequence[str]) -> dict[str, list[str]]:
        """day -> the per-day physical indices of the earlier layout that hold the day alias."""
        return {day: [i for i in self.days.get(day, {}) if i != self.names.period_index(day)] for day in days}


def marker_kind(alias: str) -> str:
    """`c` (a write's claim on the day) or `p` (the day's published version) of a day marker alias."""
    return alias.partition("@")[2][:1]


def version_token(version: str) -> str:
    """The write token of a version `<day>@<token>`: the name of its published marker is `<day alias>@p.<token>`."""
    return version.partition("@")[2]


def _filtered_version(spec: Mapping) -> str | None:
    term = ((spec or {}).get("filter") or {}).get("term") or {}
    value = term.get(VERSION_FIELD)
    if isinstance(value, Mapping):  # {"term": {"idem_version": {"value": ...}}}
        value = value.get("value")
    return value
