"""Settings and GroupingConfig: each grouping default lives once (in GroupingConfig), STORMEYE_* still set them."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from stormeye.grouping.graph import GroupingConfig
from stormeye.workers.settings import GROUPING_SETTINGS, Settings

FIELDS = {f.name: f for f in dataclasses.fields(GroupingConfig)}


def test_every_grouping_setting_sets_a_grouping_field_and_takes_its_default() -> None:
    assert len(GROUPING_SETTINGS) == 18  # the 16 of issue 32, open_alone_level and open_alone_points
    for setting, field in GROUPING_SETTINGS.items():
        assert setting in Settings.model_fields and field in FIELDS, (setting, field)
        assert Settings.model_fields[setting].default == FIELDS[field].default, setting
    # no setting shadows a GroupingConfig field outside the map (it would keep a default of its own)
    assert set(Settings.model_fields) & set(FIELDS) <= set(GROUPING_SETTINGS)
    assert Settings().grouping_config() == GroupingConfig()


def test_a_default_changed_in_grouping_config_is_the_settings_default() -> None:
    """The one place: change GroupingConfig's default (in a fresh interpreter) and Settings follows."""
    code = (
        "import dataclasses\n"
        "from stormeye.grouping.graph import GroupingConfig\n"
        "GroupingConfig.__dataclass_fields__['min_name'].default = 0.55\n"
        "GroupingConfig.__dataclass_fields__['threads'].default = 5\n"
        "from stormeye.workers.settings import Settings\n"
        "g = Settings().grouping_config()\n"
        "print(g.min_name, g.threads)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={})
    assert out.stdout.split() == ["0.55", "5"]


def test_the_environment_variables_people_set_still_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORMEYE_MIN_NAME", "0.6")
    monkeypatch.setenv("STORMEYE_GROUPING_THREADS", "3")
    monkeypatch.setenv("STORMEYE_NEW_ONSET_GAP_STEPS", "7")
    g = Settings().grouping_config()
    assert (g.min_name, g.threads, g.new_onset_gap_steps) == (0.6, 3, 7)
    assert g.min_shape == GroupingConfig().min_shape
    monkeypatch.setenv("STORMEYE_MIN_NAME", "2")
    with pytest.raises(ValueError, match="min_name"):
        Settings()
