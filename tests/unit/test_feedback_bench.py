"""bench/feedback.py's simulated on-call judges only the incidents its labels cover."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import feedback


def test_the_on_call_leaves_incidents_of_the_unlabelled_history_alone(tmp_path: Path) -> None:
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps({"start": 1000.0, "end": 9000.0, "events": []}))
    smd = feedback.Labels("smd", None, truth)
    assert not smd.judged({"start": 999.0})  # before the labelled test part: nothing says it is noise
    assert smd.judged({"start": 1000.0}) and smd.judged({"start": 5000.0})
    nezha_truth = tmp_path / "ob.truth.json"
    nezha_truth.write_text(json.dumps({"first": 0.0, "faults": []}))
    assert feedback.Labels("nezha", None, nezha_truth).judged({"start": -1.0})  # its fault list covers all of it
