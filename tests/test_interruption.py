"""Interruption: SIGKILL at random moments and SIGINT both leave a run that resumes bit-identically."""
import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fault_injection.py"


def _fault_injection():
    spec = importlib.util.spec_from_file_location("fault_injection", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("sig,kills", [(signal.SIGKILL, 4), (signal.SIGINT, 2)])
def test_killed_and_resumed_run_equals_uninterrupted(tmp_path, sig, kills):
    lines = []
    assert _fault_injection().run(tmp_path, kills=kills, seed=1, sig=sig, log=lines.append), "\n".join(lines)
    assert any("bit-identical" in line for line in lines)


def test_sigterm_writes_last_pt_and_prints_how_to_resume(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(_fault_injection().CONFIG.replace("epochs: 3", "epochs: 50"))
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "acl_cli", "train", "--config", str(config), "--out", str(run)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if "steps per epoch" in line:
            break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert f"Resume with: acl train --resume {run}" in err and "SIGTERM received" in err
    from acl_cli.checkpoint import load_checkpoint
    from acl_cli.rundir import RunLock
    assert load_checkpoint(run / "last.pt")["progress"]["step"] >= 1
    with RunLock(run):  # the stopped run's lock went with it: the next writer takes it at once
        assert (run / ".lock").read_text().strip() == str(os.getpid())


def test_a_ctrl_c_swallowed_at_start_up_still_stops_the_run_before_it_writes(tmp_path, monkeypatch):
    """Some library imports catch BaseException: a Ctrl-C that lands there raised a KeyboardInterrupt nobody
    saw, and the run went on (a 500-epoch bench ran to its end). acl records the signal as well."""
    from acl_cli import interrupts
    from acl_cli.config import load_config
    from acl_cli.training import train

    monkeypatch.setattr(interrupts, "_received", [])
    previous = signal.getsignal(signal.SIGINT)
    interrupts.install()
    try:
        try:  # what such a library does
            os.kill(os.getpid(), signal.SIGINT)
        except BaseException:
            pass
        cfg = load_config(None, ["data.name=digits", "data.val_split=0.2", "data.train_subset=64", "data.workers=0",
                                 "train.epochs=1", "train.progress=false"])
        with pytest.raises(KeyboardInterrupt):
            train(cfg, tmp_path / "run", log=lambda *a: None)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert not (tmp_path / "run").exists()


def test_a_ctrl_c_during_an_import_is_delivered_once_the_import_is_done(tmp_path, monkeypatch):
    """A KeyboardInterrupt raised halfway through importing torch leaves its modules half-built (then a
    RecursionError, or a death by signal instead of exit 130): acl holds the signal until the import ends."""
    import time

    from acl_cli import interrupts

    (tmp_path / "slow_module.py").write_text("import os, signal, time\nos.kill(os.getpid(), signal.SIGINT)\n"
                                             "time.sleep(0.3)\nDONE = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(interrupts, "_received", [])
    previous = signal.getsignal(signal.SIGINT)
    interrupts.install()
    try:
        with pytest.raises(KeyboardInterrupt):
            import slow_module  # noqa: F401
            time.sleep(5)  # the held signal arrives here, not inside the import
    finally:
        signal.signal(signal.SIGINT, previous)
        held = sys.modules.pop("slow_module", None)
    assert held is not None and held.DONE  # the module was imported whole
    assert interrupts.received()
