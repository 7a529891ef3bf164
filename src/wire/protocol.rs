//! The wire format, documented in docs/protocol.md. Every message is a list of ZeroMQ frames
//! holding short ASCII text; every field is checked here before anything else sees it.

use std::fmt;
use std::sync::Arc;

use crate::logging::printable;
use crate::wire::cidr::Cidr;
use crate::wire::error::{FieldError, MessageError};
use crate::wire::topic::{Group, Topic};

pub use crate::wire::limits::{MAX_BANTIME, MAX_NAME, REVISION, VERSION};

/// Largest frame any banshare socket accepts (`ZMQ_MAXMSGSIZE`, which counts the frame after
/// CURVE adds its 33 bytes); real frames are under 300 bytes.
pub const MAX_FRAME: i64 = 4096;
/// The most frames in any request: a REPORT has 6, and a later revision may add to the end
/// of any request what this one ignores (docs/protocol.md, section 9).
pub const MAX_REQUEST_FRAMES: usize = 16;

/// A prog, jail or host name: 1 to 64 characters from `[A-Za-z0-9._@:-]`, not starting
/// with `-`, so that no name can pass for an option (`-rf`, `--help`) in a ban command's
/// arguments. Shared, not copied, when cloned: the server's ban table holds the same few
/// names a million times (see `BanTable::intern`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Name(Arc<str>);

