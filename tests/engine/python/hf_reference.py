"""Tiny Hugging Face model folders and a plain-PyTorch reference that trains them.

usage: hf_reference.py make FOLDER --arch ARCH [--dtype float32|bfloat16|float16]
                            [--shards N] [--tied] [--rope default|linear|llama3]
                            [--seed S]
       hf_reference.py train FOLDER DATA.pt OUT.txt --precision fp32|bf16-mixed
                            --steps N --batch B --lr LR --eval-fraction F
       hf_reference.py lora FOLDER DATA.pt ADAPTERS.safetensors OUT.txt
                            --rank R --alpha A [--steps N ...]
       hf_reference.py greedy FOLDER OUT.txt --prompt IDS [--new N]

`make` writes what `save_pretrained` writes for a randomly initialised model:
config.json and model.safetensors, or model-0000i-of-0000N.safetensors plus
model.safetensors.index.json when sharded. ARCH is llama, mistral, qwen2,
qwen3 or gpt2; the tensor names and layouts are Hugging Face's (GPT-2's
Conv1D weights are [in, out]).

`train` rebuilds the model from the folder in plain PyTorch, following the
published modelling code of transformers (modeling_llama / qwen2 / qwen3 /
gpt2): RMSNorm computed in fp32 and cast back before the weight multiply,
rotate_half RoPE with fp32 frequencies, repeated k/v heads for GQA, softmax
in fp32, SwiGLU; GPT-2 with tanh GELU and tied head. Training mirrors the
engine: batches walk the training split in order, AdamW(foreach=False) with
weight decay 0.01 on >=2-D tensors, clip_grad_norm_(1.0). Writes one loss per
line. No transformers package is needed or used.

`lora` trains LoRA adapters (y += alpha/r * B A x, as PEFT's Linear
computes it) on the frozen fp32 base, starting from the adapters the engine
drew, with the same batches, optimizer and clipping over the adapters only.
"""
import argparse
import json
import math
import os

import torch
import torch.nn.functional as F

import safetensors_io

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16,
          "float16": torch.float16}


# ---------------------------------------------------------------- folders

