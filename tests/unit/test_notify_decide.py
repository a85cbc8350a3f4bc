"""When to notify, as a pure function of the incident, what was last sent and ``now``."""

from __future__ import annotations

from stormeye.workers.notify.config import Flapping, RouteOptions
from stormeye.workers.notify.decide import StateView, decide
from stormeye.workers.notify.view import IncidentView

OPTS = RouteOptions(group_wait=30, group_interval=300, repeat_interval=3600, update_growth=0.5)
FLAP = Flapping(window=3600, threshold=3, hold=900)


def inc(status: str = "open", priority: int = 3, members: int = 10, root: str = "a", **kw) -> IncidentView:  # type: ignore[no-untyped-def]
    base = dict(id="i", status=status, priority=priority, title="t", root=root, root_entity=None, opened_at=0.0,
                resolved_at=kw.pop("resolved_at", None), updated_at=0.0, follows=None, merged_into=None,
                member_count=members)  # fmt: skip
    base.update(kw)
    return IncidentView(**base)  # type: ignore[arg-type]


SENT = StateView(firing=True, seq=1, last_at=100.0, last_priority=3, last_members=10, last_root="a")


def test_group_wait_counts_from_when_the_notifier_saw_it() -> None:
    assert decide(inc(seen_at=50.0), StateView(), OPTS, FLAP, 1, False, 79).kind is None
    assert decide(inc(seen_at=50.0), StateView(), OPTS, FLAP, 1, False, 80).kind == "firing"
    assert decide(inc(seen_at=50.0), StateView(), OPTS, FLAP, 1, True, 500).kind is None  # muted


def test_only_real_change_and_not_too_often() -> None:
    assert decide(inc(members=14), SENT, OPTS, FLAP, 1, False, 1000).kind is None
    assert decide(inc(members=15), SENT, OPTS, FLAP, 1, False, 399).kind is None
    assert decide(inc(members=15), SENT, OPTS, FLAP, 1, False, 400).kind == "update"
    assert decide(inc(priority=2), SENT, OPTS, FLAP, 1, False, 400).reason.startswith("priority raised")
    assert decide(inc(priority=4), SENT, OPTS, FLAP, 1, False, 400).kind is None  # lowered: not news
    assert decide(inc(root="b"), SENT, OPTS, FLAP, 1, False, 400).reason.startswith("root changed")
    assert decide(inc(members=15), SENT, OPTS, FLAP, 3, False, 400).kind is None  # flapping: held down


def test_repeat_until_acknowledged_and_resolve_once() -> None:
    assert decide(inc(), SENT, OPTS, FLAP, 1, False, 3700).kind == "repeat"
    assert decide(inc(status="acknowledged"), SENT, OPTS, FLAP, 1, False, 3700).kind is None
    done = inc(status="resolved", resolved_at=1000.0)
    assert decide(done, SENT, OPTS, FLAP, 1, False, 1299).kind is None
    assert decide(done, SENT, OPTS, FLAP, 1, False, 1300).kind == "resolved"
    assert decide(done, SENT, OPTS, FLAP, 3, False, 1300).kind is None  # flapping: the resolve waits the hold
    assert decide(done, SENT, OPTS, FLAP, 3, False, 1900).kind == "resolved"
    assert decide(done, StateView(), OPTS, FLAP, 1, False, 5000).kind is None  # never paged: nothing to resolve


def test_reasons_say_the_real_times() -> None:
    """Issue 34.7: "open for 10 s (group_wait)" on a message sent minutes later, after a silence expired;
    "resolved for 60 s" five seconds after a manual resolve. The reason says how long it really was."""
    late = decide(inc(opened_at=1000.0, seen_at=1000.0), StateView(), OPTS, FLAP, 1, False, 1000.0 + 25 * 60)
    assert late.kind == "firing" and late.reason == "open for 25 min (group_wait 30 s)"
    done = decide(inc("resolved", resolved_at=2000.0), SENT, OPTS, FLAP, 1, False, 2000.0 + 300 + 5)
    assert done.kind == "resolved" and done.reason == "resolved for 5 min (group_interval 300 s)"


def test_a_recognised_incident_pages_nobody_until_it_escalates() -> None:
    # a known routine (a noise profile matched it: docs/feedback.md) is recorded, never sent
    assert decide(inc(status="recognised", seen_at=0.0), StateView(), OPTS, FLAP, 1, False, 5000).kind is None
    done = inc(status="resolved", resolved_at=1000.0)
    assert decide(done, StateView(), OPTS, FLAP, 1, False, 5000).kind is None  # and its end neither
    # escalated (a member beyond the profile, a larger move, "this one is real"): open, it pages
    assert decide(inc(status="open", seen_at=0.0), StateView(), OPTS, FLAP, 1, False, 5000).kind == "firing"
