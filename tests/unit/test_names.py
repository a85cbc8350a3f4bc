import json
import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from stormeye.grouping.graphite import GraphiteTemplateError, GraphiteTemplates
from stormeye.grouping.names import (
    IndexFormatError,
    MetricNameError,
    NameIndex,
    _canonical_tokens,
    canonical,
    idf_weight,
    normalize,
    pairs_of,
    parse,
)
from stormeye.sim.simulator import COUNTRIES, DEVICES, INFRA_METRICS, OSES, PRODUCTS, REGIONS, SERVICES

# -- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "props"),
    [
        ('cpu{host="a",region="eu"}', {"__name__": "cpu", "host": "a", "region": "eu"}),
        ("cpu", {"__name__": "cpu"}),
        ('{host="a"}', {"host": "a"}),
        ('cpu{ host = "a" , region="eu", }', {"__name__": "cpu", "host": "a", "region": "eu"}),
        ('{"http.server.duration", le="0.5"}', {"__name__": "http.server.duration", "le": "0.5"}),
        ('{__name__="cpu",host="a"}', {"__name__": "cpu", "host": "a"}),
        (
            "what=purchase_count,country=England,device=mobile",
            {"__name__": "purchase_count", "country": "England", "device": "mobile"},
        ),
        ("what=cpu host=a region=eu", {"__name__": "cpu", "host": "a", "region": "eu"}),
        (
            "what=purchase_count.country=England.device=mobile",
            {"__name__": "purchase_count", "country": "England", "device": "mobile"},
        ),
        ("what=cpu.host=web.example.com.region=eu", {"__name__": "cpu", "host": "web.example.com", "region": "eu"}),
        ("host=web.example.com", {"host": "web.example.com"}),
        ("service.name=checkout,host.name=a", {"service.name": "checkout", "host.name": "a"}),
        ("cpu.load;host=a;region=eu", {"__name__": "cpu.load", "host": "a", "region": "eu"}),
        ("cpu;what=cpu;host=a", {"__name__": "cpu", "host": "a"}),
        ('{"__name__": "cpu", "host": "a"}', {"__name__": "cpu", "host": "a"}),
        ('{"what": "cpu", "port": 8080}', {"__name__": "cpu", "port": "8080"}),
        ('cpu{path="a,b",msg="say \\"hi\\""}', {"__name__": "cpu", "path": "a,b", "msg": 'say "hi"'}),
        ("http.server.request.duration", {"__name__": "http.server.request.duration"}),
    ],
)
def test_parse_forms(text: str, props: dict[str, str]) -> None:
    assert parse(text) == props


def test_parse_mapping_and_canonical_sorts_labels() -> None:
    assert canonical(parse({"what": "revenue", "country": "US", "app": "web"})) == 'revenue{app="web",country="US"}'


def test_a_name_that_is_not_an_identifier_stays_readable_in_canonical_form() -> None:
    props = parse({"__name__": "checkout latency", "host": "a"})
    assert canonical(props) == '{__name__="checkout latency",host="a"}'
    assert parse(canonical(props)) == props


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
        ("1cpu.load", "Graphite templates configured"),
        ('{"__name__": ', "not valid JSON"),
        ('["cpu"]', "not a name we can read"),
        ('cpu{1bad="x"}', "cannot read labels"),
        ("what=cpu,host=a.region=b", "use one separator"),
        ("what=cpu.a=b=c", "more than one '='"),
        ("servers.host=a.region=b", "starts with 'servers'"),
        ("service.name=cpu.host.name=a", "keys that contain dots need commas"),
        ("what=cpu..host=a", "empty piece"),
        ("cpu;host=a,region=b", "separate tags with ';'"),
        ("cpu;host", "has no '='"),
        ("cpu;;host=a", "empty tag"),
        ("cpu;host=a;", "empty tag"),
        ("host=a;cpu", "starts with the metric name"),
        ("cpu;host=~a", "cannot start with '~'"),
        ("cpu;host=a b", "cannot hold spaces"),
        ("cpu;bad key=a", "cannot hold spaces"),
        ('{"a": [1]}', "text or number value"),
        ('{"a": true}', "text or number value"),
        ("{}", "neither a name nor labels"),
        ("what=a,what=b", "twice"),
    ],
)
def test_parse_errors_say_what_to_fix(text: str, fragment: str) -> None:
    with pytest.raises(MetricNameError, match=fragment):
        parse(text)


