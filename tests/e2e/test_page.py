"""The on-call page in Debian's Chromium (headless, driven by playwright): the service fed a
simulated storm; the list in priority order; an incident with a chart per member and the
evidence graph; acknowledging it; the metric search; and how fast the page draws 1,000 incidents
and a 200-member incident (measured and printed, never asserted).

Screenshots of each view are kept in ``tests/artifacts/`` (ignored by git). In CI (``CI`` set) a
missing browser fails the run; elsewhere the tests are skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
import storm_helpers

from stormeye.api.app import create_app
from stormeye.grouping.incidents import Incident, Member
from stormeye.workers.db import Database
from stormeye.workers.pipeline import Pipeline
from stormeye.workers.settings import Settings

CHROMIUM = os.environ.get("STORMEYE_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).parents[1] / "artifacts"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 20_000  # every wait is bounded

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        msg = f"no Chromium at {CHROMIUM}: apt-get install -y chromium chromium-driver"
        if os.environ.get("CI"):
            pytest.fail(msg + " (CI must provide it)")
        pytest.skip(msg)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install -e '.[test]'")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS, timeout=60_000)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture()
def page(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})  # a fresh profile per test
    pg = ctx.new_page()
    pg.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    # the Content-Security-Policy refusing a script, style or request shows as a console error only
    pg.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
    try:
        yield pg
    finally:
        ctx.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def wait_until(page: Any, expression: str) -> None:
    """Poll a JavaScript expression until it is true (at most WAIT_MS). Playwright's wait_for_function
    evaluates its predicate as a string, which the page's Content-Security-Policy (no 'unsafe-eval')
    refuses; page.evaluate is not subject to it."""
    end = time.monotonic() + WAIT_MS / 1000
    while not page.evaluate(expression):
        if time.monotonic() > end:
            pytest.fail(f"timed out after {WAIT_MS} ms waiting for {expression}")
        time.sleep(0.05)


def shot(page: Any, name: str, full: bool = True) -> Path:
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full)
    print(f"screenshot: {path}")
    return path


@pytest.fixture(scope="module")
def storm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Pipeline]]:
    """The embedded service over a pipeline that has run the first three hours of a simulated storm."""
    url = f"sqlite:///{tmp_path_factory.mktemp('page') / 'stormeye.db'}"
    storm = storm_helpers.small_storm()
    pipe = storm_helpers.run_part(storm, url, until=storm.history_steps + 180)
    app = create_app(Settings(database_url=url, step_s=60), pipeline=pipe, start_ticker=False)
    with storm_helpers.serving(app) as base:
        yield base, pipe


def test_list_incident_acknowledge_and_search(page: Any, storm_server: tuple[str, Pipeline]) -> None:
    base, pipe = storm_server
    page.goto(base + "/")
    page.wait_for_selector("#incidents tr.row")
    rows = page.eval_on_selector_all(
        "#incidents tr.row", "rs => rs.map(r => [r.dataset.id, r.querySelector('.prio').textContent])"
    )
    priorities = [int(p[1:]) for _, p in rows]
    assert priorities == sorted(priorities), "the list is not in priority order"
    held = sorted(pipe.incidents.open_incidents(), key=lambda i: (i.priority, -i.priority_score, i.start))
    assert [r[0] for r in rows] == [i.id for i in held]
    shot(page, "1-incident-list")

    first_id = rows[0][0]
    page.click(f"#incidents tr.row[data-id='{first_id}']")
    page.wait_for_selector(f"body[data-incident='{first_id}']")
    inc = pipe.incidents.incidents[first_id]
    n = len(inc.metrics)
    wait_until(page, f"document.querySelectorAll('#members .member[data-metric] canvas').length >= {n}")
    assert page.locator("#members .member[data-metric]").count() == n
    assert page.locator("#members .member[data-metric] .chart canvas").count() == n  # a chart per member
    assert page.locator("svg.graph circle").count() == n  # the evidence graph: one node per member metric
    assert page.locator("svg.graph line").count() >= 1
    assert "opened" in page.inner_text("#timeline")
    shot(page, "2-incident")

    page.click("#ack")
    page.wait_for_selector(".head .status.acknowledged")
    assert "acknowledge" in page.inner_text("#timeline") and "local" in page.inner_text("#timeline")
    page.goto(base + "/#/")
    page.wait_for_selector(f"#incidents tr.row[data-id='{first_id}'] .status.acknowledged")
    others = page.locator("#incidents tr.row .status.open").count()
    assert others == len(rows) - 1
    shot(page, "3-list-after-acknowledge")

    # filters: status acknowledged shows just that one; a label matcher narrows the list
    page.select_option("select[name=status]", "acknowledged")
    wait_until(page, "document.body.dataset.listRows === '1'")
    page.select_option("select[name=status]", "open")
    page.fill("input[name=match]", 'service="search"')
    page.click("#filters button[type=submit]")
    wait_until(page, f"Number(document.body.dataset.listRows) < {len(rows)}")
    shown = page.eval_on_selector_all("#incidents tr.row", "rs => rs.map(r => r.dataset.id)")
    want = [i.id for i in held if any('service="search"' in m for m in i.metrics)]
    assert shown == want

    root = str(inc.root)
    page.goto(base + "/#/search")
    page.fill("#q", root.split("{")[0])
    page.wait_for_selector("#results a")
    page.goto(base + f"/#/search?metric={root}")
    page.wait_for_selector("#by-shape .sim")
    page.wait_for_selector("#metric-chart canvas")
    assert page.locator("#by-name .sim").count() >= 1
    shot(page, "4-metric-search")


def many_incidents(url: str, n_list: int = 1000, n_members: int = 200) -> tuple[Pipeline, str]:
    """A database of ``n_list`` small incidents and one of ``n_members`` members, each member's series in
    the store and each with its evidence: the page's worst case, without running a storm that big."""
    settings = Settings(database_url=url, step_s=60)
    pipe = Pipeline(settings, database=Database(url))
    rng = np.random.default_rng(0)
    t0 = 1_767_225_600.0
    steps = np.arange(240) * 60.0 + t0
    big = [f'latency_p99{{host="web-{k:03d}",region="eu",service="web"}}' for k in range(n_members)]
    values = rng.normal(100, 5, (n_members, len(steps)))
    onset = 200 + rng.integers(0, 20, n_members)
    for k in range(n_members):
        values[k, onset[k] :] += 60
    pipe.load_history(big, steps, values)
    incidents = []
    for i in range(n_list):
        inc = Incident(id=f"inc-{i:012d}", opened_at=t0, updated_at=t0, priority=1 + i % 5, title=f"synthetic {i}")
        for j in range(1 + i % 3):
            metric = f'errors{{service="svc{i}",host="h{j}"}}'
            mem = Member(metric, t0 + 60 * j, t0 + 600, 0.8, t0, 1, True, t0)
            inc.members[mem.key] = mem
        inc.root = next(iter(inc.members))[0]
        incidents.append(inc)
    wide = Incident(id="inc-wide", opened_at=t0, updated_at=t0, priority=1, title="latency_p99 rose for service=web")
    for k, metric in enumerate(big):
        start = float(steps[onset[k]])
        ev = {"to": big[k - 1], "weight": 0.8, "name": 0.9, "shape": 0.85, "lag_s": 60.0, "onset_gap_s": 60.0}
        mem = Member(metric, start, float(steps[-1]), 0.9, start, 1, True, t0, ev if k else {})
        wide.members[mem.key] = mem
    wide.root = big[0]
    incidents.append(wide)
    assert pipe.database is not None
    pipe.database.save_tick([], incidents, [])
    return pipe, wide.id