def llama_config(arch, rope):
    cfg = {
        "architectures": [{"llama": "LlamaForCausalLM",
                           "mistral": "MistralForCausalLM",
                           "qwen2": "Qwen2ForCausalLM",
                           "qwen3": "Qwen3ForCausalLM"}[arch]],
        "model_type": arch,
        "vocab_size": 96, "hidden_size": 64, "intermediate_size": 112,
        "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 64,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu",
        "attention_bias": False, "tie_word_embeddings": False,
        "bos_token_id": 1, "eos_token_id": 2,
    }
    if arch == "qwen3":
        cfg["head_dim"] = 32  # != hidden_size / heads, as in Qwen3
        cfg["rope_theta"] = 1000000.0
    if arch == "mistral":
        cfg["sliding_window"] = None
    if arch in ("qwen2", "qwen3"):
        cfg["use_sliding_window"] = False
        cfg["sliding_window"] = 4096
    if rope == "linear":
        cfg["rope_scaling"] = {"type": "linear", "factor": 2.0}
    elif rope == "llama3":
        cfg["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0,
                               "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                               "original_max_position_embeddings": 16}
    return cfg


def llama_tensors(cfg, arch, g):
    c, v = cfg["hidden_size"], cfg["vocab_size"]
    h, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    d = cfg.get("head_dim", c // h)
    m = cfg["intermediate_size"]

    def w(*shape):
        return torch.randn(*shape, generator=g) * 0.08

    def norm(n):
        return 1.0 + 0.1 * torch.randn(n, generator=g)

    t = {"model.embed_tokens.weight": w(v, c)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = norm(c)
        t[p + "self_attn.q_proj.weight"] = w(h * d, c)
        t[p + "self_attn.k_proj.weight"] = w(kv * d, c)
        t[p + "self_attn.v_proj.weight"] = w(kv * d, c)
        if arch == "qwen2":
            t[p + "self_attn.q_proj.bias"] = w(h * d)
            t[p + "self_attn.k_proj.bias"] = w(kv * d)
            t[p + "self_attn.v_proj.bias"] = w(kv * d)
        if arch == "qwen3":
            t[p + "self_attn.q_norm.weight"] = norm(d)
            t[p + "self_attn.k_norm.weight"] = norm(d)
        t[p + "self_attn.o_proj.weight"] = w(c, h * d)
        t[p + "post_attention_layernorm.weight"] = norm(c)
        t[p + "mlp.gate_proj.weight"] = w(m, c)
        t[p + "mlp.up_proj.weight"] = w(m, c)
        t[p + "mlp.down_proj.weight"] = w(c, m)
    t["model.norm.weight"] = norm(c)
    if not cfg["tie_word_embeddings"]:
        t["lm_head.weight"] = w(v, c)
    return t


def gpt2_config():
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
            "vocab_size": 96, "n_positions": 64, "n_embd": 64, "n_layer": 2,
            "n_head": 4, "n_inner": None, "activation_function": "gelu_new",
            "layer_norm_epsilon": 1e-5, "tie_word_embeddings": True}


def gpt2_tensors(cfg, g):
    c, v = cfg["n_embd"], cfg["vocab_size"]

    def w(*shape):
        return torch.randn(*shape, generator=g) * 0.08

    t = {"wte.weight": w(v, c), "wpe.weight": w(cfg["n_positions"], c)}
    for i in range(cfg["n_layer"]):
        p = f"h.{i}."
        t[p + "ln_1.weight"] = 1.0 + 0.1 * torch.randn(c, generator=g)
        t[p + "ln_1.bias"] = w(c)
        t[p + "attn.c_attn.weight"] = w(c, 3 * c)  # Conv1D: [in, out]
        t[p + "attn.c_attn.bias"] = w(3 * c)
        t[p + "attn.c_proj.weight"] = w(c, c)
        t[p + "attn.c_proj.bias"] = w(c)
        # The causal-mask buffer old GPT-2 checkpoints carry.
        n = cfg["n_positions"]
        t[p + "attn.bias"] = torch.tril(torch.ones(n, n)).view(1, 1, n, n)
        t[p + "ln_2.weight"] = 1.0 + 0.1 * torch.randn(c, generator=g)
        t[p + "ln_2.bias"] = w(c)
        t[p + "mlp.c_fc.weight"] = w(c, 4 * c)
        t[p + "mlp.c_fc.bias"] = w(4 * c)
        t[p + "mlp.c_proj.weight"] = w(4 * c, c)
        t[p + "mlp.c_proj.bias"] = w(c)
    t["ln_f.weight"] = 1.0 + 0.1 * torch.randn(c, generator=g)
    t["ln_f.bias"] = w(c)
    return t


def make(a):
    g = torch.Generator().manual_seed(a.seed)
    if a.arch == "gpt2":
        cfg = gpt2_config()
        tensors = gpt2_tensors(cfg, g)
    else:
        cfg = llama_config(a.arch, a.rope)
        cfg["tie_word_embeddings"] = a.tied
        if a.vocab:
            cfg["vocab_size"] = a.vocab
        if a.eos is not None:
            cfg["eos_token_id"] = a.eos
        if a.max_positions:
            cfg["max_position_embeddings"] = a.max_positions
        if a.hidden:
            cfg["hidden_size"] = a.hidden
        if a.intermediate:
            cfg["intermediate_size"] = a.intermediate
        if a.layers:
            cfg["num_hidden_layers"] = a.layers
        tensors = llama_tensors(cfg, a.arch, g)
    cfg["torch_dtype"] = a.dtype
    dtype = DTYPES[a.dtype]
    tensors = {k: (t.to(dtype) if t.is_floating_point() and not k.endswith(".attn.bias") else t)
               for k, t in tensors.items()}
    os.makedirs(a.folder, exist_ok=True)
    with open(os.path.join(a.folder, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    meta = {"format": "pt"}
    if a.shards <= 1:
        safetensors_io.write(os.path.join(a.folder, "model.safetensors"),
                             tensors, meta)
        return
    names = list(tensors)
    weight_map = {}
    per = math.ceil(len(names) / a.shards)
    for s in range(a.shards):
        file = f"model-{s + 1:05d}-of-{a.shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[s * per:(s + 1) * per]}
        safetensors_io.write(os.path.join(a.folder, file), part, meta)
        weight_map.update({n: file for n in part})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    with open(os.path.join(a.folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map},
                  f, indent=2)


def load_folder(folder):
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    index = os.path.join(folder, "model.safetensors.index.json")
    tensors = {}
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    for file in files:
        tensors.update(safetensors_io.read(os.path.join(folder, file))[0])
    return cfg, tensors


# ---------------------------------------------------------------- models

def rms_norm(x, weight, eps):
    # LlamaRMSNorm: fp32 statistics, cast back, then the weight multiply.
    dtype = x.dtype
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(dtype)


def rope_inv_freq(cfg, dim):
    base = cfg.get("rope_theta", 10000.0)
    inv = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    scaling = cfg.get("rope_scaling") or {}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "linear":
        inv = inv / scaling["factor"]
    elif kind == "llama3":
        factor = scaling["factor"]
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        old = scaling["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old / low, old / high
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > low_wavelen, inv / factor, inv)
        smooth = (old / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
        inv = torch.where(medium, smoothed, scaled)
    return inv


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def attention(q, k, v):
    """Eager causal attention of [B, heads, T, D] q and k/v, fp32 softmax."""
    T, D = q.size(-2), q.size(-1)
    att = torch.matmul(q, k.transpose(2, 3)) * D ** -0.5
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)
    att = att.masked_fill(mask, float("-inf"))
    att = torch.softmax(att, dim=-1, dtype=torch.float32).to(q.dtype)
    return torch.matmul(att, v)


# LoRA adapters of a `lora` run: module name -> (A [r, in], B [out, r],
# scale); empty for full fine-tuning. GPT-2's modules are named as
# GPT2LMHeadModel's ("transformer.h.0.attn.c_attn").
LORA = {}


def lora_term(x, module):
    if module not in LORA:
        return 0
    a, b, scale = LORA[module]
    return F.linear(F.linear(x, a), b) * scale


def linear(x, p, module):
    return (F.linear(x, p[module + ".weight"], p.get(module + ".bias"))
            + lora_term(x, module))


def llama_forward(cfg, p, idx):
    c = cfg["hidden_size"]
    h, kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads",
                                                cfg["num_attention_heads"])
    d = cfg.get("head_dim") or c // h
    eps = cfg["rms_norm_eps"]
    B, T = idx.shape
    x = F.embedding(idx, p["model.embed_tokens.weight"])
    inv = rope_inv_freq(cfg, d)
    with torch.autocast("cpu", enabled=False):
        freqs = torch.arange(T).float()[:, None] * inv[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
    for i in range(cfg["num_hidden_layers"]):
        L = f"model.layers.{i}."
        a = rms_norm(x, p[L + "input_layernorm.weight"], eps)

        def proj(name, n):
            out = linear(a, p, L + f"self_attn.{name}")
            out = out.view(B, T, n, d)
            if L + f"self_attn.{name[0]}_norm.weight" in p:  # Qwen3
                out = rms_norm(out, p[L + f"self_attn.{name[0]}_norm.weight"], eps)
            return out.transpose(1, 2)

        q, k, v = proj("q_proj", h), proj("k_proj", kv), proj("v_proj", kv)
        cos, sin = emb.cos().to(q.dtype), emb.sin().to(q.dtype)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(h // kv, dim=1)
        v = v.repeat_interleave(h // kv, dim=1)
        y = attention(q, k, v).transpose(1, 2).reshape(B, T, h * d)
        x = x + linear(y, p, L + "self_attn.o_proj")
        m = rms_norm(x, p[L + "post_attention_layernorm.weight"], eps)
        gate = linear(m, p, L + "mlp.gate_proj")
        up = linear(m, p, L + "mlp.up_proj")
        x = x + linear(F.silu(gate) * up, p, L + "mlp.down_proj")
    x = rms_norm(x, p["model.norm.weight"], eps)
    head = p.get("lm_head.weight", p["model.embed_tokens.weight"])
    return F.linear(x, head)


def gpt2_forward(cfg, p, idx):
    c, h = cfg["n_embd"], cfg["n_head"]
    eps = cfg.get("layer_norm_epsilon", 1e-5)
    B, T = idx.shape
    x = F.embedding(idx, p["wte.weight"]) + F.embedding(torch.arange(T), p["wpe.weight"])

    def ln(x, name):
        return F.layer_norm(x, (c,), p[name + ".weight"], p[name + ".bias"], eps)

    def conv1d(x, name):  # Conv1D: x @ W + b with W [in, out]
        return (torch.addmm(p[name + ".bias"], x.view(-1, x.size(-1)),
                            p[name + ".weight"]).view(*x.shape[:-1], -1)
                + lora_term(x, "transformer." + name))

    for i in range(cfg["n_layer"]):
        L = f"h.{i}."
        q, k, v = conv1d(ln(x, L + "ln_1"), L + "attn.c_attn").split(c, dim=2)
        q, k, v = [t.view(B, T, h, c // h).transpose(1, 2) for t in (q, k, v)]
        y = attention(q, k, v).transpose(1, 2).reshape(B, T, c)
        x = x + conv1d(y, L + "attn.c_proj")
        m = conv1d(ln(x, L + "ln_2"), L + "mlp.c_fc")
        x = x + conv1d(F.gelu(m, approximate="tanh"), L + "mlp.c_proj")
    return F.linear(ln(x, "ln_f"), p["wte.weight"])


def train(a):
    torch.set_num_threads(1)
    cfg, tensors = load_folder(a.folder)
    gpt2 = cfg["architectures"][0] == "GPT2LMHeadModel"
    # Trainable parameters in fp32 (the engine's fp32 master weights); the
    # GPT-2 mask buffer is not a parameter.
    params = {k: torch.nn.Parameter(t.float()) for k, t in tensors.items()
              if not k.endswith(".attn.bias") and not k.endswith(".masked_bias")}
    forward = gpt2_forward if gpt2 else llama_forward
    data = torch.load(a.data)
    x, y = data["inputs"], data["targets"]
    n_eval = max(1, round(x.size(0) * a.eval_fraction)) if a.eval_fraction > 0 else 0
    n_train = x.size(0) - n_eval
    plist = list(params.values())
    decay = [q for q in plist if q.dim() >= 2]
    no_decay = [q for q in plist if q.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.999), eps=1e-8, foreach=False)
    losses = []
    for step in range(a.steps):
        rows = [(step * a.batch + r) % n_train for r in range(a.batch)]
        xb, yb = x[rows], y[rows]
        with torch.autocast("cpu", dtype=torch.bfloat16,
                            enabled=a.precision == "bf16-mixed"):
            logits = forward(cfg, params, xb)
        logits = logits.float()
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), yb.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(plist, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    with open(a.out, "w") as f:
        f.write("\n".join(repr(v) for v in losses) + "\n")


def lora(a):
    """LoRA on a frozen fp32 base: only the adapters (read from the
    engine's initial weights, `<module>.lora_A.weight`) train."""
    torch.set_num_threads(1)
    cfg, tensors = load_folder(a.folder)
    gpt2 = cfg["architectures"][0] == "GPT2LMHeadModel"
    base = {k: t.float() for k, t in tensors.items()}
    init = safetensors_io.read(a.adapters)[0]
    scale = a.alpha / a.rank
    trainable = []
    for key in sorted(init):
        if not key.endswith(".lora_A.weight"):
            continue
        module = key[: -len(".lora_A.weight")]
        A = torch.nn.Parameter(init[key].float().clone())
        B = torch.nn.Parameter(init[module + ".lora_B.weight"].float().clone())
        LORA[module] = (A, B, scale)
        trainable += [A, B]
    forward = gpt2_forward if gpt2 else llama_forward
    data = torch.load(a.data)
    x, y = data["inputs"], data["targets"]
    n_eval = max(1, round(x.size(0) * a.eval_fraction)) if a.eval_fraction > 0 else 0
    n_train = x.size(0) - n_eval
    opt = torch.optim.AdamW(trainable, lr=a.lr, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=0.01, foreach=False)
    losses = []
    for step in range(a.steps):
        rows = [(step * a.batch + r) % n_train for r in range(a.batch)]
        logits = forward(cfg, base, x[rows]).float()
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)),
                               y[rows].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    with open(a.out, "w") as f:
        f.write("\n".join(repr(v) for v in losses) + "\n")


def greedy(a):
    """Greedy continuation by full recompute (no cache), fp32."""
    torch.set_num_threads(1)
    cfg, tensors = load_folder(a.folder)
    params = {k: t.float() for k, t in tensors.items()}
    forward = (gpt2_forward if cfg["architectures"][0] == "GPT2LMHeadModel"
               else llama_forward)
    ids = [int(v) for v in a.prompt.split(",")]
    new = []
    with torch.no_grad():
        for _ in range(a.new):
            logits = forward(cfg, params, torch.tensor([ids]))
            nxt = int(logits[0, -1].argmax())
            ids.append(nxt)
            new.append(nxt)
    with open(a.out, "w") as f:
        f.write("\n".join(str(v) for v in new) + "\n")


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("folder")
    m.add_argument("--arch", required=True,
                   choices=["llama", "mistral", "qwen2", "qwen3", "gpt2"])
    m.add_argument("--dtype", default="float32", choices=list(DTYPES))
    m.add_argument("--shards", type=int, default=1)
    m.add_argument("--tied", action="store_true")
    m.add_argument("--rope", default="default", choices=["default", "linear", "llama3"])
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--vocab", type=int, default=0, help="llama family: vocab_size")
    m.add_argument("--eos", type=int, default=None, help="llama family: eos_token_id")
    m.add_argument("--max-positions", type=int, default=0)
    m.add_argument("--hidden", type=int, default=0, help="llama family: hidden_size")
    m.add_argument("--intermediate", type=int, default=0,
                   help="llama family: intermediate_size")
    m.add_argument("--layers", type=int, default=0,
                   help="llama family: num_hidden_layers")
    t = sub.add_parser("train")
    t.add_argument("folder")
    t.add_argument("data")
    t.add_argument("out")
    t.add_argument("--precision", default="fp32", choices=["fp32", "bf16-mixed"])
    t.add_argument("--steps", type=int, default=5)
    t.add_argument("--batch", type=int, default=4)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--eval-fraction", type=float, default=0.1)
    lo = sub.add_parser("lora")
    lo.add_argument("folder")
    lo.add_argument("data")
    lo.add_argument("adapters", help="safetensors of the initial adapters")
    lo.add_argument("out")
    lo.add_argument("--rank", type=int, required=True)
    lo.add_argument("--alpha", type=float, required=True)
    lo.add_argument("--steps", type=int, default=10)
    lo.add_argument("--batch", type=int, default=4)
    lo.add_argument("--lr", type=float, default=1e-3)
    lo.add_argument("--eval-fraction", type=float, default=0.1)
    g = sub.add_parser("greedy")
    g.add_argument("folder")
    g.add_argument("out")
    g.add_argument("--prompt", required=True, help="comma-separated ids")
    g.add_argument("--new", type=int, default=12)
    a = p.parse_args()
    {"make": make, "train": train, "lora": lora, "greedy": greedy}[a.cmd](a)


if __name__ == "__main__":
    main()
