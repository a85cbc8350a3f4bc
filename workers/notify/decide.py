"""When to notify: the timers, the change test and flapping hold-down, as one pure function.

A *thread* is an incident and the incidents that reopen it (each names the one before in
``follows``, within the flapping window): a receiver hears of a thread as one problem, with one
stable key (PagerDuty's ``dedup_key``). Per thread and receiver:

- **firing**: the first notification, ``group_wait`` after the notifier first saw the incident
  (the storm settles; a flapping thread's reopening waits the flapping ``hold`` as well);
- **update**: only on a real change since the last notification — priority raised, members grown
  by ``update_growth``, root metric changed — and at most every ``group_interval``; none while
  flapping (held down);
- **repeat**: every ``repeat_interval`` while open and not acknowledged;
- **resolved**: once, ``group_interval`` after the thread resolved (the flapping ``hold`` while
  flapping), unless it reopened meanwhile — then it simply stays firing and counts a flap.

Everything takes ``now``: no clock is read here.
"""

from __future__ import annotations

from dataclasses import dataclass

from stormeye.workers.notify.config import Flapping, RouteOptions
from stormeye.workers.notify.view import IncidentView


@dataclass
class StateView:
    """What the receiver was last told about the thread."""

    firing: bool = False
    seq: int = 0
    last_at: float | None = None
    last_priority: int | None = None
    last_members: int | None = None
    last_root: str | None = None


@dataclass
class Decision:
    kind: str | None  # firing | update | repeat | resolved | None (nothing to send now)
    reason: str


def duration(seconds: float) -> str:
    """A time span as people say it: 45 s, 12 min, 3.5 h."""
    s = max(0.0, seconds)
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def flapping(opens_in_window: int, flap: Flapping) -> bool:
    return opens_in_window >= flap.threshold


def real_change(inc: IncidentView, state: StateView, growth: float) -> str | None:
    """Why ``inc`` differs enough from what was last sent to tell again (None: it does not)."""
    if state.last_priority is not None and inc.priority < state.last_priority:
        return f"priority raised P{state.last_priority} -> P{inc.priority}"
    last = state.last_members or 0
    if inc.member_count > last and inc.member_count >= last * (1.0 + growth):
        return f"members grew {last} -> {inc.member_count}"
    if state.last_root is not None and inc.root is not None and inc.root != state.last_root:
        return f"root changed {state.last_root} -> {inc.root}"
    return None


def decide(
    inc: IncidentView,
    state: StateView,
    opts: RouteOptions,
    flap: Flapping,
    opens_in_window: int,
    muted: bool,
    now: float,
) -> Decision:
    """What to send a receiver about the thread whose newest incident is ``inc``, at ``now``."""
    held = flapping(opens_in_window, flap)
    if inc.active:
        if muted:
            return Decision(None, "muted")
        if not state.firing:
            wait = max(opts.group_wait, flap.hold) if held else opts.group_wait
            if now >= inc.since + wait:
                # the real time it has been open (a silence may have held it far longer than group_wait)
                opened = f"open for {duration(now - inc.opened_at)}"
                why = f"{opened} (group_wait {wait:g} s)" if not held else f"{opened}, flapping, held"
                return Decision("firing", why)
            return Decision(None, "waiting for group_wait")
        since = now - (state.last_at if state.last_at is not None else now)
        change = None if held else real_change(inc, state, opts.update_growth)
        if change and since >= opts.group_interval:
            return Decision("update", change)
        if inc.status == "open" and since >= opts.repeat_interval:
            return Decision("repeat", f"still open after {opts.repeat_interval:g} s (repeat_interval)")
        return Decision(None, "no real change" if not change else "waiting for group_interval")
    if not state.firing:
        return Decision(None, "never notified firing")
    hold = flap.hold if held else opts.group_interval
    if now >= inc.ended_at + hold:
        why = "flapping hold-down" if held else "group_interval"
        return Decision("resolved", f"resolved for {duration(now - inc.ended_at)} ({why} {hold:g} s)")
    return Decision(None, "resolve held")
