#!/usr/bin/python3
"""The reference side of ddp_oracle_test: PyTorch's own DistributedDataParallel.

Usage: /usr/bin/python3 tests/worker/ddp_oracle.py DIR

DIR holds what the C++ test wrote: meta.json (shapes, steps, lr, momentum,
world size), init.bin (the initial parameters, float32 little-endian, in
named_parameters() order), x.bin (float32 inputs [steps * global_batch,
*input_shape]) and y.bin (int64 labels). World-size processes train the same
BatchNorm-free net (conv -> relu -> global average pool -> fc) under DDP over
Gloo on 127.0.0.1, rank r on rows [r * b, (r + 1) * b) of each step's global
batch (b = global_batch / world_size), with mean cross-entropy and SGD with
momentum. DDP averages the gradients over ranks. Rank 0 writes the final
parameters, in the same layout as init.bin, to DIR/python.bin.

Exits non-zero with a traceback on any error.
"""
import datetime
import json
import os
import socket
import sys

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel


class PlainNet(nn.Module):
    """Same layer names and order as the C++ test's net."""

    def __init__(self, in_channels, channels, num_classes):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, channels, 3)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        h = F.adaptive_avg_pool2d(F.relu(self.conv(x)), (1, 1)).flatten(1)
        return self.fc(h)


def load_inputs(folder):
    with open(os.path.join(folder, "meta.json")) as f:
        meta = json.load(f)
    steps, batch = meta["steps"], meta["global_batch"]
    shape = [steps * batch] + list(meta["input_shape"])
    x = np.fromfile(os.path.join(folder, "x.bin"), dtype="<f4")
    y = np.fromfile(os.path.join(folder, "y.bin"), dtype="<i8")
    if x.size != int(np.prod(shape)) or y.size != steps * batch:
        raise ValueError(f"x.bin has {x.size} floats, y.bin {y.size} labels; meta.json wants "
                         f"{shape} and {steps * batch}")
    init = np.fromfile(os.path.join(folder, "init.bin"), dtype="<f4")
    return meta, x.reshape(shape), y, init


def load_params(model, meta, flat):
    names = [n for n, _ in model.named_parameters()]
    if names != meta["param_names"]:
        raise ValueError(f"parameter names {names} != meta.json's {meta['param_names']}")
    offset = 0
    with torch.no_grad():
        for p, shape in zip(model.parameters(), meta["param_shapes"]):
            if list(p.shape) != list(shape):
                raise ValueError(f"parameter shape {list(p.shape)} != meta.json's {shape}")
            n = p.numel()
            p.copy_(torch.from_numpy(flat[offset:offset + n].copy()).view(p.shape))
            offset += n
    if offset != flat.size:
        raise ValueError(f"init.bin has {flat.size} floats, the net {offset}")


def worker(rank, folder, port):
    torch.set_num_threads(1)
    meta, x, y, init = load_inputs(folder)
    world = meta["world_size"]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=30))
    try:
        model = PlainNet(meta["input_shape"][0], meta["channels"], meta["num_classes"])
        load_params(model, meta, init)
        ddp = DistributedDataParallel(model)
        opt = torch.optim.SGD(ddp.parameters(), lr=meta["lr"], momentum=meta["momentum"])
        batch = meta["global_batch"]
        local = batch // world
        xs, ys = torch.from_numpy(x), torch.from_numpy(y)
        for step in range(meta["steps"]):
            begin = step * batch + rank * local
            opt.zero_grad()
            loss = F.cross_entropy(ddp(xs[begin:begin + local]), ys[begin:begin + local])
            loss.backward()  # DDP all-reduces and averages the gradients here
            opt.step()
        if rank == 0:
            flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
            flat.numpy().astype("<f4").tofile(os.path.join(folder, "python.bin"))
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: ddp_oracle.py DIR")
    folder = sys.argv[1]
    with open(os.path.join(folder, "meta.json")) as f:
        world = json.load(f)["world_size"]
    out = os.path.join(folder, "python.bin")
    if os.path.exists(out):
        os.remove(out)
    # Raises (with the failing rank's traceback) if any rank fails.
    mp.start_processes(worker, args=(folder, free_port()), nprocs=world, join=True,
                       start_method="spawn")
    if not os.path.exists(out):
        sys.exit("rank 0 finished without writing " + out)


if __name__ == "__main__":
    main()