def test_parse_rejects_what_is_not_a_name() -> None:
    with pytest.raises(MetricNameError, match="text or a label object"):
        parse(42)  # type: ignore[arg-type]
    with pytest.raises(MetricNameError, match="at least one label"):
        parse({})


# any text but C0 control characters other than tab, which every name refuses (issue 31)
label_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters=[chr(c) for c in range(32) if c != 9]),
    min_size=1,
    max_size=12,
)
keys = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True).filter(lambda k: k not in ("what", "name"))
metric = st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True)
plain_value = st.from_regex(r"[A-Za-z0-9_\-]{1,10}", fullmatch=True)
dotted_value = st.from_regex(r"[A-Za-z0-9_\-]{1,6}(\.[A-Za-z0-9_\-]{1,6}){0,2}", fullmatch=True)


@given(st.dictionaries(keys, label_text, min_size=1, max_size=5), metric)
def test_canonical_round_trips(labels: dict[str, str], name: str) -> None:
    props = {"__name__": name, **{k: v for k, v in labels.items() if k != "__name__"}}
    assert parse(canonical(props)) == props
    assert normalize(canonical(props)) == canonical(props)
    assert parse(json.dumps(props)) == props


@given(st.dictionaries(keys, plain_value, min_size=1, max_size=5), metric, st.sampled_from([",", " ", ", "]))
def test_property_lists_and_tags_read_the_same_properties(labels: dict[str, str], name: str, sep: str) -> None:
    props = {"__name__": name, **labels}
    pairs = [f"what={name}"] + [f"{k}={v}" for k, v in labels.items()]
    assert parse(sep.join(pairs)) == props
    assert parse(f"{name};" + ";".join(f"{k}={v}" for k, v in labels.items())) == props


@given(st.dictionaries(keys, dotted_value, min_size=1, max_size=5), metric)
def test_dotted_pairs_keep_dots_inside_values(labels: dict[str, str], name: str) -> None:
    text = ".".join([f"what={name}"] + [f"{k}={v}" for k, v in labels.items()])
    assert parse(text) == {"__name__": name, **labels}


@settings(max_examples=300)
@given(st.text(max_size=40))
def test_any_text_is_read_or_refused_with_a_metric_name_error(text: str) -> None:
    try:
        props = parse(text)
    except MetricNameError:
        return
    assert props and all(isinstance(k, str) and isinstance(v, str) and v for k, v in props.items())
    assert parse(canonical(props)) == props


@settings(max_examples=300)
@given(
    st.one_of(
        st.text(alphabet='ab_="{},\\.:x1 ', max_size=30),
        st.builds(
            lambda n, ls: n + "{" + ",".join(f'{k}="{v}"' for k, v in ls) + "}",
            metric,
            st.lists(st.tuples(st.sampled_from(["a", "b", "a1", "a-b", "what", "__name__"]), label_text), max_size=4),
        ),
    )
)
@example(':{_="=",_="="}')  # a value ending with '=' once fooled the fast path
@example('a{b="x=",c="=y"}')
@example(':{_=","}')  # and a value starting with ','
@example('a{b=",c=",d="x"}')
def test_the_canonical_fast_path_agrees_with_the_parser(text: str) -> None:
    fast = _canonical_tokens(text)
    if fast is None:
        return
    props = parse(text)
    assert canonical(props) == text
    assert sorted(fast) == sorted(pairs_of(props))


# -- Graphite paths ------------------------------------------------------------------------


def test_graphite_paths_are_positional_without_templates() -> None:
    g = GraphiteTemplates()
    assert parse("eu.web-3.cpu.load", g) == {"node0": "eu", "node1": "web-3", "node2": "cpu", "node3": "load"}
    # other forms are not affected by Graphite settings
    assert parse("cpu.load;host=a", g) == {"__name__": "cpu.load", "host": "a"}


