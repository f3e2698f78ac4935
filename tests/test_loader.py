"""The in-memory loader: permutations, normalisation, batch augmentation, adaptation."""

import torch

from cnnlab.data import Split
from cnnlab.data.augment import Augment, cutout, draw_epoch, random_crop, random_flip
from cnnlab.data.loader import DeviceLoader
from cnnlab.data.preprocess import Preprocess, adapt_images


def _split(n=10, c=1, size=4):
    images = torch.arange(n * c * size * size, dtype=torch.int64).remainder(256).byte()
    return Split(images.view(n, c, size, size), torch.arange(n), tuple(str(i) for i in range(10)))


def DeviceLoader_(split, batch_size, device, mean=None, std=None, channels_last=False, **kw):  # noqa: N802
    """The loader over a whole split, with a Preprocess of the split's shape."""
    c, h, w = split.shape
    pre = Preprocess(c, (h, w), mean, std, channels_last=channels_last)
    return DeviceLoader(split.images, split.labels, batch_size, device, pre, **kw)


def _draws(n, padding=0, flip=False, cutout_size=0, size=(6, 6), seed=0):
    aug = Augment(crop_padding=padding, flip=flip, cutout=cutout_size)
    return draw_epoch(aug, n, size, torch.Generator().manual_seed(seed), torch.device("cpu"))


def test_epoch_is_a_permutation_and_reproducible():
    loader = DeviceLoader_(_split(10), 3, torch.device("cpu"), shuffle=True, seed=1)
    assert len(loader) == 4
    seen = torch.cat([y for _, y in loader.epoch(0)])
    assert sorted(seen.tolist()) == list(range(10))
    again = torch.cat([y for _, y in loader.epoch(0)])
    other = torch.cat([y for _, y in loader.epoch(1)])
    assert torch.equal(seen, again) and not torch.equal(seen, other)


def test_drop_last_and_sequential_order():
    loader = DeviceLoader_(_split(10), 3, torch.device("cpu"), drop_last=True)
    assert len(loader) == 3 and loader.num_examples == 9
    assert torch.cat([y for _, y in loader.epoch(0)]).tolist() == list(range(9))


def test_normalisation_matches_the_formula():
    split = _split(4, c=3)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.125)
    loader = DeviceLoader_(split, 4, torch.device("cpu"), mean=mean, std=std)
    x, _ = next(iter(loader))
    expected = (split.images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(
        std).view(1, 3, 1, 1)
    torch.testing.assert_close(x, expected, rtol=1e-5, atol=1e-5)


def test_random_crop_gives_shifted_windows():
    x = torch.randint(1, 256, (64, 2, 6, 6), dtype=torch.uint8)
    out = random_crop(x, 2, _draws(64, padding=2).crop)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    shifts = set()
    for i in range(64):
        matches = [(dy, dx) for dy in range(5) for dx in range(5)
                   if torch.equal(out[i], padded[i, :, dy:dy + 6, dx:dx + 6])]
        assert matches, f"crop {i} is not a window of the padded image"
        shifts.add(matches[0])
    assert len(shifts) > 5  # offsets really vary


def test_random_flip_flips_about_half():
    x = torch.randint(0, 256, (200, 1, 3, 5), dtype=torch.uint8)
    out = random_flip(x, _draws(200, flip=True).flip)
    flipped = [torch.equal(out[i], x[i].flip(2)) for i in range(200)]
    kept = [torch.equal(out[i], x[i]) for i in range(200)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 60 < sum(flipped) < 140


def test_augmented_loader_is_reproducible():
    split = _split(16, c=3, size=8)
    loader = DeviceLoader_(split, 8, torch.device("cpu"), shuffle=True,
                          augment=Augment(crop_padding=2, flip=True, cutout=3))
    a = [x for x, _ in loader.epoch(3)]
    b = [x for x, _ in loader.epoch(3)]
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))


def test_adapt_images_resize_and_channels():
    x = torch.full((5, 1, 8, 8), 200, dtype=torch.uint8)
    out = adapt_images(x, 28, 3)
    assert out.shape == (5, 3, 28, 28) and out.dtype == torch.uint8
    assert int(out.min()) == 200 and int(out.max()) == 200  # a flat image stays flat
    grey = adapt_images(torch.full((2, 3, 4, 4), 100, dtype=torch.uint8), None, 1)
    assert grey.shape == (2, 1, 4, 4) and int(grey[0, 0, 0, 0]) == 100


