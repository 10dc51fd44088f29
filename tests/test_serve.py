"""``dmir serve`` without a browser: the page's fields → the ``dmir restore`` command → the
pipeline (a result of the app equals the shown command's output, byte for byte), upload
checks, masks painted or uploaded, cancel, one prior load, the command without Gradio.
The page itself in a real browser: tests/test_serve_browser.py."""
import shlex
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dmir import cli
from dmir import io as dio
from dmir.app import form as F
from dmir.app.jobs import Cancelled, Workspace
from dmir.errors import DmirError, InputError, ResourceError

DATA = Path(__file__).parent / "data"


@pytest.fixture()
def ws(tmp_path):
    return Workspace(str(tmp_path / "ws"), max_upload_mb=1, max_pixels=100 * 100)


@pytest.fixture()
def photo(tmp_path):
    p = tmp_path / "photo.png"
    Image.open(DATA / "kodim05_crop64.png").convert("RGB").crop((0, 0, 48, 40)).save(p)
    return str(p)


def _strokes(h, w):
    layer = np.zeros((h, w, 4), np.uint8)
    layer[10:16, 4:40, 3] = 255          # a painted bar: these pixels are to be filled
    return [layer]


def _shell(command: str, out: Path) -> bytes:
    """Run the page's command line (through dmir.cli.main) with OUTPUT → ``out``."""
    argv = shlex.split(command)
    assert argv[:2] == ["dmir", "restore"]
    argv = argv[1:]
    argv[argv.index("-o") + 1] = str(out)
    assert cli.main(argv) == 0
    return out.read_bytes()


@pytest.mark.parametrize("case", [
    dict(task="inpainting", model="natural", steps=6, seed=5),
    dict(task="sr_averagepooling", scale=2, degrade=True, model="dmir-ddpm", steps=4, seed=1),
    dict(task="deblur", kernel="gauss:1.5", sigma_y=0.02, model="dmir-ddpm", steps=4, eta=0.5,
         seed=2, samples=2),
    dict(task="colorization", weights="0.2,0.7,0.1", model="natural", steps=5, seed=3),
], ids=lambda c: c["task"])
def test_a_result_of_the_app_is_the_shown_command_bit_for_bit(ws, photo, tmp_path, case):
    saved = ws.accept_upload(photo)
    r = ws.run(F.Form(**case), saved, strokes=_strokes(40, 48))
    for path in (r.output, r.before):
        assert ws.inside(path) and Path(path).is_file()
    assert f"--seed {case['seed']}" in r.command and r.seed == case["seed"]
    got = Path(r.output).read_bytes()
    assert _shell(r.command, tmp_path / "cli.png") == got
    if case.get("degrade"):
        assert set(r.metrics) == {"A+y", "result"}
        assert all(np.isfinite(v["PSNR"]) and 0 < v["SSIM"] <= 1 for v in r.metrics.values())


def test_another_seed_gives_another_result(ws, photo):
    saved = ws.accept_upload(photo)
    a, b = (ws.run(F.Form(task="inpainting", model="natural", steps=4, seed=s), saved,
                   strokes=_strokes(40, 48)) for s in (0, 1))
    assert Path(a.output).read_bytes() != Path(b.output).read_bytes()


def test_painted_pixels_are_filled_and_the_mask_file_conventions(ws, photo, tmp_path):
    folder = ws.new_dir()
    m = dio.load_mask(ws.write_mask(folder, (40, 48), strokes=_strokes(40, 48))).numpy()
    assert (m[10:16, 4:40] == 0).all() and m.sum() == 40 * 48 - 6 * 36
    assert ws.write_mask(folder, (40, 48), strokes=[np.zeros((40, 48, 4), np.uint8)]) is None
    # a mask file, white = kept (dmir's convention) and black = kept (inverted)
    keep = np.full((40, 48), 255, np.uint8)
    keep[:, :8] = 0
    Image.fromarray(keep).save(tmp_path / "m.png")
    white = dio.load_mask(ws.write_mask(folder, (40, 48), mask_file=str(tmp_path / "m.png")))
    black = dio.load_mask(ws.write_mask(folder, (40, 48), mask_file=str(tmp_path / "m.png"),
                                        black_keeps=True))
    assert white.sum() == 40 * 40 and black.sum() == 40 * 8
    # strokes at the editor's display size are rescaled to the photo
    small = np.zeros((20, 24, 4), np.uint8)
    small[:, :12, 3] = 255
    m = dio.load_mask(ws.write_mask(folder, (40, 48), strokes=[small])).numpy()
    assert (m[:, :24] == 0).all() and (m[:, 24:] == 1).all()
    with pytest.raises(InputError, match="same size"):
        ws.write_mask(folder, (30, 48), mask_file=str(tmp_path / "m.png"))


