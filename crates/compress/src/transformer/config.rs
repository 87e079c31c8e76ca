//! A Hugging Face `config.json`, read into what the forward passes need. The family comes
//! from `architectures[0]`; anything else is a weights-only model (the operations that read
//! only weights still apply).

use serde_json::Value;

use crate::CompressError;

/// Which forward pass a model takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// LlamaForCausalLM, MistralForCausalLM (no bias), Qwen2ForCausalLM (q/k/v bias).
    Decoder,
    /// BertModel and the BERT encoders of sentence-transformers.
    Encoder,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DecoderConfig {
    pub vocab: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub rope_theta: f64,
    pub rms_eps: f64,
    pub tie_embeddings: bool,
    /// Biases on q, k and v (Qwen2; Llama's `attention_bias`).
    pub qkv_bias: bool,
    /// A bias on the attention output too (Llama's `attention_bias`).
    pub o_bias: bool,
    pub mlp_bias: bool,
    pub max_positions: usize,
    /// Mistral's sliding window; windows longer than it are refused rather than computed
    /// as full attention.
    pub sliding_window: Option<usize>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EncoderConfig {
    pub vocab: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub max_positions: usize,
    pub type_vocab: usize,
    pub layer_norm_eps: f64,
    /// `gelu` (erf) or `gelu_new`/`gelu_pytorch_tanh` (tanh approximation).
    pub gelu_tanh: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TransformerConfig {
    Decoder(DecoderConfig),
    Encoder(EncoderConfig),
}

/// What `architectures[0]` names, and whether compressd runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub architecture: String,
    /// None: not a family compressd runs (weights-only).
    pub runs: Option<TransformerConfig>,
}

const DECODERS: &[&str] = &["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"];
const ENCODERS: &[&str] = &["BertModel", "BertForMaskedLM", "BertForPreTraining"];

/// The families compressd runs, for messages.
pub fn supported() -> String {
    DECODERS
        .iter()
        .chain(ENCODERS)
        .copied()
        .collect::<Vec<_>>()
        .join(", ")
}

fn bad(msg: String) -> CompressError {
    CompressError::InvalidModel(format!("config.json: {msg}"))
}

struct Fields<'a>(&'a serde_json::Map<String, Value>);

impl Fields<'_> {
    fn size(&self, key: &str) -> Result<usize, CompressError> {
        self.opt_size(key)?
            .ok_or_else(|| bad(format!("'{key}' is missing")))
    }

    fn opt_size(&self, key: &str) -> Result<Option<usize>, CompressError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .filter(|n| (1..=1 << 24).contains(n))
                .map(|n| Some(n as usize))
                .ok_or_else(|| {
                    bad(format!(
                        "'{key}' must be a whole number from 1 to 2^24, got {v}"
                    ))
                }),
        }
    }

    fn float(&self, key: &str, default: f64) -> Result<f64, CompressError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|f| f.is_finite() && *f > 0.0)
                .ok_or_else(|| bad(format!("'{key}' must be a positive number, got {v}"))),
        }
    }

    fn flag(&self, key: &str, default: bool) -> bool {
        self.0.get(key).and_then(Value::as_bool).unwrap_or(default)
    }

    fn token(&self, key: &str) -> Option<u32> {
        match self.0.get(key) {
            Some(Value::Array(ids)) => ids.first().and_then(Value::as_u64),
            Some(v) => v.as_u64(),
            None => None,
        }
        .and_then(|v| u32::try_from(v).ok())
    }
}

impl ModelConfig {
    pub fn parse(config: &Value) -> Result<ModelConfig, CompressError> {
        let Value::Object(map) = config else {
            return Err(bad("must be a JSON object".into()));
        };
        let architecture = map
            .get("architectures")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let f = Fields(map);
        let runs = if DECODERS.contains(&architecture.as_str()) {
            Some(TransformerConfig::Decoder(decoder(&f, &architecture)?))
        } else if ENCODERS.contains(&architecture.as_str())
            || (architecture.is_empty()
                && map.get("model_type").and_then(Value::as_str) == Some("bert"))
        {
            Some(TransformerConfig::Encoder(encoder(&f)?))
        } else {
            None
        };
        Ok(ModelConfig { architecture, runs })
    }
}

