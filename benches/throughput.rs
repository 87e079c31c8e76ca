//! Throughput and peak memory of every weight-transforming step on a generated model of at
//! least 1 GiB: magnitude pruning, quantization (int8, int4, fp8) and GGUF export.
//!
//! `cargo bench --bench throughput` (set `BENCH_MODEL_MIB` to change the size, `BENCH_DIR` to
//! choose where the model is written, `BENCH_CASES` to run only cases whose name contains one
//! of its comma-separated words). Prints GB/s of input for the whole step (read → transform →
//! write into the page cache), the same including the fsync that commits an artifact, and the
//! process's peak resident memory; each figure is the median of three runs.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use compressd::compress::format::gguf::export_gguf;
use compressd::compress::quant::file::quantize_file;
use compressd::compress::{prune_file, Control};
use compressd::domain::{Pipeline, Step};
use serde_json::json;

fn main() -> anyhow::Result<()> {
    let mib: u64 = std::env::var("BENCH_MODEL_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1100);
    let dir = tempfile::tempdir_in(
        std::env::var("BENCH_DIR").unwrap_or_else(|_| std::env::temp_dir().display().to_string()),
    )?;
    let input = dir.path().join("model.safetensors");
    let output = dir.path().join("pruned.safetensors");
    let bytes = write_model(&input, mib)?;
    // Let the generator's writes reach the disk first, so that no case pays for them.
    File::open(&input)?.sync_all()?;
    println!(
        "model: {:.2} GB f32 ({} MiB), {} threads",
        bytes as f64 / 1e9,
        mib,
        rayon::current_num_threads()
    );

    let cases = [
        (
            "prune magnitude global 0.9",
            json!({"op":"prune","method":"magnitude","sparsity":0.9,"scope":"global"}),
        ),
        (
            "prune magnitude layer 0.9",
            json!({"op":"prune","method":"magnitude","sparsity":0.9,"scope":"layer"}),
        ),
        (
            "prune magnitude threshold",
            json!({"op":"prune","method":"magnitude","threshold":0.01}),
        ),
        (
            "quantize int8 channel",
            json!({"op":"quantize","scheme":"int8","granularity":"channel"}),
        ),
        (
            "quantize int4 g128",
            json!({"op":"quantize","scheme":"int4","group_size":128}),
        ),
        (
            "quantize fp8_e4m3",
            json!({"op":"quantize","scheme":"fp8_e4m3"}),
        ),
        (
            "export gguf Q8_0",
            json!({"op":"export","format":"gguf","type":"Q8_0"}),
        ),
        (
            "export gguf Q4_0",
            json!({"op":"export","format":"gguf","type":"Q4_0"}),
        ),
        (
            "export gguf Q4_K",
            json!({"op":"export","format":"gguf","type":"Q4_K"}),
        ),
    ];
    let only: Vec<String> = std::env::var("BENCH_CASES")
        .map(|v| v.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    println!(
        "{:<28} {:>9} {:>10} {:>14} {:>16}",
        "case", "seconds", "GB/s", "peak RSS MiB", "GB/s incl. fsync"
    );
    const RUNS: usize = 3;
    for (name, step) in cases {
        if !only.is_empty() && !only.iter().any(|w| name.contains(w.as_str())) {
            continue;
        }
        let pipeline = Pipeline::parse(&[step])?;
        let mut runs = Vec::new();
        for _ in 0..RUNS {
            reset_peak_rss();
            let control = Control::default();
            let started = Instant::now();
            match &pipeline.steps()[0] {
                Step::Prune(p) => drop(prune_file(&input, &output, p, &control)?),
                Step::Quantize(q) => drop(quantize_file(&input, &output, None, q, &control)?),
                Step::Export(e) => drop(export_gguf(&input, &output, e, "bench", &control)?),
                other => anyhow::bail!("{} is not a streaming step", other.op()),
            }
            let secs = started.elapsed().as_secs_f64();
            let peak = peak_rss_mib();
            // A job's artifact is synced once when blob storage commits it; time that too.
            File::open(&output)?.sync_all()?;
            let durable = started.elapsed().as_secs_f64();
            std::fs::remove_file(&output)?;
            runs.push((secs, durable, peak));
        }
        runs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (secs, durable, peak) = runs[RUNS / 2];
        println!(
            "{:<28} {:>9.3} {:>10.3} {:>14.1} {:>16.3}",
            name,
            secs,
            bytes as f64 / 1e9 / secs,
            peak,
            bytes as f64 / 1e9 / durable,
        );
    }
    Ok(())
}

/// Writes a model of `mib` MiB of f32 weights (64 MiB matrices plus biases), with values
/// from a fixed-seed generator, streaming so the generator itself stays small.
fn write_model(path: &Path, mib: u64) -> anyhow::Result<u64> {
    let rows = 4096u64;
    let cols = 4096u64;
    let per = rows * cols * 4;
    let count = (mib << 20).div_ceil(per);
    let mut header = serde_json::Map::new();
    let mut offset = 0u64;
    for i in 0..count {
        header.insert(
            format!("layers.{i}.weight"),
            json!({"dtype":"F32","shape":[rows, cols],"data_offsets":[offset, offset + per]}),
        );
        offset += per;
        header.insert(
            format!("layers.{i}.bias"),
            json!({"dtype":"F32","shape":[rows],"data_offsets":[offset, offset + rows * 4]}),
        );
        offset += rows * 4;
    }
    header.insert("__metadata__".into(), json!({"format":"pt"}));
    let mut text = serde_json::to_string(&header)?;
    while text.len() % 8 != 0 {
        text.push(' ');
    }
    let mut out = BufWriter::with_capacity(8 << 20, File::create(path)?);
    out.write_all(&(text.len() as u64).to_le_bytes())?;
    out.write_all(text.as_bytes())?;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut buf = Vec::with_capacity(8 << 20);
    for _ in 0..count {
        for len in [per, rows * 4] {
            let mut left = len / 4;
            while left > 0 {
                buf.clear();
                let n = left.min(2 << 20);
                for _ in 0..n {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    // Roughly normal: the sum of two uniforms, scaled like trained weights.
                    let a = (state >> 40) as f32 / (1u64 << 24) as f32;
                    let b = ((state >> 16) & 0xff_ffff) as f32 / (1u64 << 24) as f32;
                    buf.extend_from_slice(&((a + b - 1.0) * 0.05).to_le_bytes());
                }
                out.write_all(&buf)?;
                left -= n;
            }
        }
    }
    out.flush()?;
    Ok(8 + text.len() as u64 + offset)
}

fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_mib() -> f64 {
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
