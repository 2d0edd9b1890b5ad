#!/usr/bin/python3
"""Peak memory of loading a few-hundred-MB Hugging Face checkpoint.

Writes a random Llama-architecture folder (bf16 safetensors, 2 shards,
~217M parameters, ~434 MB) and loads it with bench_pretrained_load, one
process per training dtype: bf16 (bf16-master/-pure weights) and fp32
(fp32 and *-mixed). Prints, per dtype, the weights' bytes in that dtype and
how far the resident set grew at its peak while loading; the ratio is the
claim (near 1.0: no second copy of the model on the way). For contrast,
the same files read whole into memory first (as a naive loader does) by
the tests' Python reader.

    bench/engine/pretrained_load.py --build-dir build [--keep DIR]
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "../../tests/engine/python"))

import torch  # noqa: E402

import hf_reference  # noqa: E402
import safetensors_io  # noqa: E402


def write_folder(folder):
    cfg = hf_reference.llama_config("llama", "default")
    cfg.update({"vocab_size": 32000, "hidden_size": 1024,
                "intermediate_size": 2816, "num_hidden_layers": 12,
                "num_attention_heads": 16, "num_key_value_heads": 4,
                "max_position_embeddings": 2048, "torch_dtype": "bfloat16"})
    g = torch.Generator().manual_seed(0)
    tensors = {k: v.bfloat16() for k, v in
               hf_reference.llama_tensors(cfg, "llama", g).items()}
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f)
    names = list(tensors)
    half = len(names) // 2
    weight_map = {}
    for i, part in enumerate((names[:half], names[half:])):
        file = f"model-{i + 1:05d}-of-00002.safetensors"
        safetensors_io.write(os.path.join(folder, file),
                             {n: tensors[n] for n in part}, {"format": "pt"})
        weight_map.update({n: file for n in part})
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    return sum(t.numel() for t in tensors.values())


def naive_python_peak(folder):
    """Peak RSS growth of reading every shard whole, then cloning tensors."""
    code = f"""
import sys, glob
sys.path.insert(0, {os.path.join(HERE, '../../tests/engine/python')!r})
import torch, safetensors_io
def kb(key):
    for line in open('/proc/self/status'):
        if line.startswith(key + ':'):
            return int(line.split()[1])
open('/proc/self/clear_refs', 'w').write('5')  # VmHWM from here
before = kb('VmRSS')
t = {{}}
for f in sorted(glob.glob({folder!r} + '/*.safetensors')):
    t.update(safetensors_io.read(f)[0])
print(kb('VmHWM') - before)
"""
    out = subprocess.run([sys.executable, "-c", code], check=True,
                         capture_output=True, text=True).stdout
    return int(out.split()[-1]) * 1024


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--build-dir", default="build")
    p.add_argument("--keep", default="")
    a = p.parse_args()
    binary = os.path.join(a.build_dir, "bench/engine/bench_pretrained_load")
    with tempfile.TemporaryDirectory() as tmp:
        folder = a.keep or os.path.join(tmp, "llama-217m")
        if not os.path.exists(os.path.join(folder, "config.json")):
            params = write_folder(folder)
        else:
            params = None
        file_bytes = sum(os.path.getsize(os.path.join(folder, f))
                         for f in os.listdir(folder) if f.endswith(".safetensors"))
        print(f"checkpoint: {file_bytes / 2**20:.1f} MiB bf16 safetensors"
              + (f", {params / 1e6:.1f}M parameters" if params else ""))
        print(f"{'load into':<24}{'weights MiB':>12}{'peak growth MiB':>17}{'ratio':>8}")
        for dtype in ("bf16", "fp32"):
            r = json.loads(subprocess.run([binary, folder, dtype], check=True,
                                          capture_output=True, text=True).stdout)
            grown = (r["peak_kb"] - r["rss_before_kb"]) * 1024
            print(f"{'halftime ' + dtype:<24}{r['weight_bytes'] / 2**20:>12.1f}"
                  f"{grown / 2**20:>17.1f}{grown / r['weight_bytes']:>8.2f}")
        naive = naive_python_peak(folder)
        print(f"{'read-whole (python) bf16':<24}{file_bytes / 2**20:>12.1f}"
              f"{naive / 2**20:>17.1f}{naive / file_bytes:>8.2f}")


if __name__ == "__main__":
    main()
