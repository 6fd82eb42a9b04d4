//! An echo's fast path: every data message already whole in the read
//! buffer goes straight back, decided by [`Connection::echo_buffered`].
//!
//! [`Connection::echo_buffered`]: duplex_proto::Connection::echo_buffered

use duplex_proto::Echoed;
use tokio::io::{AsyncRead, AsyncWrite};

use super::WebSocket;
use crate::pool;

impl<S> WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Echoes, without waiting, every text and binary message already
    /// whole in the read buffer as one small frame, up to the write buffer
    /// limit (backpressure), and says how many messages and bytes that was.
    /// The echoes are queued as [`feed`](Self::feed) queues them: the next
    /// `recv`, `flush` or `send` writes them, all in one write.
    ///
    /// It stops at the first message that needs the receive loop (a
    /// control frame, a fragment, a frame still arriving, compression,
    /// text that is not UTF-8), so an echo calls it before each
    /// [`recv_ref`](Self::recv_ref), which takes that message next. A
    /// pipelined peer's messages then cost one copy each, unmasked on the
    /// way: no future, no lend and release per message.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # use duplex::{Config, WebSocket, proto::{Connection, Role}};
    /// # let (a, b) = tokio::io::duplex(4096);
    /// # let open = |io, role| {
    /// #     let conn = Connection::new(role, Default::default(), None);
    /// #     WebSocket::from_parts(io, conn, Config::default(), None)
    /// # };
    /// # let (mut server, mut client) = (open(a, Role::Server), open(b, Role::Client));
    /// for word in ["one", "two", "three"] {
    ///     client.feed(word).await?;
    /// }
    /// client.flush().await?;
    /// // An echo: the first message of each read comes through `recv_ref`,
    /// // the rest already buffered behind it through `echo_buffered`.
    /// let mut echoed = 0;
    /// while echoed < 3 {
    ///     echoed += server.echo_buffered().messages;
    ///     if echoed == 3 {
    ///         break;
    ///     }
    ///     server.recv_ref().await.expect("open")?.echo().await?;
    ///     echoed += 1;
    /// }
    /// server.flush().await?;
    /// for word in ["one", "two", "three"] {
    ///     assert_eq!(client.recv().await.unwrap()?.as_text(), Some(word));
    /// }
    /// # Ok(()) }
    /// ```
    #[inline]
    pub fn echo_buffered(&mut self) -> Echoed {
        // `prepare_send` gives the output a pooled buffer (it fails only
        // in a teardown, which `quiet` has ruled out).
        if !self.quiet() || self.conn.read_buf().is_empty() || self.prepare_send().is_err() {
            return Echoed::default();
        }
        self.provide_echo_room();
        let echoed = self.conn.echo_buffered(self.config.write_buffer_limit);
        if echoed.messages > 0 && self.config.memory_budget.is_some() {
            self.charge_sent();
        }
        echoed
    }

    /// Gives the output room for an echo of a large read, so that it does
    /// not grow while echoing: a small pooled buffer grown to a read-ahead
    /// buffer's worth is reallocated three times, each a copy of all it
    /// holds (with jemalloc, 5% of `duplex serve`'s CPU at 4 KiB
    /// pipelined). It moves to a pooled read-ahead buffer instead, on the
    /// same terms as the read buffer (see `read_ahead_fits`), and is
    /// charged to a memory budget whole, as that is (see `output_held`).
    #[inline]
    fn provide_echo_room(&mut self) {
        let buffered = self.conn.read_buf().len();
        if buffered <= pool::MIN_FREE || self.conn.outgoing().room() >= buffered {
            return;
        }
        let wanted = self.conn.echo_room_wanted(self.config.write_buffer_limit);
        if wanted <= pool::MIN_FREE
            || self.conn.outgoing().room() >= wanted
            || !self.read_ahead_fits()
        {
            return;
        }
        let small = self.conn.outgoing().replace_buffer(pool::take_read_ahead());
        pool::give(small);
    }
}
