"""Dataset validation before a fine-tuning job: good uploads pass, each malformed one gets its own message.

No process is started here: validation only reads and copies files (checked by `no_launch`).
"""

import json
import shutil
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from eve_app.jobs import ImageSettings, UploadLimits, paged_preview, validate_dataset, validate_upload
from eve_app.jobs.archive import UploadError, safe_extract


def good_rows(n: int = 4) -> list[dict]:
    return [
        {
            "id": f"s{i}",
            "image": f"images/{i}.png",
            "conversations": [
                {"from": "human", "value": "<image>\nWhat is this?"},
                {"from": "gpt", "value": f"A square of colour {i}."},
            ],
        }
        for i in range(n)
    ]


def write_dataset(folder: Path, rows: list, n_images: int = 4) -> Path:
    """`folder/data.json` + `folder/images/<i>.png`, the layout of a History export."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for i in range(n_images):
        Image.new("RGB", (40 + 8 * i, 32), (40 * i, 0, 0)).save(folder / "images" / f"{i}.png")
    path = folder / "data.json"
    path.write_text(json.dumps(rows, indent=1))
    return path


def zip_of(path: Path, entries: dict[str, bytes], symlink: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = 0o120777 << 16  # a symlink entry, as `zip -y` writes it
            zf.writestr(info, "/etc/passwd")
    return path


def png_bytes(size: tuple[int, int] = (40, 32)) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.new("RGB", size, (0, 128, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def data_dir(tmp_path):
    folder = tmp_path / "app-data"
    yield folder
    assert not (folder / "runs").exists(), "validation must never launch a job"


@pytest.fixture
def base(tmp_path) -> Path:
    """A checkpoint folder with only the config fields validation reads (64 px images, 16 px patches)."""
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"image_max_size": 64, "patch_stride": 8, "dense_stride": 2}))
    return folder


def test_good_upload_json_and_zip_of_images(tmp_path, data_dir, base):
    src = tmp_path / "src"
    data = write_dataset(src, good_rows())
    images = zip_of(
        tmp_path / "images.zip", {f"images/{i}.png": (src / f"images/{i}.png").read_bytes() for i in range(4)}
    )
    result = validate_upload([data, images], data_dir, base=base, stage="3")
    assert not result.fatal, result.message()
    s = result.summary
    assert (s["samples"], s["valid_samples"], s["images"], s["missing_images"]) == (4, 4, 4, 0)
    # 40..64 x 32 px under a 64 px budget and 16 px patches: 2-4 columns, 2 rows, plus class and split tokens.
    assert s["image_max_size"] == 64 and s["patch_size"] == 16
    assert s["image_tokens"] == sum(ImageSettings(64, 16).tokens(40 + 8 * i, 32) for i in range(4)) > 0
    assert s["total_tokens"] == s["text_tokens"] + s["image_tokens"]
    assert result.upload_dir.parent == (data_dir / "uploads").resolve()
    prepared = json.loads(result.data_path.read_text())
    assert [row["id"] for row in prepared] == ["s0", "s1", "s2", "s3"]
    assert all((result.image_folder / row["image"]).is_file() for row in prepared)


def test_history_export_as_folder_and_as_zip(tmp_path, data_dir):
    export = tmp_path / "llava"
    write_dataset(export, good_rows())
    assert not validate_upload([export], data_dir, allow_folders=True).fatal
    archive = Path(shutil.make_archive(str(tmp_path / "training-data"), "zip", export))
    result = validate_upload([archive], data_dir)
    assert not result.fatal, result.message()
    assert result.summary["valid_samples"] == 4


def test_a_visitors_upload_may_not_be_a_folder_or_a_link(tmp_path, data_dir):
    """Only the server's own code stages folders: a folder or a link among a visitor's files refuses the upload."""
    export = tmp_path / "llava"
    data = write_dataset(export, good_rows())
    link = tmp_path / "link.json"
    link.symlink_to(data)
    assert "llava is a folder; upload its files or a zip of it" in validate_upload([export], data_dir).errors[0]
    assert "link.json is a symbolic link" in validate_upload([link], data_dir).errors[0]


def test_loose_image_files_are_found_by_name(tmp_path, data_dir):
    src = tmp_path / "src"
    data = write_dataset(src, good_rows(2), n_images=2)
    result = validate_upload([data, src / "images/0.png", src / "images/1.png"], data_dir)
    assert not result.fatal, result.message()
    assert "not at that path; using the uploaded file 0.png" in result.rows[0].notes[0]
    prepared = json.loads(result.data_path.read_text())
    assert [row["image"] for row in prepared] == ["0.png", "1.png"]


def test_broken_json_names_line_and_column(tmp_path, data_dir):
    bad = tmp_path / "data.json"
    bad.write_text('[\n  {"id": "a",\n   "conversations": [}\n]')
    result = validate_upload([bad], data_dir)
    assert result.fatal and not result.rows
    assert "data.json is not valid JSON" in result.errors[0] and "line 3, column" in result.errors[0]


def test_top_level_must_be_a_list(tmp_path, data_dir):
    bad = tmp_path / "data.json"
    bad.write_text(json.dumps({"data": good_rows()}))
    result = validate_upload([bad], data_dir)
    assert result.fatal
    assert "must hold a JSON list of samples" in result.errors[0] and '"data" key holds a list' in result.errors[0]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("just text", "expected an object"),
        ({"id": "a", "image": "images/0.png"}, 'missing "conversations"'),
        ({"id": "a", "conversations": "hi"}, '"conversations" must be a list of turns, got string'),
        ({"id": "a", "image": 7, "conversations": []}, '"image" must be a file name or a list of file names, got int'),
        (
            {"id": ["x"], "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]},
            '"id" must be a string or a number',
        ),
        (
            {"id": "a", "conversations": [{"from": "bot", "value": "hi"}]},
            '"from" is \'bot\'; expected "human" or "gpt"',
        ),
        ({"id": "a", "conversations": [{"from": "human", "value": None}]}, '"value" must be a string, got null'),
        ({"id": "a", "conversations": [{"value": "hi"}]}, 'turn 1 has no "from"'),
    ],
)
def test_schema_problems_are_specific(tmp_path, data_dir, row, message):
    data = write_dataset(tmp_path / "src", [row, *good_rows(1)], n_images=1)
    result = validate_upload([data.parent], data_dir, allow_folders=True)
    assert not result.fatal  # the good row can still train
    assert any(message in problem for problem in result.rows[0].problems), result.rows[0].problems
    assert result.rows[1].valid and result.summary["invalid_samples"] == 1
    assert len(json.loads(result.data_path.read_text())) == 1


def turns(*pairs: tuple[str, str]) -> list[dict]:
    return [{"from": who, "value": text} for who, text in pairs]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            {"id": "a", "conversations": turns(("human", "hi"), ("human", "again"), ("gpt", "yo"))},
            'turns 1 and 2 are both from "human": turns must alternate',
        ),
        ({"id": "a", "conversations": turns(("gpt", "hello"), ("human", "hi"))}, "must start with a human turn"),
        ({"id": "a", "conversations": turns(("human", "hi"), ("gpt", "  "))}, "turn 2 (gpt) is an empty answer"),
        (
            {
                "id": "a",
                "image": "images/0.png",
                "conversations": turns(("human", "<image> <image> hi"), ("gpt", "yo")),
            },
            "2 <image> placeholder(s) but 1 image(s): the counts must match",
        ),
        (
            {
                "id": "a",
                "image": ["images/0.png", "images/0.png"],
                "conversations": turns(("human", "hi"), ("gpt", "yo")),
            },
            "0 <image> placeholder(s) but 2 image(s)",
        ),
        (
            {"id": "a", "conversations": turns(("human", "<image> hi"), ("gpt", "yo"))},
            "1 <image> placeholder(s) but 0",
        ),
    ],
)
def test_turn_and_placeholder_problems(tmp_path, data_dir, row, message):
    write_dataset(tmp_path / "src", [row], n_images=1)
    result = validate_upload([tmp_path / "src"], data_dir, allow_folders=True)
    assert result.fatal and "No row can be trained on" in result.message()
    assert result.data_path is None and result.image_folder is None
    assert any(message in problem for problem in result.rows[0].problems), result.rows[0].problems


def test_single_image_without_placeholder_is_accepted_with_a_note(tmp_path, data_dir):
    row = {"id": "a", "image": "images/0.png", "conversations": turns(("human", "What is it?"), ("gpt", "A box."))}
    write_dataset(tmp_path / "src", [row], n_images=1)
    result = validate_upload([tmp_path / "src"], data_dir, allow_folders=True)
    assert not result.fatal and result.rows[0].valid
    assert "1 image and no <image> placeholder: accepted" in result.rows[0].notes[0]


def test_missing_empty_and_unreadable_images(tmp_path, data_dir):
    rows = good_rows(3)
    rows[0]["image"] = "images/nope.png"
    src = tmp_path / "src"
    write_dataset(src, rows, n_images=3)
    (src / "images/1.png").write_bytes(b"")
    (src / "images/2.png").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n")  # EPS: never opened
    result = validate_upload([src], data_dir, allow_folders=True)
    assert result.fatal
    problems = [row.problems[0] for row in result.rows]
    assert "image 'images/nope.png' is missing" in problems[0]
    assert problems[1] == "image 'images/1.png' is empty (0 bytes)"
    assert "image 'images/2.png' is not an accepted image (PNG, JPEG" in problems[2]
    assert result.summary["missing_images"] == 3


def test_image_paths_may_not_leave_the_dataset_folder(tmp_path, data_dir):
    rows = good_rows(2)
    rows[0]["image"], rows[1]["image"] = "../secret.png", "/etc/hostname"
    write_dataset(tmp_path / "src", rows, n_images=0)
    result = validate_upload([tmp_path / "src"], data_dir, allow_folders=True)
    assert all("must be a relative path inside the dataset folder" in row.problems[0] for row in result.rows)


def test_empty_json_file(tmp_path, data_dir):
    (tmp_path / "data.json").write_text("")
    result = validate_upload([tmp_path / "data.json"], data_dir)
    assert result.fatal and result.errors == ["data.json is empty (0 bytes)"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("../evil.png", "has a '..' component that points outside the upload folder"),
        ("images/../../evil.png", "has a '..' component"),
        ("/tmp/evil.png", "has an absolute path"),
        ("C:/evil.png", "has an absolute path"),
    ],
)
def test_unsafe_zip_entries_refuse_the_archive(tmp_path, data_dir, entry, message):
    data = write_dataset(tmp_path / "src", good_rows(1), n_images=1)
    archive = zip_of(tmp_path / "images.zip", {"images/0.png": png_bytes(), entry: png_bytes()})
    result = validate_upload([data, archive], data_dir)
    assert result.fatal and message in result.errors[0] and "refused" in result.errors[0]
    assert not list(tmp_path.rglob("evil.png")) and not Path("/tmp/evil.png").exists()
    assert not (result.upload_dir / "files" / "images").exists()  # nothing extracted at all


def test_symlink_entries_refuse_the_archive(tmp_path, data_dir):
    archive = zip_of(tmp_path / "images.zip", {"images/0.png": png_bytes()}, symlink="images/link.png")
    result = validate_upload([archive], data_dir)
    assert result.fatal and "is a symbolic link" in result.errors[0]


def test_size_limits_have_clear_messages(tmp_path, data_dir):
    data = write_dataset(tmp_path / "src", good_rows(2), n_images=2)
    archive = zip_of(tmp_path / "images.zip", {f"images/{i}.png": png_bytes() for i in range(3)})
    cases = {
        UploadLimits(max_files=2): "more than 2 files in the upload (limit)",
        UploadLimits(max_total_bytes=200): "the upload unpacks to more than",
        UploadLimits(max_archive_bytes=100): "above the archive limit of",
        UploadLimits(max_json_bytes=10): "bytes, above the limit of 10 bytes",
    }
    for limits, message in cases.items():
        result = validate_upload([data, archive], data_dir, limits=limits)
        assert result.fatal and message in result.message(), (limits, result.message())
    big = validate_upload([data.parent], data_dir, limits=UploadLimits(max_image_pixels=1000), allow_folders=True)
    assert "40x32 pixels, above the limit" in big.rows[0].problems[0]


def test_empty_and_broken_archives(tmp_path):
    (tmp_path / "empty.zip").write_bytes(b"")
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(UploadError, match=r"empty.zip is empty \(0 bytes\)"):
        safe_extract(tmp_path / "empty.zip", tmp_path / "out", UploadLimits())
    with pytest.raises(UploadError, match="broken.zip is not a readable zip archive"):
        safe_extract(tmp_path / "broken.zip", tmp_path / "out", UploadLimits())


def test_no_json_and_several_json_files(tmp_path, data_dir):
    images = zip_of(tmp_path / "images.zip", {"images/0.png": png_bytes()})
    assert "has no dataset JSON file" in validate_upload([images], data_dir).errors[0]
    both = zip_of(tmp_path / "both.zip", {"a.json": b"[]", "b.json": b"[]"})
    assert "several JSON files (a.json, b.json)" in validate_upload([both], data_dir).errors[0]
    assert "nothing was uploaded" in validate_upload([], data_dir).errors[0]


def test_rows_over_max_length_get_a_note(tmp_path, data_dir, base):
    write_dataset(tmp_path / "src", good_rows(2), n_images=2)
    result = validate_upload([tmp_path / "src"], data_dir, base=base, max_length=10, allow_folders=True)
    assert result.summary["rows_over_max_length"] == 2
    assert "above the max length 10" in result.rows[0].notes[-1]


def test_validate_in_place_and_custom_token_counter(tmp_path):
    data = write_dataset(tmp_path / "src", good_rows(2), n_images=2)
    result = validate_dataset(data, count_tokens=lambda text: len(text.split()))
    assert not result.fatal and result.data_path == data
    words = sum(
        len(t.replace("<image>", "").split())
        for row in good_rows(2)
        for t in [c["value"] for c in row["conversations"]]
    )
    assert result.summary["text_tokens"] == words + 2 * 2 * 5  # plus the per-turn template estimate


def test_text_only_stage_counts_no_image_tokens(tmp_path, base):
    data = write_dataset(tmp_path / "src", good_rows(2), n_images=2)
    settings = ImageSettings.for_job(base, stage="warmup")
    assert settings.max_size is None
    assert validate_dataset(data, settings=settings).summary["image_tokens"] == 0
    assert ImageSettings.for_job(base, stage="1").max_size == 32  # stage 1 trains at half the resolution


def test_paged_preview(tmp_path, data_dir):
    rows = good_rows(4) + [{"id": "bad", "conversations": turns(("gpt", "no"), ("human", "hi"))}]
    write_dataset(tmp_path / "src", rows, n_images=4)
    result = validate_upload([tmp_path / "src"], data_dir, allow_folders=True)
    first = paged_preview(result, page=1, page_size=2)
    assert (first["page"], first["pages"], first["total"]) == (1, 3, 5)
    row = first["rows"][0]
    assert row["row"] == 1 and row["id"] == "s0" and row["valid"] and Path(row["thumbnail"]).is_file()
    assert row["turns"].startswith("human: <image>\nWhat is this?\ngpt: A square")
    last = paged_preview(result, page=99, page_size=2)
    assert last["page"] == 3 and "must start with a human turn" in last["rows"][0]["problems"]
    only = paged_preview(result, only_problems=True)
    assert only["total"] == 1 and only["rows"][0]["id"] == "bad" and only["rows"][0]["thumbnail"] is None


def test_a_dataset_nested_deeper_than_json_can_read_is_refused_with_a_message(tmp_path, data_dir):
    """100,000 nested brackets made the JSON reader recurse past Python's limit: a crash with a traceback."""
    deep = tmp_path / "data.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    result = validate_upload([deep], data_dir)
    assert result.fatal and result.errors == [
        "data.json is nested too deeply: a dataset is a list of samples, each a few levels deep"
    ]


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"images/" + "a" * 300 + ".png": b"x"}, "has a name of 304 bytes; the limit is 255 bytes"),
        ({"images/" + "é" * 130 + "/0.png": b"x"}, "has a name of 260 bytes"),
        ({"x": b"file", "x/y.png": b"in a folder"}, "entry 'x' is a file, and 'x/y.png' needs a folder of that name"),
        ({"x/y.png": b"in a folder", "x": b"file"}, "entry 'x' is a file, and 'x/y.png' needs a folder"),
    ],
)
def test_zip_entries_that_cannot_be_extracted_side_by_side_refuse_the_archive(tmp_path, data_dir, entries, message):
    """Names over 255 bytes and a name that is both a file and a folder failed half-way through the extraction."""
    data = write_dataset(tmp_path / "src", good_rows(1), n_images=1)
    archive = zip_of(tmp_path / "images.zip", {"images/0.png": png_bytes(), **entries})
    result = validate_upload([data, archive], data_dir)
    assert result.fatal and message in result.errors[0] and "the archive was refused" in result.errors[0]
    assert not (result.upload_dir / "files" / "images").exists()  # nothing extracted at all
