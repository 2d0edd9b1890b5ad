"""A Llama-architecture model in plain PyTorch, for bench_engine's (f):
writes a random Hugging Face folder of a given shape, and times PyTorch's
own training steps of the same model in its fastest arrangement here.

usage: /usr/bin/python3 bench/engine/pytorch_llama.py make DIR [shape flags]
       /usr/bin/python3 bench/engine/pytorch_llama.py time [shape flags]
           [--threads 2] [--steps 4] [--warmup 2] [--batch 8] [--seq 256]
           [--mode fp32|bf16-mixed] [--foreach auto|on|off]
shape flags: --hidden 512 --layers 7 --heads 8 --kv-heads 4
             --intermediate 1408 --vocab 8192

The model is transformers' LlamaForCausalLM written with nn.Linear and
eager attention (torch 1.13 has no fused CPU attention): RMSNorm in fp32,
rotate-half RoPE, grouped-query attention, SwiGLU, tied embeddings. `time`
trains it with torch.optim.AdamW (the faster of foreach on/off, timed) and
clip_grad_norm_, in fp32 or under torch.autocast("cpu", bfloat16), on
random tokens, and prints {"step_seconds": median after warm-up} as JSON.
"""
import argparse
import json
import math
import os
import struct
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pytorch_timing import median_step  # noqa: E402


def config(a):
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": a.vocab, "hidden_size": a.hidden,
        "intermediate_size": a.intermediate, "num_hidden_layers": a.layers,
        "num_attention_heads": a.heads, "num_key_value_heads": a.kv_heads,
        "max_position_embeddings": 2048, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "hidden_act": "silu", "attention_bias": False,
        "tie_word_embeddings": True, "torch_dtype": "float32",
    }


class RmsNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def rotate_half(x):
    h = x.size(-1) // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["hidden_size"] // c["num_attention_heads"]
        self.h, self.kv, self.d = c["num_attention_heads"], c["num_key_value_heads"], d
        self.input_layernorm = RmsNorm(c["hidden_size"], c["rms_norm_eps"])
        self.q_proj = nn.Linear(c["hidden_size"], self.h * d, bias=False)
        self.k_proj = nn.Linear(c["hidden_size"], self.kv * d, bias=False)
        self.v_proj = nn.Linear(c["hidden_size"], self.kv * d, bias=False)
        self.o_proj = nn.Linear(self.h * d, c["hidden_size"], bias=False)
        self.post_attention_layernorm = RmsNorm(c["hidden_size"], c["rms_norm_eps"])
        self.gate_proj = nn.Linear(c["hidden_size"], c["intermediate_size"], bias=False)
        self.up_proj = nn.Linear(c["hidden_size"], c["intermediate_size"], bias=False)
        self.down_proj = nn.Linear(c["intermediate_size"], c["hidden_size"], bias=False)

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        a = self.input_layernorm(x)
        q = self.q_proj(a).view(B, T, self.h, self.d).transpose(1, 2)
        k = self.k_proj(a).view(B, T, self.kv, self.d).transpose(1, 2)
        v = self.v_proj(a).view(B, T, self.kv, self.d).transpose(1, 2)
        cos, sin = cos.to(q.dtype), sin.to(q.dtype)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(self.h // self.kv, dim=1)
        v = v.repeat_interleave(self.h // self.kv, dim=1)
        att = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(self.d) + mask
        att = torch.softmax(att, dim=-1, dtype=torch.float32).to(q.dtype)
        y = torch.matmul(att, v).transpose(1, 2).reshape(B, T, self.h * self.d)
        x = x + self.o_proj(y)
        m = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(m)) * self.up_proj(m))


class Llama(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList(Layer(c) for _ in range(c["num_hidden_layers"]))
        self.norm = RmsNorm(c["hidden_size"], c["rms_norm_eps"])
        d = c["hidden_size"] // c["num_attention_heads"]
        self.inv_freq = 1.0 / (c["rope_theta"] ** (torch.arange(0, d, 2).float() / d))

    def forward(self, idx, targets):
        T = idx.size(1)
        freqs = torch.arange(T).float()[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        mask = torch.full((T, T), float("-inf")).triu(1)
        x = self.embed_tokens(idx)
        for layer in self.layers:
            x = layer(x, emb.cos(), emb.sin(), mask)
        logits = F.linear(self.norm(x), self.embed_tokens.weight)
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1))

    def hf_tensors(self):
        out = {"model.embed_tokens.weight": self.embed_tokens.weight,
               "model.norm.weight": self.norm.weight}
        for i, l in enumerate(self.layers):
            p = f"model.layers.{i}."
            out[p + "input_layernorm.weight"] = l.input_layernorm.weight
            out[p + "post_attention_layernorm.weight"] = l.post_attention_layernorm.weight
            for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
                out[p + f"self_attn.{name}.weight"] = getattr(l, name).weight
            for name in ("gate_proj", "up_proj", "down_proj"):
                out[p + f"mlp.{name}.weight"] = getattr(l, name).weight
        return out


def make(a):
    torch.manual_seed(0)
    c = config(a)
    model = Llama(c)
    with torch.no_grad():
        for name, t in model.hf_tensors().items():
            if not name.endswith("norm.weight"):
                t.normal_(0.0, 0.02)
    os.makedirs(a.dir, exist_ok=True)
    with open(os.path.join(a.dir, "config.json"), "w") as f:
        json.dump(c, f, indent=2)
    header, blobs, offset = {}, [], 0
    for name, t in model.hf_tensors().items():
        data = t.detach().contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(os.path.join(a.dir, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for b in blobs:
            f.write(b)
    n = sum(t.numel() for t in model.hf_tensors().values())
    print(json.dumps({"parameters": n}))


def timed(a):
    torch.set_num_threads(a.threads)
    bf16 = a.mode == "bf16-mixed"
    seconds, foreach = median_step(lambda: Llama(config(a)), a, bf16, short=2)
    print(json.dumps({"mode": a.mode, "step_seconds": seconds,
                      "adamw_foreach": foreach, "torch": torch.__version__}))


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cmd", choices=["make", "time"])
    p.add_argument("dir", nargs="?")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=7)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=1408)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--mode", choices=["fp32", "bf16-mixed"], default="fp32")
    p.add_argument("--foreach", choices=["auto", "on", "off"], default="auto")
    a = p.parse_args()
    if a.cmd == "make":
        if not a.dir:
            sys.exit("make needs DIR")
        make(a)
    else:
        timed(a)


if __name__ == "__main__":
    main()
