//! Offering and accepting permessage-deflate (RFC 7692 §7.1).
//!
//! A client may send several offers; the server takes the first it can
//! honour and answers with the parameters it will actually use. Any unknown,
//! repeated or out-of-range parameter makes an offer unacceptable (the
//! server then declines it) or a response invalid (the client then fails the
//! handshake), as §7.1 requires.
//!
//! ```
//! use duplex_proto::deflate::negotiation; // the methods are on DeflateConfig
//! use duplex_proto::{DeflateConfig, extension::parse_extensions};
//! let offers = parse_extensions("permessage-deflate; foo=1, permessage-deflate").unwrap();
//! let server = DeflateConfig::default();
//! assert!(server.accept_offer(&offers[0]).is_none()); // unknown parameter
//! assert!(server.accept_offer(&offers[1]).is_some()); // the next offer is taken
//! ```

use super::{DeflateConfig, DeflateParams, EXTENSION_NAME};
use crate::extension::Extension;

/// Parameters as they appeared in one offer or response.
#[derive(Default)]
struct Parsed {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: present without a value (allowed in offers only).
    client_max_window_bits: Option<Option<u8>>,
}

fn parse_bits(value: &str) -> Option<u8> {
    // RFC 7692 §7.1.2: 1*DIGIT without leading zeros, 8 to 15.
    if value.starts_with('0') {
        return None;
    }
    value.parse::<u8>().ok().filter(|b| (8..=15).contains(b))
}

fn parse(ext: &Extension) -> Result<Parsed, &'static str> {
    let mut p = Parsed::default();
    for (key, value) in &ext.params {
        match key.as_str() {
            "server_no_context_takeover" | "client_no_context_takeover" => {
                if value.is_some() {
                    return Err("a no_context_takeover parameter has a value");
                }
                let flag = if key.starts_with("server") {
                    &mut p.server_no_context_takeover
                } else {
                    &mut p.client_no_context_takeover
                };
                if std::mem::replace(flag, true) {
                    return Err("repeated parameter");
                }
            }
            "server_max_window_bits" => {
                let bits = value
                    .as_deref()
                    .and_then(parse_bits)
                    .ok_or("invalid server_max_window_bits")?;
                if p.server_max_window_bits.replace(bits).is_some() {
                    return Err("repeated parameter");
                }
            }
            "client_max_window_bits" => {
                let bits = match value {
                    None => None,
                    Some(v) => Some(parse_bits(v).ok_or("invalid client_max_window_bits")?),
                };
                if p.client_max_window_bits.replace(bits).is_some() {
                    return Err("repeated parameter");
                }
            }
            _ => return Err("unknown parameter"),
        }
    }
    Ok(p)
}

impl DeflateConfig {
    /// The offers a client sends, in order of preference: this
    /// configuration, then (unless it already says so) the same with
    /// `client_no_context_takeover`, for servers that accept only clients
    /// that reset their window (to bound their own memory).
    ///
    /// ```
    /// let offers = duplex_proto::DeflateConfig::default().offers();
    /// let header: Vec<String> = offers.iter().map(|o| o.to_string()).collect();
    /// assert_eq!(header.join(", "), "permessage-deflate; client_max_window_bits, permessage-deflate; client_no_context_takeover; client_max_window_bits");
    /// ```
    pub fn offers(&self) -> Vec<Extension> {
        let mut offers = vec![self.offer()];
        if !self.client_no_context_takeover {
            offers.push(
                DeflateConfig {
                    client_no_context_takeover: true,
                    ..*self
                }
                .offer(),
            );
        }
        offers
    }

