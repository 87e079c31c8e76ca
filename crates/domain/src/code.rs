//! Every kind of problem compressd reports, once: its stable slug (the `type` is
//! `urn:compressd:problem:<slug>`), its HTTP status and its title. The API's errors and a
//! failed job's `error` both take theirs from here, so one code never means two things.

use crate::Problem;

macro_rules! codes {
    ($($variant:ident = $slug:literal, $status:literal, $title:literal;)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $($variant),*
        }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$variant),*];

            pub fn slug(self) -> &'static str {
                match self {
                    $(Code::$variant => $slug),*
                }
            }

            pub fn status(self) -> u16 {
                match self {
                    $(Code::$variant => $status),*
                }
            }

            pub fn title(self) -> &'static str {
                match self {
                    $(Code::$variant => $title),*
                }
            }
        }
    };
}

codes! {
    // Requests the server could not read.
    InvalidJson = "invalid-json", 400, "Malformed JSON";
    InvalidQuery = "invalid-query", 400, "Invalid query";
    InvalidMultipart = "invalid-multipart", 400, "Invalid multipart body";
    InvalidName = "invalid-name", 400, "Invalid name";
    InvalidSeed = "invalid-seed", 400, "Invalid seed";
    InvalidPartNumber = "invalid-part-number", 400, "Invalid part number";
    InvalidIdempotencyKey = "invalid-idempotency-key", 400, "Invalid Idempotency-Key";
    UnreadableBody = "unreadable-body", 400, "Request body unreadable";
    EmptyUpload = "empty-upload", 400, "Empty upload";
    UploadInterrupted = "upload-interrupted", 400, "Upload interrupted";
    UploadStalled = "upload-stalled", 408, "Upload stalled";
    UploadTooLarge = "upload-too-large", 413, "Upload too large";
    UnsupportedMediaType = "unsupported-media-type", 415, "Unsupported media type";
    RangeNotSatisfiable = "range-not-satisfiable", 416, "Range not satisfiable";
    // Who is asking.
    MissingApiKey = "missing-api-key", 401, "Unauthorized";
    InvalidApiKey = "invalid-api-key", 401, "Unauthorized";
    InvalidAdminKey = "invalid-admin-key", 401, "Unauthorized";
    AdminDisabled = "admin-disabled", 403, "Admin API disabled";
    // Limits.
    QuotaExceeded = "quota-exceeded", 403, "Quota exceeded";
    QueueFull = "queue-full", 409, "Queue full";
    RateLimited = "rate-limited", 429, "Too many requests";
    // What is there.
    NotFound = "not-found", 404, "Not found";
    MethodNotAllowed = "method-not-allowed", 405, "Method not allowed";
    ModelNotFound = "model-not-found", 422, "Model not found";
    DatasetNotFound = "dataset-not-found", 422, "Dataset not found";
    ModelInUse = "model-in-use", 409, "Model in use";
    DatasetInUse = "dataset-in-use", 409, "Dataset in use";
    JobActive = "job-active", 409, "Job still active";
    JobFinished = "job-finished", 409, "Job already finished";
    TenantExists = "tenant-exists", 409, "Tenant exists";
    PartsMissing = "parts-missing", 409, "Upload parts missing";
    UploadCompleting = "upload-completing", 409, "Upload being completed";
    ReportNotReady = "report-not-ready", 404, "No report";
    IdempotencyKeyReused = "idempotency-key-reused", 422, "Idempotency-Key reused";
    // What was sent, read and found wanting.
    InvalidRequest = "invalid-request", 422, "Invalid request";
    InvalidModel = "invalid-model", 422, "Invalid model";
    InvalidConfig = "invalid-config", 422, "Invalid config";
    InvalidArchitecture = "invalid-architecture", 422, "Invalid architecture";
    WeightsMismatch = "weights-mismatch", 422, "Weights do not fit the architecture";
    InvalidDataset = "invalid-dataset", 422, "Invalid dataset";
    InvalidPipeline = "invalid-pipeline", 422, "Invalid pipeline";
    PipelineNotApplicable = "pipeline-not-applicable", 422, "Pipeline does not apply to this model";
    ArchitectureRequired = "architecture-required", 422, "Model has no architecture";
    DatasetRequired = "dataset-required", 422, "Dataset required";
    DatasetMismatch = "dataset-mismatch", 422, "Dataset does not fit the model";
    UnsupportedModel = "unsupported-model", 422, "Model cannot run this pipeline";
    InvalidSha256 = "invalid-sha256", 422, "Invalid SHA-256";
    ChecksumMismatch = "checksum-mismatch", 422, "SHA-256 mismatch";
    InvalidTtl = "invalid-ttl", 422, "Invalid time to live";
    InvalidWebhookUrl = "invalid-webhook-url", 422, "Invalid webhook URL";
    InvalidLabel = "invalid-label", 422, "Invalid label";
    InvalidRateLimit = "invalid-rate-limit", 422, "Invalid rate limit";
    InvalidTenantName = "invalid-tenant-name", 422, "Invalid tenant name";
    OverMemoryBudget = "over-memory-budget", 422, "Over the job's memory budget";
    // The server's side.
    Internal = "internal", 500, "Internal server error";
    JobCrashed = "job-crashed", 500, "The job's process died";
    Unavailable = "unavailable", 503, "Service unavailable";
    StoreError = "store-error", 503, "Database error";
    IoError = "io-error", 503, "Storage error";
    StorageFull = "storage-full", 507, "Insufficient storage";
    WorkerLost = "worker-lost", 503, "Worker lost";
}

impl Code {
    /// The problem this code names, with what went wrong in `detail`.
    pub fn problem(self, detail: impl Into<String>) -> Problem {
        Problem {
            kind: format!("urn:compressd:problem:{}", self.slug()),
            title: self.title().to_owned(),
            status: self.status(),
            detail: detail.into(),
            limit: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Code;

    #[test]
    fn each_code_once_with_a_status_and_a_title() {
        let mut slugs = std::collections::HashSet::new();
        for code in Code::ALL {
            assert!(slugs.insert(code.slug()), "{} twice", code.slug());
            assert!((400..600).contains(&code.status()), "{code:?}");
            assert!(!code.title().is_empty());
            assert!(code
                .slug()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'-' || b.is_ascii_digit()));
        }
    }
}
