"""Every function has a sample event in events/functions/, and each sample has the shape its handler takes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from servalsheets_backup.backup import PendingSet
from servalsheets_backup.restore import job_from
from servalsheets_backup.schemas import BackupRequest, RestoreRequest, parse

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = sorted(p.name for p in (ROOT / "functions").iterdir() if (p / "app.py").exists())


def _sample(folder: str) -> dict[str, object]:
    return dict(json.loads((ROOT / "events" / "functions" / f"{folder}.json").read_text()))


@pytest.mark.parametrize("folder", FUNCTIONS)
def test_every_function_has_a_sample_event_of_the_right_shape(folder: str) -> None:
    event = _sample(folder)
    if folder == "begin_backup":
        parse(BackupRequest, event["request"], "backup request")
    elif folder == "prepare_restore":
        request = parse(RestoreRequest, event["request"], "restore input")
        assert request.fail_after is None
    elif folder == "fail_backup":
        assert isinstance(event["state"], dict) and "error" in event["state"]
    elif "pending" in event:
        PendingSet.from_dict(event["pending"])
    elif "job" in event:
        assert job_from(event)["restore_id"]
    else:
        assert folder == "check_freshness"


def test_samples_name_no_local_paths_or_drill_resources() -> None:
    text = "\n".join((ROOT / "events" / "functions" / f"{folder}.json").read_text() for folder in FUNCTIONS)
    assert "/tmp/" not in text and "drill" not in text
