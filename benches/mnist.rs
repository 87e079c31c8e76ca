//! Trains, prunes and measures the two classic MNIST models on real digits, the way the
//! service does it, and prints the figures the README quotes:
//!
//!     cargo bench --bench mnist            # data from ../shared/data/mnist-10k.safetensors
//!     MNIST=path/to/file.safetensors EPOCHS=10 SEEDS=3 MODELS=mlp,cnn cargo bench --bench mnist
//!
//! For each model: dense training (accuracy, samples/s for training and evaluation), then
//! iterative magnitude pruning to 90 % sparsity with fine-tuning (accuracy at every step), and
//! for the CNN also half its filters removed by L1 norm (batch throughput before/after).

use std::path::{Path, PathBuf};
use std::time::Instant;

use compressd::compress::nn::evaluate::{evaluate, quick_accuracy};
use compressd::compress::nn::importance::{prune_to, score, sparsity_of};
use compressd::compress::nn::structured::l1_filter;
use compressd::compress::nn::train::{train, TrainContext};
use compressd::compress::nn::{load_dataset, Dataset, Network};
use compressd::compress::Control;
use compressd::domain::{
    Architecture, Criterion, EvaluateStep, Schedule, Scope, Sparsity, TensorSelection, TrainStep,
    TrainWire,
};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::json;

const LENET_300_100: &str = r#"{"input_shape":[784],"input_scale":0.00392156862745098,"layers":[
  {"type":"linear","in_features":784,"out_features":300},{"type":"relu"},
  {"type":"linear","in_features":300,"out_features":100},{"type":"relu"},
  {"type":"linear","in_features":100,"out_features":10}]}"#;

const LENET_5: &str = r#"{"input_shape":[1,28,28],"input_scale":0.00392156862745098,"layers":[
  {"type":"conv2d","in_channels":1,"out_channels":6,"kernel_size":5,"padding":2},{"type":"relu"},
  {"type":"maxpool2d","kernel_size":2},
  {"type":"conv2d","in_channels":6,"out_channels":16,"kernel_size":5},{"type":"relu"},
  {"type":"maxpool2d","kernel_size":2},{"type":"flatten"},
  {"type":"linear","in_features":400,"out_features":120},{"type":"relu"},
  {"type":"linear","in_features":120,"out_features":84},{"type":"relu"},
  {"type":"linear","in_features":84,"out_features":10}]}"#;

fn recipe(epochs: usize, seed: u64) -> TrainStep {
    let wire: TrainWire = serde_json::from_value(json!({
        "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 64,
        "epochs": epochs, "seed": seed
    }))
    .expect("recipe");
    TrainStep::try_from(wire).expect("valid recipe")
}

struct SeedResult {
    dense: f64,
    pruned: f64,
}

