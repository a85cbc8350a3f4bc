"""One settings object for the whole service, read from ``STORMEYE_*`` environment variables.

Embedded defaults need nothing installed: a SQLite file in the working directory, the
in-process window store and the tick in the same process.
"""

from __future__ import annotations

import dataclasses
import json
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from stormeye.core.labels import DEFAULT_LIMITS, LabelLimits
from stormeye.detectors.rules import DetectorRuleError, DetectorRules
from stormeye.grouping.graph import GroupingConfig
from stormeye.grouping.graphite import GraphiteTemplateError, GraphiteTemplates
from stormeye.grouping.priority import DEFAULT_RULES, PriorityConfigError, PriorityModel
from stormeye.grouping.topology import DependencyError, Topology, parse_dependencies

#: the grouping settings: Settings field (``STORMEYE_<FIELD>``) -> the GroupingConfig field it sets. Their
#: defaults are GroupingConfig's (grouping/graph.py), read from there: each default lives once.
GROUPING_SETTINGS: dict[str, str] = {
    **{
        name: name
        for name in (
            "min_name",
            "min_shape",
            "co_onset_s",
            "shape_points",
            "max_lag_steps",
            "link_window_s",
            "resolve_after_s",
            "open_min_evidence",
            "confirm_points",
            "unconfirmed_weight",
            "open_after_points",
            "open_after_min_weight",
            "open_alone_level",
            "open_alone_points",
            "topology_weight",
            "cascade_window_s",
            "new_onset_gap_steps",
        )
    },
    "grouping_threads": "threads",
}
_GROUPING: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(GroupingConfig)}


