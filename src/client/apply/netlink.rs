//! Single addresses into the nftables backend's hash sets over netlink, without starting
//! `nft`. A run of `nft` costs 3 to 10 ms of CPU (loading libnftables, fetching the
//! ruleset into its cache, parsing), and ten clients' runs took two thirds of the CPU of an
//! import of 1,000 bans (docs/performance.md, P11), while the kernel takes 1,000 elements
//! in about a millisecond. The messages are those `nft add element` and `nft delete
//! element` send: NFT_MSG_NEWSETELEM and NFT_MSG_DELSETELEM between NFNL_MSG_BATCH_BEGIN
//! and NFNL_MSG_BATCH_END, one transaction, which the kernel applies whole or not at all;
//! NEWSETELEM goes without NLM_F_EXCL, so an element already there is not an error.
//! netlink-packet-netfilter encodes them. `nft` still sets the table up, and keeps the
//! network sets, whose intervals and overlaps it works out.

use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST};
use netlink_packet_netfilter::nftables::{
    DataAttribute, ListAttribute, NfTablesMessage, SetElementAttribute, SetElementList,
    SetElementMessage, TableAttribute, TableMessage,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use nix::errno::Errno;
use nix::sys::socket::{self, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag};
use nix::sys::socket::{SockProtocol, SockType};
use nix::sys::time::TimeVal;

/// The nfnetlink subsystem of nf_tables (linux/netfilter/nfnetlink.h), which the batch
/// messages name.
const NFNL_SUBSYS_NFTABLES: u16 = 10;

/// Elements per message: the list of elements is one netlink attribute, whose length is
/// 16 bits, and an IPv6 element with a timeout takes 40 bytes of it.
const PER_MESSAGE: usize = 256;

/// Room for one reply. Acknowledgements are 36 bytes; an error echoes the message it
/// refuses, at most about 10 KiB (PER_MESSAGE elements).
const REPLY_BUFFER: usize = 64 * 1024;

/// What to do with one element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Add it, to expire after this many seconds, or never.
    Add(Option<u64>),
    Delete,
}

/// One change to one element of one set of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub change: Change,
    pub set: &'static str,
    pub addr: IpAddr,
}

/// Why a request to nf_tables failed.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot talk to nf_tables over netlink: {0}")]
    Socket(Errno),
    #[error("nf_tables refused the change: {0}")]
    Refused(Errno),
    #[error("nf_tables did not answer within {0:?}")]
    NoAnswer(Duration),
    #[error("cannot read nf_tables' answer: {0}")]
    Garbled(String),
}

impl NetlinkError {
    /// Whether nf_tables refused the change for what it is, so that asking again can never
    /// work: a timeout out of its range, an element it cannot take. Not a missing table
    /// (which is set up again), nor a want of memory or time.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            NetlinkError::Refused(Errno::ERANGE | Errno::EINVAL | Errno::EOVERFLOW | Errno::E2BIG)
        )
    }
}

/// Applies `elements`, in their order, to sets of the inet table `table` in one
/// transaction, and waits up to `timeout` for the kernel to confirm it.
pub fn commit(table: &str, elements: &[Element], timeout: Duration) -> Result<(), NetlinkError> {
    let (request, messages) = transaction(table, elements);
    exchange(&request, messages, timeout)
}

