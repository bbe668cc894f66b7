"""The fault campaign of issue 12 ("Proven safe"), short: ``benchmarks/_campaign.py`` for ~60 real seconds.

A real ``hydrovisor run`` subprocess (embedded PostgreSQL, chaos enabled, time scale 40) with three simulated
two-tank zones in this process, a seeded random driver per zone (workflows, cancels, emergency stops, every
node fault of the campaign), one DB outage and one ``kill -9`` + restart; the independent safety observer
judges every actuation on the wire and in the plant. The full campaign is ``benchmarks/fault_campaign.py``.

Any unsafe actuation fails it (with the campaign's cause hint); only what the simulator makes physically
impossible to stop (a welded relay, a node that cannot be reached) is counted apart, as in the full campaign.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from _campaign import Campaign, CampaignConfig, render  # the campaign lives with the benchmarks

SEED = 12
ZONES = 3
SCALE = 40.0
RANDOM_PHASE_S = 60.0
GRACE_REAL_S = 2.0


@pytest.mark.slow
@pytest.mark.fault_injection
@pytest.mark.timeout(480)
def test_a_short_fault_campaign_ends_every_workflow_and_actuates_nothing_unsafe(tmp_path: Path) -> None:
    # the suite runs two test workers on two cores (make test: pytest -n 2): the controller's reaction gets up to
    # 2 real seconds here (80 zone s) instead of the full campaign's 1, so CPU contention is not judged a dry run
    config = CampaignConfig(seed=SEED, zones=ZONES, scale=SCALE, minutes=ZONES * SCALE * RANDOM_PHASE_S / 60,
                            kills=1, db_outages=1, end_wait_s=150.0, data_dir=tmp_path / "campaign",
                            grace_real_s=GRACE_REAL_S)
    report = asyncio.run(Campaign(config).run())
    text = "\n".join(render(report))
    print(text)  # shown with -s or when the test fails: the whole report, evidence file included
    assert report.faults["kill9_restart"] == 1 and report.faults["db_outage"] == 1, text
    assert report.simulated_minutes >= 0.9 * config.minutes, text
    # every workflow ended, and every failure says why
    assert report.hanging == [], text
    assert [w for w in report.workflows if w.status != "completed" and not w.reason_code] == [], text
    outcomes = report.outcomes()
    assert sum(n for (_, status), n in outcomes.items() if status == "completed") >= 3, text
    assert sum(n for (_, status), n in outcomes.items() if status == "failed") >= 3, text
    # nothing unsafe on the wire or in the plant (welded relays and unreachable nodes are listed apart)
    assert report.violations == [], text
