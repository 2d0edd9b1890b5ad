#!/usr/bin/env python3
"""Writes a tiny random Llama-architecture Hugging Face folder around a real
tokenizer.json, for the offline demo: config.json, model.safetensors and
the tokenizer. The model is untrained (it learns its task in the demo); its
vocabulary is the tokenizer's, so every code path a real Llama 3 folder
takes (tokenizer, chat template, export, generate) runs.

Usage: examples/make_tiny_llama.py TOKENIZER_JSON OUT_DIR
Deterministic: the same folder every run.
"""
import json
import os
import shutil
import struct
import sys

import torch


def vocab_size(tokenizer):
    ids = list(tokenizer["model"]["vocab"].values())
    ids += [t["id"] for t in tokenizer.get("added_tokens", [])]
    return max(ids) + 1


def token_id(tokenizer, text):
    for t in tokenizer.get("added_tokens", []):
        if t["content"] == text:
            return t["id"]
    return tokenizer["model"]["vocab"].get(text)


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        data = t.contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    tokenizer_path, out = sys.argv[1], sys.argv[2]
    with open(tokenizer_path) as f:
        tokenizer = json.load(f)
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": vocab_size(tokenizer), "hidden_size": 64,
        "intermediate_size": 192, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 512, "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0, "hidden_act": "silu", "attention_bias": False,
        "tie_word_embeddings": True, "torch_dtype": "float32",
        "bos_token_id": token_id(tokenizer, "<|begin_of_text|>"),
        "eos_token_id": [i for i in (token_id(tokenizer, "<|end_of_text|>"),
                                     token_id(tokenizer, "<|eot_id|>"))
                         if i is not None],
    }
    g = torch.Generator().manual_seed(20261207)
    c, n = cfg["hidden_size"], cfg["intermediate_size"]
    kv = cfg["num_key_value_heads"] * c // cfg["num_attention_heads"]

    def normal(*shape):
        return torch.randn(*shape, generator=g) * 0.02

    tensors = {"model.embed_tokens.weight": normal(cfg["vocab_size"], c)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        tensors.update({
            p + "input_layernorm.weight": torch.ones(c),
            p + "self_attn.q_proj.weight": normal(c, c),
            p + "self_attn.k_proj.weight": normal(kv, c),
            p + "self_attn.v_proj.weight": normal(kv, c),
            p + "self_attn.o_proj.weight": normal(c, c),
            p + "post_attention_layernorm.weight": torch.ones(c),
            p + "mlp.gate_proj.weight": normal(n, c),
            p + "mlp.up_proj.weight": normal(n, c),
            p + "mlp.down_proj.weight": normal(c, n),
        })
    tensors["model.norm.weight"] = torch.ones(c)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    write_safetensors(os.path.join(out, "model.safetensors"), tensors)
    shutil.copyfile(tokenizer_path, os.path.join(out, "tokenizer.json"))
    params = sum(t.numel() for t in tensors.values())
    print(f"wrote {out}: tiny Llama, {params / 1e6:.1f}M parameters, "
          f"vocabulary {cfg['vocab_size']}")


if __name__ == "__main__":
    main()
