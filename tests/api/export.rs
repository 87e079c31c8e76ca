//! GGUF export: every block type, opened by candle's reader and by the reference Python reader.

use std::io::Cursor;

use candle_core::quantized::gguf_file;
use candle_core::Device;
use serde_json::{json, Value};

use crate::helpers::{Backend, TestApp};
use crate::models::{f32_tensor, safetensors, values};
use crate::python_reference::reference_output;

const TYPES: [&str; 10] = [
    "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
];

fn model() -> (Vec<u8>, Vec<f32>) {
    let w = values(64 * 256, 31);
    let bytes = safetensors(
        &[
            f32_tensor("blk.0.weight", &[64, 256], &w),
            f32_tensor("odd.weight", &[10, 100], &values(1000, 32)),
            f32_tensor("blk.0.bias", &[64], &values(64, 33)),
        ],
        None,
    );
    (bytes, w)
}

async fn every_gguf_type_reopens_in_candle(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let (bytes, w) = model();
    let model = app.upload_ok(bytes, "tiny").await;
    for ty in TYPES {
        let job = app
            .submit(&model, json!([{"op":"export","format":"gguf","type":ty}]))
            .await;
        app.run_jobs().await;
        let job = app.job(&job).await;
        assert_eq!(job["status"], "succeeded", "{ty}: {job:#}");
        let artifact = job["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["kind"] == "model")
            .unwrap();
        assert_eq!(artifact["file_name"], "tiny.gguf");
        let file = app.download(artifact["file_url"].as_str().unwrap()).await;
        let mut cursor = Cursor::new(&file);
        let content = gguf_file::Content::read(&mut cursor).unwrap();
        assert_eq!(
            content.metadata["general.name"].to_string().unwrap(),
            "tiny"
        );
        let info = &content.tensor_infos["blk.0.weight"];
        assert_eq!(info.shape.dims(), &[64, 256], "{ty}");
        assert_eq!(format!("{:?}", info.ggml_dtype).replace('K', "_K"), ty);
        let odd = &content.tensor_infos["odd.weight"];
        assert_eq!(
            (odd.shape.dims(), format!("{:?}", odd.ggml_dtype)),
            (&[10usize, 100][..], "F32".to_owned())
        );
        let q = content
            .tensor(&mut cursor, "blk.0.weight", &Device::Cpu)
            .unwrap();
        let back = q
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let rms = (w
            .iter()
            .zip(&back)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f32>()
            / w.len() as f32)
            .sqrt();
        let bound = if ty.starts_with("Q2") {
            0.2
        } else if ty.starts_with("Q3") {
            0.1
        } else {
            0.06
        };
        assert!(rms < bound, "{ty}: rms error {rms}");

        let step = &job["metrics"]["steps"][0];
        assert_eq!(step["quantized_tensors"], 1, "{ty}");
        let kept: Vec<&str> = step["kept_tensors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        assert!(
            kept.iter()
                .any(|k| k.starts_with("odd.weight as F32: row length 100")),
            "{kept:?}"
        );
        let blk = step["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "blk.0.weight")
            .unwrap();
        let measured = blk["error"]["mse"].as_f64().unwrap();
        assert!(
            (measured.sqrt() - rms as f64).abs() < 1e-3,
            "reported error is the real one: {measured} vs {rms}"
        );
        python_reader_agrees(&file, ty);
    }
    app.finish().await;
}

/// The reference `gguf` Python package reads the file. CI installs it and sets
/// COMPRESSD_REQUIRE_PYTHON_GGUF so that its absence fails the test there.
fn python_reader_agrees(file: &[u8], ty: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    std::fs::write(&path, file).unwrap();
    let script = r#"
import sys, json
try:
    import gguf
except ImportError:
    print("NO_GGUF"); sys.exit(0)
r = gguf.GGUFReader(sys.argv[1])
print(json.dumps({t.name: [t.tensor_type.name, [int(x) for x in t.shape]] for t in r.tensors}))
"#;
    let mut python = std::process::Command::new("python3");
    python.arg("-c").arg(script).arg(&path);
    let require = "COMPRESSD_REQUIRE_PYTHON_GGUF";
    let Some(text) = reference_output("gguf reader", &mut python, "NO_GGUF", require, "gguf")
    else {
        return;
    };
    let tensors: Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(tensors["blk.0.weight"][0], ty, "{tensors}");
    // The reference reader lists ggml's dimension order: innermost first.
    assert_eq!(tensors["blk.0.weight"][1], json!([256, 64]));
    assert_eq!(tensors["odd.weight"][0], "F32");
    assert_eq!(tensors["blk.0.bias"][1], json!([64]));
}

/// A K-type export of a model whose rows are all narrower than its 256-value blocks would
/// store every tensor as it was: the job fails and says why instead of succeeding with nothing.
async fn an_export_that_changes_nothing_fails_and_says_why(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let bytes = safetensors(
        &[
            f32_tensor("0.weight", &[300, 784], &values(300 * 784, 41)),
            f32_tensor("2.weight", &[100, 300], &values(100 * 300, 42)),
            f32_tensor("4.weight", &[10, 100], &values(1000, 43)),
        ],
        None,
    );
    let model = app.upload_ok(bytes, "lenet").await;
    let job = app
        .submit(
            &model,
            json!([{"op":"export","format":"gguf","type":"Q4_K"}]),
        )
        .await;
    app.run_jobs().await;
    let job = app.job(&job).await;
    assert_eq!(job["status"], "failed", "{job:#}");
    let detail = job["error"]["detail"].as_str().unwrap();
    assert!(
        detail.contains("Q4_K") && detail.contains("row length 784"),
        "{detail}"
    );
    assert_eq!(job["error"]["status"], 422, "{job:#}");
}

crate::on_each_backend!(
    every_gguf_type_reopens_in_candle,
    an_export_that_changes_nothing_fails_and_says_why,
);
