//! Perplexity, KL divergence and top-1 agreement, computed a block at a time, against the
//! same figures PyTorch computes on the same windows: the Llama fixture and a copy whose
//! block linear layers lost half their weights (smallest magnitudes, tensor by tensor).

use compressd::compress::transformer::text::windows;
use compressd::compress::transformer::{
    eval, SafetensorsWeights, TextTokenizer, TransformerConfig,
};
use compressd::compress::{prune_file, Control};
use compressd::domain::{Pipeline, Step};
use serde_json::json;

use crate::fixtures::{config, dir, weights};

fn pruned_copy(out: &std::path::Path) {
    let pipeline = Pipeline::parse(&[
        json!({"op":"prune","sparsity":0.5,"include":["model.layers.*_proj.weight"]}),
    ])
    .unwrap();
    let Step::Prune(step) = &pipeline.steps()[0] else {
        panic!()
    };
    prune_file(
        &dir("llama").join("model.safetensors"),
        out,
        step,
        &Control::new(Default::default()),
    )
    .unwrap();
}

#[test]
fn perplexity_kl_and_agreement_match_pytorch() {
    let TransformerConfig::Decoder(c) = config("llama") else {
        panic!()
    };
    let want: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir("llama").join("perplexity.json")).unwrap(),
    )
    .unwrap();
    let tok = TextTokenizer::from_file(&dir("bpe.tokenizer.json")).unwrap();
    let text = std::fs::read_to_string(dir("text.txt")).unwrap();
    let ids = tok.encode(&text, false).unwrap();
    let windows = windows(&ids, 64, 64, 512, None);
    let tmp = tempfile::tempdir().unwrap();
    let pruned_path = tmp.path().join("pruned.safetensors");
    pruned_copy(&pruned_path);
    let pruned = SafetensorsWeights::open(&pruned_path).unwrap();
    let original = weights("llama");
    let control = Control::new(Default::default());
    let (figures, versus) = eval::decoders(&c, &[&original, &pruned], &windows, &control).unwrap();
    assert_eq!(
        figures[0].predictions,
        Some(want["predictions"].as_u64().unwrap())
    );
    let close = |a: f64, b: f64, tol: f64, what: &str| {
        assert!((a / b - 1.0).abs() < tol, "{what}: {a} vs PyTorch {b}")
    };
    close(
        figures[0].perplexity.unwrap(),
        want["perplexity"].as_f64().unwrap(),
        1e-5,
        "perplexity",
    );
    close(
        figures[1].perplexity.unwrap(),
        want["perplexity_pruned"].as_f64().unwrap(),
        1e-5,
        "pruned perplexity",
    );
    close(
        versus[0].kl_mean.unwrap(),
        want["kl_mean"].as_f64().unwrap(),
        1e-4,
        "KL",
    );
    assert_eq!(versus[0].top1_agreement, want["top1_agreement"].as_f64());
    assert!(versus[0].perplexity_change.unwrap() > 0.0);
}