def test_page_speed_with_1000_incidents_and_a_200_member_incident(page: Any, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'big.db'}"
    pipe, wide = many_incidents(url)
    app = create_app(Settings(database_url=url, step_s=60), pipeline=pipe, start_ticker=False)
    with storm_helpers.serving(app) as base:
        t = time.perf_counter()
        page.goto(base + "/")
        wait_until(page, "document.body.dataset.listRows === '1000'")
        list_s = time.perf_counter() - t
        list_ms = page.evaluate("window.stormeyeTimings.listRenderMs")
        shot(page, "5-list-1000", full=False)
        t = time.perf_counter()
        page.goto(base + f"/#/incident/{wide}")
        wait_until(
            page,
            "document.querySelectorAll('#members .member[data-metric] canvas').length >= 200 && "
            "document.querySelectorAll('svg.graph circle').length >= 200",
        )
        inc_s = time.perf_counter() - t
        inc_ms = page.evaluate("window.stormeyeTimings.incidentRenderMs")
        shot(page, "6-incident-200-members", full=False)
    print(
        f"\npage speed: list of 1000 incidents {list_ms:.0f} ms to render ({list_s * 1000:.0f} ms from navigation, "
        f"with the request); incident of 200 members {inc_ms:.0f} ms to render ({inc_s * 1000:.0f} ms with its "
        "three requests)"
    )


