"""Writes tests/fixtures/pytorch_reference.safetensors: a small nn.Sequential that uses every
layer type compressd runs, its state dict exactly as PyTorch saves it, an input batch and
PyTorch's output for it (eval mode). tests/nn/pytorch.rs checks compressd against it.

    pip install torch safetensors
    python scripts/pytorch_fixture.py
"""
import json

import torch
from safetensors.torch import save_file
from torch import nn

torch.manual_seed(20261129)
model = nn.Sequential(
    nn.Conv2d(2, 4, 3, stride=1, padding=1),   # 0
    nn.BatchNorm2d(4),                          # 1
    nn.ReLU(),                                  # 2
    nn.MaxPool2d(2),                            # 3
    nn.Conv2d(4, 6, (3, 2), stride=2, padding=1),  # 4
    nn.Tanh(),                                  # 5
    nn.AvgPool2d(2, stride=1),                  # 6
    nn.Flatten(),                               # 7
    nn.Linear(6 * 1 * 2, 12),                   # 8
    nn.BatchNorm1d(12),                         # 9
    nn.GELU(),                                  # 10
    nn.Dropout(0.3),                            # 11
    nn.Linear(12, 8, bias=False),               # 12
    nn.Sigmoid(),                               # 13
    nn.Linear(8, 5),                            # 14
    nn.LogSoftmax(dim=1),                       # 15
)
# Non-trivial running statistics, as a trained model would have.
with torch.no_grad():
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.2, 0.2)
model.eval()
x = torch.randn(3, 2, 8, 8)
with torch.no_grad():
    y = model(x)
    # Every layer's output too, so a mismatch points at the layer.
    h = x
    after = {}
    for i, layer in enumerate(model):
        h = layer(h)
        after[f"after.{i}"] = h.clone().contiguous()
tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
tensors["input"] = x
tensors["expected_output"] = y
tensors.update(after)
architecture = {"input_shape": [2, 8, 8], "layers": [
    {"type": "conv2d", "in_channels": 2, "out_channels": 4, "kernel_size": 3, "padding": 1},
    {"type": "batchnorm2d", "num_features": 4},
    {"type": "relu"},
    {"type": "maxpool2d", "kernel_size": 2},
    {"type": "conv2d", "in_channels": 4, "out_channels": 6, "kernel_size": [3, 2], "stride": 2, "padding": 1},
    {"type": "tanh"},
    {"type": "avgpool2d", "kernel_size": 2, "stride": 1},
    {"type": "flatten"},
    {"type": "linear", "in_features": 12, "out_features": 12},
    {"type": "batchnorm1d", "num_features": 12},
    {"type": "gelu"},
    {"type": "dropout", "p": 0.3},
    {"type": "linear", "in_features": 12, "out_features": 8, "bias": False},
    {"type": "sigmoid"},
    {"type": "linear", "in_features": 8, "out_features": 5},
    {"type": "log_softmax"},
]}
save_file(tensors, "tests/fixtures/pytorch_reference.safetensors",
          metadata={"architecture": json.dumps(architecture), "torch": torch.__version__})
print("wrote", len(tensors), "tensors; output shape", tuple(y.shape))
