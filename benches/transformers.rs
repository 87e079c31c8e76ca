//! The real models side by side with their reference implementations, in one run:
//! SmolLM2-135M-Instruct (imported from its Q4_1 GGUF) against PyTorch `transformers` and
//! llama.cpp, all-MiniLM-L6-v2 against sentence-transformers.
//!
//! `scripts/fetch_real_models.sh`, then `cargo bench --bench transformers` (needs python3 with
//! torch, transformers, sentence-transformers and llama-cpp-python; `REAL_MODELS` names the
//! fetched folder, `BENCH_TOKENS` the evaluation tokens (default 32768), `BENCH_LLAMA_TOKENS`
//! those of each llama.cpp comparison (default 4096)). Prints what each side measured and how
//! long it took; nothing here is estimated. The calibrated methods have their own bench
//! (`benches/calibration.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use compressd::compress::format::gguf::llama::{export_llama, LlamaModel};
use compressd::compress::format::gguf::reader::GgufIndex;
use compressd::compress::transformer::text::inspect_text;
use compressd::compress::transformer::{
    encoder, gguf_import, ModelConfig, SafetensorsWeights, TextData, TextTokenizer,
    TransformerConfig, TransformerJob,
};
use compressd::compress::Control;
use compressd::domain::steps::evaluate::TextProtocol;
use compressd::domain::{Pipeline, Step};
use serde_json::{json, Value};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn python(args: &[&str]) -> anyhow::Result<Value> {
    let out = Command::new("python3")
        .args(args)
        .env("OMP_NUM_THREADS", "2")
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "python3 {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    Ok(serde_json::from_str(text.lines().last().unwrap_or("null"))?)
}

fn main() -> anyhow::Result<()> {
    let root =
        PathBuf::from(std::env::var("REAL_MODELS").unwrap_or_else(|_| "target/real-models".into()));
    let work = tempfile::tempdir()?;
    println!(
        "{} threads; models from {}",
        rayon::current_num_threads(),
        root.display()
    );
    smollm2(&root, work.path())?;
    minilm(&root, work.path())?;
    Ok(())
}

