"""Checkpoints: save/restore with identical values, atomic overwrite, errors, resumable loops."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from hebbret import checkpoints
from hebbret.checkpoints import CheckpointError
from hebbret.errors import InputError


def _tree():
    return {
        "w": np.arange(600, dtype=np.float32).reshape(20, 30) / 7,
        "inner": {"count": np.arange(5, dtype=np.int32), "b": jnp.linspace(-1.0, 1.0, 4)},
    }


def _assert_same(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


class _Net(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dense(3)(x)
        return nn.BatchNorm(use_running_average=not train)(x)


def test_save_restore_gives_identical_arrays(tmp_path):
    tree = _tree()
    checkpoints.save(tmp_path / "ckpt", tree)
    back = checkpoints.restore(tmp_path / "ckpt", tree)
    _assert_same(back, tree)
    assert isinstance(back["w"], np.ndarray)  # numpy in `like`, numpy out
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)
    _assert_same(checkpoints.restore(str(tmp_path / "ckpt"), abstract), tree)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary directory left


def test_flax_variables_round_trip_with_identical_outputs(tmp_path):
    net = _Net()
    x = jax.random.normal(jax.random.key(0), (8, 5))
    variables = net.init(jax.random.key(1), x)
    # one training step so that batch_stats differ from their initial values
    _, updates = net.apply(variables, x, train=True, mutable=["batch_stats"])
    variables = {**variables, **updates}
    checkpoints.save(tmp_path / "net", variables)

    like = jax.tree.map(lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype), variables)
    back = checkpoints.restore(tmp_path / "net", like)
    _assert_same(back, variables)
    np.testing.assert_array_equal(net.apply(back, x), net.apply(variables, x))


def test_array_sharded_over_8_devices(tmp_path):
    mesh = jax.make_mesh((8,), ("d",))
    sharding = NamedSharding(mesh, P("d"))
    tree = {"x": jax.device_put(jnp.arange(32.0).reshape(8, 4), sharding)}
    checkpoints.save(tmp_path / "c", tree)
    like = {"x": jax.ShapeDtypeStruct((8, 4), jnp.float32, sharding=sharding)}
    back = checkpoints.restore(tmp_path / "c", like)
    assert back["x"].sharding == sharding
    _assert_same(back, tree)


def test_overwrite_replaces_the_old_checkpoint(tmp_path):
    path = tmp_path / "ckpt"
    checkpoints.save(path, _tree())
    new = jax.tree.map(lambda x: x + 1, _tree())
    checkpoints.save(path, new)
    _assert_same(checkpoints.restore(path, _tree()), new)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_failed_save_keeps_the_old_checkpoint(tmp_path):
    path = tmp_path / "ckpt"
    checkpoints.save(path, _tree())
    with pytest.raises(ValueError, match="Unsupported type"):
        checkpoints.save(path, {"w": object()})
    _assert_same(checkpoints.restore(path, _tree()), _tree())
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary directory left


def test_save_refuses_to_overwrite_other_data(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keep.txt").write_text("precious")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        checkpoints.save(tmp_path / "data", _tree())
    assert (tmp_path / "data" / "keep.txt").read_text() == "precious"


def test_missing_checkpoint(tmp_path):
    path = tmp_path / "nowhere"
    with pytest.raises(CheckpointError, match="no checkpoint at") as info:
        checkpoints.restore(path, _tree())
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, InputError)
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="not a directory"):
        checkpoints.restore(tmp_path / "file", _tree())


def _data_files(path):
    """Files holding array bytes (orbax's OCDBT data files), largest first."""
    files = [f for f in path.rglob("*") if f.is_file() and f.parent.name == "d"]
    return sorted(files, key=lambda f: f.stat().st_size, reverse=True)


@pytest.mark.parametrize("damage", ["delete", "garble", "flip_one_byte", "truncate"])
def test_corrupt_checkpoint(tmp_path, damage):
    path = tmp_path / "ckpt"
    checkpoints.save(path, _tree())
    victim = _data_files(path)[0]
    data = victim.read_bytes()
    if damage == "delete":
        victim.unlink()
    elif damage == "garble":
        victim.write_bytes(b"garbage" * 100)
    elif damage == "flip_one_byte":  # orbax alone would restore different values silently
        victim.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    else:
        victim.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="is corrupt") as info:
        checkpoints.restore(path, _tree())
    assert str(path) in str(info.value)


def test_damaged_metadata_or_checksum_list(tmp_path):
    path = tmp_path / "ckpt"
    checkpoints.save(path, _tree())
    (path / "_METADATA").write_text("{not json")
    with pytest.raises(CheckpointError, match="is corrupt: _METADATA has changed"):
        checkpoints.restore(path, _tree())
    (path / checkpoints.CHECKSUMS).write_text("garbage")
    with pytest.raises(CheckpointError, match=f"is corrupt: unreadable {checkpoints.CHECKSUMS}"):
        checkpoints.restore(path, _tree())
    (path / checkpoints.CHECKSUMS).unlink()
    with pytest.raises(CheckpointError, match=f"no {checkpoints.CHECKSUMS}"):
        checkpoints.restore(path, _tree())


