//! The tensors each family's weights must hold, by Hugging Face name and shape; the check
//! that an upload holds exactly them; and which of them are the blocks' linear layers (what
//! weight-only compression touches by default).

use super::config::{DecoderConfig, EncoderConfig, TransformerConfig};
use domain::{NamePattern, TensorSelection};

/// A tensor a family needs: its name and shape.
pub type Expected = (String, Vec<u64>);

fn decoder(c: &DecoderConfig) -> Vec<Expected> {
    let (h, i) = (c.hidden as u64, c.intermediate as u64);
    let (q, kv) = (
        (c.heads * c.head_dim) as u64,
        (c.kv_heads * c.head_dim) as u64,
    );
    let mut out = vec![(
        "model.embed_tokens.weight".to_owned(),
        vec![c.vocab as u64, h],
    )];
    for l in 0..c.layers {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        out.push((p("input_layernorm.weight"), vec![h]));
        for (proj, rows) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
            out.push((p(&format!("self_attn.{proj}.weight")), vec![rows, h]));
            if c.qkv_bias {
                out.push((p(&format!("self_attn.{proj}.bias")), vec![rows]));
            }
        }
        out.push((p("self_attn.o_proj.weight"), vec![h, q]));
        if c.o_bias {
            out.push((p("self_attn.o_proj.bias"), vec![h]));
        }
        out.push((p("post_attention_layernorm.weight"), vec![h]));
        for (proj, shape) in [
            ("gate_proj", [i, h]),
            ("up_proj", [i, h]),
            ("down_proj", [h, i]),
        ] {
            out.push((p(&format!("mlp.{proj}.weight")), shape.to_vec()));
            if c.mlp_bias {
                out.push((p(&format!("mlp.{proj}.bias")), vec![shape[0]]));
            }
        }
    }
    out.push(("model.norm.weight".to_owned(), vec![h]));
    if !c.tie_embeddings {
        out.push(("lm_head.weight".to_owned(), vec![c.vocab as u64, h]));
    }
    out
}

fn encoder(c: &EncoderConfig, prefix: &str) -> Vec<Expected> {
    let (h, i) = (c.hidden as u64, c.intermediate as u64);
    let e = |s: &str| format!("{prefix}embeddings.{s}");
    let mut out = vec![
        (e("word_embeddings.weight"), vec![c.vocab as u64, h]),
        (
            e("position_embeddings.weight"),
            vec![c.max_positions as u64, h],
        ),
        (
            e("token_type_embeddings.weight"),
            vec![c.type_vocab as u64, h],
        ),
        (e("LayerNorm.weight"), vec![h]),
        (e("LayerNorm.bias"), vec![h]),
    ];
    for l in 0..c.layers {
        let p = |s: &str| format!("{prefix}encoder.layer.{l}.{s}");
        for (name, shape) in [
            ("attention.self.query", [h, h]),
            ("attention.self.key", [h, h]),
            ("attention.self.value", [h, h]),
            ("attention.output.dense", [h, h]),
            ("intermediate.dense", [i, h]),
            ("output.dense", [h, i]),
        ] {
            out.push((p(&format!("{name}.weight")), shape.to_vec()));
            out.push((p(&format!("{name}.bias")), vec![shape[0]]));
        }
        for norm in ["attention.output.LayerNorm", "output.LayerNorm"] {
            out.push((p(&format!("{norm}.weight")), vec![h]));
            out.push((p(&format!("{norm}.bias")), vec![h]));
        }
    }
    out
}

/// Tensors a checkpoint may hold beyond what the forward pass reads: buffers older
/// transformers saved, a tied head saved anyway, BERT's pooler and pre-training heads.
fn tolerated(name: &str, prefix: &str) -> bool {
    name.ends_with("rotary_emb.inv_freq")
        || name == "lm_head.weight"
        || name == format!("{prefix}embeddings.position_ids")
        || name.starts_with(&format!("{prefix}pooler."))
        || name.starts_with("cls.")
}

/// Every tensor the model's family needs, named as in `names` (BERT checkpoints may prefix
/// them with `bert.`).
pub fn expected(config: &TransformerConfig, names: &[&str]) -> Vec<Expected> {
    match config {
        TransformerConfig::Decoder(c) => decoder(c),
        TransformerConfig::Encoder(c) => encoder(c, bert_prefix(names)),
    }
}

pub fn bert_prefix(names: &[&str]) -> &'static str {
    if names.iter().any(|n| n.starts_with("bert.embeddings.")) {
        "bert."
    } else {
        ""
    }
}

/// `Err` naming the first tensor that is missing, has the wrong shape, or should not be
/// there. `tensors` are (name, shape) as the files hold them.
pub fn check(config: &TransformerConfig, tensors: &[(&str, &[u64])]) -> Result<(), String> {
    let names: Vec<&str> = tensors.iter().map(|(n, _)| *n).collect();
    let prefix = match config {
        TransformerConfig::Encoder(_) => bert_prefix(&names),
        TransformerConfig::Decoder(_) => "",
    };
    let expected = expected(config, &names);
    for (name, shape) in &expected {
        match tensors.iter().find(|(n, _)| n == name) {
            None => {
                return Err(format!(
                    "tensor '{name}' is missing (the config asks for it)"
                ))
            }
            Some((_, s)) if *s != shape.as_slice() => {
                return Err(format!(
                    "tensor '{name}' has shape {s:?}; the config asks for {shape:?}"
                ))
            }
            Some(_) => {}
        }
    }
    if let Some((extra, _)) = tensors
        .iter()
        .find(|(n, _)| !expected.iter().any(|(e, _)| e == n) && !tolerated(n, prefix))
    {
        return Err(format!(
            "tensor '{extra}' is not part of this architecture (a checkpoint of another model, or of another config?)"
        ));
    }
    Ok(())
}

/// The blocks' linear layers: what weight-only compression selects by default on a
/// transformer (not embeddings, norms or the head).
pub fn block_linears(config: &TransformerConfig, names: &[&str]) -> TensorSelection {
    let patterns: Vec<String> = match config {
        TransformerConfig::Decoder(_) => vec![
            "model.layers.*.self_attn.*_proj.weight".into(),
            "model.layers.*.mlp.*_proj.weight".into(),
        ],
        TransformerConfig::Encoder(_) => {
            let p = bert_prefix(names);
            vec![
                format!("{p}encoder.layer.*.attention.*.weight"),
                format!("{p}encoder.layer.*.intermediate.dense.weight"),
                format!("{p}encoder.layer.*.output.dense.weight"),
            ]
        }
    };
    let include = patterns
        .into_iter()
        .map(|p| NamePattern::try_from(p).expect("fixed patterns are valid"))
        .collect();
    // `attention.*.weight` would take LayerNorm weights: those are one-dimensional, and the
    // selection's default rule keeps to tensors of two or more dimensions only when no
    // include is given, so they are excluded by name.
    let exclude = vec![NamePattern::try_from("*LayerNorm*".to_owned()).expect("valid")];
    TensorSelection::new(Some(include), exclude).expect("few patterns")
}