def test_graphite_templates_name_nodes_like_influxdb() -> None:
    g = GraphiteTemplates(
        [
            "servers.* .host.measurement* env=prod",
            "stats.*.web* .region.host.measurement.field",
            "stats.* .region.host.measurement*",
            "region.host.measurement*",
        ]
    )
    assert parse("servers.web1.cpu.load", g) == {"__name__": "cpu.load", "host": "web1", "env": "prod"}
    # the more specific filter wins over stats.*
    assert parse("stats.eu.web3.cpu.idle", g) == {"__name__": "cpu.idle", "region": "eu", "host": "web3"}
    assert parse("stats.eu.db1.disk.free.bytes", g) == {"__name__": "disk.free.bytes", "region": "eu", "host": "db1"}
    # the default template (no filter)
    assert parse("us.h1.mem.used", g) == {"__name__": "mem.used", "region": "us", "host": "h1"}
    assert g.template_for(["us", "h1", "mem"]) == "region.host.measurement*"


def test_graphite_template_joins_repeated_parts_and_fills_defaults() -> None:
    g = GraphiteTemplates(["dc.dc.host.measurement* dc=unknown,team=sre"], separator="_")
    assert parse("eu.west.h1.cpu.user", g) == {"__name__": "cpu_user", "dc": "eu_west", "host": "h1", "team": "sre"}


def test_graphite_unmatched_paths_follow_the_configured_rule() -> None:
    assert parse("a.b", GraphiteTemplates(["x.* .host.measurement"], unmatched="name")) == {"__name__": "a.b"}
    with pytest.raises(MetricNameError, match="matches no template"):
        parse("a.b", GraphiteTemplates(["x.* .host.measurement"], unmatched="error"))


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("a..b", "empty node"),
        ("a.b.", "empty node"),
        ("x.h1.cpu.extra", "reads 3"),
    ],
)
def test_graphite_path_errors(path: str, fragment: str) -> None:
    with pytest.raises(MetricNameError, match=fragment):
        parse(path, GraphiteTemplates(["x.* .host.measurement"]))


@pytest.mark.parametrize(
    ("templates", "kwargs", "fragment"),
    [
        (["a.b*.c"], {}, "only the last part"),
        (["host.*"], {}, "must follow a part name"),
        (["host.m$x"], {}, "part 1"),
        (["a b c d"], {}, "filter"),
        (["..."], {}, "names no node"),
        (["host.measurement", "region.measurement"], {}, "keep one default"),
        (["x.*..y host"], {}, "empty node"),
        (["x.* host.measurement env"], {}, "key=value"),
        ([], {"unmatched": "drop"}, "unmatched"),
        ([], {"separator": ""}, "separator"),
    ],
)
def test_graphite_templates_refuse_bad_configuration(templates: list[str], kwargs: dict, fragment: str) -> None:
    with pytest.raises(GraphiteTemplateError, match=fragment):
        GraphiteTemplates(templates, **kwargs)


@given(st.lists(plain_value.filter(lambda v: "." not in v), min_size=3, max_size=7))
def test_graphite_template_reads_every_node(nodes: list[str]) -> None:
    g = GraphiteTemplates(["region.host.measurement*"])
    props = parse(".".join(nodes), g)
    assert props == {"region": nodes[0], "host": nodes[1], "__name__": ".".join(nodes[2:])}
    positional = parse(".".join(nodes), GraphiteTemplates())
    assert [positional[f"node{i}"] for i in range(len(nodes))] == nodes


# -- IDF and cosine ------------------------------------------------------------------------


