"""App settings: flags over environment variables over the `Settings` defaults, each default written once."""

import dataclasses
import os
from pathlib import Path

import pytest

from eve_app.settings import Settings, parse_settings


@pytest.fixture
def clean_env(monkeypatch):
    """No setting from the environment: every EVE_* variable (tests/conftest.py sets one) and Gradio's server ones."""
    for name in [n for n in os.environ if n.startswith("EVE_")] + ["GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT"]:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_no_flags_and_no_environment_give_the_dataclass_defaults(clean_env):
    assert dataclasses.asdict(parse_settings([])) == dataclasses.asdict(Settings())


def test_environment_then_flags_override_the_defaults(clean_env):
    clean_env.setenv("GRADIO_SERVER_PORT", "8123")
    clean_env.setenv("EVE_DATA_DIR", "/tmp/eve-data")
    clean_env.setenv("EVE_MAX_IMAGE_MB", "3.5")
    settings = parse_settings(["--device", "cuda:1"])
    assert (settings.port, settings.data_dir, settings.max_image_mb) == (8123, Path("/tmp/eve-data"), 3.5)
    assert settings.device == "cuda:1" and settings.host == Settings().host
    assert parse_settings(["--port", "9000"]).port == 9000


def test_every_setting_is_one_declared_flag_with_its_environment_variable(clean_env, capsys):
    for field in dataclasses.fields(Settings):
        assert field.metadata.get("help"), f"{field.name} has no help text"
    clean_env.setenv("EVE_API_KEY", "from-env")
    clean_env.setenv("EVE_ALLOW_JOBS_ON_SPACES", "1")
    clean_env.setenv("EVE_MAX_SESSIONS", "7")
    settings = parse_settings([])
    assert (settings.api_key, settings.allow_jobs_on_spaces, settings.max_sessions) == ("from-env", True, 7)
    with pytest.raises(SystemExit):
        parse_settings(["--help"])
    usage = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert all("--" + field.name.replace("_", "-") in usage for field in dataclasses.fields(Settings))
    assert "(env EVE_MAX_SESSIONS)" in usage and "(env GRADIO_SERVER_PORT)" in usage


def test_a_pending_budget_smaller_than_one_upload_is_refused_at_start(clean_env, capsys):
    with pytest.raises(SystemExit):
        parse_settings(["--max-unpacked-mb", "100", "--pending-uploads-mb", "50"])
    assert "--pending-uploads-mb (50) must be at least --max-unpacked-mb (100)" in capsys.readouterr().err


def test_the_fine_tune_form_and_the_training_command_line_share_their_defaults():
    from eve_app.jobs.command import JobConfig
    from model.shared import TRAIN_DEFAULTS
    from model.train.args import train_defaults

    job = JobConfig(base="b", data="d.json")
    defaults = train_defaults()
    for key, value in TRAIN_DEFAULTS.items():
        assert getattr(job, key) == defaults[key] == value, key
