"""The step-timing loop of the PyTorch reference benchmarks
(pytorch_autocast.py, pytorch_llama.py): a model built by `make_model`,
AdamW (its foreach or per-tensor form, whichever is faster here when not
chosen), CPU autocast for bf16-mixed, gradient clipping, each step timed
from zero_grad to the loss on the host.
"""
import statistics
import time

import torch


def step_times(make_model, a, bf16, foreach, steps):
    """Seconds of `steps` steps after `a.warmup` warm-up ones, on random
    batches of `a.batch` x `a.seq` tokens below `a.vocab`."""
    torch.manual_seed(1)
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, foreach=foreach)
    times = []
    for _ in range(steps + a.warmup):
        x = torch.randint(0, a.vocab, (a.batch, a.seq))
        y = torch.randint(0, a.vocab, (a.batch, a.seq))
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss.item()
        times.append(time.perf_counter() - t0)
    return times[a.warmup:]


def median_step(make_model, a, bf16, short):
    """(median step seconds, foreach used). `a.foreach` "on"/"off" picks
    AdamW's form; "auto" times both on `short` steps and keeps the faster."""
    foreach = {"on": True, "off": False}.get(a.foreach)
    if foreach is None:
        foreach = (statistics.median(step_times(make_model, a, bf16, True, short)) <
                   statistics.median(step_times(make_model, a, bf16, False, short)))
    return statistics.median(step_times(make_model, a, bf16, foreach, a.steps)), foreach
