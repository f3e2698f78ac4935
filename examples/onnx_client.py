"""Classify image files with an exported model, without cnnlab or PyTorch.

    pip install onnxruntime pillow numpy
    python onnx_client.py model.onnx photo.jpg drawing.png ...

Everything the client needs is in ``model.onnx.json`` beside the model (written by
``cnnlab export RUN``; without it, the same facts are read from the file's metadata): the
class names, the input size and channels, mean/std, whether
the graph normalises itself (``--with-preprocess``), and whether the model was trained on
light strokes on black. The steps below are the ones its ``preprocess.how`` spells out, so
the answers agree with ``cnnlab predict`` (tests/test_export.py checks it on pictures of
every mode).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

LUMA = np.array([0.299, 0.587, 0.114])


def as_seen(im: Image.Image) -> Image.Image:
    """Upright, 8-bit, transparency on paper that contrasts with the drawing."""
    im = ImageOps.exif_transpose(im) or im
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grey: the top 8 bits
        wide = np.asarray(im).astype(np.int64)
        top = 65535 if im.mode != "I" or wide.max() > 255 else 255
        return Image.fromarray((wide * 255 // top).astype(np.uint8))
    if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        px = np.asarray(rgba)
        opaque = px[..., 3] > 127
        light = opaque.any() and not opaque.all() and (px[..., :3][opaque] @ LUMA).mean() > 127.5
        paper = Image.new("RGBA", rgba.size, (0, 0, 0, 255) if light else (255, 255, 255, 255))
        im = Image.alpha_composite(paper, rgba)
    return im


def model_input(path: Path, side: dict) -> np.ndarray:
    """One file -> the (1, C, H, W) array the graph takes."""
    pre = side["preprocess"]
    channels, (h, w) = pre["channels"], pre["size"]
    with Image.open(path) as im:
        im = as_seen(im).convert("L" if channels == 1 else "RGB")
        im = im.resize((w, h), Image.BILINEAR)  # antialiased when it shrinks
        x = np.asarray(im, dtype=np.float32).reshape(h, w, channels).transpose(2, 0, 1)
    if pre.get("light_on_dark"):
        border = np.concatenate([x.mean(0)[0], x.mean(0)[-1], x.mean(0)[:, 0], x.mean(0)[:, -1]])
        if border.mean() > 127.5:  # dark strokes on light paper: invert
            x = 255 - x
    x = np.round(x)
    if side["input"]["with_preprocess"]:
        return x.astype(np.uint8)[None]
    x = x / 255  # a run trained without normalisation (mean null) takes x/255 as it is
    if pre["mean"] is not None:
        mean = np.array(pre["mean"], np.float32)[:, None, None]
        std = np.array(pre["std"], np.float32)[:, None, None]
        x = (x - mean) / std
    return x.astype(np.float32)[None]


def side_info(model: str, session: ort.InferenceSession) -> dict:
    """The sidecar ``MODEL.json``; without it, the same facts from inside the file."""
    sidecar = Path(model + ".json")
    if sidecar.is_file():
        return json.loads(sidecar.read_text())
    meta = session.get_modelmeta().custom_metadata_map
    if "cnnlab.classes" not in meta:
        sys.exit(f"{model} has no {sidecar.name} beside it and no cnnlab metadata inside; "
                 "export it with `cnnlab export RUN`")
    return {"classes": json.loads(meta["cnnlab.classes"]),
            "preprocess": json.loads(meta["cnnlab.preprocess"]),
            "input": {"with_preprocess": meta["cnnlab.input"].startswith("uint8")}}


def main(model: str, files: list[str]) -> int:
    """One JSON line per file, as `cnnlab predict --json` writes them; 1 if any failed."""
    if not Path(model).is_file():
        sys.exit(f"{model} does not exist; give the .onnx file `cnnlab export RUN` wrote")
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    side = side_info(model, session)
    if side["preprocess"].get("kind") == "series":
        sys.exit(f"{model} is a time-series model; this client reads images")
    failed = 0
    for f in files:
        try:
            x = model_input(Path(f), side)
        except (OSError, ValueError) as e:  # missing, a folder, not an image, truncated
            failed = 1
            print(json.dumps({"file": f, "error": f"cannot read it as an image ({e})"}))
            continue
        logits = session.run(["logits"], {"images": x})[0][0]
        p = np.exp(logits - logits.max())
        p /= p.sum()
        best = int(p.argmax())
        print(json.dumps({"file": f, "class": side["classes"][best],
                          "probability": round(float(p[best]), 6)}))
    return failed


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: python onnx_client.py MODEL.onnx IMAGE [IMAGE ...]")
    sys.exit(main(sys.argv[1], sys.argv[2:]))