    /// The primary offer a client sends.
    ///
    /// ```
    /// use duplex_proto::DeflateConfig;
    /// let config = DeflateConfig { client_max_window_bits: 10, ..DeflateConfig::default() };
    /// assert_eq!(config.offer().to_string(), "permessage-deflate; client_max_window_bits=10");
    /// ```
    pub fn offer(&self) -> Extension {
        let mut params = Vec::new();
        if self.server_no_context_takeover {
            params.push(("server_no_context_takeover".to_owned(), None));
        }
        if self.client_no_context_takeover {
            params.push(("client_no_context_takeover".to_owned(), None));
        }
        if self.server_max_window_bits < 15 {
            params.push((
                "server_max_window_bits".to_owned(),
                Some(self.server_max_window_bits.to_string()),
            ));
        }
        // Always present: it tells the server we can limit our own window.
        let client_bits =
            (self.client_max_window_bits < 15).then(|| self.client_max_window_bits.to_string());
        params.push(("client_max_window_bits".to_owned(), client_bits));
        Extension {
            name: EXTENSION_NAME.to_owned(),
            params,
        }
    }

    /// Server side: accepts one offer if it can be honoured, returning the
    /// agreed parameters and the response to send. `None` declines it.
    ///
    /// ```
    /// use duplex_proto::{DeflateConfig, extension::parse_extensions};
    /// let offer = &parse_extensions("permessage-deflate; server_max_window_bits=10; client_max_window_bits").unwrap()[0];
    /// let (params, response) = DeflateConfig::default().accept_offer(offer).unwrap();
    /// assert_eq!(params.server_max_window_bits, 10);
    /// assert_eq!(response.to_string(), "permessage-deflate; server_max_window_bits=10");
    /// ```
    pub fn accept_offer(&self, offer: &Extension) -> Option<(DeflateParams, Extension)> {
        if offer.name != EXTENSION_NAME {
            return None;
        }
        let p = parse(offer).ok()?;
        let params = DeflateParams {
            server_no_context_takeover: p.server_no_context_takeover
                || self.server_no_context_takeover,
            client_no_context_takeover: p.client_no_context_takeover
                || self.client_no_context_takeover,
            server_max_window_bits: p
                .server_max_window_bits
                .unwrap_or(15)
                .min(self.server_max_window_bits),
            // Without the parameter in the offer we cannot limit the client.
            client_max_window_bits: match p.client_max_window_bits {
                None => 15,
                Some(offered) => offered.unwrap_or(15).min(self.client_max_window_bits),
            },
        };
        let mut response = Vec::new();
        if params.server_no_context_takeover {
            response.push(("server_no_context_takeover".to_owned(), None));
        }
        if params.client_no_context_takeover {
            response.push(("client_no_context_takeover".to_owned(), None));
        }
        if p.server_max_window_bits.is_some() || params.server_max_window_bits < 15 {
            response.push((
                "server_max_window_bits".to_owned(),
                Some(params.server_max_window_bits.to_string()),
            ));
        }
        if matches!(p.client_max_window_bits, Some(Some(_))) || params.client_max_window_bits < 15 {
            response.push((
                "client_max_window_bits".to_owned(),
                Some(params.client_max_window_bits.to_string()),
            ));
        }
        Some((
            params,
            Extension {
                name: EXTENSION_NAME.to_owned(),
                params: response,
            },
        ))
    }

