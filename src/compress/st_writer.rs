//! Writing a safetensors file whose tensor sizes are only known as they are produced: data is
//! spooled to a work file, then the header is written and the data appended (the kernel copies
//! it, `copy_file_range`), so memory holds one tensor at a time.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Seek, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

pub struct SpooledWriter {
    spool_path: PathBuf,
    spool: Option<BufWriter<File>>,
    header: Map<String, Value>,
    offset: u64,
}

impl SpooledWriter {
    pub fn new(spool_path: &Path) -> io::Result<Self> {
        Ok(SpooledWriter {
            spool_path: spool_path.to_owned(),
            spool: Some(BufWriter::with_capacity(
                4 << 20,
                File::options()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(spool_path)?,
            )),
            header: Map::new(),
            offset: 0,
        })
    }

    /// Appends one tensor: `dtype` is a safetensors dtype name, `bytes` its little-endian data.
    pub fn add(&mut self, name: &str, dtype: &str, shape: &[u64], bytes: &[u8]) -> io::Result<()> {
        let end = self.offset + bytes.len() as u64;
        self.header.insert(
            name.to_owned(),
            json!({"dtype": dtype, "shape": shape, "data_offsets": [self.offset, end]}),
        );
        self.spool
            .as_mut()
            .expect("open until finish")
            .write_all(bytes)?;
        self.offset = end;
        Ok(())
    }

    pub fn finish(mut self, metadata: &BTreeMap<String, String>, output: &Path) -> io::Result<u64> {
        if !metadata.is_empty() {
            self.header.insert("__metadata__".into(), json!(metadata));
        }
        let mut text = serde_json::to_string(&self.header)?;
        // Tensor data starts 8-byte aligned, as the reference writer does.
        while (8 + text.len()) % 8 != 0 {
            text.push(' ');
        }
        let spool = self.spool.take().expect("open until finish");
        let mut spool = spool.into_inner().map_err(|e| e.into_error())?;
        spool.flush()?;
        spool.rewind()?;
        let mut out = File::create(output)?;
        out.write_all(&(text.len() as u64).to_le_bytes())?;
        out.write_all(text.as_bytes())?;
        let copied = io::copy(&mut spool, &mut out)?;
        drop(spool);
        std::fs::remove_file(&self.spool_path)?;
        Ok(8 + text.len() as u64 + copied)
    }
}

impl Drop for SpooledWriter {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.spool_path);
    }
}
