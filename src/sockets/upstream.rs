//! One banshare-server followed from elsewhere: a subscription to its publish socket, a
//! DEALER on its report socket for snapshot pages, and the `Follower` that says when to
//! catch up. A server follows each of its peers this way (`server::peering`).

use std::time::{Duration, Instant};

use crate::clock::unix_now;
use crate::sockets::monitor::{self, ConnectionWatch};
use crate::sockets::transport::{self, endpoint, Received};
use crate::wire::cidr::Cidr;
use crate::wire::error::MessageError;
use crate::wire::follow::{Due, Follower};
use crate::wire::keys::{KeyPair, PublicKey};
use crate::wire::protocol::{
    encode_snapshot_request, Publish, SnapshotPage, Verdict, PAGE, VERSION,
};
use crate::wire::topic::{Group, Topic};

/// The most streams followed from one server: its groups, at most 16 of them.
const MAX_STREAMS: usize = 16;

/// Frames in the largest message of each kind, with room for what a later revision may add
/// at its end (docs/protocol.md, section 9): an UNBAN has 12; a snapshot page behind its
/// delimiter (its head cannot grow, only its lines). Anything longer is not read further
/// (see `transport::recv_bounded`).
pub const PUBLISHED_FRAMES: usize = 24;
pub const PAGE_FRAMES: usize = 1 + 5 + PAGE;
/// Frames in a verdict behind its delimiter, the answer to a report or a FORWARD: 3, and
/// room for more.
pub const VERDICT_FRAMES: usize = 1 + 8;
/// After the server refused our key, try again this often with a new subscriber socket.
const RETRY_REFUSED: Duration = Duration::from_secs(2);

/// Where a server is, and the key it must prove it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub host: String,
    pub report_port: u16,
    pub publish_port: u16,
    pub key: PublicKey,
}

impl Target {
    pub fn publish_endpoint(&self) -> String {
        endpoint(&self.host, self.publish_port)
    }

    pub fn report_endpoint(&self) -> String {
        endpoint(&self.host, self.report_port)
    }
}

pub struct Upstream {
    pub target: Target,
    subscriber: zmq::Socket,
    watch: ConnectionWatch,
    requester: zmq::Socket,
    /// The groups subscribed to; None: every group the server has, each found as its
    /// first heartbeat comes.
    groups: Option<Vec<Group>>,
    /// One per group followed, or the one stream of a server without groups.
    pub streams: Vec<Stream>,
    /// Unix time of the last message from it, of any kind.
    pub heard_at: Option<u64>,
    /// Whether it sent a message of more frames than any banshare message has since the
    /// owner last asked (`take_oversized`).
    oversized: bool,
}

impl Drop for Upstream {
    /// A reload drops the followers of the servers it changes: see `monitor::stop`.
    fn drop(&mut self) {
        monitor::stop(&self.subscriber);
    }
}

/// One group's messages from the server, with its own position and catch-ups.
pub struct Stream {
    /// Its group, and whether that is a dry run, as last heard.
    pub topic: Topic,
    pub follower: Follower,
    /// Whether a whole snapshot was read since the start.
    pub synced: bool,
}

/// What came from the server.
pub enum Heard {
    Message(Topic, Publish),
    Page(SnapshotPage),
    /// Something that broke the protocol, for a log line.
    Bad(String),
}

impl Upstream {
    /// Follows `groups` of the server, or all it has.
    pub fn open(
        ctx: &zmq::Context,
        target: Target,
        own: &KeyPair,
        groups: Option<Vec<Group>>,
    ) -> zmq::Result<Upstream> {
        let (subscriber, watch) = subscribe(ctx, &target, own, groups.as_deref())?;
        let topics: Vec<Topic> = match &groups {
            Some(groups) => groups.iter().map(|g| Topic::of(g.clone(), false)).collect(),
            // A server without groups, until its messages say otherwise.
            None => vec![Topic::ungrouped()],
        };
        let now = Instant::now();
        let streams = topics.into_iter().map(|t| Stream::new(&target, t, now));
        Ok(Upstream {
            requester: requester(ctx, &target, own)?,
            streams: streams.collect(),
            groups,
            target,
            subscriber,
            watch,
            heard_at: None,
            oversized: false,
        })
    }

    /// Whether the server sent a message of more frames than any banshare message has
    /// since the last call. Its frames were freed as they were read, but glibc keeps the
    /// pages of many small blocks freed out of order: the owner should give them back
    /// (`daemon::memory::Guard::release`), or a 50,000-frame message would leave the
    /// process 400 MB larger, below the guard's limit, for good.
    pub fn take_oversized(&mut self) -> bool {
        std::mem::take(&mut self.oversized)
    }

    /// Whether every stream read a whole snapshot since the start.
    pub fn synced(&self) -> bool {
        self.streams.iter().all(|s| s.synced)
    }

    /// Whether any stream was heard within three heartbeats.
    pub fn is_live(&self, now: Instant) -> bool {
        self.streams.iter().any(|s| s.follower.is_live(now))
    }

