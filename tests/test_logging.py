"""Logging: the library is silent by default and logs through ``dmir.*`` loggers; the CLI
installs a handler, ``-q`` silences notes and the progress bar, ``-v`` shows debug lines;
the restore bar reports NFE/s and the ETA."""
import ast
import io
import logging
from pathlib import Path

import pytest
from PIL import Image

from dmir import cli
from dmir import log as dlog
from dmir.models import registry

ROOT = Path(__file__).resolve().parents[1] / "dmir"
#: modules that are the command line (their stdout is the command's output)
CLI_MODULES = {"cli.py", "__main__.py", "bench/command.py"}


def test_library_modules_never_print():
    offenders = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT).as_posix()
        if rel in CLI_MODULES or rel.startswith("cli/"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), rel)):
            if isinstance(node, ast.Name) and node.id == "print":
                offenders.append(f"{rel}:{node.lineno}")
    assert offenders == []


def test_first_load_checksum_is_logged_not_printed(tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.setenv("DMIR_HOME", str(tmp_path))
    f = tmp_path / "celeba_hq.ckpt"
    f.write_bytes(b"not really a checkpoint")
    entry = registry.get("ddpm-celebahq256")
    with caplog.at_level(logging.INFO, logger="dmir"):
        digest = registry.remember_sha256(entry, str(f))
    out, err = capsys.readouterr()
    assert out == "" and err == ""                    # silent without a configured handler
    recs = [r for r in caplog.records if r.name == "dmir.models.registry"]
    assert len(recs) == 1 and recs[0].levelno == logging.INFO
    assert digest in recs[0].getMessage()
    assert registry.recorded_sha256(entry, str(f)) == digest


def test_library_default_is_a_null_handler_and_no_output(capsys):
    lg = logging.getLogger("dmir")
    assert any(isinstance(h, logging.NullHandler) for h in lg.handlers)
    dlog.get_logger("dmir.models.loading").info("an INFO note nobody asked for")
    assert capsys.readouterr() == ("", "")


def test_configure_and_levels(capsys):
    try:
        dlog.configure(0)
        dlog.get_logger("dmir.x").info("hello")
        dlog.get_logger("dmir.bench").info("bench note")
        dlog.get_logger("dmir.x").debug("hidden")
        assert capsys.readouterr().err == "dmir: hello\ndmir bench: bench note\n"
        dlog.configure(-1)
        dlog.get_logger("dmir.x").info("hidden")
        dlog.get_logger("dmir.x").warning("careful")
        assert capsys.readouterr().err == "dmir: careful\n"
        dlog.configure(1)
        dlog.get_logger("dmir.x").debug("detail")
        assert capsys.readouterr().err == "dmir: detail\n"
    finally:
        dlog.unconfigure()
    assert not [h for h in logging.getLogger("dmir").handlers
                if not isinstance(h, logging.NullHandler)]
    assert dlog.get_logger("models") is logging.getLogger("dmir.models")


@pytest.fixture()
def rgba(tmp_path):
    src = Image.open(Path(__file__).parent / "data" / "kodim05_crop64.png").convert("RGBA")
    p = tmp_path / "rgba.png"
    src.crop((0, 0, 32, 32)).save(p)
    return p


@pytest.mark.parametrize("where", ["before", "after"])
def test_cli_quiet_and_verbose(rgba, tmp_path, capsys, where):
    base = ["restore", str(rgba), "--task", "denoising", "--sigma-y", "0.05", "--steps", "2",
            "--model", "natural"]

    def run(flag, name):
        argv = ([flag] + base if where == "before" else base + [flag]) if flag else base
        rc = cli.main(argv + ["-o", str(tmp_path / name)])
        return rc, capsys.readouterr()

    rc, (out, err) = run(None, "a.png")
    assert rc == 0 and "dmir: note:" in err and "alpha" in err      # the RGBA note
    rc, (out_q, err_q) = run("-q", "b.png")
    assert rc == 0 and err_q == "" and "wrote" in out_q             # results stay on stdout
    rc, (_, err_v) = run("-v", "c.png")
    assert rc == 0 and "alpha" in err_v
    # the handler is removed after main(): the library is silent again
    assert not [h for h in logging.getLogger("dmir").handlers
                if not isinstance(h, logging.NullHandler)]


def test_every_command_takes_quiet_and_verbose(capsys):
    p = cli._parser()
    sub = next(a for a in p._actions if a.dest == "command")
    for name, sp in sub.choices.items():
        opts = {o for a in sp._actions for o in a.option_strings}
        assert {"-q", "--quiet", "-v", "--verbose"} <= opts, name
    assert cli.main(["-q", "-v", "models"]) == 2
    assert "not allowed with" in capsys.readouterr().err


def test_progress_bar_shows_nfe_rate_and_eta():
    f = io.StringIO()
    bar = cli._Progress("ddnm", file=f, enabled=True)
    for i in range(1, 5):
        bar(i, 20)
    bar.bar.refresh()          # the bar redraws at most every 0.2 s
    bar.close()
    text = f.getvalue()
    assert "NFE/s" in text and "ETA" in text and "4/20 NFE" in text
    quiet = cli._Progress("ddnm", quiet=True)
    assert quiet.enabled is False
