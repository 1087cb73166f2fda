"""Published numbers, to print next to ours. Percent unless noted.

Sources and context: docs/biohash.md (Ryali et al. 2020), docs/hebbian_pca.md (Lagani et al.
2022), docs/retraining.md (Tzelepi & Tefas 2018), docs/sae_cnn.md (Kuo et al. 2016) and
docs/autoencoder_retrieval.md (Gosthipaty).
"""

BIOHASH_KS = (2, 4, 8, 16, 32, 64)

# Ryali et al., Table 2: mAP@1000 on CIFAR-10 pixels; None where the paper has no number.
BIOHASH_CIFAR10_TABLE2 = {
    "lsh": (11.73, 12.49, 13.44, 16.12, 18.07, 19.41),
    "pcahash": (12.73, 14.31, 16.20, 16.81, 17.19, 16.67),
    "flyhash": (14.62, 16.48, 18.01, 19.32, 21.40, 23.35),
    "sh": (12.77, 14.29, 16.12, 16.79, 16.88, 16.44),
    "itq": (12.64, 14.51, 17.05, 18.67, 20.55, 21.60),
    "naivebiohash": (11.79, 12.43, 14.54, 16.62, 17.75, 18.65),
    "biohash": (20.47, 21.61, 22.61, 23.35, 24.02, None),
    "bioconvhash": (26.94, 27.82, 29.34, 29.74, 30.10, None),
}

# Ryali et al., Table 1: mAP@All on MNIST.
BIOHASH_MNIST_TABLE1 = {
    "lsh": (12.45, 13.77, 18.07, 20.30, 26.20, 32.30),
    "pcahash": (19.59, 23.02, 29.62, 26.88, 24.35, 21.04),
    "flyhash": (18.94, 20.02, 24.24, 26.29, 32.30, 38.41),
    "sh": (20.17, 23.40, 29.76, 28.98, 27.37, 24.06),
    "itq": (21.94, 28.45, 38.44, 41.23, 43.55, 44.92),
    "naivebiohash": (25.85, 29.83, 28.18, 31.69, 36.48, 38.50),
    "biohash": (44.38, 49.32, 53.42, 54.92, 55.48, None),
    "bioconvhash": (64.49, 70.54, 77.25, 80.34, 81.23, None),
}

# Ryali et al., Table 6 (appendix B): mAP@1000 on CIFAR-10 when 80 % of each query image is
# multiplied by 0.3 ("shadows"); database and weights unchanged.
BIOHASH_CIFAR10_TABLE6 = {
    "lsh": (10.62, 11.82, 11.71, 11.25, 11.32, 11.90),
    "pcahash": (10.61, 10.60, 10.88, 11.33, 11.79, 11.83),
    "flyhash": (11.44, 11.09, 11.86, 11.89, 11.45, 11.44),
    "sh": (10.64, 10.45, 10.45, 11.70, 11.26, 11.30),
    "itq": (10.54, 10.68, 11.65, 11.00, 10.95, 10.94),
    "biohash": (11.05, 11.50, 11.57, 11.33, 11.59, None),
    "bioconvhash": (26.84, 27.60, 29.31, 29.57, 29.95, None),
}

# Ryali et al., Table 3: BioConvHash by channel-inhibition k_CI, at k = 2, 4, 8, 16.
BIOCONVHASH_TABLE3_KS = (2, 4, 8, 16)
BIOCONVHASH_CIFAR10_TABLE3 = {  # mAP@1000, F = 400
    1: (26.94, 27.82, 29.34, 29.74),
    5: (24.92, 25.94, 27.76, 28.90),
    10: (23.06, 25.25, 27.18, 27.69),
    25: (20.30, 22.73, 24.73, 26.20),
    100: (17.84, 18.82, 20.51, 23.57),
}