impl Name {
    pub fn parse(field: &str, text: &str) -> Result<Name, FieldError> {
        let ok = !text.is_empty()
            && text.len() <= MAX_NAME
            && !text.starts_with('-')
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._@:-".contains(&b));
        if ok {
            Ok(Name(Arc::from(text)))
        } else {
            Err(FieldError::BadName {
                field: field.to_owned(),
                text: printable(text),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether another copy of this name exists.
    pub fn is_shared(&self) -> bool {
        Arc::strong_count(&self.0) > 1
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How long a reporter asks for the ban to last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bantime {
    /// The server's `default-bantime`.
    Default,
    /// fail2ban's bantime -1.
    Permanent,
    Seconds(u64),
}

impl Bantime {
    pub fn parse(text: &str) -> Result<Bantime, FieldError> {
        match text {
            "" => Ok(Bantime::Default),
            "-1" => Ok(Bantime::Permanent),
            _ => match parse_u64(text) {
                Some(s) if (1..=MAX_BANTIME).contains(&s) => Ok(Bantime::Seconds(s)),
                _ => Err(FieldError::BadBantime {
                    text: printable(text),
                }),
            },
        }
    }

    /// In seconds, with `default` for a report that gave none; None for permanent.
    pub fn seconds(self, default: std::time::Duration) -> Option<u64> {
        match self {
            Bantime::Default => Some(default.as_secs().max(1)),
            Bantime::Permanent => None,
            Bantime::Seconds(s) => Some(s),
        }
    }

    fn encode(self) -> String {
        match self {
            Bantime::Default => String::new(),
            Bantime::Permanent => "-1".into(),
            Bantime::Seconds(s) => s.to_string(),
        }
    }
}

/// A ban's bantime for a log line: "600s", or "permanent" for None.
pub fn bantime_text(bantime: Option<u64>) -> String {
    bantime.map_or("permanent".into(), |b| format!("{b}s"))
}

/// The field `name` as a strict decimal (see `parse_u64`), or why it is not one.
pub fn number(name: &str, text: &str) -> Result<u64, FieldError> {
    parse_u64(text).ok_or_else(|| FieldError::NotANumber {
        field: name.to_owned(),
        text: printable(text),
    })
}

/// Strict decimal: digits only, no sign, no spaces.
fn parse_u64(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn text(frame: &[u8]) -> Result<&str, FieldError> {
    std::str::from_utf8(frame).map_err(|_| FieldError::NotText)
}

/// What a reporter asks the server to ban.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub prog: Name,
    pub jail: Name,
    pub ip: Cidr,
    pub bantime: Bantime,
}

impl Report {
    pub fn parse(prog: &str, jail: &str, ip: &str, bantime: &str) -> Result<Report, FieldError> {
        Ok(Report {
            prog: Name::parse("prog", prog)?,
            jail: Name::parse("jail", jail)?,
            ip: ip.parse()?,
            bantime: Bantime::parse(bantime)?,
        })
    }

    pub fn encode(&self) -> Vec<Vec<u8>> {
        [VERSION.to_string(), "REPORT".into()]
            .into_iter()
            .chain(self.fields())
            .map(String::into_bytes)
            .collect()
    }

    /// prog, jail, ip and bantime (empty for the server's default) as text: the one codec
    /// of a report, on the wire and in the spool.
    pub fn fields(&self) -> [String; 4] {
        [
            self.prog.to_string(),
            self.jail.to_string(),
            self.ip.to_string(),
            self.bantime.encode(),
        ]
    }
}

/// A request arriving on the report socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Report(Report),
    /// The 2014 format `prog;jail;ip;sender`, answered with a bare `OK`.
    Legacy(Report),
    /// A page of the active bans, starting after this network (or at the start), of a
    /// group (or of the default group, from a subscriber that names none).
    Snapshot {
        after: Option<Cidr>,
        group: Option<Group>,
    },
    /// From a peer server: a report waiting there, as a line of its `pending.journal`
    /// (docs/ha.md), which the server parses, in a group (or the default group).
    Forward {
        line: String,
        group: Option<Group>,
    },
    /// Which revision of the protocol the server speaks (section 9).
    Hello,
}

/// Why a request could not be decoded, and how to answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub reason: String,
    pub legacy: bool,
}

pub fn decode_request(frames: &[Vec<u8>]) -> Result<Request, Invalid> {
    let legacy = matches!(frames, [single] if !single.starts_with(b"BANSHARE"));
    parse_request(frames).map_err(|error| Invalid {
        reason: error.to_string(),
        legacy,
    })
}

/// `decode_request`, with why it fails as a kind, which tests match on; the reason sent
/// back is its text.
fn parse_request(frames: &[Vec<u8>]) -> Result<Request, MessageError> {
    match frames {
        [single] if !single.starts_with(b"BANSHARE") => decode_legacy(single),
        [version, ..] if version.as_slice() != VERSION.as_bytes() => {
            Err(MessageError::UnsupportedProtocol {
                version: printable(&String::from_utf8_lossy(version)),
            })
        }
        // Frames after those a request has are what a later revision added: ignored.
        [_, verb, prog, jail, ip, bantime, ..] if verb.as_slice() == b"REPORT" => {
            let (prog, jail) = (text(prog)?, text(jail)?);
            let (ip, bantime) = (text(ip)?, text(bantime)?);
            Ok(Request::Report(Report::parse(prog, jail, ip, bantime)?))
        }
        [_, verb, after, group @ ..] if verb.as_slice() == b"SNAPSHOT" => {
            Ok(decode_snapshot(after, group.first())?)
        }
        [_, verb, line, group @ ..] if verb.as_slice() == b"FORWARD" => {
            Ok(decode_forward(line, group.first())?)
        }
        [_, verb, ..] if verb.as_slice() == b"HELLO" => Ok(Request::Hello),
        [_, verb, ..] => Err(MessageError::UnknownRequest {
            verb: printable(&String::from_utf8_lossy(verb)),
            frames: frames.len(),
        }),
        _ => Err(MessageError::EmptyRequest),
    }
}

/// `[FORWARD][line]` or `[FORWARD][line][group]`.
fn decode_forward(line: &[u8], group: Option<&Vec<u8>>) -> Result<Request, FieldError> {
    Ok(Request::Forward {
        line: text(line)?.to_owned(),
        group: decode_group(group)?,
    })
}

/// `[SNAPSHOT][after]` or `[SNAPSHOT][after][group]`.
fn decode_snapshot(after: &[u8], group: Option<&Vec<u8>>) -> Result<Request, FieldError> {
    let after = match text(after)? {
        "" => None,
        after => Some(after.parse()?),
    };
    let group = decode_group(group)?;
    Ok(Request::Snapshot { after, group })
}

/// The optional group frame of a SNAPSHOT or FORWARD request.
fn decode_group(group: Option<&Vec<u8>>) -> Result<Option<Group>, FieldError> {
    group.map(|g| text(g).and_then(Group::parse)).transpose()
}

fn decode_legacy(frame: &[u8]) -> Result<Request, MessageError> {
    let line = text(frame)?;
    let fields: Vec<&str> = line.split(';').collect();
    let [prog, jail, ip, _sender] = fields[..] else {
        return Err(MessageError::LegacyFields {
            fields: fields.len(),
        });
    };
    Ok(Request::Legacy(Report::parse(prog, jail, ip, "")?))
}

/// The server's answer to a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    /// Already published within the de-duplication window.
    Duplicate,
    Invalid(String),
    /// Well-formed but not allowed, such as a protected address.
    Refused(String),
    /// Recorded, and waiting: for other hosts to report the network too, or for the
    /// reporter's allowance (README "Policies"). The reason says which.
    Pending(String),
}

impl Verdict {
    fn status(&self) -> &'static str {
        match self {
            Verdict::Accepted => "ACCEPTED",
            Verdict::Duplicate => "DUPLICATE",
            Verdict::Invalid(_) => "INVALID",
            Verdict::Refused(_) => "REFUSED",
            Verdict::Pending(_) => "PENDING",
        }
    }

    /// Whether the server has the report, banned or waiting: nothing for the reporter to
    /// send again.
    pub fn taken(&self) -> bool {
        matches!(
            self,
            Verdict::Accepted | Verdict::Duplicate | Verdict::Pending(_)
        )
    }

    pub fn reason(&self) -> &str {
        match self {
            Verdict::Invalid(r) | Verdict::Refused(r) | Verdict::Pending(r) => r,
            _ => "",
        }
    }

    pub fn encode(&self) -> Vec<Vec<u8>> {
        [VERSION, self.status(), self.reason()]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect()
    }

    /// The 2014 protocol had a single success word.
    pub fn encode_legacy(&self) -> Vec<Vec<u8>> {
        let word = if self.taken() {
            "OK".to_string()
        } else {
            format!("ERR {}: {}", self.status().to_lowercase(), self.reason())
        };
        vec![word.into_bytes()]
    }

    pub fn decode(frames: &[Vec<u8>]) -> Result<Verdict, MessageError> {
        let [version, status, reason, ..] = frames else {
            return Err(MessageError::ReplyFrames {
                frames: frames.len(),
            });
        };
        if version.as_slice() != VERSION.as_bytes() {
            return Err(MessageError::ReplyVersion);
        }
        let reason = printable(text(reason)?);
        match status.as_slice() {
            b"ACCEPTED" => Ok(Verdict::Accepted),
            b"DUPLICATE" => Ok(Verdict::Duplicate),
            b"INVALID" => Ok(Verdict::Invalid(reason)),
            b"REFUSED" => Ok(Verdict::Refused(reason)),
            b"PENDING" => Ok(Verdict::Pending(reason)),
            _ => Err(MessageError::UnknownStatus),
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Accepted => f.write_str("accepted"),
            Verdict::Duplicate => f.write_str("duplicate"),
            Verdict::Invalid(r) => write!(f, "invalid: {r}"),
            Verdict::Refused(r) => write!(f, "refused: {r}"),
            Verdict::Pending(r) => write!(f, "pending: {r}"),
        }
    }
}

/// A ban as the server publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    pub ip: Cidr,
    pub prog: Name,
    pub jail: Name,
    /// The key name of the reporting host.
    pub origin: Name,
    /// Seconds, or None for a permanent ban.
    pub bantime: Option<u64>,
    /// Unix time when the ban ends, or None for a permanent ban.
    pub expires: Option<u64>,
    /// Unix time of the report that set this end, by the clock of the server that took it:
    /// an unban lifts the bans reported before it and no others (docs/ha.md).
    pub reported: u64,
}

impl Ban {
    /// Whether the ban is still in force at `now` (Unix seconds).
    pub fn active_at(&self, now: u64) -> bool {
        self.expires.is_none_or(|e| e > now)
    }

    /// When the ban ends, for comparing: a permanent ban ends after every other.
    pub fn ends(&self) -> u64 {
        self.expires.unwrap_or(u64::MAX)
    }

