//! Publishing: store first, then deliver, in offset order.
//!
//! One task takes publish requests from a queue, appends everything waiting
//! in one batch, and only after the commit fans the publications out and
//! answers the publishers. Because that task is the only writer, subscribers
//! see each channel's offsets strictly in order, which is what lets a
//! session drop duplicates by offset during recovery.

use std::sync::Arc;
use std::time::{Duration, Instant};

use duplex::MemoryBudget;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::protocol::{ErrorCode, HubError, Member};
use crate::publication::{Publication, now_ms};
use crate::store::{NewPublication, SqliteStore};

struct Job {
    publication: NewPublication,
    reply: oneshot::Sender<Result<Arc<Publication>, HubError>>,
    started: Instant,
}

/// How long a publish waits for the memory budget to make room before it
/// is refused with `unavailable`.
pub const ROOM_WAIT: Duration = Duration::from_secs(1);

/// The publish pipeline.
#[derive(Clone)]
pub struct Broker {
    queue: mpsc::Sender<Job>,
    budget: MemoryBudget,
    metrics: Metrics,
}

impl Broker {
    /// Starts the pipeline's task. A publication waits for room in
    /// `budget` (where the hub charges its push) before it is stored.
    pub fn start(
        store: SqliteStore,
        hub: Arc<Hub>,
        metrics: Metrics,
        budget: MemoryBudget,
    ) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(run(rx, store, hub, metrics.clone()));
        Self {
            queue: tx,
            budget,
            metrics,
        }
    }

    /// Publishes `data` to `channel` as `from`; returns the stored
    /// publication once it is durable and delivered.
    pub async fn publish(
        &self,
        channel: &str,
        data: Box<RawValue>,
        from: Member,
    ) -> Result<Arc<Publication>, HubError> {
        // The stored copy and the push, both about the data's size.
        let room = tokio::time::timeout(ROOM_WAIT, self.budget.room_for(2 * data.get().len()));
        if room.await.is_err() {
            self.metrics.publish_failures.inc();
            return Err(HubError::new(
                ErrorCode::Unavailable,
                "the server's memory budget is spent: nothing was stored; try again later",
            ));
        }
        let (reply, rx) = oneshot::channel();
        let job = Job {
            publication: NewPublication {
                channel: channel.to_owned(),
                from,
                data,
                ts_ms: now_ms(),
            },
            reply,
            started: Instant::now(),
        };
        let stopped = || HubError::new(ErrorCode::Internal, "the server is shutting down");
        self.queue.send(job).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Stops taking publications and returns once every queued one is stored.
    pub async fn drain(self) {
        let queue = self.queue;
        // Waiting for capacity equal to the whole queue means it is empty.
        let _ = queue.reserve_many(queue.max_capacity()).await;
    }
}

async fn run(mut rx: mpsc::Receiver<Job>, store: SqliteStore, hub: Arc<Hub>, metrics: Metrics) {
    let mut jobs = Vec::with_capacity(256);
    while rx.recv_many(&mut jobs, 256).await > 0 {
        let batch: Vec<NewPublication> = jobs.iter().map(|j| j.publication.clone()).collect();
        match store.append(batch).await {
            Ok(stored) => {
                for (job, publication) in jobs.drain(..).zip(stored) {
                    let publication = Arc::new(publication);
                    hub.publish(publication.clone());
                    metrics.publications.inc();
                    metrics
                        .publish_latency
                        .observe(job.started.elapsed().as_secs_f64());
                    let _ = job.reply.send(Ok(publication));
                }
            }
            Err(e) => {
                metrics.publish_failures.inc();
                let error = HubError::from(e);
                for job in jobs.drain(..) {
                    let _ = job.reply.send(Err(error.clone()));
                }
            }
        }
    }
}