def test_orbax_errors_are_chained(tmp_path, monkeypatch):
    path = tmp_path / "ckpt"
    checkpoints.save(path, _tree())
    boom = ValueError("DATA_LOSS: Error reading ...\n  long tensorstore spec")

    def fail(*args, **kwargs):
        raise boom

    # (damage that gets past the checksums to orbax is simulated: orbax's error path leaves
    # unfinished asyncio tasks whose warnings would make such a test flaky)
    monkeypatch.setattr(checkpoints.ocp.Checkpointer, "restore", fail)
    with pytest.raises(CheckpointError, match="does not match `like`: DATA_LOSS") as info:
        checkpoints.restore(path, _tree())
    assert info.value.__cause__ is boom
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_unreadable_metadata_without_checksums_is_corrupt(tmp_path):
    path = tmp_path / "ckpt"
    checkpoints.save(path, _tree())
    (path / checkpoints.CHECKSUMS).write_text('{"format": 1, "sha256": {}}')  # nothing verified
    (path / "_METADATA").write_text("{not json")
    with pytest.raises(CheckpointError, match="is corrupt: cannot read its metadata"):
        checkpoints.restore(path, _tree())


@pytest.mark.parametrize(
    ("like", "message"),
    [
        ({**_tree(), "w": np.zeros((20, 31), np.float32)}, r"\['w'\] .* float32\[20, 30\]"),
        ({**_tree(), "w": np.zeros((20, 30), np.float64)}, r"\['w'\] was saved as float32"),
        ({**_tree(), "extra": np.zeros(2)}, r"not in the checkpoint: \['extra'\]"),
        ({"w": np.zeros((20, 30), np.float32)}, "in the checkpoint but not in `like`"),
    ],
)
def test_mismatched_like(tmp_path, like, message):
    path = tmp_path / "ckpt"
    checkpoints.save(path, _tree())
    with pytest.raises(CheckpointError, match=message) as info:
        checkpoints.restore(path, like)
    assert str(path) in str(info.value) and "does not match" in str(info.value)


def test_resumable_loop_keeps_only_the_latest_steps(tmp_path):
    run = tmp_path / "run"
    assert checkpoints.latest_step(run) is None  # no directory yet
    run.mkdir()
    assert checkpoints.latest_step(run) is None  # empty directory

    state = {"w": np.zeros(3, np.float32), "epoch": np.int32(0)}
    for epoch in range(1, 5):
        state = {"w": state["w"] + 0.5, "epoch": np.int32(epoch)}
        checkpoints.save_step(run, epoch, state, keep=2)
    assert sorted(p.name for p in run.iterdir()) == ["3", "4"]
    assert checkpoints.latest_step(run) == 4

    # an interrupted save (orbax's or ours: hidden temporary directories) and stray files
    (run / ".5.tmp-abc").mkdir()
    (run / "5.orbax-checkpoint-tmp-123").mkdir()
    (run / "6").mkdir()  # no checksum list: not a complete checkpoint
    (run / "notes.txt").write_text("x")
    assert checkpoints.latest_step(run) == 4

    like = {"w": np.zeros(3, np.float32), "epoch": np.int32(0)}
    back = checkpoints.restore_step(run, checkpoints.latest_step(run), like)
    _assert_same(back, state)
    assert isinstance(back["epoch"], np.int32)  # numpy scalar in `like`, numpy scalar out
    np.testing.assert_array_equal(checkpoints.restore_step(run, 3, like)["w"], np.full(3, 1.5))

    checkpoints.save_step(run, 5, state)  # keep=1
    assert checkpoints.latest_step(run) == 5
    assert not (run / "3").exists() and not (run / "4").exists()


def test_restore_step_of_a_pruned_step(tmp_path):
    checkpoints.save_step(tmp_path, 1, _tree())
    checkpoints.save_step(tmp_path, 2, _tree())
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        checkpoints.restore_step(tmp_path, 1, _tree())


def test_save_step_keeps_the_step_just_saved(tmp_path):
    checkpoints.save_step(tmp_path, 10, _tree())
    checkpoints.save_step(tmp_path, 1, _tree())  # e.g. a restarted run: 10 is not deleted either
    assert sorted(int(p.name) for p in tmp_path.iterdir()) == [1, 10]


@pytest.mark.parametrize(("step", "keep"), [(-1, 1), (1.5, 1), (True, 1), (1, 0)])
def test_save_step_rejects_bad_arguments(tmp_path, step, keep):
    with pytest.raises(InputError, match="step|keep"):
        checkpoints.save_step(tmp_path, step, _tree(), keep=keep)