# Lagani et al., Tables 1 and 2: mAP by labelled fraction (percent), for no pre-training, beta-VAE
# and HPCA pre-training, each at its best layer (chosen on validation).
LAGANI_REGIMES = (1, 2, 3, 4, 5, 10, 25, 100)
LAGANI_CIFAR10_TABLE1 = {
    "none": (14.17, 14.70, 15.65, 17.03, 18.61, 25.48, 42.18, 81.26),
    "vae": (13.79, 14.39, 14.79, 15.49, 16.19, 21.58, 40.75, 80.56),
    "hpca": (17.81, 18.33, 18.84, 19.43, 20.08, 22.54, 27.29, 80.01),
}
LAGANI_CIFAR100_TABLE2 = {
    "none": (2.48, 2.54, 2.61, 2.64, 2.82, 3.63, 5.94, 18.86),
    "vae": (2.37, 2.50, 2.59, 2.64, 2.68, 3.09, 4.71, 17.68),
    "hpca": (2.95, 3.10, 3.18, 3.28, 3.34, 3.57, 4.27, 8.41),
}

# Tzelepi & Tefas 2018, Tables 7 (CaffeNet, ImageNet weights) and 8 (KevinNet, trained on
# CIFAR-10): CIFAR-10 (mAP, mAP@50) in percent, by (representation, scheme). "fc6" rows retrain FC6
# with FC6 targets, "fc7" rows FC6 and FC7 with FC7 targets. Table 8 prints rows 3, 4 and 9 with
# "CaffeNet" as the start (a typo in the paper, by its text).
TZELEPI_CIFAR10 = {
    "caffenet": {
        ("fc6", "baseline"): (21.53, 46.13),
        ("fc7", "baseline"): (25.33, 52.10),
        ("fc6", "fu"): (24.23, 47.07),
        ("fc7", "fu"): (28.62, 53.93),
        ("fc6", "rri"): (33.20, 52.12),
        ("fc7", "rri"): (42.97, 59.42),
        ("fc6", "rf"): (24.44, 56.76),
        ("fc7", "rf"): (27.66, 62.32),
        ("fc7", "fu+rri"): (45.85, 60.44),
    },
    "kevinnet": {
        ("fc6", "baseline"): (29.22, 59.88),
        ("fc7", "baseline"): (60.24, 84.70),
        ("fc6", "fu"): (37.56, 68.97),
        ("fc7", "fu"): (63.79, 84.66),
        ("fc6", "rri"): (53.00, 72.00),
        ("fc7", "rri"): (69.89, 85.19),
        ("fc6", "rf"): (38.82, 76.00),
        ("fc7", "rf"): (63.77, 85.42),
        ("fc7", "fu+rri"): (72.85, 85.32),
    },
}
# Table 10: CaffeNet FC7, 5 shuffles x 5 sets of 1,000 queries, mAP mean and std (percent).
TZELEPI_CIFAR10_TABLE10 = {
    "baseline": (25.53, 0.51),
    "fu": (28.36, 0.57),
    "rri": (43.79, 0.87),
    "rf": (27.59, 0.36),
}

# Kuo, Chou & Chang 2016, Tables 2 and 3: test accuracy (top-1, top-2, top-3) after 25 epochs.
KUO_ACCURACY = {
    "cifar10": {
        "plain": (73.5, 87.4, 93.1),
        "da": (75.3, 88.4, 93.7),
        "pretrain": (77.9, 90.4, 95.0),
        "both": (79.3, 91.4, 96.9),
    },
    "cifar100": {
        "plain": (41.6, 54.9, 62.2),
        "da": (43.7, 56.3, 64.0),
        "pretrain": (43.2, 55.5, 62.6),
        "both": (44.0, 57.3, 65.2),
    },
}
# Tables 4 and 5: mAP (a fraction, not percent) and matching seconds per query of the 400-d
# features of the pre-train + DA network, by distance (their CPU code).
KUO_RETRIEVAL = {
    "cifar10": {"euclidean": (0.671, 0.085), "manhattan": (0.694, 0.083), "cosine": (0.707, 0.262)},
    "cifar100": {
        "euclidean": (0.189, 0.115),
        "manhattan": (0.217, 0.081),
        "cosine": (0.244, 0.229),
    },
}

# Gosthipaty, W&B report: NMI and Rand index of k-means (10 clusters) on the auto-encoder's
# embeddings of the 57k training images, against the CIFAR-10 labels (fractions).
GOSTHIPATY_CIFAR10 = {"vanilla": (0.074, 0.811), "supervised": (0.433, 0.876)}
