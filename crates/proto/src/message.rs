//! Messages as users see them: whole, reassembled, inflated, validated.
//!
//! ```
//! use duplex_proto::message::{Message, MessageRef};
//! let message = Message::text("hi");
//! assert_eq!(MessageRef::from(&message), MessageRef::Text("hi"));
//! assert_eq!(message.len(), 2);
//! ```

use std::fmt;
use std::ops::Deref;

use bytes::Bytes;

use crate::close::CloseFrame;

/// A UTF-8 text payload that shares its buffer (`Bytes`) instead of copying
/// it into a `String`. Dereferences to `&str`.
///
/// ```
/// use duplex_proto::Text;
/// let t = Text::from("héllo");
/// assert_eq!(t.len(), 6);
/// assert!(Text::try_from(bytes::Bytes::from_static(b"\xff")).is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Text(Bytes);

impl Text {
    /// The text as a string slice.
    ///
    /// ```
    /// use duplex_proto::Text;
    /// let text = Text::from(String::from("héllo"));
    /// assert_eq!(text.as_str(), "héllo");
    /// ```
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor checks or inherits UTF-8 validity.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The underlying bytes.
    ///
    /// ```
    /// use duplex_proto::Text;
    /// let bytes = Text::from("hé").into_bytes();
    /// assert_eq!(&bytes[..], b"h\xc3\xa9");
    /// ```
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// A text from bytes already known to be UTF-8 (the protocol validated them).
    pub(crate) fn from_validated(bytes: Bytes) -> Self {
        debug_assert!(std::str::from_utf8(&bytes).is_ok());
        Self(bytes)
    }
}

impl Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for Text {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Self(Bytes::from(s))
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Self(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<&'static str> for Message {
    fn from(s: &'static str) -> Self {
        Message::Text(Text(Bytes::from_static(s.as_bytes())))
    }
}

impl TryFrom<Bytes> for Text {
    type Error = std::str::Utf8Error;
    fn try_from(bytes: Bytes) -> Result<Self, Self::Error> {
        simdutf8::compat::from_utf8(&bytes)
            .map_err(|_| std::str::from_utf8(&bytes).unwrap_err())?;
        Ok(Self(bytes))
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A WebSocket message.
///
/// ```
/// use duplex_proto::Message;
/// let m = Message::text("hi");
/// assert_eq!(m.as_text(), Some("hi"));
/// assert!(Message::binary(vec![1, 2]).is_data());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A UTF-8 text message.
    Text(Text),
    /// A binary message.
    Binary(Bytes),
    /// A ping (the pong is sent automatically).
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// The peer's close frame; `None` if it carried no code.
    Close(Option<CloseFrame>),
}

impl Message {
    /// A text message.
    ///
    /// ```
    /// use duplex_proto::Message;
    /// let message = Message::text(format!("{} users", 3));
    /// assert_eq!(message.as_text(), Some("3 users"));
    /// ```
    pub fn text(text: impl Into<Text>) -> Self {
        Self::Text(text.into())
    }

    /// A binary message.
    ///
    /// ```
    /// use duplex_proto::Message;
    /// let message = Message::binary(vec![0xca, 0xfe]);
    /// assert_eq!(message.as_bytes(), [0xca, 0xfe]);
    /// assert_eq!(message.as_text(), None);
    /// ```
    pub fn binary(data: impl Into<Bytes>) -> Self {
        Self::Binary(data.into())
    }

    /// Text or binary.
    ///
    /// ```
    /// use duplex_proto::Message;
    /// assert!(Message::text("hi").is_data());
    /// assert!(!Message::Ping(Default::default()).is_data());
    /// ```
    pub fn is_data(&self) -> bool {
        MessageRef::from(self).is_data()
    }

    /// The text, if this is a text message.
    ///
    /// ```
    /// use duplex_proto::Message;
    /// assert_eq!(Message::text("hi").as_text(), Some("hi"));
    /// assert_eq!(Message::binary(&b"hi"[..]).as_text(), None);
    /// ```
    pub fn as_text(&self) -> Option<&str> {
        MessageRef::from(self).as_text()
    }

    /// The payload bytes (empty for a close).
    ///
    /// ```
    /// use duplex_proto::Message;
    /// assert_eq!(Message::text("hi").as_bytes(), b"hi");
    /// assert_eq!(Message::Close(None).as_bytes(), b"");
    /// ```
    pub fn as_bytes(&self) -> &[u8] {
        MessageRef::from(self).as_bytes()
    }

