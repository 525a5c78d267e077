"""The precision a checkpoint runs in on the GPU it is given, decided from its parameter counts and the free memory
(faked here at each boundary: no GPU runs the tests)."""

import pytest

from model.configuration_eve import EveConfig
from model.precision import GB, choose_precision, needed_bytes, resolve_precision, weight_bytes
from model.shared import PROJECT_ROOT
from model.train.memory_plan import read_config

SEVEN_B = EveConfig().to_dict()  # EveConfig's defaults are the released EVE-7B-HD-v2.0
P_7B = 14_156_712_960


def test_the_7b_weights_in_each_precision():
    assert weight_bytes(SEVEN_B) == 2 * P_7B  # the README's 28.3 GB in bf16
    # 8-bit and 4-bit store the projections only; embeddings, head, norms and the patch embedding stay 16-bit.
    assert 15.0 * GB < weight_bytes(SEVEN_B, "8bit") < 15.5 * GB
    assert 9.3 * GB < weight_bytes(SEVEN_B, "4bit") < 9.8 * GB


@pytest.mark.parametrize(
    ("free_gb", "expected"),
    [(80, None), (48, None), (40, None), (24, "8bit"), (22, "8bit"), (16, "4bit"), (14, "4bit")],
)
def test_the_7b_on_each_common_gpu(free_gb, expected):
    choice = choose_precision(SEVEN_B, free_gb * GB)
    assert (choice.dtype, choice.quantization) == ("bfloat16", expected)
    assert choice.needed_bytes <= free_gb * GB
    assert f"{free_gb:.1f} GB free" in choice.reason


def test_each_boundary_is_where_the_weights_and_reserve_stop_fitting():
    for quantization, worse in ((None, "8bit"), ("8bit", "4bit")):
        edge = needed_bytes(SEVEN_B, quantization)
        assert choose_precision(SEVEN_B, edge).quantization == quantization
        assert choose_precision(SEVEN_B, edge - 1).quantization == worse


def test_too_little_memory_names_the_smallest_gpu_that_would_do():
    with pytest.raises(ValueError, match=r"even 4-bit needs 11\.\d GB.*T4 \(16 GB\)"):
        choose_precision(SEVEN_B, 8 * GB)


def test_explicit_settings_and_the_cpu_are_left_alone():
    tiny = read_config(PROJECT_ROOT / "assets" / "eve-tiny")
    assert resolve_precision(SEVEN_B, "cuda", "float16", None, free_bytes=8 * GB) is None
    assert resolve_precision(SEVEN_B, "cuda:1", None, "4bit", free_bytes=80 * GB) is None
    assert resolve_precision(SEVEN_B, "cuda", None, "none", free_bytes=80 * GB) is None
    assert resolve_precision(SEVEN_B, "cpu", None, None) is None
    assert resolve_precision(tiny, "cuda", None, None, free_bytes=2 * GB).quantization is None


def test_the_readme_table_and_front_matter_follow_the_rule():
    """What the README tells a Space owner is what the app would do: the table is `hardware_table`'s, and the
    suggested hardware runs the 7B with the variables the README says to set."""
    from model.precision import SPACE_HARDWARE, hardware_table, what_runs

    readme = (PROJECT_ROOT / "README.md").read_text()
    assert hardware_table(SEVEN_B) in readme
    suggested = next(
        line.split(":", 1)[1].strip() for line in readme.splitlines() if line.startswith("suggested_hardware:")
    )
    hardware = next(h for h in SPACE_HARDWARE if h.flavor == suggested)
    assert what_runs(SEVEN_B, hardware)[0] in ("bf16", "8-bit", "4-bit")
