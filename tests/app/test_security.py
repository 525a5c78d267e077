"""The admin password gate, owner ids, checkpoint paths a visitor may name, and what job processes inherit."""

import re
import time
from pathlib import Path

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
    cache = hub_cache_with(tmp_path / "hub", "BAAI/EVE-7B-HD-v2.0")
    roots = [tmp_path / "runs", cache]
    inside = roots[0] / "job-1" / "out"
    inside.mkdir(parents=True)
    (inside / "config.json").write_text("{}")
    assert resolve_checkpoint_choice(str(inside), roots, cache) == str(inside.resolve())
    assert resolve_checkpoint_choice("BAAI/EVE-7B-HD-v2.0", roots, cache) == "BAAI/EVE-7B-HD-v2.0"
    adapter = roots[0] / "job-2" / "out"  # a LoRA job's output: an adapter, no config.json
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    assert resolve_checkpoint_choice(str(adapter), roots, cache) == str(adapter.resolve())
    with pytest.raises(UserError, match="no config.json"):
        resolve_checkpoint_choice(str(roots[0] / "job-1"), roots, cache)
    for outside in (DEFAULT_MODEL, "/etc", str(roots[0] / ".." / "elsewhere")):
        with pytest.raises(UserError, match="must be the default model, a finished job, or a Hub id"):
            resolve_checkpoint_choice(outside, roots, cache)


def test_job_processes_never_see_the_admin_password(tmp_path, monkeypatch):
    monkeypatch.setenv("EVE_ADMIN_PASSWORD", "top secret")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    env = JobRunner(jobs=None, data_dir=tmp_path)._child_env()
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


def hub_cache_with(cache: Path, repo_id: str) -> Path:
    """A Hub cache folder holding `repo_id`'s config.json, laid out as huggingface_hub lays it out."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    (repo / "snapshots" / ("0" * 40) / "config.json").write_text("{}")
    return cache


@pytest.mark.parametrize("name", ["a/..", "etc/passwd", "BAAI/not-downloaded", "a--b/c", "-a/b", "a/b."])
def test_a_hub_id_follows_the_hubs_rules_and_is_in_the_servers_hub_cache(tmp_path, name):
    """`a/..` and `etc/passwd` passed as Hub ids: spelled like one, but no model of that name is on the server."""
    cache = hub_cache_with(tmp_path / "hub", "BAAI/EVE-7B-HD-v2.0")
    with pytest.raises(UserError, match="is not a Hub model in this server's Hub cache"):
        resolve_checkpoint_choice(name, [tmp_path / "runs", cache], cache)


def test_empty_passwords_are_not_guesses():
    """An admin button clicked with the field empty is refused at once, and never counts toward the lock-out."""
    gate = AdminGate("right", max_failures=2, window=60, delay=0.05)
    for _ in range(10):
        with pytest.raises(UserError, match="needs the admin password"):
            gate.check("", "1.2.3.4")
    gate.check("right", "1.2.3.4")


def test_guesses_from_many_addresses_meet_a_server_wide_back_off_that_locks_nobody_out():
    """Past `global_failures` wrong guesses from all addresses together, checks take turns (one per `backoff`
    seconds), whatever address they come from; the right password still gets in after its turn."""
    waits: list[float] = []
    gate = AdminGate("right", max_failures=100, window=60, delay=0, global_failures=3, backoff=2.0, sleep=waits.append)
    for i in range(3):
        with pytest.raises(UserError, match="Wrong admin password"):
            gate.check("wrong", f"10.0.0.{i}")
    assert [w for w in waits if w > 0] == []  # below the threshold: no back-off
    waits.clear()
    for i in range(3):
        with pytest.raises(UserError, match="Wrong admin password"):
            gate.check("wrong", f"10.0.1.{i}")
    gate.check("right", "192.0.2.1")
    turns = [w for w in waits if w > 0]
    assert len(turns) == 3 and all(abs(t - 2.0 * (i + 1)) < 0.5 for i, t in enumerate(turns)), turns


def test_a_page_unlocked_by_a_valid_admin_token_gets_past_the_lock_out():
    """Others' wrong guesses from the admin's address (everyone behind one proxy) lock the address, not the admin
    whose browser holds a valid token; a wrong password from such a page is still refused."""
    gate = AdminGate("right", max_failures=2, window=60, delay=0)
    for _ in range(2):
        with pytest.raises(UserError, match="Wrong admin password"):
            gate.check("wrong", "10.0.0.1")
    with pytest.raises(UserError, match="Too many wrong admin passwords"):
        gate.check("right", "10.0.0.1")
    gate.check("right", "10.0.0.1", trusted=True)
    assert gate.is_admin("right", "10.0.0.1", trusted=True)
    with pytest.raises(UserError, match="Too many wrong admin passwords"):
        gate.check("wrong", "10.0.0.1", trusted=True)
