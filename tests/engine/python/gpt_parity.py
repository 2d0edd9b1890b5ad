"""Trains the engine's GPT in PyTorch from the same weights and batches.

usage: gpt_parity.py WEIGHTS.safetensors DATA.pt OUT.txt
       --precision fp32|bf16-mixed|fp16-mixed --device cpu|cuda
       --steps N --batch B --lr LR --n-layer L --n-embd C --n-head H
       --eval-fraction F
Writes one training loss per line. The model mirrors engine/model.cc
op for op (pre-LN, fp32 LayerNorm and loss, softmax with fp32
accumulation, tied embeddings); training
mirrors the engine: batches walk the training split in order (shuffle off),
torch.optim.AdamW(foreach=False) with weight decay on >=2-D tensors,
clip_grad_norm_(1.0), zero_grad(set_to_none=True).
"""
import argparse
import functools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import safetensors_io


def ln32(x, ln):
    return F.layer_norm(x.float(), (x.size(-1),), ln.weight.float(),
                        ln.bias.float(), 1e-5).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, c, h):
        super().__init__()
        self.n_head = h
        self.c_attn = nn.Linear(c, 3 * c)
        self.c_proj = nn.Linear(c, c)

    def heads(self, x):
        """q, k, v of `x` [B, T, C], each [B, heads, T, C / heads]."""
        B, T, C = x.shape
        D = C // self.n_head
        return [t.view(B, T, self.n_head, D).transpose(1, 2)
                for t in self.c_attn(x).split(C, dim=2)]

    def forward(self, x):
        B, T, C = x.shape
        D = C // self.n_head
        q, k, v = self.heads(x)
        att = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(D))
        mask = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
        att = torch.softmax(att.masked_fill(mask, float("-inf")), -1)
        y = torch.matmul(att, v).transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class Mlp(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c_fc = nn.Linear(c, 4 * c)
        self.c_proj = nn.Linear(4 * c, c)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, c, h):
        super().__init__()
        self.ln_1 = nn.LayerNorm(c)
        self.attn = Attention(c, h)
        self.ln_2 = nn.LayerNorm(c)
        self.mlp = Mlp(c)

    def forward(self, x):
        x = x + self.attn(ln32(x, self.ln_1))
        return x + self.mlp(ln32(x, self.ln_2))


class Gpt(nn.Module):
    def __init__(self, vocab, block, c, h, layers):
        super().__init__()
        self.wte = nn.Embedding(vocab, c)
        self.wpe = nn.Embedding(block, c)
        self.h = nn.ModuleList([Block(c, h) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(c)

    def forward(self, idx, targets):
        T = idx.size(1)
        x = self.wte(idx) + self.wpe(torch.arange(T, dtype=torch.long, device=idx.device))
        for b in self.h:
            x = b(x)
        logits = F.linear(ln32(x, self.ln_f), self.wte.weight)
        logits = logits.float()
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)),
                               targets.reshape(-1))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("weights")
    p.add_argument("data")
    p.add_argument("out")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--n-layer", type=int, default=2)
    p.add_argument("--n-embd", type=int, default=64)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--eval-fraction", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    # GradScaler's init_scale and growth_interval (fp16-mixed), and a file
    # for the scale each step ran at (GradScaler.get_scale() before update).
    p.add_argument("--init-scale", type=float, default=2.0 ** 16)
    p.add_argument("--growth-interval", type=int, default=2000)
    p.add_argument("--scales", default="")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    weights, _ = safetensors_io.read(a.weights)
    vocab, c = weights["wte.weight"].shape
    block = weights["wpe.weight"].shape[0]
    model = Gpt(vocab, block, a.n_embd, a.n_head, a.n_layer)
    missing = set(dict(model.named_parameters())) ^ set(weights)
    assert not missing, missing
    model.load_state_dict(weights, strict=True)
    model.to(a.device)
    if a.device == "cuda":
        # The engine's fp32 is IEEE fp32 on CUDA too (tf32 is its own mode).
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    data = torch.load(a.data)
    x, y = data["inputs"], data["targets"]
    n_eval = max(1, round(x.size(0) * a.eval_fraction)) if a.eval_fraction > 0 else 0
    n_train = x.size(0) - n_eval
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.999), eps=1e-8,
                            foreach=False)
    # fp16-mixed (CUDA) is torch.autocast plus GradScaler's defaults, which
    # the engine's dynamic scaler reproduces.
    autocast = {"bf16-mixed": torch.bfloat16, "fp16-mixed": torch.float16}.get(a.precision)
    # torch.amp.GradScaler from PyTorch 2.3 (torch.cuda.amp's is deprecated).
    make_scaler = (functools.partial(torch.amp.GradScaler, "cuda")
                   if hasattr(torch.amp, "GradScaler") else torch.cuda.amp.GradScaler)
    scaler = make_scaler(init_scale=a.init_scale,
                         growth_interval=a.growth_interval,
                         enabled=a.precision == "fp16-mixed")
    scales = []
    losses = []
    for step in range(a.steps):
        rows = [(step * a.batch + r) % n_train for r in range(a.batch)]
        xb, yb = x[rows].to(a.device), y[rows].to(a.device)
        if autocast is not None:
            with torch.autocast(a.device, dtype=autocast):
                loss = model(xb, yb)
        else:
            loss = model(xb, yb)
        scales.append(scaler.get_scale() if scaler.is_enabled() else 1.0)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    with open(a.out, "w") as f:
        f.write("\n".join(repr(l) for l in losses) + "\n")
    if a.scales:
        with open(a.scales, "w") as f:
            f.write("\n".join(repr(s) for s in scales) + "\n")


if __name__ == "__main__":
    main()
