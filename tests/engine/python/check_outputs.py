"""Checks files the C++ engine wrote, using only public formats.

usage:
  check_outputs.py safetensors ST_FILE EXPECTED.pt
      ST_FILE must hold exactly the tensors of torch.load(EXPECTED.pt) (a
      dict), bit for bit, same dtypes and shapes.
  check_outputs.py torchscript MODEL.pt ORIGINAL.pt DATA.pt
      The fine-tuned TorchScript module loads and fits DATA (x, y) with a
      lower MSE than the original module.
Exits 0 when the check passes; prints why otherwise.
"""
import sys

import torch

import safetensors_io


def check_safetensors(path, expected_path):
    got, meta = safetensors_io.read(path)
    want = torch.load(expected_path)
    if list(got) != list(want):
        print("names differ:", list(got), list(want))
        return 1
    for k, w in want.items():
        g = got[k]
        if g.dtype != w.dtype or list(g.shape) != list(w.shape):
            print(k, "dtype/shape", g.dtype, w.dtype, g.shape, w.shape)
            return 1
        if not torch.equal(g, w):
            print(k, "values differ")
            return 1
    if meta.get("producer") != "halftime-test":
        print("metadata", meta)
        return 1
    return 0


def check_torchscript(model_path, original_path, data_path):
    x, y = torch.load(data_path)
    tuned = torch.jit.load(model_path)
    orig = torch.jit.load(original_path)
    with torch.no_grad():
        before = torch.nn.functional.mse_loss(orig(x), y).item()
        after = torch.nn.functional.mse_loss(tuned(x), y).item()
    print("mse before", before, "after", after)
    return 0 if after < 0.5 * before else 1


if __name__ == "__main__":
    if sys.argv[1] == "safetensors":
        sys.exit(check_safetensors(sys.argv[2], sys.argv[3]))
    sys.exit(check_torchscript(sys.argv[2], sys.argv[3], sys.argv[4]))
