#!/usr/bin/env python3
"""Writes the demo's example data (no downloads): a small English-like
corpus to pretrain on, an arithmetic task to fine-tune on, and the same
task as instruction rows (chat.jsonl).

Usage: examples/make_data.py [OUT_DIR]   (default: examples/data)
Deterministic: the same files every run.
"""
import os
import random
import sys

SUBJECTS = ["the model", "a worker", "the scheduler", "our team", "the cluster",
            "a researcher", "the platform", "each job", "the engineer", "a user"]
VERBS = ["trains", "measures", "watches", "places", "saves", "checks", "reports",
         "resumes", "schedules", "compares"]
OBJECTS = ["the loss", "a checkpoint", "the memory", "every step", "the speedup",
           "a new job", "the gradients", "the throughput", "the baseline",
           "the loss scale"]
ADVERBS = ["quickly", "carefully", "again", "today", "in bf16", "in fp32",
           "without errors", "on the cpu", "every hour", "at night"]
CONNECT = ["and then", "because", "while", "so", "but"]


def sentence(rng):
    s = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}"
    if rng.random() < 0.6:
        s += " " + rng.choice(ADVERBS)
    if rng.random() < 0.3:
        s += f" {rng.choice(CONNECT)} {rng.choice(SUBJECTS)} {rng.choice(VERBS)} " \
             f"{rng.choice(OBJECTS)}"
    return s[0].upper() + s[1:] + "."


def corpus(rng, size):
    lines = []
    total = 0
    while total < size:
        paragraph = " ".join(sentence(rng) for _ in range(rng.randint(3, 7)))
        lines.append(paragraph)
        total += len(paragraph) + 1
    return "\n".join(lines) + "\n"


def arithmetic(rng, count):
    # "12 + 35 = 47." : the fine-tuning task; the answer digits are what the
    # eval accuracy measures getting right.
    lines = []
    for _ in range(count):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        lines.append(f"{a} + {b} = {a + b}.")
    return "\n".join(lines) + "\n"


def chat(rng, count):
    # Instruction rows for `data: {kind: jsonl}`: the same arithmetic task
    # as conversations and as prompt/completion pairs.
    import json
    rows = []
    for i in range(count):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        if i % 2 == 0:
            rows.append({"messages": [
                {"role": "system", "content": "Answer with the number only."},
                {"role": "user", "content": f"What is {a} + {b}?"},
                {"role": "assistant", "content": str(a + b)}]})
        else:
            rows.append({"prompt": f"What is {a} + {b}?",
                         "completion": str(a + b)})
    return "".join(json.dumps(r) + "\n" for r in rows)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "data")
    os.makedirs(out, exist_ok=True)
    rng = random.Random(20261129)
    with open(os.path.join(out, "corpus.txt"), "w") as f:
        f.write(corpus(rng, 600_000))
    with open(os.path.join(out, "task.txt"), "w") as f:
        f.write(arithmetic(rng, 40_000))
    with open(os.path.join(out, "chat.jsonl"), "w") as f:
        f.write(chat(random.Random(20261207), 4_000))
    print(f"wrote {out}/corpus.txt, {out}/task.txt and {out}/chat.jsonl")


if __name__ == "__main__":
    main()
