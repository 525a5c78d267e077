"""The fine-tune tab end to end through gradio_client: validate an upload with a bad row, fine-tune the default
model for a few dozen CPU steps in a separate process, watch it finish with a falling loss, load it into chat."""

import json
import time
import zipfile
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from model.synthetic import write_dataset
from tests.e2e.helpers import MODEL, free_port
from tests.e2e.test_console import noise_in

PASSWORD = "let-me-train"


@pytest.fixture(scope="module")
def admin_app(tmp_path_factory):
    from app import create_app, launch_options

    data_dir = tmp_path_factory.mktemp("finetune-data")
    port = free_port()
    demo, ctx = create_app(
        ["--model", MODEL, "--data-dir", str(data_dir), "--port", str(port), "--admin-password", PASSWORD]
    )
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_options(ctx))
    yield Client(f"http://127.0.0.1:{port}/", verbose=False), ctx
    ctx.runner.stop_monitor()
    demo.close()


def stranger(client: Client) -> Client:
    """A new session on the same server: the admin's session stays unlocked once the password was right there, so a
    wrong or empty password is only refused on a page that never gave the right one."""
    return Client(client.src, verbose=False)


def _upload(tmp_path):
    """12 OCR samples plus one row whose image is missing, as data.json + images.zip."""
    folder = tmp_path / "dataset"
    data_file = write_dataset(folder, ["ocr"], n=12, seed=3, level=0)
    rows = json.loads(data_file.read_text())
    rows.append(
        {
            "id": "broken",
            "image": "images/missing.png",
            "conversations": [{"from": "human", "value": "<image>\nRead it."}, {"from": "gpt", "value": "x"}],
        }
    )
    data_file.write_text(json.dumps(rows))
    archive = tmp_path / "images.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for image in (folder / "images").iterdir():
            zipped.write(image, f"images/{image.name}")
    return data_file, archive


def test_validate_launch_watch_and_chat_with_the_result(admin_app, tmp_path):
    client, ctx = admin_app
    data_file, archive = _upload(tmp_path)
    base = str(ctx.engine.checkpoint_dir)
    summary, preview, dataset, _ = client.predict(
        [handle_file(str(data_file)), handle_file(str(archive))], "", base, "", api_name="/validate_dataset"
    )
    assert "12" in summary and "missing.png" in json.dumps(preview)

    settings = {
        "dataset": dataset,
        "base": base,
        "stages": ["3"],
        "lr": "1e-4",
        "max_steps": "24",
        "batch_size": 4,
        "seed": 0,
        "eval_split": 0.0,
    }
    with pytest.raises(Exception, match="needs the admin password"):
        client.predict(**settings, password="", api_name="/launch_job")
    # The memory plan refuses what the hardware cannot hold, naming the estimate (here a batch of 100,000 rows).
    jobs_before = len(ctx.jobs.list_jobs())
    with pytest.raises(Exception, match=r"needs about [\d.]+ GiB per CPU process \(full fine-tuning\)"):
        client.predict(**{**settings, "batch_size": 100_000}, password=PASSWORD, api_name="/launch_job")
    assert len(ctx.jobs.list_jobs()) == jobs_before
    _, job_id = client.predict(**settings, password=PASSWORD, api_name="/launch_job")
    deadline = time.time() + 420
    while time.time() < deadline:
        label = client.predict(job_id, PASSWORD, api_name="/watch_job")[0]
        if ctx.jobs.get_job(int(job_id))["status"] in ("done", "failed", "aborted"):
            break
        time.sleep(2)
    job = ctx.jobs.get_job(int(job_id))
    assert job["status"] == "done", ctx.runner.log_tail(int(job_id))
    log = (Path(job["run_dir"]) / "train.log").read_text(errors="replace")
    assert not noise_in(log), noise_in(log)  # the job's log opens with its own lines, not library warnings
    assert "24/24" in client.predict(job_id, PASSWORD, api_name="/watch_job")[0] or "done" in label
    with pytest.raises(Exception, match="Wrong admin password"):
        stranger(client).predict(job_id, "guess", api_name="/watch_job")

    losses = [row["value"] for row in ctx.runner.loss_series(int(job_id)) if row["series"] == "train"]
    assert len(losses) >= 4 and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3

    # The job ends by answering rows with the base and the tuned model (training rows: the job had no eval split).
    deadline = time.time() + 180
    while ctx.runner.results(int(job_id))["state"] in ("none", "running") and time.time() < deadline:
        time.sleep(1)
    run_dir = Path(job["run_dir"])
    results = json.loads((run_dir / "results.json").read_text())
    assert results["held_out"] == "training rows" and results["rows"] == 12
    for model in ("base", "tuned"):
        assert set(results["metrics"][model]) == {"exact", "cer", "token_f1", "n"}
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all(row["expected"] and "base" in row and "tuned" in row for row in rows)
    with pytest.raises(Exception, match="Wrong admin password"):
        stranger(client).predict("guess", job_id, api_name="/compare_job")

    with pytest.raises(Exception, match="needs the admin password"):
        stranger(client).predict("", f"job-{int(job_id)}-3", api_name="/load_model")
    loaded, model = client.predict(PASSWORD, f"job-{int(job_id)}-3", api_name="/load_model")
    assert "Loaded" in loaded and f"job-{int(job_id)}-3" in model and ctx.engine.name == f"job-{int(job_id)}-3"
    image = min((data_file.parent / "images").iterdir())
    answer = client.predict(handle_file(str(image)), "OCR", "", 16, api_name="/answer")
    assert isinstance(answer, str) and answer.strip()
    stored = ctx.conversations.store.list_conversations(limit=1, owner="api")[0]  # the record names the job's model
    assert (
        ctx.conversations.store.get_conversation(stored["id"])["messages"][-1]["generation"]["model"]
        == f"job-{int(job_id)}-3"
    )
    _, model = client.predict(PASSWORD, "default model (eve-tiny)", api_name="/load_model")  # and back, one click
    assert "eve-tiny" in model and ctx.engine.name == "eve-tiny"


def test_launching_needs_the_password_and_validated_data(admin_app):
    client, ctx = admin_app
    with pytest.raises(Exception, match="Wrong admin password"):
        stranger(client).predict(
            dataset="", base=str(ctx.engine.checkpoint_dir), stages=["3"], password="nope", api_name="/launch_job"
        )
