"""flywheel maturity: asks the registry's GET /maturity and shows a bar per area, each criterion with its evidence."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from flywheel.cli.main import app
from flywheel.registry.maturity.criteria import CRITERIA
from flywheel.registry.maturity.report import judge
from tests.unit import test_cli_registry_calls as calls
from tests.unit.test_registry_maturity import MODEL, the_loop

fake, env = calls.fake, calls.env  # the in-process registry and the CLI's environment pointing at it
REPORT = judge(CRITERIA, the_loop(), model=MODEL).model_dump(mode="json")


def test_maturity_has_help_with_an_example():
    result = CliRunner().invoke(app, ["maturity", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Example" in result.output and "flywheel maturity" in result.output


def test_maturity_of_a_model_shows_a_bar_per_area_the_criteria_with_evidence_and_what_level_3_lacks(fake, env):
    recorder, _ = fake
    recorder.answers[("GET", f"/maturity?model={MODEL}")] = (200, REPORT)
    result = CliRunner().invoke(app, ["maturity", MODEL], env=env)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"MLOps maturity of {MODEL}" in out
    for title, level in (("Continuous training", 3), ("Deployment", 2), ("Monitoring", 2)):
        line = next(line for line in out.splitlines() if line.startswith(title))
        assert f"level {level}/3" in line and "━" in line
    assert "✓ L3 automated retraining on drift: yes — last drift-triggered run run-2" in out
    assert "✗ L3 automatic rollback: no — no rollout or champion has been rolled back" in out
    assert "Overall: level 2/3 — CI/CD for ML" in out
    assert "Missing for level 3:" in out and "• Deployment: automatic rollback" in out


def test_maturity_json_is_the_registrys_report_and_since_is_passed_on(fake, env):
    recorder, _ = fake
    recorder.answers[("GET", "/maturity?since=2026-12-02T09%3A00%3A00Z")] = (200, REPORT)
    result = CliRunner().invoke(app, ["maturity", "--since", "2026-12-02T09:00:00Z", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == REPORT


def test_maturity_of_an_unknown_model_is_one_line_with_the_registrys_reason(fake, env):
    recorder, _ = fake
    recorder.answers[("GET", "/maturity?model=nope")] = (404, {"detail": "no model 'nope' in the registry"})
    result = CliRunner().invoke(app, ["maturity", "nope"], env=env)
    assert result.exit_code == 1
    assert result.stderr.strip().endswith("no model 'nope' in the registry")