fn smollm2(root: &Path, work: &Path) -> anyhow::Result<()> {
    let gguf = root.join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    let started = Instant::now();
    let dense = work.join("smollm2.safetensors");
    gguf_import::to_safetensors(&gguf, &dense)?;
    let import_s = started.elapsed().as_secs_f64();
    let (index, _map) = GgufIndex::open(&gguf)?;
    let imported = gguf_import::inspect(&index)?;
    let parameters: u64 = imported
        .tensors
        .iter()
        .map(|(_, s)| s.iter().product::<u64>())
        .sum();
    let Some(TransformerConfig::Decoder(config)) = ModelConfig::parse(&imported.config)?.runs
    else {
        anyhow::bail!("SmolLM2 is a decoder")
    };
    let tokenizer_json = imported
        .tokenizer
        .clone()
        .expect("SmolLM2 has a BPE vocabulary");
    println!("SmolLM2-135M-Instruct: {parameters} parameters; GGUF → dense f32 in {import_s:.1} s");

    let tokens = env("BENCH_TOKENS", 32_768);
    let text_file = work.join("lcet10.txt");
    std::fs::copy(root.join("texts/lcet10.txt"), &text_file)?;
    let job = job_for(&config, &tokenizer_json, &text_file, &dense)?;
    let protocol = TextProtocol {
        window: 2048,
        stride: None,
        bos: false,
        max_tokens: tokens,
        max_sentences: 0,
    };
    let control = Control::new(Default::default());
    let started = Instant::now();
    let ours = job.fidelity(&[&dense], &protocol, &control)?;
    let ours_s = started.elapsed().as_secs_f64();
    let ids: Vec<u32> = job
        .tokenizer
        .as_ref()
        .unwrap()
        .encode(&std::fs::read_to_string(&text_file)?, false)?;
    let ids_file = work.join("ids.json");
    std::fs::write(
        &ids_file,
        serde_json::to_vec(&ids[..ids.len().min(tokens)])?,
    )?;
    let torch = python(&[
        "scripts/real_model_reference.py",
        ids_file.to_str().unwrap(),
        "2048",
        root.join("smollm2").to_str().unwrap(),
    ])?;
    let (p_ours, p_torch) = (
        ours.before.perplexity.unwrap(),
        torch["perplexity"].as_f64().unwrap(),
    );
    println!(
        "perplexity of lcet10.txt, {} predictions in windows of 2048:",
        ours.before.predictions.unwrap()
    );
    println!(
        "  compressd {p_ours:.4} in {ours_s:.1} s ({:.0} tokens/s prefill)",
        ours.before.tokens_per_second
    );
    println!("  PyTorch   {p_torch:.4} in {:.1} s; relative difference {:.5} %, compressd/PyTorch time {:.2}",
        torch["seconds"].as_f64().unwrap(), (p_ours / p_torch - 1.0) * 100.0, ours_s / torch["seconds"].as_f64().unwrap());

    let tokenizer: Value = serde_json::from_str(&tokenizer_json)?;
    let tokenizer_config = imported.tokenizer_config.clone();
    let model = LlamaModel {
        config: &config,
        arch: "llama",
        tokenizer: &tokenizer,
        tokenizer_config: tokenizer_config.as_ref(),
        name: "SmolLM2-135M-Instruct",
    };
    let llama_tokens = env("BENCH_LLAMA_TOKENS", 4096);
    let short = TextProtocol {
        window: 2048,
        stride: None,
        bos: false,
        max_tokens: llama_tokens,
        max_sentences: 0,
    };
    let export = |input: &Path, ty: &str, out: &Path| -> anyhow::Result<_> {
        let pipeline = Pipeline::parse(&[json!({"op":"export","format":"gguf","type":ty})])?;
        let Step::Export(step) = &pipeline.steps()[0] else {
            unreachable!()
        };
        Ok(export_llama(input, out, step, &model, None, &control)?)
    };
    let llama_cpp = |gguf: &Path| {
        python(&[
            "scripts/llama_cpp_perplexity.py",
            gguf.to_str().unwrap(),
            text_file.to_str().unwrap(),
            "2048",
            &llama_tokens.to_string(),
        ])
    };
    for ty in ["Q4_1", "F16", "Q8_0", "Q4_0", "Q4_K_M"] {
        let out = work.join(format!("smollm2-{ty}.gguf"));
        let started = Instant::now();
        let report = export(&dense, ty, &out)?;
        let export_s = started.elapsed().as_secs_f64();
        if ty == "Q4_1" {
            println!(
                "export Q4_1 in {export_s:.1} s: the package's tensors byte for byte: {}",
                same_blocks(&gguf, &out)?
            );
            continue;
        }
        let back = work.join(format!("smollm2-{ty}.safetensors"));
        gguf_import::to_safetensors(&out, &back)?;
        let mine = job.fidelity(&[&back], &short, &control)?.before;
        let theirs = llama_cpp(&out)?;
        let their_ids: Vec<u32> = serde_json::from_value(theirs["ids"].clone())?;
        let (a, b) = (
            mine.perplexity.unwrap(),
            theirs["perplexity"].as_f64().unwrap(),
        );
        println!(
            "export {ty:6} in {export_s:5.1} s ({:.2} bits/weight, {:.0} MB): perplexity compressd {a:.3}, llama.cpp {b:.3} ({:+.3} %), same token ids: {}",
            report.bits_per_weight, report.file_bytes_after as f64 / 1e6, (b / a - 1.0) * 100.0, their_ids[..] == ids[..their_ids.len()]
        );
        if ty == "Q4_K_M" {
            // The same weights as F16, so llama.cpp multiplies them with f32 activations (its
            // K-quant products quantize the activations to Q8_K): what is left of the gap is
            // the file's weights against compressd's evaluation of them.
            let as_f16 = work.join("smollm2-Q4_K_M-as-F16.gguf");
            export(&back, "F16", &as_f16)?;
            let c = llama_cpp(&as_f16)?["perplexity"].as_f64().unwrap();
            println!(
                "  the Q4_K_M weights as F16: llama.cpp {c:.3} ({:+.3} % from compressd's {a:.3})",
                (c / a - 1.0) * 100.0
            );
        }
    }
    Ok(())
}

fn job_for(
    config: &compressd::compress::transformer::DecoderConfig,
    tokenizer: &str,
    text: &Path,
    weights: &Path,
) -> anyhow::Result<TransformerJob> {
    let bytes = std::fs::metadata(text)?.len();
    let split =
        serde_json::from_value(json!({"by":"bytes","evaluation":[0, bytes],"calibration":[0, 0]}))?;
    let summary = inspect_text(text, Some(split))?;
    let names: Vec<String> = SafetensorsWeights::open(weights)?.shapes_names();
    Ok(TransformerJob::new(
        TransformerConfig::Decoder(config.clone()),
        &names,
        Some(TextTokenizer::from_bytes(tokenizer.as_bytes())?),
        Some(TextData {
            path: text.to_owned(),
            summary,
            label: "lcet10.txt".into(),
        }),
        None,
    ))
}

