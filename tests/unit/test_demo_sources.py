"""What the closed-loop scenario streams: the demo's generator or a replayed history, behind one Source."""

import itertools
from pathlib import Path

from flywheel.demo.replay import Replay, ReplayStream
from flywheel.demo.scenario import Loans, ScenarioConfig, Source

DATASETS = Path(__file__).resolve().parents[2] / "datasets"


def first(rows, n=3):
    return list(itertools.islice(rows, n))


def test_the_loans_source_sends_applications_without_their_outcome_and_can_swap_its_concepts():
    config = ScenarioConfig(run_id="t")
    loans: Source = Loans(config)
    for row in first(loans.history()) + first(loans.before()) + first(loans.after()) + loans.probe():
        assert "approved" not in row.record and row.label in (0, 1)
        assert row.record[loans.entity_key].startswith("demo-t-")
    assert loans.turns() == ["0->2", "2->0"]
    loans.turn("2->0")
    assert (config.function_before, config.function_after) == (2, 0)
    assert loans.change() == "the concept changes: function 2 -> 0"
    assert loans.knows(0.95) and not loans.knows(0.6)


def test_a_replay_streams_its_phases_in_time_order_and_probes_with_rows_never_streamed():
    rain = ReplayStream(Replay.load(DATASETS, "rain"), run_id="t")
    assert (rain.dataset, rain.entity_key, rain.turns()) == ("rain", "day_id", ["replay"])
    history, before, after = first(rain.history()), first(rain.before()), first(rain.after())
    assert [r.index for r in history + before + after] == [
        10000,
        10001,
        10002,
        11500,
        11501,
        11502,
        12000,
        12001,
        12002,
    ]
    assert all("rain" not in r.record for r in history + before + after)
    probe = rain.probe()
    assert len(probe) == 200 and {r.record["day_id"] for r in probe}.isdisjoint(r.record["day_id"] for r in before)
    share = sum(r.label == 0 for r in probe) / len(probe)  # dry days are the majority
    assert rain.knows(share + 0.05) and not rain.knows(share)
    assert "row 12000, day 1981-11-09" in rain.change()


def test_a_replay_holds_every_nth_row_after_the_change_out_of_the_stream():
    replay = Replay.load(DATASETS, "rain")
    streamed = [r.index for r in ReplayStream(replay, run_id="t").after()]
    held = [r.index for r in replay.phase("holdout", "t")]
    assert held[:3] == [12004, 12009, 12014] and held[-1] == 16499 and len(held) == (16500 - 12000) // 5
    assert sorted(streamed + held) == list(range(12000, 18159)) and not set(streamed) & set(held)
