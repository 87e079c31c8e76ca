//! A transformer job's before/after fidelity: the model before the first compressing step
//! against the result, read as dense weights (a sparse or quantized result is restored to a
//! dense copy first, as the serving tools would see it).

use std::path::Path;

use crate::control::Control;
use crate::format::dtype::Dtype;
use crate::format::reader::read_dense;
use crate::format::safetensors_index::SafetensorsIndex;
use crate::format::st_writer::SpooledWriter;
use crate::nn::ModelState;
use crate::steps::Format;
use crate::CompressError;
use domain::results::Fidelity;
use domain::steps::evaluate::TextProtocol;

pub fn before_after(
    state: &ModelState,
    input: &Path,
    result: &Path,
    format: &Format,
    protocol: &TextProtocol,
    workdir: &Path,
    control: &Control,
) -> Result<Fidelity, CompressError> {
    let job = state.transformer.as_ref().expect("measured_text checked");
    let dense = if !format.dense_readable {
        // A GGUF file: its blocks dequantized as llama.cpp reads them, under Hugging Face names.
        let copy = workdir.join("fidelity-dense.safetensors");
        crate::transformer::gguf_import::to_safetensors(result, &copy)?;
        copy
    } else if plain_dense(result)? {
        result.to_owned()
    } else {
        let copy = workdir.join("fidelity-dense.safetensors");
        densify(result, &copy)?;
        copy
    };
    let f = job.fidelity(&[input, &dense], protocol, control);
    if dense != result {
        let _ = std::fs::remove_file(&dense);
    }
    let mut f = f?;
    if !format.dense_readable {
        f.after_note = Some("the GGUF file's blocks dequantized, with f32 activations (llama.cpp's K-quant products also round the activations to 8 bits)".into());
    }
    Ok(f)
}

fn plain_dense(path: &Path) -> Result<bool, CompressError> {
    let index = SafetensorsIndex::open(path)?;
    Ok(index
        .tensors
        .iter()
        .all(|t| matches!(t.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::I64)))
}

/// A sparse or quantized file restored to f32 tensors under the same names.
fn densify(path: &Path, out: &Path) -> Result<(), CompressError> {
    let params = SafetensorsIndex::open(path)?.parameter_count();
    crate::budget::check(
        "restoring the compressed model to dense weights",
        params.saturating_mul(8),
    )?;
    let tensors = read_dense(path)?;
    let mut w = SpooledWriter::new(&out.with_extension("spool"))?;
    for (name, (shape, values)) in &tensors {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        w.add(name, "F32", shape, &bytes)?;
    }
    w.finish(&Default::default(), out)?;
    Ok(())
}