    /// The order in which bans of one network win over each other: the later end, then the
    /// later report, then the names, so that every server picks the same one.
    pub fn rank(&self) -> (u64, u64, &str, &str, &str) {
        let names = (self.origin.as_str(), self.jail.as_str(), self.prog.as_str());
        (self.ends(), self.reported, names.0, names.1, names.2)
    }

    /// Why a ban that a server sent cannot be true by this host's clock `now`: the
    /// syntax allows it, but no honest server makes it (docs/protocol.md section 4, *What
    /// a subscriber must check*). A server's key is trusted to speak the protocol, not to
    /// date a ban next year, which no later unban could lift, nor to give it an end that
    /// its bantime does not explain, which the kernel may refuse for ever.
    pub fn implausible(&self, now: u64) -> Option<String> {
        if let Some(ahead) = ahead_of(self.reported, now) {
            return Some(format!("it is dated {ahead} s ahead of this host's clock"));
        }
        match (self.bantime, self.expires) {
            (None, None) => None,
            (None, Some(_)) => Some("a permanent ban cannot end".into()),
            (Some(b), None) => Some(format!("a ban of {b}s cannot be permanent")),
            // Never later: a server sets the end when it takes the report, or it keeps an
            // end and moves the report time later (a ban reported again after an unban).
            (Some(b), Some(e)) if e > self.reported.saturating_add(b) => Some(format!(
                "it ends at {e}, {} s after its report time plus its bantime of {b}s",
                e - self.reported.saturating_add(b)
            )),
            (Some(_), Some(_)) => None,
        }
    }
}

/// How far ahead of a host's clock a server may date a ban or an unban: a clock that is a
/// little fast is tolerated (docs/ha.md); one that dates an unban next year, and so lifts
/// every report until then, is not.
pub const MAX_AHEAD: u64 = 300;

/// How far `at` is ahead of `now` beyond MAX_AHEAD, if it is.
fn ahead_of(at: u64, now: u64) -> Option<u64> {
    (at > now.saturating_add(MAX_AHEAD)).then(|| at - now)
}

/// How long a host or a server remembers a dated unban of a network it has no ban of: a
/// day. One that had the lifted ban remembers the unban for as long as that ban could
/// have lasted; the others need it only while stale copies of the ban still travel, and a
/// server that holds such a copy hears the unban from those that remember it, lifts its
/// copy and says so. Without a bound, anyone who may send unbans could make a host or a
/// server keep unbans of any number of networks for ever.
pub const LIFT_WITHOUT_BAN: u64 = 86_400;

/// The most dated unbans a host or a server remembers of networks it has no ban of.
pub const MAX_LIFTS_WITHOUT_BAN: usize = 1_000_000;

/// A dated unban: every ban of `ip` reported at or before `at` is lifted, and one reported
/// later is not. Kept until `until`, when the lifted ban would have ended (None: never), so
/// that a server that was away cannot bring the ban back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lift {
    pub ip: Cidr,
    pub at: u64,
    pub until: Option<u64>,
}

impl Lift {
    pub fn covers(&self, ban: &Ban) -> bool {
        ban.reported <= self.at
    }

    /// Why a dated unban that a server sent cannot be true by this host's clock `now`
    /// (see `Ban::implausible`): dated too far ahead, or kept longer than any ban reported
    /// before it could last.
    pub fn implausible(&self, now: u64) -> Option<String> {
        if let Some(ahead) = ahead_of(self.at, now) {
            return Some(format!("it is dated {ahead} s ahead of this host's clock"));
        }
        match self.until {
            Some(until) if until > self.at.saturating_add(MAX_BANTIME) => Some(format!(
                "it is kept until {until}, longer than any ban it lifts could last"
            )),
            _ => None,
        }
    }

    /// The unban as one remembered without a ban of its network: for LIFT_WITHOUT_BAN
    /// after `now` at most.
    pub fn without_ban(self, now: u64) -> Lift {
        let horizon = now.saturating_add(LIFT_WITHOUT_BAN);
        Lift {
            until: Some(self.until.map_or(horizon, |u| u.min(horizon))),
            ..self
        }
    }

    pub fn active_at(&self, now: u64) -> bool {
        self.until.is_none_or(|u| u > now)
    }

    /// `unban IP AT UNTIL`, as in snapshot pages and the server's journal.
    pub fn line(&self) -> String {
        format!(
            "unban {} {} {}",
            self.ip,
            self.at,
            optional(self.until, "0")
        )
    }

    pub fn parse(fields: &[&str]) -> Result<Lift, MessageError> {
        let ["unban", ip, at, until] = fields else {
            return Err(MessageError::UnbanFields);
        };
        let until = number("until", until)?;
        Ok(Lift {
            ip: ip.parse()?,
            at: number("unban time", at)?,
            until: (until != 0).then_some(until),
        })
    }
}

#[cfg(test)]
impl Ban {
    /// A ban of `ip` from web1's sshd jail, for the tests of every module.
    pub fn sample(ip: &str, bantime: Option<u64>, expires: Option<u64>) -> Ban {
        Ban {
            ip: ip.parse().unwrap(),
            prog: Name::parse("prog", "fail2ban").unwrap(),
            jail: Name::parse("jail", "sshd").unwrap(),
            origin: Name::parse("origin", "web1").unwrap(),
            bantime,
            expires,
            reported: reported_from(bantime, expires),
        }
    }
}

/// A message on the publish socket. `epoch` changes on each server start and `seq` counts
/// bans and unbans, so a subscriber can tell when it missed something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Publish {
    Ban {
        epoch: u64,
        seq: u64,
        ban: Ban,
    },
    /// Carries the ban being lifted, so unban commands can use the same tags, and when it
    /// was lifted (None from servers before dated unbans: lift whatever is applied).
    Unban {
        epoch: u64,
        seq: u64,
        ban: Ban,
        lifted: Option<u64>,
    },
    /// Also says how often heartbeats come, so subscribers know when one is missing.
    Heartbeat {
        epoch: u64,
        seq: u64,
        interval_ms: u64,
    },
}

fn optional(value: Option<u64>, none: &str) -> String {
    value.map_or_else(|| none.to_string(), |v| v.to_string())
}

