//! Ctrl-C and SIGTERM: the first asks every open conversation to close
//! cleanly; a second one exits at once with status 130.

use tokio::sync::watch;

/// A handle that learns when the user asked us to stop.
#[derive(Clone)]
pub struct Interrupt(watch::Receiver<bool>);

impl Interrupt {
    /// Starts watching for SIGINT and SIGTERM (on the current runtime).
    pub fn watch() -> Self {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            loop {
                #[cfg(unix)]
                let terminated = async {
                    match term.as_mut() {
                        Some(t) => {
                            t.recv().await;
                        }
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let terminated = std::future::pending::<()>();
                tokio::select! {
                    r = tokio::signal::ctrl_c() => if r.is_err() { return },
                    () = terminated => {}
                }
                if *tx.borrow() {
                    eprintln!("duplex: interrupted again; exiting now");
                    std::process::exit(130);
                }
                let _ = tx.send(true);
            }
        });
        Self(rx)
    }

    /// Waits until interrupted (at once if that already happened).
    /// Cancel-safe.
    pub async fn wait(&mut self) {
        if self.0.wait_for(|stop| *stop).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
