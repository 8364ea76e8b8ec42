"""SimCLR, the method `patchwork pretrain` trains with: the augmented views, the projection
head, the NT-Xent loss, and the kNN accuracy that scores the features on validation labels.

SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual
Representations"), as the original patchwork's feature package trains it: each image gives two
randomly augmented views; the backbone and a projection head (pooled 1280 -> 512 -> 128) map
them to vectors, and the NT-Xent loss pulls an image's two views together and pushes the other
2 (B - 1) views of the batch away. SimCLR rather than a successor (BYOL, SimSiam, DINO) because
it has no momentum encoder or predictor to tune, behaves predictably starting from a pretrained
backbone, and is what the original patchwork's users know; its weakness, needing many negatives,
matters less when fine-tuning than when training from scratch.

TensorFlow and Keras are passed in (`tf`, `keras`), never imported here: the command
(pretraining/pretrain.py) starts TensorFlow, and this module imports with numpy alone.
"""

from __future__ import annotations

import numpy as np

PROJECTION = (512, 128)  # the projection head after the pooled 1280 features, as in SimCLR
KNN_K = 5
# Augmentation strengths: SimCLR's colour jitter at s = 0.5 (its CIFAR setting), applied with
# probability 0.8; random grey 0.2; blur 0.5 with sigma in [0.1, 2] px at 96 px (scaled with size).
CROP_SCALE = (0.2, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
JITTER = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1}
JITTER_P, GREY_P, BLUR_P = 0.8, 0.2, 0.5
BLUR_SIGMA = (0.1, 2.0)


def is_grey(images: np.ndarray) -> bool:
    """True when the images have one channel, or three equal ones (a grey scan saved as RGB)."""
    if images.shape[-1] == 1:
        return True
    return bool((images[..., 0] == images[..., 1]).all() and (images[..., 1] == images[..., 2]).all())


def knn_accuracy(features: np.ndarray, classes: np.ndarray, k: int = KNN_K) -> float:
    """Leave-one-out k-nearest-neighbour accuracy (cosine similarity, majority vote, ties to the
    most similar): how well the features alone separate the classes, without training anything."""
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    k = min(k, len(features) - 1)
    neighbours = np.argsort(-similarity, axis=1)[:, :k]
    correct = 0
    for i, row in enumerate(neighbours):
        votes = np.bincount(classes[row], minlength=classes.max() + 1).astype(float)
        votes[classes[row[0]]] += 0.5  # breaks a tie in favour of the nearest neighbour's class
        correct += int(votes.argmax() == classes[i])
    return correct / len(features)


# --- augmentations (TensorFlow ops, whole batches at once) ----------------------------------


