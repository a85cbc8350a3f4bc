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

With ``cascades=N`` a third family comes on top, a microservice estate in Prometheus naming
(:func:`simulate_cascades`): ``http_requests_total``, ``http_errors_total``,
``http_latency_p99_seconds`` and ``process_cpu_ratio`` per service and region, ``queue_depth``
per service, and one ``traces_service_graph_request_total{client,region,server}`` series per
dependency edge and region. Its services call each other along a random tiered dependency
graph (``Storm.dependencies``, also written as a ``caller,callee`` file by
:meth:`Storm.dependencies_csv`); a cascade starts at one service and spreads to its callers
hop by hop, 1-3 steps a hop, each service's metrics ramping over about 10 steps. Its members
share a region at most, so their names cannot link them. The estate has a random stream of its
own: the other families' values and truth are the same with and without it.

Everything is deterministic for a given seed.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from stormeye.grouping.names import NAME_KEY, canonical

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
    root: str | None = None  # cascades: the service where the problem started (the upstream-most callee)


@dataclass(frozen=True)
class Cascade:
    """How one simulated cascade spread: per service its onset step and the callee it caught it from."""

    incident: int  # the TruthIncident id
    root: str
    region: str
    kind: str  # one of CASCADE_KINDS
    onsets: dict[str, int]  # service -> step (index into Storm.timestamps) where its ramp starts
    parents: dict[str, str]  # caller -> the callee whose failure reached it (the root has none)
    end: int  # step where the root recovers (callers recover their lag later)

    @property
    def services(self) -> list[str]:
        return sorted(self.onsets, key=lambda s: (self.onsets[s], s))


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
    dependencies: list[tuple[str, str]] = field(default_factory=list)  # (caller, callee) of the estate
    cascades: list[Cascade] = field(default_factory=list)

    def dependencies_csv(self) -> str:
        """The estate's dependency graph as an operator's file: a ``caller,callee`` header, one edge a line."""
        return dependencies_csv(self.dependencies)

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
    for i in cron.tolist():
        period = max(1, int(rng.integers(30, 121)) * 60 // int(step))  # steps (a float or a long step too)
        offset = int(rng.integers(period))
        hits = np.arange(offset, T, period)
        values[i, hits] += level[i] * rng.uniform(1.5, 3.0)
    # plateaus: a gauge that is reported rarely and held in between
    plat = np.flatnonzero(shape == "plateau")
    for i in plat.tolist():
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
    cascades: int = 0,
    services: int | None = None,
) -> Storm:
    """Simulate ``n_metrics`` metrics and a storm of ``n_incidents`` incidents in its last ``storm_steps``.

    ``history_steps`` of normal behaviour come first (what a running service already holds).
    ``singleton_rate`` unrelated one-metric anomalies are added per incident. What real data
    showed comes on top: ``back_to_back`` services that fail twice with a quiet gap between
    (two true incidents), ``concurrent`` pairs of unrelated hosts failing in the same minute,
    ``weak`` incidents whose many members each move only 2-4 sigma, and ``blips`` harmless
    one-point blips that no operator would label (default: one per incident; not in the truth).

    ``cascades`` > 0 adds the microservice estate of :func:`simulate_cascades` (``services``
    services, default 24-40 at random) with that many cascades, its metrics after the others and
    its incidents after theirs. It draws from a random stream of its own, so everything else is
    the same as with ``cascades=0``.
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
    storm = Storm(
        names=names,
        families=families,
        timestamps=t,
        values=values,
        step=step,
        history_steps=history_steps,
        incidents=world.incidents,
        seed=seed,
    )
    if cascades > 0:
        estate = simulate_cascades(seed, t, history_steps, cascades, n_services=services, first_id=len(storm.incidents))
        storm.names = storm.names + estate.names
        storm.families = storm.families + ["cascade"] * len(estate.names)
        storm.values = np.vstack([storm.values, estate.values])
        storm.incidents = storm.incidents + estate.incidents
        storm.dependencies = estate.dependencies
        storm.cascades = estate.cascades
    return storm


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


# --- the microservice estate and its cascades (issue 17) -------------------------------------

CASCADE_KINDS = ("errors", "latency", "traffic_drop", "saturation")
ESTATE_REGIONS = ("us-east", "eu", "ap")
ESTATE_METRICS = ("http_requests_total", "http_errors_total", "http_latency_p99_seconds", "process_cpu_ratio")
QUEUE_METRIC = "queue_depth"  # per service, no region: a shared broker queue
SERVICE_GRAPH_METRIC = "traces_service_graph_request_total"  # {client, region, server}: one series per edge
FRONTENDS = ["web", "mobile-bff", "partner-api", "admin-portal", "storefront", "graphql-edge"]
MIDTIER = [
    "order-svc",
    "cart-svc",
    "checkout-svc",
    "payment-svc",
    "user-svc",
    "search-svc",
    "catalog-svc",
    "pricing-svc",
    "promo-svc",
    "review-svc",
    "wishlist-svc",
    "loyalty-svc",
    "fraud-svc",
    "tax-svc",
    "shipping-svc",
    "quote-svc",
    "media-svc",
    "feed-svc",
    "ads-svc",
    "recommend-svc",
    "identity-svc",
    "invoice-svc",
    "refund-svc",
    "stock-svc",
    "geo-svc",
    "notify-svc",
]
BACKENDS = [
    "orders-db",
    "users-db",
    "catalog-db",
    "payments-db",
    "ledger-db",
    "inventory-db",
    "session-cache",
    "product-cache",
    "search-index",
    "event-bus",
    "blob-store",
    "geo-db",
    "rate-limiter",
    "config-store",
]
# what a failing service of each kind shows: (metric, probability that it shows it)
CASCADE_EFFECTS = {
    "errors": (("http_errors_total", 1.0), ("http_latency_p99_seconds", 0.4)),
    "latency": (("http_latency_p99_seconds", 1.0), (QUEUE_METRIC, 0.3)),
    "traffic_drop": (("http_requests_total", 1.0), ("process_cpu_ratio", 0.4)),
    "saturation": (("process_cpu_ratio", 1.0), (QUEUE_METRIC, 0.6)),
}
HOP_LAG_STEPS = (1, 3)  # a caller fails 1-3 steps after its callee
RAMP_STEPS = (8, 12)  # each hit metric ramps to its full change over about 10 steps
CASCADE_SIZE = (3, 7)  # services per cascade


@dataclass
class Estate:
    """The microservice estate of :func:`simulate_cascades`: its metrics and the cascades in them."""

    names: list[str]
    values: np.ndarray  # (len(names), T)
    incidents: list[TruthIncident]
    dependencies: list[tuple[str, str]]  # (caller, callee), sorted
    cascades: list[Cascade]
    tiers: list[list[str]]  # frontends, API tier, domain tier, backends
    regions: list[str]


def dependencies_csv(edges: list[tuple[str, str]]) -> str:
    """``caller,callee`` edges as CSV text with a header line (the operator's dependency file; the
    caller writes it where it wants: the simulator does no I/O)."""
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(["caller", "callee"])
    out.writerows(edges)
    return buf.getvalue()


def service_graph(rng: np.random.Generator, n_services: int) -> tuple[list[list[str]], list[tuple[str, str]]]:
    """A random tiered dependency DAG: frontends call API services call domain services call
    backends (a quarter of the calls skip a tier); every service below the frontends has a caller."""
    if not 10 <= n_services <= 40:
        raise ValueError("services must be between 10 and 40")
    n_front = int(rng.integers(3, 6))
    n_back = max(3, round(0.3 * n_services))
    n_mid = n_services - n_front - n_back
    front = [str(x) for x in rng.choice(FRONTENDS, n_front, replace=False)]
    mid = [str(x) for x in rng.choice(MIDTIER, n_mid, replace=False)]
    back = [str(x) for x in rng.choice(BACKENDS, n_back, replace=False)]
    tiers = [front, mid[: n_mid // 2], mid[n_mid // 2 :], back]
    edges: set[tuple[str, str]] = set()
    for k in range(3):
        for caller in tiers[k]:
            lo, hi = (2, 5) if k == 0 else (1, 3)
            for _ in range(int(rng.integers(lo, hi + 1))):
                tier = k + 1 if k == 2 or rng.random() < 0.75 else int(rng.integers(k + 2, 4))
                edges.add((caller, tiers[tier][int(rng.integers(len(tiers[tier])))]))
    for k in range(1, 4):
        called = {b for _, b in edges}
        for callee in tiers[k]:
            if callee not in called:
                edges.add((tiers[k - 1][int(rng.integers(len(tiers[k - 1])))], callee))
    return tiers, sorted(edges)


def simulate_cascades(
    seed: int,
    t: np.ndarray,
    history_steps: int,
    n_cascades: int,
    n_services: int | None = None,
    regions: tuple[str, ...] = ESTATE_REGIONS,
    first_id: int = 0,
) -> Estate:
    """A microservice estate over timestamps ``t`` with ``n_cascades`` cascades after ``history_steps``.

    Metrics: ``http_requests_total``, ``http_errors_total`` (per-step increments, what ``rate``
    gives), ``http_latency_p99_seconds`` and ``process_cpu_ratio`` per service and region,
    ``queue_depth`` per service, and ``traces_service_graph_request_total{client,region,server}``
    per dependency edge and region: steady request rates, never hit by a cascade and never in the
    truth (topology a mesh or tracing setup exports, not symptoms).

    A cascade starts at a service with callers (its root, a callee) in one region and spreads to
    a random non-empty subset of the callers of each failing service, hop by hop, each 1-3 steps
    later, 3-7 services in all. Its kind (errors up, latency up, traffic drop, saturation: cpu and
    queue up) says which metrics of each service it hits; each ramps over 8-12 steps, holds, and
    recovers in 5 steps. Cascades come in pairs that start within 3 steps of each other; cascades
    overlapping in time have services of their own, and no service of one calls or is called by a
    service of the other (no path between them inside the cascades); cascades apart in time may
    hit the same services again. Each
    cascade is one :class:`TruthIncident` of family ``cascade`` with its ``root`` service.

    Draws from ``np.random.default_rng([seed, 17])`` only.
    """
    rng = np.random.default_rng([seed, 17])
    T = len(t)
    regions = tuple(regions)
    tiers, edges = service_graph(rng, int(rng.integers(24, 41)) if n_services is None else n_services)
    services = [s for tier in tiers for s in tier]
    tier_of = {s: k for k, tier in enumerate(tiers) for s in tier}
    callers: dict[str, list[str]] = {s: [] for s in services}
    neighbours: dict[str, set[str]] = {s: set() for s in services}
    for a, b in edges:
        callers[b].append(a)
        neighbours[a].add(b)
        neighbours[b].add(a)

    # normal behaviour: traffic with a daily cycle per region, and what follows from it
    day = 2 * np.pi * (t - t[0]) / 86400.0
    diurnal = {r: 1.0 + rng.uniform(0.2, 0.4) * np.sin(day + rng.uniform(0, 2 * np.pi)) for r in regions}
    share = {r: rng.uniform(0.6, 1.4) for r in regions}
    level = {s: rng.uniform(400.0, 3000.0) * (2.0 if tier_of[s] == 0 else 1.0) for s in services}
    names: list[str] = []
    means: list[np.ndarray] = []
    noise: list[tuple[str, float]] = []  # ("count", 0) | ("lognormal", sigma) | ("ratio", sigma)
    row: dict[tuple[str, str, str], int] = {}

    def add(props: dict[str, str], mean: np.ndarray, how: tuple[str, float]) -> None:
        if "service" in props:
            row[(props[NAME_KEY], props["service"], props.get("region", ""))] = len(names)
        names.append(canonical(props))
        means.append(mean)
        noise.append(how)

    for s in services:
        err_ratio, latency, cpu = rng.uniform(0.003, 0.02), rng.uniform(0.05, 0.6), rng.uniform(0.15, 0.45)
        lat_sigma, cpu_cv = rng.uniform(0.06, 0.12), rng.uniform(0.03, 0.06)
        for r in regions:
            req = level[s] * share[r] * rng.uniform(0.8, 1.2) * diurnal[r]
            labels = {"service": s, "region": r}
            add({NAME_KEY: "http_requests_total", **labels}, req, ("count", 0.0))
            add({NAME_KEY: "http_errors_total", **labels}, req * err_ratio, ("count", 0.0))
            add(
                {NAME_KEY: "http_latency_p99_seconds", **labels},
                latency * (1.0 + 0.1 * (diurnal[r] - 1.0)),
                ("lognormal", lat_sigma),
            )
            add({NAME_KEY: "process_cpu_ratio", **labels}, cpu * (0.7 + 0.3 * diurnal[r]), ("ratio", cpu * cpu_cv))
        overall = np.mean([diurnal[r] for r in regions], axis=0)
        add({NAME_KEY: QUEUE_METRIC, "service": s}, rng.uniform(5.0, 40.0) * overall, ("count", 0.0))
    for a, b in edges:
        for r in regions:
            rate = level[a] * share[r] * rng.uniform(0.2, 1.0) * diurnal[r]
            add({NAME_KEY: SERVICE_GRAPH_METRIC, "client": a, "region": r, "server": b}, rate, ("count", 0.0))
    mean = np.vstack(means)

    # the cascades: when, where, how they spread
    idx = np.arange(T)
    dur_hi = max(31, min(70, (T - history_steps) // 3))
    placed: list[tuple[int, int, set[str]]] = []  # (first step, last step, services)
    incidents: list[TruthIncident] = []
    cascades: list[Cascade] = []
    t0 = history_steps + 20
    region = regions[0]
    for k in range(n_cascades):
        dur = int(rng.integers(30, dur_hi + 1))
        if k % 2 == 1:  # the partner of the previous one: starts within 3 steps, unrelated
            t0 = min(t0 + int(rng.integers(0, 4)), T - dur - 30)
            region = region if rng.random() < 0.5 else regions[int(rng.integers(len(regions)))]
        else:
            t0 = int(rng.integers(history_steps + 20, max(history_steps + 21, T - dur - 30)))
            region = regions[int(rng.integers(len(regions)))]
        grown = _place(rng, services, tier_of, callers, neighbours, placed, t0, dur)
        for _retry in range(5):  # no room beside the cascades of that time: another time
            if grown is not None:
                break
            t0 = int(rng.integers(history_steps + 20, max(history_steps + 21, T - dur - 30)))
            grown = _place(rng, services, tier_of, callers, neighbours, placed, t0, dur)
        if grown is None:
            continue  # no room left in the estate for another cascade at this time
        onsets, parents = grown
        kind = CASCADE_KINDS[int(rng.integers(len(CASCADE_KINDS)))]
        members: list[str] = []
        lags: list[int] = []
        last = t0
        for s in sorted(onsets, key=lambda x: (onsets[x], x)):
            o = onsets[s]
            hop, up = 0, s
            while up in parents:
                hop, up = hop + 1, parents[up]
            fade = max(0.7, 0.9**hop)  # farther callers feel a little less of it
            end = o + dur
            ramp = np.clip((idx - o + 1) / int(rng.integers(RAMP_STEPS[0], RAMP_STEPS[1] + 1)), 0.0, 1.0)
            p = np.minimum(ramp, np.clip(1.0 - (idx - end) / 5.0, 0.0, 1.0))
            last = max(last, end + 5)
            drop = rng.uniform(0.5, 0.85) * fade
            for metric, prob in CASCADE_EFFECTS[kind]:
                if prob < 1.0 and rng.random() >= prob:
                    continue
                j = row[(metric, s, "" if metric == QUEUE_METRIC else region)]
                req = mean[row[("http_requests_total", s, region)]]
                if metric == "http_errors_total":
                    mean[j] += req * rng.uniform(0.08, 0.3) * fade * p
                elif metric == "http_latency_p99_seconds":
                    mean[j] *= 1.0 + rng.uniform(2.0, 5.0) * fade * p
                elif metric == "http_requests_total":
                    mean[j] *= 1.0 - drop * p
                elif metric == "process_cpu_ratio" and kind == "traffic_drop":
                    mean[j] *= 1.0 - 0.8 * drop * p
                elif metric == "process_cpu_ratio":
                    mean[j] += (0.97 - mean[j]) * rng.uniform(0.6, 0.95) * fade * p
                else:  # queue_depth
                    mean[j] *= 1.0 + rng.uniform(3.0, 10.0) * fade * p
                members.append(names[j])
                lags.append(o - t0)
        placed.append((t0, last, set(onsets)))
        root = next(s for s in onsets if s not in parents)
        incidents.append(
            TruthIncident(
                id=first_id + len(incidents),
                members=tuple(members),
                start=float(t[t0]),
                end=float(t[min(T - 1, last)]),
                kind=kind,
                scope={},  # queue_depth has no region: the members share nothing for sure
                family="cascade",
                lags=tuple(lags),
                root=root,
            )
        )
        cascades.append(Cascade(incidents[-1].id, root, region, kind, onsets, parents, t0 + dur))

    # noise on top of the (now disturbed) means
    values = np.empty_like(mean)
    for j, (how, sigma) in enumerate(noise):
        if how == "count":
            values[j] = rng.poisson(np.maximum(mean[j], 0.0))
        elif how == "lognormal":
            values[j] = mean[j] * np.exp(sigma * rng.standard_normal(T) - sigma**2 / 2)
        else:
            values[j] = np.clip(mean[j] + sigma * rng.standard_normal(T), 0.0, 1.0)
    values[rng.random(values.shape) < 0.003] = np.nan
    return Estate(names, values, incidents, edges, cascades, tiers, list(regions))


def _place(
    rng: np.random.Generator,
    services: list[str],
    tier_of: dict[str, int],
    callers: dict[str, list[str]],
    neighbours: dict[str, set[str]],
    placed: list[tuple[int, int, set[str]]],
    t0: int,
    dur: int,
) -> tuple[dict[str, int], dict[str, str]] | None:
    """A cascade of at least 3 services starting at step ``t0``, away from the cascades overlapping it."""
    blocked: set[str] = set()  # the services of cascades overlapping this one in time, and their neighbours
    for a0, a1, svcs in placed:
        if a0 <= t0 + dur + 30 and t0 <= a1:
            blocked |= svcs
            for s in svcs:
                blocked |= neighbours[s]
    roots = [s for s in services if tier_of[s] > 0 and s not in blocked and any(c not in blocked for c in callers[s])]
    for i in rng.permutation(len(roots)):
        grown = _spread(rng, roots[int(i)], t0, callers, blocked)
        if len(grown[0]) >= CASCADE_SIZE[0]:
            return grown
    return None


def _spread(
    rng: np.random.Generator, root: str, t0: int, callers: dict[str, list[str]], blocked: set[str]
) -> tuple[dict[str, int], dict[str, str]]:
    """Grow a cascade from ``root`` to its callers, hop by hop: (onset step per service, parent per caller)."""
    target = int(rng.integers(CASCADE_SIZE[0], CASCADE_SIZE[1] + 1))
    onsets = {root: t0}
    parents: dict[str, str] = {}
    frontier = [root]
    while frontier and len(onsets) < target:
        nxt = []
        for s in frontier:
            cands = [c for c in callers[s] if c not in blocked and c not in onsets]
            if not cands:
                continue
            keep = [c for c in cands if rng.random() < 0.6] or [cands[int(rng.integers(len(cands)))]]
            for c in keep:
                if len(onsets) >= target:
                    break
                onsets[c] = onsets[s] + int(rng.integers(HOP_LAG_STEPS[0], HOP_LAG_STEPS[1] + 1))
                parents[c] = s
                nxt.append(c)
        frontier = nxt
    return onsets, parents
