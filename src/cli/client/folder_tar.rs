//! A Hugging Face folder as one tar file, made the same way every time (names sorted, times,
//! owners and modes fixed) so that the same folder has the same SHA-256 and an interrupted
//! upload of it can resume.

use std::path::{Path, PathBuf};

use super::connection::Failure;

pub fn tar_folder(dir: &Path) -> Result<tempfile::NamedTempFile, Failure> {
    let local = |e: std::io::Error| Failure::local(&dir.display().to_string(), e);
    let mut files = Vec::new();
    collect(dir, dir, &mut files).map_err(local)?;
    if files.is_empty() {
        return Err(Failure::Input(format!(
            "{} holds no files to upload",
            dir.display()
        )));
    }
    files.sort();
    let out = tempfile::Builder::new()
        .prefix("compressd-folder-")
        .suffix(".tar")
        .tempfile()
        .map_err(|e| Failure::local("a temporary file for the folder's tar", e))?;
    let mut builder = tar::Builder::new(std::io::BufWriter::new(out.as_file()));
    for relative in &files {
        let path = dir.join(relative);
        let mut file = std::fs::File::open(&path).map_err(local)?;
        let mut header = tar::Header::new_gnu();
        header.set_size(file.metadata().map_err(local)?.len());
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        let name = relative.to_string_lossy().replace('\\', "/");
        builder
            .append_data(&mut header, &name, &mut file)
            .map_err(local)?;
    }
    builder
        .into_inner()
        .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
        .map_err(local)?;
    Ok(out)
}

/// Regular files below `dir`, relative to `root`; hidden folders (`.git`, `.cache`) are left
/// out.
fn collect(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            if !entry.file_name().to_string_lossy().starts_with('.') {
                collect(root, &path, out)?;
            }
        } else if path.is_file() {
            out.push(
                path.strip_prefix(root)
                    .expect("below the root")
                    .to_path_buf(),
            );
        }
    }
    Ok(())
}
