//! RFC 9457 problem details: the one shape every error takes, in HTTP answers and in a failed
//! job's `error` field.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Problem {
    /// A stable URI naming the kind of problem, e.g. `urn:compressd:problem:invalid-model`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// What went wrong, in words a user can act on.
    pub detail: String,
    /// For limits and quotas: which one was hit (`rate_per_minute`, `stored_bytes`,
    /// `queued_jobs`, `upload_bytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
}

impl Problem {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a problem always serialises")
    }
}