def test_the_link_in_a_real_notification_opens_its_incident(page: Any, tmp_path: Path) -> None:
    """Issue 34: messages linked `#/incidents/ID`, a route the page did not have (it showed the list).

    The notifier sends a real webhook to a real HTTP receiver; the link in the body it received is
    opened in Chromium and must show that incident. Links already sent in the old form still work.
    """
    import notify_helpers

    from stormeye.workers.notify.config import parse_config
    from stormeye.workers.notify.notifier import DeliverySettings, Notifier

    url = f"sqlite:///{tmp_path / 'stormeye.db'}"
    db = Database(url)
    t0 = time.time() - 600
    notify_helpers.save(
        db, notify_helpers.incident("inc-linked", t0, [f'errors{{service="pay",host="h{i}"}}' for i in range(3)])
    )
    receiver = notify_helpers.HttpReceiver()
    app = create_app(Settings(database_url=url, step_s=60), start_ticker=False)
    try:
        with storm_helpers.serving(app) as base:
            config = (
                "route:\n  receiver: hook\n  group_wait: 0s\n"
                f"receivers:\n  - name: hook\n    webhook_configs:\n      - url: {receiver.url}/hook\n"
            )
            notifier = Notifier(parse_config(config), db, public_url=base, delivery=DeliverySettings(timeout_s=5.0))
            notifier.run(time.time())
            (body,) = receiver.bodies("/hook")
            link = body["stormeye"]["link"]
            assert link == body["alerts"][0]["generatorURL"]
            page.goto(link)
            page.wait_for_selector("body[data-incident='inc-linked']")
            shot(page, "5-incident-from-notification-link", full=False)
            page.goto(base + "/#/incidents/inc-linked")  # a link sent before the fix
            page.wait_for_selector("body[data-incident='inc-linked']")
    finally:
        receiver.stop()


def _oncall_db(url: str) -> tuple[Database, float]:
    """Incidents of every state for the token-flow tests: open P1 and P3, a resolved P1 in eu, one merged
    into the P1, and an open incident of two alerts (no series: drawn as their firing spans)."""
    import notify_helpers

    from stormeye.detectors.events import Anomaly

    db = Database(url)
    t0 = time.time() - 3600
    eu = [f'errors{{service="pay",region="eu",host="h{i}"}}' for i in range(3)]
    us = [f'latency{{service="cart",region="us",host="h{i}"}}' for i in range(2)]
    notify_helpers.save(
        db,
        notify_helpers.incident("inc-open-p1", t0, eu, priority=1, title="errors rose for service=pay"),
        notify_helpers.incident("inc-open-p3", t0, us, priority=3, title="latency rose for service=cart"),
        notify_helpers.incident(
            "inc-resolved-eu", t0 - 600, [m.replace("errors", "timeouts") for m in eu], "resolved", 1, resolved_at=t0
        ),
        notify_helpers.incident("inc-merged", t0, ['queue_depth{service="pay",region="eu"}'], "merged", 2),
    )
    alerts = [f'HighErrorRate{{instance="api-{i}",service="api"}}' for i in range(2)]
    inc = notify_helpers.incident("inc-alerts", t0, alerts, priority=2, title="api: 2 alerts on 2 of 2 instances")
    spans = [(t0 + 120, t0 + 900), (t0 + 300, t0 + 1500)]
    anomalies = []
    for (key, mem), (a, b) in zip(list(inc.members.items()), spans, strict=True):
        del inc.members[key]
        mem.start, mem.end, mem.open = a, b, False
        inc.members[mem.key] = mem
        labels = {"alertname": "HighErrorRate", "instance": mem.metric.split('"')[1], "service": "api"}
        anomalies.append(Anomaly(mem.metric, a, b, 1.0, a, 1, "alertmanager", {"alert": labels}, False))
    db.save_tick(anomalies, [inc], [])
    return db, t0


def _rows(page: Any) -> list[str]:
    return list(page.eval_on_selector_all("#incidents tr.row", "rs => rs.map(r => r.dataset.id)"))


