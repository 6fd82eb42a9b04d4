//! One input for many connections: every item from the source (stdin, or
//! the `--shared` command's stdout) goes to every client connected at that
//! moment. Nothing is read from the source while no client is connected,
//! so lines typed before the first client arrives wait for it.

use std::sync::{Arc, Mutex};

use duplex::CloseFrame;
use tokio::sync::{mpsc, watch};

use crate::conversation::input::{self, Input, Outgoing};

/// The clients currently connected, and how many.
pub struct Hub {
    clients: Mutex<Vec<(u64, mpsc::Sender<Outgoing>)>>,
    count: watch::Sender<usize>,
}

impl Hub {
    /// A hub with no clients.
    pub fn new() -> Self {
        Self {
            clients: Mutex::new(Vec::new()),
            count: watch::Sender::new(0),
        }
    }

    /// A hub that a task feeds from `source` for as long as it lasts.
    pub fn fed_by(source: Input) -> Arc<Self> {
        let hub = Arc::new(Self::new());
        tokio::spawn({
            let hub = hub.clone();
            async move { hub.broadcast(source).await }
        });
        hub
    }

    /// Adds client `id`; its conversation reads the returned input.
    pub fn join(&self, id: u64) -> Input {
        let (tx, rx) = input::channel();
        let mut clients = self.lock();
        clients.push((id, tx));
        self.count.send_replace(clients.len());
        rx
    }

    /// Removes client `id`.
    pub fn leave(&self, id: u64) {
        let mut clients = self.lock();
        clients.retain(|(c, _)| *c != id);
        self.count.send_replace(clients.len());
    }

    /// Copies every item of `source` to the clients connected when it is
    /// read. Returns when the source ends; the clients stay.
    pub async fn broadcast(&self, mut source: Input) {
        let mut count = self.count.subscribe();
        loop {
            if count.wait_for(|n| *n > 0).await.is_err() {
                return;
            }
            let Some(item) = source.recv().await else {
                return;
            };
            for tx in self.senders() {
                let _ = tx.send(item.clone()).await;
            }
        }
    }

    /// Asks every client to close with `frame`.
    pub async fn close_all(&self, frame: CloseFrame) {
        for tx in self.senders() {
            let _ = tx.send(Outgoing::Close(Some(frame.clone()))).await;
        }
    }

    fn senders(&self) -> Vec<mpsc::Sender<Outgoing>> {
        self.lock().iter().map(|(_, tx)| tx.clone()).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(u64, mpsc::Sender<Outgoing>)>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use duplex::Message;

    #[tokio::test]
    async fn items_wait_for_a_client_then_reach_every_client() {
        let hub = std::sync::Arc::new(Hub::new());
        let (tx, source) = input::channel();
        tx.send(Outgoing::Message(Message::text("early")))
            .await
            .unwrap();
        let task = tokio::spawn({
            let hub = hub.clone();
            async move { hub.broadcast(source).await }
        });
        let mut a = hub.join(1);
        match a.recv().await {
            Some(Outgoing::Message(m)) => assert_eq!(m.as_text(), Some("early")),
            other => panic!("{other:?}"),
        }
        let mut b = hub.join(2);
        tx.send(Outgoing::Message(Message::text("both")))
            .await
            .unwrap();
        for rx in [&mut a, &mut b] {
            match rx.recv().await {
                Some(Outgoing::Message(m)) => assert_eq!(m.as_text(), Some("both")),
                other => panic!("{other:?}"),
            }
        }
        drop(tx);
        task.await.unwrap();
    }
}
