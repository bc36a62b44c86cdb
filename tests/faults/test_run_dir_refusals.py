"""--overwrite removes only what oppsig wrote, in every folder; a run directory that cannot be used, a setting the
measurement cannot meet and a write that fails before any checkpoint each say what it is and the fix."""

import errno
import os

import pytest

from oppsig.errors import ConfigError, OppsigError, RunExistsError, StoreError
from oppsig.store import rundir
from oppsig.store.rundir import prepare_run_dir
from oppsig.training import train


@pytest.mark.parametrize("where", ["checkpoints/notes.txt", "signals/mine.csv", "store.zarr/README",
                                   "store.zarr/loss/keep.npy", "tb/my_plot.png", "signals/sub/x.png"])
def test_overwrite_refuses_a_users_file_inside_oppsigs_folders(run_copy, where):
    f = run_copy / where
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text("mine")
    with pytest.raises(RunExistsError, match=rf"holds {os.path.dirname(where) if '/sub/' in where else where}.*"
                                             "nothing was removed"):
        prepare_run_dir(run_copy, overwrite=True)
    assert f.read_text() == "mine" and (run_copy / "checkpoints" / "last.pt").exists()


def test_overwrite_removes_what_oppsig_wrote_in_its_folders(run_copy):
    (run_copy / "signals").mkdir()
    (run_copy / "signals" / "group_03.png").write_bytes(b"png")
    (run_copy / "tb").mkdir()
    (run_copy / "tb" / "events.out.tfevents.1700000000.host.1.0").write_bytes(b"ev")
    (run_copy / "checkpoints" / ".last.pt.abc.tmp").write_bytes(b"")
    prepare_run_dir(run_copy, overwrite=True).release()
    assert sorted(p.name for p in run_copy.iterdir()) == [".lock"]


def test_a_symlinked_run_directory_is_named_as_such(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "x").symlink_to(real)
    with pytest.raises(StoreError, match=rf"is a symbolic link \(to {real}\).*--out-dir={tmp_path} --name=real"):
        prepare_run_dir(tmp_path / "runs" / "x")


def test_a_read_only_run_directory_is_named_as_such(tmp_path, monkeypatch):
    (tmp_path / "x").mkdir()
    monkeypatch.setattr(rundir.os, "access", lambda *a, **k: False)  # chmod a-w does not stop root
    with pytest.raises(StoreError, match=rf"{tmp_path / 'x'} is read-only for this user.*chmod u\+w"):
        prepare_run_dir(tmp_path / "x")


def test_a_read_only_file_system_is_named_as_such(tmp_path, monkeypatch):
    def refuse(self, *a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(rundir.Path, "mkdir", refuse)
    with pytest.raises(StoreError, match=rf"{tmp_path} is on a read-only file system.*--out-dir"):
        prepare_run_dir(tmp_path / "new")


def test_top_k_beyond_max_iter_names_the_keys_and_leaves_no_run_directory(tiny_cfg, tmp_path):
    with pytest.raises(ConfigError, match=r"curvature.top_k=500.*--curvature.max_iter="):
        train(tiny_cfg("curvature.every=2", "curvature.top_k=500", steps=4), progress=False)
    assert not (tmp_path / "runs" / "tiny").exists()


def test_a_full_disk_before_any_checkpoint_says_start_over(tiny_cfg, monkeypatch):
    from oppsig.store.writer import StoreWriter

    real, calls = StoreWriter._commit, []

    def commit(self, *a, **k):
        calls.append(1)
        if len(calls) > 1:  # the first commit is the empty store's
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, *a, **k)

    monkeypatch.setattr(StoreWriter, "_commit", commit)
    with pytest.raises(OppsigError) as e:
        train(tiny_cfg("train.checkpoint_every=0", steps=10), progress=False)
    msg = str(e.value)
    assert "No space left on device" in msg and "resume" not in msg.replace("to resume from", "")
    assert "--overwrite" in msg and "no checkpoint was written yet" in msg