    /// Asks every stream for a catch-up.
    pub fn want(&mut self) {
        for stream in &mut self.streams {
            stream.follower.want();
        }
    }

    /// The longest silence that starts a catch-up now, if any (`Follower::silence`).
    pub fn silence(&mut self, now: Instant) -> Option<Duration> {
        let silences = self
            .streams
            .iter_mut()
            .filter_map(|s| s.follower.silence(now));
        silences.max()
    }

    /// The index of the stream of `group`, if followed.
    pub fn stream_index(&self, group: Option<&Group>) -> Option<usize> {
        self.streams
            .iter()
            .position(|s| s.topic.group.as_ref() == group)
    }

    /// The stream a message under `topic` belongs to. Following every group, a topic not
    /// heard before is a new stream, which catches up first; and a server that gained or
    /// lost its groups leaves the streams of the other kind behind.
    pub fn stream_for(&mut self, topic: &Topic) -> Option<usize> {
        let known = self.streams.iter().any(|s| s.topic.group == topic.group);
        if !known && self.groups.is_none() {
            let grouped = topic.group.is_some();
            self.streams.retain(|s| s.topic.group.is_some() == grouped);
            if self.streams.len() < MAX_STREAMS {
                let stream = Stream::new(&self.target, topic.clone(), Instant::now());
                self.streams.push(stream);
            }
        }
        let i = self.stream_index(topic.group.as_ref())?;
        self.streams[i].topic.dry_run = topic.dry_run;
        Some(i)
    }

    /// Once the server refused our key, libzmq gives up on it: a new subscriber socket
    /// after a pause, so that a key authorized later gets in without a restart.
    pub fn retry_if_refused(&mut self, ctx: &zmq::Context, own: &KeyPair) {
        if self.watch.refused_for() < Some(RETRY_REFUSED) {
            return;
        }
        match subscribe(ctx, &self.target, own, self.groups.as_deref()) {
            Ok((subscriber, mut watch)) => {
                watch.continue_from(&self.watch);
                monitor::stop(&self.subscriber);
                (self.subscriber, self.watch) = (subscriber, watch);
            }
            Err(e) => {
                log::error!("cannot open a new subscriber socket: {e}");
                self.watch.postpone_retry();
            }
        }
    }

    /// The sockets to poll: the subscription, its watch, and the snapshot requests.
    pub fn poll_items(&self) -> [zmq::PollItem<'_>; 3] {
        [
            self.subscriber.as_poll_item(zmq::POLLIN),
            self.watch.socket().as_poll_item(zmq::POLLIN),
            self.requester.as_poll_item(zmq::POLLIN),
        ]
    }

    /// Everything that arrived, with each stream's follower told of its messages.
    pub fn read(&mut self) -> Vec<Heard> {
        self.watch.drain();
        let mut heard = Vec::new();
        while let Ok(received) =
            transport::recv_bounded(&self.subscriber, zmq::DONTWAIT, PUBLISHED_FRAMES)
        {
            self.oversized |= received.oversized();
            match within_bounds(&received).and_then(Publish::decode) {
                Ok((topic, message)) => match self.stream_for(&topic) {
                    Some(i) => {
                        self.streams[i].track(&message);
                        heard.push(Heard::Message(topic, message));
                    }
                    None => heard.push(Heard::Bad(format!(
                        "ignored a message of {topic}, which this host does not follow"
                    ))),
                },
                Err(e) => heard.push(Heard::Bad(format!("ignored a message: {e}"))),
            }
        }
        while let Ok(received) =
            transport::recv_bounded(&self.requester, zmq::DONTWAIT, PAGE_FRAMES)
        {
            self.oversized |= received.oversized();
            let body = within_bounds(&received).and_then(reply_body);
            heard.push(match body.clone().and_then(SnapshotPage::decode) {
                Ok(page) => Heard::Page(page),
                Err(e) => match body.and_then(Verdict::decode) {
                    Ok(verdict) => Heard::Bad(format!("it answered a snapshot request: {verdict}")),
                    Err(_) => Heard::Bad(format!("ignored a snapshot page: {e}")),
                },
            });
        }
        if !heard.is_empty() {
            self.heard_at = Some(unix_now());
        }
        heard
    }

    /// Asks for the snapshot pages the streams want, if any; a page not answered in time
    /// is asked for again on a new socket, so that a late answer is never read.
    pub fn drive(&mut self, ctx: &zmq::Context, own: &KeyPair) {
        for i in 0..self.streams.len() {
            let name = self.streams[i].follower.name().to_owned();
            match self.streams[i].follower.due(Instant::now()) {
                None => {}
                Some(Due::Start) => {
                    log::info!("catching up with {name}");
                    self.request_page(i, None);
                }
                Some(Due::Again(after)) => {
                    log::warn!("no snapshot page from {name} yet; asking again");
                    match requester(ctx, &self.target, own) {
                        Ok(socket) => self.requester = socket,
                        Err(e) => log::error!("{}: {e}", self.target.report_endpoint()),
                    }
                    self.request_page(i, after.as_ref());
                }
            }
        }
    }

