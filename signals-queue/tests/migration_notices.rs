//! The first migration of an empty PostgreSQL schema logs none of PostgreSQL's "… does not
//! exist, skipping" notices. A test binary of its own with one test: tracing caches each
//! callsite's interest process-wide, so a subscriber set for one thread while other tests run
//! may never be asked about sqlx's notice events.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use signals_queue::AsyncQueue;

mod support;
use support::Db;

/// Counts the events of sqlx's PostgreSQL notices (target `sqlx::postgres::notice`).
#[derive(Clone, Default)]
struct Notices(Arc<AtomicUsize>);

impl tracing::Subscriber for Notices {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if event.metadata().target() == "sqlx::postgres::notice" {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// The first migration of an empty schema prints none of PostgreSQL's "… does not exist,
/// skipping" notices (its `IF EXISTS` statements are not news).
#[tokio::test]
async fn the_first_migration_logs_no_notices() {
    let notices = Notices::default();
    tracing::subscriber::set_global_default(notices.clone()).unwrap();
    let Some(db) = Db::postgres_or_skip(true).await else {
        return;
    };
    let signals_queue::Pool::Postgres(pool) = db.pool.clone() else {
        unreachable!("a PostgreSQL test");
    };
    // The check can fail: a notice of this session does reach the subscriber.
    sqlx::raw_sql("DROP TABLE IF EXISTS signals_no_such_table")
        .execute(&pool)
        .await
        .unwrap();
    let seen = notices.0.load(Ordering::SeqCst);
    assert!(seen >= 1, "the subscriber sees this session's notices");
    AsyncQueue::new(db.pool.clone()).migrate().await.unwrap();
    assert_eq!(
        notices.0.load(Ordering::SeqCst),
        seen,
        "the migration sent notices"
    );
    db.drop_schema().await;
}
