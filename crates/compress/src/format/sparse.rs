//! compressd's sparse tensor storage ("bitmask-v1", see docs/sparse-format.md): a tensor `N`
//! becomes `N.mask` (U8, one bit per element, least significant bit first, 1 = stored),
//! `N.values` (the stored elements in order, original dtype) and `N.shape` (I64).

use crate::format::st_writer::SpooledWriter;

/// A shape as the little-endian I64 tensor that stores it.
pub fn i64_bytes(dims: &[u64]) -> Vec<u8> {
    dims.iter()
        .flat_map(|d| (*d as i64).to_le_bytes())
        .collect()
}

/// Writes `bytes` (elements of `width` bytes) sparsely; all-zero elements are left out.
pub fn write_sparse(
    out: &mut SpooledWriter,
    name: &str,
    dtype: &str,
    width: usize,
    shape: &[u64],
    bytes: &[u8],
) -> std::io::Result<u64> {
    let n = bytes.len() / width;
    let mut mask = vec![0u8; n.div_ceil(8)];
    let mut values = Vec::new();
    for (i, e) in bytes.chunks_exact(width).enumerate() {
        if e.iter().any(|b| *b != 0) {
            mask[i / 8] |= 1 << (i % 8);
            values.extend_from_slice(e);
        }
    }
    let stored = (values.len() / width) as u64;
    let shape_bytes = i64_bytes(shape);
    out.add(&format!("{name}.mask"), "U8", &[mask.len() as u64], &mask)?;
    out.add(&format!("{name}.values"), dtype, &[stored], &values)?;
    out.add(
        &format!("{name}.shape"),
        "I64",
        &[shape.len() as u64],
        &shape_bytes,
    )?;
    Ok((mask.len() + values.len() + shape_bytes.len()) as u64)
}

/// Rebuilds the dense bytes from a mask and values.
pub fn densify(mask: &[u8], values: &[u8], width: usize, n: usize) -> Option<Vec<u8>> {
    let mut out = vec![0u8; n * width];
    let mut next = values.chunks_exact(width);
    for i in 0..n {
        if mask.get(i / 8)? & (1 << (i % 8)) != 0 {
            out[i * width..(i + 1) * width].copy_from_slice(next.next()?);
        }
    }
    next.next().is_none().then_some(out)
}
