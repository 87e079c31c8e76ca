//! Runs a pipeline's steps in order, each reading the previous step's output.

use std::path::{Path, PathBuf};

use super::control::Control;
use super::prune::prune_file;
use super::report::PruneReport;
use super::CompressError;
use crate::domain::{Pipeline, Step};

pub struct PipelineRun {
    /// The last step's output file, inside the work directory.
    pub output: PathBuf,
    pub steps: Vec<PruneReport>,
}

pub fn run_pipeline(
    input: &Path,
    workdir: &Path,
    pipeline: &Pipeline,
    control: &Control,
) -> Result<PipelineRun, CompressError> {
    let count = pipeline.steps().len();
    let mut current = input.to_path_buf();
    let mut reports = Vec::with_capacity(count);
    for (i, step) in pipeline.steps().iter().enumerate() {
        control.begin_step(i, count);
        let output = workdir.join(format!("step-{i}.safetensors"));
        let report = match step {
            Step::Prune(p) => prune_file(&current, &output, p, control),
        };
        if i > 0 {
            let _ = std::fs::remove_file(&current);
        }
        reports.push(report?);
        current = output;
    }
    control.begin_step(count, count);
    Ok(PipelineRun {
        output: current,
        steps: reports,
    })
}
