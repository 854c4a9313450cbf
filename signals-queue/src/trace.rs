//! `tracing` spans and events for job attempts (feature `tracing`), and stand-ins that compile
//! to nothing without it.

use crate::error::{AttemptError, Error};
use crate::job::JobInfo;
use crate::lifecycle::Claimed;

pub(crate) use imp::*;

#[cfg(feature = "tracing")]
mod imp {
    use super::*;

    /// The span of one attempt: the job, its handler and its attempt number.
    pub(crate) fn attempt(job: &Claimed, info: &JobInfo) -> tracing::Span {
        tracing::info_span!(
            "job",
            id = job.id,
            handler = info.name(),
            attempt = job.attempt,
            event_id = %job.event_id,
        )
    }

    pub(crate) fn failed(
        job: &Claimed,
        info: &JobInfo,
        error: &AttemptError,
        recorded: bool,
        dead: bool,
    ) {
        let (id, handler) = (job.id, info.name());
        match (recorded, dead) {
            (false, _) => {
                tracing::warn!(id, handler, %error, "job failed; its lease was lost, so another worker retries it")
            }
            (true, true) => {
                tracing::error!(id, handler, %error, attempt = job.attempt, "job is dead")
            }
            (true, false) => {
                tracing::warn!(id, handler, %error, attempt = job.attempt, "job failed; it will be retried")
            }
        }
    }

    /// `future`, run inside `span`.
    #[cfg(feature = "async")]
    pub(crate) async fn instrument<F: std::future::Future>(
        future: F,
        span: tracing::Span,
    ) -> F::Output {
        tracing::Instrument::instrument(future, span).await
    }

    pub(crate) fn lease_lost(job: &Claimed) {
        tracing::warn!(
            id = job.id,
            "job's lease was lost before it completed; rolled back"
        );
    }

    pub(crate) fn rescued(count: usize) {
        tracing::warn!(
            count,
            "returned the jobs of workers whose lease lapsed to the queue"
        );
    }

    pub(crate) fn leases_lost(count: usize) {
        tracing::warn!(
            count,
            "completed jobs had been rescued meanwhile; they run again"
        );
    }

    #[cfg(feature = "sqlite")]
    pub(crate) fn hung(job: &Claimed, timeout: std::time::Duration) {
        tracing::error!(
            id = job.id,
            ?timeout,
            "a handler thread is past its timeout and cannot be stopped; its job was failed and its late commit will be refused"
        );
    }

    pub(crate) fn database_error(during: &str, error: &Error) {
        tracing::warn!(during, %error, "queue database error; retrying");
    }
}

#[cfg(not(feature = "tracing"))]
mod imp {
    use super::*;

    /// Stands in for a span: `enter` does nothing.
    pub(crate) struct NoSpan;

    /// Stands in for an entered span.
    #[cfg(feature = "sqlite")]
    pub(crate) struct NoGuard;

    #[cfg(feature = "sqlite")]
    impl NoSpan {
        pub(crate) fn enter(&self) -> NoGuard {
            NoGuard
        }
    }

    pub(crate) fn attempt(_: &Claimed, _: &JobInfo) -> NoSpan {
        NoSpan
    }

    pub(crate) fn failed(_: &Claimed, _: &JobInfo, _: &AttemptError, _: bool, _: bool) {}

    #[cfg(feature = "async")]
    pub(crate) async fn instrument<F: std::future::Future>(future: F, _: NoSpan) -> F::Output {
        future.await
    }

    pub(crate) fn lease_lost(_: &Claimed) {}

    pub(crate) fn rescued(_: usize) {}

    pub(crate) fn leases_lost(_: usize) {}

    #[cfg(feature = "sqlite")]
    pub(crate) fn hung(_: &Claimed, _: std::time::Duration) {}

    pub(crate) fn database_error(_: &str, _: &Error) {}
}
