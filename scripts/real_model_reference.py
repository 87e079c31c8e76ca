"""PyTorch `transformers` on SmolLM2-135M-Instruct's dequantized Q4_1 weights (its own GGUF
loader), given token ids: the perplexity compressd must match on the same windows.

    scripts/fetch_real_models.sh
    python scripts/real_model_reference.py IDS.json WINDOW [SMOLLM2_DIR]   (IDS.json: a list of ids)
"""
import json
import math
import sys

import time

import torch
from transformers import AutoModelForCausalLM

torch.set_num_threads(2)

d = sys.argv[3] if len(sys.argv) > 3 else "target/real-models/smollm2"
model = AutoModelForCausalLM.from_pretrained(d, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", torch_dtype=torch.float32)
model.eval()
ids = json.load(open(sys.argv[1]))
window = int(sys.argv[2])
nll, n = 0.0, 0
started = time.time()
with torch.no_grad():
    for s in range(0, len(ids), window):
        w = torch.tensor([ids[s:s + window]])
        if w.shape[1] < 2:
            continue
        lp = torch.log_softmax(model(w).logits[0, :-1].double(), -1)
        nll -= lp.gather(1, w[0, 1:, None]).sum().item()
        n += w.shape[1] - 1
print(json.dumps({"predictions": n, "perplexity": math.exp(nll / n), "seconds": time.time() - started}))
