#!/usr/bin/python3
"""Writes the seed corpora of fuzz_hf_config and fuzz_safetensors_header.

corpus/fuzz_hf_config/ gets the config.json of every tiny test folder that
tests/engine/python/hf_reference.py makes (each architecture, each
RoPE type) and the shapes of a few published configs (Llama 3.2 1B, Qwen2.5
0.5B, Qwen3 0.6B, Mistral 7B v0.3, GPT-2). corpus/fuzz_safetensors_header/
gets small safetensors files (every dtype, a scalar, an empty tensor,
metadata, Hugging Face tensor names), written by the trainer tests' own
writer of the published layout. Needs python3-torch.

    tests/fuzz/make_hf_seeds.py
"""
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests/engine/python"))
import hf_reference  # noqa: E402
import safetensors_io  # noqa: E402

PUBLISHED = {
    "llama-3.2-1b": {
        "architectures": ["LlamaForCausalLM"], "vocab_size": 128256,
        "hidden_size": 2048, "intermediate_size": 8192,
        "num_hidden_layers": 16, "num_attention_heads": 32,
        "num_key_value_heads": 8, "head_dim": 64,
        "max_position_embeddings": 131072, "rms_norm_eps": 1e-05,
        "rope_theta": 500000.0, "hidden_act": "silu", "mlp_bias": False,
        "attention_bias": False, "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0,
                         "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 8192,
                         "rope_type": "llama3"}},
    "qwen2.5-0.5b": {
        "architectures": ["Qwen2ForCausalLM"], "vocab_size": 151936,
        "hidden_size": 896, "intermediate_size": 4864,
        "num_hidden_layers": 24, "num_attention_heads": 14,
        "num_key_value_heads": 2, "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "hidden_act": "silu",
        "sliding_window": 32768, "use_sliding_window": False,
        "tie_word_embeddings": True, "torch_dtype": "bfloat16",
        "rope_scaling": None},
    "qwen3-0.6b": {
        "architectures": ["Qwen3ForCausalLM"], "vocab_size": 151936,
        "hidden_size": 1024, "intermediate_size": 3072, "head_dim": 128,
        "num_hidden_layers": 28, "num_attention_heads": 16,
        "num_key_value_heads": 8, "max_position_embeddings": 40960,
        "rms_norm_eps": 1e-06, "rope_theta": 1000000, "hidden_act": "silu",
        "attention_bias": False, "sliding_window": None,
        "use_sliding_window": False, "tie_word_embeddings": True,
        "torch_dtype": "bfloat16"},
    "mistral-7b-v0.3": {
        "architectures": ["MistralForCausalLM"], "vocab_size": 32768,
        "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32,
        "num_key_value_heads": 8, "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "hidden_act": "silu",
        "sliding_window": None, "tie_word_embeddings": False,
        "torch_dtype": "bfloat16"},
    "gpt2": {
        "architectures": ["GPT2LMHeadModel"], "vocab_size": 50257,
        "n_ctx": 1024, "n_positions": 1024, "n_embd": 768, "n_layer": 12,
        "n_head": 12, "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-05, "scale_attn_weights": True,
        "resid_pdrop": 0.1, "task_specific_params": {
            "text-generation": {"do_sample": True, "max_length": 50}}},
}


def main():
    configs = os.path.join(HERE, "corpus/fuzz_hf_config")
    os.makedirs(configs, exist_ok=True)
    for name, cfg in PUBLISHED.items():
        with open(os.path.join(configs, name + ".json"), "w") as f:
            json.dump(cfg, f, indent=2)
    for arch in ("llama", "mistral", "qwen2", "qwen3"):
        for rope in ("default", "linear", "llama3"):
            cfg = hf_reference.llama_config(arch, rope)
            with open(os.path.join(configs, f"tiny-{arch}-{rope}.json"),
                      "w") as f:
                json.dump(cfg, f, indent=2)
    with open(os.path.join(configs, "tiny-gpt2.json"), "w") as f:
        json.dump(hf_reference.gpt2_config(), f, indent=2)

    headers = os.path.join(HERE, "corpus/fuzz_safetensors_header")
    os.makedirs(headers, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    every_dtype = {f"t.{n.lower()}": torch.zeros(2, 3, dtype=t)
                   for n, t in safetensors_io.DTYPES.items()}
    every_dtype["scalar"] = torch.tensor(1.5)
    every_dtype["empty"] = torch.empty(0, 4)
    safetensors_io.write(os.path.join(headers, "every-dtype.safetensors"),
                         every_dtype, {"format": "pt"})
    layer = {
        "model.embed_tokens.weight": torch.randn(8, 4, generator=g),
        "model.layers.0.input_layernorm.weight": torch.ones(4),
        "model.layers.0.self_attn.q_proj.weight": torch.randn(4, 4, generator=g),
        "model.layers.0.self_attn.q_proj.bias": torch.zeros(4),
        "model.norm.weight": torch.ones(4),
    }
    safetensors_io.write(os.path.join(headers, "llama-names-bf16.safetensors"),
                         {k: v.bfloat16() for k, v in layer.items()},
                         {"format": "pt"})
    safetensors_io.write(os.path.join(headers, "no-metadata.safetensors"),
                         {"h.0.attn.c_attn.weight": torch.randn(4, 12, generator=g)})


if __name__ == "__main__":
    main()