def test_worked_example_three_of_five_shared_is_0_6() -> None:
    idx = NameIndex()
    # make every pair equally rare: each appears in exactly 2 of 4 names
    a = "what=m1,country=England,device=mobile,os=iOS,product=shoes"
    b = "what=m2,country=England,device=mobile,os=iOS,product=shirts"
    c = "what=m1,country=France,device=tablet,os=Android,product=shoes"
    d = "what=m2,country=France,device=tablet,os=Android,product=shirts"
    ca, cb, _, _ = idx.add([a, b, c, d])
    assert idx.cosine(ca, cb) == pytest.approx(3 / (math.sqrt(5) * math.sqrt(5)))
    assert idx.similar_pairs([ca, cb], 0.6) == [(0, 1, pytest.approx(0.6))]


def test_idf_rare_pairs_weigh_more() -> None:
    idx = NameIndex()
    names = [f'cpu{{env="prod",host="h{i}"}}' for i in range(10)] + ['cpu{env="dev",host="h0"}']
    idx.add(names)
    assert idx.pair_weight("env=dev") > idx.pair_weight("host=h0") > idx.pair_weight("env=prod")
    assert idx.pair_weight("env=prod") == pytest.approx(idf_weight(11, 10))
    assert idx.pair_weight("__name__=cpu") == 0.0  # in every name: says nothing
    assert idx.pair_weight("env=unknown") == 0.0


def test_similar_pairs_and_neighbours() -> None:
    idx = NameIndex()
    names = idx.add([f'req{{svc="{s}",host="{s}-{h}",region="eu"}}' for s in ("a", "b") for h in range(3)])
    pairs = idx.similar_pairs(names, 0.1)  # shared svc (idf log 2) vs own host (log 6): 0.13
    same_service = {(i, j) for i, j, _ in pairs}
    assert (0, 1) in same_service and (3, 4) in same_service
    assert all(names[i].split("svc=")[1] == names[j].split("svc=")[1] for i, j, _ in pairs)
    nb = idx.neighbours(names[0], 0.1)
    assert [n for n, _ in nb] and names[0] not in [n for n, _ in nb]
    assert [s for _, s in nb] == sorted((s for _, s in nb), reverse=True)
    with pytest.raises(KeyError, match="add it first"):
        idx.cosine("unknown_metric", names[0])


def test_add_is_all_or_nothing_and_says_which_name_is_bad() -> None:
    idx = NameIndex()
    idx.add(['cpu{host="a"}'])
    with pytest.raises(MetricNameError, match=r"names\[2\]"):
        idx.add(['cpu{host="b"}', "what=cpu,host=c", 'cpu{host="'])
    assert len(idx) == 1 and idx.vocabulary_size == 2
    # any accepted form lands on the same canonical metric
    assert (
        idx.add(['cpu{host="a"}', "what=cpu,host=a", "cpu;host=a", {"__name__": "cpu", "host": "a"}])
        == ['cpu{host="a"}'] * 4
    )
    assert len(idx) == 1
    assert 'cpu{host="a"}' in idx and "cpu;host=a" not in idx  # membership is by canonical name
    assert sorted(idx.tokens("cpu;host=a")) == ["__name__=cpu", "host=a"]  # lookups accept any form


def test_index_reads_graphite_paths_with_its_templates() -> None:
    idx = NameIndex(graphite=GraphiteTemplates(["region.host.measurement*"]))
    got = idx.add(["eu.web1.cpu.load", "eu.web2.cpu.load"])
    assert got == ['cpu.load{host="web1",region="eu"}', 'cpu.load{host="web2",region="eu"}']
    assert idx.cosine("eu.web1.cpu.load", got[1]) == pytest.approx(0.0)  # shared pairs are in every name


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.01, float("nan")])
def test_queries_refuse_meaningless_thresholds(threshold: float) -> None:
    idx = NameIndex()
    names = idx.add(['cpu{host="a"}', 'cpu{host="b"}'])
    with pytest.raises(ValueError, match="within"):
        idx.neighbours(names[0], threshold)
    with pytest.raises(ValueError, match="within"):
        idx.similar_pairs(names, threshold)


