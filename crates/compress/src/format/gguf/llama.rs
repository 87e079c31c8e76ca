//! GGUF that llama.cpp loads, from a Llama-family model's dense weights: the architecture's
//! hyper-parameter keys, tensors under llama.cpp's names with q/k rows permuted for its rotary
//! embedding (Llama, Mistral; Qwen2 keeps Hugging Face's order), the tied head left out, the
//! byte-level BPE tokenizer (tokens, types, merges, special ids, chat template) with the
//! pre-tokenizer name llama.cpp gives it, `general.file_type`, and each tensor's type chosen as
//! llama-quantize chooses it for the requested type or mixture (including its fallbacks when
//! a row does not split into a type's blocks).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use serde_json::Value;

use super::header::{ggml_dims, header, Kv, TensorInfo};
use super::imatrix::ImportanceMatrix;
use super::{encode, padding, stored_name, totals, type_id, Stored, ALIGNMENT};
use crate::control::Control;
use crate::format::chunked_io::map_chunk;
use crate::format::dtype::Dtype;
use crate::format::safetensors_index::{SafetensorsIndex, TensorEntry};
use crate::quant::file::as_f32;
use crate::quant::ggml_weighted;
use crate::quant::ErrorSums;
use crate::transformer::gguf_import::gguf_name;
use crate::transformer::DecoderConfig;
use crate::{require_finite, CompressError};
use domain::results::quantize::{GgufReport, GgufTensorStats};
use domain::{ExportStep, GgufType};

/// What the exporter needs beside the weights.
pub struct LlamaModel<'a> {
    pub config: &'a DecoderConfig,
    /// `llama` (Llama, Mistral) or `qwen2`.
    pub arch: &'a str,
    /// tokenizer.json and tokenizer_config.json of the model's folder.
    pub tokenizer: &'a Value,
    pub tokenizer_config: Option<&'a Value>,
    pub name: &'a str,
}

fn bad(msg: String) -> CompressError {
    CompressError::InvalidRequest(format!("GGUF export for llama.cpp: {msg}"))
}

/// llama.cpp's `llama_ftype` for the requested type.
fn file_type(t: GgufType) -> u32 {
    match t {
        GgufType::F16 => 1,
        GgufType::Q4_0 => 2,
        GgufType::Q4_1 => 3,
        GgufType::Q8_0 => 7,
        GgufType::Q5_0 => 8,
        GgufType::Q5_1 => 9,
        GgufType::Q2K => 10,
        GgufType::Q3K => 11,
        GgufType::Q4K => 14,
        GgufType::Q4KM => 15,
        GgufType::Q5K => 16,
        GgufType::Q5KM => 17,
        GgufType::Q6K => 18,
    }
}

fn block_size(t: GgufType) -> u64 {
    match t {
        GgufType::F16 => 1,
        GgufType::Q8_0 | GgufType::Q4_0 | GgufType::Q4_1 | GgufType::Q5_0 | GgufType::Q5_1 => 32,
        _ => 256,
    }
}

/// llama.cpp's `use_more_bits`: the first and last eighth of the layers and every third one
/// between them.
fn more_bits(layer: u64, layers: u64) -> bool {
    let (l, n) = (layer as i64, layers as i64);
    l < n / 8 || l >= 7 * n / 8 || (l - n / 8) % 3 == 2
}

/// The type llama-quantize gives tensor `name` (GGUF name, `cols` values per row) when asked
/// for `target`; None keeps it in F32 (one-dimensional tensors, norms).
/// What llama-quantize's choice of a tensor's type depends on beside the tensor.
#[derive(Clone, Copy)]
struct Choice {
    target: GgufType,
    tied: bool,
    layers: u64,
    kv_groups: u64,
    /// Whether an importance matrix is given.
    imatrix: bool,
}

