//! Streaming tensor bytes: the input is mapped one window at a time (no copy, every core can
//! read it, and resident memory stays at a window whatever the model size), and the output is
//! written on a thread of its own so that writing one chunk overlaps pruning the next.

use std::fs::File;
use std::io::{self, Write};
use std::ops::Deref;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use memmap2::{Mmap, MmapOptions};

use crate::control::Control;
use crate::format::safetensors_index::{SafetensorsIndex, TensorEntry};
use crate::CompressError;

pub const CHUNK_BYTES: usize = 16 << 20;

/// A tensor's byte range cut into chunks of whole elements: (offset in data section, length).
pub fn chunks(tensor: &TensorEntry) -> impl Iterator<Item = (u64, usize)> + '_ {
    let width = tensor.dtype.size();
    let step = ((CHUNK_BYTES / width) * width) as u64;
    (tensor.begin..tensor.end)
        .step_by(step.max(1) as usize)
        .map(move |offset| (offset, (tensor.end - offset).min(step) as usize))
}

/// One chunk of the input, mapped read-only; unmapped on drop.
pub struct Window {
    map: Option<Mmap>,
    skip: usize,
    len: usize,
}

impl Deref for Window {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.map {
            Some(m) => &m[self.skip..self.skip + self.len],
            None => &[],
        }
    }
}

fn page_size() -> u64 {
    // Every platform compressd targets maps at 4 KiB granularity or a divisor of 64 KiB.
    64 << 10
}

/// Maps a chunk of the data section.
pub fn map_chunk(
    file: &File,
    index: &SafetensorsIndex,
    (offset, len): (u64, usize),
) -> io::Result<Window> {
    if len == 0 {
        return Ok(Window {
            map: None,
            skip: 0,
            len: 0,
        });
    }
    let absolute = index.data_start + offset;
    let aligned = absolute - absolute % page_size();
    let skip = (absolute - aligned) as usize;
    // SAFETY: blobs are immutable once stored and work files belong to this attempt alone, so
    // nothing truncates or rewrites the file while it is mapped.
    let map = unsafe {
        MmapOptions::new()
            .offset(aligned)
            .len(skip + len)
            .map(file)?
    };
    Ok(Window {
        map: Some(map),
        skip,
        len,
    })
}

/// Visits a tensor's bytes chunk by chunk, checking for interruption and counting progress
/// between chunks.
pub fn for_each_chunk(
    file: &File,
    index: &SafetensorsIndex,
    tensor: &TensorEntry,
    control: &Control,
    mut visit: impl FnMut(&[u8]),
) -> Result<(), CompressError> {
    for chunk in chunks(tensor) {
        control.checkpoint()?;
        visit(&map_chunk(file, index, chunk)?);
        control.advance(chunk.1 as u64);
    }
    Ok(())
}

/// Writes buffers on its own thread, handing them back for reuse.
pub struct PipelinedWriter {
    to_writer: Option<SyncSender<Vec<u8>>>,
    recycled: Receiver<Vec<u8>>,
    thread: Option<JoinHandle<io::Result<File>>>,
}

impl PipelinedWriter {
    pub fn new(mut file: File) -> Self {
        let (to_writer, inbox) = sync_channel::<Vec<u8>>(1);
        let (give_back, recycled) = sync_channel::<Vec<u8>>(3);
        let thread = std::thread::spawn(move || {
            for buf in inbox {
                file.write_all(&buf)?;
                let _ = give_back.try_send(buf);
            }
            // No fsync here: intermediate files need none, and a kept output is synced
            // once, when blob storage commits it.
            file.flush()?;
            Ok(file)
        });
        PipelinedWriter {
            to_writer: Some(to_writer),
            recycled,
            thread: Some(thread),
        }
    }

    /// A buffer of `len` bytes to fill, reusing one the writer has finished with. Its contents
    /// are stale: the caller overwrites every byte.
    pub fn buffer(&mut self, len: usize) -> Vec<u8> {
        let mut buf = self.recycled.try_recv().unwrap_or_default();
        // Reused buffers are already full length, so this writes nothing in the common case.
        buf.resize(len, 0);
        buf
    }

    pub fn write(&mut self, buf: Vec<u8>) -> io::Result<()> {
        let sender = self.to_writer.as_ref().expect("writer open");
        if sender.send(buf).is_err() {
            // The thread stopped early: its result holds the error.
            return Err(self.join().err().unwrap_or_else(|| {
                io::Error::other("the writer thread stopped without an error")
            }));
        }
        Ok(())
    }

    /// Waits for every buffer to be written and returns the file.
    pub fn finish(mut self) -> io::Result<File> {
        self.join()
    }

    fn join(&mut self) -> io::Result<File> {
        self.to_writer.take();
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the writer thread panicked"))),
            None => Err(io::Error::other("the writer was already closed")),
        }
    }
}

impl Drop for PipelinedWriter {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.join();
        }
    }
}

/// Copies the 8-byte length and the header verbatim: pruning keeps every offset.
pub fn copy_header(input: &File, index: &SafetensorsIndex) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut header = vec![0u8; index.data_start as usize];
    input.read_exact_at(&mut header, 0)?;
    Ok(header)
}
