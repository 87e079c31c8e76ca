//! A llama.cpp GGUF model as a Hugging Face model: its config from the metadata, its tokenizer
//! rebuilt from the vocabulary and merges, and its tensors dequantized to f32 under their
//! Hugging Face names with llama.cpp's q/k row permutation undone, so that it runs, evaluates
//! and compresses like an uploaded folder.

use std::path::Path;

use candle_core::Tensor;
use serde_json::{json, Map, Value};

use super::nn_error;
use crate::format::gguf::reader::{GgufIndex, GgufTensor, GgufValue};
use crate::format::st_writer::SpooledWriter;
use crate::CompressError;

fn bad(msg: String) -> CompressError {
    CompressError::InvalidModel(format!("the GGUF file: {msg}"))
}

/// What a GGUF upload becomes.
#[derive(Debug)]
pub struct ImportedGguf {
    /// A Hugging Face config.json for the model.
    pub config: Value,
    /// Every tensor under its Hugging Face name, with its row-major shape.
    pub tensors: Vec<(String, Vec<u64>)>,
    /// tokenizer.json rebuilt from the vocabulary, when the file carries one compressd rebuilds.
    pub tokenizer: Option<String>,
    /// tokenizer_config.json: the special tokens, whether a BOS is added, the chat template.
    pub tokenizer_config: Option<Value>,
    pub notes: Vec<String>,
}

/// llama.cpp's names for a llama-family model's tensors outside the blocks, and for the
/// modules inside each block, beside Hugging Face's.
const FIXED: &[(&str, &str)] = &[
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
];
const MODULES: &[(&str, &str)] = &[
    ("attn_norm", "input_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_norm", "post_attention_layernorm"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
];

/// `name` in the other naming: `(from, to)` picks the direction in the tables.
fn rename(
    name: &str,
    block_prefix: (&str, &str),
    pick: fn(&(&'static str, &'static str)) -> (&'static str, &'static str),
) -> Option<String> {
    if let Some((_, to)) = FIXED.iter().map(pick).find(|(from, _)| *from == name) {
        return Some(to.to_owned());
    }
    let rest = name.strip_prefix(block_prefix.0)?;
    let (layer, part) = rest.split_once('.')?;
    layer.parse::<u32>().ok()?;
    let (module, suffix) = part.rsplit_once('.')?;
    let (_, to) = MODULES.iter().map(pick).find(|(from, _)| *from == module)?;
    Some(format!("{}{layer}.{to}.{suffix}", block_prefix.1))
}

/// The Hugging Face name of a llama-family GGUF tensor.
pub fn hf_name(gguf: &str) -> Option<String> {
    rename(gguf, ("blk.", "model.layers."), |&(g, h)| (g, h))
}

/// The GGUF name of a Hugging Face llama-family tensor (the inverse of [`hf_name`]).
pub fn gguf_name(hf: &str) -> Option<String> {
    rename(hf, ("model.layers.", "blk."), |&(g, h)| (h, g))
}

fn key<'a>(index: &'a GgufIndex, arch: &str, k: &str) -> Option<&'a GgufValue> {
    index.get(&format!("{arch}.{k}"))
}

fn size(index: &GgufIndex, arch: &str, k: &str) -> Result<u64, CompressError> {
    key(index, arch, k)
        .and_then(GgufValue::as_u64)
        .ok_or_else(|| bad(format!("{arch}.{k} is missing")))
}

