//! Turns a finished pipeline run into the job's metrics and the files to keep (the model, a
//! JSON report, the HTML report and its charts, the config beside a compressed model), each
//! measured and named. Runs in the job process: rendering the report is work like any other.

use std::io::{self, Read};
use std::path::Path;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::protocol::{JobSpec, Prepared, PreparedFile};
use crate::compress::{OutputFile, PipelineRun, SafetensorsIndex};
use crate::domain::results::JobMetrics;
use crate::report::render;

pub fn prepare(spec: &JobSpec, pipeline: &Value, run: PipelineRun) -> io::Result<Prepared> {
    let model = &spec.model;
    // A pipeline that only measures leaves no model file: the model is as it was uploaded.
    let written = run
        .outputs
        .iter()
        .find(|o| o.kind == "model")
        .map(|o| o.path.clone());
    let main_bytes = match &written {
        Some(path) => std::fs::metadata(path)?.len(),
        None => model.size_bytes,
    };
    let PipelineRun {
        outputs,
        steps,
        evaluation,
        fidelity,
        histograms,
    } = run;
    let metrics = JobMetrics::new(model.size_bytes, main_bytes, evaluation, histograms, steps)
        .with_fidelity(fidelity);
    let metrics_json = serde_json::to_value(&metrics)?;
    let folder = matches!(spec.model_format.as_str(), "hf" | "gguf");
    let mut files = Files {
        workdir: &spec.workdir,
        base: safe_file_stem(&model.name),
        folder,
        files: Vec::new(),
        listed: Vec::new(),
    };
    for output in &outputs {
        files.output(output)?;
    }
    if let (Some(config), Some(path)) = (&model.config, &written) {
        files.config(&config_beside(config, path))?;
    }
    let safetensors_model = written
        .as_ref()
        .is_some_and(|p| SafetensorsIndex::open(p).is_ok());
    if folder && safetensors_model {
        for (path, file) in &spec.model_files {
            files.folder_file(path, file)?;
        }
        files.tarball()?;
    }
    let report = json!({
        "job_id": spec.job_id,
        "attempt": spec.attempt,
        "input_model": {
            "id": model.id,
            "name": model.name,
            "sha256": model.sha256,
            "size_bytes": model.size_bytes,
        },
        "pipeline": pipeline,
        "metrics": metrics_json,
        "artifacts": files.listed,
    });
    let title = format!("compressd job {} — {}", spec.job_id, model.name);
    files.report_page(&title, &metrics)?;
    files.text(
        "report.json",
        &serde_json::to_vec_pretty(&report)?,
        ".report.json",
        "report",
        "application/json",
    )?;
    Ok(Prepared {
        metrics: metrics_json,
        files: files.files,
    })
}

/// The files a job keeps, named after the model (or, for a folder, as the folder names them),
/// and how the JSON report lists them.
struct Files<'a> {
    workdir: &'a Path,
    base: String,
    /// The model is a Hugging Face folder: its files keep their names, and the whole folder
    /// is also one tar.
    folder: bool,
    files: Vec<PreparedFile>,
    listed: Vec<Value>,
}

/// Kinds of file that belong in a folder's tar.
const IN_FOLDER: &[&str] = &["model", "config", "model_file"];

