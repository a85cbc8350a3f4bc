"""A seeded storm simulator with ground truth, for the demo, the tests and the benches.

It makes two families of metrics with realistic names and shapes:

- business metrics, Anodot style: ``purchase_count{country="England",device="mobile",os="iOS",product="shoes"}``
  (Zipf-distributed countries and products, so some pairs are rare and some are everywhere);
- infrastructure metrics: ``cpu_usage{host="checkout-eu-3",region="eu",service="checkout"}``.

Series carry daily and weekly seasonality, trends, gaussian or heavy-tailed noise, Poisson
counts, spiky periodic cycles (cron jobs), plateaus (rarely updated gauges) and missing points.

Incidents hit a set of related metrics (all sharing a scope such as ``country=England`` or
``service=checkout``) with level shifts, spikes, drops, variance changes or trend breaks;
members lag each other by a few steps, and some in-scope metrics are left untouched as
distractors. Unrelated singleton anomalies are added too. The ground truth records for every
incident its members and time span.

Everything is deterministic for a given seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from grouping.names import NAME_KEY, canonical

KINDS = ("level_shift", "spike", "drop", "variance", "trend")
Family = Literal["business", "infra"]

COUNTRIES = [
    "US",
    "England",
    "Germany",
    "France",
    "Brazil",
    "India",
    "Japan",
    "Canada",
    "Spain",
    "Italy",
    "Mexico",
    "Australia",
    "Netherlands",
    "Poland",
    "Israel",
]
PRODUCTS = ["shoes", "shirts", "books", "phones", "laptops", "toys", "jewelry", "furniture", "garden", "music"]
DEVICES = ["mobile", "desktop", "tablet"]
OSES = {"mobile": ["iOS", "Android"], "tablet": ["iOS", "Android"], "desktop": ["Windows", "macOS", "Linux"]}
BUSINESS_WHAT = {
    # what: (typical level, is a count, sign of its response to a "bad" incident)
    "purchase_count": (40.0, True, -1),
    "revenue": (2400.0, False, -1),
    "avg_price": (60.0, False, -1),
    "cart_adds": (120.0, True, -1),
    "page_views": (900.0, True, -1),
    "conversion_rate": (3.5, False, -1),
    "signups": (8.0, True, -1),
    "checkout_errors": (2.0, True, +1),
}
SERVICES = [
    "checkout",
    "search",
    "payments",
    "catalog",
    "auth",
    "cart",
    "recommendations",
    "inventory",
    "shipping",
    "notifications",
    "gateway",
    "profile",
    "reviews",
    "pricing",
    "images",
    "analytics",
    "email",
    "billing",
    "orders",
    "sessions",
]
REGIONS = ["us-east", "us-west", "eu", "ap"]
INFRA_METRICS = {
    # metric: (typical level, is a count, sign of its response to a "bad" incident, shape)
    "cpu_usage": (35.0, False, +1, "smooth"),
    "memory_used": (4.0e9, False, +1, "plateau"),
    "request_rate": (250.0, True, -1, "smooth"),
    "error_rate": (1.5, True, +1, "smooth"),
    "latency_p99": (180.0, False, +1, "heavy"),
    "disk_io": (12.0, False, +1, "cron"),
    "gc_time": (8.0, False, +1, "heavy"),
    "queue_depth": (20.0, True, +1, "smooth"),
}
KPI_WHATS = ("revenue", "purchase_count", "signups", "conversion_rate")


@dataclass(frozen=True)
class TruthIncident:
    """One simulated incident: which metrics it hit, when, and how."""

    id: int
    members: tuple[str, ...]
    start: float
    end: float
    kind: str
    scope: dict[str, str] = field(default_factory=dict)
    family: str = "business"
    singleton: bool = False
    lags: tuple[int, ...] = ()


@dataclass
class Storm:
    """A simulated set of metrics over time, with the incidents hidden in it."""

    names: list[str]
    families: list[str]
    timestamps: np.ndarray  # (T,) epoch seconds, every `step`
    values: np.ndarray  # (n_metrics, T) float64, NaN where a point is missing
    step: int
    history_steps: int  # leading steps that hold no incident: what a running service already has
    incidents: list[TruthIncident]
    seed: int

    @property
    def storm_start(self) -> float:
        return float(self.timestamps[self.history_steps])

    def membership(self) -> dict[str, list[TruthIncident]]:
        """For every metric that some incident hit, those incidents."""
        out: dict[str, list[TruthIncident]] = {}
        for inc in self.incidents:
            for m in inc.members:
                out.setdefault(m, []).append(inc)
        return out

    def points(self, start_step: int = 0, end_step: int | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
        """The storm as points ``(metric names, timestamps, values)``, time-ordered, NaNs left out."""
        vals = self.values[:, start_step:end_step]
        ts = self.timestamps[start_step:end_step]
        t_idx, m_idx = np.nonzero(np.isfinite(vals.T))
        return [self.names[i] for i in m_idx], ts[t_idx], vals[m_idx, t_idx]


def _zipf_choice(rng: np.random.Generator, items: list[str], size: int, a: float = 1.1) -> np.ndarray:
    w = 1.0 / np.arange(1, len(items) + 1) ** a
    return rng.choice(len(items), size=size, p=w / w.sum())


def _business_names(rng: np.random.Generator, n: int) -> list[dict[str, str]]:
    seen: set[str] = set()
    out: list[dict[str, str]] = []
    whats = list(BUSINESS_WHAT)
    tries = 0
    while len(out) < n and tries < 50 * n:
        tries += 1
        what = whats[int(rng.integers(len(whats)))]
        country = COUNTRIES[int(_zipf_choice(rng, COUNTRIES, 1)[0])]
        device = DEVICES[int(rng.integers(len(DEVICES)))]
        os_ = OSES[device][int(rng.integers(len(OSES[device])))]
        props = {NAME_KEY: what, "country": country, "device": device, "os": os_}
        if what not in ("signups", "page_views"):
            props["product"] = PRODUCTS[int(_zipf_choice(rng, PRODUCTS, 1, a=0.8)[0])]
        key = canonical(props)
        if key not in seen:
            seen.add(key)
            out.append(props)
    return out


def _infra_names(rng: np.random.Generator, n: int) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    metrics = list(INFRA_METRICS)
    # hosts per service follow a skewed distribution; each host carries every metric
    sizes = np.maximum(1, rng.zipf(1.6, size=len(SERVICES)).clip(max=12))
    while len(out) < n:
        for s_i, service in enumerate(SERVICES):
            region = REGIONS[s_i % len(REGIONS)]
            for h in range(int(sizes[s_i])):
                host = f"{service}-{region}-{h + 1}"
                for metric in metrics:
                    out.append({NAME_KEY: metric, "service": service, "region": region, "host": host})
        sizes = sizes + 1
    # keep whole hosts where possible
    return out[:n]


def _baseline(
    rng: np.random.Generator, props: list[dict[str, str]], families: list[str], t: np.ndarray, step: int
) -> tuple[np.ndarray, np.ndarray]:
    """Normal behaviour of every metric, vectorized: returns (values, noise scale per metric)."""
    n, T = len(props), len(t)
    level = np.empty(n)
    is_count = np.zeros(n, bool)
    shape = np.empty(n, dtype=object)
    for i, p in enumerate(props):
        if families[i] == "business":
            lv, cnt, _ = BUSINESS_WHAT[p[NAME_KEY]]
            shape[i] = "smooth"
        else:
            lv, cnt, _, shp = INFRA_METRICS[p[NAME_KEY]]
            shape[i] = shp
        level[i] = lv
        is_count[i] = cnt
    level *= rng.lognormal(0.0, 0.6, n)
    day = 2 * np.pi * t / 86400.0
    week = 2 * np.pi * t / (7 * 86400.0)
    a_day = np.where(np.array(families) == "business", rng.uniform(0.2, 0.6, n), rng.uniform(0.0, 0.35, n))
    a_week = rng.uniform(0.0, 0.15, n)
    phase = rng.uniform(0, 2 * np.pi, n)
    trend = rng.normal(0.0, 0.02, n) / 86400.0  # relative change per second
    mean = level[:, None] * (
        1.0
        + a_day[:, None] * np.sin(day[None, :] + phase[:, None])
        + a_week[:, None] * np.sin(week[None, :] + phase[:, None] / 3)
        + trend[:, None] * (t[None, :] - t[0])
    )
    mean = np.maximum(mean, 0.05 * level[:, None])
    cv = rng.uniform(0.03, 0.12, n)
    sigma = cv * level
    heavy = shape == "heavy"
    noise = rng.standard_normal((n, T))
    if heavy.any():
        noise[heavy] = rng.standard_t(3.0, size=(int(heavy.sum()), T)) / np.sqrt(3.0)
    values = mean + sigma[:, None] * noise
    # counts: Poisson around the mean (their noise is the Poisson noise)
    if is_count.any():
        values[is_count] = rng.poisson(mean[is_count]).astype(np.float64)
        sigma[is_count] = np.sqrt(np.mean(mean[is_count], axis=1))
    # spiky periodic cycles: a cron job every 30-120 minutes
    cron = np.flatnonzero(shape == "cron")
    for i in cron:
        period = max(1, int(rng.integers(30, 121)) * 60 // int(step))  # steps (a float or a long step too)
        offset = int(rng.integers(period))
        hits = np.arange(offset, T, period)
        values[i, hits] += level[i] * rng.uniform(1.5, 3.0)
    # plateaus: a gauge that is reported rarely and held in between
    plat = np.flatnonzero(shape == "plateau")
    for i in plat:
        hold = int(rng.integers(5, 20))
        idx = (np.arange(T) // hold) * hold
        values[i] = values[i, idx]
    # missing points: scattered, plus an occasional gap
    miss = rng.random((n, T)) < 0.003
    values[miss] = np.nan
    gaps = rng.choice(n, size=max(1, n // 50), replace=False)
    for i in gaps:
        g0 = int(rng.integers(0, T - 10))
        values[i, g0 : g0 + int(rng.integers(3, 10))] = np.nan
    return values, sigma


def _scopes(
    rng: np.random.Generator, props: list[dict[str, str]], families: list[str], family: str
) -> list[dict[str, str]]:
    """Candidate incident scopes of a family: property sets that many metrics share."""
    idx = [i for i, f in enumerate(families) if f == family]
    if family == "business":
        keys_options = [("country",), ("country", "device"), ("product", "country"), ("os",), ("product",)]
    else:
        keys_options = [("service",), ("host",), ("region", NAME_KEY)]
    out = []
    for keys in keys_options:
        combos: dict[tuple[str, ...], int] = {}
        for i in idx:
            if all(k in props[i] for k in keys):
                key = tuple(props[i][k] for k in keys)
                combos[key] = combos.get(key, 0) + 1
        for key, count in combos.items():
            if count >= 4:
                out.append((dict(zip(keys, key)), count))
    # a weighted shuffle (Efraimidis-Spirakis): broad scopes come up more often than narrow ones
    order = np.argsort(-(rng.random(len(out)) ** (1.0 / np.array([c for _, c in out], dtype=float))))
    return [out[i][0] for i in order]


def simulate_storm(
    seed: int = 0,
    n_metrics: int = 2000,
    n_incidents: int = 10,
    step: int = 60,
    history_steps: int = 1440,
    storm_steps: int = 360,
    start: float = 1_767_225_600.0,  # 2026-01-01T00:00:00Z
    business_share: float = 0.55,
    singleton_rate: float = 2.0,
    max_members: int = 60,
    back_to_back: int = 1,
    concurrent: int = 1,
    weak: int = 1,
    blips: int | None = None,
) -> Storm:
    """Simulate ``n_metrics`` metrics and a storm of ``n_incidents`` incidents in its last ``storm_steps``.

    ``history_steps`` of normal behaviour come first (what a running service already holds).
    ``singleton_rate`` unrelated one-metric anomalies are added per incident. What real data
    showed comes on top: ``back_to_back`` services that fail twice with a quiet gap between
    (two true incidents), ``concurrent`` pairs of unrelated hosts failing in the same minute,
    ``weak`` incidents whose many members each move only 2-4 sigma, and ``blips`` harmless
    one-point blips that no operator would label (default: one per incident; not in the truth).
    """
    if n_metrics < 20:
        raise ValueError("n_metrics must be at least 20")
    if storm_steps < 120:
        raise ValueError("storm_steps must be at least 120 (two hours at one-minute steps)")
    if back_to_back and storm_steps < 180:
        raise ValueError("storm_steps must be at least 180 for back_to_back problems (or pass back_to_back=0)")
    rng = np.random.default_rng(seed)
    n_bus = round(n_metrics * business_share)
    props = _business_names(rng, n_bus)
    props += _infra_names(rng, n_metrics - len(props))
    families = ["business"] * n_bus + ["infra"] * (n_metrics - n_bus)
    families = families[: len(props)]
    T = history_steps + storm_steps
    t = start + step * np.arange(T, dtype=np.float64)
    values, sigma = _baseline(rng, props, families, t, step)
    names = [canonical(p) for p in props]
    world = _World(rng, props, families, names, values, sigma, t, history_steps)
    scopes = {f: _scopes(rng, props, families, f) for f in ("business", "infra")}

    for k in range(n_incidents):
        family = "business" if k % 2 == 0 else "infra"
        picked = world.scope(scopes[family], family, max_members)
        if picked is None:
            continue
        scope, members = picked
        kind = KINDS[int(rng.integers(len(KINDS)))]
        t0 = int(rng.integers(history_steps + 20, T - 70))
        dur = int(rng.integers(15, 70))
        sign = 1 if rng.random() < 0.75 else -1  # most incidents are bad; some are a surge
        world.hit(members, kind, t0, dur, sign, scope, family)

    entity = [sc for sc in scopes["infra"] if set(sc) & {"service", "host"}]
    for _ in range(back_to_back):  # a service fails, recovers, and fails again after a quiet gap
        picked = world.scope(entity, "infra", max_members)
        if picked is None:
            break
        scope, members = picked
        t0 = int(rng.integers(history_steps + 20, T - 150))
        dur = int(rng.integers(15, 25))
        first = world.hit(members, "level_shift", t0, dur, 1, scope, "infra")
        again = [m for m in members if rng.random() < 0.8] or members
        t1 = round((first.end - t[0]) / step) + int(rng.integers(25, 40))
        world.hit(again, "level_shift", min(t1, T - 30), dur, 1, scope, "infra")
    hosts = [sc for sc in scopes["infra"] if set(sc) == {"host"}]
    for _ in range(concurrent):  # two unrelated hosts fail in the same minute, the same way
        t0 = int(rng.integers(history_steps + 20, T - 70))
        dur = int(rng.integers(20, 50))
        for _pair in range(2):
            picked = world.scope(hosts, "infra", max_members)
            if picked is not None:
                world.hit(picked[1], "level_shift", t0, dur, 1, picked[0], "infra")
    for _ in range(weak):  # many metrics of one scope, each moving only a little
        picked = world.scope(scopes["business"], "business", max_members, min_size=15)
        if picked is None:
            break
        t0 = int(rng.integers(history_steps + 20, T - 70))
        world.hit(picked[1], "level_shift", t0, int(rng.integers(30, 60)), -1, picked[0], "business", scale=0.35)

    n_single = round(singleton_rate * n_incidents)
    free = np.flatnonzero(~world.used)
    for i in rng.choice(free, size=min(n_single, len(free)), replace=False):
        kind = ("spike", "level_shift", "drop")[int(rng.integers(3))]
        t0 = int(rng.integers(history_steps + 20, T - 40))
        world.hit(
            [int(i)],
            kind,
            t0,
            int(rng.integers(10, 40)),
            1 if rng.random() < 0.5 else -1,
            {},
            families[int(i)],
            singleton=True,
        )

    harmless = n_incidents if blips is None else blips
    free = np.flatnonzero(~world.used)
    for i in rng.choice(free, size=min(harmless, len(free)), replace=False):
        j = int(rng.integers(history_steps + 20, T - 5))
        values[i, j] += (1 if rng.random() < 0.5 else -1) * rng.uniform(3.5, 5.0) * sigma[i]
    return Storm(
        names=names,
        families=families,
        timestamps=t,
        values=values,
        step=step,
        history_steps=history_steps,
        incidents=world.incidents,
        seed=seed,
    )


class _World:
    """The storm under construction: which metrics are taken and the incidents so far."""

    def __init__(
        self,
        rng: np.random.Generator,
        props: list[dict[str, str]],
        families: list[str],
        names: list[str],
        values: np.ndarray,
        sigma: np.ndarray,
        t: np.ndarray,
        history: int,
    ) -> None:
        self.rng, self.props, self.families, self.names = rng, props, families, names
        self.values, self.sigma, self.t, self.history = values, sigma, t, history
        self.used = np.zeros(len(props), bool)
        self.incidents: list[TruthIncident] = []

    def scope(
        self, scopes: list[dict[str, str]], family: str, max_members: int, min_size: int = 6
    ) -> tuple[dict[str, str], list[int]] | None:
        """The next unused scope with enough free metrics, and the members it hits."""
        for scope in list(scopes):
            in_scope = [
                i
                for i, p in enumerate(self.props)
                if self.families[i] == family and not self.used[i] and all(p.get(a) == b for a, b in scope.items())
            ]
            if len(in_scope) < min_size:
                continue
            scopes.remove(scope)
            affect = self.rng.uniform(0.7, 0.95)
            members = [i for i in in_scope if self.rng.random() < affect]
            self.rng.shuffle(members)
            members = sorted(members[:max_members])
            self.used[in_scope] = True  # distractors stay normal and are not reused
            if len(members) >= 3:
                return scope, members
        return None

    def hit(
        self,
        members: list[int],
        kind: str,
        t0: int,
        dur: int,
        sign: int,
        scope: dict[str, str],
        family: str,
        scale: float = 1.0,
        singleton: bool = False,
    ) -> TruthIncident:
        T = len(self.t)
        lags = np.zeros(1, dtype=np.int64) if singleton else self.rng.integers(0, 4, size=len(members))
        for i, lag in zip(members, lags):
            p = self.props[i]
            polarity = (
                1
                if singleton
                else (
                    BUSINESS_WHAT[p[NAME_KEY]][2] if self.families[i] == "business" else INFRA_METRICS[p[NAME_KEY]][2]
                )
            )
            _apply(self.rng, self.values, self.sigma, i, kind, t0 + int(lag), dur, sign * polarity, scale)
            self.used[i] = True
        inc = TruthIncident(
            id=len(self.incidents),
            members=tuple(self.names[i] for i in members),
            start=float(self.t[t0]),
            end=float(self.t[min(T - 1, t0 + int(lags.max()) + dur)]),
            kind=kind,
            scope=dict(scope),
            family=family,
            singleton=singleton,
            lags=tuple(int(v) for v in lags),
        )
        self.incidents.append(inc)
        return inc


def _apply(
    rng: np.random.Generator,
    values: np.ndarray,
    sigma: np.ndarray,
    i: int,
    kind: str,
    t0: int,
    dur: int,
    direction: int,
    scale: float = 1.0,
) -> None:
    """Put one anomaly of ``kind`` on metric ``i`` from step ``t0`` for ``dur`` steps (``scale``
    shrinks its size: weak anomalies)."""
    T = values.shape[1]
    t1 = min(T, t0 + dur)
    if t0 >= T:
        return
    row = values[i]
    s = sigma[i]
    base = np.nanmedian(row[max(0, t0 - 120) : t0])
    mag = rng.uniform(5.0, 12.0) * scale
    if kind == "level_shift":
        row[t0:t1] += direction * mag * s
    elif kind == "spike":
        width = int(rng.integers(1, 4))
        row[t0 : min(T, t0 + width)] += direction * mag * 1.5 * s
    elif kind == "drop":
        # an outage-like collapse (or a surge): a large fraction of the level
        frac = rng.uniform(0.5, 0.9)
        delta = max(frac * abs(base), mag * s)
        row[t0:t1] += direction * delta
    elif kind == "variance":
        noise = rng.standard_normal(t1 - t0) * s * rng.uniform(5.0, 8.0)
        row[t0:t1] += noise
    elif kind == "trend":
        ramp = np.linspace(0.0, 1.0, t1 - t0) * mag * 1.5 * s
        row[t0:t1] += direction * ramp
    np.maximum(row[t0:t1], 0.0, out=row[t0:t1], where=np.isfinite(row[t0:t1]))
