import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grouping.names import MetricNameError, NameIndex, canonical, idf_weight, normalize, parse


@pytest.mark.parametrize(
    ("text", "props"),
    [
        ('cpu{host="a",region="eu"}', {"__name__": "cpu", "host": "a", "region": "eu"}),
        ("cpu", {"__name__": "cpu"}),
        ('{host="a"}', {"host": "a"}),
        (
            "what=purchase_count,country=England,device=mobile",
            {"__name__": "purchase_count", "country": "England", "device": "mobile"},
        ),
        ('{"__name__": "cpu", "host": "a"}', {"__name__": "cpu", "host": "a"}),
        ('cpu{path="a,b",msg="say \\"hi\\""}', {"__name__": "cpu", "path": "a,b", "msg": 'say "hi"'}),
    ],
)
def test_parse_forms(text: str, props: dict[str, str]) -> None:
    assert parse(text) == props


def test_parse_mapping_and_canonical_sorts_labels() -> None:
    assert canonical(parse({"what": "revenue", "country": "US", "app": "web"})) == 'revenue{app="web",country="US"}'


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ('cpu{host="a"', "braces"),
        ("cpu{host=a}", "double quotes"),
        ("a=1,b", "not one property=value"),
        ('cpu{host="a",host="b"}', "twice"),
        ('cpu{host=""}', "empty value"),
        ("has space", "not a name we can read"),
        ('{"__name__": ', "not valid JSON"),
        ('cpu{1bad="x"}', "cannot read labels"),
    ],
)
def test_parse_errors_say_what_to_fix(text: str, fragment: str) -> None:
    with pytest.raises(MetricNameError, match=fragment):
        parse(text)


label_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)
keys = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True)


@given(
    st.dictionaries(keys, label_text, min_size=1, max_size=5), st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True)
)
def test_canonical_round_trips(labels: dict[str, str], name: str) -> None:
    props = {"__name__": name, **{k: v for k, v in labels.items() if k != "__name__"}}
    assert parse(canonical(props)) == props
    assert normalize(canonical(props)) == canonical(props)


def test_worked_example_three_of_five_shared_is_0_6() -> None:
    idx = NameIndex()
    # make every pair equally rare: each appears in exactly 2 of 4 names
    a = "what=m1,country=England,device=mobile,os=iOS,product=shoes"
    b = "what=m2,country=England,device=mobile,os=iOS,product=shirts"
    c = "what=m1,country=France,device=tablet,os=Android,product=shoes"
    d = "what=m2,country=France,device=tablet,os=Android,product=shirts"
    ca, cb, _, _ = idx.add([a, b, c, d])
    assert idx.cosine(ca, cb) == pytest.approx(3 / (math.sqrt(5) * math.sqrt(5)))


def test_idf_rare_pairs_weigh_more() -> None:
    idx = NameIndex()
    names = [f'cpu{{env="prod",host="h{i}"}}' for i in range(10)] + ['cpu{env="dev",host="h0"}']
    idx.add(names)
    assert idx.pair_weight("env=dev") > idx.pair_weight("host=h0") > idx.pair_weight("env=prod")
    assert idx.pair_weight("env=prod") == pytest.approx(idf_weight(11, 10))
    assert idx.pair_weight("__name__=cpu") == 0.0  # in every name: says nothing


def test_similar_pairs_and_neighbours() -> None:
    idx = NameIndex()
    names = idx.add([f'req{{svc="{s}",host="{s}-{h}",region="eu"}}' for s in ("a", "b") for h in range(3)])
    pairs = idx.similar_pairs(names, 0.1)  # shared svc (idf log 2) vs own host (log 6): 0.13
    same_service = {(i, j) for i, j, _ in pairs}
    assert (0, 1) in same_service and (3, 4) in same_service
    assert all(names[i].split("svc=")[1] == names[j].split("svc=")[1] for i, j, _ in pairs)
    nb = idx.neighbours(names[0], 0.1)
    assert [n for n, _ in nb] and names[0] not in [n for n, _ in nb]
    with pytest.raises(KeyError, match="add it first"):
        idx.cosine("unknown_metric", names[0])
