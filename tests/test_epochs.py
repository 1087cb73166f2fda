"""hebbret.epochs.run: epoch order, resume from the latest checkpoint, step numbering, stopping."""

import chex
import numpy as np
import pytest

from hebbret import checkpoints, epochs
from hebbret.errors import InputError


def add_epoch(calls):
    def epoch(t, state, tick):
        calls.append(t)
        for _ in range(3):
            tick()
        return {"w": state["w"] + np.float32(t + 1)}

    return epoch


def test_runs_every_epoch_in_order():
    calls = []
    out = epochs.run(add_epoch(calls), {"w": np.zeros(2, np.float32)}, 4, desc="t", show=False)
    assert calls == [0, 1, 2, 3]
    chex.assert_trees_all_equal(out, {"w": np.full(2, 10.0, np.float32)})


def test_saves_each_epoch_as_step_t_plus_1_and_resumes_from_the_latest(tmp_path):
    calls = []
    start = {"w": np.zeros(2, np.float32)}
    epochs.run(add_epoch(calls), start, 2, desc="t", steps=3, show=True, checkpoint_dir=tmp_path)
    assert calls == [0, 1] and checkpoints.latest_step(tmp_path) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["2"]  # only the latest step is kept
    chex.assert_trees_all_equal(
        checkpoints.restore_step(tmp_path, 2, start), {"w": np.full(2, 3.0, np.float32)}
    )
    # a longer run resumes after epoch 2: the same result as straight through
    resumed = epochs.run(add_epoch(calls), start, 4, desc="t", show=False, checkpoint_dir=tmp_path)
    assert calls == [0, 1, 2, 3] and checkpoints.latest_step(tmp_path) == 4
    straight = epochs.run(add_epoch([]), start, 4, desc="t", show=False)
    chex.assert_trees_all_equal(resumed, straight)
    # finished: nothing runs again
    again = epochs.run(add_epoch(calls), start, 4, desc="t", show=False, checkpoint_dir=tmp_path)
    assert calls == [0, 1, 2, 3]
    chex.assert_trees_all_equal(again, straight)


def test_past_the_end_is_restored_or_refused(tmp_path):
    start = {"w": np.zeros(2, np.float32)}
    epochs.run(add_epoch([]), start, 3, desc="t", show=False, checkpoint_dir=tmp_path)
    calls = []
    out = epochs.run(add_epoch(calls), start, 2, desc="t", show=False, checkpoint_dir=tmp_path)
    assert calls == [] and float(out["w"][0]) == 6.0
    with pytest.raises(InputError, match="holds epoch 3, past the 2"):
        epochs.run(
            add_epoch(calls), start, 2, desc="t", checkpoint_dir=tmp_path, refuse_past_end=True
        )


def test_custom_tree_hooks_prepare_and_stop(tmp_path):
    """State (value, history) saved as a dict whose history grows; prepare runs after restore."""

    def epoch(t, state, tick):
        value, history = state
        return value * 2, [*history, float(t)]

    kwargs = dict(
        desc="t",
        show=False,
        checkpoint_dir=tmp_path,
        to_tree=lambda s: {"v": np.float32(s[0]), "h": np.asarray(s[1], np.float32)},
        like=lambda step: {"v": np.float32(0), "h": np.zeros(step, np.float32)},
        from_tree=lambda tree: (float(tree["v"]), [float(h) for h in tree["h"]]),
    )
    prepared = []
    first = epochs.run(epoch, (1.0, []), 2, prepare=lambda s: prepared.append(s) or s, **kwargs)
    assert first == (4.0, [0.0, 1.0]) and prepared == [(1.0, [])]
    stopped = epochs.run(
        epoch, (1.0, []), 10, prepare=lambda s: prepared.append(s) or s,
        stop=lambda s: s[0] >= 16, postfix=lambda s: {"v": str(s[0])}, **kwargs,
    )  # fmt: skip
    assert prepared[-1] == (4.0, [0.0, 1.0])  # the restored state
    assert stopped == (16.0, [0.0, 1.0, 2.0, 3.0])
    assert checkpoints.latest_step(tmp_path) == 4  # the stopping epoch is saved too
