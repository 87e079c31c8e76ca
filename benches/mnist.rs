//! Trains, prunes and measures the two classic MNIST models on real digits, the way the
//! service does it, and prints the figures the README quotes:
//!
//!     cargo bench --bench mnist            # data from ../shared/data/mnist-10k.safetensors
//!     MNIST=path/to/file.safetensors EPOCHS=10 SEEDS=3 MODELS=mlp,cnn,qat,kd,auto cargo bench --bench mnist
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

/// A fresh model (PyTorch's initialisation from seed 1) trained with the recipe.
fn trained(arch: &Architecture, data: &Dataset, epochs: usize) -> anyhow::Result<Network> {
    let control = Control::default();
    let net = Network::initialise(arch, &mut StdRng::seed_from_u64(1))?;
    train(
        &net,
        data,
        &recipe(epochs, 1),
        None,
        None,
        &TrainContext::on_labels(&control, Default::default()),
    )?;
    Ok(net)
}

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
    let ctx = TrainContext::on_labels(&control, Default::default());
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
    let ctx = TrainContext::on_labels(&control, Default::default());
    let opts = EvaluateStep::default();
    let mut cnn = trained(arch, data, epochs)?;
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

/// int4 (symmetric, per channel and per tensor) on every weight matrix: accuracy after
/// post-training quantization (PTQ); after 2 more float epochs then PTQ (the same extra
/// budget without QAT); and after 2 epochs of quantization-aware fine-tuning (QAT).
fn qat_vs_ptq(name: &str, arch_json: &str, path: &Path, epochs: usize) -> anyhow::Result<()> {
    use compressd::compress::nn::fake_quant::{FakeQuant, Groups};
    let arch = Architecture::parse_json(arch_json).map_err(|e| anyhow::anyhow!(e.0))?;
    let data = load_dataset(path, &arch)?;
    let control = Control::default();
    let ctx = TrainContext::on_labels(&control, Default::default());
    let variant = |extra: Option<FakeQuant>, more: bool| -> anyhow::Result<Network> {
        let mut net = trained(&arch, &data, epochs)?;
        if more {
            let mut ft = recipe(2, 7);
            ft.lr = 0.01;
            net.fake_quant = extra;
            train(&net, &data, &ft, None, None, &ctx)?;
        }
        Ok(net)
    };
    let float = variant(None, false)?;
    println!(
        "{name}: float {:.4}",
        quick_accuracy(&float, &data.test, 512)?
    );
    for (label, groups) in [
        ("per channel", Groups::Channel),
        ("per tensor", Groups::Tensor),
    ] {
        let int4 = FakeQuant {
            bits: 4,
            symmetric: true,
            groups,
            selection: TensorSelection::default(),
        };
        // With the fake quantizer on, a network computes with its stored int4 weights.
        let stored = |mut net: Network| -> anyhow::Result<f64> {
            net.fake_quant = Some(int4.clone());
            Ok(quick_accuracy(&net, &data.test, 512)?)
        };
        let ptq = stored(variant(None, false)?)?;
        let ft_ptq = stored(variant(None, true)?)?;
        let qat = stored(variant(Some(int4.clone()), true)?)?;
        println!(
            "  int4 {label}: PTQ {ptq:.4}; 2 float epochs then PTQ {ft_ptq:.4}; 2 QAT epochs {qat:.4} ({:+.2} points over the better PTQ)",
            100.0 * (qat - ptq.max(ft_ptq))
        );
    }
    Ok(())
}