trait Names {
    fn shapes_names(&self) -> Vec<String>;
}

impl Names for SafetensorsWeights {
    fn shapes_names(&self) -> Vec<String> {
        use compressd::compress::transformer::WeightSource;
        self.shapes().into_iter().map(|(n, _)| n).collect()
    }
}

fn same_blocks(a: &Path, b: &Path) -> anyhow::Result<bool> {
    let (ia, ma) = GgufIndex::open(a)?;
    let (ib, mb) = GgufIndex::open(b)?;
    Ok(ia.tensors.len() == ib.tensors.len()
        && ia.tensors.iter().all(|t| {
            ib.tensors
                .iter()
                .find(|u| u.name == t.name)
                .is_some_and(|u| {
                    u.ggml_type == t.ggml_type
                        && ma[t.begin as usize..(t.begin + t.byte_len) as usize]
                            == mb[u.begin as usize..(u.begin + u.byte_len) as usize]
                })
        }))
}

fn minilm(root: &Path, work: &Path) -> anyhow::Result<()> {
    let dir = root.join("minilm");
    let config: Value = serde_json::from_slice(&std::fs::read(dir.join("config.json"))?)?;
    let Some(TransformerConfig::Encoder(c)) = ModelConfig::parse(&config)?.runs else {
        anyhow::bail!("MiniLM is an encoder")
    };
    let weights = SafetensorsWeights::open(&dir.join("model.safetensors"))?;
    let tok = TextTokenizer::from_file(&dir.join("tokenizer.json"))?;
    let parameters: u64 = {
        use compressd::compress::transformer::WeightSource;
        weights
            .shapes()
            .iter()
            .filter(|(n, _)| !n.ends_with("position_ids"))
            .map(|(_, s)| s.iter().product::<u64>())
            .sum()
    };
    let text = std::fs::read_to_string(root.join("texts/alice29.txt"))?;
    let sentences: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(256)
        .map(str::to_owned)
        .collect();
    let started = Instant::now();
    let mut ours: Vec<Vec<f32>> = Vec::new();
    for chunk in sentences.chunks(32) {
        let ids: Vec<Vec<u32>> = chunk
            .iter()
            .map(|s| {
                tok.encode(s, true).map(|mut v| {
                    if v.len() > 256 {
                        let last = *v.last().unwrap();
                        v.truncate(256);
                        *v.last_mut().unwrap() = last;
                    }
                    v
                })
            })
            .collect::<Result<_, _>>()?;
        let width = ids.iter().map(Vec::len).max().unwrap_or(0);
        let mask: Vec<Vec<u32>> = ids
            .iter()
            .map(|v| {
                let mut m = vec![1; v.len()];
                m.resize(width, 0);
                m
            })
            .collect();
        let ids: Vec<Vec<u32>> = ids
            .into_iter()
            .map(|mut v| {
                v.resize(width, 0);
                v
            })
            .collect();
        let hidden = encoder::hidden_states(&c, &weights, &ids, &mask)?;
        ours.extend(encoder::sentence_embeddings(&hidden, &mask, true)?.to_vec2::<f32>()?);
    }
    let ours_s = started.elapsed().as_secs_f64();
    let file = work.join("sentences.json");
    std::fs::write(&file, serde_json::to_vec(&sentences)?)?;
    let started = Instant::now();
    let theirs: Vec<Vec<f32>> = serde_json::from_value(python(&[
        "scripts/minilm_reference.py",
        dir.to_str().unwrap(),
        file.to_str().unwrap(),
    ])?)?;
    let theirs_s = started.elapsed().as_secs_f64();
    let cos: Vec<f64> = ours
        .iter()
        .zip(&theirs)
        .map(|(a, b)| {
            a.iter()
                .zip(b)
                .map(|(x, y)| *x as f64 * *y as f64)
                .sum::<f64>()
        })
        .collect();
    let min = cos.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "all-MiniLM-L6-v2: {parameters} parameters; {} sentences of alice29.txt embedded in {ours_s:.2} s (sentence-transformers {theirs_s:.2} s, with its start-up); cosine to sentence-transformers: min {min:.7}, mean {:.7}",
        sentences.len(),
        cos.iter().sum::<f64>() / cos.len() as f64
    );
    Ok(())
}
