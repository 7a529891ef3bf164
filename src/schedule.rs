//! When to ask which server a request, and when to give up: the one schedule of every
//! request that a server answers with a verdict. banshare-report and the client's handoff
//! ask each server once, in turn, the next after a while without an answer, and take the
//! first answer of any of them until a deadline (`Schedule::each_once`). The client's
//! courier and a server's forwarder have no deadline: they ask one server at a time, again
//! and again, the next (or the same one, when there is only one) after a while without an
//! answer, until one answers (`Schedule::in_turn`). No socket and no clock here: the caller
//! says what time it is (`sockets::request` holds the sockets), so every decision is tested
//! on its own.

use std::time::{Duration, Instant};

/// The most a request waits for one server's answer before it is sent to the next too.
/// A server answers a report in milliseconds, and in a second or so at its busiest (a
/// rotation on a loaded host, tests/ansible.rs): with an even share of a 3 s timeout, a
/// server that was down left the one that answers only 1.5 s, and every report that
/// asked the dead one first cost fail2ban 1.5 s.
pub const ASK_NEXT_AFTER: Duration = Duration::from_millis(500);

/// What to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Ask server `server` (an index into the caller's list). With `alone`, the asks before
    /// are given up: close their sockets, so that a late answer is never taken for this one's.
    Ask { server: usize, alone: bool },
    /// Nothing to ask before then; answers may come meanwhile.
    WaitUntil(Instant),
    /// The deadline has passed without an answer.
    GiveUp,
}

#[derive(Debug, Clone)]
pub struct Schedule {
    servers: usize,
    first: usize,
    /// How long an ask waits for its answer before the next one.
    wait: Duration,
    /// None: ask until answered, one server at a time.
    deadline: Option<Instant>,
    asked: usize,
    next_at: Instant,
}

impl Schedule {
    /// Each of `servers` once, in turn from `first`, the next after an even share of `total`
    /// or ASK_NEXT_AFTER, whichever is shorter, the earlier ones still heard, for `total`
    /// from `now`: a server that is down costs half a second, and a slow one still has
    /// until the deadline.
    pub fn each_once(servers: usize, first: usize, total: Duration, now: Instant) -> Schedule {
        let servers = servers.max(1);
        Schedule {
            servers,
            first: first % servers,
            wait: (total / servers as u32).min(ASK_NEXT_AFTER),
            deadline: Some(now + total),
            asked: 0,
            next_at: now,
        }
    }

    /// One of `servers` at a time, in turn from `first`, the next after `wait` without an
    /// answer, round and round, until one answers.
    pub fn in_turn(servers: usize, first: usize, wait: Duration, now: Instant) -> Schedule {
        let servers = servers.max(1);
        Schedule {
            servers,
            first: first % servers,
            wait,
            deadline: None,
            asked: 0,
            next_at: now,
        }
    }

    /// What to do at `now`; an `Ask` is taken as done.
    pub fn step(&mut self, now: Instant) -> Step {
        if self.deadline.is_some_and(|deadline| now >= deadline) {
            return Step::GiveUp;
        }
        let more = self.deadline.is_none() || self.asked < self.servers;
        if more && now >= self.next_at {
            let server = (self.first + self.asked) % self.servers;
            self.asked += 1;
            self.next_at = now + self.wait;
            return Step::Ask {
                server,
                alone: self.deadline.is_none(),
            };
        }
        Step::WaitUntil(match (more, self.deadline) {
            (true, Some(deadline)) => self.next_at.min(deadline),
            (false, Some(deadline)) => deadline,
            (_, None) => self.next_at,
        })
    }

    /// The last ask could not even be sent (its server refused this host before, and
    /// libzmq gave up on it): the next one is due at once, rather than after the wait.
    pub fn unsent(&mut self, now: Instant) {
        self.next_at = now;
    }

    /// The server was heard again (back after a silence, or restarted): what was asked of
    /// it may have been lost with its connection, so ask again now.
    pub fn again_now(&mut self, now: Instant) {
        self.next_at = now;
    }

    /// How many asks were made so far.
    pub fn asked(&self) -> usize {
        self.asked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// What a schedule does at each of `times` (milliseconds from `start`).
    fn steps(schedule: &mut Schedule, start: Instant, times: &[u64]) -> Vec<Step> {
        times
            .iter()
            .map(|&t| schedule.step(start + MS * t as u32))
            .collect()
    }

    fn ask(server: usize, alone: bool) -> Step {
        Step::Ask { server, alone }
    }

    #[test]
    fn each_server_once_the_next_after_half_a_second_then_the_deadline() {
        let start = Instant::now();
        let mut s = Schedule::each_once(3, 1, Duration::from_secs(3), start);
        let at = |t: u64| start + MS * t as u32;
        assert_eq!(
            steps(&mut s, start, &[0, 0, 499, 500, 1000, 1000, 2999, 3000]),
            [
                ask(1, false),
                Step::WaitUntil(at(500)),
                Step::WaitUntil(at(500)),
                ask(2, false),
                ask(0, false),
                Step::WaitUntil(at(3000)),
                Step::WaitUntil(at(3000)),
                Step::GiveUp,
            ]
        );
        assert_eq!(s.asked(), 3);
    }

    #[test]
    fn a_short_timeout_is_shared_evenly() {
        let start = Instant::now();
        let mut s = Schedule::each_once(4, 0, Duration::from_millis(400), start);
        assert_eq!(s.step(start), ask(0, false));
        assert_eq!(s.step(start), Step::WaitUntil(start + MS * 100));
        assert_eq!(s.step(start + MS * 100), ask(1, false));
    }

    #[test]
    fn one_at_a_time_round_and_round_until_answered() {
        let start = Instant::now();
        let wait = Duration::from_secs(5);
        let mut s = Schedule::in_turn(2, 1, wait, start);
        let at = |t: u64| start + MS * t as u32;
        assert_eq!(
            steps(&mut s, start, &[0, 10, 5000, 10000, 15000]),
            [
                ask(1, true),
                Step::WaitUntil(at(5000)),
                ask(0, true),
                ask(1, true),
                ask(0, true),
            ]
        );
        // One server: the same one again.
        let mut one = Schedule::in_turn(1, 0, wait, start);
        assert_eq!(
            steps(&mut one, start, &[0, 5000]),
            [ask(0, true), ask(0, true)]
        );
    }

    #[test]
    fn an_unsent_ask_or_a_server_back_makes_the_next_due_at_once() {
        let start = Instant::now();
        let mut s = Schedule::each_once(2, 0, Duration::from_secs(3), start);
        assert_eq!(s.step(start), ask(0, false));
        s.unsent(start);
        assert_eq!(s.step(start), ask(1, false));
        let mut c = Schedule::in_turn(1, 0, Duration::from_secs(5), start);
        assert_eq!(c.step(start), ask(0, true));
        c.again_now(start + MS);
        assert_eq!(c.step(start + MS), ask(0, true));
    }
}