    /// Asks for stream `i`'s page after `after`.
    pub fn request_page(&mut self, i: usize, after: Option<&Cidr>) {
        let group = self.streams[i].topic.group.clone();
        let request = encode_snapshot_request(after, group.as_ref());
        if let Err(e) = send_request(&self.requester, request) {
            log::warn!("cannot ask {} for a snapshot page: {e}", self.target.name);
        }
        self.streams[i]
            .follower
            .asked(after.copied(), Instant::now());
    }
}

impl Stream {
    fn new(target: &Target, topic: Topic, now: Instant) -> Stream {
        let name = match &topic.group {
            Some(group) => format!("{} (group {group})", target.name),
            None => target.name.clone(),
        };
        Stream {
            follower: Follower::named(&name, now),
            topic,
            synced: false,
        }
    }

    fn track(&mut self, message: &Publish) {
        let now = Instant::now();
        match message {
            Publish::Heartbeat {
                epoch,
                seq,
                interval_ms,
            } => self.follower.heartbeat(*epoch, *seq, *interval_ms, now),
            Publish::Ban { epoch, seq, ban }
            | Publish::Unban {
                epoch, seq, ban, ..
            } => self.follower.published(*epoch, *seq, ban.ip, now),
        }
    }
}

/// A subscription to `groups`, or to every group (`BANSHARE1`, which a server without
/// groups sends too).
fn subscribe(
    ctx: &zmq::Context,
    target: &Target,
    own: &KeyPair,
    groups: Option<&[Group]>,
) -> zmq::Result<(zmq::Socket, ConnectionWatch)> {
    let subscriber = transport::client_socket(ctx, zmq::SUB, &target.key, own)?;
    match groups {
        Some(groups) => {
            for group in groups {
                subscriber.set_subscribe(group.subscription().as_bytes())?;
            }
        }
        None => subscriber.set_subscribe(VERSION.as_bytes())?,
    }
    // Room for a burst as large as the server's queue for us, so that a client busy with
    // its firewall still takes a burst of 10,000 bans live instead of re-reading them.
    subscriber.set_rcvhwm(10_000)?;
    transport::spread_reconnects(&subscriber)?;
    let address = target.publish_endpoint();
    // Attached before connecting, so that not even the first failure goes unexplained.
    let watch = ConnectionWatch::attach(ctx, &subscriber, &address)?;
    subscriber.connect(&address)?;
    log::debug!("subscriber socket connecting to {address}");
    Ok((subscriber, watch))
}

/// Sends a request on a DEALER socket, behind the empty delimiter that a REQ socket would
/// add, so the server handles both alike.
pub fn send_request(socket: &zmq::Socket, request: Vec<Vec<u8>>) -> zmq::Result<()> {
    let frames = std::iter::once(Vec::new()).chain(request);
    socket.send_multipart(frames, zmq::DONTWAIT)
}

/// A DEALER on the server's report socket.
pub fn requester(ctx: &zmq::Context, target: &Target, own: &KeyPair) -> zmq::Result<zmq::Socket> {
    let socket = transport::client_socket(ctx, zmq::DEALER, &target.key, own)?;
    transport::spread_reconnects(&socket)?;
    socket.connect(&target.report_endpoint())?;
    Ok(socket)
}

/// The frames of a message, unless it had more than any banshare message has (only the
/// first were kept, see `transport::recv_bounded`).
pub fn within_bounds(received: &Received) -> Result<&[Vec<u8>], MessageError> {
    if received.oversized() {
        // What it held is freed; the memory guard gives it back to the system if it must.
        Err(MessageError::Oversized {
            frames: received.count,
        })
    } else {
        Ok(&received.frames)
    }
}

/// A reply on a DEALER socket, without the empty delimiter the server echoes back.
pub fn reply_body(frames: &[Vec<u8>]) -> Result<&[Vec<u8>], MessageError> {
    match frames.split_first() {
        Some((delimiter, body)) if delimiter.is_empty() => Ok(body),
        _ => Err(MessageError::NoDelimiter),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_not_a_message_in_bounds_is_told_apart() {
        let oversized = Received {
            frames: vec![b"BANSHARE1".to_vec()],
            count: 50_001,
            ..Received::default()
        };
        assert_eq!(
            within_bounds(&oversized),
            Err(MessageError::Oversized { frames: 50_001 })
        );
        assert_eq!(
            reply_body(&[b"BANSHARE1".to_vec()]),
            Err(MessageError::NoDelimiter)
        );
        assert_eq!(reply_body(&[]), Err(MessageError::NoDelimiter));
        let reply = [vec![], b"BANSHARE1".to_vec()];
        assert_eq!(reply_body(&reply), Ok(&reply[1..]));
    }
}