def augment(tf, images, size: int, grey: bool, seed):
    """One random view of each image of `images` (B, h, w, c float 0..255) at size x size: random
    resized crop, horizontal flip, colour jitter (only brightness and contrast for grey images:
    saturation and hue would make colour that is not in the data), random grey, Gaussian blur.
    `seed` is a (2,) int tensor; the same seed, the same views."""
    seeds = tf.random.experimental.stateless_split(seed, 12)
    batch = tf.shape(images)[0]
    channels = images.shape[-1]

    def uniform(i, shape, low=0.0, high=1.0):
        return tf.random.stateless_uniform(shape, seeds[i], low, high)

    # random resized crop: a box of scale s of the area and aspect ratio r, anywhere inside
    scale = uniform(0, [batch], *CROP_SCALE)
    ratio = tf.exp(uniform(1, [batch], np.log(CROP_RATIO[0]), np.log(CROP_RATIO[1])))
    height = tf.minimum(tf.sqrt(scale / ratio), 1.0)
    width = tf.minimum(tf.sqrt(scale * ratio), 1.0)
    top = uniform(2, [batch]) * (1.0 - height)
    left = uniform(3, [batch]) * (1.0 - width)
    boxes = tf.stack([top, left, top + height, left + width], axis=1)
    x = tf.image.crop_and_resize(images, boxes, tf.range(batch), (size, size))
    # horizontal flip
    flip = uniform(4, [batch, 1, 1, 1]) < 0.5
    x = tf.where(flip, tf.reverse(x, axis=[2]), x)
    # colour jitter, each image its own factors, with probability JITTER_P
    jitter = uniform(5, [batch, 1, 1, 1]) < JITTER_P
    factors = uniform(6, [4, batch, 1, 1, 1], -1.0, 1.0)
    y = x + factors[0] * JITTER["brightness"] * 255.0
    mean = tf.reduce_mean(y, axis=[1, 2, 3], keepdims=True)
    y = (y - mean) * (1.0 + factors[1] * JITTER["contrast"]) + mean
    if not grey:
        y = tf.clip_by_value(y, 0.0, 255.0)
        luma = tf.image.rgb_to_grayscale(y)
        y = luma + (y - luma) * (1.0 + factors[2] * JITTER["saturation"])
        hsv = tf.image.rgb_to_hsv(tf.clip_by_value(y, 0.0, 255.0) / 255.0)
        hue = tf.math.floormod(hsv[..., :1] + factors[3] * JITTER["hue"], 1.0)
        y = tf.image.hsv_to_rgb(tf.concat([hue, hsv[..., 1:]], axis=-1)) * 255.0
        # random grey
        to_grey = uniform(7, [batch, 1, 1, 1]) < GREY_P
        y = tf.where(to_grey, tf.repeat(tf.image.rgb_to_grayscale(y), 3, axis=-1), y)
    x = tf.clip_by_value(tf.where(jitter, y, x), 0.0, 255.0)
    # Gaussian blur: a separable convolution, each image its own sigma. The batch is folded into
    # the channels so one depthwise convolution blurs every image with its own kernel.
    blur = uniform(8, [batch]) < BLUR_P
    sigma = uniform(9, [batch], *BLUR_SIGMA) * (size / 96.0)
    sigma = tf.where(blur, sigma, 1e-3)  # a tiny sigma: the kernel is a unit impulse, no blur
    radius = max(1, int(round(2.0 * BLUR_SIGMA[1] * size / 96.0)))
    offsets = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-0.5 * tf.square(offsets[None, :] / sigma[:, None]))  # (B, 2r+1)
    kernel = kernel / tf.reduce_sum(kernel, axis=1, keepdims=True)
    kernel = tf.repeat(kernel, channels, axis=0)  # (B*c, 2r+1), in the folded channel order
    folded = tf.reshape(tf.transpose(x, [1, 2, 0, 3]), [1, size, size, -1])  # (1, H, W, B*c)
    vertical = tf.transpose(kernel)[:, None, :, None]  # (2r+1, 1, B*c, 1)
    horizontal = tf.transpose(kernel)[None, :, :, None]  # (1, 2r+1, B*c, 1)
    padded = tf.pad(folded, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="REFLECT")
    blurred = tf.nn.depthwise_conv2d(padded, vertical, [1, 1, 1, 1], "VALID")
    blurred = tf.nn.depthwise_conv2d(blurred, horizontal, [1, 1, 1, 1], "VALID")
    x = tf.transpose(tf.reshape(blurred, [size, size, batch, channels]), [2, 0, 1, 3])
    return x


def nt_xent(tf, z1, z2, temperature: float):
    """SimCLR's loss: for each of the 2B views, the cross-entropy of picking its partner view
    among the other 2B - 1 by cosine similarity / temperature."""
    z = tf.math.l2_normalize(tf.concat([z1, z2], axis=0), axis=1)
    n = tf.shape(z1)[0]
    logits = tf.matmul(z, z, transpose_b=True) / temperature
    logits = logits - tf.eye(2 * n) * 1e9  # a view is not its own partner
    partners = tf.concat([tf.range(n, 2 * n), tf.range(0, n)], axis=0)
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=partners, logits=logits)
    return tf.reduce_mean(losses)


def projection_head(keras, width: int):
    inputs = keras.Input((width,))
    x = keras.layers.Dense(PROJECTION[0], use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    outputs = keras.layers.Dense(PROJECTION[1])(x)
    return keras.Model(inputs, outputs, name="projection")


def pooled_features(keras, tensor):
    return keras.ops.mean(tensor, axis=(1, 2)) if len(tensor.shape) == 4 else tensor
