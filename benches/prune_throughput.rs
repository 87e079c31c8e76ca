//! Pruning throughput and peak memory on a generated model of at least 1 GiB.
//!
//! `cargo bench --bench prune_throughput` (set `BENCH_MODEL_MIB` to change the size, and
//! `BENCH_DIR` to choose where the model is written; default: the system temp directory).
//! Prints GB/s of input for the whole step (read → prune → write, output synced to disk) and
//! the process's peak resident memory during each run.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

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
    println!(
        "model: {:.2} GB f32 ({} MiB), {} threads",
        bytes as f64 / 1e9,
        mib,
        rayon::current_num_threads()
    );

    let cases = [
        (
            "magnitude global 0.9",
            json!({"op":"prune","method":"magnitude","sparsity":0.9,"scope":"global"}),
        ),
        (
            "magnitude layer 0.9",
            json!({"op":"prune","method":"magnitude","sparsity":0.9,"scope":"layer"}),
        ),
        (
            "magnitude threshold 0.01",
            json!({"op":"prune","method":"magnitude","threshold":0.01}),
        ),
    ];
    println!(
        "{:<28} {:>9} {:>10} {:>14}",
        "case", "seconds", "GB/s", "peak RSS MiB"
    );
    for (name, step) in cases {
        let pipeline = Pipeline::parse(&[step])?;
        let Step::Prune(prune) = &pipeline.steps()[0] else {
            unreachable!()
        };
        reset_peak_rss();
        let started = Instant::now();
        let report = prune_file(&input, &output, prune, &Control::default())?;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{:<28} {:>9.3} {:>10.3} {:>14.1}   (selected sparsity {:.4})",
            name,
            secs,
            bytes as f64 / 1e9 / secs,
            peak_rss_mib(),
            report.selected.sparsity_after
        );
        std::fs::remove_file(&output)?;
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
