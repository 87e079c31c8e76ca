//! What kind of file a step leaves (the artifact a user downloads): a description, the
//! tools that read it, and the suffix its file name takes.

#[derive(Debug, Clone, PartialEq)]
pub struct Format {
    pub description: String,
    pub read_with: &'static [&'static str],
    /// Appended to the model's name to make the artifact's file name.
    pub suffix: String,
    /// Whether compressd's dense reader restores it as a model that runs (the after-evaluation
    /// and the weight histograms read it).
    pub dense_readable: bool,
}

const ANY_SAFETENSORS_READER: &[&str] = &[
    "safetensors (Python, Rust)",
    "PyTorch via safetensors.torch.load_file",
    "candle",
    "transformers",
];
const COMPRESSED_TENSORS: &[&str] = &[
    "vLLM and llm-compressor (compressed-tensors 0.9 layout)",
    "compressd's reader (docs/formats.md)",
    "any safetensors reader, as raw tensors",
];
const GGUF_READERS: &[&str] = &[
    "llama.cpp",
    "gguf (Python reference reader)",
    "candle (quantized::gguf_file)",
];
const ZSTD_READERS: &[&str] = &[
    "zstd -d (any zstd library), then the readers of the restored format",
    "compressd's reader (docs/formats.md), directly",
];
const SPARSE_READERS: &[&str] = &[
    "compressd's reader (docs/formats.md)",
    "any safetensors reader, as raw mask/values tensors",
];

fn safetensors(description: &str, read_with: &'static [&'static str]) -> Format {
    Format {
        description: description.into(),
        read_with,
        suffix: ".compressed.safetensors".into(),
        dense_readable: true,
    }
}

impl Format {
    /// The input's own layout: same names, shapes, dtypes and metadata.
    pub fn dense() -> Format {
        safetensors(
            "safetensors, dense: same names, shapes, dtypes and metadata as the input",
            ANY_SAFETENSORS_READER,
        )
    }

    pub fn sparse() -> Format {
        safetensors("safetensors with bitmask-v1 sparse tensors", SPARSE_READERS)
    }

    pub fn quantized(sparse: bool) -> Format {
        if sparse {
            safetensors(
                "safetensors with bitmask-v1 sparse tensors and quantized codes",
                SPARSE_READERS,
            )
        } else {
            safetensors(
                "safetensors, quantized (compressed-tensors conventions)",
                COMPRESSED_TENSORS,
            )
        }
    }

    /// A dense copy of a quantized model, written beside it on request.
    pub fn dequantized() -> Format {
        Format {
            description:
                "safetensors, dense: the input's layout with the quantization error baked in".into(),
            read_with: ANY_SAFETENSORS_READER,
            suffix: ".dequantized.safetensors".into(),
            dense_readable: true,
        }
    }

    pub fn imatrix() -> Format {
        Format {
            description: "llama.cpp importance matrix (GGUF imatrix: Σx² per input column of every block linear, and its token count)".into(),
            read_with: &["llama-quantize --imatrix", "gguf (Python reference reader)"],
            suffix: ".imatrix.gguf".into(),
            dense_readable: false,
        }
    }

    pub fn gguf() -> Format {
        Format {
            description: "GGUF v3 (ggml block types)".into(),
            read_with: GGUF_READERS,
            suffix: ".gguf".into(),
            dense_readable: false,
        }
    }

    /// `inner` coded as a whole with zstd.
    pub fn zstd(inner: &Format) -> Format {
        let suffix = if inner.suffix.ends_with(".zst") {
            inner.suffix.clone()
        } else {
            format!("{}.zst", inner.suffix)
        };
        Format {
            description: format!(
                "zstd-compressed file; restored, it is {}",
                inner.description
            ),
            read_with: ZSTD_READERS,
            suffix,
            dense_readable: inner.dense_readable,
        }
    }
}
