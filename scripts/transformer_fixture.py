"""Writes tests/fixtures/transformers/: tiny random-weight transformers as Hugging Face folders
(Llama with grouped-query attention and tied embeddings, Qwen2 with q/k/v biases and an untied
head, Mistral, a BERT encoder), two tokenizers trained on a varied text (byte-level BPE as
SmolLM2 uses, WordPiece as BERT uses), and what PyTorch `transformers` and Python `tokenizers`
make of them: logits at every position, hidden states and sentence embeddings, token ids.
tests/transformers/ checks compressd against them.

    pip install torch transformers tokenizers safetensors
    python scripts/transformer_fixture.py
"""
import json
import os
import random
import shutil

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "transformers")
VOCAB = 384


def varied_text():
    """A few thousand words: prose, digits and numbers, punctuation, code, accents, CJK,
    emoji, odd spacing; the same every run."""
    rng = random.Random(20261203)
    words = (
        "the model weights were pruned to half their size and the accuracy barely moved while "
        "latency on the edge device fell from forty to twelve milliseconds per token because "
        "sparse kernels skip zeros quantization maps floats to small integers calibration data "
        "guides which weights matter most distillation trains a student to mimic a teacher"
    ).split()
    extras = [
        "3.14159", "2,048", "1e-5", "0x1F", "v2.0.1", "42%", "$19.99", "12:30", "2026-12-03",
        "don't", "it's", "naïve", "café", "Zürich", "façade", "coöperate", "Ελληνικά", "русский",
        "日本語", "中文字符", "한국어", "🙂", "🚀🚀", "—", "“quoted”", "(parens)", "[brackets]",
        "{braces}", "a/b", "snake_case", "CamelCase", "ALLCAPS", "e-mail", "x86_64", "#hashtag",
        "@mention", "C++", "<tag>", "&amp;", "\t", "  ", "...", "?!", ";", "fn main() { println!(\"hi\"); }",
    ]
    lines = []
    for _ in range(220):
        n = rng.randint(6, 18)
        line = []
        for _ in range(n):
            line.append(rng.choice(extras) if rng.random() < 0.25 else rng.choice(words))
        sentence = " ".join(line)
        if rng.random() < 0.5:
            sentence = sentence.capitalize() + rng.choice([".", "!", "?", ",", ":"])
        lines.append(sentence)
    return "\n".join(lines) + "\n"


def bpe_tokenizer(text_path):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train([text_path], trainer)
    return tok


