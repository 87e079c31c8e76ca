//! Finished jobs' output files. Rows are only ever written together with the job's success.

use uuid::Uuid;

use super::records::{convert, ArtifactRecord, ArtifactRow};
use super::{on_pool, Result, Store};

impl Store {
    pub async fn get_artifact(&self, id: Uuid) -> Result<Option<ArtifactRecord>> {
        let row: Option<ArtifactRow> = on_pool!(&self.db, pool => sqlx::query_as("SELECT * FROM artifacts WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(pool)
            .await)?;
        row.map(TryInto::try_into).transpose()
    }

    pub async fn artifacts_of_job(&self, job_id: Uuid) -> Result<Vec<ArtifactRecord>> {
        let rows: Vec<ArtifactRow> = on_pool!(&self.db, pool => sqlx::query_as(
            "SELECT * FROM artifacts WHERE job_id = $1 ORDER BY kind, id",
        )
        .bind(job_id.to_string())
        .fetch_all(pool)
        .await)?;
        convert(rows)
    }
}
