//! Polling ZeroMQ sockets and file descriptors together, by name rather than by index: each
//! group of items added gets its place, and asks afterwards whether any of its items is
//! ready. The daemons' loops poll a dozen sockets of several owners at once.

use std::ops::Range;
use std::time::Duration;

/// Items to poll, and where each group of them stands.
#[derive(Default)]
pub struct Poll<'a> {
    items: Vec<zmq::PollItem<'a>>,
}

/// Where a group of items stands in a `Poll`.
#[derive(Debug, Clone)]
pub struct Place(Range<usize>);

impl<'a> Poll<'a> {
    /// Adds a group of items, and says where they stand.
    pub fn add(&mut self, items: impl IntoIterator<Item = zmq::PollItem<'a>>) -> Place {
        let start = self.items.len();
        self.items.extend(items);
        Place(start..self.items.len())
    }

    /// Waits up to `timeout` for an item to be ready; a signal (EINTR) ends the wait
    /// early, as readiness of nothing.
    pub fn wait(&mut self, timeout: Duration) -> zmq::Result<()> {
        match zmq::poll(
            &mut self.items,
            timeout.as_millis().min(i64::MAX as u128) as i64,
        ) {
            Ok(_) | Err(zmq::Error::EINTR) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Whether any item of the group at `place` is readable.
    pub fn ready(&self, place: &Place) -> bool {
        self.items[place.0.clone()]
            .iter()
            .any(zmq::PollItem::is_readable)
    }

    /// For each item of the group at `place`, whether it is readable.
    pub fn each(&self, place: &Place) -> Vec<bool> {
        let items = &self.items[place.0.clone()];
        items.iter().map(zmq::PollItem::is_readable).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_group_says_whether_its_items_are_ready() {
        let ctx = zmq::Context::new();
        let pair = |name: &str| {
            let (a, b) = (
                ctx.socket(zmq::PAIR).unwrap(),
                ctx.socket(zmq::PAIR).unwrap(),
            );
            a.bind(&format!("inproc://poll-{name}")).unwrap();
            b.connect(&format!("inproc://poll-{name}")).unwrap();
            (a, b)
        };
        let ((quiet, _q), (loud, noise)) = (pair("quiet"), pair("loud"));
        noise.send("x", 0).unwrap();
        let mut poll = Poll::default();
        let first = poll.add([quiet.as_poll_item(zmq::POLLIN)]);
        let second = poll.add([
            quiet.as_poll_item(zmq::POLLIN),
            loud.as_poll_item(zmq::POLLIN),
        ]);
        let empty = poll.add([]);
        poll.wait(Duration::from_secs(1)).unwrap();
        assert!(!poll.ready(&first) && poll.ready(&second) && !poll.ready(&empty));
        assert_eq!(poll.each(&second), [false, true]);
    }
}
