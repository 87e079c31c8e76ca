//! How a running step hears "stop" and reports progress: plain atomics, checked between chunks.

use domain::results::ProgressDetail;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::CompressError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    /// The user cancelled the job.
    Cancelled,
    /// The process is shutting down; the job goes back to the queue.
    Shutdown,
    /// Another worker holds the job now; this attempt must not write anything.
    LeaseLost,
}

impl Interrupt {
    fn code(self) -> u8 {
        match self {
            Interrupt::Cancelled => 1,
            Interrupt::Shutdown => 2,
            Interrupt::LeaseLost => 3,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Interrupt::Cancelled),
            2 => Some(Interrupt::Shutdown),
            3 => Some(Interrupt::LeaseLost),
            _ => None,
        }
    }
}

#[derive(Debug, Default)]
pub struct Control {
    interrupt: AtomicU8,
    done: AtomicU64,
    total: AtomicU64,
    step: AtomicU64,
    steps: AtomicU64,
    /// Slows every chunk down; only for tests that must catch a job mid-flight.
    chunk_delay: Duration,
    /// What a long step is doing (round, epoch, accuracy), for progress events.
    detail: Mutex<Option<ProgressDetail>>,
}

impl Control {
    pub fn new(chunk_delay: Duration) -> Self {
        Control {
            chunk_delay,
            steps: AtomicU64::new(1),
            ..Default::default()
        }
    }

    /// The first reason given wins, except that a lost lease overrides everything: once the
    /// lease is gone nothing may be written on this attempt's behalf.
    pub fn interrupt(&self, why: Interrupt) {
        if why == Interrupt::LeaseLost {
            self.interrupt.store(why.code(), Ordering::SeqCst);
        } else {
            let _ =
                self.interrupt
                    .compare_exchange(0, why.code(), Ordering::SeqCst, Ordering::SeqCst);
        }
    }

    pub fn interrupted(&self) -> Option<Interrupt> {
        Interrupt::from_code(self.interrupt.load(Ordering::SeqCst))
    }

    /// Called between chunks: stops the step if asked to.
    pub fn checkpoint(&self) -> Result<(), CompressError> {
        if !self.chunk_delay.is_zero() {
            std::thread::sleep(self.chunk_delay);
        }
        match self.interrupted() {
            Some(why) => Err(CompressError::Interrupted(why)),
            None => Ok(()),
        }
    }

    pub fn begin_step(&self, index: usize, count: usize) {
        self.step.store(index as u64, Ordering::Relaxed);
        self.steps.store(count.max(1) as u64, Ordering::Relaxed);
        self.done.store(0, Ordering::Relaxed);
        self.total.store(0, Ordering::Relaxed);
    }

    /// The position of the step running now.
    pub fn step_index(&self) -> usize {
        self.step.load(Ordering::Relaxed) as usize
    }

    pub fn add_work(&self, bytes: u64) {
        self.total.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn advance(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn set_detail(&self, detail: ProgressDetail) {
        *self.detail.lock().expect("detail lock") = Some(detail);
    }

    pub fn detail(&self) -> Option<ProgressDetail> {
        self.detail.lock().expect("detail lock").clone()
    }

    /// Fraction of the whole pipeline done, in [0, 1].
    pub fn progress(&self) -> f64 {
        let total = self.total.load(Ordering::Relaxed);
        let within = if total == 0 {
            0.0
        } else {
            (self.done.load(Ordering::Relaxed) as f64 / total as f64).min(1.0)
        };
        let steps = self.steps.load(Ordering::Relaxed) as f64;
        ((self.step.load(Ordering::Relaxed) as f64 + within) / steps).min(1.0)
    }
}
