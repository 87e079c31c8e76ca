//! Logits at every position and sentence embeddings, against PyTorch `transformers` on the
//! same weights and tokens, to 1e-4.

use compressd::compress::transformer::{decoder, encoder, TransformerConfig};

use crate::fixtures::{config, max_abs_diff, reference, rows, weights};

fn decoder_matches_pytorch(name: &str) {
    let TransformerConfig::Decoder(c) = config(name) else {
        panic!("{name} is a decoder")
    };
    let r = reference(name);
    let ids = rows(&r["input_ids"]);
    let logits = decoder::logits(&c, &weights(name), &ids).unwrap();
    assert_eq!(logits.dims(), r["logits"].shape.as_slice());
    let ours: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
    let diff = max_abs_diff(&ours, &r["logits"].values);
    assert!(
        diff < 1e-4,
        "{name}: logits differ from PyTorch's by {diff}"
    );
}

/// Grouped-query attention, tied embeddings.
#[test]
fn llama_logits_match_pytorch() {
    decoder_matches_pytorch("llama");
}

/// q/k/v biases, an untied head, rope_theta 10^6.
#[test]
fn qwen2_logits_match_pytorch() {
    decoder_matches_pytorch("qwen2");
}

#[test]
fn mistral_logits_match_pytorch() {
    decoder_matches_pytorch("mistral");
}

/// Padded batch with an attention mask; mean pooling and L2 normalisation.
#[test]
fn bert_hidden_states_and_embeddings_match_pytorch() {
    let TransformerConfig::Encoder(c) = config("bert") else {
        panic!("bert is an encoder")
    };
    let r = reference("bert");
    let (ids, mask) = (rows(&r["input_ids"]), rows(&r["attention_mask"]));
    let w = weights("bert");
    let hidden = encoder::hidden_states(&c, &w, &ids, &mask).unwrap();
    let ours: Vec<f32> = hidden.flatten_all().unwrap().to_vec1().unwrap();
    // Padded positions are never read; compare the ones the mask keeps.
    let width = c.hidden;
    let kept: Vec<(f32, f64)> = ours
        .chunks(width)
        .zip(r["last_hidden_state"].values.chunks(width))
        .zip(mask.iter().flatten())
        .filter(|(_, &m)| m == 1)
        .flat_map(|((a, b), _)| a.iter().copied().zip(b.iter().copied()))
        .collect();
    let diff = kept
        .iter()
        .map(|(a, b)| (*a as f64 - b).abs())
        .fold(0.0, f64::max);
    assert!(diff < 1e-4, "hidden states differ by {diff}");
    let emb = encoder::sentence_embeddings(&hidden, &mask, true).unwrap();
    let emb: Vec<f32> = emb.flatten_all().unwrap().to_vec1().unwrap();
    let diff = max_abs_diff(&emb, &r["sentence_embedding"].values);
    assert!(diff < 1e-5, "embeddings differ by {diff}");
}
