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