/// Students distilled from LeNet-300-100 (T = 4, α = 0.9) against the same students trained
/// on labels alone, same initialisation and epochs.
fn distillation(path: &Path, epochs: usize) -> anyhow::Result<()> {
    use compressd::compress::nn::distill::Teacher;
    let arch = Architecture::parse_json(LENET_300_100).map_err(|e| anyhow::anyhow!(e.0))?;
    let data = load_dataset(path, &arch)?;
    let control = Control::default();
    let teacher = trained(&arch, &data, epochs)?;
    println!(
        "teacher LeNet-300-100: {:.4}",
        quick_accuracy(&teacher, &data.test, 512)?
    );
    for (label, hidden, dropout) in [
        ("784-32-10", vec![32], 0.0),
        ("784-100-10", vec![100], 0.0),
        ("784-800-800-10, dropout 0.2", vec![800, 800], 0.2),
    ] {
        let mut layers = Vec::new();
        let mut inp = 784;
        for h in &hidden {
            layers.push(json!({"type":"linear","in_features":inp,"out_features":h}));
            layers.push(json!({"type":"relu"}));
            if dropout > 0.0 {
                layers.push(json!({"type":"dropout","p":dropout}));
            }
            inp = *h;
        }
        layers.push(json!({"type":"linear","in_features":inp,"out_features":10}));
        let student_arch = Architecture::parse_json(
            &json!({"input_shape":[784],"input_scale":0.00392156862745098,"layers":layers})
                .to_string(),
        )
        .map_err(|e| anyhow::anyhow!(e.0))?;
        let mut results = [0.0f64; 2];
        for (slot, with_teacher) in [true, false].into_iter().enumerate() {
            for seed in 5..8u64 {
                let student = Network::initialise(&student_arch, &mut StdRng::seed_from_u64(seed))?;
                let ctx = TrainContext {
                    control: &control,
                    label: Default::default(),
                    teacher: with_teacher.then_some(Teacher {
                        net: &teacher,
                        temperature: 4.0,
                        alpha: 0.9,
                        features: Vec::new(),
                        beta: 0.0,
                    }),
                };
                train(&student, &data, &recipe(epochs, seed), None, None, &ctx)?;
                results[slot] += quick_accuracy(&student, &data.test, 512)? / 3.0;
            }
        }
        println!(
            "student {label}: distilled {:.4}, labels only {:.4} ({:+.2} points; mean of seeds 5-7)",
            results[0],
            results[1],
            100.0 * (results[0] - results[1])
        );
    }
    Ok(())
}

/// `auto` on a trained LeNet-300-100: the smallest artifact within one point.
fn auto(path: &Path, epochs: usize) -> anyhow::Result<()> {
    use compressd::compress::nn::auto::{auto_step, AutoInput};
    let arch = Architecture::parse_json(LENET_300_100).map_err(|e| anyhow::anyhow!(e.0))?;
    let data = load_dataset(path, &arch)?;
    let control = Control::default();
    let net = trained(&arch, &data, epochs)?;
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("dense.safetensors");
    net.save(&input)?;
    let step: compressd::domain::AutoStep = serde_json::from_value(json!({
        "max_accuracy_drop": 0.01, "budget": {"trials": 40, "seconds": 900},
        "bits": [6, 5, 4, 3], "finetune": {"lr": 0.01, "epochs": 3}
    }))?;
    let output = dir.path().join("auto.zst");
    let (r, _) = auto_step(&AutoInput {
        arch: &arch,
        data: &data,
        data_label: "MNIST",
        input: &input,
        output: &output,
        workdir: dir.path(),
        step: &step,
        control: &control,
    })?;
    for t in &r.trials {
        println!(
            "  trial: level {:.2}, {} bits, sparsity {:.3}, validation {:.4}, {} bytes ({:.1}x){}",
            t.level,
            t.bits,
            t.overall_sparsity,
            t.validation_accuracy,
            t.bytes,
            t.compression_ratio,
            if t.on_frontier { ", frontier" } else { "" }
        );
    }
    println!(
        "auto: baseline test {:.4}; {} ({} trials, {:.0} s)",
        r.baseline_test_accuracy, r.note, r.trials_used, r.seconds_used
    );
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
    let which = std::env::var("MODELS").unwrap_or_else(|_| "mlp,cnn,qat,kd,auto".into());
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
    if which.contains("qat") {
        println!("## QAT against PTQ");
        qat_vs_ptq("LeNet-300-100", LENET_300_100, &path, epochs)?;
        qat_vs_ptq("LeNet-5", LENET_5, &path, epochs)?;
        println!();
    }
    if which.contains("auto") {
        println!("## auto (max drop 1 point, objective size)");
        auto(&path, epochs)?;
    }
    if which.contains("kd") {
        println!("## Distillation");
        distillation(&path, epochs)?;
    }
    Ok(())
}
