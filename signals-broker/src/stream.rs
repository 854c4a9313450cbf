//! Stream set-up: a stream with the defaults the relay and the subscriber need, created when it
//! is missing, and left as an operator tuned it when it exists (only missing subjects are added).

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use signals_queue::Error;

/// How long a stream remembers message ids to drop duplicates (JetStream's default).
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Creates the stream `name` over `subjects` when it is missing (file storage, a
/// [`DUPLICATE_WINDOW`] for the relay's message ids, everything else JetStream's defaults).
/// When it exists, changes nothing an operator may have set (replicas, `max_age`, limits, its
/// other subjects): it only adds the subjects of `subjects` it lacks, and says in the returned
/// [`StreamSetup`] what differs from what this crate would have created.
///
/// # Errors
///
/// [`Error::Nats`] if JetStream refuses (e.g. another stream already takes a subject).
///
/// # Examples
///
/// ```no_run
/// # async fn run() -> Result<(), signals_queue::Error> {
/// let client = async_nats::connect("nats://127.0.0.1:4222").await.map_err(signals_queue::Error::nats)?;
/// let js = async_nats::jetstream::new(client);
/// signals_broker::ensure_stream(&js, "SHOP", &["shop.>"]).await?;
/// # Ok(())
/// # }
/// ```
pub async fn ensure_stream(
    js: &jetstream::Context,
    name: &str,
    subjects: &[&str],
) -> Result<StreamSetup, Error> {
    let subjects: Vec<String> = subjects.iter().map(|s| (*s).to_owned()).collect();
    create_or_update_stream(js, name, &subjects).await
}

/// What [`ensure_stream`] found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamSetup {
    /// The stream did not exist and was created.
    pub created: bool,
    /// Subjects the existing stream lacked, added to it.
    pub added_subjects: Vec<String>,
    /// How the existing stream differs from what this crate creates, left as it is (e.g. a
    /// shorter duplicate window, which lets a republished message through twice).
    pub differences: Vec<String>,
}

/// See [`ensure_stream`].
pub(crate) async fn create_or_update_stream(
    js: &jetstream::Context,
    name: &str,
    subjects: &[String],
) -> Result<StreamSetup, Error> {
    let mut stream = match js.get_stream(name).await {
        Ok(stream) => stream,
        Err(error) if is_not_found(&error) => {
            js.create_stream(stream::Config {
                name: name.to_owned(),
                subjects: subjects.to_vec(),
                storage: stream::StorageType::File,
                duplicate_window: DUPLICATE_WINDOW,
                ..Default::default()
            })
            .await
            .map_err(Error::nats)?;
            return Ok(StreamSetup {
                created: true,
                ..StreamSetup::default()
            });
        }
        Err(error) => return Err(Error::nats(error)),
    };
    let mut config = stream.info().await.map_err(Error::nats)?.config.clone();
    let mut setup = StreamSetup::default();
    if config.duplicate_window < DUPLICATE_WINDOW {
        setup.differences.push(format!(
            "its duplicate window is {:?}, shorter than the relay's {DUPLICATE_WINDOW:?}",
            config.duplicate_window
        ));
    }
    if config.storage != stream::StorageType::File {
        setup
            .differences
            .push("it keeps messages in memory, not in files".to_owned());
    }
    let missing: Vec<String> = subjects
        .iter()
        .filter(|subject| !config.subjects.contains(subject))
        .cloned()
        .collect();
    if !missing.is_empty() {
        config.subjects.extend(missing.iter().cloned());
        js.update_stream(config).await.map_err(Error::nats)?;
        setup.added_subjects = missing;
    }
    Ok(setup)
}

/// Whether JetStream said the stream does not exist.
fn is_not_found(error: &jetstream::context::GetStreamError) -> bool {
    match error.kind() {
        jetstream::context::GetStreamErrorKind::JetStream(error) => {
            error.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
        }
        _ => false,
    }
}
