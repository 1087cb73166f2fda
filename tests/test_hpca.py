"""Hebbian PCA: eq. 2 against a loop over neurons, conv = unfold + dense, PCA convergence,
data-parallel equality, checkpointed resume, bad input."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hebbret import checkpoints
from hebbret.errors import InputError
from hebbret.mesh import data_mesh
from hebbret.nets import convnet
from hebbret.rules import hpca, hpca_train


def loop_update(w: np.ndarray, x: np.ndarray, f=lambda y: np.maximum(y, 0.0)) -> np.ndarray:
    """Eq. 2 literally: for every input and neuron i, f(y_i) (x - sum_{j<=i} f(y_j) w_j);
    averaged over inputs. w: (n, d) rows are neurons."""
    dw = np.zeros_like(w, dtype=np.float64)
    for xs in x.astype(np.float64):
        fy = f(w @ xs)
        for i in range(w.shape[0]):
            recon = sum(fy[j] * w[j] for j in range(i + 1))
            dw[i] += fy[i] * (xs - recon)
    return dw / len(x)


@pytest.mark.parametrize("shape", [(50, 4, 6), (3, 128, 10)])  # direct form; blocked form
def test_dense_update_is_eq2(shape):
    num, n, d = shape
    rng = np.random.default_rng(0)
    w, x = rng.normal(size=(n, d)).astype(np.float32), rng.normal(size=(num, d)).astype(np.float32)
    r = np.maximum(x @ w.T, 0.0)
    got = np.asarray(hpca.dense_update(jnp.asarray(w.T), jnp.asarray(x), jnp.asarray(r)))
    chex.assert_trees_all_close(got.T, loop_update(w, x), rtol=1e-4, atol=1e-4)


def test_conv_update_is_eq2_over_patches():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 6, 5, 3)).astype(np.float32)
    kernel = rng.normal(size=(3, 2, 3, 4)).astype(np.float32) * 0.3
    patches = hpca.unfold(x, 3, 2)  # (2 * 4 * 4, 18)
    w = kernel.reshape(-1, 4).T
    r = np.maximum(patches @ w.T, 0.0)
    got = hpca.conv_update(jnp.asarray(kernel), jnp.asarray(x), jnp.asarray(r.reshape(2, 4, 4, 4)))
    want = loop_update(w, patches).T.reshape(kernel.shape)
    chex.assert_trees_all_close(got, want, rtol=1e-4, atol=1e-4)


def test_rule_functions_assert_shapes_that_would_broadcast_silently():
    kernel, x = jnp.zeros((6, 4)), jnp.zeros((5, 6))
    with pytest.raises(AssertionError):
        hpca.dense_update(kernel, x, jnp.zeros((5, 1)))  # (N, 1) responses broadcast over n
    with pytest.raises(AssertionError):
        hpca.dense_update(jnp.zeros((1, 4)), x, jnp.zeros((5, 4)))  # kernel for d = 1
    with pytest.raises(AssertionError):  # responses of a 'SAME' convolution
        hpca.conv_update(jnp.zeros((3, 3, 2, 4)), jnp.zeros((2, 6, 6, 2)), jnp.zeros((2, 6, 6, 4)))


def test_unfold_matches_convolution():
    rng = np.random.default_rng(2)
    x, kernel = rng.normal(size=(2, 7, 6, 2)), rng.normal(size=(2, 3, 2, 5))
    conv = jax.lax.conv_general_dilated(
        x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    flat = hpca.unfold(x, 2, 3) @ kernel.reshape(-1, 5)
    chex.assert_trees_all_close(np.asarray(conv).reshape(-1, 5), flat, rtol=1e-5, atol=1e-5)


def test_linear_layer_converges_to_principal_components():
    """f = identity: Sanger's rule finds the top principal components, in order."""
    rng = np.random.default_rng(3)
    d, n = 8, 3
    basis = np.linalg.qr(rng.normal(size=(d, d)))[0]
    scales = np.array([3.0, 2.2, 1.6, 0.8, 0.6, 0.4, 0.3, 0.2])
    x = (rng.normal(size=(20_000, d)) * scales) @ basis.T
    x = jnp.asarray(x - x.mean(0), jnp.float32)

    @jax.jit
    def run(kernel):
        def body(k, xs):
            return k + 5e-3 * hpca.dense_update(k, xs, xs @ k), None

        return jax.lax.scan(body, kernel, x.reshape(-1, 100, d))[0]

    kernel = jnp.asarray(rng.normal(size=(d, n)) * 0.1, jnp.float32)
    for _ in range(5):
        kernel = run(kernel)
    vals, vecs = np.linalg.eigh(np.cov(np.asarray(x).T))
    top = vecs[:, ::-1][:, :n]
    cos = np.abs(np.sum(np.asarray(kernel) * top, axis=0)) / np.linalg.norm(kernel, axis=0)
    assert np.all(cos > 0.99), cos  # each unit on its eigenvector, in eigenvalue order
    chex.assert_trees_all_close(np.linalg.norm(kernel, axis=0), np.ones(n), atol=0.05)


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def test_hebbian_step_moves_every_hebbian_kernel_and_nothing_else():
    model = convnet.Net(10, init_scheme="hebbian")
    v = convnet.init(model, jax.random.key(0))
    x = convnet.standardise(_images(4), jnp.full(3, 0.5), jnp.full(3, 0.25))
    new = hpca.hebbian_step(model, v, x, 1e-3)
    for name in ("conv1", "conv2", "conv3", "conv4", "fc5"):
        assert not np.allclose(new["params"][name]["kernel"], v["params"][name]["kernel"])
    for name in ("head", "bn1", "bn5"):
        chex.assert_trees_all_equal(new["params"][name], v["params"][name])
    assert not np.allclose(new["batch_stats"]["bn1"]["mean"], v["batch_stats"]["bn1"]["mean"])
    # conv1's update is eq. 2 on the unfolded patches of the standardised images
    _, state = model.apply(v, x, train=True, hebbian=True, mutable=["batch_stats", "hebbian"])
    (inp, resp) = state["hebbian"]["conv1_io"][0]
    w = np.asarray(v["params"]["conv1"]["kernel"]).reshape(-1, 96)
    patches = hpca.unfold(np.asarray(inp), 5, 5)
    r = np.asarray(resp).reshape(-1, 96)
    want = (r.T @ patches - np.tril(r.T @ r) @ w.T) / len(patches)
    got = (np.asarray(new["params"]["conv1"]["kernel"]).reshape(-1, 96) - w) / 1e-3
    chex.assert_trees_all_close(got, want.T, rtol=2e-3, atol=2e-4)


