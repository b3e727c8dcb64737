import os
import pickle
import zipfile

import numpy as np
import pytest
from conftest import TINY, fixture_path

from bagnet_keras.models.torch_checkpoint import UnsafeCheckpointError, load_checkpoint, state_dict_from_checkpoint


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_views_into_shared_storages(fmt):
    loaded = load_checkpoint(fixture_path(f"views_{fmt}.pth"))
    expected = np.load(fixture_path("views_expected.npz"))
    assert set(loaded) == set(expected.files)
    for key in expected.files:
        assert loaded[key].dtype == expected[key].dtype, key
        np.testing.assert_array_equal(loaded[key], expected[key], err_msg=key)
    loaded["rows"][0, 0] = -1  # copies, not aliases of one storage
    assert loaded["base"][1, 0] == 6


@pytest.mark.parametrize("name", TINY)
def test_both_formats_and_key_styles_give_the_same_state_dict(name):
    plain = state_dict_from_checkpoint(load_checkpoint(fixture_path(f"{name}.pth.tar")))
    wrapped = load_checkpoint(fixture_path(f"{name}.dp.pth"))
    assert wrapped["epoch"] == 3 and wrapped["arch"] == name
    parallel = state_dict_from_checkpoint(wrapped)
    assert set(plain) == set(parallel) and "conv1.weight" in plain
    for key in plain:
        np.testing.assert_array_equal(plain[key], parallel[key])
    assert plain["conv1.weight"].shape == (8, 3, 1, 1)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _legacy_file(path, payload):
    with open(path, "wb") as f:
        for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
            pickle.dump(header, f, protocol=2)
        pickle.dump(payload, f, protocol=2)
        pickle.dump([], f, protocol=2)


def _zip_file(path, payload):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(payload, protocol=2))
        z.writestr("archive/byteorder", "little")


@pytest.mark.parametrize("writer", [_legacy_file, _zip_file])
def test_foreign_global_is_refused_and_never_runs(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    writer(path, {"conv1.weight": _Evil(marker)})
    with pytest.raises(UnsafeCheckpointError, match=r"'(posix|os)\.system'"):
        load_checkpoint(path)
    assert not marker.exists()
    # The same pickle through plain pickle would have run the command: the test can fail.
    pickle.loads(pickle.dumps(_Evil(marker), protocol=2))
    assert marker.exists()


def test_builtins_eval_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    payload = b"\x80\x02cbuiltins\neval\nX\x04\x00\x00\x001+1q\x00\x85q\x01Rq\x02."
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", payload)
    with pytest.raises(UnsafeCheckpointError, match="builtins.eval"):
        load_checkpoint(path)


def test_truncated_legacy_checkpoint(tmp_path):
    data = open(fixture_path("tiny9.pth.tar"), "rb").read()
    path = tmp_path / "cut.pth.tar"
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(pickle.UnpicklingError, match="truncated"):
        load_checkpoint(path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_bytes(b"just some text, not a pickle")
    with pytest.raises(pickle.UnpicklingError, match="notes.pth"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_checkpoint(tmp_path / "missing.pth")


def test_state_dict_must_be_a_mapping():
    with pytest.raises(ValueError, match="list"):
        state_dict_from_checkpoint([1, 2])


def test_zip_with_two_pickles_is_rejected(tmp_path):
    path = tmp_path / "odd.pth"
    buf = pickle.dumps({}, protocol=2)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("a/data.pkl", buf)
        z.writestr("b/data.pkl", buf)
    with pytest.raises(pickle.UnpicklingError, match="data.pkl"):
        load_checkpoint(path)


@pytest.mark.parametrize("content", [b"", b"<!DOCTYPE html><html><body>Sign in</body></html>", b"PK\x03\x04broken"])
def test_a_file_that_is_not_a_checkpoint_is_a_value_error_naming_it(tmp_path, content):
    """An HTML page saved as the weights, an empty or a broken file: ValueError, so the command line can catch it."""
    from bagnet_keras.models import BagNet

    path = tmp_path / "weights.pth.tar"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="weights.pth.tar"):
        load_checkpoint(path)
    with pytest.raises(ValueError, match="weights.pth.tar"):
        BagNet(blocks=(1, 1, 1, 1), base_width=8, stem_width=8, classes=3, input_shape=(40, 40, 3), weights=str(path))