/// Reads what the model is from the header.
pub fn inspect(index: &GgufIndex) -> Result<ImportedGguf, CompressError> {
    let arch = index
        .get("general.architecture")
        .and_then(GgufValue::as_str)
        .ok_or_else(|| bad("general.architecture is missing".into()))?;
    let hf_arch = match arch {
        "llama" => "LlamaForCausalLM",
        "qwen2" => "Qwen2ForCausalLM",
        other => {
            return Err(CompressError::InvalidModel(format!(
                "the GGUF file's architecture is '{other}'; compressd imports llama and qwen2 GGUF models (upload other models as a Hugging Face folder)"
            )))
        }
    };
    let heads = size(index, arch, "attention.head_count")?;
    let hidden = size(index, arch, "embedding_length")?;
    let tokens = index
        .get("tokenizer.ggml.tokens")
        .and_then(GgufValue::as_array);
    let vocab = key(index, arch, "vocab_size")
        .and_then(GgufValue::as_u64)
        .or(tokens.map(|t| t.len() as u64))
        .ok_or_else(|| bad("neither a vocab_size nor a token list".into()))?;
    let mut tensors = Vec::new();
    for t in &index.tensors {
        let name = hf_name(&t.name).ok_or_else(|| {
            bad(format!(
                "tensor '{}' is not one of a {arch} model's",
                t.name
            ))
        })?;
        tensors.push((name, t.shape.clone()));
    }
    let tied = !index.tensors.iter().any(|t| t.name == "output.weight");
    let mut config = json!({
        "architectures": [hf_arch],
        "model_type": if arch == "qwen2" { "qwen2" } else { "llama" },
        "hidden_size": hidden,
        "intermediate_size": size(index, arch, "feed_forward_length")?,
        "num_hidden_layers": size(index, arch, "block_count")?,
        "num_attention_heads": heads,
        "num_key_value_heads": key(index, arch, "attention.head_count_kv").and_then(GgufValue::as_u64).unwrap_or(heads),
        "vocab_size": vocab,
        "max_position_embeddings": key(index, arch, "context_length").and_then(GgufValue::as_u64).unwrap_or(2048),
        "rms_norm_eps": key(index, arch, "attention.layer_norm_rms_epsilon").and_then(GgufValue::as_f64).unwrap_or(1e-5),
        "rope_theta": key(index, arch, "rope.freq_base").and_then(GgufValue::as_f64).unwrap_or(10_000.0),
        "tie_word_embeddings": tied,
        "hidden_act": "silu",
        "torch_dtype": "float32",
    });
    let ids = [
        ("bos_token_id", "tokenizer.ggml.bos_token_id"),
        ("eos_token_id", "tokenizer.ggml.eos_token_id"),
        ("pad_token_id", "tokenizer.ggml.padding_token_id"),
    ];
    for (hf, g) in ids {
        if let Some(v) = index.get(g).and_then(GgufValue::as_u64) {
            config[hf] = v.into();
        }
    }
    let mut notes = Vec::new();
    let tokenizer = match tokenizer_json(index) {
        Ok(t) => Some(t),
        Err(why) => {
            notes.push(format!("no tokenizer: {why}; evaluation needs one (upload the Hugging Face folder instead)"));
            None
        }
    };
    let tokenizer_config = tokenizer.as_ref().map(|_| tokenizer_config(index));
    Ok(ImportedGguf {
        config,
        tensors,
        tokenizer,
        tokenizer_config,
        notes,
    })
}

/// What Hugging Face keeps in tokenizer_config.json, from the metadata.
fn tokenizer_config(index: &GgufIndex) -> Value {
    let tokens = index
        .get("tokenizer.ggml.tokens")
        .and_then(GgufValue::as_array);
    let token = |key: &str| {
        let id = index.get(key).and_then(GgufValue::as_u64)?;
        tokens?.get(id as usize)?.as_str().map(str::to_owned)
    };
    let mut c = json!({
        "add_bos_token": index.get("tokenizer.ggml.add_bos_token").and_then(GgufValue::as_bool).unwrap_or(false),
    });
    for (hf, g) in [
        ("bos_token", "tokenizer.ggml.bos_token_id"),
        ("eos_token", "tokenizer.ggml.eos_token_id"),
        ("unk_token", "tokenizer.ggml.unknown_token_id"),
        ("pad_token", "tokenizer.ggml.padding_token_id"),
    ] {
        if let Some(t) = token(g) {
            c[hf] = t.into();
        }
    }
    if let Some(t) = index
        .get("tokenizer.chat_template")
        .and_then(GgufValue::as_str)
    {
        c["chat_template"] = t.into();
    }
    c
}

