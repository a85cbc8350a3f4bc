"""Noise profiles (grouping.profiles): what is learnt from an incident marked noise and what matches it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from stormeye.grouping.names import parse
from stormeye.grouping.profiles import (
    DAY_S,
    Profile,
    Scope,
    generalize,
    learn,
    move_size,
    parse_time_of_day,
    recognise,
    why_not,
)

CPU = 'cpu_seconds{service="batch",pod="batch-7d9f8b-x2k4q"}'
IO = 'disk_io_bytes{service="batch",pod="batch-7d9f8b-x2k4q"}'
NEW_POD_CPU = 'cpu_seconds{service="batch",pod="batch-55c4d9-p8m2z"}'
OTHER_SERVICE_CPU = 'cpu_seconds{service="billing",pod="billing-7d9f8b-x2k4q"}'
MEMORY = 'memory_bytes{service="batch",pod="batch-7d9f8b-x2k4q"}'
AT_2AM = 2 * 3600.0 + 10 * DAY_S


@dataclass
class Move:
    metric: str
    z: float
    direction: int = 1
    start: float = AT_2AM
    end: float = AT_2AM + 600
    open: bool = False
    peak_score: float = 0.9
    evidence: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.evidence = {"z": self.z * self.direction}


def props(*moves: Move) -> dict[str, dict[str, str]]:
    return {a.metric: parse(a.metric) for a in moves}


def routine(scope: Scope | None = None) -> Profile:
    got = [Move(CPU, 10.0), Move(IO, 7.0)]
    return learn("inc-1", got, props(*got), scope)


def test_a_pods_generated_tail_is_a_pattern_and_other_labels_stay_exact() -> None:
    assert generalize("pod", "batch-7d9f8b-x2k4q") == "batch-*"
    assert generalize("pod", "web-0") == "web-*"
    assert generalize("container", "checkout") == "checkout"  # nothing generated: exact
    assert generalize("host", "machine-1-1") == "machine-1-1"  # a host is one machine
    assert generalize("service", "a*b") == "a[*]b"  # glob characters in a value are literal


def test_the_profile_holds_each_kind_of_member_with_its_direction_and_largest_move() -> None:
    prof = routine()
    assert [(dict(p.labels)["__name__"], dict(p.labels)["pod"], p.direction, p.size) for p in prof.members] == [
        ("cpu_seconds", "batch-*", 1, 10.0),
        ("disk_io_bytes", "batch-*", 1, 7.0),
    ]
    assert prof.id == routine().id and prof.id != routine(Scope.around(AT_2AM, AT_2AM + 600)).id
    assert Profile.from_dict(prof.to_dict()) == prof


def test_the_same_move_again_matches_on_a_new_pod_of_the_same_service_too() -> None:
    prof = routine()
    again = [Move(CPU, 11.0), Move(IO, 6.0)]
    assert why_not(prof, again, props(*again), AT_2AM + DAY_S) is None
    new_pod = [Move(NEW_POD_CPU, 9.0)]  # a subset of the routine, on a new pod: still the routine
    assert recognise([prof], new_pod, props(*new_pod), AT_2AM) is prof


@pytest.mark.parametrize(
    ("moves", "why"),
    [
        ([Move(CPU, 20.0), Move(IO, 7.0)], "more than 1.5 x"),  # twice its size
        ([Move(CPU, 10.0), Move(MEMORY, 5.0)], "beyond the profile"),  # a new member
        ([Move(OTHER_SERVICE_CPU, 5.0)], "beyond the profile"),  # another service
        ([Move(CPU, 10.0, direction=-1)], "the other way"),
    ],
)
def test_a_larger_move_a_new_member_or_the_other_way_is_not_the_routine(moves: list[Move], why: str) -> None:
    prof = routine()
    got = why_not(prof, moves, props(*moves), AT_2AM)
    assert got is not None and why in got
    assert recognise([prof], moves, props(*moves), AT_2AM) is None


def test_a_daily_profile_matches_at_its_time_of_day_only_and_a_window_only_within_it() -> None:
    daily = routine(Scope.around(AT_2AM, AT_2AM + 600))
    again = [Move(CPU, 10.0)]
    assert why_not(daily, again, props(*again), AT_2AM + 3 * DAY_S + 1800) is None
    assert "outside daily 01:00-03:10" in str(why_not(daily, again, props(*again), AT_2AM + 6 * 3600))
    wraps = parse_time_of_day("23:30-00:30")
    assert wraps.holds(23.75 * 3600) and wraps.holds(0.25 * 3600) and not wraps.holds(12 * 3600)
    deploy = routine(Scope("window", AT_2AM, AT_2AM + 3600))
    assert why_not(deploy, again, props(*again), AT_2AM + 60) is None
    assert why_not(deploy, again, props(*again), AT_2AM + DAY_S) is not None


@pytest.mark.parametrize("text", ["25:00-26:00", "2am", "", "02:00-02:61"])
def test_a_bad_time_of_day_says_how_to_write_it(text: str) -> None:
    with pytest.raises(ValueError, match="HH:MM-HH:MM"):
        parse_time_of_day(text)


def test_a_bad_scope_is_refused_with_what_to_fix() -> None:
    with pytest.raises(ValueError, match="any, daily or window"):
        Scope("weekly")
    with pytest.raises(ValueError, match="end after it starts"):
        Scope("window", 10.0, 5.0)
    with pytest.raises(ValueError, match="no members"):
        learn("inc-1", [], {})


def test_the_size_of_a_move_is_its_robust_z_else_its_peak_score() -> None:
    assert move_size(Move(CPU, 8.0, direction=-1)) == 8.0
    alert = Move(CPU, 1.0)
    alert.evidence = {}
    assert move_size(alert) == 0.9
