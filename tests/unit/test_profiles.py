"""Noise profiles (grouping.profiles): what is learnt from an incident marked noise and what matches it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from stormeye.detectors.events import Anomaly
from stormeye.grouping.graph import GroupingConfig
from stormeye.grouping.incidents import IncidentTracker
from stormeye.grouping.names import NameIndex, parse
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
    why_not_each,
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


def test_the_size_of_a_move_is_the_z_it_was_judged_by_else_its_peak_score() -> None:
    assert move_size(Move(CPU, 8.0, direction=-1)) == 8.0
    seasonal = Move(CPU, 0.5)  # judged by the seasonal reference: its z, not the robust z, is the size
    seasonal.evidence = {"z": 0.5, "seasonal_z": -5.0, "move_z": -5.0}
    assert move_size(seasonal) == 5.0
    alert = Move(CPU, 1.0)
    alert.evidence = {}
    assert move_size(alert) == 0.9


# -- member by member (Skyline Ionosphere matches each metric against every profile of that metric) --

DISK = 'disk_io_bytes{service="batch",pod="batch-7d9f8b-x2k4q"}'


def two_routines() -> tuple[Profile, Profile]:
    """The cpu's routine learnt from one incident, the disk's from another."""
    cpu, disk = [Move(CPU, 10.0)], [Move(DISK, 7.0)]
    return learn("inc-cpu", cpu, props(*cpu)), learn("inc-disk", disk, props(*disk))


def test_a_cluster_whose_moves_are_each_a_learnt_routine_is_recognised_member_by_member() -> None:
    a, b = two_routines()
    both = [Move(CPU, 9.0), Move(DISK, 6.0)]
    assert why_not(a, both, props(*both), AT_2AM) is not None  # no one profile holds both ...
    assert why_not(b, both, props(*both), AT_2AM) is not None
    got, why = why_not_each([b, a], both, props(*both), AT_2AM)  # ... but each move is one's routine
    assert why is None and got is min(a, b, key=lambda p: p.id)  # a tie: the first by id
    assert recognise([a, b], both, props(*both), AT_2AM) is got
    # the profile that knows the most moves is named
    cpu_twice = [Move(CPU, 9.0), Move(NEW_POD_CPU, 8.0), Move(DISK, 6.0)]
    assert why_not_each([a, b], cpu_twice, props(*cpu_twice), AT_2AM)[0] is a


@pytest.mark.parametrize(
    ("moves", "why"),
    [
        ([Move(CPU, 9.0), Move(MEMORY, 5.0)], "beyond every profile"),  # a move no profile knows
        ([Move(CPU, 9.0), Move(DISK, 20.0)], "more than 1.5 x"),  # one clearly larger than its routine
        ([Move(CPU, 9.0), Move(DISK, 6.0, direction=-1)], "the other way"),
    ],
)
def test_member_by_member_a_move_no_profile_knows_or_a_larger_one_is_not_recognised(
    moves: list[Move], why: str
) -> None:
    a, b = two_routines()
    got, said = why_not_each([a, b], moves, props(*moves), AT_2AM)
    assert got is None and why in str(said)
    assert recognise([a, b], moves, props(*moves), AT_2AM) is None


def test_member_by_member_only_profiles_in_scope_at_the_onset_count() -> None:
    cpu, disk = [Move(CPU, 10.0)], [Move(DISK, 7.0)]
    a = learn("inc-cpu", cpu, props(*cpu), Scope.around(AT_2AM, AT_2AM + 600))  # daily around 02:00
    b = learn("inc-disk", disk, props(*disk))
    both = [Move(CPU, 9.0), Move(DISK, 6.0)]
    assert why_not_each([a, b], both, props(*both), AT_2AM + DAY_S)[1] is None
    noon = AT_2AM + 10 * 3600
    assert "beyond every profile" in str(why_not_each([a, b], both, props(*both), noon)[1])
    assert recognise([a, b], both, props(*both), noon) is None


def _tracker(profiles: list[Profile]) -> IncidentTracker:
    index = NameIndex()
    index.add([CPU, DISK, MEMORY])
    tracker = IncidentTracker(index, GroupingConfig(open_min_evidence=0.0), step=60.0)
    tracker.profiles = profiles
    return tracker


def _anomaly(metric: str, z: float, start: float = AT_2AM, end: float | None = None) -> Anomaly:
    return Anomaly(metric, start, start if end is None else end, 0.9, start, 1, "test", {"z": z})


def _windows(metrics: Any) -> np.ndarray:
    """Every metric steps up at the same point of its window: they move alike."""
    rng = np.random.default_rng(0)
    return np.vstack([rng.normal(0, 1, 60) + np.r_[np.zeros(50), np.full(10, 8.0)] for _ in metrics])


def test_an_incident_recognised_member_by_member_stays_quiet_until_a_member_no_profile_knows_joins() -> None:
    a, b = two_routines()
    tracker = _tracker([a, b])
    tracker.update(AT_2AM, [_anomaly(CPU, 9.0), _anomaly(DISK, 6.0)], _windows)
    (inc,) = tracker.open_incidents()
    assert inc.status == "recognised" and inc.profile == min(a.id, b.id)
    # the same moves going on: checked again, still the routines
    got = tracker.update(
        AT_2AM + 60, [_anomaly(CPU, 9.0, end=AT_2AM + 60), _anomaly(DISK, 6.0, end=AT_2AM + 60)], _windows
    )
    assert inc.status == "recognised" and not [c for c in got if c.kind == "escalated"]
    # a member no profile knows joins: it pages
    got = tracker.update(AT_2AM + 120, [_anomaly(MEMORY, 5.0, start=AT_2AM + 120)], _windows)
    assert inc.status == "open" and MEMORY in inc.metrics
    (esc,) = [c for c in got if c.kind == "escalated"]
    assert "beyond every profile" in esc.details["why"]
