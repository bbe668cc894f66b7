"""Incidents in memory and on disk."""

from __future__ import annotations

import time
from pathlib import Path

from hydrovisor.process import task_dump
from hydrovisor.process.incidents import Incident, IncidentKind, IncidentStore, summarize


def incident(incident_id: str, kind: IncidentKind = IncidentKind.CHAOS, opened_at: float | None = None) -> Incident:
    return Incident(incident_id=incident_id, kind=kind, title="t", reason="r", owner="test",
                    opened_at=time.time() if opened_at is None else opened_at)


def test_open_close_and_list_newest_first(tmp_path: Path) -> None:
    store = IncidentStore(tmp_path)
    store.open(incident("chaos-00000001"))
    store.open(incident("stall-00000002", IncidentKind.LOOP_STALL))
    assert [i.incident_id for i in store.recent()] == ["stall-00000002", "chaos-00000001"]
    assert [i.incident_id for i in store.recent(open_only=True)] == ["stall-00000002", "chaos-00000001"]
    closed = store.close("chaos-00000001", attributes={"outcome": "ended"})
    assert closed is not None and closed.closed_at is not None and closed.duration_s is not None
    assert closed.attributes == {"outcome": "ended"}
    assert store.close("chaos-00000001") is None  # closing twice changes nothing
    assert [i.incident_id for i in store.recent(open_only=True)] == ["stall-00000002"]
    assert [i.incident_id for i in store.recent(kind=IncidentKind.CHAOS)] == ["chaos-00000001"]


def test_files_survive_the_process_and_open_ones_are_closed_by_the_restart(tmp_path: Path) -> None:
    dump = task_dump.capture(None, "stall-00000003", "test")
    first = IncidentStore(tmp_path)
    first.open(incident("chaos-00000001"))
    first.close("chaos-00000001")
    first.open(Incident(incident_id="stall-00000003", kind=IncidentKind.LOOP_STALL, title="stall", reason="r",
                        owner="loop_guard", opened_at=time.time(), dump=dump))
    again = IncidentStore(tmp_path)
    stall = again.get("stall-00000003")
    assert stall is not None
    assert stall.dump is not None and stall.dump.total_threads == dump.total_threads
    assert stall.closed_at is not None and stall.attributes["closed_by"] == "restart"
    assert again.recent(open_only=True) == []
    assert summarize(stall).has_dump


def test_only_the_newest_are_kept_in_memory_and_on_disk(tmp_path: Path) -> None:
    store = IncidentStore(tmp_path, keep=3)
    for n in range(5):
        store.open(incident(f"chaos-0000000{n}", opened_at=1000.0 + n))
    assert [i.incident_id for i in store.recent()] == ["chaos-00000004", "chaos-00000003", "chaos-00000002"]
    assert len(list(tmp_path.glob("*.json"))) == 3


def test_an_unreadable_file_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "0000000000001-chaos-deadbeef.json").write_text("{not json")
    IncidentStore(tmp_path).open(incident("chaos-00000001"))
    assert [i.incident_id for i in IncidentStore(tmp_path).recent()] == ["chaos-00000001"]


def test_memory_only_store_writes_nothing(tmp_path: Path) -> None:
    store = IncidentStore(None)
    store.open(incident("chaos-00000001"))
    assert store.get("chaos-00000001") is not None
    assert list(tmp_path.iterdir()) == []
