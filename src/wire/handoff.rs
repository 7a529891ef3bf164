//! The report handoff between `banshare-report` and `banshare-client` on one host: the
//! reporter writes its report to the client's local socket (`report-socket`), and the client
//! sends it on the CURVE connections it already holds (`client::handoff`). One JSON line
//! each way (protocol.md "The report handoff").
//!
//! Nothing here may use ZeroMQ: banshare-report links this module, and a reporter that
//! never calls libzmq is not linked with it at all, which is most of what it saves.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::wire::keys::PublicKey;

/// The longest line either side reads: a report is a few hundred bytes.
pub const MAX_LINE: usize = 4096;

/// What the reporter hands over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Handoff {
    /// The frames of the REPORT request (protocol.md §3), which the client checks as the
    /// server would.
    pub report: Vec<String>,
    /// Under which key, and to which servers, the reporter would have sent it. The
    /// client takes the report only if they are its own, so that it goes where it would
    /// have gone, under the key the server would have seen. Keys, not key files: a
    /// rotation rewrites the files in place, and the client may not have reloaded yet.
    pub route: Route,
    /// How long the client may try the servers, in milliseconds.
    pub timeout_ms: u64,
}

/// A public key, and the servers in the order they are tried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The reporter's public key, in hex.
    pub key: String,
    pub servers: Vec<Destination>,
}

/// A server's report endpoint and its public key, in hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    pub endpoint: String,
    pub key: String,
}

impl Route {
    pub fn new(own: &PublicKey, servers: impl IntoIterator<Item = (String, PublicKey)>) -> Route {
        let servers = servers
            .into_iter()
            .map(|(endpoint, key)| Destination {
                endpoint,
                key: key.hex(),
            })
            .collect();
        Route {
            key: own.hex(),
            servers,
        }
    }
}

/// The client's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Handed {
    /// A server answered: the frames of its reply, and its report endpoint.
    Verdict { frames: Vec<String>, server: String },
    /// No server answered in time: the endpoints tried.
    NoAnswer { servers: String },
    /// Not a report this client sends (another key or other servers): the reporter
    /// reports directly.
    Direct { why: String },
}

/// One message as a line.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    let mut line = serde_json::to_vec(message).expect("plain structs always serialize");
    line.push(b'\n');
    line
}

/// Why a line is not a handoff message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandoffError {
    #[error("a line of over {MAX_LINE} bytes")]
    TooLong,
    /// Not the JSON of the message expected; `why` is serde_json's account, kept as text
    /// since its error can be neither cloned nor compared.
    #[error("not a handoff message: {why}")]
    NotAMessage { why: String },
}

pub fn decode<T: DeserializeOwned>(line: &[u8]) -> Result<T, HandoffError> {
    if line.len() > MAX_LINE {
        return Err(HandoffError::TooLong);
    }
    serde_json::from_slice(line).map_err(|e| HandoffError::NotAMessage { why: e.to_string() })
}

/// Frames as text: every frame of a report and of a verdict is UTF-8 (protocol.md §3).
pub fn texts(frames: &[Vec<u8>]) -> Vec<String> {
    frames
        .iter()
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect()
}

pub fn frames(texts: &[String]) -> Vec<Vec<u8>> {
    texts.iter().map(|t| t.as_bytes().to_vec()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::protocol::Report;

    #[test]
    fn a_handoff_survives_its_line() {
        let report = Report::parse("fail2ban", "sshd", "203.0.113.9", "600").unwrap();
        let handoff = Handoff {
            report: texts(&report.encode()),
            route: Route::new(
                &PublicKey([1; 32]),
                [(
                    "tcp://bs1.example.org:41234".to_string(),
                    PublicKey([2; 32]),
                )],
            ),
            timeout_ms: 5000,
        };
        let line = encode(&handoff);
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(decode::<Handoff>(&line), Ok(handoff.clone()));
        assert_eq!(frames(&handoff.report), report.encode());
    }

    #[test]
    fn what_is_not_a_handoff_is_refused() {
        let route = "{\"key\":\"k\",\"servers\":[]}";
        let missing = format!("{{\"report\":[],\"route\":{route}}}\n");
        assert!(matches!(
            decode::<Handoff>(missing.as_bytes()),
            Err(HandoffError::NotAMessage { .. })
        ));
        let long = decode::<Handoff>(&vec![b' '; MAX_LINE + 1]).unwrap_err();
        assert_eq!(long, HandoffError::TooLong);
        assert_eq!(long.to_string(), "a line of over 4096 bytes");
        let extra = format!("{{\"report\":[],\"route\":{route},\"timeout_ms\":1,\"sh\":\"x\"}}");
        let extra = decode::<Handoff>(extra.as_bytes()).unwrap_err();
        assert!(matches!(extra, HandoffError::NotAMessage { .. }));
        assert!(extra
            .to_string()
            .starts_with("not a handoff message: unknown field `sh`"));
        let reply = Handed::NoAnswer {
            servers: "tcp://127.0.0.1:41234".into(),
        };
        assert_eq!(decode::<Handed>(&encode(&reply)), Ok(reply));
    }
}
