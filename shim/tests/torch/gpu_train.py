"""A short MLP training loop on a real GPU, for the GPU suite (scripts/gpu-suite).

The suite runs it three times on the same GPU: locally (PyTorch on the NVIDIA driver, no rgpu),
then through `rgpu run` against `rgpu server --backend cuda` over shm and over tcp, and compares:

    python3 gpu_train.py train OUT.json [STEPS]     train, write losses and step times
    python3 gpu_train.py compare LOCAL.json REMOTE.json…
                                                    losses within tolerance, time ratio printed

Same seed, same data, same GPU and the same PyTorch/cuBLAS build on both sides; TF32 is off and
deterministic algorithms are on (CUBLAS_WORKSPACE_CONFIG is set by the suite). The losses should
then agree bit for bit; the tolerance (LOSS_RTOL relative + LOSS_ATOL absolute, per step) leaves
room for a cuBLAS heuristic that picks another kernel when the shim reports different free
memory (cuMemGetInfo is the quota through rgpu). Training must also work: the last loss must be
below LEARN_RATIO of the first. Nothing here has run on a GPU yet.
"""

import json
import statistics
import sys
import time

# Per-step loss tolerance between the local and a remote run.
LOSS_RTOL = 1e-3
LOSS_ATOL = 1e-5
# The last loss must be below this fraction of the first (the model learns).
LEARN_RATIO = 0.5
# Steps not timed (CUDA context, cuBLAS handles, first kernel loads).
WARMUP_STEPS = 5
# Steps by default.
STEPS_DEFAULT = 60
# Model and data shape.
BATCH, IN, HIDDEN, OUT = 512, 256, 1024, 10


def train(out_path, steps):
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.use_deterministic_algorithms(True)
    assert torch.cuda.is_available(), "no CUDA device visible to PyTorch"
    dev = torch.device("cuda")
    gen = torch.Generator().manual_seed(1234)
    x = torch.randn(BATCH * 4, IN, generator=gen)
    teacher = torch.randn(IN, OUT, generator=gen)
    y = (x @ teacher).argmax(dim=1)
    x, y = x.to(dev), y.to(dev)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(IN, HIDDEN),
        torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, HIDDEN),
        torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, OUT),
    ).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    losses, step_ms = [], []
    for step in range(steps):
        i = (step % 4) * BATCH
        xb, yb = x[i : i + BATCH], y[i : i + BATCH]
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
        value = loss.item()  # a device-to-host copy: the step's end
        t1 = time.perf_counter()
        losses.append(value)
        if step >= WARMUP_STEPS:
            step_ms.append((t1 - t0) * 1e3)
    result = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "steps": steps,
        "losses": losses,
        "step_ms_median": statistics.median(step_ms) if step_ms else None,
        "step_ms_min": min(step_ms) if step_ms else None,
        "memory_total": torch.cuda.mem_get_info()[1],
    }
    with open(out_path, "w") as f:
        json.dump(result, f)
    print(
        f"train: {result['device']}: loss {losses[0]:.4f} -> {losses[-1]:.4f} over {steps} steps, "
        f"median step {result['step_ms_median']:.3f} ms"
    )
    if not losses[-1] < LEARN_RATIO * losses[0]:
        print(f"FAIL learn: last loss {losses[-1]} not below {LEARN_RATIO} x first {losses[0]}")
        return 1
    print("ok learn")
    return 0


def compare(local_path, remote_paths):
    with open(local_path) as f:
        local = json.load(f)
    bad = 0
    for path in remote_paths:
        with open(path) as f:
            remote = json.load(f)
        if len(remote["losses"]) != len(local["losses"]):
            print(f"FAIL {path}: {len(remote['losses'])} steps, local ran {len(local['losses'])}")
            bad += 1
            continue
        worst = 0.0
        for step, (a, b) in enumerate(zip(local["losses"], remote["losses"])):
            diff = abs(a - b)
            worst = max(worst, diff)
            if diff > LOSS_ATOL + LOSS_RTOL * abs(a):
                print(f"FAIL {path}: step {step} loss {b} vs local {a}")
                bad += 1
                break
        ratio = remote["step_ms_median"] / local["step_ms_median"]
        print(
            f"compare {path}: max loss difference {worst:.3g} (tolerance {LOSS_ATOL} + {LOSS_RTOL} x loss), "
            f"median step {remote['step_ms_median']:.3f} ms vs local {local['step_ms_median']:.3f} ms "
            f"(x{ratio:.2f}), total memory seen {remote['memory_total']}"
        )
    print("ok compare" if bad == 0 else "FAIL compare")
    return 1 if bad else 0


def main(argv):
    if len(argv) >= 2 and argv[0] == "train":
        steps = int(argv[2]) if len(argv) > 2 else STEPS_DEFAULT
        return train(argv[1], steps)
    if len(argv) >= 3 and argv[0] == "compare":
        return compare(argv[1], argv[2:])
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
