"""The parser itself: suggestions for typos, help that reads well, shell completion."""

from __future__ import annotations

import shutil
import subprocess
import warnings

import pytest

from ferlab.cli import build_parser, main


def _usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("ferlab: error: ") and err.count("\n") == 1
    return err


def test_a_mistyped_command_choice_or_flag_gets_the_closest_one(capsys):
    assert "did you mean 'train'?" in _usage_error(["trian"], capsys)
    assert "did you mean 'inspect'?" in _usage_error(["data", "inspct", "x"], capsys)
    err = _usage_error(["predict", "a.png", "--tta", "flp"], capsys)
    assert "invalid choice: 'flp'; did you mean 'flip'? (choose from none, flip, shift)" in err
    err = _usage_error(["train", "--data", "d", "--scheduler", "onecyle"], capsys)
    assert "did you mean 'onecycle'?" in err
    err = _usage_error(["predict", "a.png", "--top-kk", "3"], capsys)
    assert "unrecognized arguments: --top-kk 3; did you mean '--top-k'?" in err
    assert "(see 'ferlab predict --help')" in err
    assert "did you mean" not in _usage_error(["zzzzzz"], capsys)


def test_counts_and_ranges_are_checked_by_the_parser(capsys):
    err = _usage_error(["predict", "a.png", "--top-k", "-1"], capsys)
    assert "argument --top-k: expected 0 or more, got -1" in err
    err = _usage_error(["video", "a.mp4", "--top-k", "two"], capsys)
    assert "argument --top-k: expected a whole number, got 'two'" in err
    err = _usage_error(["predict", "a.png", "--prior-tau", "-1"], capsys)
    assert "expected a number in [0, 2], got -1" in err


def _helps() -> dict[str, str]:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    helps = {name: sub.format_help() for name, sub in commands.items()}
    actions = commands["data"]._subparsers._group_actions[0].choices
    helps.update({f"data {name}": sub.format_help() for name, sub in actions.items()})
    return helps


def test_help_shows_readable_metavars_and_no_empty_defaults():
    helps = _helps()
    assert {"train", "predict", "export", "completion", "data inspect"} <= set(helps)
    for name, text in helps.items():
        assert "default: None" not in text, name
        assert "(default: )" not in text, name
        assert " X " not in text and " X]" not in text, name
    train = helps["train"]
    assert "--epochs N" in train and "--lr NUM" in train and "--pretrained {true,false}" in train
    assert "--augment {none,light,standard,strong}" in train
    assert "(default: true)" in train  # --pretrained
    for name in ("evaluate", "compare"):
        assert "--data PATH" in helps[name] and "the split to score (default: test)" in helps[name]


def test_export_needs_no_format_flag():
    args = build_parser().parse_args(["export", "run"])
    assert args.format == "onnx"


def _completion(shell: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["completion", shell]) == 0
    return capsys.readouterr().out


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completion_completes_commands_choices_flags_and_paths(capsys, tmp_path):
    script = tmp_path / "ferlab.bash"
    script.write_text(_completion("bash", capsys))
    (tmp_path / "photo.jpg").touch()

    def complete(*words: str) -> list[str]:
        line = " ".join(f"'{word}'" for word in words)
        probe = (
            f"source {script}; COMP_WORDS=(ferlab {line}); COMP_CWORD={len(words)}; "
            'cd "$1"; _shtab_ferlab; printf "%s\\n" "${COMPREPLY[@]}"'
        )
        done = subprocess.run(
            ["bash", "-c", probe, "bash", str(tmp_path)], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert complete("pre") == ["predict"]
    assert complete("predict", "--top") == ["--top-k"]
    assert complete("predict", "--tta", "") == ["none", "flip", "shift"]
    assert complete("predict", "pho") == ["photo.jpg"]
    assert complete("data", "") == ["inspect", "dedupe", "crop-faces", "convert"]


def test_zsh_completion_is_a_compdef_script_of_the_parser(capsys):
    script = _completion("zsh", capsys)
    assert script.startswith("#compdef ferlab")
    assert "--top-k" in script and "inspect" in script and "_files" in script
    if shutil.which("zsh"):
        assert subprocess.run(["zsh", "-n"], input=script, text=True).returncode == 0


def test_options_a_strategy_does_not_read_are_named(capsys, tmp_path):
    missing = str(tmp_path / "missing")
    frozen = ["--strategy", "frozen", "--backbone-lr-factor", "0.5", "--unfreeze-every", "2"]
    with pytest.warns(UserWarning, match="--backbone-lr-factor, --unfreeze-every: no effect with"):
        assert main(["train", "--data", missing, *frozen]) == 2
    finetune = ["--strategy", "finetune", "--backbone-lr-factor", "0.5", "--stage-lr-decay", "0.3"]
    with pytest.warns(UserWarning, match=r"^--stage-lr-decay: no effect with --strategy finetune$"):
        assert main(["train", "--data", missing, *finetune]) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        progressive = ["--strategy", "progressive", "--stage-lr-decay", "0.3"]
        assert main(["train", "--data", missing, *progressive]) == 2
    assert "missing" in capsys.readouterr().err
