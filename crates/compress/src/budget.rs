//! The memory one job may use. A job runs in a process of its own whose heap the kernel caps
//! (the worker sets the limit); this is the same figure, so that an allocation whose size is
//! known up front (a dataset, a model held in memory) is refused with a message that says
//! what needed how much, rather than aborting the process half-way.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::CompressError;

static BUDGET: AtomicU64 = AtomicU64::new(u64::MAX);

/// Sets this process's budget (once, before any job runs in it).
pub fn set(bytes: u64) {
    BUDGET.store(bytes, Ordering::Relaxed);
}

/// The budget in bytes; `u64::MAX` when none is set (library use, tests).
pub fn get() -> u64 {
    BUDGET.load(Ordering::Relaxed)
}

/// `Err` when `bytes` (what `what` needs at once) is more than the budget.
pub fn check(what: &str, bytes: u64) -> Result<(), CompressError> {
    let budget = get();
    if bytes > budget {
        return Err(CompressError::InvalidRequest(format!(
            "{what} needs {} in memory, more than the job's memory budget of {} \
             (COMPRESSD_JOB_MEMORY_BYTES); use a smaller model, dataset or batch, or raise the budget",
            human(bytes),
            human(budget)
        )));
    }
    Ok(())
}

/// Bytes as a person reads them: `1.5 GiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(3 << 29), "1.5 GiB");
        assert_eq!(human(u64::MAX), "16.0 EiB");
    }
}
