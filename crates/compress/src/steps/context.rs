//! What a step is given (the file to read and the job's state) and what it gives back (the file
//! it wrote, what kind of file that is, and its report).

use std::path::{Path, PathBuf};

use crate::control::Control;
use crate::nn::ModelState;
use crate::steps::artifact::Format;
use crate::steps::StepReport;

pub struct StepContext<'a> {
    /// The file the previous step wrote, or the job's model before the first.
    pub input: &'a Path,
    pub input_format: &'a Format,
    pub workdir: &'a Path,
    /// The step's position in the pipeline, for file names and progress events.
    pub index: usize,
    pub model_name: &'a str,
    pub state: &'a mut ModelState,
    pub control: &'a Control,
}

impl StepContext<'_> {
    /// Where the step writes its result: `step-<i>.<extension>` in the job's directory.
    pub fn output(&self, extension: &str) -> PathBuf {
        self.workdir
            .join(format!("step-{}.{extension}", self.index))
    }

    /// Whether the model is measured before and after the pipeline (it has an architecture
    /// and the job a dataset), so a dense copy of a sparse result is worth keeping.
    pub fn measured(&self) -> bool {
        self.state.measured()
    }
}

/// A file a run leaves for the caller to keep, and what it is.
#[derive(Debug, Clone)]
pub struct OutputFile {
    /// `model` (the compressed model), `model_dequantized` or `architecture`.
    pub kind: &'static str,
    pub path: PathBuf,
    pub format: Format,
}

pub struct StepOutput {
    /// The file the step wrote, which the next step reads; `None` for a step that only
    /// measures (the next step reads the same file this one read).
    pub file: Option<PathBuf>,
    /// What `file` is (for a step that only measures, what its input was).
    pub format: Format,
    pub report: StepReport,
    /// Files kept beside the model (a dequantized copy).
    pub extra: Vec<OutputFile>,
    /// A dense copy of a sparse `file`, for the after-evaluation.
    pub dense_twin: Option<PathBuf>,
}

impl StepOutput {
    pub fn wrote(file: PathBuf, format: Format, report: StepReport) -> StepOutput {
        StepOutput {
            file: Some(file),
            format,
            report,
            extra: Vec::new(),
            dense_twin: None,
        }
    }

    pub fn measured(cx: &StepContext, report: StepReport) -> StepOutput {
        StepOutput {
            file: None,
            format: cx.input_format.clone(),
            report,
            extra: Vec::new(),
            dense_twin: None,
        }
    }
}
