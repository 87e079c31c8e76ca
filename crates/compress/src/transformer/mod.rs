//! Transformers as people deploy them: Hugging Face configs and checkpoints, the Llama
//! family's and BERT's forward passes written here (candle-transformers' models expose neither
//! per-layer inputs nor logits at every position, which calibration and perplexity need),
//! tokenizers, text datasets and the fidelity figures compression is judged by.

pub mod attention;
pub mod calibration;
pub mod config;
pub mod decoder;
pub mod encoder;
pub mod eval;
pub mod fastmath;
pub mod fidelity;
pub mod gguf_import;
pub mod job;
pub mod observer;
pub mod similarity;
pub mod tensors;
pub mod text;
pub mod tokenizer;
pub mod weights;

pub(crate) use crate::nn::network::nn_error;

pub use config::{DecoderConfig, EncoderConfig, Family, ModelConfig, TransformerConfig};
pub use job::{TextData, TransformerJob};
pub use observer::Observer;
pub use tokenizer::TextTokenizer;
pub use weights::{SafetensorsWeights, WeightSource};
