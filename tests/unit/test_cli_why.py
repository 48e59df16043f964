"""flywheel why: asks the registry for a version's (or the champion's) story and prints it as a timeline."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from flywheel.cli.main import app
from flywheel.registry.why import explain
from tests.unit import test_cli_registry_calls as registry_calls
from tests.unit.test_registry_why import drift_loop, lineage_of

fake, env = registry_calls.fake, registry_calls.env  # the registry played by a small HTTP server


def story(**overrides) -> dict:
    events = drift_loop()
    return json.loads(json.dumps({**explain(events, lineage_of(events)), **overrides}))


def test_why_of_the_champion_prints_each_step_with_its_time_and_says_the_chain_is_whole(fake, env):
    recorder, _ = fake
    recorder.answers[("GET", "/models/loans-approval/why")] = (200, story())
    result = CliRunner().invoke(app, ["why", "loans-approval"], env=env)
    assert result.exit_code == 0, result.output
    out = result.stdout
    for shown in (
        "why loans-approval v2 (champion)",
        "2026-12-02 12:00:00",
        "concept drift on v1",
        "training requested (drift)",
        "+1m35s",
        "data v8, v9 · labels to labels-0002",
        "✓ beats_champion: 0.92 >= champion 0.60",
        "canary rollout of v2 promoted",
        "accuracy: 0.93 vs 0.61, p 0.0001 (significant)",
        "champion promote: v1 → v2 by serving",
        "no hole in the chain · 2m41s from first to last",
    ):
        assert shown in out, shown
    assert out.index("concept drift") < out.index("approved") < out.index("champion promote")


def test_why_of_a_version_with_holes_lists_them_and_json_passes_the_answer_through(fake, env):
    recorder, _ = fake
    holed = story(holes=["ChampionChanged 1234 (champion) names no cause"])
    recorder.answers[("GET", "/models/loans-approval/versions/2/why")] = (200, holed)
    shown = CliRunner().invoke(app, ["why", "loans-approval", "2"], env=env)
    as_json = CliRunner().invoke(app, ["why", "loans-approval", "2", "--json"], env=env)
    assert shown.exit_code == 0, shown.output
    assert "1 hole(s) in the chain" in shown.stdout
    assert "✗ ChampionChanged 1234 (champion) names no cause" in shown.stdout
    assert json.loads(as_json.stdout) == holed


def test_why_of_a_model_without_champion_is_one_line_with_the_registrys_reason(fake, env):
    recorder, _ = fake
    recorder.answers[("GET", "/models/fresh/why")] = (404, {"detail": "model 'fresh' has no champion yet"})
    result = CliRunner().invoke(app, ["why", "fresh"], env=env)
    assert result.exit_code == 1
    assert "has no champion yet" in result.stderr
