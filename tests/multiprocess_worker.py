"""One process of the multi-process test (tests/test_multiprocess.py); not a test itself.

    python tests/multiprocess_worker.py OUT.npz LOCAL_DEVICES [COORDINATOR NUM_PROCESSES ID]

Runs the data-parallel BioHash rule, the BioConvHash features, Hebbian PCA pre-training and the
sharded retrieval kernel on meshes over every device of every process, and (process 0) writes
the results to OUT.npz.
"""

import os
import sys

out, local = sys.argv[1], int(sys.argv[2])
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={local}"

import jax  # noqa: E402
import numpy as np  # noqa: E402

from hebbret import distributed, mesh, retrieval  # noqa: E402

if len(sys.argv) > 3:
    distributed.initialize(sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))

from hebbret.hashing import bioconv  # noqa: E402
from hebbret.nets import convnet  # noqa: E402
from hebbret.rules import biohash, biohash_train, hpca, hpca_train  # noqa: E402

rng = np.random.default_rng(0)
x = rng.standard_normal((256, 24)).astype(np.float32)
cfg = biohash.RuleConfig(batch=32, max_epochs=3)
w = biohash_train.train(jax.random.key(0), x, 8, cfg, mesh=mesh.data_mesh(), progress=False).w
xb, yb = rng.standard_normal((1000, 16)).astype(np.float32), rng.integers(0, 5, 1000)
xq, yq = rng.standard_normal((50, 16)).astype(np.float32), rng.integers(0, 5, 50)
m = retrieval.evaluate(xq, xb, yq, yb, metric="euclidean", at=(10,), mesh=mesh.database_mesh())
images = rng.integers(0, 256, (16, 16, 16, 3), dtype=np.uint8)
front = bioconv.ConvConfig(filters=6, kernels=(3,), pool=3, stride=2)
filters = [rng.standard_normal((6, 27)).astype(np.float32)]
feats = bioconv.feature_map(filters, images, front, mesh=mesh.data_mesh(), chunk_size=8)
images = rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8)
mean, std = convnet.channel_stats(images)
hcfg = hpca.HebbianConfig(lr=1e-3, epochs=2, batch=16)
v = hpca_train.pretrain(jax.random.key(7), images, mean, std, hcfg, mesh=mesh.data_mesh(),
                        progress=False)  # fmt: skip
if jax.process_index() == 0:
    leaves = {f"hpca{i}": leaf for i, leaf in enumerate(jax.tree.leaves(v))}
    np.savez(out, w=np.asarray(w), map=m["map"], p10=m["precision_at"][10], feats=feats, **leaves,
             devices=jax.device_count(), processes=jax.process_count())  # fmt: skip