/// A ban as seven text fields: ip, prog, jail, origin, bantime (-1 = permanent), expires
/// (0 = never) and reported: the one codec of a ban. Published messages carry them as
/// frames, snapshot pages and the client's journal as one line each; the server's journal
/// keeps the first six, and the report time as its PUBLISHED field.
pub fn ban_fields(ban: &Ban) -> [String; 7] {
    [
        ban.ip.to_string(),
        ban.prog.to_string(),
        ban.jail.to_string(),
        ban.origin.to_string(),
        optional(ban.bantime, "-1"),
        optional(ban.expires, "0"),
        ban.reported.to_string(),
    ]
}

/// A ban from its seven text fields, by the rules of the wire; the journals hold the same
/// fields and are read with the same rules. Without the seventh, as servers before dated
/// unbans sent it, the report time is worked out from the end (`expires - bantime`), or is
/// 0 for a permanent ban, which any dated unban then lifts.
/// The fields of a ban on the wire: ip, prog, jail, origin, bantime, expires, reported.
pub const BAN_FIELDS: usize = 7;

pub fn parse_ban(fields: &[&str]) -> Result<Ban, MessageError> {
    let (fields, reported) = match fields {
        [six @ .., reported] if six.len() == 6 => (six, Some(number("reported", reported)?)),
        _ => (fields, None),
    };
    let [ip, prog, jail, origin, bantime, expires] = fields else {
        return Err(MessageError::BanFields {
            fields: fields.len(),
        });
    };
    let bantime = match Bantime::parse(bantime)? {
        Bantime::Seconds(s) => Some(s),
        Bantime::Permanent => None,
        Bantime::Default => return Err(MessageError::NoBantime),
    };
    let expires = number("expires", expires)?;
    let expires = (expires != 0).then_some(expires);
    Ok(Ban {
        ip: ip.parse()?,
        prog: Name::parse("prog", prog)?,
        jail: Name::parse("jail", jail)?,
        origin: Name::parse("origin", origin)?,
        bantime,
        expires,
        reported: reported.unwrap_or_else(|| reported_from(bantime, expires)),
    })
}

/// The report time of a ban sent without one: a finite ban ended its bantime after it was
/// reported; a permanent one says nothing, and any dated unban lifts it.
fn reported_from(bantime: Option<u64>, expires: Option<u64>) -> u64 {
    match (bantime, expires) {
        (Some(b), Some(e)) => e.saturating_sub(b),
        _ => 0,
    }
}

/// Active bans per snapshot page; a page stays well under a megabyte.
pub const PAGE: usize = 1000;

/// One page of the server's active bans, in address order, with the server's position when
/// it was taken. `next` is where the following page starts; None on the last page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotPage {
    /// The group whose bans these are, as frame 0 says.
    pub topic: Topic,
    pub epoch: u64,
    pub seq: u64,
    pub next: Option<Cidr>,
    pub bans: Vec<Ban>,
    /// Dated unbans of networks on this page, `unban IP AT UNTIL` lines: a subscriber of
    /// several servers lifts what they cover rather than take absence for a lift.
    pub lifts: Vec<Lift>,
    /// Ban lines that did not read as bans (decoding only): one bad ban must not cost the
    /// others on its page, or every client would ask for that page again forever.
    pub unreadable: Vec<Unreadable>,
}

/// A ban line that a page carried but that breaks the rules of a ban.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// Its network, when at least that reads: the ban is there, so a client must not take
    /// it for one lifted while it was away.
    pub ip: Option<Cidr>,
    pub reason: String,
}

impl SnapshotPage {
    /// `[topic, SNAPSHOT, epoch, seq, next or "", one frame per ban or unban...]`
    pub fn encode(&self) -> Vec<Vec<u8>> {
        let head = [
            self.topic.to_string(),
            "SNAPSHOT".into(),
            self.epoch.to_string(),
            self.seq.to_string(),
            self.next.map_or(String::new(), |n| n.to_string()),
        ];
        head.into_iter()
            .chain(self.lines())
            .map(String::into_bytes)
            .collect()
    }

    /// The page's bans and unbans as lines, in network order (section 5): both lists are in
    /// that order, and a network's ban comes before its unban.
    fn lines(&self) -> Vec<String> {
        let (mut bans, mut lifts) = (self.bans.iter().peekable(), self.lifts.iter().peekable());
        let mut lines = Vec::with_capacity(self.bans.len() + self.lifts.len());
        loop {
            let ban_first = match (bans.peek(), lifts.peek()) {
                (Some(ban), Some(lift)) => ban.ip <= lift.ip,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => return lines,
            };
            lines.push(
                match ban_first {
                    true => bans.next().map(|b| ban_fields(b).join(" ")),
                    false => lifts.next().map(Lift::line),
                }
                .expect("peeked"),
            );
        }
    }

    pub fn decode(frames: &[Vec<u8>]) -> Result<SnapshotPage, MessageError> {
        let fields = frames
            .iter()
            .map(|f| text(f))
            .collect::<Result<Vec<&str>, FieldError>>()?;
        let [topic, "SNAPSHOT", epoch, seq, next, ref bans @ ..] = fields[..] else {
            return Err(MessageError::NotSnapshotPage);
        };
        let mut page = SnapshotPage {
            topic: Topic::parse(topic.as_bytes())?,
            epoch: number("epoch", epoch)?,
            seq: number("seq", seq)?,
            next: if next.is_empty() {
                None
            } else {
                Some(next.parse()?)
            },
            bans: Vec::with_capacity(bans.len()),
            lifts: Vec::new(),
            unreadable: Vec::new(),
        };
        for line in bans {
            let fields: Vec<&str> = line.split(' ').collect();
            // Fields after those a line has are what a later revision added: ignored.
            let read = match fields[0] {
                "unban" => {
                    Lift::parse(&fields[..fields.len().min(4)]).map(|lift| page.lifts.push(lift))
                }
                _ => parse_ban(&fields[..fields.len().min(BAN_FIELDS)])
                    .map(|ban| page.bans.push(ban)),
            };
            match read {
                Ok(()) => {}
                Err(reason) => page.unreadable.push(Unreadable {
                    ip: fields[0].parse().ok(),
                    reason: format!("{reason} in {:?}", printable(line)),
                }),
            }
        }
        Ok(page)
    }
}

