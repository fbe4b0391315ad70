"""The same training step as train_step_bench.cc, in Python on Debian's
python3-torch (the same LibTorch 1.13 underneath). Networks are written here
to match worker/models exactly (CIFAR ResNet-18, pre-activation WRN-16-1)."""
import json, sys, time
import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    def __init__(self, inp, out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inp, out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out)
        self.conv2 = nn.Conv2d(out, out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.shortcut = nn.Sequential()
        if stride != 1 or inp != out:
            self.shortcut = nn.Sequential(nn.Conv2d(inp, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x):
        o = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(o)) + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, c=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers, inp = [], 64
        for out, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            layers += [BasicBlock(inp, out, stride), BasicBlock(out, out, 1)]
            inp = out
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(512, c)

    def forward(self, x):
        o = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(o, 1), 1))


class WrnBlock(nn.Module):
    def __init__(self, inp, out, stride):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(inp), nn.Conv2d(inp, out, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(out), nn.Conv2d(out, out, 3, 1, 1, bias=False)
        self.equal = inp == out
        self.short = None if self.equal else nn.Conv2d(inp, out, 1, stride, bias=False)

    def forward(self, x):
        a = F.relu(self.bn1(x))
        o = self.conv2(F.relu(self.bn2(self.conv1(a))))
        return o + (x if self.equal else self.short(a))


class Wrn16_1(nn.Module):
    def __init__(self, c=10, inc=3):
        super().__init__()
        self.conv1 = nn.Conv2d(inc, 16, 3, 1, 1, bias=False)
        blocks, inp = [], 16
        for out, stride in [(16, 1), (32, 2), (64, 2)]:
            blocks += [WrnBlock(inp, out, stride), WrnBlock(out, out, 1)]
            inp = out
        self.blocks = nn.Sequential(*blocks)
        self.bn, self.fc = nn.BatchNorm2d(64), nn.Linear(64, c)

    def forward(self, x):
        o = F.relu(self.bn(self.blocks(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(o, 1), 1))


def bench(name, make, shape, steps, channels_last, batch=128):
    torch.manual_seed(0)
    model = make()
    model.train()
    x, y = torch.randn(batch, *shape), torch.randint(10, (batch,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 2:
            times.append((time.perf_counter() - t0) * 1000)
    med = sorted(times)[len(times) // 2]
    print(json.dumps({"bench": "train_step", "lang": "python", "net": name, "batch": batch,
                      "layout": "channels_last" if channels_last else "contiguous",
                      "threads": torch.get_num_threads(), "median_ms": med,
                      "images_per_s": batch * 1000 / med,
                      "params": sum(p.numel() for p in model.parameters())}), flush=True)


if __name__ == "__main__":
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    torch.set_num_threads(threads)
    for cl in (True, False):
        bench("resnet18", ResNet18, (3, 32, 32), max(3, steps // 2), cl)
        bench("wrn16_1", Wrn16_1, (3, 32, 32), steps * 2, cl)
        bench("wrn16_1_fmnist", lambda: Wrn16_1(inc=1), (1, 28, 28), steps * 2, cl)