/// tokenizer.json for a byte-level BPE vocabulary (`tokenizer.ggml.model` gpt2), with the
/// pre-tokenizer llama.cpp's `tokenizer.ggml.pre` names.
fn tokenizer_json(index: &GgufIndex) -> Result<String, String> {
    let model = index
        .get("tokenizer.ggml.model")
        .and_then(GgufValue::as_str)
        .unwrap_or("");
    if model != "gpt2" {
        return Err(format!(
            "tokenizer.ggml.model '{model}' is not rebuilt (byte-level BPE, 'gpt2', is)"
        ));
    }
    let pre = index
        .get("tokenizer.ggml.pre")
        .and_then(GgufValue::as_str)
        .unwrap_or("default");
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    let pre_tokenizer = match pre {
        "default" | "gpt2" => byte_level.clone(),
        "smollm" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level.clone()]}),
        other => {
            return Err(format!(
                "the pre-tokenizer '{other}' is not rebuilt (gpt2 and smollm are)"
            ))
        }
    };
    let tokens = index
        .get("tokenizer.ggml.tokens")
        .and_then(GgufValue::as_array)
        .ok_or("no tokenizer.ggml.tokens")?;
    let types = index
        .get("tokenizer.ggml.token_type")
        .and_then(GgufValue::as_array);
    let merges: Vec<&str> = index
        .get("tokenizer.ggml.merges")
        .and_then(GgufValue::as_array)
        .ok_or("no tokenizer.ggml.merges")?
        .iter()
        .filter_map(GgufValue::as_str)
        .collect();
    let mut vocab = Map::new();
    let mut added = Vec::new();
    for (id, t) in tokens.iter().enumerate() {
        let t = t.as_str().ok_or("a token is not a string")?;
        vocab.insert(t.to_owned(), id.into());
        // llama.cpp's token types: 3 control, 4 user-defined.
        let kind = types
            .and_then(|ts| ts.get(id))
            .and_then(GgufValue::as_u64)
            .unwrap_or(1);
        if kind == 3 || kind == 4 {
            added.push(
                json!({"id": id, "content": t, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": kind == 4, "special": kind == 3}),
            );
        }
    }
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges},
    });
    Ok(tokenizer.to_string())
}

/// llama.cpp stores q and k rows of each head interleaved for its rotary embedding: row
/// (head, j, s) holds what Hugging Face keeps at row (head, s, j), s ∈ {0, 1}, j < half a head.
/// Undoes that (`forward` false) or does it (`forward` true).
pub fn permute_qk(w: &Tensor, heads: usize, forward: bool) -> Result<Tensor, CompressError> {
    let (rows, cols) = w.dims2().map_err(nn_error)?;
    let half = rows / heads / 2;
    let shape = if forward {
        (heads, 2, half, cols)
    } else {
        (heads, half, 2, cols)
    };
    w.reshape(shape)
        .and_then(|x| x.transpose(1, 2))
        .and_then(|x| x.contiguous())
        .and_then(|x| x.reshape((rows, cols)))
        .map_err(nn_error)
}

/// Writes the GGUF model's tensors, dequantized, as a safetensors file under Hugging Face
/// names, one tensor in memory at a time.
pub fn to_safetensors(path: &Path, out: &Path) -> Result<(), CompressError> {
    let (index, map) = GgufIndex::open(path)?;
    let arch = index
        .get("general.architecture")
        .and_then(GgufValue::as_str)
        .unwrap_or("llama")
        .to_owned();
    let heads = size(&index, &arch, "attention.head_count")? as usize;
    let kv = key(&index, &arch, "attention.head_count_kv")
        .and_then(GgufValue::as_u64)
        .map_or(heads, |v| v as usize);
    let mut writer = SpooledWriter::new(&out.with_extension("spool"))?;
    for t in &index.tensors {
        let name = hf_name(&t.name).ok_or_else(|| {
            bad(format!(
                "tensor '{}' is not one of a {arch} model's",
                t.name
            ))
        })?;
        let values = dense(&index, &map, t, &arch, heads, kv)?;
        let data: Vec<f32> = values
            .flatten_all()
            .and_then(|v| v.to_vec1())
            .map_err(nn_error)?;
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        writer.add(&name, "F32", &t.shape, &bytes)?;
    }
    writer.finish(&Default::default(), out)?;
    Ok(())
}

fn dense(
    index: &GgufIndex,
    map: &[u8],
    t: &GgufTensor,
    arch: &str,
    heads: usize,
    kv: usize,
) -> Result<Tensor, CompressError> {
    let values = index.dequantize(map, t)?;
    // Qwen2 keeps Hugging Face's row order (llama.cpp runs it with NEOX rotary embeddings).
    if arch != "llama" || t.shape.len() != 2 {
        return Ok(values);
    }
    if t.name.ends_with("attn_q.weight") {
        permute_qk(&values, heads, false)
    } else if t.name.ends_with("attn_k.weight") {
        permute_qk(&values, kv, false)
    } else {
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_both_ways() {
        for (g, h) in [
            ("token_embd.weight", "model.embed_tokens.weight"),
            (
                "blk.12.attn_q.bias",
                "model.layers.12.self_attn.q_proj.bias",
            ),
            (
                "blk.0.ffn_down.weight",
                "model.layers.0.mlp.down_proj.weight",
            ),
        ] {
            assert_eq!(hf_name(g).as_deref(), Some(h));
            assert_eq!(gguf_name(h).as_deref(), Some(g));
        }
        assert_eq!(hf_name("blk.x.attn_q.weight"), None);
        assert_eq!(gguf_name("model.layers.0.mlp.other.weight"), None);
    }
}
