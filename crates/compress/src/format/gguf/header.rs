//! The GGUF v3 header that every GGUF file compressd writes starts with (a model for candle, a
//! model for llama.cpp, an importance matrix): magic, version, counts, metadata, and each
//! tensor's name, dimensions, type and offset, padded to the alignment.

use super::{padding, write_str, MAGIC};

/// A metadata value, of the GGUF types compressd writes.
pub(crate) enum Kv {
    U32(u32),
    F32(f32),
    Bool(bool),
    Str(String),
    Strs(Vec<String>),
    I32s(Vec<i32>),
}

/// One tensor's entry in the header.
pub(crate) struct TensorInfo<'a> {
    pub name: &'a str,
    /// Innermost first, as ggml counts them (see `ggml_dims`).
    pub dims: Vec<u64>,
    /// ggml's type id.
    pub type_id: u32,
    /// The tensor's data length; each tensor's data is padded to the alignment.
    pub bytes: u64,
}

/// A shape as compressd holds it (outermost first) in ggml's order; a scalar as one value.
pub(crate) fn ggml_dims(shape: &[u64]) -> Vec<u64> {
    if shape.is_empty() {
        vec![1]
    } else {
        shape.iter().rev().copied().collect()
    }
}

pub(crate) fn header(kvs: &[(String, Kv)], tensors: &[TensorInfo]) -> std::io::Result<Vec<u8>> {
    let mut h = Vec::new();
    h.extend_from_slice(&MAGIC.to_le_bytes());
    h.extend_from_slice(&3u32.to_le_bytes());
    h.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    write_kvs(&mut h, kvs)?;
    let mut offset = 0u64;
    for t in tensors {
        write_str(&mut h, t.name)?;
        h.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            h.extend_from_slice(&d.to_le_bytes());
        }
        h.extend_from_slice(&t.type_id.to_le_bytes());
        h.extend_from_slice(&offset.to_le_bytes());
        offset += t.bytes + padding(t.bytes) as u64;
    }
    h.extend(std::iter::repeat_n(0u8, padding(h.len() as u64)));
    Ok(h)
}

/// The metadata's count and key/value pairs.
fn write_kvs(h: &mut Vec<u8>, kvs: &[(String, Kv)]) -> std::io::Result<()> {
    h.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
    for (key, value) in kvs {
        write_str(h, key)?;
        match value {
            Kv::U32(v) => {
                h.extend_from_slice(&4u32.to_le_bytes());
                h.extend_from_slice(&v.to_le_bytes());
            }
            Kv::F32(v) => {
                h.extend_from_slice(&6u32.to_le_bytes());
                h.extend_from_slice(&v.to_le_bytes());
            }
            Kv::Bool(v) => {
                h.extend_from_slice(&7u32.to_le_bytes());
                h.push(u8::from(*v));
            }
            Kv::Str(s) => {
                h.extend_from_slice(&8u32.to_le_bytes());
                write_str(h, s)?;
            }
            Kv::Strs(items) => {
                h.extend_from_slice(&9u32.to_le_bytes());
                h.extend_from_slice(&8u32.to_le_bytes());
                h.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for s in items {
                    write_str(h, s)?;
                }
            }
            Kv::I32s(items) => {
                h.extend_from_slice(&9u32.to_le_bytes());
                h.extend_from_slice(&5u32.to_le_bytes());
                h.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for v in items {
                    h.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
    }
    Ok(())
}
