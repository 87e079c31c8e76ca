//! Models built to make the service allocate what their bytes do not hold. The job ends, the
//! server keeps answering, and the next job runs.

use safetensors::tensor::Dtype;
use serde_json::json;

use crate::helpers::{Backend, TestApp};
use crate::models::{f32_tensor, safetensors, values, T};

fn raw(name: &'static str, dtype: Dtype, shape: &[usize], data: Vec<u8>) -> T {
    T {
        name,
        dtype,
        shape: shape.to_vec(),
        data,
    }
}

/// Tensor names that look like compressd's sparse layout (`x.mask`, `x.values`, `x.shape`)
/// with a shape of 2^40 values: reading the model back once asked for 4 TiB and aborted the
/// process, and every restart claimed the job again.
async fn a_forged_sparse_shape_does_not_take_the_server_down(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let forged = safetensors(
        &[
            f32_tensor("w", &[8, 8], &values(64, 1)),
            raw("x.mask", Dtype::U8, &[1], vec![1]),
            raw("x.values", Dtype::F32, &[1], 1f32.to_le_bytes().to_vec()),
            raw(
                "x.shape",
                Dtype::I64,
                &[1],
                (1i64 << 40).to_le_bytes().to_vec(),
            ),
        ],
        None,
    );
    let model = app.upload_ok(forged, "forged").await;
    for pipeline in [
        json!([{"op":"prune","sparsity":0.5}]),
        json!([{"op":"quantize","scheme":"int8"}]),
    ] {
        let job = app.submit(&model, pipeline.clone()).await;
        app.run_jobs().await;
        let job = app.job(&job).await;
        assert!(
            job["status"] == "succeeded" || job["status"] == "failed",
            "{pipeline}: {job:#}"
        );
    }
    let health = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    app.finish().await;
}

crate::on_each_backend!(a_forged_sparse_shape_does_not_take_the_server_down);