    /// The payload's length in bytes.
    ///
    /// ```
    /// use duplex_proto::Message;
    /// assert_eq!(Message::text("é").len(), 2); // bytes, not characters
    /// ```
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Whether the payload is empty.
    ///
    /// ```
    /// use duplex_proto::Message;
    /// assert!(Message::binary(vec![]).is_empty());
    /// assert!(!Message::text("x").is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ties `guard` to the payload's memory: it is dropped when the last
    /// copy of the payload is (the message, its clones, a send queue that
    /// still holds it). A memory budget uses this to keep a large message
    /// charged for exactly as long as it is alive. Close frames carry no
    /// payload worth tracking: the guard is dropped at once.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use duplex_proto::Message;
    ///
    /// let alive = Arc::new(());
    /// let m = Message::text("hi").hold_with(alive.clone());
    /// let copy = m.clone();
    /// drop(m);
    /// assert_eq!(Arc::strong_count(&alive), 2); // the copy still holds it
    /// assert_eq!(copy.as_text(), Some("hi"));
    /// drop(copy);
    /// assert_eq!(Arc::strong_count(&alive), 1);
    /// ```
    pub fn hold_with<G: Send + 'static>(self, guard: G) -> Self {
        /// The payload and what must live exactly as long as it.
        struct Guarded<G> {
            bytes: Bytes,
            _guard: G,
        }
        impl<G> AsRef<[u8]> for Guarded<G> {
            fn as_ref(&self) -> &[u8] {
                &self.bytes
            }
        }
        let hold = |bytes: Bytes| {
            Bytes::from_owner(Guarded {
                bytes,
                _guard: guard,
            })
        };
        match self {
            // The same bytes, so still UTF-8.
            Self::Text(t) => Self::Text(Text::from_validated(hold(t.0))),
            Self::Binary(b) => Self::Binary(hold(b)),
            Self::Ping(b) => Self::Ping(hold(b)),
            Self::Pong(b) => Self::Pong(hold(b)),
            close @ Self::Close(_) => close,
        }
    }
}

impl From<String> for Message {
    fn from(s: String) -> Self {
        Self::Text(s.into())
    }
}

impl From<Vec<u8>> for Message {
    fn from(v: Vec<u8>) -> Self {
        Self::Binary(v.into())
    }
}

impl From<Bytes> for Message {
    fn from(b: Bytes) -> Self {
        Self::Binary(b)
    }
}

/// A message borrowed rather than owned: what
/// [`Connection::lent`](crate::Connection::lent) returns for a message left
/// in the read buffer, or a view of a [`Message`].
///
/// Why borrow: an owned message shares its buffer through a reference
/// count, which is set up, incremented and decremented once per message.
/// For small messages on a busy connection that bookkeeping is a visible
/// share of the work; a borrow costs nothing until the next read.
///
/// ```
/// use duplex_proto::{Message, MessageRef};
/// let owned = Message::text("hi");
/// let borrowed = MessageRef::from(&owned);
/// assert_eq!(borrowed.as_text(), Some("hi"));
/// assert_eq!(borrowed.to_message(), owned);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageRef<'a> {
    /// A UTF-8 text message.
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
    /// A ping (the pong is sent automatically).
    Ping(&'a [u8]),
    /// A pong.
    Pong(&'a [u8]),
    /// The peer's close frame; `None` if it carried no code.
    Close(Option<&'a CloseFrame>),
}

impl<'a> MessageRef<'a> {
    /// Text or binary.
    ///
    /// ```
    /// use duplex_proto::MessageRef;
    /// assert!(MessageRef::Binary(b"\x01").is_data());
    /// assert!(!MessageRef::Close(None).is_data());
    /// ```
    pub fn is_data(&self) -> bool {
        matches!(self, Self::Text(_) | Self::Binary(_))
    }

    /// The text, if this is a text message.
    ///
    /// ```
    /// use duplex_proto::MessageRef;
    /// assert_eq!(MessageRef::Text("hi").as_text(), Some("hi"));
    /// assert_eq!(MessageRef::Pong(b"hi").as_text(), None);
    /// ```
    pub fn as_text(&self) -> Option<&'a str> {
        match *self {
            Self::Text(t) => Some(t),
            _ => None,
        }
    }

    /// The payload bytes (empty for a close).
    ///
    /// ```
    /// use duplex_proto::MessageRef;
    /// assert_eq!(MessageRef::Text("hi").as_bytes(), b"hi");
    /// assert_eq!(MessageRef::Ping(b"\x01\x02").as_bytes(), [1, 2]);
    /// ```
    pub fn as_bytes(&self) -> &'a [u8] {
        match *self {
            Self::Text(t) => t.as_bytes(),
            Self::Binary(b) | Self::Ping(b) | Self::Pong(b) => b,
            Self::Close(_) => &[],
        }
    }

    /// The payload's length in bytes.
    ///
    /// ```
    /// use duplex_proto::MessageRef;
    /// assert_eq!(MessageRef::Binary(&[0; 3]).len(), 3);
    /// ```
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Whether the payload is empty.
    ///
    /// ```
    /// use duplex_proto::MessageRef;
    /// assert!(MessageRef::Close(None).is_empty());
    /// assert!(!MessageRef::Text("x").is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An owned copy.
    ///
    /// ```
    /// use duplex_proto::{Message, MessageRef};
    /// let owned = MessageRef::Binary(b"\x2a").to_message(); // a copy
    /// assert_eq!(owned, Message::binary(vec![42]));
    /// ```
    pub fn to_message(&self) -> Message {
        match *self {
            Self::Text(t) => Message::Text(Text::from(t)),
            Self::Binary(b) => Message::Binary(Bytes::copy_from_slice(b)),
            Self::Ping(b) => Message::Ping(Bytes::copy_from_slice(b)),
            Self::Pong(b) => Message::Pong(Bytes::copy_from_slice(b)),
            Self::Close(f) => Message::Close(f.cloned()),
        }
    }
}

impl<'a> From<&'a Message> for MessageRef<'a> {
    fn from(message: &'a Message) -> Self {
        match message {
            Message::Text(t) => Self::Text(t.as_str()),
            Message::Binary(b) => Self::Binary(b),
            Message::Ping(b) => Self::Ping(b),
            Message::Pong(b) => Self::Pong(b),
            Message::Close(f) => Self::Close(f.as_ref()),
        }
    }
}
