"""The training command line takes its defaults from `TrainArgs`, where they are written once."""

import dataclasses

from model.train.args import TrainArgs, build_parser, parse_args, train_defaults


def test_every_flag_defaults_to_the_dataclass_field():
    defaults = train_defaults()
    fields = {field.name for field in dataclasses.fields(TrainArgs)}
    flags = [action for action in build_parser()._actions if action.dest in fields]
    assert len(flags) == len(fields)  # every field has its flag
    for action in flags:
        if action.dest != "output_dir":  # required, no default
            assert action.default == defaults[action.dest], action.dest


def test_a_bare_command_line_equals_the_dataclass_defaults():
    parsed = parse_args(["--output-dir", "out", "--base", "ckpt", "--data", "d.json"])
    assert parsed == TrainArgs(output_dir="out", base="ckpt", data=["d.json"])
    assert "(default 4096)" in " ".join(build_parser().format_help().split())


def test_list_defaults_are_fresh_for_each_parse():
    first = parse_args(["--output-dir", "o", "--base", "b", "--data", "x.json"])
    second = parse_args(["--output-dir", "o", "--base", "b", "--data", "y.json"])
    assert first.data == ["x.json"] and second.data == ["y.json"] and train_defaults()["data"] == []


def test_flags_are_read_by_transformers_hf_argument_parser_from_the_fields(monkeypatch):
    """The fields are the one declaration: HfArgumentParser builds the flags (also in their underscore spelling), and
    the field metadata gives each its help and options."""
    from transformers import HfArgumentParser

    parser = build_parser()
    assert isinstance(parser, HfArgumentParser)
    argv = ["--output_dir", "o", "--base", "b", "--data", "d.json", "--max_steps", "3", "--no-spell-answers"]
    assert (parse_args(argv).max_steps, parse_args(argv).spell_answers) == (3, False)
    monkeypatch.setenv("COLUMNS", "100000")  # no wrapping (argparse breaks lines at hyphens)
    help_text = build_parser().format_help()
    for spec in dataclasses.fields(TrainArgs):
        if spec.metadata.get("help"):
            assert spec.metadata["help"].split("%(default)s")[0] in help_text, spec.name