class Settings(BaseSettings):
    """Every knob of stormeye; each field is the env var ``STORMEYE_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="STORMEYE_", extra="ignore")

    mode: Literal["embedded", "distributed"] = "embedded"
    database_url: str = "sqlite:///stormeye.db"
    redis_url: str = "redis://127.0.0.1:6379/0"

    # time
    step_s: int = Field(60, ge=1, description="seconds between two points of a metric (the window step)")
    tick_s: float = Field(60.0, gt=0, description="seconds between two ticks of the live service")
    max_catchup_steps: int = Field(
        120,
        ge=1,
        description="most steps the live tick scores to catch up (after a restart, or a first point far in the "
        "past); older steps stay unscored history: replay them with `stormeye ingest`",
    )
    grace_s: float = Field(0.0, ge=0, description="how long a tick waits for late points of a step")
    retention_points: int = Field(
        480,
        ge=32,
        description="points kept per metric in the window store; when not set, it grows (up to "
        f"{1024}) to hold two seasons at coarse steps, so the seasonal detectors can run (docs/detectors.md)",
    )
    max_future_s: float = Field(300.0, ge=0, description="points further ahead of the clock are rejected")

    # detection
    detector: str = Field(
        "default", description="'default' (the ensemble) or one strategy for an ablation: robust_z, seasonal, ..."
    )
    season_s: int = Field(86_400, ge=2, description="the seasonal detectors' period in seconds (a day)")
    season_step_s: int = Field(
        300,
        ge=0,
        description="at steps finer than this, the seasonal reference reads earlier days from a second, coarse "
        "history of bucket means (5-minute means at 60 s: 2.4 kB a metric for two days) instead of windows "
        "too long to keep; 0 turns it off (docs/detectors.md)",
    )
    seasonal_rule: Literal["lead", "cauchy", "consensus"] = Field(
        "lead",
        description="how the ensemble joins its seasonal members: lead (the seasonal reference leads, "
        "Holt-Winters corroborates), cauchy (either carries: recall) or consensus (both must agree: quiet)",
    )
    seasonal_split: float = Field(
        4.0,
        ge=0,
        description="where the two earlier days disagree by more than this many of their usual differences, the "
        "seasonal reference takes the day nearer today's value (no echo of yesterday's incident; a failure "
        "repeating at the same time of day is then not news); 0 turns it off",
    )
    detector_rules_file: Path | None = Field(
        None, description="per-metric detection settings by label matchers, JSON (docs/detectors.md)"
    )
    recurrence_memory_s: int = Field(
        0,
        ge=0,
        description="how far back the robust z-score looks for earlier episodes of a deviation (a burst seen "
        "twice in that time is routine, not news); 0: its own history (240 points: 4 h at 60 s). 86400 silences "
        "bursts that recur within a day; retention grows to hold it (docs/detectors.md)",
    )
    threshold: float = Field(0.5, gt=0, le=1, description="score at which an anomaly opens")
    release: float = Field(0.3, gt=0, le=1, description="score below which an anomaly starts to close")
    quiet_steps: int = Field(5, ge=1, description="steps below release before an anomaly closes")
    symptoms: bool = Field(
        True,
        description="while a machine (host, instance, node, pod, container) has an open incident, its other "
        "metrics join it from the release level as symptoms (they never open, link or date an incident; "
        "docs/grouping.md)",
    )
    collective: bool = Field(True, description="raise metrics that move with a surprising crowd of their group")
    collective_halflife_steps: float = Field(1440.0, gt=0, description="memory of each group's usual crowd")
    calibration_halflife_s: float = Field(
        0.0,
        ge=0,
        description="memory of the tail ledger that calibrates every metric's scores against how often it "
        "reached them over its last days, e.g. 259200 (3 days); 0 (the default): off, the detector's scores "
        "stand (docs/detectors.md, 'What a score means': measured, it trades recall for quiet as a higher "
        "threshold does)",
    )

    # grouping: defaults from GroupingConfig (GROUPING_SETTINGS)
    min_name: float = Field(_GROUPING["min_name"], ge=0, le=1)
    min_shape: float = Field(_GROUPING["min_shape"], ge=-1, le=1)
    co_onset_s: float = Field(
        _GROUPING["co_onset_s"], description="onsets this close link without a shape match (<0: never)"
    )
    shape_points: int = Field(_GROUPING["shape_points"], ge=8)
    max_lag_steps: int = Field(_GROUPING["max_lag_steps"], ge=0)
    link_window_s: float = Field(_GROUPING["link_window_s"], ge=0)
    resolve_after_s: float = Field(_GROUPING["resolve_after_s"], ge=0)
    open_min_evidence: float = Field(
        _GROUPING["open_min_evidence"],
        ge=0,
        description="evidence a cluster of anomalies needs to open an incident (a page): the sum over its metrics "
        "of peak score x priority weight; one ordinary metric never reaches 2 alone (0: every anomaly pages)",
    )
    confirm_points: int = Field(
        _GROUPING["confirm_points"], ge=1, description="samples an anomaly needs before its evidence counts fully"
    )
    unconfirmed_weight: float = Field(
        _GROUPING["unconfirmed_weight"],
        ge=0,
        le=1,
        description="share of its evidence an anomaly seen on fewer samples counts",
    )
    open_after_points: int = Field(
        _GROUPING["open_after_points"],
        ge=0,
        description="a waiting anomaly on a metric of weight open_after_min_weight or more seen on this many "
        "samples opens an incident whatever its evidence (0: never)",
    )
    open_after_min_weight: float = Field(
        _GROUPING["open_after_min_weight"],
        ge=0,
        description="priority weight a metric needs for open_after_points (0: any metric)",
    )
    open_alone_level: float = Field(
        _GROUPING["open_alone_level"],
        ge=0,
        description="a waiting anomaly whose level (-log10(p)/10) reached this and that was seen on "
        "open_alone_points samples opens an incident on its own, whatever its metric (0: never)",
    )
    open_alone_points: int = Field(
        _GROUPING["open_alone_points"], ge=1, description="samples an anomaly needs for open_alone_level"
    )
    grouping_threads: int = Field(
        _GROUPING["threads"],
        ge=1,
        description="threads for the evidence of a tick's candidate pairs (results do not depend on it)",
    )
    priority_rules_file: Path | None = None
    dependencies_file: Path | None = Field(
        None,
        description="the service dependency graph: a CSV of 'caller,callee' lines (header, weight column allowed)",
    )
    topology_weight: float = Field(
        _GROUPING["topology_weight"],
        ge=0,
        le=1,
        description="name evidence lent to anomalies of services adjacent in the topology (0: off)",
    )
    cascade_window_s: float = Field(
        _GROUPING["cascade_window_s"],
        ge=0,
        description="onsets of two adjacent services this close (and at least one step) may link",
    )
    cooccur_min: int = Field(
        4, ge=0, description="onsets together before history links two services (0: do not learn from history)"
    )
    new_onset_gap_steps: int = Field(
        _GROUPING["new_onset_gap_steps"],
        ge=0,
        description="a cluster starting this many steps after its incident's newest onset is a new problem",
    )
    graphite_templates: list[str] = Field(
        default_factory=list,
        description='templates for dotted Graphite names, as a JSON list: ["servers.* .host.measurement*"]',
    )

    ingest_prefetch: bool | None = Field(
        None,
        description="stormeye ingest scores blocks of steps ahead in two forked processes while it groups: "
        "unset = on Linux when the machine has a second core and the process runs no other thread; false = never; "
        "true = whenever the platform can fork (docs/ingest.md)",
    )

    # distributed mode (docs/distributed.md)
    shards: int = Field(16, ge=1, le=4096, description="metric shards: one scoring task per shard and step")
    redis_prefix: str = Field("stormeye", min_length=1, description="namespace of every Redis key and queue")
    visibility_timeout_s: float = Field(
        300.0, gt=0, description="a task unacknowledged this long (its worker died) is delivered again"
    )
    prefetch: int = Field(1, ge=1, description="tasks a worker process reserves ahead (Celery prefetch multiplier)")
    ingest_wait_s: float = Field(
        10.0, ge=0, description="how long a tick waits for accepted points of its step that are not yet stored"
    )
    resend_after_s: float = Field(120.0, gt=0, description="a step still unfinished this long is handed out again")
    task_retries: int = Field(8, ge=0, description="retries (with backoff) of a task on Redis or database errors")
    poison_attempts: int = Field(
        3,
        ge=1,
        description="a step whose correlate fails this often for a reason other than a lost connection is "
        "dead-lettered with the reason, and the tick goes on with the next step",
    )

    # the edges: auth, limits, inputs from Prometheus, Alertmanager and Graphite (docs/ingest.md)
    api_token: str | None = Field(
        None, description="bearer token every endpoint but /healthz, /readyz and /metrics requires (its name: api)"
    )
    api_tokens: str | None = Field(
        None, description='named bearer tokens, "alice=tok1,bob=tok2": the name is who acted (request.state.actor)'
    )
    max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="largest request body accepted (after snappy decompression too)"
    )
    max_name_chars: int = Field(
        DEFAULT_LIMITS.name_chars,
        ge=64,
        description="longest metric name accepted, as sent (characters); longer ones are rejected",
    )
    max_labels: int = Field(
        DEFAULT_LIMITS.labels, ge=2, description="most labels one series may have, its metric name included"
    )
    max_label_value_chars: int = Field(
        DEFAULT_LIMITS.value_chars, ge=64, description="longest label value (and metric name) accepted, in characters"
    )
    http_keepalive_s: int = Field(
        330,
        ge=1,
        description="how long serve keeps an idle HTTP connection open: longer than senders keep theirs "
        "(Prometheus' remote write: 5 minutes), so the sender closes first and never writes into a "
        "connection the server is closing (uvicorn's 5 s default reset Prometheus' batches)",
    )
    max_inflight_requests: int = Field(
        32,
        ge=1,
        description="ingest requests (points, remote write) served at once; more get 429 with Retry-After",
    )
    max_pending_batches: int = Field(
        10_000,
        ge=1,
        description="distributed mode: accepted batches waiting for the workers; beyond, points get 503 with "
        "Retry-After (the workers are behind)",
    )
    graphite_port: int | None = Field(
        None, ge=0, le=65535, description="TCP port of the Graphite plaintext listener (off when unset; 0: any free)"
    )
    graphite_host: str = Field(
        "127.0.0.1",
        description="address the Graphite listener binds (beyond this machine only with a token or --insecure, "
        "as serve's own address: the plaintext protocol has no authentication)",
    )
    graphite_max_connections: int = Field(
        1000, ge=1, description="Graphite connections held at once; more are closed at once (logged every 10 s)"
    )
    graphite_idle_s: float = Field(
        300.0, gt=0, description="a Graphite connection that sends nothing this long is closed"
    )
    alert_fingerprint_ignore: list[str] = Field(
        default_factory=lambda: ["severity", "prometheus", "replica", "alertstate"],
        description="labels left out of an alert's fingerprint and metric name, as a JSON list: they say how "
        "loud or from which replica, not what is wrong (kept in the anomaly's evidence)",
    )
    alert_mapping: dict[str, str] = Field(
        default_factory=dict,
        description="where the generic alert endpoint finds each field, as JSON: "
        '{"name": "check", "labels": "tags", "starts_at": "since", "ends_at": "until", "status": "state"}',
    )
    # notifications (docs/notify.md)
    notify_config: Path | None = Field(
        None,
        description="the routing tree, receivers and inhibit rules (YAML, Alertmanager's shape); unset: none sent",
    )
    public_url: str = Field("", description="where people open the web page; links in notifications point there")
    notify_interval_s: float = Field(5.0, gt=0, description="seconds between two passes of the notifier")
    notify_timeout_s: float = Field(10.0, gt=0, description="how long one send to a receiver may take")
    notify_max_attempts: int = Field(12, ge=1, description="tries of one notification before it is given up")
    notify_backoff_s: float = Field(1.0, gt=0, description="first retry delay after a receiver error (then doubled)")
    notify_backoff_max_s: float = Field(300.0, gt=0, description="longest delay between two tries")

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, v: str) -> str:
        from urllib.parse import urlsplit

        scheme = urlsplit(v).scheme
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"STORMEYE_REDIS_URL={v!r} is not a Redis URL: use redis://host:6379/0, "
                "rediss://host:6380/0 (TLS) or unix:///path/to/redis.sock"
            )
        if scheme != "unix":
            try:
                urlsplit(v).port  # noqa: B018 - raises on a port that is not a number
            except ValueError:
                raise ValueError(f"STORMEYE_REDIS_URL={v!r}: the port must be a number such as 6379") from None
            if not urlsplit(v).hostname:
                raise ValueError(f"STORMEYE_REDIS_URL={v!r} names no host: use redis://host:6379/0")
        return v

    @field_validator("alert_mapping")
    @classmethod
    def _alert_mapping(cls, v: dict[str, str]) -> dict[str, str]:
        known = ("alerts", "name", "labels", "starts_at", "ends_at", "status", "annotations")
        unknown = sorted(set(v) - set(known))
        if unknown:
            raise ValueError(f"STORMEYE_ALERT_MAPPING: unknown field(s) {unknown}; map any of {list(known)}")
        if not all(isinstance(p, str) and p for p in v.values()):
            raise ValueError(
                "STORMEYE_ALERT_MAPPING: each field maps to a non-empty path such as 'tags' or 'data.since'"
            )
        return v

    @field_validator("redis_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not all(c.isalnum() or c in "-_." for c in v):
            raise ValueError(f"STORMEYE_REDIS_PREFIX={v!r}: use letters, digits, '-', '_' and '.' only")
        return v

    @field_validator("database_url")
    @classmethod
    def _db_url(cls, v: str) -> str:
        if "://" not in v:
            raise ValueError(
                "STORMEYE_DATABASE_URL must be a URL such as sqlite:///stormeye.db or postgresql+psycopg://user@host/db"
            )
        if v.startswith("postgresql://"):
            v = "postgresql+psycopg://" + v[len("postgresql://") :]
        return v

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if "retention_points" not in self.model_fields_set:
            self.retention_points = auto_retention(self.step_s, self.season_s, self.retention_points)
            self.retention_points = max(self.retention_points, self.recurrence_memory_points + 1)
        elif self.recurrence_memory_points + 1 > self.retention_points:
            raise ValueError(
                f"STORMEYE_RECURRENCE_MEMORY_S={self.recurrence_memory_s} is {self.recurrence_memory_points} points "
                f"at a {self.step_s} s step; STORMEYE_RETENTION_POINTS={self.retention_points} keeps fewer: raise it "
                f"to at least {self.recurrence_memory_points + 1}, or lower the memory"
            )
        if self.release > self.threshold:
            raise ValueError(f"STORMEYE_RELEASE ({self.release}) must not exceed STORMEYE_THRESHOLD ({self.threshold})")
        if self.graphite_templates:
            try:
                GraphiteTemplates(self.graphite_templates)
            except GraphiteTemplateError as exc:
                raise ValueError(f"STORMEYE_GRAPHITE_TEMPLATES: {exc}") from None
        if self.dependencies_file is not None:
            self.dependencies  # noqa: B018 - a bad line fails at start, with its line number
        if self.shape_points > self.retention_points:
            raise ValueError("STORMEYE_SHAPE_POINTS must not exceed STORMEYE_RETENTION_POINTS")
        return self

    @property
    def recurrence_memory_points(self) -> int:
        """``recurrence_memory_s`` in points of the step (0: the detector's own history)."""
        return self.recurrence_memory_s // self.step_s

    def grouping_config(self) -> GroupingConfig:
        """The grouping thresholds these settings set (:data:`GROUPING_SETTINGS`); the rest at their defaults."""
        return GroupingConfig(**{g: getattr(self, f) for f, g in GROUPING_SETTINGS.items()})

    def topology(self) -> Topology:
        """A new service topology holding the declared dependencies (``STORMEYE_DEPENDENCIES_FILE``);
        the tracker adds what service-graph metrics and history teach."""
        return Topology(self.dependencies, cooccur_min=self.cooccur_min)

    @property
    def label_limits(self) -> LabelLimits:
        """How large a metric name may be (``max_name_chars``, ``max_labels``, ``max_label_value_chars``)."""
        return LabelLimits(self.max_name_chars, self.max_labels, self.max_label_value_chars)

    @cached_property
    def dependencies(self) -> list[tuple[str, str]]:
        """``(caller, callee)`` edges of ``STORMEYE_DEPENDENCIES_FILE`` (empty when unset)."""
        if self.dependencies_file is None:
            return []
        path = Path(self.dependencies_file)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise DependencyError(f"STORMEYE_DEPENDENCIES_FILE: {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise DependencyError(f"STORMEYE_DEPENDENCIES_FILE: {path} cannot be read ({exc})") from None
        return parse_dependencies(text, str(path))

    @cached_property
    def graphite(self) -> GraphiteTemplates | None:
        """The Graphite templates, or None when dotted names stay single metric names."""
        if not self.graphite_templates:
            return None
        try:
            return GraphiteTemplates(self.graphite_templates)
        except GraphiteTemplateError as exc:
            raise ValueError(f"STORMEYE_GRAPHITE_TEMPLATES: {exc}") from None

    @cached_property
    def detector_rules(self) -> DetectorRules:
        """Per-metric detection settings from ``STORMEYE_DETECTOR_RULES_FILE`` (empty when unset)."""
        if self.detector_rules_file is None:
            return DetectorRules()
        path = Path(self.detector_rules_file)
        try:
            data: Any = json.loads(path.read_text())
        except FileNotFoundError:
            raise DetectorRuleError(f"STORMEYE_DETECTOR_RULES_FILE: {path} does not exist") from None
        except json.JSONDecodeError as exc:
            raise DetectorRuleError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        try:
            return DetectorRules.from_config(data)
        except DetectorRuleError as exc:
            raise DetectorRuleError(f"{path}: {exc}") from None

    @cached_property
    def priority_model(self) -> PriorityModel:
        if self.priority_rules_file is None:
            return PriorityModel(DEFAULT_RULES)
        path = Path(self.priority_rules_file)
        try:
            data: Any = json.loads(path.read_text())
        except FileNotFoundError:
            raise PriorityConfigError(f"STORMEYE_PRIORITY_RULES_FILE: {path} does not exist") from None
        except json.JSONDecodeError as exc:
            raise PriorityConfigError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        rules = data.get("rules") if isinstance(data, dict) else data
        if not isinstance(rules, list):
            raise PriorityConfigError(f"{path}: expected a list of rules or an object with a 'rules' list")
        return PriorityModel.from_config(rules)


def auto_retention(step_s: int, season_s: int, default: int = 480) -> int:
    """Retention that holds the seasonal detectors' windows when that costs at most 1,024 points
    (:func:`detectors.default_window_points`, which ``score_series`` sizes its default detector by too)."""
    from stormeye.detectors import default_window_points

    return default_window_points(step_s, season_s, default)


def get_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with explicit overrides (CLI options) on top."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