    /// Client side: checks the server's response against what
    /// [`offer`](Self::offer) asked for. An error means the client must fail
    /// the handshake.
    ///
    /// ```
    /// use duplex_proto::{DeflateConfig, extension::parse_extensions};
    /// let client = DeflateConfig { server_max_window_bits: 10, ..DeflateConfig::default() };
    /// let ignored = &parse_extensions("permessage-deflate").unwrap()[0];
    /// let error = client.accept_response(ignored).unwrap_err();
    /// assert_eq!(error, "the server ignored server_max_window_bits");
    /// let ok = &parse_extensions("permessage-deflate; server_max_window_bits=9").unwrap()[0];
    /// assert_eq!(client.accept_response(ok).unwrap().server_max_window_bits, 9);
    /// ```
    pub fn accept_response(&self, response: &Extension) -> Result<DeflateParams, &'static str> {
        if response.name != EXTENSION_NAME {
            return Err("the server accepted an extension that was not offered");
        }
        let p = parse(response)?;
        if self.server_no_context_takeover && !p.server_no_context_takeover {
            return Err("the server ignored server_no_context_takeover");
        }
        let server_bits = match p.server_max_window_bits {
            Some(bits) if bits > self.server_max_window_bits => {
                return Err("server_max_window_bits larger than offered");
            }
            Some(bits) => bits,
            None if self.server_max_window_bits < 15 => {
                return Err("the server ignored server_max_window_bits");
            }
            None => 15,
        };
        let client_bits = match p.client_max_window_bits {
            Some(None) => return Err("client_max_window_bits without a value in a response"),
            Some(Some(bits)) => bits.min(self.client_max_window_bits),
            None => self.client_max_window_bits,
        };
        Ok(DeflateParams {
            server_no_context_takeover: p.server_no_context_takeover,
            client_no_context_takeover: p.client_no_context_takeover
                || self.client_no_context_takeover,
            server_max_window_bits: server_bits,
            client_max_window_bits: client_bits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extension::parse_extensions;

    fn offer(s: &str) -> Extension {
        parse_extensions(s).unwrap().remove(0)
    }

    #[test]
    fn declines_bad_offers() {
        let cfg = DeflateConfig::default();
        for bad in [
            "permessage-deflate; foo",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=0",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "x-webkit-deflate-frame",
        ] {
            assert!(cfg.accept_offer(&offer(bad)).is_none(), "{bad}");
        }
    }

    #[test]
    fn accepts_browser_offer_as_is() {
        let (params, resp) = DeflateConfig::default()
            .accept_offer(&offer("permessage-deflate; client_max_window_bits"))
            .unwrap();
        assert_eq!(params, DeflateParams::default());
        assert_eq!(resp.to_string(), "permessage-deflate");
    }

    #[test]
    fn honours_no_context_takeover_and_window_requests() {
        let o = offer("permessage-deflate; server_no_context_takeover; client_max_window_bits=9");
        let (params, resp) = DeflateConfig::default().accept_offer(&o).unwrap();
        assert!(params.server_no_context_takeover);
        assert_eq!(params.client_max_window_bits, 9);
        assert_eq!(
            resp.to_string(),
            "permessage-deflate; server_no_context_takeover; client_max_window_bits=9"
        );
    }

    #[test]
    fn client_validates_responses() {
        let cfg = DeflateConfig {
            server_max_window_bits: 10,
            ..DeflateConfig::default()
        };
        assert!(cfg.accept_response(&offer("permessage-deflate")).is_err());
        assert!(
            cfg.accept_response(&offer("permessage-deflate; server_max_window_bits=12"))
                .is_err()
        );
        let p = cfg
            .accept_response(&offer(
                "permessage-deflate; server_max_window_bits=9; client_max_window_bits=8",
            ))
            .unwrap();
        assert_eq!((p.server_max_window_bits, p.client_max_window_bits), (9, 8));
        assert!(
            DeflateConfig::default()
                .accept_response(&offer("permessage-deflate; client_max_window_bits"))
                .is_err()
        );
    }

    #[test]
    fn offer_round_trips_through_a_server() {
        for cfg in [
            DeflateConfig::default(),
            DeflateConfig {
                server_no_context_takeover: true,
                client_max_window_bits: 10,
                ..DeflateConfig::default()
            },
            DeflateConfig {
                server_max_window_bits: 9,
                client_no_context_takeover: true,
                ..DeflateConfig::default()
            },
        ] {
            let (server_params, resp) =
                DeflateConfig::default().accept_offer(&cfg.offer()).unwrap();
            let client_params = cfg.accept_response(&resp).unwrap();
            assert_eq!(server_params, client_params, "{cfg:?}");
        }
    }
}
