"""PyTorch reference for the figures `cargo bench --bench mnist` prints: the same two
architectures, the same recipe, the same data, so compressd's training can be compared with
PyTorch's on this machine.

    pip install torch safetensors numpy
    python scripts/mnist_pytorch.py [path/to/mnist-10k.safetensors] [epochs] [seeds]
"""
import sys
import time

import numpy as np
import torch
from safetensors.numpy import load_file
from torch import nn

path = sys.argv[1] if len(sys.argv) > 1 else "../shared/data/mnist-10k.safetensors"
epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 10
seeds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
torch.set_num_threads(2)
d = load_file(path)
xtr = torch.tensor(d["train_images"], dtype=torch.float32) / 255.0
ytr = torch.tensor(d["train_labels"], dtype=torch.long)
xte = torch.tensor(d["test_images"], dtype=torch.float32) / 255.0
yte = torch.tensor(d["test_labels"], dtype=torch.long)


def lenet_300_100():
    return nn.Sequential(nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))


def lenet_5():
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))


def shape(x, cnn):
    return x.reshape(-1, 1, 28, 28) if cnn else x.reshape(-1, 784)


def accuracy(model, cnn):
    model.eval()
    with torch.no_grad():
        return (model(shape(xte, cnn)).argmax(1) == yte).float().mean().item()


def train(model, cnn, epochs, lr, masks=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    started = time.time()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(ytr), generator=g)
        for i in range(0, len(ytr), 64):
            idx = order[i:i + 64]
            opt.zero_grad()
            loss_fn(model(shape(xtr[idx], cnn)), ytr[idx]).backward()
            opt.step()
            if masks:
                with torch.no_grad():
                    for p, m in masks:
                        p.mul_(m)
    return len(ytr) * epochs / (time.time() - started)


def prune_layerwise(model, sparsity):
    masks = []
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            w = m.weight.data
            k = int(round(sparsity * w.numel()))
            if k > 0:
                cut = w.abs().flatten().kthvalue(k).values
                mask = (w.abs() > cut).float()
                w.mul_(mask)
                masks.append((m.weight, mask))
    return masks


for name, make, cnn in [("LeNet-300-100", lenet_300_100, False), ("LeNet-5", lenet_5, True)]:
    dense, pruned, speed = [], [], []
    for seed in range(1, seeds + 1):
        torch.manual_seed(seed)
        model = make()
        speed.append(train(model, cnn, epochs, 0.05, seed=seed))
        dense.append(accuracy(model, cnn))
        for t in range(1, 6):
            goal = 0.9 + (0.0 - 0.9) * (1 - t / 5) ** 3
            masks = prune_layerwise(model, goal)
            train(model, cnn, 2, 0.01, masks, seed=seed * 100 + t)
        pruned.append(accuracy(model, cnn))
    print(f"{name}: dense accuracy {np.mean(dense):.4f} (seeds: {', '.join(f'{a:.4f}' for a in dense)}), "
          f"90% pruned + fine-tuned {np.mean(pruned):.4f} (seeds: {', '.join(f'{a:.4f}' for a in pruned)}), "
          f"training {np.mean(speed):.0f} samples/s")
