"""The notification config: Alertmanager's shape, validated at load with errors naming the line."""

from __future__ import annotations

import pytest

from stormeye.workers.notify.config import NotifyConfigError, parse_config, parse_duration

GOOD = """\
route:
  receiver: default
  group_wait: 30s
  routes:
    - matchers: ['team="payments"']
      receiver: payments
      continue: true
    - matchers:
        - priority=~"[12]"
        - service!="batch"
      receiver: pager
      group_wait: 10s
      routes:
        - match: {region: eu}
          receiver: eu-pager
receivers:
  - name: default
    webhook_configs: [{url: "http://127.0.0.1:1/x"}]
  - name: payments
    slack_configs: [{api_url: "http://127.0.0.1:1/s"}]
  - name: pager
    pagerduty_configs: [{routing_key: abc}]
  - name: eu-pager
    email_configs: [{to: eu@example.com, smarthost: "127.0.0.1:25"}]
inhibit_rules:
  - source_matchers: ['priority="1"', 'kpi="true"']
    target_matchers: ['priority!="1"']
    equal: [service]
"""


def receivers(text: str, props: dict[str, str]) -> list[str]:
    return [r.receiver for r in parse_config(text).routes_for(props)]


def test_routing_tree_reads_like_alertmanager() -> None:
    assert receivers(GOOD, {"priority": "3"}) == ["default"]
    assert receivers(GOOD, {"priority": "1", "team": "payments"}) == ["payments", "pager"]
    assert receivers(GOOD, {"priority": "2", "region": "eu"}) == ["eu-pager"]
    assert receivers(GOOD, {"priority": "2", "service": "batch"}) == ["default"]
    cfg = parse_config(GOOD)
    pager = cfg.route.routes[1]
    assert pager.options.group_wait == 10 and pager.routes[0].options.group_wait == 10
    assert cfg.route.options.repeat_interval == 4 * 3600
    assert cfg.receivers["pager"].integrations[0].send_resolved is True
    assert cfg.receivers["payments"].integrations[0].send_resolved is False  # Slack's default, as in Alertmanager
    assert [str(m) for m in cfg.inhibit_rules[0].source] == ['priority="1"', 'kpi="true"']


def test_durations() -> None:
    assert parse_duration("1h30m") == 5400 and parse_duration("100ms") == 0.1 and parse_duration("0") == 0
    assert parse_duration("1d") == 86400 and parse_duration("2w") == 14 * 86400
    for bad in ("5 minutes", "1.5h", "", "m", "-1s"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def _error(text: str) -> str:
    with pytest.raises(NotifyConfigError) as exc:
        parse_config(text, "notify.yml")
    return str(exc.value)


def test_bad_matcher_names_its_line() -> None:
    msg = _error(GOOD.replace('- service!="batch"', "- service~=batch"))
    assert msg.startswith("notify.yml:10:") and "is not a matcher" in msg, msg
    msg = _error(GOOD.replace('priority=~"[12]"', 'priority=~"[12"'))
    assert msg.startswith("notify.yml:9:") and "bad regular expression" in msg, msg


def test_unknown_receiver_names_its_line() -> None:
    msg = _error(GOOD.replace("receiver: eu-pager", "receiver: eu-pagr"))
    assert msg.startswith("notify.yml:15:") and "unknown receiver 'eu-pagr'" in msg, msg


def test_bad_duration_names_its_line() -> None:
    msg = _error(GOOD.replace("group_wait: 10s", "group_wait: 10 seconds"))
    assert msg.startswith("notify.yml:12:") and "group_wait" in msg and "not a duration" in msg, msg


def test_other_mistakes_name_their_line() -> None:
    assert _error(GOOD.replace("continue: true", "continue: yes please")).startswith("notify.yml:7:")
    assert _error(GOOD.replace("group_wait: 30s", "group_whait: 30s")).startswith("notify.yml:3:")
    assert "needs routing_key" in _error(GOOD.replace("routing_key: abc", "severity: error"))
    assert _error("route: [\n").startswith("notify.yml:2:")


def test_bad_template_names_its_line() -> None:
    msg = _error(GOOD.replace('api_url: "http://127.0.0.1:1/s"', 'api_url: "http://x", title: "{{ title"'))
    assert msg.startswith("notify.yml:20:") and "not a valid template" in msg, msg