impl Files<'_> {
    fn output(&mut self, output: &OutputFile) -> io::Result<()> {
        let content_type = if output.format.suffix.ends_with(".json") {
            "application/json"
        } else {
            "application/octet-stream"
        };
        let name = if self.folder
            && output.kind == "model"
            && output.format.suffix.ends_with(".safetensors")
        {
            "model.safetensors".to_owned()
        } else {
            format!("{}{}", self.base, output.format.suffix)
        };
        let f = measured(&output.path, name, output.kind, content_type)?;
        self.list(&f, &output.format.description, output.format.read_with);
        self.files.push(f);
        Ok(())
    }

    fn config(&mut self, config: &Value) -> io::Result<()> {
        let path = self.workdir.join("config.json");
        std::fs::write(&path, serde_json::to_vec_pretty(config)?)?;
        let f = measured(&path, "config.json".into(), "config", "application/json")?;
        self.list(
            &f,
            "JSON: the uploaded config.json, plus the quantization_config of a quantized model",
            &["transformers", "vLLM", "llm-compressor"],
        );
        self.files.push(f);
        Ok(())
    }

    /// One of the uploaded folder's other files, copied into the job's directory (the stored
    /// file itself stays where it is).
    fn folder_file(&mut self, path: &str, file: &Path) -> io::Result<()> {
        let copy = self.workdir.join(format!("folder-{}", self.files.len()));
        std::fs::copy(file, &copy)?;
        let content_type = if path.ends_with(".json") {
            "application/json"
        } else {
            "application/octet-stream"
        };
        let f = measured(&copy, path.to_owned(), "model_file", content_type)?;
        self.list(&f, "a file of the uploaded folder, as it was", &[]);
        self.files.push(f);
        Ok(())
    }

    /// The whole folder (weights, config and the other files, under their folder paths) as one
    /// tar, for `tar -xf` and `from_pretrained`.
    fn tarball(&mut self) -> io::Result<()> {
        let path = self.workdir.join("folder.tar");
        let mut tar = tar::Builder::new(std::fs::File::create(&path)?);
        for f in self
            .files
            .iter()
            .filter(|f| IN_FOLDER.contains(&f.kind.as_str()))
        {
            tar.append_path_with_name(&f.path, &f.file_name)?;
        }
        tar.into_inner()?.sync_all()?;
        let name = format!("{}.tar", self.base);
        let f = measured(&path, name, "model_folder", "application/x-tar")?;
        self.list(&f, "the compressed model as a folder (tar): weights, config.json and the uploaded folder's other files", &["tar -xf, then transformers' from_pretrained or vLLM"]);
        self.files.push(f);
        Ok(())
    }

    fn list(&mut self, f: &PreparedFile, format: &str, read_with: &[&str]) {
        self.listed.push(json!({
            "kind": f.kind,
            "file_name": f.file_name,
            "sha256": f.sha256,
            "size_bytes": f.size_bytes,
            "format": format,
            "read_with": read_with,
        }));
    }

    /// A file written from bytes in the job's directory.
    fn text(
        &mut self,
        file: &str,
        bytes: &[u8],
        suffix: &str,
        kind: &str,
        content_type: &str,
    ) -> io::Result<()> {
        let path = self.workdir.join(file);
        std::fs::write(&path, bytes)?;
        let name = format!("{}{suffix}", self.base);
        let f = measured(&path, name, kind, content_type)?;
        self.files.push(f);
        Ok(())
    }

    /// The HTML page and its charts; a chart that cannot be drawn leaves the job's result
    /// intact and says so on the page.
    fn report_page(&mut self, title: &str, metrics: &JobMetrics) -> io::Result<()> {
        let (html, charts) = render(title, metrics).unwrap_or_else(|e| {
            (
                format!(
                    "<!doctype html><html><body><h1>report unavailable</h1><p>{}</p></body></html>",
                    e.replace('<', "&lt;")
                ),
                Vec::new(),
            )
        });
        self.text(
            "report.html",
            html.as_bytes(),
            ".report.html",
            "report_html",
            "text/html; charset=utf-8",
        )?;
        for (name, svg) in charts {
            let (file, suffix) = (format!("{name}.svg"), format!(".{name}.svg"));
            self.text(&file, svg.as_bytes(), &suffix, "chart", "image/svg+xml")?;
        }
        Ok(())
    }
}

fn measured(
    path: &Path,
    file_name: String,
    kind: &str,
    content_type: &str,
) -> io::Result<PreparedFile> {
    let (sha256, size_bytes) = hash_file(path)?;
    Ok(PreparedFile {
        path: path.to_owned(),
        file_name,
        kind: kind.to_owned(),
        content_type: content_type.to_owned(),
        sha256,
        size_bytes,
    })
}

/// The uploaded config with the model file's `quantization_config` (compressed-tensors reads
/// it from config.json), when the file has one.
fn config_beside(config: &Value, model_file: &Path) -> Value {
    let mut config = config.clone();
    let quantization = SafetensorsIndex::open(model_file)
        .ok()
        .and_then(|i| i.metadata.get("quantization_config").cloned())
        .and_then(|q| serde_json::from_str::<Value>(&q).ok());
    if let (Some(q), Value::Object(c)) = (quantization, &mut config) {
        c.insert("quantization_config".into(), q);
    }
    config
}

pub fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), total))
}

/// A file name stem from a user-given model name: letters, digits, '.', '-', '_' only.
fn safe_file_stem(name: &str) -> String {
    let stem: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    let stem = stem.trim_matches('.').to_owned();
    if stem.is_empty() {
        "model".into()
    } else {
        stem
    }
}

#[cfg(test)]
mod tests {
    use super::safe_file_stem;

    #[test]
    fn file_stems_are_safe() {
        assert_eq!(safe_file_stem("lenet"), "lenet");
        assert_eq!(safe_file_stem("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(safe_file_stem("a b\nc"), "a_b_c");
        assert_eq!(safe_file_stem(".."), "model");
    }
}