def test_reflect_crop_matches_reflect_padding():
    x = torch.randint(0, 256, (40, 3, 6, 6), dtype=torch.uint8)
    out = random_crop(x, 2, _draws(40, padding=2, seed=1).crop, mode="reflect")
    padded = torch.nn.functional.pad(x.float(), (2, 2, 2, 2), mode="reflect").byte()
    for i in range(40):
        assert any(torch.equal(out[i], padded[i, :, dy:dy + 6, dx:dx + 6])
                   for dy in range(5) for dx in range(5)), i


def test_alternate_flip_shows_each_image_both_ways():
    split = _split(32, c=1, size=4)
    loader = DeviceLoader_(split, 8, torch.device("cpu"), shuffle=True,
                          augment=Augment(flip=True, alternate_flip=True))
    seen = {}
    for epoch in (0, 1):
        order = torch.cat(loader.batch_indices(epoch))
        for x, i in zip(torch.cat([x for x, _ in loader.epoch(epoch)]), order, strict=True):
            orig = split.images[i].float() / 255  # the loader output: mean 0, std 1
            seen.setdefault(int(i), []).append(torch.allclose(x, orig.flip(2)) and
                                               not torch.allclose(x, orig))
    flips = [v for v in seen.values()]
    assert all(len(v) == 2 and v[0] != v[1] for v in flips)  # flipped in exactly one epoch
    assert 6 < sum(v[0] for v in flips) < 26


def test_cutout_zeros_one_square_inside_each_image():
    x = torch.rand(50, 3, 10, 12) + 1  # no zeros of its own
    out = cutout(x, 4, _draws(50, cutout_size=4, size=(10, 12)).cutout)
    corners = set()
    for i in range(50):
        zero = (out[i] == 0).all(0)  # every channel zeroed at the same pixels
        assert int(zero.sum()) == 16 and int((out[i] == 0).sum()) == 48
        rows, cols = zero.nonzero().unbind(1)
        assert int(rows.max() - rows.min()) == 3 and int(cols.max() - cols.min()) == 3
        assert torch.equal(out[i][:, ~zero], x[i][:, ~zero])  # the rest untouched
        corners.add((int(rows.min()), int(cols.min())))
    assert len(corners) > 10  # positions really vary
    assert torch.equal(cutout(x, 0, torch.zeros(50, 2, dtype=torch.long)), x)

def test_cutout_batches_keep_channels_last():
    loader = DeviceLoader_(_split(8, c=3, size=8), 4, torch.device("cpu"), channels_last=True,
                          augment=Augment(cutout=3))
    for x, _ in loader.epoch(0):
        assert x.is_contiguous(memory_format=torch.channels_last)
        assert int((x == 0).all(1).sum()) >= 4 * 9  # a 3x3 square per image (plus true zeros)


def test_an_epoch_draws_its_randomness_once_on_the_device(monkeypatch):
    """Augmentation offsets, coins and corners are drawn once per epoch (no per-batch draws
    and copies); the same (seed, epoch) gives the same draws."""
    import cnnlab.data.loader as loader_mod

    calls = []
    real = loader_mod.draw_epoch
    monkeypatch.setattr(loader_mod, "draw_epoch", lambda *a: calls.append(a) or real(*a))
    loader = DeviceLoader_(_split(16, c=3, size=8), 4, torch.device("cpu"), shuffle=True,
                           augment=Augment(crop_padding=2, flip=True, cutout=3))
    batches = list(loader.epoch(0))
    assert len(batches) == 4 and len(calls) == 1
    a = draw_epoch(loader.augment, 16, (8, 8), loader_mod.epoch_generator(0, 0, loader.device),
                   loader.device)
    b = draw_epoch(loader.augment, 16, (8, 8), loader_mod.epoch_generator(0, 0, loader.device),
                   loader.device)
    assert torch.equal(a.crop, b.crop) and torch.equal(a.flip, b.flip)
    assert a.crop.shape == (16, 2) and int(a.crop.max()) <= 4
    assert int(a.cutout.max()) <= 8 - 3