fn tensor_type(name: &str, rank: usize, cols: u64, choice: &Choice) -> Option<GgufType> {
    let Choice {
        target,
        tied,
        layers,
        kv_groups,
        imatrix,
    } = *choice;
    if rank < 2 || name.contains("_norm.weight") || !name.ends_with("weight") {
        return None;
    }
    if target == GgufType::F16 {
        return Some(GgufType::F16);
    }
    let base = target.block();
    let layer = name
        .strip_prefix("blk.")
        .and_then(|r| r.split('.').next())
        .and_then(|l| l.parse::<u64>().ok())
        .unwrap_or(0);
    let output = name == "output.weight" || (tied && name == "token_embd.weight");
    let chosen = if output {
        if !cols.is_multiple_of(block_size(base)) {
            GgufType::Q8_0
        } else if base != GgufType::Q8_0 {
            GgufType::Q6K
        } else {
            base
        }
    } else if name.contains("attn_v.weight") {
        match target {
            GgufType::Q2K if kv_groups >= 4 => GgufType::Q4K,
            GgufType::Q2K => GgufType::Q3K,
            GgufType::Q4KM | GgufType::Q5KM if more_bits(layer, layers) => GgufType::Q6K,
            GgufType::Q4K if layer < 4 => GgufType::Q5K,
            _ => base,
        }
    } else if name.contains("ffn_down") {
        match target {
            GgufType::Q2K => GgufType::Q3K,
            GgufType::Q4KM | GgufType::Q5KM if more_bits(layer, layers) => GgufType::Q6K,
            GgufType::Q4K if layer < layers / 8 => GgufType::Q5K,
            // With an importance matrix llama.cpp guards the first ffn_down layers.
            GgufType::Q4_0 if imatrix && layer < layers / 8 => GgufType::Q4_1,
            GgufType::Q5_0 if imatrix && layer < layers / 8 => GgufType::Q5_1,
            _ => base,
        }
    } else if name.contains("attn_output.weight") && target == GgufType::Q2K {
        GgufType::Q3K
    } else {
        base
    };
    Some(fallback(chosen, cols))
}

/// llama.cpp's fallback for a row that a type's blocks do not tile.
fn fallback(t: GgufType, cols: u64) -> GgufType {
    if cols.is_multiple_of(block_size(t)) {
        return t;
    }
    let back = match t {
        GgufType::Q2K | GgufType::Q3K => GgufType::Q4_0,
        GgufType::Q4K => GgufType::Q5_0,
        GgufType::Q5K => GgufType::Q5_1,
        GgufType::Q6K => GgufType::Q8_0,
        other => other,
    };
    if cols.is_multiple_of(block_size(back)) {
        back
    } else {
        GgufType::F16
    }
}

struct Planned<'a> {
    entry: &'a TensorEntry,
    name: String,
    shape: Vec<u64>,
    stored: Stored,
    bytes: u64,
    /// Heads to permute q/k rows for.
    permute: Option<usize>,
}

