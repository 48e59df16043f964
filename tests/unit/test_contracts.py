"""Data contracts: types, nulls, ranges, categories, unknown columns."""

from pathlib import Path

import pytest

from flywheel.common.contracts import DataContract, load_contracts

DATASETS = Path(__file__).resolve().parents[2] / "datasets"


@pytest.fixture(scope="module")
def loans() -> DataContract:
    return load_contracts(DATASETS)["loans"]


def good_record() -> dict:
    return {
        "applicant_id": "a-1",
        "applied_at": "2026-01-01T10:00:00+00:00",
        "salary": 50_000.0,
        "commission": 0,
        "age": 40,
        "elevel": 2,
        "car": 3,
        "zipcode": 4,
        "hvalue": 200_000.0,
        "hyears": 10,
        "loan": 100_000.0,
        "approved": 1,
    }


def test_a_good_record_passes_and_is_coerced(loans):
    clean, problems = loans.check(good_record())
    assert problems == []
    assert clean["commission"] == 0.0 and isinstance(clean["commission"], float)
    assert clean["applied_at"].tzinfo is not None


def test_every_violation_is_reported_with_column_rule_and_value(loans):
    record = {**good_record(), "age": 7, "elevel": 9, "salary": "lots", "loan": None, "extra": 1}
    _, problems = loans.check(record)
    found = {(p.column, p.rule, p.value) for p in problems}
    assert found == {
        ("age", "range", 7),
        ("elevel", "category", 9),
        ("salary", "type", "lots"),
        ("loan", "nullable", None),
        ("extra", "unknown", 1),
    }


def test_label_may_be_missing_but_booleans_are_not_ints(loans):
    _, problems = loans.check({**good_record(), "approved": None})
    assert problems == []
    _, problems = loans.check({**good_record(), "age": True})
    assert [(p.column, p.rule) for p in problems] == [("age", "type")]


def test_a_contract_must_declare_its_key_columns():
    with pytest.raises(ValueError, match="entity_key"):
        DataContract(dataset="d", version="1", entity_key="id", timestamp="ts", columns={"ts": {"type": "datetime"}})


ABSURD = [
    ("salary", 10**401, "range", "float range"),
    ("salary", -(10**401), "range", "float range"),
    ("salary", 1e308, "range", "outside"),
    ("salary", float("inf"), "range", "finite"),
    ("salary", float("-inf"), "range", "finite"),
    ("age", 10**401, "range", "64-bit"),
    ("age", 1e308, "range", "64-bit"),
    ("age", float("inf"), "type", "must be int"),
    ("age", "x" * 10_000, "type", "must be int"),
    ("age", [[[[1]]]], "type", "must be int"),
    ("age", {"nested": {"deeper": 1}}, "type", "must be int"),
    ("elevel", 2**63, "range", "64-bit"),
    ("applied_at", "9999-12-31T23:59:59-05:00", "range", "outside"),
    ("applied_at", "0001-01-01T00:00:00+05:00", "range", "outside"),
    ("applied_at", "2300-01-01T00:00:00", "range", "outside"),
    ("applied_at", "x" * 10_000, "type", "ISO 8601"),
    ("applied_at", 1e308, "type", "must be datetime"),
    ("applicant_id", 10**401, "type", "must be str"),
]


@pytest.mark.parametrize(("column", "value", "rule", "says"), ABSURD, ids=[f"{c}={v!r:.16}" for c, v, *_ in ABSURD])
def test_an_absurd_value_is_a_violation_with_a_short_reason_never_an_exception(loans, column, value, rule, says):
    _, problems = loans.check({**good_record(), column: value})
    [problem] = problems
    assert (problem.column, problem.rule) == (column, rule)
    assert says in problem.message and len(problem.message) < 300


def test_without_a_declared_range_values_are_still_bounded_by_what_can_be_stored():
    contract = DataContract(
        dataset="d",
        version="1",
        entity_key="id",
        timestamp="ts",
        columns={"id": {"type": "str"}, "ts": {"type": "datetime"}, "n": {"type": "int"}, "x": {"type": "float"}},
    )
    record = {"id": "a", "ts": "2026-01-01T00:00:00Z"}
    assert contract.check({**record, "n": 2**63 - 1, "x": 1e308})[1] == []
    _, problems = contract.check({**record, "n": 2**63, "x": 10**309})
    assert {(p.column, p.rule) for p in problems} == {("n", "range"), ("x", "range")}


def test_nan_is_a_null():
    _, problems = load_contracts(DATASETS)["loans"].check({**good_record(), "salary": float("nan")})
    assert [(p.column, p.rule) for p in problems] == [("salary", "nullable")]


# -- a batch, a column at a time ------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from flywheel.common.contracts import _check_value  # noqa: E402

EVERY_KIND = DataContract(
    dataset="d",
    version="1",
    entity_key="id",
    timestamp="ts",
    label="y",
    columns={
        "id": {"type": "str"},
        "ts": {"type": "datetime"},
        "x": {"type": "float", "min": -5, "max": 1e6},
        "n": {"type": "int", "nullable": True, "min": 0},
        "free": {"type": "float", "nullable": True},
        "big": {"type": "int"},
        "grade": {"type": "str", "categories": ["a", "b"]},
        "flag": {"type": "bool", "nullable": True},
        "y": {"type": "int", "nullable": True, "categories": [0, 1]},
    },
)
ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([10**400, 0, 1, -1, 7]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["a", "b", "c", "2026-01-01T00:00:00Z", "not a time", ""]),
    st.lists(st.integers(), max_size=2),
)


def value_by_value(contract: DataContract, data: dict) -> tuple[dict, list]:
    """``check`` as it was before batches: every value on its own."""
    clean, problems = {}, []
    for column in sorted(set(data) - set(contract.columns)):
        problems.append(("unknown", column))
    for column, rule in contract.columns.items():
        coerced, broken = _check_value(column, rule, data.get(column))
        problems += [(v.rule, v.column, v.message) for v in broken]
        if not broken or broken[0].rule == "nullable" or coerced is not None:
            clean[column] = coerced
    return clean, problems


def plain(outcome: tuple[dict, list]) -> tuple[dict, list]:
    clean, problems = outcome
    return clean, [("unknown", v.column) if v.rule == "unknown" else (v.rule, v.column, v.message) for v in problems]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from([*EVERY_KIND.columns, "extra"]), ANY_VALUE, min_size=0, max_size=len(EVERY_KIND.columns)
        ),
        min_size=1,
        max_size=8,
    )
)
def test_a_batch_checked_a_column_at_a_time_finds_what_each_record_checked_alone_finds(records):
    batch = EVERY_KIND.check_many(records)
    assert [plain(o) for o in batch] == [value_by_value(EVERY_KIND, r) for r in records]
    columns = ["x", "n", "grade", "nope"]
    assert EVERY_KIND.violations_in_many(records, columns) == [EVERY_KIND.violations_in(r, columns) for r in records]


def test_a_plain_batch_passes_whole_and_coerces_its_ints_to_floats(loans):
    records = [{**good_record(), "applicant_id": f"a-{i}", "salary": 40_000 + i} for i in range(50)]
    checked = loans.check_many(records)
    assert all(problems == [] for _, problems in checked)
    assert [clean["salary"] for clean, _ in checked] == [40_000.0 + i for i in range(50)]
    assert all(type(clean["salary"]) is float for clean, _ in checked)
    assert [list(clean) for clean, _ in checked] == [list(loans.columns)] * 50