fn decoder(f: &Fields, architecture: &str) -> Result<DecoderConfig, CompressError> {
    let hidden = f.size("hidden_size")?;
    let heads = f.size("num_attention_heads")?;
    let kv_heads = f.opt_size("num_key_value_heads")?.unwrap_or(heads);
    let head_dim = match f.opt_size("head_dim")? {
        Some(d) => d,
        None if hidden % heads == 0 => hidden / heads,
        None => {
            return Err(bad(format!(
                "hidden_size {hidden} is not a multiple of num_attention_heads {heads}"
            )))
        }
    };
    if heads % kv_heads != 0 || head_dim % 2 != 0 {
        return Err(bad(format!(
            "num_attention_heads {heads} must be a multiple of num_key_value_heads {kv_heads}, and the head size {head_dim} even"
        )));
    }
    // transformers 5 keeps rope_theta under rope_parameters; older configs at the top.
    let rope =
        f.0.get("rope_parameters")
            .or_else(|| f.0.get("rope_scaling"));
    let rope_fields = rope.and_then(Value::as_object);
    let rope_type = rope_fields
        .and_then(|r| r.get("rope_type").or_else(|| r.get("type")))
        .and_then(Value::as_str)
        .unwrap_or("default");
    if rope_type != "default" {
        return Err(CompressError::InvalidModel(format!(
            "config.json: rope scaling '{rope_type}' is not supported yet (plain rotary embeddings only)"
        )));
    }
    let rope_theta = match rope_fields.map(Fields) {
        Some(r) if r.0.contains_key("rope_theta") => r.float("rope_theta", 10_000.0)?,
        _ => f.float("rope_theta", 10_000.0)?,
    };
    let act =
        f.0.get("hidden_act")
            .and_then(Value::as_str)
            .unwrap_or("silu");
    if act != "silu" {
        return Err(bad(format!(
            "hidden_act '{act}' is not supported for {architecture} (silu only)"
        )));
    }
    let qwen = architecture == "Qwen2ForCausalLM";
    let attention_bias = f.flag("attention_bias", false);
    let sliding = f.flag("use_sliding_window", architecture == "MistralForCausalLM");
    Ok(DecoderConfig {
        vocab: f.size("vocab_size")?,
        hidden,
        intermediate: f.size("intermediate_size")?,
        layers: f.size("num_hidden_layers")?,
        heads,
        kv_heads,
        head_dim,
        rope_theta,
        rms_eps: f.float("rms_norm_eps", 1e-6)?,
        tie_embeddings: f.flag("tie_word_embeddings", false),
        qkv_bias: qwen || attention_bias,
        o_bias: attention_bias,
        mlp_bias: f.flag("mlp_bias", false),
        max_positions: f.opt_size("max_position_embeddings")?.unwrap_or(2048),
        sliding_window: if sliding {
            f.opt_size("sliding_window")?
        } else {
            None
        },
        bos_token_id: f.token("bos_token_id"),
        eos_token_id: f.token("eos_token_id"),
    })
}

fn encoder(f: &Fields) -> Result<EncoderConfig, CompressError> {
    let act =
        f.0.get("hidden_act")
            .and_then(Value::as_str)
            .unwrap_or("gelu");
    let gelu_tanh = match act {
        "gelu" => false,
        "gelu_new" | "gelu_pytorch_tanh" => true,
        other => {
            return Err(bad(format!(
                "hidden_act '{other}' is not supported for BERT (gelu, gelu_new)"
            )))
        }
    };
    if let Some(p) = f.0.get("position_embedding_type").and_then(Value::as_str) {
        if p != "absolute" {
            return Err(bad(format!(
                "position_embedding_type '{p}' is not supported (absolute only)"
            )));
        }
    }
    let hidden = f.size("hidden_size")?;
    let heads = f.size("num_attention_heads")?;
    if hidden % heads != 0 {
        return Err(bad(format!(
            "hidden_size {hidden} is not a multiple of num_attention_heads {heads}"
        )));
    }
    Ok(EncoderConfig {
        vocab: f.size("vocab_size")?,
        hidden,
        intermediate: f.size("intermediate_size")?,
        layers: f.size("num_hidden_layers")?,
        heads,
        max_positions: f.opt_size("max_position_embeddings")?.unwrap_or(512),
        type_vocab: f.opt_size("type_vocab_size")?.unwrap_or(2),
        layer_norm_eps: f.float("layer_norm_eps", 1e-12)?,
        gelu_tanh,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn families_from_architectures() {
        let llama = json!({"architectures":["LlamaForCausalLM"],"hidden_size":64,"intermediate_size":128,
            "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":384,
            "rope_parameters":{"rope_theta":10000.0,"rope_type":"default"},"tie_word_embeddings":true});
        let c = ModelConfig::parse(&llama).unwrap();
        let Some(TransformerConfig::Decoder(d)) = c.runs else {
            panic!()
        };
        assert_eq!(
            (d.head_dim, d.kv_heads, d.tie_embeddings, d.qkv_bias),
            (16, 2, true, false)
        );
        let qwen = json!({"architectures":["Qwen2ForCausalLM"],"hidden_size":64,"intermediate_size":128,
            "num_hidden_layers":2,"num_attention_heads":4,"vocab_size":384,"rope_theta":1e6});
        let Some(TransformerConfig::Decoder(q)) = ModelConfig::parse(&qwen).unwrap().runs else {
            panic!()
        };
        assert!(q.qkv_bias && !q.o_bias);
        assert_eq!(q.rope_theta, 1e6);
        let other = json!({"architectures":["T5ForConditionalGeneration"]});
        assert_eq!(ModelConfig::parse(&other).unwrap().runs, None);
        let scaled = json!({"architectures":["LlamaForCausalLM"],"hidden_size":64,"intermediate_size":128,
            "num_hidden_layers":2,"num_attention_heads":4,"vocab_size":384,"rope_scaling":{"rope_type":"llama3"}});
        let e = ModelConfig::parse(&scaled).unwrap_err().to_string();
        assert!(e.contains("llama3"), "{e}");
    }
}
