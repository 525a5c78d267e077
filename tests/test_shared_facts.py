"""Facts the library and the app share are defined once, in `model/shared.py`, and the app reads them without loading
torch or transformers."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from model.shared import (
    IMAGE_PLACEHOLDER,
    PROJECT_ROOT,
    TASK_KEYS,
    num_image_tokens,
    resized_size,
    stage_image_max_size,
    stage_presets,
    task_instructions,
)

SHARED = PROJECT_ROOT / "model" / "shared.py"
SOURCES = sorted(
    path
    for folder in ("model", "eve_app", "bench")
    for path in (PROJECT_ROOT / folder).rglob("*.py")
    if path != SHARED
) + [PROJECT_ROOT / "app.py"]


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string nodes that are docstrings (prose may mention the placeholder)."""
    nodes = [tree, *ast.walk(tree)]
    return {
        id(node.body[0].value)
        for node in nodes
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }


def _is_token_formula(node: ast.AST) -> bool:
    """`1 + a * (b + 1)`, however the names are spelled: the image-token count."""

    def is_one(n: ast.AST) -> bool:
        return isinstance(n, ast.Constant) and n.value == 1

    if not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add)):
        return False
    one, product = (node.left, node.right) if is_one(node.left) else (node.right, node.left)
    if not (is_one(one) and isinstance(product, ast.BinOp) and isinstance(product.op, ast.Mult)):
        return False
    return any(
        isinstance(side, ast.BinOp) and isinstance(side.op, ast.Add) and (is_one(side.left) or is_one(side.right))
        for side in (product.left, product.right)
    )


def _definitions(path: Path, root: Path = PROJECT_ROOT) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = _docstrings(tree)
    where = path.relative_to(root)
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
            and node.value.strip() == IMAGE_PLACEHOLDER
        ):
            found.append(f"{where}:{node.lineno}: the image placeholder literal")
        if _is_token_formula(node):
            found.append(f"{where}:{node.lineno}: the image-token formula")
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "PROJECT_ROOT" for t in node.targets):
            found.append(f"{where}:{node.lineno}: PROJECT_ROOT")
    return found


def test_shared_facts_are_defined_only_in_model_shared():
    copies = [finding for path in SOURCES for finding in _definitions(path)]
    assert copies == [], "import these from model.shared instead:\n" + "\n".join(copies)


def test_the_checks_find_what_they_look_for(tmp_path):
    """The detectors themselves: a copy of each fact is caught, prose and other arithmetic are not."""
    copy = tmp_path / "copy.py"
    copy.write_text(
        '"""Mentions <image> in prose."""\n'
        'TOKEN = "<image>"\n'
        'LINE = "<image>\\n"\n'
        "def count(h, w):\n    return 1 + h * (w + 1)\n"
        "def other(h, w):\n    return 1 + h * (w + 2) + (h + 1) * w\n"
        "PROJECT_ROOT = None\n"
    )
    findings = sorted(line.split(": ", 1)[1] for line in _definitions(copy, tmp_path))
    assert findings == [
        "PROJECT_ROOT",
        "the image placeholder literal",
        "the image placeholder literal",
        "the image-token formula",
    ]


def test_the_app_reads_shared_facts_without_torch_or_transformers():
    code = (
        "import sys, model, model.shared, eve_app.settings, eve_app.presets, eve_app.jobs, eve_app.storage; "
        "print(sorted(m for m in ('torch', 'transformers', 'gradio') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("size", [(90, 50), (640, 480), (33, 2000), (1600, 1600), (17, 17)])
def test_the_library_and_the_dataset_check_count_image_tokens_alike(size):
    from eve_app.jobs import ImageSettings
    from model.image_processing_eve import EveImageProcessor

    processor = EveImageProcessor(max_size=64, patch_stride=8, dense_stride=2)
    width, height = processor.target_size(*size, mode="train")
    assert ImageSettings(64, 16).tokens(*size) == processor.num_image_tokens(height, width)
    assert num_image_tokens(height, width, 16) == 1 + (height // 16) * (width // 16 + 1)


def test_resize_rules():
    assert resized_size(100, 100, 32, 1600, "inference") == (1600, 1600)  # scaled up to the full area
    assert resized_size(100, 100, 32, 1600, "train") == (96, 96)  # never up, nearest multiple of 32
    assert resized_size(6400, 1600, 32, 1600, "train") == (3200, 800)  # halved to the area, then snapped
    assert resized_size(50, 3000, 32, 64, "inference") == (32, 512)  # sides round up, never below one patch
    with pytest.raises(ValueError, match="resize mode"):
        resized_size(10, 10, 32, 64, "crop")


def test_stage_image_sizes_and_tasks():
    presets = stage_presets()
    assert [stage_image_max_size(presets[s]["image_size"], 1600) for s in presets] == [None, 800, 800, 1600, 1600]
    assert stage_image_max_size("low", 1600, override=500) == 500
    assert set(task_instructions()) == set(TASK_KEYS)
    assert all(text.strip() for text in task_instructions().values())
