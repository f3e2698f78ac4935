"""`--data-memory stream`: the training split memory-mapped from the cache and gathered batch
by batch on the host gives exactly the batches, losses and weights of the in-memory path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cnnlab.config import build_config
from cnnlab.data.augment import Augment
from cnnlab.data.cache import read_cached, write_cached
from cnnlab.data.loader import DeviceLoader, HostLoader
from cnnlab.data.preprocess import Preprocess
from cnnlab.engine.train import fit


def _in_a_mapping_of(address: int, path) -> bool:
    maps = Path("/proc/self/maps")
    if not maps.exists():
        pytest.skip("needs /proc/self/maps (Linux)")
    for line in maps.read_text().splitlines():
        if line.endswith(str(path)):
            lo, hi = (int(v, 16) for v in line.split()[0].split("-"))
            if lo <= address < hi:
                return True
    return False


def test_the_cache_maps_instead_of_reading(tmp_path):
    images = torch.randint(0, 256, (50, 3, 9, 7), dtype=torch.uint8)
    labels = torch.arange(50) % 4
    write_cached(tmp_path / "c.safetensors", images, labels, ("a", "b", "c", "d"))
    mapped, lab, classes = read_cached(tmp_path / "c.safetensors", mmap=True)
    assert _in_a_mapping_of(mapped.data_ptr(), tmp_path / "c.safetensors")  # not a copy
    assert torch.equal(mapped, images) and torch.equal(lab, labels) and classes == tuple("abcd")
    mapped[0] = 0  # copy-on-write: the tensor is writable, the file never changes
    assert torch.equal(read_cached(tmp_path / "c.safetensors")[0], images)
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\0\0\0\0\0\0\0{not json}")
    assert read_cached(tmp_path / "bad.safetensors", mmap=True) is None


def test_host_batches_equal_device_batches(tmp_path):
    images = torch.randint(0, 256, (203, 1, 12, 12), dtype=torch.uint8)
    labels = torch.randint(0, 10, (203,))
    write_cached(tmp_path / "s.safetensors", images, labels, tuple("0123456789"))
    mapped, _, _ = read_cached(tmp_path / "s.safetensors", mmap=True)
    pre = Preprocess.from_train(images)
    aug = Augment(crop_padding=2, flip=True, cutout=3)
    kw = {"shuffle": True, "augment": aug, "seed": 3}
    cpu = torch.device("cpu")
    dev = DeviceLoader(images, labels, 32, cpu, pre, **kw)
    host = HostLoader(mapped, labels, 32, cpu, pre, **kw)
    assert len(dev) == len(host) == 7
    for epoch in range(2):
        pairs = list(zip(dev.epoch(epoch), host.epoch(epoch), strict=True))
        for (xd, yd), (xh, yh) in pairs:
            assert torch.equal(xd, xh) and torch.equal(yd, yh)
    first = next(iter(host.epoch(0)))  # stopping early leaves no thread behind
    assert first[0].shape == (32, 1, 12, 12)


@pytest.mark.parametrize("model", ["lenet5", "airbench"])
def test_stream_mode_trains_exactly_like_the_in_memory_path(model, tmp_path):
    shape = {"lenet5": {"resize": 28}, "airbench": {"resize": 32, "channels": 3}}[model]
    base = {"model": model, "dataset": "digits", "epochs": 2, "batch_size": 64,
            "limit_train": 320, "limit_test": 100, "crop_padding": 2, "log_every": 1,
            "device": "cpu", **shape}
    results = {}
    for mode in ("all", "stream"):
        losses: list[float] = []
        cfg = build_config(None, {**base, "data_memory": mode, "out": str(tmp_path / mode)})
        out = fit(cfg, log=lambda _m: None,
                  progress=lambda _s, _n, loss, seen=losses: seen.append(loss))
        results[mode] = (losses, out.model.state_dict(), out.history[-1].test_acc)
    (la, wa, aa), (ls, ws, as_) = results["all"], results["stream"]
    assert len(la) == 10 and la == ls  # every step's loss, bit for bit
    assert all(torch.equal(wa[k], ws[k]) for k in wa) and aa == as_


def test_auto_streams_only_what_does_not_fit(monkeypatch):
    from cnnlab.engine import build

    size = 1000 * 28 * 28  # bytes: 784 kB
    monkeypatch.setattr(build, "free_memory", lambda _d: 10**9)
    assert not build.streams("auto", size, torch.device("cpu"))
    monkeypatch.setattr(build, "free_memory", lambda _d: 10**6)
    assert build.streams("auto", size, torch.device("cpu"))
    assert build.streams("stream", size, torch.device("cpu"))
    assert not build.streams("all", size, torch.device("cpu"))


def test_a_streamed_split_stays_mapped_when_resized_or_recoloured(tmp_path):
    """--channels/--resize on a streamed split: the adapted copy goes to a mapped scratch
    file (unlinked), not into memory, and holds what adapt_images gives."""
    from cnnlab.data.preprocess import adapt_images, adapt_mapped

    images = torch.randint(0, 256, (5000, 3, 12, 12), dtype=torch.uint8)
    assert adapt_mapped(images, None, 3, tmp_path) is images  # nothing to adapt
    grey = adapt_mapped(images, 8, 1, tmp_path)
    assert torch.equal(grey, adapt_images(images, 8, 1)) and grey.shape == (5000, 1, 8, 8)
    maps = Path("/proc/self/maps")
    if maps.exists():
        assert any(str(tmp_path) in line and "(deleted)" in line
                   for line in maps.read_text().splitlines())
    assert not any(tmp_path.iterdir())  # nothing left on disk


def test_a_garbage_mapped_header_is_ignored(tmp_path):
    path = tmp_path / "g.safetensors"
    write_cached(path, torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.zeros(4), ("a", "b"))
    data = bytearray(path.read_bytes())
    data[:8] = b"\xff\xff\xff\xff\xff\xff\xff\x7f"
    path.write_bytes(bytes(data))
    assert read_cached(path, mmap=True) is None and read_cached(path) is None
