"""core/labels.py: the one matcher (both ways to write it), its errors, the vocabularies and the shared scope.

The matcher cases are those the four former implementations were tested with (the page's filter,
notification routes, priority rules, detector rules; moved here from test_page_api.py and
test_notify_config.py): each still matches the same things.
"""

from __future__ import annotations

import pytest

from stormeye.core.errors import BadInput
from stormeye.core.labels import (
    ENTITY_KEYS,
    MACHINE_KEYS,
    SERVICE_ENTITY_KEYS,
    Matcher,
    MatcherError,
    check_regex,
    matchers_from_map,
    matches_all,
    parse_matcher,
    parse_matchers,
    shared_labels,
)
from stormeye.detectors.rules import DetectorRule, DetectorRuleError
from stormeye.grouping.priority import DEFAULT_RULES, PriorityConfigError, PriorityRule
from stormeye.workers.notify.config import Matcher as NotifyMatcher


def test_the_page_filter_a_comma_separated_list() -> None:
    ms = parse_matchers('service="checkout", region=~"us-.*",host!~"db.*",env!=prod')
    assert [(m.name, m.op, m.value) for m in ms] == [
        ("service", "=", "checkout"),
        ("region", "=~", "us-.*"),
        ("host", "!~", "db.*"),
        ("env", "!=", "prod"),
    ]
    assert matches_all(ms, {"service": "checkout", "region": "us-east", "host": "web-1"})
    assert not matches_all(ms, {"service": "checkout", "region": "eu", "host": "web-1"})
    assert not matches_all(ms, {"service": "checkout", "region": "us-east", "host": "db-1"})
    assert not matches_all(ms, {"service": "checkout", "region": "us-east", "host": "web-1", "env": "prod"})
    assert parse_matchers("") == [] and len(parse_matchers('a="1",')) == 1


@pytest.mark.parametrize(
    ("text", "op", "value", "hit", "miss"),
    [
        ('service="a b"', "=", "a b", "a b", "a"),
        ("service!=batch", "!=", "batch", "web", "batch"),
        ('host=~"web-[0-9]+"', "=~", "web-[0-9]+", "web-12", "web-12x"),
        ('host!~"db.*"', "!~", "db.*", "web", "db1"),
    ],
)
def test_one_matcher_as_routes_and_silences_write_it(text: str, op: str, value: str, hit: str, miss: str) -> None:
    m = parse_matcher(text)
    assert NotifyMatcher is Matcher and Matcher.parse(text) == m
    assert (m.op, m.value) == (op, value)
    assert m.matches({m.name: hit}) and not m.matches({m.name: miss})
    assert parse_matcher(str(m)) == m  # written back as it reads


def test_a_missing_label_is_empty_text_but_the_rules_map_form_needs_it_present() -> None:
    assert parse_matcher('env!="prod"').matches({})
    assert parse_matcher('team=~".*"').matches({})
    (rule,) = matchers_from_map({"team": ".*"})
    assert rule.required and not rule.matches({}) and rule.matches({"team": "x"})


def test_quoted_values_read_json_escapes_and_keep_other_backslashes() -> None:
    assert parse_matcher(r'title="say \"hi\"\n"').value == 'say "hi"\n'
    assert parse_matcher(r'path="a\\b"').value == "a\\b"
    eu = parse_matcher(r'region=~"eu\.west"')
    assert eu.value == r"eu\.west" and eu.matches({"region": "eu.west"}) and not eu.matches({"region": "euxwest"})
    assert parse_matcher(r'n=~"\d+"').matches({"n": "42"})
    assert [m.value for m in parse_matchers(r'a="x,y", b=~"1\.2"')] == ["x,y", r"1\.2"]


def test_priority_and_detector_rules_match_as_before() -> None:
    revenue = next(r for r in DEFAULT_RULES if r.name == "revenue")
    assert revenue.matches({"__name__": "eu_revenue"}) and revenue.matches({"__name__": "gmv"})
    assert not revenue.matches({"__name__": "revenue_x"}) and not revenue.matches({"host": "a"})
    db = DetectorRule({"host": "db-.*"}, threshold=0.25)
    assert db.matches({"__name__": "cpu", "host": "db-1"}) and not db.matches({"__name__": "cpu", "host": "web-1"})
    assert not db.matches({"__name__": "cpu"})  # the label must be there
    both = PriorityRule({"__name__": "cpu", "host": "a|b"})
    assert both.matches({"__name__": "cpu", "host": "b"}) and not both.matches({"__name__": "cpu", "host": "c"})


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("===", "is not a matcher"),
        ("service~=batch", "is not a matcher"),
        ('service=~"(["', "bad regular expression"),
        ('service="abc', "quotes are not closed"),
        ('service="a"b', "follows the quoted value"),
        ('service=~"<im(.|.)*Z"', "exponential time"),
        ('host=~"(a+)+"', "a repeat inside a repeat"),
        ('host=~"(a|ab)*c"', "alternatives that can match the same text"),
        ("host=~" + "a" * 2000, "at most 1024"),
    ],
)
def test_bad_matchers_say_what_to_fix(text: str, says: str) -> None:
    with pytest.raises(MatcherError, match=says) as exc:
        parse_matcher(text)
    assert isinstance(exc.value, BadInput) and exc.value.http_status == 400
    with pytest.raises(MatcherError):  # a list says where it stops reading
        parse_matchers(text)


def test_a_list_says_where_it_cannot_read() -> None:
    with pytest.raises(MatcherError, match=r"cannot read the label matchers at ',b=\"2\"'"):
        parse_matchers('a="1",,b="2"')
    with pytest.raises(MatcherError, match="separate matchers by commas"):
        parse_matchers('a="1" b="2"')


def test_regexes_that_cannot_blow_up_are_taken() -> None:
    for pattern in ("(foo|bar)+", "(a|b)*", "revenue|.*_revenue|gmv", "(x.*)?", "us-.*", "[12]", "web-[0-9]+"):
        check_regex(pattern)
    for rule in DEFAULT_RULES:  # the shipped rules all pass the check
        assert rule.match


def test_rules_name_the_label_of_a_bad_regex() -> None:
    with pytest.raises(PriorityConfigError, match=r"priority rule x: match\['host'\]: bad regular expression"):
        PriorityRule({"__name__": "a", "host": "("}, name="x")
    with pytest.raises(DetectorRuleError, match=r"match\['host'\]: the regular expression could take exponential"):
        DetectorRule({"host": "(.*)*"})


def test_shared_labels_and_the_vocabularies() -> None:
    sets = [
        {"__name__": "cpu", "host": "a", "region": "eu"},
        {"__name__": "cpu", "host": "b", "region": "eu"},
    ]
    assert shared_labels(sets) == {"region": "eu"}
    assert shared_labels(sets, skip=()) == {"__name__": "cpu", "region": "eu"}
    assert shared_labels([]) == {} and shared_labels(iter(sets[:1])) == {"host": "a", "region": "eu"}
    assert set(MACHINE_KEYS) < set(ENTITY_KEYS) and SERVICE_ENTITY_KEYS == ("service", "job", "app")
