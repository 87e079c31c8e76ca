//! Files whose tensor names look like compressd's own layouts but whose stored shapes claim
//! far more values than their bytes hold: refused by name, nothing allocated for the claim.

use std::collections::BTreeMap;
use std::path::Path;

use crate::format::reader::read_dense;
use crate::format::st_writer::SpooledWriter;
use crate::CompressError;

fn write(path: &Path, tensors: &[(&str, &str, Vec<u64>, Vec<u8>)], meta: &[(&str, &str)]) {
    let mut w = SpooledWriter::new(&path.with_extension("spool")).unwrap();
    for (name, dtype, shape, bytes) in tensors {
        w.add(name, dtype, shape, bytes).unwrap();
    }
    let meta: BTreeMap<String, String> = meta
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    w.finish(&meta, path).unwrap();
}

fn shape_bytes(dims: &[i64]) -> Vec<u8> {
    dims.iter().flat_map(|d| d.to_le_bytes()).collect()
}

fn refused(path: &Path) -> String {
    match read_dense(path) {
        Err(CompressError::InvalidModel(m)) => m,
        other => panic!("expected a refusal, got {:?}", other.map(|t| t.len())),
    }
}

#[test]
fn a_sparse_shape_larger_than_its_mask_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    for dims in [
        vec![1i64 << 40],
        vec![1 << 31, 1 << 31, 1 << 31],
        vec![-1],
        vec![9],
    ] {
        write(
            &path,
            &[
                ("x.mask", "U8", vec![1], vec![0b1]),
                ("x.values", "F32", vec![1], 1f32.to_le_bytes().to_vec()),
                (
                    "x.shape",
                    "I64",
                    vec![dims.len() as u64],
                    shape_bytes(&dims),
                ),
            ],
            &[],
        );
        let why = refused(&path);
        assert!(
            why.contains("'x'") && why.contains("more values"),
            "{dims:?}: {why}"
        );
    }
}

#[test]
fn kmeans_indices_claiming_more_values_than_they_pack_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    for (bits, dims) in [
        ("4", vec![1i64 << 40]),
        ("4", vec![5]),
        ("0", vec![2]),
        ("16", vec![2]),
    ] {
        write(
            &path,
            &[
                ("y_indices", "U8", vec![2], vec![0x10, 0x32]),
                ("y_codebook", "F32", vec![1], 0.5f32.to_le_bytes().to_vec()),
                (
                    "y_shape",
                    "I64",
                    vec![dims.len() as u64],
                    shape_bytes(&dims),
                ),
            ],
            &[("compressd.kmeans_bits", bits)],
        );
        let why = refused(&path);
        assert!(why.contains("'y'"), "{bits} {dims:?}: {why}");
    }
}

#[test]
fn honest_sparse_and_kmeans_tensors_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    write(
        &path,
        &[
            ("x.mask", "U8", vec![1], vec![0b101]),
            (
                "x.values",
                "F32",
                vec![2],
                [1f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
            ("x.shape", "I64", vec![1], shape_bytes(&[3])),
            ("y_indices", "U8", vec![1], vec![0x10]),
            (
                "y_codebook",
                "F32",
                vec![2],
                [0.5f32, -0.5]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            ),
            ("y_shape", "I64", vec![1], shape_bytes(&[2])),
        ],
        &[("compressd.kmeans_bits", "4")],
    );
    let dense = read_dense(&path).unwrap();
    assert_eq!(dense["x"].1, vec![1.0, 0.0, 2.0]);
    assert_eq!(dense["y"].1, vec![0.5, -0.5]);
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
fn a_codebook_that_is_not_float_is_refused() {
    // Found by the compressed_reader fuzz target: a U32 codebook reached the float reader.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    write(
        &path,
        &[
            ("w_indices", "U8", vec![1], vec![0x10]),
            ("w_codebook", "U32", vec![2], vec![0; 8]),
            ("w_shape", "I64", vec![1], shape_bytes(&[2])),
        ],
        &[("compressd.kmeans_bits", "4")],
    );
    let why = refused(&path);
    assert!(why.contains("'w_codebook'") && why.contains("U32"), "{why}");
}

#[test]
fn scales_that_do_not_tile_their_codes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let cases: [(&str, &str, Vec<u8>); 4] = [
        // Five int8 codes cannot share two scales equally.
        ("I8", "F32", f32_bytes(&[1.0, 2.0])),
        // fp8 likewise.
        ("F8_E4M3", "F32", f32_bytes(&[1.0, 2.0])),
        // No scales at all.
        ("I8", "F32", vec![]),
        // Scales that are not numbers.
        ("I8", "I32", vec![0; 4]),
    ];
    for (codes_dtype, scale_dtype, scale) in cases {
        let n_scales = scale.len() as u64 / 4;
        write(
            &path,
            &[
                ("w", codes_dtype, vec![5], vec![1; 5]),
                ("w_scale", scale_dtype, vec![n_scales], scale),
            ],
            &[],
        );
        let why = refused(&path);
        assert!(why.contains("'w"), "{codes_dtype} {scale_dtype}: {why}");
    }
}

#[test]
fn packed_int4_codes_must_match_their_shape() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let packed = crate::quant::int::pack_int4(&[1, 2, 3, 4, -1, -2, -3, -4]);
    let packed: Vec<u8> = packed.iter().flat_map(|p| p.to_le_bytes()).collect();
    for (dims, ok) in [(vec![2i64, 4], true), (vec![2, 8], false), (vec![1], false)] {
        write(
            &path,
            &[
                ("w_packed", "I32", vec![1], packed.clone()),
                ("w_scale", "F32", vec![1], f32_bytes(&[0.5])),
                (
                    "w_shape",
                    "I64",
                    vec![dims.len() as u64],
                    shape_bytes(&dims),
                ),
            ],
            &[],
        );
        if ok {
            let dense = read_dense(&path).unwrap();
            assert_eq!(
                dense["w"].1,
                vec![0.5, 1.0, 1.5, 2.0, -0.5, -1.0, -1.5, -2.0]
            );
        } else {
            let why = refused(&path);
            assert!(why.contains("'w_packed'"), "{dims:?}: {why}");
        }
    }
}
