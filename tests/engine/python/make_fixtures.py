"""Writes the Python-made fixtures the C++ tests read.

usage: make_fixtures.py OUT_DIR
  tokens.pt       torch.save({'inputs','targets'}) int64 [200, 32] token windows
  regression.pt   torch.save((x, y)) float [256, 8] -> [256, 1]
  classes.pt      torch.save({'x','y'}) float [240, 6] -> int64 classes
  bad_dtype.pt    torch.save({'inputs': bool, 'targets': int64})
  mismatch.pt     torch.save({'inputs': [10, 4], 'targets': [9]})
  model.pt        torch.jit.script of a small regression MLP
  py.safetensors  tensors written with safetensors_io from the layout
"""
import os
import sys

import torch
import torch.nn as nn

import safetensors_io


class Regressor(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 32)
        self.fc2 = nn.Linear(32, 1)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


def main():
    out = sys.argv[1]
    g = torch.Generator().manual_seed(1234)
    # A learnable token stream: a noisy affine bigram rule over 64 tokens.
    n, T = 200, 32
    stream = torch.zeros(n * T + 1, dtype=torch.long)
    for i in range(1, stream.numel()):
        stream[i] = (stream[i - 1] * 5 + 1) % 64
    noise = torch.randint(0, 64, stream.shape, generator=g)
    stream = torch.where(torch.rand(stream.shape, generator=g) < 0.2, noise, stream)
    x = torch.stack([stream[i * T:(i + 1) * T] for i in range(n)])
    y = torch.stack([stream[i * T + 1:(i + 1) * T + 1] for i in range(n)])
    torch.save({"inputs": x, "targets": y}, os.path.join(out, "tokens.pt"))

    xr = torch.randn(256, 8, generator=g)
    w = torch.randn(8, 1, generator=g)
    torch.save((xr, xr @ w + 0.5), os.path.join(out, "regression.pt"))

    xc = torch.randn(240, 6, generator=g)
    yc = (xc[:, 0] > 0).long() + 2 * (xc[:, 1] > 0).long()
    torch.save({"x": xc, "y": yc}, os.path.join(out, "classes.pt"))

    torch.save({"inputs": torch.zeros(10, 4, dtype=torch.bool),
                "targets": torch.zeros(10, dtype=torch.long)},
               os.path.join(out, "bad_dtype.pt"))
    torch.save({"inputs": torch.zeros(10, 4), "targets": torch.zeros(9)},
               os.path.join(out, "mismatch.pt"))

    torch.manual_seed(0)
    torch.jit.script(Regressor()).save(os.path.join(out, "model.pt"))

    safetensors_io.write(os.path.join(out, "py.safetensors"), {
        "a.f32": torch.arange(12, dtype=torch.float32).reshape(3, 4) / 4,
        "b.bf16": torch.arange(6, dtype=torch.float32).to(torch.bfloat16) - 2.5,
        "c.i64": torch.arange(5, dtype=torch.int64) * -3,
        "d.f16": torch.tensor([[0.5, -1.25]], dtype=torch.float16),
    }, {"producer": "python"})


if __name__ == "__main__":
    main()
