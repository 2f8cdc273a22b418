"""Settings: every IDEM_* variable is declared once, read when asked (never frozen at import), documented."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from idem_platform import settings

ROOT = Path(__file__).resolve().parents[1]


def test_readme_configuration_table_is_the_settings_table():
    readme = (ROOT / "README.md").read_text()
    assert settings.markdown_table() in readme


def test_every_idem_variable_the_package_names_is_declared():
    named = set()
    for path in (ROOT / "idem_platform").rglob("*.py"):
        named |= set(re.findall(r"\b(IDEM_[A-Z0-9_]+)\b", path.read_text()))
    named -= {"IDEM_CELERY_BROKER", "IDEM_CELERY_BACKEND", "IDEM_CELERY_QUEUE"}  # deploy/celery's own
    assert named <= settings.NAMES, sorted(named - settings.NAMES)


def test_only_settings_and_process_starters_read_the_environment():
    readers = {
        str(p.relative_to(ROOT)) for p in (ROOT / "idem_platform").rglob("*.py") if "os.environ" in p.read_text()
    }
    assert readers <= {"idem_platform/settings.py", "idem_platform/services.py", "idem_platform/cli.py"}


def test_settings_are_read_when_asked_not_at_import(monkeypatch):
    import idem_platform  # noqa: F401 - already imported: what matters is that it froze nothing

    monkeypatch.setenv("IDEM_PG_SCHEMA", "later_schema")
    monkeypatch.setenv("IDEM_PARTITIONS_START", "2025-03-01")
    assert settings.current().pg_schema == "later_schema"
    assert idem_platform.daily_partitions().get_first_partition_key() == "2025-03-01"


def test_importing_the_package_needs_no_setting_and_reads_no_server(tmp_path):
    """A bare environment, a directory with no state: importing and building the example location works."""
    done = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning:idem_platform", "-c",
         "import idem_platform.definitions as d; d.defs.get_repository_def(); print('ok')"],
        cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, capture_output=True, text=True,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@pytest.mark.parametrize(
    "name, value, message",
    [("IDEM_PG_SWAP_MIN_ROWS", "many", "is not a number"), ("IDEM_ES_PLAIN_JSON", "perhaps", "use true or false"),
     ("IDEM_PARTITIONS_START", "2025-13-01", "YYYY-MM-DD")],
)
def test_a_bad_value_is_named(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(settings.SettingError, match=f"{name}=.*{message}"):
        settings.current()


def test_state_dir_is_found_from_a_subdirectory(monkeypatch, tmp_path):
    monkeypatch.delenv("IDEM_STATE_DIR", raising=False)
    (tmp_path / ".idem").mkdir()
    (tmp_path / "deep" / "er").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "deep" / "er")
    assert settings.current().state_dir == tmp_path / ".idem"


def test_readme_states_each_example_schedule_s_default_state():
    """A schedule's default state is what the README says it is (on: it runs under `idem dev` with nothing else)."""
    import dagster as dg

    from idem_platform.definitions import defs

    readme = (ROOT / "README.md").read_text()
    said = {"on": dg.DefaultScheduleStatus.RUNNING, "**off**": dg.DefaultScheduleStatus.STOPPED}
    repository = defs.get_repository_def()
    for schedule in map(repository.get_schedule_def, ("people_job_schedule", "service_requests_job_schedule")):
        match = re.search(rf"`{schedule.name}` \([^)]*; (on|\*\*off\*\*) by default", readme)
        assert match, f"the README does not say whether {schedule.name} is on by default"
        assert said[match.group(1)] == schedule.default_status, schedule.name