def test_pretrain_data_parallel_equals_single_device_and_resumes(tmp_path):
    images = _images(32)
    mean, std = convnet.channel_stats(images)
    cfg = hpca.HebbianConfig(lr=1e-3, epochs=2, batch=16)
    key = jax.random.key(7)
    one = hpca_train.pretrain(key, images, mean, std, cfg, progress=False)
    eight = hpca_train.pretrain(key, images, mean, std, cfg, mesh=data_mesh(8), progress=False)
    chex.assert_trees_all_close(one, eight, rtol=2e-4, atol=2e-5)
    # interrupted after one epoch, then resumed: the same as straight through
    ckpt = tmp_path / "hpca"
    hpca_train.pretrain(key, images, mean, std, cfg._replace(epochs=1), checkpoint_dir=ckpt)
    assert checkpoints.latest_step(ckpt) == 1
    resumed = hpca_train.pretrain(key, images, mean, std, cfg, checkpoint_dir=ckpt, progress=False)
    assert checkpoints.latest_step(ckpt) == 2
    assert sorted(p.name for p in ckpt.iterdir()) == ["2"]  # <dir>/<epoch>, the latest only
    chex.assert_trees_all_equal(checkpoints.restore_step(ckpt, 2, resumed), resumed)
    chex.assert_trees_all_close(one, resumed, rtol=1e-5, atol=1e-6)
    # a folder already past the epochs asked for is refused, not silently returned
    with pytest.raises(InputError, match="holds epoch 2, past the 1"):
        hpca_train.pretrain(key, images, mean, std, cfg._replace(epochs=1), checkpoint_dir=ckpt)


@pytest.mark.parametrize(
    "images, cfg, devices, problem",
    [
        (np.zeros((8, 32, 32, 1), np.uint8), hpca.HebbianConfig(batch=4), None, "colour"),
        (np.zeros((8, 28, 28, 3), np.uint8), hpca.HebbianConfig(batch=4), None, "32, 32, 3"),
        (np.zeros((8, 32, 32, 3), np.float32), hpca.HebbianConfig(batch=4), None, "uint8"),
        (np.zeros((3, 32, 32, 3), np.uint8), hpca.HebbianConfig(batch=4), None, "at least"),
        (np.zeros((8, 32, 32, 3), np.uint8), hpca.HebbianConfig(batch=6), 4, "divide"),
    ],
)
def test_pretrain_bad_input(images, cfg, devices, problem):
    mesh = data_mesh(devices) if devices else None
    with pytest.raises(InputError, match=problem):
        hpca_train.pretrain(jax.random.key(0), images, np.zeros(3), np.ones(3), cfg, mesh=mesh)
