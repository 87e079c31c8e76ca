"""llama.cpp (through llama-cpp-python, 2 threads) on a GGUF file: its token ids for a text
and its perplexity over non-overlapping windows, for the transformers bench.

    python scripts/llama_cpp_perplexity.py MODEL.gguf TEXT_FILE WINDOW MAX_TOKENS
"""
import json
import math
import sys
import time

import numpy as np
from llama_cpp import Llama

path, text_file, window, max_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
m = Llama(model_path=path, n_ctx=window, n_batch=window, logits_all=True, verbose=False, n_threads=2)
# Bytes as they are (text mode would turn CRLF into LF and tokenize another text).
ids = m.tokenize(open(text_file, "rb").read(), add_bos=False, special=False)[:max_tokens]
nll, n = 0.0, 0
started = time.time()
for s in range(0, len(ids), window):
    w = ids[s:s + window]
    if len(w) < 2:
        continue
    m.reset()
    m.eval(w)
    scores = np.array(m.scores[:len(w)], dtype=np.float64)
    scores -= scores.max(axis=1, keepdims=True)
    lse = np.log(np.exp(scores).sum(axis=1))
    for j in range(len(w) - 1):
        nll -= scores[j, w[j + 1]] - lse[j]
        n += 1
print(json.dumps({"predictions": n, "perplexity": math.exp(nll / n), "seconds": time.time() - started, "ids": ids}))