def test_login_form_filters_in_the_address_empty_state_and_alert_spans(page: Any, tmp_path: Path) -> None:
    """Issue 34.5 and 34.9, as they were found in Chromium: a link to an incident opened without a token
    shows a login form (not prompt()); the right token draws that incident at once and is kept for the
    tab's session (a reload stays logged in); a wrong one says so in the form. The list's filters are in
    the address, so a link to "resolved P1" opens just that; an empty list says why and offers "all".
    A merged incident offers no Acknowledge/Resolve; alert members are charted as their firing spans."""
    url = f"sqlite:///{tmp_path / 'stormeye.db'}"
    db, _ = _oncall_db(url)
    app = create_app(Settings(database_url=url, step_s=60, api_token="s3cret"), start_ticker=False)
    with storm_helpers.serving(app) as base:
        page.goto(base + "/#/incident/inc-open-p1")  # a link from a notification, no token yet
        page.wait_for_selector("#login-form")
        assert "incident inc-open-p1" in page.inner_text("#login")
        assert page.locator("#incidents").count() == 0 and page.inner_text("#who") == "not logged in"
        page.fill("#login-token", "wrong")
        page.click("#login-submit")
        page.wait_for_selector("#login-problem:not([hidden])")
        assert "not valid" in page.inner_text("#login-problem")
        shot(page, "7-login", full=False)
        page.fill("#login-token", "s3cret")
        page.click("#login-submit")
        page.wait_for_selector("body[data-incident='inc-open-p1']")  # at once, no reload
        assert page.inner_text("#who") == "logged in as api"
        page.reload()  # kept for the session
        page.wait_for_selector("body[data-incident='inc-open-p1']")

        # filters in the address: a shared link opens the same list; a change of filter updates the address
        page.goto(base + "/#/?status=resolved&priority=1")
        wait_until(page, "document.body.dataset.listRows === '1'")
        assert _rows(page) == ["inc-resolved-eu"]
        assert page.eval_on_selector("select[name=status]", "s => s.value") == "resolved"
        assert page.is_checked("input[name=p][value='1']")
        page.select_option("select[name=status]", "all")
        wait_until(page, "location.hash === '#/?status=all&priority=1'")
        wait_until(page, "document.body.dataset.listRows === '2'")
        page.goto(base + "/#/?match=" + 'region%3D"eu"')
        wait_until(page, "document.body.dataset.listRows === '1'")
        assert _rows(page) == ["inc-open-p1"]
        assert page.input_value("input[name=match]") == 'region="eu"'
        shot(page, "8-list-logged-in", full=False)

        # the empty state says why and offers "all"
        page.goto(base + "/#/?status=acknowledged")
        page.wait_for_selector("#empty")
        text = page.inner_text("#empty")
        assert "No acknowledged incidents" in text and "1 resolved" in text and "3 open" in text, text
        page.click("#show-all")
        wait_until(page, "document.body.dataset.listRows === '4'")
        assert location_hash(page) == "#/?status=all"

        # a merged incident offers no action; alert members are drawn as their firing spans
        page.goto(base + "/#/incident/inc-merged")
        page.wait_for_selector("body[data-incident='inc-merged']")
        assert page.locator("#ack").count() == 0 and page.locator("#resolve").count() == 0
        assert "act on that one" in page.inner_text("#no-actions")
        page.goto(base + "/#/incident/inc-alerts")
        page.wait_for_selector("body[data-incident='inc-alerts']")
        wait_until(page, "document.querySelectorAll('#members .member[data-metric] canvas').length >= 2")
        assert "no series" not in page.inner_text("#members")
        shot(page, "9-incident-alert-spans", full=False)

        # logging out: the next view asks again
        page.click("#token")
        page.wait_for_selector("#login-form")
    db.dispose()


def location_hash(page: Any) -> str:
    return str(page.evaluate("location.hash"))


def test_an_empty_database_says_where_the_demo_went(page: Any, tmp_path: Path, monkeypatch: Any) -> None:
    """Issue 34.5: after `stormeye demo` then `serve`, the list was empty with no word why. The demo keeps
    its own database beside serve's: the empty list names it and how to look at it."""
    monkeypatch.chdir(tmp_path)
    Database(f"sqlite:///{tmp_path / 'stormeye-demo.db'}").dispose()
    url = f"sqlite:///{tmp_path / 'stormeye.db'}"
    app = create_app(Settings(database_url=url, step_s=60), start_ticker=False)
    with storm_helpers.serving(app) as base:
        page.goto(base + "/")
        page.wait_for_selector("#empty")
        text = page.inner_text("#empty")
        assert "No incidents yet" in text and "stormeye.db" in text
        assert "STORMEYE_DATABASE_URL=sqlite:///stormeye-demo.db stormeye serve" in text, text
        assert page.locator("#token").is_hidden()  # no token configured: no login
        shot(page, "10-empty-after-demo", full=False)