/// Whether the inet table `table` exists: after `nft flush ruleset` (which a reload of
/// nftables.service does) it does not.
pub fn table_exists(table: &str, timeout: Duration) -> Result<bool, NetlinkError> {
    let body = TableMessage {
        attributes: vec![TableAttribute::Name(table.to_owned())],
    };
    let header = NetfilterHeader::new(NetfilterProtoFamily::Inet, 0, 0);
    let message = NetfilterMessage::new(header, NfTablesMessage::GetTable(body));
    match exchange(&encode(message, NLM_F_ACK, 1), 1, timeout) {
        Ok(()) => Ok(true),
        Err(NetlinkError::Refused(Errno::ENOENT)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Sends `request` and waits until the kernel has acknowledged its `messages`.
fn exchange(request: &[u8], messages: u32, timeout: Duration) -> Result<(), NetlinkError> {
    let fd = socket::socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkNetFilter,
    )
    .map_err(NetlinkError::Socket)?;
    socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(NetlinkError::Socket)?;
    // A whole transaction must go in one datagram. nft raises its buffer the same way for
    // large batches; it takes CAP_NET_ADMIN, as changing nf_tables does.
    if request.len() > 128 * 1024 {
        socket::setsockopt(&fd, sockopt::SndBufForce, &request.len())
            .map_err(NetlinkError::Socket)?;
    }
    // And room for the acknowledgements, each a buffer of its own (about 1 KiB with its
    // overhead), which overflow the default of 208 KiB past a couple of hundred.
    let acks = messages as usize * 1024;
    if acks > 128 * 1024 {
        socket::setsockopt(&fd, sockopt::RcvBufForce, &acks).map_err(NetlinkError::Socket)?;
    }
    socket::send(fd.as_raw_fd(), request, MsgFlags::empty()).map_err(NetlinkError::Socket)?;
    await_acks(&fd, messages, Instant::now() + timeout, timeout)
}

/// The transaction as bytes, and how many of its messages the kernel acknowledges
/// (sequence numbers 2 to that plus one; the batch's begin is 1, its end the last).
fn transaction(table: &str, elements: &[Element]) -> (Vec<u8>, u32) {
    let mut request = encode(control(ControlMessage::BatchBegin), 0, 1);
    let mut seq = 1;
    let mut rest = elements;
    while let Some(first) = rest.first() {
        let add = matches!(first.change, Change::Add(_));
        let run = rest
            .iter()
            .take(PER_MESSAGE)
            .take_while(|e| (matches!(e.change, Change::Add(_)), e.set) == (add, first.set))
            .count();
        seq += 1;
        let message = set_elements(table, first.set, add, &rest[..run]);
        let flags = if add {
            NLM_F_CREATE | NLM_F_ACK
        } else {
            NLM_F_ACK
        };
        request.extend(encode(message, flags, seq));
        rest = &rest[run..];
    }
    request.extend(encode(control(ControlMessage::BatchEnd), 0, seq + 1));
    (request, seq - 1)
}

/// NFNL_MSG_BATCH_BEGIN or _END for nf_tables.
fn control(message: ControlMessage) -> NetfilterMessage {
    let header = NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, NFNL_SUBSYS_NFTABLES);
    NetfilterMessage::new(header, message)
}

/// NFT_MSG_NEWSETELEM (`add`) or NFT_MSG_DELSETELEM for elements of one set.
fn set_elements(table: &str, set: &str, add: bool, elements: &[Element]) -> NetfilterMessage {
    let list = elements
        .iter()
        .map(|e| {
            let key = match e.addr {
                IpAddr::V4(a) => a.octets().to_vec(),
                IpAddr::V6(a) => a.octets().to_vec(),
            };
            let mut attributes = vec![SetElementAttribute::Key(DataAttribute::Value(key))];
            if let Change::Add(Some(seconds)) = e.change {
                // The kernel counts in milliseconds.
                attributes.push(SetElementAttribute::Timeout(seconds.saturating_mul(1000)));
            }
            ListAttribute::Element(attributes)
        })
        .collect();
    let body = SetElementMessage {
        attributes: vec![
            SetElementList::Table(table.to_owned()),
            SetElementList::Set(set.to_owned()),
            SetElementList::Elements(list),
        ],
    };
    let inner = if add {
        NfTablesMessage::NewSetElement(body)
    } else {
        NfTablesMessage::DeleteSetElement(body)
    };
    let header = NetfilterHeader::new(NetfilterProtoFamily::Inet, 0, 0);
    NetfilterMessage::new(header, NetfilterMessageInner::from(inner))
}

fn encode(message: NetfilterMessage, flags: u16, seq: u32) -> Vec<u8> {
    let mut message = NetlinkMessage::from(message);
    message.header.flags = NLM_F_REQUEST | flags;
    message.header.sequence_number = seq;
    message.finalize();
    let mut bytes = vec![0; message.buffer_len()];
    message.serialize(&mut bytes);
    bytes
}

/// Reads the kernel's answers until each of `messages` is acknowledged. The kernel answers
/// a transaction after the commit, or the abort, with one reply per message: any error
/// means the whole transaction was undone, and a failed commit is reported first, against
/// the batch's begin. What a request asked for (a table) comes before its acknowledgement.
fn await_acks(
    fd: &OwnedFd,
    mut messages: u32,
    deadline: Instant,
    timeout: Duration,
) -> Result<(), NetlinkError> {
    let mut buffer = vec![0; REPLY_BUFFER];
    while messages > 0 {
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
            .ok_or(NetlinkError::NoAnswer(timeout))?;
        let wait = TimeVal::new(left.as_secs() as i64, i64::from(left.subsec_micros()));
        socket::setsockopt(fd, sockopt::ReceiveTimeout, &wait).map_err(NetlinkError::Socket)?;
        let got = match socket::recv(fd.as_raw_fd(), &mut buffer, MsgFlags::empty()) {
            Ok(got) => got,
            Err(Errno::EAGAIN | Errno::EINTR) => continue,
            Err(e) => return Err(NetlinkError::Socket(e)),
        };
        let mut replies = &buffer[..got];
        while !replies.is_empty() {
            let reply = NetlinkMessage::<NetfilterMessage>::deserialize(replies)
                .map_err(|e| NetlinkError::Garbled(e.to_string()))?;
            match reply.payload {
                NetlinkPayload::Error(e) => match e.code {
                    None => messages = messages.saturating_sub(1),
                    Some(code) => return Err(NetlinkError::Refused(Errno::from_raw(-code.get()))),
                },
                NetlinkPayload::InnerMessage(_) => {}
                other => return Err(NetlinkError::Garbled(format!("{other:?}"))),
            }
            // Each message starts at a multiple of 4 bytes.
            let length = (reply.header.length as usize + 3) & !3;
            replies = replies.get(length..).unwrap_or_default();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn element(change: Change, set: &'static str, addr: &str) -> Element {
        Element {
            change,
            set,
            addr: addr.parse().unwrap(),
        }
    }

    #[test]
    fn a_transaction_is_one_message_per_run_of_a_set_and_a_verb() {
        let mut elements = vec![
            element(Change::Add(Some(600)), "addr4", "203.0.113.7"),
            element(Change::Add(None), "addr4", "203.0.113.8"),
            element(Change::Add(Some(1)), "addr6", "2001:db8::1"),
            element(Change::Delete, "addr6", "2001:db8::1"),
        ];
        let (_, messages) = transaction("banshare", &elements);
        assert_eq!(messages, 3);
        // A long run is split at PER_MESSAGE.
        elements.extend(
            (0..PER_MESSAGE).map(|i| element(Change::Delete, "addr6", &format!("2001:db8::{i:x}"))),
        );
        let (request, messages) = transaction("banshare", &elements);
        assert_eq!(messages, 4);
        // Begin, the four messages and end, each one a well-formed netlink message.
        let mut rest = &request[..];
        let mut seen = Vec::new();
        while !rest.is_empty() {
            let message = NetlinkMessage::<NetfilterMessage>::deserialize(rest).unwrap();
            seen.push(message.header.sequence_number);
            rest = &rest[(message.header.length as usize + 3) & !3..];
        }
        assert_eq!(seen, [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn an_element_carries_its_address_and_its_timeout_in_milliseconds() {
        let message = set_elements(
            "banshare",
            "addr4",
            true,
            &[element(Change::Add(Some(600)), "addr4", "203.0.113.7")],
        );
        let NetfilterMessageInner::NfTables(NfTablesMessage::NewSetElement(body)) = message.inner
        else {
            panic!("{message:?}");
        };
        let SetElementList::Elements(list) = &body.attributes[2] else {
            panic!("{body:?}");
        };
        assert_eq!(
            list[0],
            ListAttribute::Element(vec![
                SetElementAttribute::Key(DataAttribute::Value(vec![203, 0, 113, 7])),
                SetElementAttribute::Timeout(600_000),
            ])
        );
    }
}