pub fn export_llama(
    input: &Path,
    output: &Path,
    step: &ExportStep,
    model: &LlamaModel,
    importance: Option<&ImportanceMatrix>,
    control: &Control,
) -> Result<GgufReport, CompressError> {
    let started = Instant::now();
    let c = model.config;
    let index = SafetensorsIndex::open(input)?;
    let tied = c.tie_embeddings;
    let choice = Choice {
        target: step.ggml_type,
        tied,
        layers: c.layers as u64,
        kv_groups: (c.heads / c.kv_heads) as u64,
        imatrix: importance.is_some(),
    };
    let mut planned = Vec::new();
    for t in &index.tensors {
        if tied && t.name == "lm_head.weight" {
            continue;
        }
        if !matches!(t.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
            return Err(bad(format!(
                "tensor '{}' is {}: export reads dense weights, so put it before quantize (or after a prune)",
                t.name,
                t.dtype.name()
            )));
        }
        let name = gguf_name(&t.name)
            .ok_or_else(|| bad(format!("tensor '{}' has no llama.cpp name", t.name)))?;
        let cols = *t.shape.last().unwrap_or(&1);
        let kind = tensor_type(&name, t.shape.len(), cols, &choice);
        let stored = match kind {
            None => Stored::F32,
            Some(GgufType::F16) => Stored::F16,
            Some(q) => Stored::Quant(q),
        };
        let n = t.numel();
        let bytes = match stored {
            Stored::F32 => n * 4,
            Stored::F16 => n * 2,
            Stored::Quant(q) => {
                let g = super::ggml_dtype(q);
                n / g.block_size() as u64 * g.type_size() as u64
            }
            Stored::Int(_) => t.byte_len(),
        };
        let permute = (model.arch == "llama" && t.shape.len() == 2).then(|| {
            if name.ends_with("attn_q.weight") {
                Some(c.heads)
            } else if name.ends_with("attn_k.weight") {
                Some(c.kv_heads)
            } else {
                None
            }
        });
        planned.push(Planned {
            entry: t,
            name,
            shape: t.shape.clone(),
            stored,
            bytes,
            permute: permute.flatten(),
        });
    }
    planned.sort_by_key(|p| order(&p.name));
    control.add_work(planned.iter().map(|p| p.entry.byte_len()).sum());
    let kvs = metadata(model, step.ggml_type)?;
    let mut out = BufWriter::with_capacity(8 << 20, File::create(output)?);
    out.write_all(&header(&kvs, &tensor_infos(&planned))?)?;
    let file = File::open(input)?;
    let mut stats = Vec::with_capacity(planned.len());
    let mut model_error = ErrorSums::default();
    for p in &planned {
        control.checkpoint()?;
        let t = p.entry;
        let window = map_chunk(&file, &index, (t.begin, t.byte_len() as usize))?;
        let mut values = as_f32(&window, t.dtype).into_owned();
        require_finite(t, &values, "GGUF export")?;
        if let Some(heads) = p.permute {
            values = permute_rows(&values, heads, t.shape[0] as usize, t.shape[1] as usize);
        }
        let cols = *t.shape.last().unwrap_or(&1) as usize;
        let mut weighted = false;
        let (bytes, sums) = match p.stored {
            Stored::F32 => (values.iter().flat_map(|v| v.to_le_bytes()).collect(), None),
            Stored::F16 => {
                let (b, s) = encode(GgufType::F16, &values, cols)?;
                (b, Some(s))
            }
            Stored::Quant(q) => {
                let weights = importance
                    .filter(|_| ggml_weighted::supports(q))
                    .and_then(|m| m.importance(&p.name))
                    .filter(|w| w.len() == cols);
                weighted = weights.is_some();
                let (b, s) = match weights {
                    Some(w) => ggml_weighted::encode(q, &values, cols, &w),
                    None => encode(q, &values, cols)?,
                };
                (b, Some(s))
            }
            Stored::Int(_) => unreachable!("float tensors only"),
        };
        debug_assert_eq!(bytes.len() as u64, p.bytes);
        if let Some(s) = &sums {
            model_error.merge(s);
        }
        out.write_all(&bytes)?;
        out.write_all(&vec![0u8; padding(bytes.len() as u64)])?;
        control.advance(t.byte_len());
        stats.push(GgufTensorStats {
            name: p.name.clone(),
            stored_as: stored_name(p.stored),
            parameters: t.numel(),
            bytes_before: t.byte_len(),
            bytes_after: p.bytes,
            bits_per_weight: p.bytes as f64 * 8.0 / t.numel().max(1) as f64,
            error: sums.map(|s| s.stats()),
            kept_because: match p.stored {
                Stored::Quant(q) if q != step.ggml_type.block() => Some(format!(
                    "{} as llama.cpp chooses it for {}",
                    q.name(),
                    step.ggml_type.name()
                )),
                Stored::F32 => {
                    Some("one-dimensional (norms, biases): F32 as llama.cpp keeps them".into())
                }
                _ => None,
            },
            imatrix: weighted,
        });
    }
    out.flush()?;
    drop(out);
    let file_bytes_after = std::fs::metadata(output)?.len();
    let mut report = totals(step, stats, Vec::new(), model_error.stats());
    report.file_bytes_before = index.file_len;
    report.file_bytes_after = file_bytes_after;
    report.compression_ratio = index.file_len as f64 / file_bytes_after.max(1) as f64;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The converter's order: embeddings, the blocks in turn, the final norm, the head.
fn order(name: &str) -> (u64, u64, String) {
    match name {
        "token_embd.weight" => (0, 0, String::new()),
        "output_norm.weight" => (2, 0, String::new()),
        "output.weight" => (3, 0, String::new()),
        _ => {
            let layer = name
                .strip_prefix("blk.")
                .and_then(|r| r.split('.').next())
                .and_then(|l| l.parse().ok())
                .unwrap_or(0);
            (1, layer, name.to_owned())
        }
    }
}

/// Hugging Face's q/k row order → llama.cpp's: row (head, s, j) moves to (head, j, s).
fn permute_rows(values: &[f32], heads: usize, rows: usize, cols: usize) -> Vec<f32> {
    let half = rows / heads / 2;
    let mut out = vec![0f32; values.len()];
    for h in 0..heads {
        for s in 0..2 {
            for j in 0..half {
                let from = (h * 2 * half + s * half + j) * cols;
                let to = (h * 2 * half + j * 2 + s) * cols;
                out[to..to + cols].copy_from_slice(&values[from..from + cols]);
            }
        }
    }
    out
}

fn metadata(m: &LlamaModel, t: GgufType) -> Result<Vec<(String, Kv)>, CompressError> {
    let c = m.config;
    let a = m.arch;
    let mut kvs: Vec<(String, Kv)> = vec![
        ("general.architecture".into(), Kv::Str(a.into())),
        ("general.name".into(), Kv::Str(m.name.into())),
        ("general.alignment".into(), Kv::U32(ALIGNMENT as u32)),
        ("general.file_type".into(), Kv::U32(file_type(t))),
        ("general.quantization_version".into(), Kv::U32(2)),
        (
            format!("{a}.context_length"),
            Kv::U32(c.max_positions as u32),
        ),
        (format!("{a}.embedding_length"), Kv::U32(c.hidden as u32)),
        (format!("{a}.block_count"), Kv::U32(c.layers as u32)),
        (
            format!("{a}.feed_forward_length"),
            Kv::U32(c.intermediate as u32),
        ),
        (format!("{a}.attention.head_count"), Kv::U32(c.heads as u32)),
        (
            format!("{a}.attention.head_count_kv"),
            Kv::U32(c.kv_heads as u32),
        ),
        (format!("{a}.rope.freq_base"), Kv::F32(c.rope_theta as f32)),
        (
            format!("{a}.attention.layer_norm_rms_epsilon"),
            Kv::F32(c.rms_eps as f32),
        ),
        (format!("{a}.vocab_size"), Kv::U32(c.vocab as u32)),
        (
            format!("{a}.rope.dimension_count"),
            Kv::U32(c.head_dim as u32),
        ),
    ];
    if a == "llama" && c.head_dim * c.heads != c.hidden {
        kvs.push((
            format!("{a}.attention.key_length"),
            Kv::U32(c.head_dim as u32),
        ));
        kvs.push((
            format!("{a}.attention.value_length"),
            Kv::U32(c.head_dim as u32),
        ));
    }
    kvs.extend(tokenizer(m)?);
    Ok(kvs)
}

/// The byte-level BPE vocabulary as llama.cpp reads it.
fn tokenizer(m: &LlamaModel) -> Result<Vec<(String, Kv)>, CompressError> {
    let tok = m.tokenizer;
    let model = &tok["model"];
    if model["type"] != "BPE" {
        return Err(bad(format!(
            "the tokenizer is {} ; llama.cpp export writes byte-level BPE vocabularies",
            model["type"]
        )));
    }
    let pre = pre_name(&tok["pre_tokenizer"]).ok_or_else(|| {
        bad(format!(
            "the pre-tokenizer {} is not one compressd names for llama.cpp (gpt2, smollm)",
            tok["pre_tokenizer"]
        ))
    })?;
    let vocab = model["vocab"]
        .as_object()
        .ok_or_else(|| bad("tokenizer.json has no vocab".into()))?;
    let size = m.config.vocab;
    let mut tokens: Vec<Option<String>> = vec![None; size];
    let mut types = vec![1i32; size];
    for (t, id) in vocab {
        if let Some(i) = id.as_u64().map(|i| i as usize).filter(|i| *i < size) {
            tokens[i] = Some(t.clone());
        }
    }
    for a in tok["added_tokens"].as_array().into_iter().flatten() {
        if let (Some(i), Some(content)) =
            (a["id"].as_u64().map(|i| i as usize), a["content"].as_str())
        {
            if i < size {
                tokens[i] = Some(content.to_owned());
                types[i] = if a["special"].as_bool() == Some(true) {
                    3
                } else {
                    4
                };
            }
        }
    }
    let tokens: Vec<String> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            t.unwrap_or_else(|| {
                types[i] = 5;
                format!("[PAD{i}]")
            })
        })
        .collect();
    let merges: Vec<String> = model["merges"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|mg| match mg {
            Value::String(s) => Some(s.clone()),
            Value::Array(pair) => Some(
                pair.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            _ => None,
        })
        .collect();
    let id_of = |key: &str| -> Option<u32> {
        let tc = m.tokenizer_config?;
        let content = match &tc[key] {
            Value::String(s) => s.clone(),
            Value::Object(o) => o.get("content")?.as_str()?.to_owned(),
            _ => return None,
        };
        tokens.iter().position(|t| *t == content).map(|i| i as u32)
    };
    let mut kvs = vec![
        ("tokenizer.ggml.model".to_owned(), Kv::Str("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Kv::Str(pre.into())),
        ("tokenizer.ggml.tokens".into(), Kv::Strs(tokens.clone())),
        ("tokenizer.ggml.token_type".into(), Kv::I32s(types)),
        ("tokenizer.ggml.merges".into(), Kv::Strs(merges)),
    ];
    let ids = [
        (
            "tokenizer.ggml.bos_token_id",
            id_of("bos_token").or(m.config.bos_token_id),
        ),
        (
            "tokenizer.ggml.eos_token_id",
            id_of("eos_token").or(m.config.eos_token_id),
        ),
        ("tokenizer.ggml.unknown_token_id", id_of("unk_token")),
        ("tokenizer.ggml.padding_token_id", id_of("pad_token")),
    ];
    for (k, v) in ids {
        if let Some(v) = v {
            kvs.push((k.into(), Kv::U32(v)));
        }
    }
    let tc = m.tokenizer_config;
    let add_bos = tc
        .and_then(|t| t["add_bos_token"].as_bool())
        .unwrap_or(false);
    kvs.push(("tokenizer.ggml.add_bos_token".into(), Kv::Bool(add_bos)));
    if let Some(template) = tc.and_then(|t| t["chat_template"].as_str()) {
        kvs.push(("tokenizer.chat_template".into(), Kv::Str(template.into())));
    }
    Ok(kvs)
}

/// The name llama.cpp gives a tokenizer's pre-tokenizer (its converter recognises them by
/// the tokens they make of a probe text; these are the structures those names stand for).
fn pre_name(pre: &Value) -> Option<&'static str> {
    let byte_level = |v: &Value| v["type"] == "ByteLevel" && v["use_regex"] != false;
    if byte_level(pre) {
        return Some("gpt2");
    }
    let parts = pre["pretokenizers"].as_array()?;
    match parts.as_slice() {
        [d, b]
            if pre["type"] == "Sequence"
                && d["type"] == "Digits"
                && d["individual_digits"] == true
                && byte_level(b) =>
        {
            Some("smollm")
        }
        _ => None,
    }
}

fn tensor_infos<'a>(planned: &'a [Planned]) -> Vec<TensorInfo<'a>> {
    planned
        .iter()
        .map(|p| TensorInfo {
            name: &p.name,
            dims: ggml_dims(&p.shape),
            type_id: type_id(p.stored),
            bytes: p.bytes,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_as_llama_quantize_picks_them() {
        // SmolLM2: 30 layers, rows of 576 (or 1536 for ffn_down), tied embeddings.
        let smollm2 = |target: GgufType, imatrix: bool| Choice {
            target,
            tied: true,
            layers: 30,
            kv_groups: 3,
            imatrix,
        };
        let pick =
            |name: &str, cols: u64, t: GgufType| tensor_type(name, 2, cols, &smollm2(t, false));
        assert_eq!(
            pick("token_embd.weight", 576, GgufType::Q4_1),
            Some(GgufType::Q8_0),
            "Q6_K falls back to Q8_0"
        );
        assert_eq!(
            pick("blk.3.attn_q.weight", 576, GgufType::Q4_1),
            Some(GgufType::Q4_1)
        );
        assert_eq!(
            pick("blk.0.attn_v.weight", 576, GgufType::Q4KM),
            Some(GgufType::Q8_0),
            "Q6_K → Q8_0 on 576"
        );
        assert_eq!(
            pick("blk.4.attn_v.weight", 576, GgufType::Q4KM),
            Some(GgufType::Q5_0),
            "Q4_K → Q5_0 on 576"
        );
        assert_eq!(
            pick("blk.0.ffn_down.weight", 1536, GgufType::Q4KM),
            Some(GgufType::Q6K)
        );
        assert_eq!(
            pick("blk.4.ffn_down.weight", 1536, GgufType::Q4KM),
            Some(GgufType::Q4K)
        );
        assert_eq!(
            tensor_type(
                "blk.0.attn_norm.weight",
                1,
                576,
                &smollm2(GgufType::Q4_0, false)
            ),
            None
        );
        // With an importance matrix, Q4_0's first ffn_down layers become Q4_1 (and Q5_0's
        // Q5_1), as llama.cpp guards them.
        let with_matrix = |name: &str, t: GgufType| tensor_type(name, 2, 1536, &smollm2(t, true));
        assert_eq!(
            with_matrix("blk.2.ffn_down.weight", GgufType::Q4_0),
            Some(GgufType::Q4_1)
        );
        assert_eq!(
            with_matrix("blk.3.ffn_down.weight", GgufType::Q4_0),
            Some(GgufType::Q4_0)
        );
        assert_eq!(
            with_matrix("blk.0.ffn_down.weight", GgufType::Q5_0),
            Some(GgufType::Q5_1)
        );
        assert_eq!(
            with_matrix("blk.0.attn_q.weight", GgufType::Q4_0),
            Some(GgufType::Q4_0)
        );
        assert_eq!(
            pick("blk.0.ffn_up.weight", 576, GgufType::F16),
            Some(GgufType::F16)
        );
    }

    #[test]
    fn permuting_rows_matches_the_converters_reshape() {
        // 2 heads of 4 rows: HF rows (h, s, j) → llama.cpp rows (h, j, s).
        let v: Vec<f32> = (0..8).map(|r| r as f32).collect();
        assert_eq!(
            permute_rows(&v, 2, 8, 1),
            vec![0., 2., 1., 3., 4., 6., 5., 7.]
        );
    }
}
