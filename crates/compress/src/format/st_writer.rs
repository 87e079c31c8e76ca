//! Writing a safetensors file whose tensor sizes are only known as they are produced, one
//! tensor in memory at a time. Two modes: data is spooled to a work file and copied behind the
//! header at the end (exact header, small files), or written straight into the output behind
//! a reserved header region that the final header, padded with spaces as the format allows,
//! fills in (large files: no second copy of the data).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

pub struct SpooledWriter {
    spool_path: PathBuf,
    spool: Option<BufWriter<File>>,
    header: Map<String, Value>,
    offset: u64,
    /// In-place mode: header bytes reserved at the start of the output (spool_path is then
    /// the output itself).
    reserved: Option<u64>,
}

fn open_rw(path: &Path) -> io::Result<File> {
    File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
}

impl SpooledWriter {
    pub fn new(spool_path: &Path) -> io::Result<Self> {
        Ok(SpooledWriter {
            spool_path: spool_path.to_owned(),
            spool: Some(BufWriter::with_capacity(4 << 20, open_rw(spool_path)?)),
            header: Map::new(),
            offset: 0,
            reserved: None,
        })
    }

    /// Writes the data straight into `output`, after `reserve` bytes kept for the header.
    pub fn in_place(output: &Path, reserve: u64) -> io::Result<Self> {
        let reserve = reserve.div_ceil(8) * 8;
        let mut file = open_rw(output)?;
        file.seek(SeekFrom::Start(8 + reserve))?;
        Ok(SpooledWriter {
            spool_path: output.to_owned(),
            spool: Some(BufWriter::with_capacity(4 << 20, file)),
            header: Map::new(),
            offset: 0,
            reserved: Some(reserve),
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

    /// Appends one tensor whose bytes `fill` writes a piece at a time (a tensor too large to
    /// hold in memory at once).
    pub fn add_streamed(
        &mut self,
        name: &str,
        dtype: &str,
        shape: &[u64],
        fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<()> {
        struct Counting<'a, W: Write>(&'a mut W, u64);
        impl<W: Write> Write for Counting<'_, W> {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                let n = self.0.write(buf)?;
                self.1 += n as u64;
                Ok(n)
            }
            fn flush(&mut self) -> io::Result<()> {
                self.0.flush()
            }
        }
        let mut out = Counting(self.spool.as_mut().expect("open until finish"), 0);
        fill(&mut out)?;
        let end = self.offset + out.1;
        self.header.insert(
            name.to_owned(),
            json!({"dtype": dtype, "shape": shape, "data_offsets": [self.offset, end]}),
        );
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
        if let Some(reserve) = self.reserved {
            if text.len() as u64 <= reserve && output == self.spool_path {
                text.extend(std::iter::repeat_n(
                    ' ',
                    (reserve - text.len() as u64) as usize,
                ));
                spool.seek(SeekFrom::Start(0))?;
                spool.write_all(&(text.len() as u64).to_le_bytes())?;
                spool.write_all(text.as_bytes())?;
                // The file is now complete; nothing to remove on drop.
                self.spool_path = PathBuf::new();
                return Ok(8 + reserve + self.offset);
            }
            // The header outgrew its room: move the data behind an exact header.
            spool.seek(SeekFrom::Start(8 + reserve))?;
            let moved = output.with_extension("moved");
            let copied = write_with_header(&moved, &text, &mut spool)?;
            drop(spool);
            std::fs::rename(&moved, output)?;
            self.spool_path = PathBuf::new();
            return Ok(copied);
        }
        spool.rewind()?;
        let copied = write_with_header(output, &text, &mut spool)?;
        drop(spool);
        std::fs::remove_file(&self.spool_path)?;
        Ok(copied)
    }
}

fn write_with_header(path: &Path, header: &str, data: &mut File) -> io::Result<u64> {
    let mut out = File::create(path)?;
    out.write_all(&(header.len() as u64).to_le_bytes())?;
    out.write_all(header.as_bytes())?;
    let copied = io::copy(data, &mut out)?;
    Ok(8 + header.len() as u64 + copied)
}

impl Drop for SpooledWriter {
    fn drop(&mut self) {
        if !self.spool_path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.spool_path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(w: &mut SpooledWriter) {
        w.add("a", "F32", &[2], &[0, 0, 128, 63, 0, 0, 0, 64])
            .unwrap();
        w.add("b.weight_scale", "U8", &[3], &[1, 2, 3]).unwrap();
    }

    #[test]
    fn both_modes_write_files_the_reference_reader_opens() {
        let dir = tempfile::tempdir().unwrap();
        let meta = BTreeMap::from([("k".to_string(), "v".to_string())]);
        for reserve in [None, Some(4096), Some(8)] {
            let out = dir.path().join(format!("{reserve:?}.safetensors"));
            let mut w = match reserve {
                None => SpooledWriter::new(&out.with_extension("spool")).unwrap(),
                Some(r) => SpooledWriter::in_place(&out, r).unwrap(),
            };
            write(&mut w);
            let len = w.finish(&meta, &out).unwrap();
            let bytes = std::fs::read(&out).unwrap();
            assert_eq!(len, bytes.len() as u64, "{reserve:?}");
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            assert_eq!(
                st.tensor("a").unwrap().data(),
                &[0, 0, 128, 63, 0, 0, 0, 64]
            );
            assert_eq!(st.tensor("b.weight_scale").unwrap().data(), &[1, 2, 3]);
            let (_, m) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
            assert_eq!(m.metadata().as_ref().unwrap()["k"], "v");
            let leftovers: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .filter(|n| !n.to_string_lossy().ends_with(".safetensors"))
                .collect();
            assert!(leftovers.is_empty(), "{leftovers:?}");
        }
    }
}
