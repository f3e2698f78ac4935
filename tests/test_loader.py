"""The in-memory loader: permutations, normalisation, batch augmentation, adaptation."""

import torch

from cnnlab.data.augment import cutout, random_crop, random_flip
from cnnlab.data.load import Split
from cnnlab.data.loader import Augment, DeviceLoader, adapt_images


def _split(n=10, c=1, size=4):
    images = torch.arange(n * c * size * size, dtype=torch.int64).remainder(256).byte()
    return Split(images.view(n, c, size, size), torch.arange(n), tuple(str(i) for i in range(10)))


def test_epoch_is_a_permutation_and_reproducible():
    loader = DeviceLoader(_split(10), 3, torch.device("cpu"), shuffle=True, seed=1)
    assert len(loader) == 4
    seen = torch.cat([y for _, y in loader.epoch(0)])
    assert sorted(seen.tolist()) == list(range(10))
    again = torch.cat([y for _, y in loader.epoch(0)])
    other = torch.cat([y for _, y in loader.epoch(1)])
    assert torch.equal(seen, again) and not torch.equal(seen, other)


def test_drop_last_and_sequential_order():
    loader = DeviceLoader(_split(10), 3, torch.device("cpu"), drop_last=True)
    assert len(loader) == 3 and loader.num_examples == 9
    assert torch.cat([y for _, y in loader.epoch(0)]).tolist() == list(range(9))


def test_normalisation_matches_the_formula():
    split = _split(4, c=3)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.125)
    loader = DeviceLoader(split, 4, torch.device("cpu"), mean=mean, std=std)
    x, _ = next(iter(loader))
    expected = (split.images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(
        std).view(1, 3, 1, 1)
    torch.testing.assert_close(x, expected, rtol=1e-5, atol=1e-5)


def test_random_crop_gives_shifted_windows():
    x = torch.randint(1, 256, (64, 2, 6, 6), dtype=torch.uint8)
    out = random_crop(x, 2, torch.Generator().manual_seed(0))
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
    out = random_flip(x, torch.Generator().manual_seed(0))
    flipped = [torch.equal(out[i], x[i].flip(2)) for i in range(200)]
    kept = [torch.equal(out[i], x[i]) for i in range(200)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 60 < sum(flipped) < 140


def test_augmented_loader_is_reproducible():
    split = _split(16, c=3, size=8)
    loader = DeviceLoader(split, 8, torch.device("cpu"), shuffle=True,
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
    out = random_crop(x, 2, torch.Generator().manual_seed(1), mode="reflect")
    padded = torch.nn.functional.pad(x.float(), (2, 2, 2, 2), mode="reflect").byte()
    for i in range(40):
        assert any(torch.equal(out[i], padded[i, :, dy:dy + 6, dx:dx + 6])
                   for dy in range(5) for dx in range(5)), i


def test_alternate_flip_shows_each_image_both_ways():
    split = _split(32, c=1, size=4)
    loader = DeviceLoader(split, 8, torch.device("cpu"), shuffle=True,
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
    out = cutout(x, 4, torch.Generator().manual_seed(0))
    corners = set()
    for i in range(50):
        zero = (out[i] == 0).all(0)  # every channel zeroed at the same pixels
        assert int(zero.sum()) == 16 and int((out[i] == 0).sum()) == 48
        rows, cols = zero.nonzero().unbind(1)
        assert int(rows.max() - rows.min()) == 3 and int(cols.max() - cols.min()) == 3
        assert torch.equal(out[i][:, ~zero], x[i][:, ~zero])  # the rest untouched
        corners.add((int(rows.min()), int(cols.min())))
    assert len(corners) > 10  # positions really vary
    assert torch.equal(cutout(x, 0, None), x)

def test_cutout_batches_keep_channels_last():
    loader = DeviceLoader(_split(8, c=3, size=8), 4, torch.device("cpu"), channels_last=True,
                          augment=Augment(cutout=3))
    for x, _ in loader.epoch(0):
        assert x.is_contiguous(memory_format=torch.channels_last)
        assert int((x == 0).all(1).sum()) >= 4 * 9  # a 3x3 square per image (plus true zeros)