def test_uploads_are_checked_and_copied_into_the_workspace(ws, photo, tmp_path):
    saved = ws.accept_upload(photo)
    assert ws.inside(saved) and Path(saved).read_bytes() == Path(photo).read_bytes()
    assert Path(saved).name == "input.png"               # never the uploaded name
    big = tmp_path / "big.png"
    Image.new("RGB", (120, 100)).save(big)               # 12,000 > 10,000 pixels
    with pytest.raises(ResourceError, match="12,000 pixels"):
        ws.accept_upload(str(big))
    heavy = tmp_path / "heavy.png"
    heavy.write_bytes(b"\x89PNG" + bytes(2 ** 20 + 10))
    with pytest.raises(ResourceError, match="up to 1 MB"):
        ws.accept_upload(str(heavy))
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png at all")
    with pytest.raises(InputError, match="not a readable image"):
        ws.accept_upload(str(junk))
    gif = tmp_path / "m.gif"
    Image.new("RGB", (8, 8)).save(gif)
    with pytest.raises(InputError, match="not a PNG or JPEG"):
        ws.accept_upload(str(gif))
    with pytest.raises(InputError, match="not one this server received"):
        ws.run(F.Form(task="denoising", model="natural"), photo)


@pytest.mark.parametrize("values, message", [
    (dict(task="denoising", steps="ten"), "steps must be an integer"),
    (dict(task="denoising", eta="2"), "--eta must be in"),
    (dict(task="sr_bicubic", scale=1), "--scale must be"),
    (dict(task="deblur", kernel="gauss:-1"), "SIGMA must be"),
    (dict(task="inpainting"), "needs a mask"),
    (dict(task="cs_walshhadamard"), "needs 'degrade"),
    (dict(task="nope"), "unknown task"),
])
def test_bad_fields_give_the_commands_message(ws, photo, values, message):
    saved = ws.accept_upload(photo)
    with pytest.raises(DmirError, match=message):
        ws.run(F.Form.from_values(model="natural", **values), saved)
    assert not ws.lock.locked()


def test_fields_follow_the_installed_restore_command(monkeypatch):
    opts = F.restore_options()
    assert {"--task", "--mask", "--seed", "--kernel"} <= opts
    assert F.task_fields("deblur") == ["kernel"] + (["boundary"] if "--boundary" in opts else [])
    assert F.task_fields("sr_bicubic") == ["scale"] and F.task_fields("denoising") == []
    # an option the command lacks is not offered, and not put on the command line
    monkeypatch.setattr(F, "restore_options", lambda: opts - {"--weights"})
    assert F.task_fields("colorization") == []
    p = F.plan(F.Form(task="colorization", weights="1,1,1"), "in.png", "out.png")
    assert "--weights" not in p.argv


def test_cancel_stops_between_network_evaluations(ws, photo):
    saved = ws.accept_upload(photo)
    seen = []

    def progress(i, n, eta):
        seen.append(i)
        if i == 2:
            assert ws.cancel("tab-1") and not ws.cancel("tab-2")

    with pytest.raises(Cancelled):
        ws.run(F.Form(task="denoising", sigma_y=0.1, model="natural", steps=50), saved,
               progress=progress, session="tab-1")
    assert seen == [1, 2, 3] or seen == [1, 2]
    assert not ws.lock.locked()
    assert not ws.cancel("tab-1")                    # nothing running any more


def test_one_restoration_at_a_time_and_the_prior_loads_once(ws, photo):
    saved = ws.accept_upload(photo)
    waited, errors = [], []
    ws.lock.acquire()                                    # another tab's restoration

    def second():
        try:
            ws.run(F.Form(task="denoising", model="dmir-ddpm", steps=2), saved,
                   waiting=lambda: waited.append(1))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=second)
    t.start()
    t.join(1.0)
    assert t.is_alive() and waited == [1]               # queued behind the first
    ws.lock.release()
    t.join(60)
    assert not t.is_alive() and not errors
    ws.run(F.Form(task="denoising", model="dmir-ddpm", steps=2, seed=1), saved)
    assert ws.loads == 1


def test_serve_without_gradio_says_what_to_install(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gradio" else real(name, *a))
    assert cli.main(["serve"]) == 2
    assert 'pip install "dmir[app]"' in capsys.readouterr().err


def test_serve_binds_to_this_machine_unless_told():
    from dmir.cli import serve

    a = cli._parser(["serve"]).parse_args(["serve"])
    assert a.host == "127.0.0.1"
    assert serve._local("127.0.0.1") and serve._local("::1") and serve._local("localhost")
    assert not serve._local("0.0.0.0") and not serve._local("192.168.1.4")


def test_a_future_option_appears_once_the_command_has_it(monkeypatch):
    """What the lead's merge of --boundary (deblur) needs: the option in dmir restore's parser
    and the operator's parameters; the page then offers it and passes it on."""
    import argparse

    from dmir import pipeline

    real = F.restore_parser()
    parser = argparse.ArgumentParser(parents=[real], add_help=False, conflict_handler="resolve")
    parser.add_argument("--boundary", choices=["zero", "reflect", "circular"],
                        default="reflect")
    monkeypatch.setattr(F, "restore_parser", lambda: parser)
    task_params = pipeline.task_params
    monkeypatch.setattr(pipeline, "task_params", lambda t: (
        task_params(t)[0] + ["boundary"] if t == "deblur" else task_params(t)[0],
        task_params(t)[1]))
    assert F.task_fields("deblur") == ["kernel", "boundary"]
    p = F.plan(F.Form(task="deblur", kernel="gauss:1", boundary="reflect"), "in.png", "o.png")
    assert p.argv[p.argv.index("--boundary") + 1] == "reflect" and p.args.boundary == "reflect"
    assert "--boundary" not in F.plan(F.Form(task="sr_bicubic", scale=2, boundary="reflect"),
                                      "in.png", "o.png").argv