def wordpiece_tokenizer(text_path):
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=VOCAB, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], show_progress=False
    )
    tok.train([text_path], trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return tok


def save_model(model, name, tokenizer_path, extra=None):
    folder = os.path.join(OUT, name)
    shutil.rmtree(folder, ignore_errors=True)
    model.save_pretrained(folder, safe_serialization=True)
    shutil.copy(tokenizer_path, os.path.join(folder, "tokenizer.json"))
    for file, content in (extra or {}).items():
        path = os.path.join(folder, file)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump(content, f, indent=2)
    return folder


def decoder_reference(model, folder, ids):
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    save_file({"input_ids": ids.to(torch.int64), "logits": logits.float().contiguous()},
              os.path.join(folder, "reference.safetensors"))


def perplexity_reference(model, ids, window=64, tokens=512):
    """Perplexity of the Llama fixture on the text's first `tokens` tokens in windows of
    `window`, and KL divergence and top-1 agreement against a copy whose block linear layers
    lost the half of their weights smallest in magnitude (each tensor on its own)."""
    import copy
    pruned = copy.deepcopy(model)
    with torch.no_grad():
        for n, p in pruned.named_parameters():
            if ".layers." in n and n.endswith("_proj.weight"):
                k = p.numel() // 2
                cut = p.abs().flatten().kthvalue(k).values
                p[p.abs() <= cut] = 0.0
    ids = ids[:tokens]
    totals = {"nll": 0.0, "nll_pruned": 0.0, "kl": 0.0, "agree": 0, "predictions": 0}
    with torch.no_grad():
        for start in range(0, len(ids), window):
            w = torch.tensor([ids[start:start + window]])
            if w.shape[1] < 2:
                continue
            a = torch.log_softmax(model(input_ids=w).logits[0, :-1].double(), -1)
            b = torch.log_softmax(pruned(input_ids=w).logits[0, :-1].double(), -1)
            target = w[0, 1:]
            totals["nll"] -= a.gather(1, target[:, None]).sum().item()
            totals["nll_pruned"] -= b.gather(1, target[:, None]).sum().item()
            totals["kl"] += (a.exp() * (a - b)).sum().item()
            totals["agree"] += (a.argmax(-1) == b.argmax(-1)).sum().item()
            totals["predictions"] += target.numel()
    n = totals["predictions"]
    import math
    with open(os.path.join(OUT, "llama", "perplexity.json"), "w") as f:
        json.dump({"window": window, "tokens": tokens, "predictions": n,
                   "perplexity": math.exp(totals["nll"] / n),
                   "perplexity_pruned": math.exp(totals["nll_pruned"] / n),
                   "kl_mean": totals["kl"] / n, "top1_agreement": totals["agree"] / n}, f, indent=2)


def llama_gguf(model, tokenizer_path):
    """The Llama fixture as llama.cpp's converter writes it: F32 tensors under GGUF names,
    q and k rows permuted for llama.cpp's rotary embedding, the byte-level BPE vocabulary with
    its merges and the smollm pre-tokenizer (digits apart, then GPT-2's), no output.weight
    (tied)."""
    import gguf
    import numpy as np
    c = model.config
    w = gguf.GGUFWriter(os.path.join(OUT, "llama.gguf"), "llama")
    w.add_name("compressd fixture llama")
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_vocab_size(c.vocab_size)
    w.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    w.add_file_type(0)
    tok = json.load(open(tokenizer_path))
    vocab = sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])
    special = {a["id"] for a in tok["added_tokens"] if a["special"]}
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list([t for t, _ in vocab])
    w.add_token_types([3 if i in special else 1 for _, i in vocab])
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]])
    w.add_bos_token_id(0)
    w.add_eos_token_id(0)
    w.add_add_bos_token(False)

    def permute(t, heads):
        return t.reshape(heads, 2, t.shape[0] // heads // 2, *t.shape[1:]).swapaxes(1, 2).reshape(t.shape)

    names = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for n, p in model.state_dict().items():
        t = p.detach().float().numpy()
        if n == "model.embed_tokens.weight":
            g = "token_embd.weight"
        elif n == "model.norm.weight":
            g = "output_norm.weight"
        elif n == "lm_head.weight":
            continue
        else:
            layer, rest = n[len("model.layers."):].split(".", 1)
            module, suffix = rest.rsplit(".", 1)
            g = f"blk.{layer}.{names[module]}.{suffix}"
            if module == "self_attn.q_proj":
                t = permute(t, c.num_attention_heads)
            elif module == "self_attn.k_proj":
                t = permute(t, c.num_key_value_heads)
        w.add_tensor(g, np.ascontiguousarray(t, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    os.makedirs(OUT, exist_ok=True)
    text = varied_text()
    text_path = os.path.join(OUT, "text.txt")
    with open(text_path, "w", encoding="utf-8") as f:
        f.write(text)
    bpe = bpe_tokenizer(text_path)
    bpe_path = os.path.join(OUT, "bpe.tokenizer.json")
    bpe.save(bpe_path)
    wp = wordpiece_tokenizer(text_path)
    wp_path = os.path.join(OUT, "wordpiece.tokenizer.json")
    wp.save(wp_path)
    lines = text.splitlines()
    with open(os.path.join(OUT, "token_ids.json"), "w") as f:
        json.dump({
            "bpe_text": bpe.encode(text, add_special_tokens=False).ids,
            "bpe_lines": [bpe.encode(l, add_special_tokens=False).ids for l in lines],
            "wordpiece_lines": [wp.encode(l).ids for l in lines],
        }, f)

    from transformers import (BertConfig, BertModel, LlamaConfig, LlamaForCausalLM, MistralConfig,
                              MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM)

    torch.manual_seed(20261203)
    ids = torch.tensor([bpe.encode(lines[i], add_special_tokens=False).ids[:24] for i in (0, 1)])
    common = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  initializer_range=0.1, rms_norm_eps=1e-5, bos_token_id=0, eos_token_id=0)
    llama = LlamaForCausalLM(LlamaConfig(**common, rope_theta=10000.0, tie_word_embeddings=True))
    qwen2 = Qwen2ForCausalLM(Qwen2Config(**common, rope_theta=1000000.0, tie_word_embeddings=False))
    mistral = MistralForCausalLM(MistralConfig(**common, rope_theta=10000.0, tie_word_embeddings=False,
                                               sliding_window=None))
    for model, name in ((llama, "llama"), (qwen2, "qwen2"), (mistral, "mistral")):
        with torch.no_grad():
            # Norm weights away from 1 and biases away from 0, as a trained model has them.
            for n, p in model.named_parameters():
                if n.endswith("norm.weight"):
                    p.uniform_(0.5, 1.5)
                elif n.endswith(".bias"):
                    p.uniform_(-0.2, 0.2)
        model.eval()
        folder = save_model(model, name, bpe_path)
        decoder_reference(model, folder, ids)

    perplexity_reference(llama, bpe.encode(text, add_special_tokens=False).ids)
    llama_gguf(llama, bpe_path)

    bert = BertModel(BertConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                num_attention_heads=4, max_position_embeddings=128, type_vocab_size=2,
                                initializer_range=0.1, layer_norm_eps=1e-12, hidden_act="gelu"))
    with torch.no_grad():
        for n, p in bert.named_parameters():
            if "LayerNorm" in n:
                p.uniform_(0.5, 1.5) if n.endswith("weight") else p.uniform_(-0.2, 0.2)
    bert.eval()
    folder = save_model(bert, "bert", wp_path, {
        "modules.json": [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ],
        "1_Pooling/config.json": {"word_embedding_dimension": 64, "pooling_mode_cls_token": False,
                                  "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
                                  "pooling_mode_mean_sqrt_len_tokens": False},
        "sentence_bert_config.json": {"max_seq_length": 128, "do_lower_case": False},
    })
    enc = [wp.encode(lines[i]).ids[:20] for i in (2, 3)]
    width = max(len(e) for e in enc)
    input_ids = torch.tensor([e + [0] * (width - len(e)) for e in enc])
    mask = torch.tensor([[1] * len(e) + [0] * (width - len(e)) for e in enc])
    with torch.no_grad():
        hidden = bert(input_ids=input_ids, attention_mask=mask).last_hidden_state
    m = mask.unsqueeze(-1).float()
    pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    embedding = torch.nn.functional.normalize(pooled, p=2, dim=1)
    save_file({"input_ids": input_ids.to(torch.int64), "attention_mask": mask.to(torch.int64),
               "last_hidden_state": hidden.contiguous(), "sentence_embedding": embedding.contiguous()},
              os.path.join(folder, "reference.safetensors"))


if __name__ == "__main__":
    main()
