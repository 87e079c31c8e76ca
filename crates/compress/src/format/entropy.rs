//! Entropy coding of a finished file with zstd, and reading such a file back.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::time::Instant;

use crate::control::Control;
use crate::CompressError;
pub use domain::results::quantize::EntropyReport;
use domain::EntropyStep;

/// The first bytes of every zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Copies while counting, so progress and cancellation see the stream.
struct Watched<'a, R> {
    inner: R,
    control: &'a Control,
}

impl<R: Read> Read for Watched<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.control.interrupted().is_some() {
            return Err(std::io::Error::other("interrupted"));
        }
        let n = self.inner.read(buf)?;
        self.control.advance(n as u64);
        Ok(n)
    }
}

pub fn compress_file(
    input: &Path,
    output: &Path,
    step: &EntropyStep,
    control: &Control,
) -> Result<EntropyReport, CompressError> {
    let started = Instant::now();
    let bytes_before = std::fs::metadata(input)?.len();
    control.add_work(bytes_before);
    let level = step.level_for(bytes_before);
    let source = Watched {
        inner: BufReader::with_capacity(1 << 20, File::open(input)?),
        control,
    };
    let mut sink = BufWriter::with_capacity(1 << 20, File::create(output)?);
    let result = zstd::stream::copy_encode(source, &mut sink, level);
    if result.is_err() {
        control.checkpoint()?;
    }
    result?;
    sink.flush()?;
    let bytes_after = std::fs::metadata(output)?.len();
    let ratio = bytes_before as f64 / bytes_after.max(1) as f64;
    Ok(EntropyReport {
        op: "entropy",
        codec: "zstd",
        level,
        bytes_before,
        bytes_after,
        compression_ratio: ratio,
        bits_per_input_byte: 8.0 / ratio,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Whether the file starts with a zstd frame.
pub fn is_zstd(path: &Path) -> std::io::Result<bool> {
    let mut head = [0u8; 4];
    let mut f = File::open(path)?;
    Ok(f.read(&mut head)? == 4 && head == ZSTD_MAGIC)
}

/// Restores a zstd file into `output`.
pub fn decompress_file(input: &Path, output: &Path) -> std::io::Result<()> {
    let mut sink = BufWriter::new(File::create(output)?);
    zstd::stream::copy_decode(BufReader::new(File::open(input)?), &mut sink)?;
    sink.flush()
}
