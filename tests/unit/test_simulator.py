import numpy as np
import pytest

from grouping.names import parse
from workers.simulator import simulate_storm


def test_deterministic_for_a_seed() -> None:
    a = simulate_storm(seed=3, n_metrics=300, n_incidents=4)
    b = simulate_storm(seed=3, n_metrics=300, n_incidents=4)
    np.testing.assert_array_equal(a.values, b.values)
    assert a.incidents == b.incidents and a.names == b.names
    c = simulate_storm(seed=4, n_metrics=300, n_incidents=4)
    assert not np.array_equal(np.nan_to_num(a.values), np.nan_to_num(c.values))


def test_ground_truth_is_consistent() -> None:
    s = simulate_storm(seed=0, n_metrics=1000, n_incidents=8)
    names = set(s.names)
    assert len(names) == len(s.names) == 1000
    seen: dict[str, object] = {}
    for inc in s.incidents:
        assert set(inc.members) <= names and len(inc.members) == len(set(inc.members))
        for m in inc.members:  # a metric belongs to one incident, or to two at different times
            if m in seen:
                prev = seen[m]
                assert prev.scope == inc.scope and prev.end < inc.start, "overlapping incidents share a metric"
            seen[m] = inc
        assert s.storm_start <= inc.start < inc.end <= s.timestamps[-1]
        assert len(inc.lags) == len(inc.members)
        if not inc.singleton:
            assert len(inc.members) >= 3
            for m in inc.members:  # every member is in the incident's scope
                props = parse(m)
                assert all(props.get(k) == v for k, v in inc.scope.items())
    multi = [i for i in s.incidents if not i.singleton]
    assert len(multi) >= 6
    assert {i.family for i in multi} == {"business", "infra"}


def test_real_data_patterns_are_in_the_storm() -> None:
    s = simulate_storm(seed=2, n_metrics=2000, n_incidents=6, back_to_back=1, concurrent=1, weak=1)
    multi = [i for i in s.incidents if not i.singleton]
    again = [(a, b) for a in multi for b in multi if a.id < b.id and a.scope == b.scope]
    assert again and all(b.start - a.end >= 20 * s.step for a, b in again)  # the same service, a quiet gap between
    same_minute = [
        (a, b)
        for a in multi
        for b in multi
        if a.id < b.id and a.start == b.start and set(a.scope) == set(b.scope) == {"host"}
    ]
    assert same_minute and not set(same_minute[0][0].members) & set(same_minute[0][1].members)
    assert any(len(i.members) >= 10 for i in multi[-1:])  # the weak one is broad


def test_members_really_deviate_and_history_is_clean() -> None:
    s = simulate_storm(seed=1, n_metrics=600, n_incidents=6)
    idx = {n: i for i, n in enumerate(s.names)}
    members = set(s.membership())
    others = [n for n in s.names if n not in members][:200]

    def moved(metric: str, lo: int, hi: int) -> bool:
        x = s.values[idx[metric]]
        before = x[lo - 120 : lo]
        med = np.nanmedian(before)
        mad = np.nanmedian(np.abs(before - med)) * 1.4826 + 1e-9
        return bool(np.nanmax(np.abs(x[lo:hi] - med)) / mad > 4)

    hit, calm = [], []
    for inc in s.incidents:
        lo = int(np.searchsorted(s.timestamps, inc.start))
        hi = int(np.searchsorted(s.timestamps, inc.end)) + 1
        hit += [moved(m, lo, hi) for m in inc.members]
        calm += [moved(m, lo, hi) for m in others[:20]]
    assert np.mean(hit) > 0.8 > 0.3 > np.mean(calm)
    assert np.isnan(s.values).mean() < 0.01
    names, ts, vals = s.points(0, 5)
    assert len(names) == len(ts) == len(vals) and np.all(np.isfinite(vals)) and np.all(np.diff(ts) >= 0)


def test_a_float_step_and_a_long_step_give_a_storm() -> None:
    a = simulate_storm(seed=3, n_metrics=200, n_incidents=3, step=60.0)  # type: ignore[arg-type]
    b = simulate_storm(seed=3, n_metrics=200, n_incidents=3, step=60)
    np.testing.assert_array_equal(a.values, b.values)
    hourly = simulate_storm(seed=3, n_metrics=200, n_incidents=3, step=3600, history_steps=200, storm_steps=200)
    assert np.isfinite(hourly.values).any()
    with pytest.raises(ValueError, match="back_to_back"):
        simulate_storm(seed=3, n_metrics=200, storm_steps=150)
    assert simulate_storm(seed=3, n_metrics=200, storm_steps=150, back_to_back=0).incidents