/// Dense training then iterative pruning to 90 % (5 rounds, 2 fine-tuning epochs each).
fn one_seed(
    arch: &Architecture,
    data: &Dataset,
    epochs: usize,
    seed: u64,
    verbose: bool,
) -> anyhow::Result<SeedResult> {
    let control = Control::default();
    let ctx = TrainContext {
        control: &control,
        label: json!({}),
        teacher: None,
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let net = Network::initialise(arch, &mut rng)?;
    let dense = train(&net, data, &recipe(epochs, seed), None, None, &ctx)?;
    let opts = EvaluateStep::default();
    let t = Instant::now();
    let before = evaluate(&net, &data.test, 10, &opts, "test split")?;
    let eval_secs = t.elapsed().as_secs_f64();
    if verbose {
        println!(
            "dense: accuracy {:.4}, macro F1 {:.4}, {} parameters, {} MACs/sample",
            before.accuracy, before.f1_macro, before.cost.parameters, before.cost.macs_dense
        );
        println!(
            "training: {:.0} samples/s ({} epochs in {:.1} s); evaluation: {:.0} samples/s (whole test split incl. speed runs), batch-256 throughput {:.0} samples/s, batch-1 latency {:.3} ms",
            dense.samples_per_second,
            epochs,
            dense.seconds,
            data.test.len() as f64 / eval_secs,
            before.speed.throughput_samples_per_second,
            before.speed.latency_ms_batch1
        );
    }
    let names = net.weight_names();
    let schedule: Schedule = serde_json::from_value(json!({"steps": 5, "finetune_epochs": 2}))?;
    let mut ft = recipe(2, seed);
    ft.lr = 0.01;
    for t in 1..=schedule.steps {
        let goal = schedule.target_at(t, 0.0, 0.9);
        let scores = score(&net, Some(data), &names, Criterion::Magnitude, 8, None)?;
        let masks = prune_to(&net, &scores, goal, Scope::Layer)?;
        let pruned = quick_accuracy(&net, &data.test, 512)?;
        ft.seed = seed * 100 + t as u64;
        let r = train(&net, data, &ft, Some(&masks), None, &ctx)?;
        if verbose {
            println!(
                "  prune round {t}: sparsity {:.3}, accuracy after prune {:.4}, after fine-tune {:.4}",
                sparsity_of(&net, &names)?,
                pruned,
                r.epochs.last().map_or(0.0, |e| e.eval_accuracy)
            );
        }
    }
    let after = evaluate(&net, &data.test, 10, &opts, "test split")?;
    println!(
        "seed {seed}: dense {:.4}, pruned to {:.1} % sparsity {:.4} ({:+.2} points), non-zero MACs {} of {}",
        before.accuracy,
        100.0 * sparsity_of(&net, &names)?,
        after.accuracy,
        100.0 * (after.accuracy - before.accuracy),
        after.cost.macs_nonzero,
        after.cost.macs_dense
    );
    Ok(SeedResult {
        dense: before.accuracy,
        pruned: after.accuracy,
    })
}

/// Half the filters/neurons of every hidden layer removed by L1 norm, then 2 epochs.
fn structured(arch: &Architecture, data: &Dataset, epochs: usize) -> anyhow::Result<()> {
    let control = Control::default();
    let ctx = TrainContext {
        control: &control,
        label: json!({}),
        teacher: None,
    };
    let opts = EvaluateStep::default();
    let mut cnn = Network::initialise(arch, &mut StdRng::seed_from_u64(1))?;
    train(&cnn, data, &recipe(epochs, 1), None, None, &ctx)?;
    let before = evaluate(&cnn, &data.test, 10, &opts, "test split")?;
    let report = l1_filter(
        &mut cnn,
        Sparsity::parse(0.5).expect("0.5"),
        &TensorSelection::default(),
    )?;
    let cut = evaluate(&cnn, &data.test, 10, &opts, "test split")?;
    let mut ft = recipe(2, 1);
    ft.lr = 0.01;
    train(&cnn, data, &ft, None, None, &ctx)?;
    let tuned = evaluate(&cnn, &data.test, 10, &opts, "test split")?;
    println!(
        "l1_filter 0.5: parameters {} -> {}, MACs {} -> {}, batch-256 throughput {:.0} -> {:.0} samples/s ({:.2}x), accuracy {:.4} -> {:.4} (cut) -> {:.4} (2 fine-tune epochs)",
        report.parameters_before,
        report.parameters_after,
        before.cost.macs_dense,
        tuned.cost.macs_dense,
        before.speed.throughput_samples_per_second,
        tuned.speed.throughput_samples_per_second,
        tuned.speed.throughput_samples_per_second / before.speed.throughput_samples_per_second,
        before.accuracy,
        cut.accuracy,
        tuned.accuracy
    );
    Ok(())
}

fn run(name: &str, arch_json: &str, path: &Path, epochs: usize, seeds: u64) -> anyhow::Result<()> {
    let arch = Architecture::parse_json(arch_json).map_err(|e| anyhow::anyhow!(e.0))?;
    let data: Dataset = load_dataset(path, &arch)?;
    println!("## {name}");
    let mut results = Vec::new();
    for seed in 1..=seeds {
        results.push(one_seed(&arch, &data, epochs, seed, seed == 1)?);
    }
    let mean =
        |f: fn(&SeedResult) -> f64| results.iter().map(f).sum::<f64>() / results.len() as f64;
    println!(
        "mean over {seeds} seeds: dense {:.4}, 90 % pruned + fine-tuned {:.4} ({:+.2} points)",
        mean(|r| r.dense),
        mean(|r| r.pruned),
        100.0 * (mean(|r| r.pruned) - mean(|r| r.dense))
    );
    if arch_json == LENET_5 {
        structured(&arch, &data, epochs)?;
    }
    println!();
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let path = PathBuf::from(
        std::env::var("MNIST").unwrap_or_else(|_| "../shared/data/mnist-10k.safetensors".into()),
    );
    if !path.exists() {
        println!(
            "no MNIST file at {} (set MNIST=…); nothing to measure",
            path.display()
        );
        return Ok(());
    }
    let epochs: usize = std::env::var("EPOCHS")
        .ok()
        .and_then(|e| e.parse().ok())
        .unwrap_or(10);
    let which = std::env::var("MODELS").unwrap_or_else(|_| "mlp,cnn".into());
    let seeds: u64 = std::env::var("SEEDS")
        .ok()
        .and_then(|e| e.parse().ok())
        .unwrap_or(3);
    println!("threads: {}", rayon::current_num_threads());
    if which.contains("mlp") {
        run("LeNet-300-100", LENET_300_100, &path, epochs, seeds)?;
    }
    if which.contains("cnn") {
        run("LeNet-5 (CNN)", LENET_5, &path, epochs, seeds)?;
    }
    Ok(())
}