/// `[BANSHARE1, SNAPSHOT, after]`: asks for the page of active bans after `after` ("" for
/// the first page); with a fourth frame, of that group.
pub fn encode_snapshot_request(after: Option<&Cidr>, group: Option<&Group>) -> Vec<Vec<u8>> {
    let after = after.map_or(String::new(), Cidr::to_string);
    let mut frames = vec![VERSION.into(), b"SNAPSHOT".to_vec(), after.into_bytes()];
    frames.extend(group.map(|g| g.as_str().as_bytes().to_vec()));
    frames
}

/// The answer to HELLO: `[BANSHARE1][HELLO][revision]` (section 9).
pub fn encode_hello() -> Vec<Vec<u8>> {
    vec![
        VERSION.into(),
        b"HELLO".to_vec(),
        REVISION.to_string().into_bytes(),
    ]
}

/// A FORWARD request, from one server to a peer (`Request::Forward`); with a fourth frame,
/// in that group.
pub fn encode_forward(line: &str, group: Option<&Group>) -> Vec<Vec<u8>> {
    let mut frames = vec![
        VERSION.into(),
        b"FORWARD".to_vec(),
        line.as_bytes().to_vec(),
    ];
    frames.extend(group.map(|g| g.as_str().as_bytes().to_vec()));
    frames
}

impl Publish {
    /// The message's frames, under `topic` in frame 0.
    pub fn encode(&self, topic: &Topic) -> Vec<Vec<u8>> {
        let fields: Vec<String> = match self {
            Publish::Ban { epoch, seq, ban } => {
                let mut fields = vec![self.kind().into(), epoch.to_string(), seq.to_string()];
                fields.extend(ban_fields(ban));
                fields
            }
            Publish::Unban {
                epoch,
                seq,
                ban,
                lifted,
            } => {
                let mut fields = vec![self.kind().into(), epoch.to_string(), seq.to_string()];
                fields.extend(ban_fields(ban));
                fields.extend(lifted.map(|at| at.to_string()));
                fields
            }
            Publish::Heartbeat {
                epoch,
                seq,
                interval_ms,
            } => vec![
                "HEARTBEAT".into(),
                epoch.to_string(),
                seq.to_string(),
                interval_ms.to_string(),
            ],
        };
        std::iter::once(topic.to_string())
            .chain(fields)
            .map(String::into_bytes)
            .collect()
    }