def test_queries_refuse_an_lsh_below_its_threshold_and_unknown_methods() -> None:
    idx = NameIndex(threshold=0.7)
    names = idx.add(['cpu{host="a"}', 'cpu{host="b"}'])
    with pytest.raises(ValueError, match=r"built for cosine >= 0\.7"):
        idx.neighbours(names[0], 0.5, method="lsh")
    with pytest.raises(ValueError, match="method must be"):
        idx.similar_pairs(names, 0.8, method="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="workers"):
        NameIndex(workers=0)
    with pytest.raises(ValueError, match="rebuild_growth"):
        NameIndex(rebuild_growth=-1)


# -- LSH over names --------------------------------------------------------------------------


def _names(n_business: int, n_hosts: int, seed: int = 0) -> list[str]:
    """Both simulator families, with stores so that business names are many and distinct."""
    rng = np.random.default_rng(seed)
    out = set()
    devos = [(d, o) for d in DEVICES for o in OSES[d]]
    while len(out) < n_business:
        what = ["purchase_count", "revenue", "cart_adds", "signups"][int(rng.integers(4))]
        country = COUNTRIES[min(int(rng.zipf(1.5)) - 1, len(COUNTRIES) - 1)]
        dev, os_ = devos[int(rng.integers(len(devos)))]
        product = PRODUCTS[int(rng.integers(len(PRODUCTS)))]
        store = f"{country[:2].lower()}-{int(rng.integers(40)):02d}"
        out.add(f'{what}{{country="{country}",device="{dev}",os="{os_}",product="{product}",store="{store}"}}')
    names = sorted(out)
    for h in range(n_hosts):
        svc = SERVICES[h % len(SERVICES)]
        region = REGIONS[h % len(REGIONS)]
        for m in INFRA_METRICS:
            names.append(f'{m}{{host="{svc}-{h}",region="{region}",service="{svc}"}}')
    order = rng.permutation(len(names))
    return [names[i] for i in order]


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return _names(2500, 250)


def test_lsh_finds_nearly_all_similar_pairs_and_only_true_ones(corpus: list[str]) -> None:
    idx = NameIndex(threshold=0.6, exact_below=0)
    idx.add(corpus)
    exact = {(i, j) for i, j, _ in idx.similar_pairs(corpus, 0.6, method="exact")}
    lsh = idx.similar_pairs(corpus, 0.6, method="lsh")
    found = {(i, j) for i, j, _ in lsh}
    assert len(exact) > 1000
    assert found <= exact
    assert len(found) / len(exact) >= 0.95
    ci, _ = idx.candidate_pairs(corpus)
    assert len(ci) < 0.2 * len(corpus) * (len(corpus) - 1) / 2  # pruned: far from all pairs
    # neighbours agree with the pairs
    name = corpus[0]
    exact_nb = idx.neighbours(name, 0.6, method="exact")
    lsh_nb = idx.neighbours(name, 0.6)  # auto: LSH (exact_below=0)
    assert set(lsh_nb) <= set(exact_nb)
    assert all(s >= 0.6 for _, s in lsh_nb)


def test_the_hamming_filter_drops_candidates_but_not_similar_pairs(corpus: list[str]) -> None:
    idx = NameIndex(threshold=0.6, exact_below=0)
    idx.add(corpus)
    li, lj = idx.candidate_pairs(corpus, filtered=False)
    fi, fj = idx.candidate_pairs(corpus)
    banded = set(zip(li.tolist(), lj.tolist()))
    compared = set(zip(fi.tolist(), fj.tolist()))
    assert compared <= banded
    assert len(compared) < 0.25 * len(banded)  # most of what the bands propose is far below 0.6
    exact = {(i, j) for i, j, _ in idx.similar_pairs(corpus, 0.6, method="exact")}
    similar_banded = exact & banded
    assert len(similar_banded) > 1000
    # the filter may drop a pair at 0.6 with probability 0.002 (less above): allow 5 times that
    assert len(similar_banded - compared) <= 0.01 * len(similar_banded)
    assert {(i, j) for i, j, _ in idx.similar_pairs(corpus, 0.6, method="lsh")} == exact & compared
    # neighbours: filtered candidates are a subset, stricter thresholds keep fewer
    for name in corpus[:50:7]:
        every = set(idx.candidates(name, filtered=False).tolist())
        at_06 = set(idx.candidates(name).tolist())
        assert set(idx.candidates(name, 0.8).tolist()) <= at_06 <= every
    # the bands carry recall / (1 - filter_miss), so both stages together keep the recall promise
    assert idx.params.recall == pytest.approx(0.95 / (1 - 0.002))
    assert idx.params.recall_at_threshold() * (1 - idx.filter_miss) >= 0.95
    assert idx.filter_cutoff() == idx.filter_cutoff(0.6) and idx.filter_cutoff(0.8) < idx.filter_cutoff(0.6)
    with pytest.raises(ValueError, match=r"cosine >= 0\.6"):
        idx.filter_cutoff(0.5)
    # filter_bits=0: what the bands propose is what is compared, banded for the recall itself
    off = NameIndex(threshold=0.6, filter_bits=0)
    off.add(corpus[:800])
    assert off.filter_cutoff() is None and off.params.recall == 0.95
    assert np.array_equal(off.candidate_pairs(corpus[:800])[0], off.candidate_pairs(corpus[:800], filtered=False)[0])
    # more filter bits than the signature has: the filter reads them all
    assert (
        NameIndex(threshold=0.6, max_bands=8, filter_bits=10**6).filter_bits
        == NameIndex(threshold=0.6, max_bands=8).params.bits
    )


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"filter_bits": -1}, "filter_bits must not be negative"),
        ({"filter_miss": 0.0}, "filter_miss must be above 0"),
        ({"filter_miss": 0.05}, r"below 1 - recall = 0\.05"),
        ({"recall": 0.99, "filter_miss": 0.02}, r"below 1 - recall = 0\.01"),
        ({"recall": 1.0}, "recall must be strictly between 0 and 1"),
    ],
)
def test_index_refuses_a_filter_that_cannot_keep_its_promise(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        NameIndex(**kwargs)


def test_incremental_adds_with_frozen_idf_equal_a_full_rebuild(corpus: list[str]) -> None:
    first, later = corpus[:2000], corpus[2000:]
    grown = NameIndex(rebuild_growth=0)
    grown.add(first)
    grown.rebuild()  # freeze the IDF of the first 2000
    grown.add(later)
    keys_grown = grown.signatures()
    probe = [corpus[k] for k in (0, 1500, 2100, 3500, len(corpus) - 1)]
    cands_grown = [grown.candidates(p) for p in probe]

    full = NameIndex(rebuild_growth=0)
    full.add(corpus[::-1])  # another order: other vocabulary columns, same pairs
    full.rebuild(frozen=grown.idf_snapshot())
    order = [full.names.index(n) for n in grown.names]
    assert np.array_equal(keys_grown, full.signatures()[:, order])
    for p, cand in zip(probe, cands_grown):
        assert sorted(full.names[c] for c in full.candidates(p)) == sorted(grown.names[c] for c in cand)
        got, want = dict(full.neighbours(p, 0.6, method="lsh")), dict(grown.neighbours(p, 0.6, method="lsh"))
        assert got.keys() == want.keys() and all(got[k] == pytest.approx(want[k], abs=1e-12) for k in got)

    # the freeze matters: hashing with the IDF of everything gives other signatures
    fresh = NameIndex(rebuild_growth=0)
    fresh.add(corpus)
    assert not np.array_equal(fresh.signatures(), keys_grown)


def test_queries_never_rebuild_they_mark_a_rebuild_due(corpus: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    idx = NameIndex(rebuild_growth=1.0)
    idx.add(corpus[:500])
    assert idx.frozen_size == 0 and not idx.rebuild_due  # nothing hashed until a query needs it
    assert idx.rebuild_if_due() is False and idx.frozen_size == 0  # no LSH yet: nothing to re-freeze
    idx.candidates(corpus[0])
    assert idx.frozen_size == 500
    idx.add(corpus[500:999])
    idx.candidates(corpus[0])
    assert idx.frozen_size == 500 and idx.signatures().shape[1] == 999  # hashed with the frozen IDF
    assert not idx.rebuild_due
    idx.add(corpus[999:1100])
    assert idx.rebuild_due  # doubled since the freeze

    # a query on a grown index answers with the frozen IDF and does not rebuild
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a query rebuilt the index")

    with monkeypatch.context() as m:
        m.setattr(idx, "rebuild", refuse)
        got = idx.neighbours(corpus[1050], 0.6, method="lsh")
        pairs = idx.similar_pairs(corpus[900:1100], 0.6, method="lsh")
    assert idx.frozen_size == 500 and idx.signatures().shape[1] == 1100 and idx.rebuild_due
    exact = dict(idx.neighbours(corpus[1050], 0.6, method="exact"))
    assert all(exact[n] == pytest.approx(s, abs=1e-12) for n, s in got)  # checked with the current IDF
    assert {(i, j) for i, j, _ in pairs} <= {(i, j) for i, j, _ in idx.similar_pairs(corpus[900:1100], 0.6, "exact")}

    # the caller rebuilds off the hot path, once
    assert idx.rebuild_if_due() is True
    assert idx.frozen_size == 1100 and not idx.rebuild_due
    assert idx.rebuild_if_due() is False and idx.frozen_size == 1100
    # rebuild_growth=0 and rebuild_drift=0: never due (10 to 500 names drifts far: due by drift alone)
    drifted = NameIndex(rebuild_growth=0)
    drifted.add(corpus[:10])
    drifted.rebuild()
    drifted.add(corpus[10:500])
    assert drifted.idf_drift() > 0.1 and drifted.rebuild_due
    never = NameIndex(rebuild_growth=0, rebuild_drift=0)
    never.add(corpus[:10])
    never.rebuild()
    never.add(corpus[10:500])
    assert not never.rebuild_due and never.rebuild_if_due() is False and never.frozen_size == 10


def test_a_family_unseen_at_the_freeze_makes_a_rebuild_due_before_the_index_doubles(corpus: list[str]) -> None:
    business = [n for n in corpus if not n.startswith(tuple(INFRA_METRICS))]
    infra = [n for n in corpus if n.startswith(tuple(INFRA_METRICS))]
    idx = NameIndex(rebuild_growth=1.0)
    idx.add(business[:1500])
    assert idx.idf_drift() == 0.0  # no LSH yet: nothing frozen to drift from
    idx.rebuild()
    assert idx.idf_drift() == pytest.approx(0.0, abs=1e-12)
    idx.add(business[1500:2200])  # more of the same mix: the weights hardly move
    assert idx.idf_drift() < 0.05 and not idx.rebuild_due
    idx.add(infra[:700])  # a new family: its common pairs weigh log(N_frozen) to the hash
    assert len(idx) < 2 * idx.frozen_size
    assert idx.idf_drift() > 0.1 and idx.rebuild_due
    assert idx.rebuild_if_due() and idx.idf_drift() == pytest.approx(0.0, abs=1e-12) and not idx.rebuild_due
    # rebuild_drift=0: only growth counts
    growth_only = NameIndex(rebuild_drift=0)
    growth_only.add(business[:1500])
    growth_only.rebuild()
    growth_only.add(infra[:700])
    assert growth_only.idf_drift() > 0.1 and not growth_only.rebuild_due
    with pytest.raises(ValueError, match="rebuild_drift"):
        NameIndex(rebuild_drift=-0.1)


def test_serialized_index_answers_like_the_original(corpus: list[str]) -> None:
    idx = NameIndex(
        threshold=0.65, recall=0.9, max_bands=64, seed=3, graphite=GraphiteTemplates([".host.measurement*"])
    )
    idx.add(corpus[:1200])
    idx.rebuild()
    idx.add(corpus[1200:1500])  # some rows hashed after the freeze, some not hashed at all
    idx.signatures()
    idx.add(corpus[1500:1600])
    data = idx.to_bytes()
    back = NameIndex.from_bytes(data)
    assert list(back.names) == list(idx.names)
    assert back.params == idx.params and back.seed == 3 and back.graphite is not None
    assert back.rebuild_drift == idx.rebuild_drift and back.filter_bits == idx.filter_bits
    assert np.allclose(back.idf(), idx.idf())
    assert back.frozen_size == idx.frozen_size
    assert np.array_equal(back.signatures(), idx.signatures())
    for name in corpus[:1600:97]:
        assert back.neighbours(name, 0.65, method="lsh") == idx.neighbours(name, 0.65, method="lsh")
    assert back.add(["a.h1.cpu"]) == ['cpu{host="h1"}']
    # an index with no LSH yet round-trips too
    empty = NameIndex.from_bytes(NameIndex().to_bytes())
    assert len(empty) == 0 and empty.frozen_size == 0


def test_version_1_bytes_still_read_as_an_unfiltered_index(corpus: list[str]) -> None:
    import io

    old = NameIndex(threshold=0.6, filter_bits=0)  # what version 1 was: bands for the recall, no filter
    old.add(corpus[:1500])
    old.rebuild()
    with np.load(io.BytesIO(old.to_bytes())) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["meta"].tobytes())
    meta["version"] = 1
    del meta["filter_bits"], meta["filter_miss"]
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    back = NameIndex.from_bytes(buf.getvalue())
    assert back.filter_bits == 0 and back.params == old.params
    for name in corpus[:1500:211]:
        assert back.neighbours(name, 0.6, method="lsh") == old.neighbours(name, 0.6, method="lsh")


def test_damaged_or_foreign_bytes_are_refused() -> None:
    with pytest.raises(IndexFormatError, match="not a serialized NameIndex"):
        NameIndex.from_bytes(b"not an index")
    idx = NameIndex()
    idx.add(['cpu{host="a"}'])
    data = idx.to_bytes()
    with pytest.raises(IndexFormatError):
        NameIndex.from_bytes(data[: len(data) // 2])
    import io

    with np.load(io.BytesIO(data)) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["meta"].tobytes())
    meta["version"] = 99
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    with pytest.raises(IndexFormatError, match="version 99"):
        NameIndex.from_bytes(buf.getvalue())


def test_graph_facing_api_stays_consistent(corpus: list[str]) -> None:
    idx = NameIndex()
    idx.add(corpus[:300])
    idx.add(corpus[300:600])
    df = idx.doc_freq()
    counted = np.zeros_like(df)
    for name in idx.names:
        cols = idx.token_columns(name)
        assert list(cols) == sorted(cols)
        counted[cols] += 1
        assert [idx.column_token(int(c)) for c in cols] == idx.tokens(name)
    assert np.array_equal(counted, df)
    assert np.allclose(idx.idf(), np.log(len(idx) / df))
    # callers get their own arrays: changing one cannot corrupt the index
    name = idx.names[0]
    cols = idx.token_columns(name)
    before = cols.copy()
    cols[:] = 0
    assert np.array_equal(idx.token_columns(name), before) and cols.dtype == np.int64


def test_sharing_pairs_are_the_pattern_of_the_sparse_product() -> None:
    """The exact candidate search takes the pairs whose name vectors share a pair (cosine > 0) from
    an inverted index, not from a sparse product: the same set on random rows (empty rows, one
    shared column, columns out of order)."""
    import scipy.sparse as sp

    from stormeye.grouping.graph import _sharing_pairs

    rng = np.random.default_rng(3)
    for _ in range(300):
        n, m = int(rng.integers(1, 40)), int(rng.integers(1, 30))
        lens = np.minimum(rng.integers(0, 8, n), m)
        cols = np.concatenate([rng.choice(m, int(k), replace=False) for k in lens] + [np.zeros(0, dtype=np.int64)])
        mat = sp.csr_matrix((rng.random(len(cols)) + 0.01, cols, np.r_[0, np.cumsum(lens)]), shape=(n, m))
        left = np.sort(rng.choice(n, int(rng.integers(1, n + 1)), replace=False))
        near = sp.csr_matrix(mat[left] @ mat.T).tocoo()
        want = set(zip(left[near.row].tolist(), near.col.tolist()))
        a, b = _sharing_pairs(mat, left)
        assert set(zip(a.tolist(), b.tolist())) == want
