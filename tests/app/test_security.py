"""The admin password gate, owner ids, checkpoint paths a visitor may name, and what job processes inherit."""

import re
import time

import pytest

from eve_app.errors import UserError
from eve_app.jobs.runner import JobRunner
from eve_app.security import AdminGate, owner_of, resolve_checkpoint_choice, uploaded_file, viewer
from eve_app.settings import DEFAULT_MODEL


def test_wrong_guesses_are_slowed_down_and_then_locked_out_per_client():
    gate = AdminGate("right", max_failures=3, window=60, delay=0.05)
    gate.check("right", "1.2.3.4")
    for _ in range(3):
        started = time.monotonic()
        with pytest.raises(UserError, match="Wrong admin password"):
            gate.check("wrong", "1.2.3.4")
        assert time.monotonic() - started >= 0.05
    with pytest.raises(UserError, match="Too many wrong admin passwords"):
        gate.check("right", "1.2.3.4")  # locked out, even with the right password
    gate.check("right", "5.6.7.8")  # another client is not
    assert gate.is_admin("", "5.6.7.8") is False  # an empty field is not a guess


def test_no_password_configured_means_no_admin():
    with pytest.raises(UserError, match="none is set"):
        AdminGate(None).check("anything", "1.2.3.4")


def test_owner_ids_come_from_the_browser_token_and_are_not_the_token():
    token = "a" * 32
    owner = owner_of(token)
    assert owner.startswith("browser:") and token not in owner and owner == owner_of(token)
    assert owner_of("short") is None and owner_of(None) is None
    assert viewer(owner, is_admin=True) == "admin" and viewer(owner, is_admin=False) == owner


def test_checkpoints_outside_the_allowed_folders_are_refused(tmp_path):
    roots = [tmp_path / "runs"]
    inside = roots[0] / "job-1" / "out"
    inside.mkdir(parents=True)
    (inside / "config.json").write_text("{}")
    assert resolve_checkpoint_choice(str(inside), roots) == str(inside.resolve())
    assert resolve_checkpoint_choice("BAAI/EVE-7B-HD-v2.0", roots) == "BAAI/EVE-7B-HD-v2.0"
    adapter = roots[0] / "job-2" / "out"  # a LoRA job's output: an adapter, no config.json
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    assert resolve_checkpoint_choice(str(adapter), roots) == str(adapter.resolve())
    with pytest.raises(UserError, match="no config.json"):
        resolve_checkpoint_choice(str(roots[0] / "job-1"), roots)
    for outside in (DEFAULT_MODEL, "/etc", str(roots[0] / ".." / "elsewhere")):
        with pytest.raises(UserError, match="must be the default model, a finished job, or a Hub id"):
            resolve_checkpoint_choice(outside, roots)


def test_job_processes_never_see_the_admin_password(tmp_path, monkeypatch):
    monkeypatch.setenv("EVE_ADMIN_PASSWORD", "top secret")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    env = JobRunner(storage=None, data_dir=tmp_path)._child_env()
    assert "EVE_ADMIN_PASSWORD" not in env and "top secret" not in env.values() and env["OMP_NUM_THREADS"] == "1"


def test_a_named_file_must_be_a_regular_file_inside_the_upload_cache(tmp_path):
    cache = tmp_path / "cache"
    (cache / "abc").mkdir(parents=True)
    upload = cache / "abc" / "photo.png"
    upload.write_bytes(b"png")
    (cache / "abc" / "link.png").symlink_to(upload)
    (tmp_path / "elsewhere.txt").write_text("secret")
    assert uploaded_file(str(upload), cache) == upload.resolve()
    refused = {
        str(cache): "cache is a folder, not a file you uploaded",
        str(cache / "abc"): "abc is a folder, not a file you uploaded",
        str(cache / "abc" / "link.png"): "link.png is a link",
        str(tmp_path / "elsewhere.txt"): "elsewhere.txt is not a file you uploaded",
        str(
            cache / "abc" / ".." / "abc" / "photo.png"
        ): "photo.png is not a file you uploaded: a file path has no '..'",
        str(cache / "abc" / "gone.png"): "gone.png was not uploaded (or has expired)",
        "": "empty path",
    }
    for path, message in refused.items():
        with pytest.raises(UserError, match=re.escape(message)):
            uploaded_file(path, cache)
