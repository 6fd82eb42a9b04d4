//! The runtime model: one current-thread runtime per core, every one
//! accepting from the same listening socket.
//!
//! The caller's runtime is the first; [`Workers`] adds one thread with its
//! own current-thread runtime per further core. A connection lives on the
//! runtime that accepted it: its task is never stolen by, or woken on,
//! another core, and it is scheduled without the work-stealing queues of
//! a multi-threaded runtime.
//!
//! Why, measured (docs/performance.md, "Runtime model, measured again"):
//! on one core, the echo costs the server within a few percent of what
//! the library's own echo costs (+1% to +5% on most rows; a multi-threaded
//! runtime cost +4% to +24%), and the hub's fan-out with many publishers
//! costs the same or less per delivery.
//! What it gives up: a single publisher that waits for each reply before
//! publishing again gets its deliveries written one at a time (a
//! multi-threaded runtime ran the reply first and wrote some of them two
//! at a time), about a third more CPU per delivery.
//!
//! Each runtime registers its own handle of the one listening socket: the
//! kernel wakes the runtimes waiting on it and one wins each connection,
//! so a busy thread takes fewer. Not `SO_REUSEPORT`, with which a second
//! server started by mistake on the same port would silently take half
//! the connections instead of failing with "address in use".

use std::io;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::thread::JoinHandle;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::connection;
use crate::state::AppState;

/// How many runtimes serve connections: `threads`, or one per core this
/// process may run on when it is 0.
///
/// ```
/// assert_eq!(duplex_server::workers::runtimes(3), 3);
/// assert!(duplex_server::workers::runtimes(0) >= 1);
/// ```
pub fn runtimes(threads: usize) -> usize {
    match threads {
        0 => std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
        n => n,
    }
}

/// The runtimes beyond the caller's, each on its own thread, each
/// accepting until the server shuts down and running until stopped (so
/// that its connections can finish closing). Dropping it stops them; what
/// still runs on them is cancelled.
pub struct Workers {
    exit: CancellationToken,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts `count` runtimes accepting from `listener` beside the caller's.
    pub fn start(
        count: usize,
        listener: &TcpListener,
        router: &Router,
        tls: &Option<tokio_rustls::TlsAcceptor>,
        state: &Arc<AppState>,
    ) -> io::Result<Self> {
        let mut workers = Self {
            exit: CancellationToken::new(),
            threads: Vec::with_capacity(count),
        };
        for i in 1..=count {
            // Built here, so that a failure is the caller's error.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let listener = clone_listener(listener)?;
            let (router, tls, state) = (router.clone(), tls.clone(), state.clone());
            let exit = workers.exit.clone();
            let thread = std::thread::Builder::new()
                .name(format!("duplex-worker-{i}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        // Registered with this runtime, in its context.
                        let shutdown = state.shutdown.clone();
                        match TcpListener::from_std(listener) {
                            Ok(listener) => tokio::select! {
                                () = connection::accept(listener, router, tls, state) => {}
                                () = shutdown.fired() => {}
                            },
                            Err(e) => tracing::error!("worker {i} cannot accept: {e}"),
                        }
                        exit.cancelled().await;
                    });
                })?;
            workers.threads.push(thread);
        }
        Ok(workers)
    }

    /// Stops the runtimes and waits for their threads.
    pub fn stop(mut self) {
        self.exit.cancel();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        // Not joined here: a drop may run inside a runtime, which must not
        // block. The threads end on their own.
        self.exit.cancel();
    }
}

/// A second handle of the listening socket, for another runtime.
fn clone_listener(listener: &TcpListener) -> io::Result<std::net::TcpListener> {
    use std::os::fd::AsFd;
    let fd = listener.as_fd().try_clone_to_owned()?;
    // Non-blocking, as tokio needs: the flag belongs to the open socket,
    // which both handles share.
    Ok(std::net::TcpListener::from(fd))
}