    fn kind(&self) -> &'static str {
        match self {
            Publish::Ban { .. } => "BAN",
            Publish::Unban { .. } => "UNBAN",
            Publish::Heartbeat { .. } => "HEARTBEAT",
        }
    }

    /// A message and the topic it came under.
    pub fn decode(frames: &[Vec<u8>]) -> Result<(Topic, Publish), MessageError> {
        let topic = Topic::parse(frames.first().ok_or(MessageError::EmptyMessage)?)?;
        Ok((topic, Publish::decode_body(&frames[1..])?))
    }

    /// Frames 1 and later of a message.
    fn decode_body(frames: &[Vec<u8>]) -> Result<Publish, MessageError> {
        let fields = frames
            .iter()
            .map(|f| text(f))
            .collect::<Result<Vec<&str>, FieldError>>()?;
        let count = frames.len() + 1;
        // Fields after those a message has are what a later revision added: ignored.
        match fields[..] {
            ["HEARTBEAT", epoch, seq, interval_ms, ..] => Ok(Publish::Heartbeat {
                epoch: number("epoch", epoch)?,
                seq: number("seq", seq)?,
                interval_ms: number("interval", interval_ms)?,
            }),
            ["BAN", epoch, seq, ref ban @ ..] => Ok(Publish::Ban {
                epoch: number("epoch", epoch)?,
                seq: number("seq", seq)?,
                ban: parse_ban(&ban[..ban.len().min(BAN_FIELDS)])?,
            }),
            // Dated: the seven fields of the ban and the time of the unban; or, from a server
            // before dated unbans, the ban's first six fields alone.
            ["UNBAN", epoch, seq, ref rest @ ..] => {
                let (ban, lifted) = match rest.len() {
                    6 => (rest, None),
                    n if n > BAN_FIELDS => {
                        let at = number("unban time", rest[BAN_FIELDS])?;
                        (&rest[..BAN_FIELDS], Some(at))
                    }
                    _ => return Err(MessageError::UnbanFrames { frames: count }),
                };
                Ok(Publish::Unban {
                    epoch: number("epoch", epoch)?,
                    seq: number("seq", seq)?,
                    ban: parse_ban(ban)?,
                    lifted,
                })
            }
            _ => Err(MessageError::UnknownMessage { frames: count }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::cidr::CidrError;

    fn frames(parts: &[&str]) -> Vec<Vec<u8>> {
        parts.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn report_round_trip() {
        let report = Report::parse("fail2ban", "sshd", "2001:db8::7", "600").unwrap();
        assert_eq!(
            decode_request(&report.encode()),
            Ok(Request::Report(report.clone()))
        );
        let default = Report::parse("psad", "psad", "203.0.113.7", "").unwrap();
        assert_eq!(default.bantime, Bantime::Default);
        assert_eq!(
            decode_request(&default.encode()),
            Ok(Request::Report(default))
        );
    }

    #[test]
    fn legacy_reports() {
        let Ok(Request::Legacy(r)) = decode_request(&frames(&["fail2ban;sshd;203.0.113.7;web1"]))
        else {
            panic!("legacy not decoded")
        };
        assert_eq!(r.ip.to_string(), "203.0.113.7");
        let semis = [";".repeat(1000).into_bytes()];
        let err = parse_request(&semis).unwrap_err();
        assert_eq!(err, MessageError::LegacyFields { fields: 1001 });
        // What a 2014 reporter is told, as docs/protocol.md quotes it.
        let err = decode_request(&frames(&["fail2ban;sshd;203.0.113.7"])).unwrap_err();
        assert!(err.legacy, "{err:?}");
        assert_eq!(
            err.reason,
            "legacy report must be prog;jail;ip;sender, got 3 fields"
        );
    }

    #[test]
    fn rejects_hostile_fields() {
        let name = |field: &str, text: &str| FieldError::BadName {
            field: field.into(),
            text: text.into(),
        };
        let address =
            |text: &str| -> FieldError { CidrError::NotAnAddress { text: text.into() }.into() };
        let bantime = |text: &str| FieldError::BadBantime { text: text.into() };
        let bad = [
            (
                ["fail2ban", "x;touch /tmp/pwned", "203.0.113.7", ""],
                name("jail", "x;touch /tmp/pwned"),
            ),
            (
                ["fail2ban", "sshd", "1.2.3.4 && reboot", ""],
                address("1.2.3.4 && reboot"),
            ),
            (["fail2ban", "sshd", "1.2.3.4\n", ""], address("1.2.3.4\\n")),
            (["fail2ban", "sshd", "1.2.3.4", "0"], bantime("0")),
            (["fail2ban", "sshd", "1.2.3.4", "-2"], bantime("-2")),
            (["fail2ban", "sshd", "1.2.3.4", "1e9"], bantime("1e9")),
            (["", "sshd", "1.2.3.4", ""], name("prog", "")),
            (
                ["$(reboot)", "sshd", "1.2.3.4", ""],
                name("prog", "$(reboot)"),
            ),
        ];
        for ([prog, jail, ip, bantime], why) in bad {
            let request = frames(&[VERSION, "REPORT", prog, jail, ip, bantime]);
            assert!(decode_request(&request).is_err(), "{request:?}");
            assert_eq!(parse_request(&request), Err(why.into()), "{request:?}");
        }
        for option in ["-rf", "--help", "-"] {
            assert_eq!(Name::parse("jail", option), Err(name("jail", option)));
            let request = frames(&[VERSION, "REPORT", "fail2ban", option, "203.0.113.7", ""]);
            assert!(decode_request(&request).is_err(), "{option}");
            let ban = frames(&[
                VERSION,
                "BAN",
                "1",
                "2",
                "203.0.113.7",
                option,
                "sshd",
                "web1",
                "60",
                "99",
            ]);
            assert!(Publish::decode(&ban).is_err(), "{option}");
        }
        assert!(Name::parse("jail", "a-b").is_ok());
        let long = "a".repeat(65);
        assert_eq!(Name::parse("jail", &long), Err(name("jail", &long)));
        assert!(Name::parse("jail", &long[..64]).is_ok());
    }

    #[test]
    fn rejects_wrong_shapes() {
        assert!(decode_request(&[]).is_err());
        assert_eq!(parse_request(&[]), Err(MessageError::EmptyRequest));
        assert_eq!(
            parse_request(&frames(&[VERSION])),
            Err(MessageError::EmptyRequest)
        );
        let newer = frames(&["BANSHARE9", "REPORT", "a", "b", "1.2.3.4", ""]);
        assert_eq!(
            parse_request(&newer),
            Err(MessageError::UnsupportedProtocol {
                version: "BANSHARE9".into()
            })
        );
        let short = frames(&[VERSION, "REPORT", "a", "b", "1.2.3.4"]);
        assert_eq!(
            parse_request(&short),
            Err(MessageError::UnknownRequest {
                verb: "REPORT".into(),
                frames: 5
            })
        );
        let binary = [
            VERSION.into(),
            b"REPORT".to_vec(),
            vec![0xff],
            b"j".to_vec(),
            b"1.2.3.4".to_vec(),
            vec![],
        ];
        assert_eq!(parse_request(&binary), Err(FieldError::NotText.into()));
        // What a newer reporter reads to learn that this server is older (docs/protocol.md).
        let newer = frames(&["BANSHARE2", "REPORT", "a", "b", "1.2.3.4", ""]);
        assert_eq!(
            decode_request(&newer).unwrap_err().reason,
            r#"unsupported protocol "BANSHARE2"; this server speaks BANSHARE1"#
        );
    }

    /// docs/protocol.md, section 9: what a later revision adds at the end of a message is
    /// ignored, and HELLO says which revision this one is.
    #[test]
    fn what_a_later_revision_adds_at_the_end_is_ignored() {
        let later = |mut frames: Vec<Vec<u8>>| {
            frames.extend([b"later".to_vec(), b"and more".to_vec()]);
            frames
        };
        let report = Report::parse("fail2ban", "sshd", "203.0.113.7", "600").unwrap();
        assert_eq!(
            decode_request(&later(report.encode())),
            Ok(Request::Report(report))
        );
        let web = Group::parse("web").unwrap();
        assert_eq!(
            decode_request(&later(encode_snapshot_request(None, Some(&web)))),
            Ok(Request::Snapshot {
                after: None,
                group: Some(web.clone())
            })
        );
        assert_eq!(
            decode_request(&later(encode_forward("line", Some(&web)))),
            Ok(Request::Forward {
                line: "line".into(),
                group: Some(web.clone())
            })
        );
        let refused = Verdict::Refused("protected".into());
        assert_eq!(Verdict::decode(&later(refused.encode())), Ok(refused));
        let ban = Ban::sample("203.0.113.7", Some(600), Some(1_800_000_600));
        let topic = Topic::of(web, false);
        for message in [
            Publish::Ban {
                epoch: 1,
                seq: 2,
                ban: ban.clone(),
            },
            Publish::Unban {
                epoch: 1,
                seq: 3,
                ban: ban.clone(),
                lifted: Some(1_800_000_100),
            },
            Publish::Heartbeat {
                epoch: 1,
                seq: 3,
                interval_ms: 1000,
            },
        ] {
            let decoded = Publish::decode(&later(message.encode(&topic)));
            assert_eq!(decoded, Ok((topic.clone(), message)));
        }
        // A page's lines may gain fields; its head may not.
        let page = SnapshotPage {
            topic: topic.clone(),
            epoch: 1,
            seq: 3,
            next: None,
            bans: vec![ban.clone()],
            lifts: vec![Lift {
                ip: "198.51.100.0/24".parse().unwrap(),
                at: 1_800_000_000,
                until: None,
            }],
            unreadable: Vec::new(),
        };
        let longer: Vec<Vec<u8>> = page
            .encode()
            .into_iter()
            .enumerate()
            .map(|(i, f)| {
                if i < 5 {
                    f
                } else {
                    [f, b" later".to_vec()].concat()
                }
            })
            .collect();
        assert_eq!(SnapshotPage::decode(&longer), Ok(page));
        assert_eq!(
            decode_request(&frames(&[VERSION, "HELLO"])),
            Ok(Request::Hello)
        );
        assert_eq!(
            encode_hello(),
            frames(&[VERSION, "HELLO", &REVISION.to_string()])
        );
    }

    #[test]
    fn verdict_round_trip() {
        for v in [
            Verdict::Accepted,
            Verdict::Duplicate,
            Verdict::Invalid("bad ip".into()),
            Verdict::Refused("protected".into()),
            Verdict::Pending("1 of 2 hosts".into()),
        ] {
            assert_eq!(Verdict::decode(&v.encode()), Ok(v.clone()));
        }
        assert_eq!(Verdict::Duplicate.encode_legacy(), frames(&["OK"]));
        assert_eq!(
            Verdict::Pending("x".into()).encode_legacy(),
            frames(&["OK"])
        );
    }

    #[test]
    fn replies_that_are_not_verdicts_are_told_apart() {
        assert_eq!(
            Verdict::decode(&frames(&[VERSION, "ACCEPTED"])),
            Err(MessageError::ReplyFrames { frames: 2 })
        );
        assert_eq!(
            Verdict::decode(&frames(&["BANSHARE2", "ACCEPTED", ""])),
            Err(MessageError::ReplyVersion)
        );
        assert_eq!(
            Verdict::decode(&frames(&[VERSION, "OK", ""])),
            Err(MessageError::UnknownStatus)
        );
        let binary = [VERSION.into(), b"REFUSED".to_vec(), vec![0xff]];
        assert_eq!(Verdict::decode(&binary), Err(FieldError::NotText.into()));
    }

    #[test]
    fn snapshot_round_trip() {
        let ban = Ban::sample("198.51.100.0/24", None, None);
        let web = Group::parse("web").unwrap();
        let page = SnapshotPage {
            topic: Topic::of(web.clone(), true),
            epoch: 3,
            seq: 9,
            next: Some(ban.ip),
            bans: vec![
                ban.clone(),
                Ban {
                    bantime: Some(60),
                    expires: Some(99),
                    ..ban
                },
            ],
            lifts: vec![],
            unreadable: vec![],
        };
        assert_eq!(SnapshotPage::decode(&page.encode()), Ok(page));
        let last = SnapshotPage {
            topic: Topic::ungrouped(),
            epoch: 3,
            seq: 9,
            next: None,
            bans: vec![],
            lifts: vec![],
            unreadable: vec![],
        };
        assert_eq!(SnapshotPage::decode(&last.encode()), Ok(last));
        let after: Cidr = "2001:db8::/64".parse().unwrap();
        assert_eq!(
            decode_request(&encode_snapshot_request(Some(&after), None)),
            Ok(Request::Snapshot {
                after: Some(after),
                group: None
            })
        );
        assert_eq!(
            decode_request(&encode_snapshot_request(None, Some(&web))),
            Ok(Request::Snapshot {
                after: None,
                group: Some(web)
            })
        );
        assert!(decode_request(&frames(&[VERSION, "SNAPSHOT", "1.2.3.4;x"])).is_err());
        assert!(matches!(
            parse_request(&frames(&[VERSION, "SNAPSHOT", "1.2.3.4;x"])),
            Err(MessageError::Field(FieldError::Network(
                CidrError::NotAnAddress { .. }
            )))
        ));
        assert_eq!(
            parse_request(&frames(&[VERSION, "SNAPSHOT", "", "w/x"])),
            Err(FieldError::BadGroup { text: "w/x".into() }.into())
        );
        // A fifth frame is what a later revision added: ignored (section 9).
        assert_eq!(
            parse_request(&frames(&[VERSION, "SNAPSHOT", "", "web", "x"])),
            Ok(Request::Snapshot {
                after: None,
                group: Some(Group::parse("web").unwrap())
            })
        );
        assert_eq!(
            SnapshotPage::decode(&frames(&[VERSION, "BAN"])),
            Err(MessageError::NotSnapshotPage)
        );
    }

    #[test]
    fn a_page_lists_bans_and_unbans_in_network_order() {
        let lift = |ip: &str| Lift {
            ip: ip.parse().unwrap(),
            at: 5,
            until: None,
        };
        let page = SnapshotPage {
            topic: Topic::ungrouped(),
            epoch: 3,
            seq: 9,
            next: None,
            bans: ["198.51.100.1", "198.51.100.3", "2001:db8::/64"]
                .map(|ip| Ban::sample(ip, None, None))
                .to_vec(),
            lifts: ["198.51.100.2", "198.51.100.3", "2001:db8::1"]
                .map(lift)
                .to_vec(),
            unreadable: vec![],
        };
        let networks: Vec<String> = page.encode()[5..]
            .iter()
            .map(|line| String::from_utf8_lossy(line).replace("unban ", "-"))
            .map(|line| line.split(' ').next().unwrap().to_string())
            .collect();
        assert_eq!(
            networks,
            [
                "198.51.100.1",
                "-198.51.100.2",
                "198.51.100.3",
                "-198.51.100.3",
                "2001:db8::/64",
                "-2001:db8::1"
            ]
        );
        assert_eq!(SnapshotPage::decode(&page.encode()), Ok(page));
    }

    #[test]
    fn forward_round_trip_with_and_without_a_group() {
        let line = "203.0.113.7 web1/1767225000/1767228600/fail2ban/sshd/600/waiting";
        let web = Group::parse("web").unwrap();
        for group in [None, Some(web)] {
            let request = encode_forward(line, group.as_ref());
            assert_eq!(
                decode_request(&request),
                Ok(Request::Forward {
                    line: line.into(),
                    group
                })
            );
        }
        assert!(matches!(
            parse_request(&frames(&[VERSION, "FORWARD", line, "w/x"])),
            Err(MessageError::Field(FieldError::BadGroup { .. }))
        ));
        assert!(matches!(
            parse_request(&frames(&[VERSION, "FORWARD", line, "web", "x"])),
            Ok(Request::Forward { .. })
        ));
    }

    #[test]
    fn a_bad_ban_costs_only_itself_in_a_page() {
        let too_long = format!("203.0.113.8 f2b sshd web1 {} 0", MAX_BANTIME + 1);
        let page = frames(&[
            VERSION,
            "SNAPSHOT",
            "1",
            "2",
            "",
            "203.0.113.7 f2b sshd web1 60 99",
            &too_long,
            "garbage",
            "203.0.113.9 -rf sshd web1 60 99",
        ]);
        let page = SnapshotPage::decode(&page).unwrap();
        assert_eq!(page.bans.len(), 1);
        let ips: Vec<Option<String>> = page
            .unreadable
            .iter()
            .map(|u| u.ip.map(|ip| ip.to_string()))
            .collect();
        assert_eq!(
            ips,
            [Some("203.0.113.8".into()), None, Some("203.0.113.9".into())]
        );
        assert!(page.unreadable[0].reason.contains("bantime"), "{page:?}");
        assert_eq!(
            page.unreadable[1].reason,
            r#"a ban has 7 fields, not 1 in "garbage""#
        );
    }

    #[test]
    fn bad_bans_and_unbans_are_told_apart() {
        let ban = |line: &str| parse_ban(&line.split(' ').collect::<Vec<_>>());
        assert_eq!(ban("garbage"), Err(MessageError::BanFields { fields: 1 }));
        assert_eq!(
            ban("203.0.113.7 f2b sshd web1  99"),
            Err(MessageError::NoBantime)
        );
        assert_eq!(
            ban("203.0.113.7 f2b sshd web1 60 never"),
            Err(FieldError::NotANumber {
                field: "expires".into(),
                text: "never".into()
            }
            .into())
        );
        assert!(matches!(
            ban("203.0.113.7/24 f2b sshd web1 60 99"),
            Err(MessageError::Field(FieldError::Network(
                CidrError::HostBitsSet { .. }
            )))
        ));
        let lift = |line: &str| Lift::parse(&line.split(' ').collect::<Vec<_>>());
        assert_eq!(lift("unban 203.0.113.7"), Err(MessageError::UnbanFields));
        assert!(matches!(
            lift("unban 203.0.113.7 soon 0"),
            Err(MessageError::Field(FieldError::NotANumber { .. }))
        ));
    }

    #[test]
    fn what_no_honest_server_sends_is_told_apart() {
        let now = 1_800_000_000;
        let ban = |bantime, expires, reported| Ban {
            reported,
            ..Ban::sample("203.0.113.7", bantime, expires)
        };
        for honest in [
            ban(Some(600), Some(now + 600), now),
            ban(None, None, now + MAX_AHEAD),
            // A ban reported again after an unban keeps its end: shorter than its bantime.
            ban(Some(600), Some(now + 300), now),
        ] {
            assert_eq!(honest.implausible(now), None, "{honest:?}");
        }
        for (lying, why) in [
            (ban(None, None, now + MAX_AHEAD + 1), "ahead"),
            (ban(Some(600), Some(u64::MAX), now), "after its report time"),
            (
                ban(Some(600), Some(now + 601), now),
                "after its report time",
            ),
            (ban(None, Some(now + 600), now), "permanent"),
            (ban(Some(600), None, now), "cannot be permanent"),
        ] {
            let said = lying.implausible(now).unwrap_or_default();
            assert!(said.contains(why), "{lying:?}: {said}");
        }
        let lift = |at, until| Lift {
            ip: "203.0.113.7".parse().unwrap(),
            at,
            until,
        };
        assert_eq!(lift(now + MAX_AHEAD, None).implausible(now), None);
        assert!(lift(now + 86400 * 365, None).implausible(now).is_some());
        assert!(lift(now, Some(now + MAX_BANTIME + 1))
            .implausible(now)
            .is_some());
        let kept = lift(now, None).without_ban(now);
        assert_eq!(kept.until, Some(now + LIFT_WITHOUT_BAN));
    }

    #[test]
    fn publish_round_trip() {
        let ban = Ban::sample("198.51.100.0/24", Some(600), Some(1_800_000_000));
        for msg in [
            Publish::Ban {
                epoch: 7,
                seq: 1,
                ban: ban.clone(),
            },
            Publish::Unban {
                epoch: 7,
                seq: 3,
                ban: ban.clone(),
                lifted: Some(1_700_000_000),
            },
            Publish::Ban {
                epoch: 7,
                seq: 2,
                ban: Ban {
                    bantime: None,
                    expires: None,
                    ..ban
                },
            },
            Publish::Heartbeat {
                epoch: 7,
                seq: 3,
                interval_ms: 1000,
            },
        ] {
            assert_eq!(
                Publish::decode(&msg.encode(&Topic::ungrouped())),
                Ok((Topic::ungrouped(), msg.clone()))
            );
            let web = Topic::of(Group::parse("web").unwrap(), false);
            assert_eq!(Publish::decode(&msg.encode(&web)), Ok((web, msg)));
        }
        assert_eq!(
            Publish::decode(&frames(&[VERSION, "HEARTBEAT", "1", "-1", "1000"])),
            Err(FieldError::NotANumber {
                field: "seq".into(),
                text: "-1".into()
            }
            .into())
        );
        assert_eq!(
            Publish::decode(&frames(&[VERSION, "HEARTBEAT", "1", "1"])),
            Err(MessageError::UnknownMessage { frames: 4 })
        );
        assert_eq!(
            Publish::decode(&frames(&[VERSION, "BAN", "1", "2", "1.2.3.4"])),
            Err(MessageError::BanFields { fields: 1 })
        );
        assert_eq!(
            Publish::decode(&frames(&[VERSION, "UNBAN", "1", "2", "1.2.3.4"])),
            Err(MessageError::UnbanFrames { frames: 5 })
        );
        assert_eq!(Publish::decode(&[]), Err(MessageError::EmptyMessage));
        assert_eq!(
            Publish::decode(&frames(&["BANSHARE1/web"])),
            Err(MessageError::UnknownTopic {
                topic: "BANSHARE1/web".into()
            })
        );
    }
}
